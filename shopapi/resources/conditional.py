"""Catalog answers on the wire: ETag, X-Cache, and 304 for a client whose copy is current."""

from __future__ import annotations

import falcon

from shopapi.cache import Answer
from shopapi.etags import weak_match

# for the OpenAPI summaries of the reads `respond` answers
ETAG_NOTE = " Answers carry an ETag; If-None-Match with it gives 304 and no body."


def respond(req: falcon.Request, resp: falcon.Response, answer: Answer) -> None:
    """Send a catalog read: ETag, X-Cache, and 304 with no body when the client is current."""
    resp.set_header("ETag", answer.etag)
    if answer.cache is not None:
        resp.set_header("X-Cache", answer.cache)
    if weak_match(req.get_header("If-None-Match"), answer.etag):
        resp.status = falcon.HTTP_304
        return
    resp.content_type = "application/json"
    resp.data = answer.body


def send(resp: falcon.Response, answer: Answer) -> None:
    """Send the result of a write, with the ETag a later If-Match can quote."""
    resp.set_header("ETag", answer.etag)
    resp.content_type = "application/json"
    resp.data = answer.body
