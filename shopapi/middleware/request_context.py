"""Request id, security headers, body limit and one JSON access-log line per request."""

from __future__ import annotations

import logging
import os
import re
import sys
import time

import falcon
import msgspec

from shopapi.errors import PayloadTooLarge

_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_encode_line = msgspec.json.Encoder().encode


class JsonLineLogger:
    """Structured access log: one msgspec-encoded JSON object per line on stdout."""

    def __init__(self, level: str = "INFO", stream=None) -> None:
        self.enabled = logging.getLevelName(level.upper()) <= logging.INFO
        self.stream = stream or sys.stdout.buffer

    def write(self, record: dict) -> None:
        if self.enabled:
            self.stream.write(_encode_line(record) + b"\n")
            self.stream.flush()


class RequestContext:
    def __init__(self, access_log: JsonLineLogger, max_body_bytes: int) -> None:
        self.access_log = access_log
        self.max_body_bytes = max_body_bytes

    async def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
        given = req.get_header("X-Request-ID")
        # echo a sane client id; anything else (too long, odd characters) gets a fresh one
        req.context.request_id = given if given and _ID_OK.match(given) else os.urandom(8).hex()
        req.context.max_body_bytes = self.max_body_bytes
        if req.content_length is not None and req.content_length > self.max_body_bytes:
            # any route, body declared or not (API.md: bodies over the limit are 413); a
            # chunked body has no length here and is measured as it is read (endpoint.decode_body)
            raise PayloadTooLarge(f"Request bodies are limited to {self.max_body_bytes} bytes")
        req.context.user = None
        req.context.auth_error = None

    async def process_response(self, req, resp, resource, req_succeeded: bool) -> None:
        # runs for every answer, errors and early exits included: the one place to set it
        resp.set_header("X-Request-ID", req.context.request_id)
        # cheap hardening of every answer (OWASP REST headers): JSON is never sniffed into
        # HTML nor framed, and what is not a revalidatable catalog answer (those carry an
        # ETag) is never stored by a browser: token pairs, accounts, orders, errors
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("X-Frame-Options", "DENY")
        if resp.get_header("ETag") is None and resp.get_header("Cache-Control") is None:
            resp.set_header("Cache-Control", "no-store")
        if req.get_header("Origin"):
            # answers differ by Origin (CORS): shared caches must not mix them
            resp.append_header("Vary", "Origin")
        started = getattr(req.context, "started", None)
        duration = time.perf_counter() - started if started else 0.0
        user = getattr(req.context, "user", None)
        self.access_log.write(
            {
                "ts": time.time(),
                "level": "info",
                "event": "request",
                "method": req.method,
                "route": req.uri_template or "unmatched",
                "path": req.path,
                "status": resp.status_code,
                "duration_ms": round(duration * 1000, 3),
                "user_id": user.id if user else None,
                "request_id": req.context.request_id,
            }
        )
