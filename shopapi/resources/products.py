"""/api/products: public reads (cached, with ETags), staff writes, the stock ledger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon

from shopapi.cache import CatalogCache
from shopapi.context import AppContext
from shopapi.endpoint import STAFF, endpoint
from shopapi.resources.conditional import ETAG_NOTE, respond, send
from shopapi.schemas.catalog import (
    ProductCreate,
    ProductListQuery,
    ProductPage,
    ProductPublic,
    ProductUpdate,
    StockMovementPublic,
)
from shopapi.schemas.common import PageOf, PageQuery
from shopapi.services import products

TAGS = ("products",)

LIST_SUMMARY = (
    "List products. Active only; ADMIN/EDITOR may add include_inactive=true (ignored for "
    "anyone else, who just gets the active ones). Order: `sort` (ties by id in the same "
    "direction; name ignores case); default -created_at, but a search (`q`: full text over "
    "name and description, plus names starting with q) without `sort` is ranked by relevance, "
    "best first. Page with `page` or with `cursor` (the previous answer's next_cursor, same "
    "filters and sort; the answer then has page: null); both together, or a cursor for other "
    "filters, is 422. Offset paging reaches page × per_page ≤ 10000 (past it 422: use cursor). "
    "in_stock=true: only products in stock; in_stock=false is 422 (leave it out for every "
    "product). q: at most 200 characters and 20 words (runs of letters and digits), else 422. "
    "A ranked search ranks the newest SEARCH_CANDIDATES (default 300) matching products, so "
    "its total is at most that many; narrow q or the filters, or pass sort, to reach older ones. "
    "Other totals are exact up to 10000; past that total is PostgreSQL's estimate and the answer "
    "carries total_is_estimate: true (the field is sent only then). "
    "min_price_cents above max_price_cents: an empty page."
)


class Products:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        LIST_SUMMARY + ETAG_NOTE,
        query=ProductListQuery,
        returns=ProductPage,
        errors=(422, 429),
        etag=True,
        tags=TAGS,
    )
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        answer = await products.list_products(self.ctx, req.context.user, req.context.query)
        respond(req, resp, answer)

    @endpoint(
        "Create a product (its initial stock is written to the ledger)",
        roles=STAFF,
        body=ProductCreate,
        returns=ProductPublic,
        status=201,
        errors=(400, 401, 403, 413, 422, 429),
        etag=True,
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        product_id, answer = await products.create_product(
            self.ctx, req.context.user, req.context.body
        )
        resp.location = f"{COLLECTION_ROUTE}/{product_id}"
        send(resp, answer)

    @endpoint(
        "Get a product (inactive: 404 except for ADMIN/EDITOR)." + ETAG_NOTE,
        returns=ProductPublic,
        errors=(404, 422, 429),
        etag=True,
        tags=TAGS,
    )
    async def on_get_item(
        self, req: falcon.Request, resp: falcon.Response, product_id: int
    ) -> None:
        # the hottest read: a cache hit is answered from the values the rate limiter fetched
        # in its own round trip (cached_read_keys below)
        prefetched = getattr(req.context, "cache_prefetch", None)
        answer = await products.get_product(self.ctx, req.context.user, product_id, prefetched)
        respond(req, resp, answer)

    @endpoint(
        "Update a product (partial). If-Match with the ETag of a GET guards against lost "
        "updates (412 when it changed since). A stock edit is written to the ledger.",
        roles=STAFF,
        body=ProductUpdate,
        returns=ProductPublic,
        errors=(400, 401, 403, 404, 412, 413, 422, 429),
        headers=("If-Match",),
        etag=True,
        tags=TAGS,
    )
    async def on_put_item(
        self, req: falcon.Request, resp: falcon.Response, product_id: int
    ) -> None:
        answer = await products.update_product(
            self.ctx, req.context.user, product_id, req.context.body, req.get_header("If-Match")
        )
        send(resp, answer)

    on_patch_item = on_put_item

    @endpoint(
        "Delete a product (one that appears in an order is deactivated instead)",
        roles=STAFF,
        status=204,
        errors=(401, 403, 404, 422, 429),
        tags=TAGS,
    )
    async def on_delete_item(
        self, req: falcon.Request, resp: falcon.Response, product_id: int
    ) -> None:
        await products.delete_product(self.ctx, product_id)


class StockMovements:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "A product's stock ledger, oldest first (next_cursor is always null)." + ETAG_NOTE,
        roles=STAFF,
        query=PageQuery,
        returns=PageOf[StockMovementPublic],
        errors=(401, 403, 404, 422, 429),
        etag=True,
        tags=TAGS,
    )
    async def on_get(self, req: falcon.Request, resp: falcon.Response, product_id: int) -> None:
        answer = await products.list_stock_movements(self.ctx, product_id, req.context.query)
        respond(req, resp, answer)


COLLECTION_ROUTE = "/api/products"
ITEM_ROUTE = COLLECTION_ROUTE + "/{product_id}"


def cached_read_keys(
    cache: CatalogCache,
) -> Callable[[falcon.Request, dict[str, Any]], list[str] | None]:
    """For the rate limiter: the cache keys a product read is about to MGET, so they ride in
    the counters' round trip (a hit then costs one Redis round trip in all)."""

    def keys(req: falcon.Request, params: dict[str, Any]) -> list[str] | None:
        if req.method != "GET" or req.uri_template != ITEM_ROUTE:
            return None
        raw = params.get("product_id")
        # only what @endpoint will accept as an id: ASCII digits, in range
        if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) < 19:
            return cache.prefetch_keys(int(raw))
        return None

    return keys


def routes(ctx: AppContext) -> list[tuple[str, object, str | None]]:
    resource = Products(ctx)
    return [
        (COLLECTION_ROUTE, resource, None),
        (ITEM_ROUTE, resource, "item"),
        ("/api/products/{product_id}/stock-movements", StockMovements(ctx), None),
    ]
