"""Orders — additions: where an order goes (inline address or address_id, copied), what
shipping costs (the method's price, free from its threshold), the payment and expiry fields,
and MAX_PENDING_ORDERS (exact under racing orders)."""

from __future__ import annotations

import json

import pytest
from falcon import testing

from tests.conftest import assert_problem, db_rows, order_body, together
from tests.helpers import place, written

pytestmark = pytest.mark.usefixtures("ledger_holds")

HOME = {
    "full_name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "line2": "Flat 3",
    "city": "London",
    "region": "",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
    "phone": "+44 20 7946 0000",
}


@pytest.fixture()
def make_address(database_url):
    """`make_address(user, country="DE")`: an address book row of `user`; its id."""

    def make(user, **fields) -> int:
        row = {**HOME, **fields}
        ((address_id,),) = db_rows(
            database_url,
            """
            INSERT INTO addresses (user_id, full_name, line1, line2, city, region,
                                   postal_code, country, phone, is_default)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, false) RETURNING id""",
            (user.id, *(row[k] for k in HOME)),
        )
        return address_id

    return make


@pytest.fixture()
def make_method(database_url):
    """`make_method(price_cents=500, free_over_cents=None, countries=[], is_active=True)`."""
    counter = iter(range(1, 1000))

    def make(
        *,
        price_cents: int = 500,
        free_over_cents: int | None = None,
        countries: list[str] | None = None,
        is_active: bool = True,
        name: str | None = None,
    ) -> int:
        ((method_id,),) = db_rows(
            database_url,
            """
            INSERT INTO shipping_methods (name, price_cents, free_over_cents, countries, is_active)
            VALUES (%s, %s, %s, %s, %s) RETURNING id""",
            (
                name or f"Method {next(counter)}",
                price_cents,
                free_over_cents,
                countries or [],
                is_active,
            ),
        )
        return method_id

    return make


def post(client, user, lines, **extra):
    return client.simulate_post(
        "/api/orders", json={**order_body(lines), **extra}, headers=user.headers
    )


def pending_counts(database_url) -> list[tuple]:
    """Per buyer: (pending slots held, pending orders, distinct slots): always equal."""
    return db_rows(
        database_url,
        """
        SELECT count(pending_slot), count(*) FILTER (WHERE status = 'pending'),
               count(DISTINCT pending_slot)
          FROM orders GROUP BY user_id ORDER BY user_id""",
    )


# ------------------------------------------------------------------ the new order fields


def test_an_order_without_shipment_has_the_new_fields_with_their_defaults(
    client, customer, make_product
):
    pen = make_product(price_cents=150, stock=5)

    order = place(client, customer, [(pen["id"], 2)]).json

    assert order["subtotal_cents"] == 300
    assert order["shipping_cents"] == 0
    assert order["total_cents"] == 300
    assert order["shipping_address"] is None
    assert order["shipping_method"] is None
    assert order["payment"] == {"provider": "manual", "status": "unpaid"}
    assert order["expires_at"] is None


def test_inline_address_and_method_are_copied_and_priced(
    client, customer, make_product, make_method, database_url
):
    pen = make_product(price_cents=1250, stock=5)
    method = make_method(price_cents=499, name="Standard", countries=["GB", "IE"])

    response = post(
        client,
        customer,
        [(pen["id"], 2)],
        shipping_address=HOME,
        shipping_method_id=method,
    )

    assert response.status_code == 201, response.text
    order = response.json
    assert order["shipping_address"] == HOME
    assert order["shipping_method"] == {"id": method, "name": "Standard"}
    assert (order["subtotal_cents"], order["shipping_cents"], order["total_cents"]) == (
        2500,
        499,
        2999,
    )
    # every read of the order is the same document as the 201
    assert client.simulate_get(f"/api/orders/{order['id']}", headers=customer.headers).json == order
    listed = client.simulate_get("/api/orders", headers=customer.headers).json["items"]
    assert listed == [order]
    # and so is the order.created event's
    ((data,),) = db_rows(database_url, "SELECT data FROM events WHERE type = 'order.created'")
    assert data["order"] == order


def test_optional_address_fields_default_to_empty_strings(client, customer, make_product):
    pen = make_product(stock=5)
    minimal = {k: HOME[k] for k in ("full_name", "line1", "city", "postal_code", "country")}

    order = post(client, customer, [(pen["id"], 1)], shipping_address=minimal).json

    assert order["shipping_address"] == {**minimal, "line2": "", "region": "", "phone": ""}


def test_address_id_is_copied_and_later_edits_never_change_the_order(
    client, customer, make_product, make_address, database_url
):
    pen = make_product(stock=5)
    address = make_address(customer, city="Paris", country="FR", postal_code="75001")

    order = post(client, customer, [(pen["id"], 1)], address_id=address).json
    assert order["shipping_address"] == {
        **HOME,
        "city": "Paris",
        "country": "FR",
        "postal_code": "75001",
    }

    db_rows(
        database_url, "UPDATE addresses SET city = 'Lyon' WHERE id = %s RETURNING id", (address,)
    )
    db_rows(database_url, "DELETE FROM addresses WHERE id = %s RETURNING id", (address,))
    again = client.simulate_get(f"/api/orders/{order['id']}", headers=customer.headers).json
    assert again["shipping_address"]["city"] == "Paris"


def test_another_users_or_an_unknown_address_id_is_422_and_writes_nothing(
    client, customer, make_user, make_product, make_address, database_url
):
    pen = make_product(stock=5)
    theirs = make_address(make_user())
    before = written(database_url)

    for address_id in (theirs, theirs + 1000):
        body = assert_problem(
            post(client, customer, [(pen["id"], 1)], address_id=address_id), 422, "validation_error"
        )
        assert body["errors"][0]["field"] == "address_id"
    assert written(database_url) == before


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"shipping_address": HOME, "address_id": 1}, "address_id"),
        ({"shipping_method_id": 1}, "shipping_method_id"),
        ({"shipping_address": {**HOME, "country": "gb"}}, "shipping_address.country"),
        ({"shipping_address": {**HOME, "country": "XX"}}, "shipping_address.country"),
        ({"shipping_address": {**HOME, "phone": "call me"}}, "shipping_address.phone"),
        ({"shipping_address": {**HOME, "postal_code": "1" * 21}}, "shipping_address.postal_code"),
        ({"shipping_address": {**HOME, "line1": "a\nb"}}, "shipping_address.line1"),
        ({"shipping_address": {"full_name": "A"}}, "shipping_address.line1"),
        ({"address_id": 0}, "address_id"),
    ],
)
def test_contradictory_or_invalid_shipment_fields_are_422(
    client, customer, make_product, database_url, extra, field
):
    pen = make_product(stock=5)
    before = written(database_url)

    body = assert_problem(
        post(client, customer, [(pen["id"], 1)], **extra), 422, "validation_error"
    )

    assert body["errors"][0]["field"] == field
    assert written(database_url) == before


def test_a_method_that_does_not_ship_there_or_is_inactive_or_unknown_is_422(
    client, customer, make_product, make_method, database_url
):
    pen = make_product(stock=5)
    germany_only = make_method(countries=["DE", "AT"])
    inactive = make_method(is_active=False)
    before = written(database_url)

    for method_id, says in (
        (germany_only, "does not ship"),
        (inactive, "not active"),
        (inactive + 1000, "not active"),
    ):
        body = assert_problem(
            post(
                client,
                customer,
                [(pen["id"], 1)],
                shipping_address=HOME,
                shipping_method_id=method_id,
            ),
            422,
            "validation_error",
        )
        assert body["errors"][0]["field"] == "shipping_method_id"
        assert says in body["detail"]
    assert written(database_url) == before
    # the same method ships to a German address
    ok = post(
        client,
        customer,
        [(pen["id"], 1)],
        shipping_address={**HOME, "country": "DE"},
        shipping_method_id=germany_only,
    )
    assert ok.status_code == 201, ok.text


def test_shipping_is_free_exactly_at_the_threshold(client, customer, make_product, make_method):
    pen = make_product(price_cents=1000, stock=10)
    cheap = make_product(price_cents=999, stock=10)
    cent = make_product(price_cents=1, stock=10)
    method = make_method(price_cents=700, free_over_cents=3000)

    def shipped(lines) -> tuple[int, int, int]:
        order = post(client, customer, lines, shipping_address=HOME, shipping_method_id=method).json
        return order["subtotal_cents"], order["shipping_cents"], order["total_cents"]

    assert shipped([(pen["id"], 2), (cheap["id"], 1)]) == (2999, 700, 3699)
    assert shipped([(pen["id"], 3)]) == (3000, 0, 3000)
    assert shipped([(pen["id"], 3), (cent["id"], 1)]) == (3001, 0, 3001)


def test_prices_sent_by_the_client_are_ignored(client, customer, make_product, make_method):
    pen = make_product(price_cents=1000, stock=5)
    method = make_method(price_cents=700)

    order = post(
        client,
        customer,
        [(pen["id"], 1)],
        shipping_address=HOME,
        shipping_method_id=method,
        shipping_cents=0,
        subtotal_cents=1,
        total_cents=1,
        payment={"provider": "stripe", "status": "succeeded"},
    ).json

    assert (order["subtotal_cents"], order["shipping_cents"], order["total_cents"]) == (
        1000,
        700,
        1700,
    )
    assert order["payment"] == {"provider": "manual", "status": "unpaid"}


def test_the_idempotency_key_covers_the_shipment_fields(
    client, customer, make_product, make_method, database_url
):
    pen = make_product(stock=5)
    method = make_method()
    key = {"Idempotency-Key": "ship-1"}
    body = {**order_body([(pen["id"], 1)]), "shipping_address": HOME, "shipping_method_id": method}

    first = client.simulate_post("/api/orders", json=body, headers={**customer.headers, **key})
    again = client.simulate_post("/api/orders", json=body, headers={**customer.headers, **key})
    other = client.simulate_post(
        "/api/orders",
        json={**body, "shipping_address": {**HOME, "city": "Leeds"}},
        headers={**customer.headers, **key},
    )

    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json == first.json
    assert_problem(other, 409, "idempotency_key_reused")
    assert db_rows(database_url, "SELECT count(*) FROM orders") == [(1,)]


# ------------------------------------------------------------------ MAX_PENDING_ORDERS


def test_max_pending_orders_refuses_the_next_and_moves_out_of_pending_make_room(
    app_client, customer, admin, make_product, database_url
):
    client = app_client(MAX_PENDING_ORDERS=2)
    pen = make_product(stock=50)
    first = place(client, customer, [(pen["id"], 1)]).json
    second = place(client, customer, [(pen["id"], 1)]).json
    before = written(database_url)

    body = assert_problem(place(client, customer, [(pen["id"], 1)]), 409, "too_many_pending_orders")
    assert "2 pending orders" in body["detail"]
    assert written(database_url) == before

    # the owner cancels one, staff mark the other paid: room for two again
    assert (
        client.simulate_post(
            f"/api/orders/{first['id']}/cancel", headers=customer.headers
        ).status_code
        == 200
    )
    assert (
        client.simulate_put(
            f"/api/orders/{second['id']}/status", json={"status": "paid"}, headers=admin.headers
        ).status_code
        == 200
    )
    third = place(client, customer, [(pen["id"], 1)])
    fourth = place(client, customer, [(pen["id"], 1)])
    assert third.status_code == fourth.status_code == 201
    assert_problem(place(client, customer, [(pen["id"], 1)]), 409, "too_many_pending_orders")
    # deleting a pending order frees its slot too
    assert (
        client.simulate_delete(f"/api/orders/{third.json['id']}", headers=admin.headers).status_code
        == 204
    )
    assert place(client, customer, [(pen["id"], 1)]).status_code == 201
    assert pending_counts(database_url) == [(2, 2, 2)]


def test_the_limit_is_per_customer(app_client, make_user, make_product):
    client = app_client(MAX_PENDING_ORDERS=1)
    pen = make_product(stock=50)
    alice, bob = make_user(), make_user()

    assert place(client, alice, [(pen["id"], 1)]).status_code == 201
    assert place(client, bob, [(pen["id"], 1)]).status_code == 201
    assert_problem(place(client, alice, [(pen["id"], 1)]), 409, "too_many_pending_orders")


def test_racing_orders_never_exceed_the_limit(app_client, database_url, customer, make_product):
    app = app_client(MAX_PENDING_ORDERS=3).app
    pen = make_product(stock=100)

    statuses = together(
        12,
        lambda i: (
            testing.TestClient(app)
            .simulate_post(
                "/api/orders", json=order_body([(pen["id"], 1)]), headers=customer.headers
            )
            .status_code
        ),
    )

    assert sorted(statuses) == [201] * 3 + [409] * 9
    assert db_rows(database_url, "SELECT count(*), min(stock) FROM orders, products") == [(3, 97)]
    assert pending_counts(database_url) == [(3, 3, 3)]


def test_a_replayed_order_is_not_refused_by_the_limit(app_client, customer, make_product):
    client = app_client(MAX_PENDING_ORDERS=1)
    pen = make_product(stock=5)
    key = {"Idempotency-Key": "only-one"}

    first = place(client, customer, [(pen["id"], 1)], headers=key)
    again = place(client, customer, [(pen["id"], 1)], headers=key)

    assert first.status_code == again.status_code == 201
    assert again.json == first.json


def test_pending_slots_follow_every_way_out_of_pending(
    app_client, customer, admin, make_product, database_url
):
    client = app_client(MAX_PENDING_ORDERS=5)
    pen = make_product(stock=50)
    ids = [place(client, customer, [(pen["id"], 1)]).json["id"] for _ in range(5)]
    assert pending_counts(database_url) == [(5, 5, 5)]
    assert_problem(place(client, customer, [(pen["id"], 1)]), 409, "too_many_pending_orders")

    client.simulate_put(
        f"/api/orders/{ids[0]}/status", json={"status": "paid"}, headers=admin.headers
    )
    client.simulate_put(
        f"/api/orders/{ids[0]}/status", json={"status": "shipped"}, headers=admin.headers
    )
    client.simulate_put(
        f"/api/orders/{ids[1]}/status", json={"status": "cancelled"}, headers=admin.headers
    )
    client.simulate_post(f"/api/orders/{ids[2]}/cancel", headers=customer.headers)
    client.simulate_delete(f"/api/orders/{ids[3]}", headers=admin.headers)
    client.simulate_delete(f"/api/orders/{ids[0]}", headers=admin.headers)  # shipped: no change

    assert pending_counts(database_url) == [(1, 1, 1)]
    # the four slots given back are taken again, the lowest first
    for _ in range(4):
        assert place(client, customer, [(pen["id"], 1)]).status_code == 201
    assert_problem(place(client, customer, [(pen["id"], 1)]), 409, "too_many_pending_orders")
    assert db_rows(
        database_url, "SELECT pending_slot FROM orders WHERE pending_slot IS NOT NULL ORDER BY 1"
    ) == [(1,), (2,), (3,), (4,), (5,)]


def test_orders_placed_without_a_limit_take_no_slot(client, customer, make_product, database_url):
    pen = make_product(stock=50)
    for _ in range(3):
        assert place(client, customer, [(pen["id"], 1)]).status_code == 201
    assert pending_counts(database_url) == [(0, 3, 0)]


def test_the_event_of_a_status_change_carries_the_new_fields(
    client, customer, admin, make_product, make_method, database_url
):
    pen = make_product(price_cents=1000, stock=5)
    method = make_method(price_cents=250, name="Courier")
    order = post(
        client, customer, [(pen["id"], 1)], shipping_address=HOME, shipping_method_id=method
    ).json

    paid = client.simulate_put(
        f"/api/orders/{order['id']}/status", json={"status": "paid"}, headers=admin.headers
    ).json

    for field in (
        "subtotal_cents",
        "shipping_cents",
        "shipping_address",
        "shipping_method",
        "payment",
        "expires_at",
        "total_cents",
    ):
        assert paid[field] == order[field]
    ((data,),) = db_rows(
        database_url, "SELECT data FROM events WHERE type = 'order.status_changed'"
    )
    assert data["order"] == paid
    assert json.dumps(data["order"]["shipping_address"], sort_keys=True) == json.dumps(
        HOME, sort_keys=True
    )
