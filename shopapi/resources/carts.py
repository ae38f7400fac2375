"""/api/cart: the caller's cart, a user's (bearer token) or a guest's (X-Cart-Token).

The routes are public for the router: who the cart belongs to, and the 401 when neither
token came, is decided by the service (a bearer token wins over a cart token).
POST /api/cart/checkout is the orders resource's.
"""

from __future__ import annotations

import falcon

from shopapi.context import AppContext
from shopapi.endpoint import AUTHENTICATED, endpoint
from shopapi.schemas.carts import CartLineSet, CartPublic, GuestCartPublic
from shopapi.services import carts
from shopapi.services.carts import CART_TOKEN_HEADER, CartOwner

TAGS = ("cart",)
CART_ROUTE = "/api/cart"
HEADERS = (CART_TOKEN_HEADER,)
WHO = (
    " The cart is the bearer's when a bearer token is sent, else the guest cart of "
    "X-Cart-Token (unknown or expired: 404; neither: 401)."
)


def _owner(req: falcon.Request) -> CartOwner:
    return carts.cart_owner(
        req.context.user, req.context.auth_error, req.get_header(CART_TOKEN_HEADER)
    )


class Cart:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @endpoint(
        "Start a guest cart: the answer's `token` (shown only here) is its X-Cart-Token. "
        "It expires CART_TTL seconds after its last change.",
        returns=GuestCartPublic,
        status=201,
        errors=(429,),
        tags=TAGS,
    )
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = await carts.create_guest_cart(self.ctx)
        resp.location = CART_ROUTE  # read with the answer's token as X-Cart-Token

    @endpoint(
        "Get the cart, with the products' current names, prices, availability and stock "
        "(a user's cart is made empty on first use)." + WHO,
        returns=CartPublic,
        headers=HEADERS,
        errors=(401, 404, 429),
        tags=TAGS,
    )
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = await carts.get_cart(self.ctx, _owner(req))

    @endpoint(
        "Empty the cart." + WHO,
        status=204,
        headers=HEADERS,
        errors=(401, 404, 429),
        tags=TAGS,
    )
    async def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        await carts.clear(self.ctx, _owner(req))

    @endpoint(
        "Set a product's quantity in the cart: 201 when it adds the line, 200 when it changes "
        "it. An unknown or inactive product is 422; a 51st product 409 cart_full." + WHO,
        body=CartLineSet,
        returns=CartPublic,
        also=(201,),
        headers=HEADERS,
        errors=(400, 401, 404, 409, 413, 422, 429),
        tags=TAGS,
    )
    async def on_put_item(
        self, req: falcon.Request, resp: falcon.Response, product_id: int
    ) -> None:
        cart, added = await carts.set_line(
            self.ctx, _owner(req), product_id, req.context.body.quantity
        )
        resp.media = cart
        if added:
            resp.status = falcon.HTTP_201
            resp.location = f"{CART_ROUTE}/items/{product_id}"

    @endpoint(
        "Remove a product's line from the cart (a line that is not there: 204 too)." + WHO,
        status=204,
        headers=HEADERS,
        errors=(401, 404, 422, 429),
        tags=TAGS,
    )
    async def on_delete_item(
        self, req: falcon.Request, resp: falcon.Response, product_id: int
    ) -> None:
        await carts.remove_line(self.ctx, _owner(req), product_id)

    @endpoint(
        "Claim a guest cart (its X-Cart-Token) into the bearer's cart: its lines move over, "
        "a product in both keeps the larger quantity, and the guest cart is deleted (its "
        "token is then 404). Over 50 merged lines: 409 cart_full and nothing changes.",
        roles=AUTHENTICATED,
        returns=CartPublic,
        headers=HEADERS,
        errors=(401, 404, 409, 422, 429),
        tags=TAGS,
    )
    async def on_post_claim(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = await carts.claim(
            self.ctx, req.context.user, req.get_header(CART_TOKEN_HEADER)
        )


def routes(ctx: AppContext) -> list[tuple[str, object, str | None]]:
    resource = Cart(ctx)
    return [
        (CART_ROUTE, resource, None),
        (CART_ROUTE + "/items/{product_id}", resource, "item"),
        (CART_ROUTE + "/claim", resource, "claim"),
    ]
