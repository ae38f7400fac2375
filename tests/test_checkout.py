"""POST /api/cart/checkout: the cart becomes an order through the same placement as
POST /api/orders (one transaction, no oversell, Idempotency-Key), the cart emptied in that
transaction and left as it was on any refusal."""

from __future__ import annotations

import pytest
from falcon import testing

from tests.conftest import assert_problem, db_rows, stock_of, together
from tests.helpers import written

pytestmark = pytest.mark.usefixtures("ledger_holds")

CHECKOUT = "/api/cart/checkout"
ADDRESS = {
    "full_name": "Grace Hopper",
    "line1": "1 Navy Way",
    "city": "Arlington",
    "postal_code": "22202",
    "country": "US",
}


def fill(client, user, lines) -> None:
    """Put [(product_id, quantity), ...] into `user`'s cart through the API."""
    for product_id, quantity in lines:
        response = client.simulate_put(
            f"/api/cart/items/{product_id}", json={"quantity": quantity}, headers=user.headers
        )
        assert response.status_code in (200, 201), response.text


def cart_lines(client, user) -> list[tuple[int, int]]:
    response = client.simulate_get("/api/cart", headers=user.headers)
    assert response.status_code == 200, response.text
    return [(item["product_id"], item["quantity"]) for item in response.json["items"]]


def checkout(client, user, body=None, headers=None):
    return client.simulate_post(
        CHECKOUT, json=body if body is not None else {}, headers={**user.headers, **(headers or {})}
    )


def cart_state(database_url) -> list[tuple]:
    return db_rows(
        database_url, "SELECT cart_id, product_id, quantity FROM cart_items ORDER BY 1, 2"
    )


def test_checkout_places_the_cart_as_an_order_and_empties_the_cart(
    client, customer, make_product, database_url
):
    pen = make_product(name="Pen", price_cents=150, stock=10)
    ink = make_product(name="Ink", price_cents=1999, stock=3)
    fill(client, customer, [(ink["id"], 2), (pen["id"], 4)])

    response = checkout(client, customer)

    assert response.status_code == 201, response.text
    order = response.json
    assert response.headers["location"] == f"/api/orders/{order['id']}"
    assert order["user_id"] == customer.id
    assert order["status"] == "pending"
    assert [(i["product_id"], i["quantity"], i["unit_price_cents"]) for i in order["items"]] == [
        (pen["id"], 4, 150),
        (ink["id"], 2, 1999),
    ]
    assert (order["subtotal_cents"], order["shipping_cents"], order["total_cents"]) == (
        4598,
        0,
        4598,
    )
    assert stock_of(database_url, pen["id"]) == 6
    assert stock_of(database_url, ink["id"]) == 1
    assert cart_lines(client, customer) == []
    # the same order as any other: listed, readable, announced
    assert client.simulate_get(f"/api/orders/{order['id']}", headers=customer.headers).json == order
    assert db_rows(database_url, "SELECT count(*) FROM events WHERE type = 'order.created'") == [
        (1,)
    ]


def test_no_body_at_all_is_an_empty_checkout_body(client, customer, make_product):
    pen = make_product(stock=5)
    fill(client, customer, [(pen["id"], 1)])

    response = client.simulate_post(CHECKOUT, headers=customer.headers)

    assert response.status_code == 201, response.text


def test_no_body_and_an_empty_object_are_the_same_request_under_one_key(
    client, customer, make_product, database_url
):
    pen = make_product(stock=5)
    fill(client, customer, [(pen["id"], 1)])
    key = {"Idempotency-Key": "tap-once", **customer.headers}

    first = client.simulate_post(CHECKOUT, headers=key)
    again = client.simulate_post(CHECKOUT, json={}, headers=key)

    assert first.status_code == again.status_code == 201
    assert again.json == first.json
    assert db_rows(database_url, "SELECT count(*) FROM orders") == [(1,)]


def test_checkout_takes_the_shipment_like_an_order(client, customer, make_product, database_url):
    pen = make_product(price_cents=2000, stock=10)
    ((method,),) = db_rows(
        database_url,
        "INSERT INTO shipping_methods (name, price_cents, free_over_cents, countries) "
        "VALUES ('Ground', 600, 5000, '{US}') RETURNING id",
    )
    fill(client, customer, [(pen["id"], 2)])

    order = checkout(
        client, customer, {"shipping_address": ADDRESS, "shipping_method_id": method}
    ).json

    assert order["shipping_address"] == {**ADDRESS, "line2": "", "region": "", "phone": ""}
    assert order["shipping_method"] == {"id": method, "name": "Ground"}
    assert (order["subtotal_cents"], order["shipping_cents"], order["total_cents"]) == (
        4000,
        600,
        4600,
    )


def test_an_empty_cart_or_no_cart_is_422(client, customer, make_product, database_url):
    body = assert_problem(checkout(client, customer), 422, "validation_error")  # no cart yet
    assert body["errors"][0]["field"] == "items"

    pen = make_product(stock=5)
    fill(client, customer, [(pen["id"], 1)])
    client.simulate_delete("/api/cart", headers=customer.headers)
    before = written(database_url)
    assert_problem(checkout(client, customer), 422, "validation_error")
    assert written(database_url) == before


def test_checkout_needs_a_bearer_token_a_guest_token_is_not_enough(
    client, make_product, database_url
):
    pen = make_product(stock=5)
    guest = client.simulate_post("/api/cart").json
    client.simulate_put(
        f"/api/cart/items/{pen['id']}",
        json={"quantity": 1},
        headers={"X-Cart-Token": guest["token"]},
    )

    assert_problem(client.simulate_post(CHECKOUT), 401, "not_authenticated")
    assert_problem(
        client.simulate_post(CHECKOUT, json={}, headers={"X-Cart-Token": guest["token"]}),
        401,
        "not_authenticated",
    )
    assert stock_of(database_url, pen["id"]) == 5


@pytest.mark.parametrize("change", ["deactivated", "deleted"])
def test_an_unavailable_line_is_422_naming_it_and_nothing_changes(
    client, customer, make_product, database_url, change
):
    pen = make_product(stock=5)
    gone = make_product(stock=5)
    fill(client, customer, [(pen["id"], 1), (gone["id"], 2)])
    if change == "deactivated":
        db_rows(
            database_url,
            "UPDATE products SET is_active = false WHERE id = %s RETURNING id",
            (gone["id"],),
        )
    else:  # never ordered: a staff DELETE removes the row
        db_rows(
            database_url,
            "DELETE FROM stock_movements WHERE product_id = %s RETURNING 1",
            (gone["id"],),
        )
        db_rows(database_url, "DELETE FROM products WHERE id = %s RETURNING id", (gone["id"],))
    before, cart_before = written(database_url), cart_state(database_url)

    body = assert_problem(checkout(client, customer), 422, "validation_error")

    assert body["errors"][0]["field"] == "items[1].product_id"
    assert str(gone["id"]) in body["detail"]
    assert written(database_url) == before
    assert cart_state(database_url) == cart_before


def test_a_repriced_line_is_ordered_at_the_current_price(
    client, customer, make_product, database_url
):
    pen = make_product(price_cents=1000, stock=5)
    fill(client, customer, [(pen["id"], 2)])
    db_rows(
        database_url,
        "UPDATE products SET price_cents = 1234 WHERE id = %s RETURNING id",
        (pen["id"],),
    )

    order = checkout(client, customer).json

    assert order["items"][0]["unit_price_cents"] == 1234
    assert order["total_cents"] == 2468


def test_not_enough_stock_is_409_and_the_cart_is_unchanged(
    client, customer, make_product, database_url
):
    pen = make_product(stock=5)
    ink = make_product(stock=1)
    fill(client, customer, [(pen["id"], 2), (ink["id"], 3)])
    before, cart_before = written(database_url), cart_state(database_url)

    body = assert_problem(checkout(client, customer), 409, "insufficient_stock")

    assert (body["product_id"], body["requested"], body["available"]) == (ink["id"], 3, 1)
    assert written(database_url) == before
    assert cart_state(database_url) == cart_before


def test_a_refused_shipment_leaves_the_cart_as_it_was(
    client, customer, make_user, make_product, database_url
):
    pen = make_product(stock=5)
    ((theirs,),) = db_rows(
        database_url,
        "INSERT INTO addresses (user_id, full_name, line1, city, postal_code, country) "
        "VALUES (%s, 'X', 'Y', 'Z', '1', 'DE') RETURNING id",
        (make_user().id,),
    )
    fill(client, customer, [(pen["id"], 1)])
    cart_before = cart_state(database_url)

    body = assert_problem(
        checkout(client, customer, {"address_id": theirs}), 422, "validation_error"
    )

    assert body["errors"][0]["field"] == "address_id"
    assert cart_state(database_url) == cart_before


def test_racing_checkouts_of_two_carts_for_the_last_units(
    app, make_user, make_product, database_url
):
    last = make_product(stock=3)
    buyers = [make_user(), make_user()]
    client = testing.TestClient(app)
    for buyer in buyers:
        fill(client, buyer, [(last["id"], 2)])

    responses = together(2, lambda i: checkout(testing.TestClient(app), buyers[i]))

    assert sorted(r.status_code for r in responses) == [201, 409]
    assert stock_of(database_url, last["id"]) == 1
    loser = buyers[[r.status_code for r in responses].index(409)]
    assert cart_lines(client, loser) == [(last["id"], 2)]  # the loser's cart is untouched
    assert db_rows(database_url, "SELECT count(*) FROM orders") == [(1,)]


def test_a_retried_checkout_replays_the_first_order_and_keeps_the_refilled_cart(
    client, customer, make_product, database_url
):
    pen = make_product(stock=10)
    ink = make_product(stock=10)
    key = {"Idempotency-Key": "checkout-7"}
    fill(client, customer, [(pen["id"], 1)])
    first = checkout(client, customer, headers=key)
    fill(client, customer, [(ink["id"], 3)])  # the customer shops on

    again = checkout(client, customer, headers=key)

    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json == first.json
    assert cart_lines(client, customer) == [(ink["id"], 3)]
    assert stock_of(database_url, ink["id"]) == 10
    assert db_rows(database_url, "SELECT count(*) FROM orders") == [(1,)]
    # a retry of the same key with an empty cart replays too
    client.simulate_delete("/api/cart", headers=customer.headers)
    assert checkout(client, customer, headers=key).json == first.json


def test_one_key_cannot_serve_both_an_order_and_a_checkout(
    client, customer, make_product, database_url
):
    pen = make_product(stock=10)
    key = {"Idempotency-Key": "shared-key"}
    fill(client, customer, [(pen["id"], 1)])
    assert checkout(client, customer, headers=key).status_code == 201

    other = client.simulate_post(
        "/api/orders",
        json={"items": [{"product_id": pen["id"], "quantity": 1}]},
        headers={**customer.headers, **key},
    )
    assert_problem(other, 409, "idempotency_key_reused")
    # and a checkout with another body under the same key is refused as well
    assert_problem(
        checkout(client, customer, {"shipping_address": ADDRESS}, headers=key),
        409,
        "idempotency_key_reused",
    )


def test_racing_retries_of_one_checkout_place_one_order(app, customer, make_product, database_url):
    pen = make_product(stock=10)
    fill(testing.TestClient(app), customer, [(pen["id"], 2)])
    key = {"Idempotency-Key": "double-tap"}

    responses = together(4, lambda i: checkout(testing.TestClient(app), customer, headers=key))

    assert {r.status_code for r in responses} == {201}
    assert len({r.json["id"] for r in responses}) == 1
    assert stock_of(database_url, pen["id"]) == 8


def test_a_line_added_while_checking_out_is_ordered_or_stays_never_lost(
    app, customer, make_product, database_url
):
    products = [make_product(stock=100) for _ in range(4)]
    client = testing.TestClient(app)
    for round_ in range(5):
        fill(client, customer, [(products[0]["id"], 1)])
        late = products[1 + round_ % 3]["id"]

        def work(i, late=late):
            if i == 0:
                return checkout(testing.TestClient(app), customer)
            return testing.TestClient(app).simulate_put(
                f"/api/cart/items/{late}", json={"quantity": 1}, headers=customer.headers
            )

        placed, added = together(2, work)
        assert placed.status_code == 201 and added.status_code in (200, 201)
        ordered = {item["product_id"] for item in placed.json["items"]}
        left = {product_id for product_id, _ in cart_lines(client, customer)}
        assert ordered | left == {products[0]["id"], late}
        assert not ordered & left
        client.simulate_delete("/api/cart", headers=customer.headers)


def test_checkout_counts_against_max_pending_orders(
    app_client, customer, make_product, database_url
):
    client = app_client(MAX_PENDING_ORDERS=1)
    pen = make_product(stock=10)
    fill(client, customer, [(pen["id"], 1)])
    assert checkout(client, customer).status_code == 201
    fill(client, customer, [(pen["id"], 1)])
    cart_before = cart_state(database_url)

    assert_problem(checkout(client, customer), 409, "too_many_pending_orders")
    assert cart_state(database_url) == cart_before


def test_require_verified_email_applies_to_checkout(app_client, customer, make_product):
    client = app_client(REQUIRE_VERIFIED_EMAIL="true")
    pen = make_product(stock=10)
    fill(client, customer, [(pen["id"], 1)])

    assert_problem(checkout(client, customer), 403, "email_not_verified")
