"""The cart: guest carts (X-Cart-Token), user carts (bearer), lines with current prices and
availability, the 50-line cap under races, claiming a guest cart, expiry and the purge."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from falcon import testing

from shopapi.db import queries
from shopapi.services import carts
from tests.conftest import assert_problem, db_rows, together

CART_KEYS = {"id", "items", "subtotal_cents", "currency", "updated_at", "expires_at"}
LINE_KEYS = {
    "product_id",
    "name",
    "quantity",
    "unit_price_cents",
    "line_total_cents",
    "available",
    "in_stock",
}
CART_TTL = 2_592_000  # the default CART_TTL: 30 days
GONE = 900_000  # product ids from here on name no product (lines filled by SQL)


def execute(database_url: str, sql: str, params: tuple = ()) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql, params or None)


def guest(client) -> dict[str, str]:
    """A new guest cart's headers (its X-Cart-Token)."""
    response = client.simulate_post("/api/cart")
    assert response.status_code == 201, response.text
    return {"X-Cart-Token": response.json["token"]}


def put(client, headers, product_id: int, quantity: int):
    return client.simulate_put(
        f"/api/cart/items/{product_id}", headers=headers, json={"quantity": quantity}
    )


def get(client, headers) -> dict:
    response = client.simulate_get("/api/cart", headers=headers)
    assert response.status_code == 200, response.text
    return response.json


def lines(cart: dict) -> list[tuple[int, int]]:
    return [(line["product_id"], line["quantity"]) for line in cart["items"]]


def cart_rows(database_url) -> list[tuple]:
    return db_rows(
        database_url, "SELECT id, user_id, token_hash, expires_at FROM carts ORDER BY id"
    )


def item_rows(database_url) -> list[tuple]:
    return db_rows(
        database_url,
        "SELECT cart_id, product_id, quantity, name, unit_price_cents FROM cart_items "
        "ORDER BY cart_id, added",
    )


def fill(database_url, cart_id: int, count: int, *, first: int = GONE) -> None:
    """`count` lines of products that do not exist (they count towards the cap all the same)."""
    execute(
        database_url,
        "INSERT INTO cart_items (cart_id, product_id, quantity, name, unit_price_cents) "
        "SELECT %s, g, 1, 'old', 1 FROM generate_series(%s::bigint, %s::bigint - 1) g",
        (cart_id, first, first + count),
    )


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ------------------------------------------------------------------ guest carts


def test_a_guest_cart_comes_with_a_secret_token_of_which_only_the_digest_is_stored(
    client, database_url
):
    response = client.simulate_post("/api/cart")
    assert response.status_code == 201, response.text
    body = response.json
    assert set(body) == CART_KEYS | {"token"}
    token = body["token"]
    assert len(token) >= 43  # 256 bits, URL-safe base64
    assert body["items"] == [] and body["subtotal_cents"] == 0 and body["currency"] == "USD"
    expires = parse_time(body["expires_at"])
    assert abs(expires - datetime.now(UTC) - timedelta(seconds=CART_TTL)) < timedelta(minutes=1)
    [(cart_id, user_id, token_hash, _)] = cart_rows(database_url)
    assert (cart_id, user_id) == (body["id"], None)
    assert bytes(token_hash) == hashlib.sha256(token.encode()).digest()
    # the token itself is nowhere in the row
    row = db_rows(database_url, "SELECT row_to_json(c)::text FROM carts c")[0][0]
    assert token not in row
    # each guest gets their own
    assert client.simulate_post("/api/cart").json["token"] != token


def test_a_guest_sets_reads_removes_and_clears_lines(client, make_product, database_url):
    a = make_product(name="Apple", price_cents=250, stock=10)
    b = make_product(name="Bread", price_cents=400, stock=10)
    headers = guest(client)

    added = put(client, headers, a["id"], 3)
    assert added.status_code == 201, added.text
    assert set(added.json) == CART_KEYS
    assert added.json["items"] == [
        {
            "product_id": a["id"],
            "name": "Apple",
            "quantity": 3,
            "unit_price_cents": 250,
            "line_total_cents": 750,
            "available": True,
            "in_stock": True,
        }
    ]
    changed = put(client, headers, a["id"], 2)
    assert changed.status_code == 200, changed.text
    assert put(client, headers, b["id"], 1).status_code == 201
    cart = get(client, headers)
    assert set(cart["items"][0]) == LINE_KEYS
    assert lines(cart) == [(a["id"], 2), (b["id"], 1)]
    assert cart["subtotal_cents"] == 2 * 250 + 400

    removed = client.simulate_delete(f"/api/cart/items/{a['id']}", headers=headers)
    assert removed.status_code == 204 and not removed.content
    absent = client.simulate_delete(f"/api/cart/items/{a['id']}", headers=headers)
    assert absent.status_code == 204
    assert lines(get(client, headers)) == [(b["id"], 1)]

    assert put(client, headers, a["id"], 5).status_code == 201
    cleared = client.simulate_delete("/api/cart", headers=headers)
    assert cleared.status_code == 204 and not cleared.content
    cart = get(client, headers)
    assert cart["items"] == [] and cart["subtotal_cents"] == 0
    assert item_rows(database_url) == []
    assert len(cart_rows(database_url)) == 1  # the cart itself stays


def test_each_change_keeps_a_guest_cart_alive_for_another_ttl(client, make_product, database_url):
    product = make_product()
    headers = guest(client)
    execute(
        database_url,
        "UPDATE carts SET expires_at = now() + interval '1 hour', "
        "updated_at = now() - interval '1 day'",
    )
    soon = parse_time(get(client, headers)["expires_at"])
    assert soon - datetime.now(UTC) < timedelta(hours=2)  # a read changes nothing

    cart = put(client, headers, product["id"], 1).json
    later = parse_time(cart["expires_at"])
    assert abs(later - datetime.now(UTC) - timedelta(seconds=CART_TTL)) < timedelta(minutes=1)
    assert datetime.now(UTC) - parse_time(cart["updated_at"]) < timedelta(minutes=1)

    # removing nothing is no change; removing a line is
    execute(database_url, "UPDATE carts SET expires_at = now() + interval '1 hour'")
    client.simulate_delete("/api/cart/items/999999", headers=headers)
    assert parse_time(get(client, headers)["expires_at"]) - datetime.now(UTC) < timedelta(hours=2)
    client.simulate_delete(f"/api/cart/items/{product['id']}", headers=headers)
    assert parse_time(get(client, headers)["expires_at"]) - datetime.now(UTC) > timedelta(days=29)


def test_without_a_bearer_or_cart_token_every_cart_call_is_401(client, make_product, database_url):
    product = make_product()
    for response in (
        client.simulate_get("/api/cart"),
        put(client, {}, product["id"], 1),
        client.simulate_delete(f"/api/cart/items/{product['id']}"),
        client.simulate_delete("/api/cart"),
        client.simulate_get("/api/cart", headers={"X-Cart-Token": ""}),
    ):
        assert_problem(response, 401, "not_authenticated")
    assert cart_rows(database_url) == []


def test_an_invalid_bearer_token_is_401_even_with_a_good_cart_token(
    client, make_product, database_url
):
    product = make_product()
    headers = {**guest(client), "Authorization": "Bearer not-a-token"}
    assert_problem(client.simulate_get("/api/cart", headers=headers), 401, "not_authenticated")
    assert_problem(put(client, headers, product["id"], 1), 401, "not_authenticated")
    assert item_rows(database_url) == []


def test_an_unknown_or_expired_cart_token_is_404(client, make_product, database_url):
    product = make_product()
    unknown = {"X-Cart-Token": "x" * 43}
    expired = guest(client)
    execute(database_url, "UPDATE carts SET expires_at = now() - interval '1 second'")
    before = cart_rows(database_url)
    for headers in (unknown, expired):
        assert_problem(client.simulate_get("/api/cart", headers=headers), 404, "not_found")
        assert_problem(put(client, headers, product["id"], 1), 404, "not_found")
        assert_problem(
            client.simulate_delete(f"/api/cart/items/{product['id']}", headers=headers),
            404,
            "not_found",
        )
        assert_problem(client.simulate_delete("/api/cart", headers=headers), 404, "not_found")
    assert cart_rows(database_url) == before  # not revived
    assert item_rows(database_url) == []


def test_a_bearer_token_wins_over_a_cart_token(client, customer, make_product, database_url):
    a, b = make_product(), make_product()
    guest_headers = guest(client)
    assert put(client, guest_headers, a["id"], 1).status_code == 201
    assert put(client, customer.headers, b["id"], 2).status_code == 201

    both = {**guest_headers, **customer.headers}
    assert lines(get(client, both)) == [(b["id"], 2)]  # the user's cart, not the guest's
    assert put(client, both, a["id"], 7).status_code == 201  # written to the user's cart
    assert lines(get(client, guest_headers)) == [(a["id"], 1)]  # the guest's is untouched
    assert lines(get(client, customer.headers)) == [(b["id"], 2), (a["id"], 7)]
    # the user's cart has no token to reach it by
    [user_cart] = [row for row in cart_rows(database_url) if row[1] == customer.id]
    assert user_cart[2] is None and user_cart[3] is None


# ------------------------------------------------------------------ user carts


def test_a_user_cart_is_made_empty_on_first_read_and_never_expires(client, customer, database_url):
    assert cart_rows(database_url) == []
    cart = get(client, customer.headers)
    assert set(cart) == CART_KEYS
    assert cart["items"] == [] and cart["subtotal_cents"] == 0 and cart["currency"] == "USD"
    assert cart["expires_at"] is None
    assert cart_rows(database_url) == [(cart["id"], customer.id, None, None)]
    assert get(client, customer.headers)["id"] == cart["id"]


def test_put_answers_201_when_it_adds_a_line_and_200_when_it_changes_one(
    client, customer, make_product, database_url
):
    product = make_product(price_cents=1999)
    first = put(client, customer.headers, product["id"], 1)
    assert first.status_code == 201, first.text
    assert first.json["expires_at"] is None
    second = put(client, customer.headers, product["id"], 4)
    assert second.status_code == 200, second.text
    assert lines(second.json) == [(product["id"], 4)]
    assert second.json["subtotal_cents"] == 4 * 1999
    same = put(client, customer.headers, product["id"], 4)
    assert same.status_code == 200
    assert db_rows(database_url, "SELECT expires_at FROM carts") == [(None,)]


@pytest.mark.parametrize("quantity", [0, 1001, -1, "2", None, 1.5])
def test_a_quantity_outside_1_to_1000_is_422(
    client, customer, make_product, database_url, quantity
):
    product = make_product()
    response = put(client, customer.headers, product["id"], quantity)
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"][0]["field"] == "quantity"
    assert item_rows(database_url) == []


def test_an_unknown_or_inactive_product_is_422(client, customer, make_product, database_url):
    inactive = make_product(is_active=False)
    guest_headers = guest(client)
    for headers in (customer.headers, guest_headers):
        for product_id in (inactive["id"], 424242):
            body = assert_problem(put(client, headers, product_id, 1), 422, "validation_error")
            assert body["errors"][0]["field"] == "product_id"
    assert_problem(put(client, customer.headers, "abc", 1), 422, "validation_error")
    assert_problem(put(client, customer.headers, 2**63, 1), 422, "validation_error")
    assert item_rows(database_url) == []


def test_a_cart_holds_at_most_50_products(client, customer, make_product, database_url):
    cart_id = get(client, customer.headers)["id"]
    fill(database_url, cart_id, 49)
    last, extra = make_product(), make_product()
    assert put(client, customer.headers, last["id"], 1).status_code == 201
    before = (item_rows(database_url), cart_rows(database_url))
    updated_before = db_rows(database_url, "SELECT updated_at FROM carts")

    full = assert_problem(put(client, customer.headers, extra["id"], 1), 409, "cart_full")
    assert "50" in full["detail"]
    assert (item_rows(database_url), cart_rows(database_url)) == before
    assert db_rows(database_url, "SELECT updated_at FROM carts") == updated_before

    # a line already there may still change; removing one makes room
    assert put(client, customer.headers, last["id"], 9).status_code == 200
    client.simulate_delete(f"/api/cart/items/{GONE}", headers=customer.headers)
    assert put(client, customer.headers, extra["id"], 1).status_code == 201
    assert db_rows(database_url, "SELECT count(*) FROM cart_items") == [(50,)]


# ------------------------------------------------------------------ what a cart shows


def test_a_cart_shows_the_products_current_names_prices_and_availability(
    client, customer, make_product, database_url
):
    price_up = make_product(name="Tea", price_cents=300, stock=10)
    retired = make_product(name="Mug", price_cents=900, stock=10)
    scarce = make_product(name="Honey", price_cents=700, stock=2)
    deleted = make_product(name="Spoon", price_cents=150, stock=10)
    for product, quantity in ((price_up, 2), (retired, 1), (scarce, 3), (deleted, 4)):
        assert put(client, customer.headers, product["id"], quantity).status_code == 201

    execute(
        database_url,
        "UPDATE products SET price_cents = 350, name = 'Green tea' WHERE id = %s",
        (price_up["id"],),
    )
    execute(
        database_url,
        "UPDATE products SET is_active = false, name = 'Old mug', price_cents = 800 WHERE id = %s",
        (retired["id"],),
    )
    execute(database_url, "DELETE FROM products WHERE id = %s", (deleted["id"],))

    cart = get(client, customer.headers)
    assert cart["items"] == [
        {
            "product_id": price_up["id"],
            "name": "Green tea",
            "quantity": 2,
            "unit_price_cents": 350,
            "line_total_cents": 700,
            "available": True,
            "in_stock": True,
        },
        {
            "product_id": retired["id"],
            "name": "Old mug",
            "quantity": 1,
            "unit_price_cents": 800,
            "line_total_cents": 800,
            "available": False,
            "in_stock": False,
        },
        {
            "product_id": scarce["id"],
            "name": "Honey",
            "quantity": 3,
            "unit_price_cents": 700,
            "line_total_cents": 2100,
            "available": True,
            "in_stock": False,  # 3 wanted, 2 left: still counted, checkout will refuse it
        },
        {  # the product row is gone: the line as it was last set
            "product_id": deleted["id"],
            "name": "Spoon",
            "quantity": 4,
            "unit_price_cents": 150,
            "line_total_cents": 600,
            "available": False,
            "in_stock": False,
        },
    ]
    assert cart["subtotal_cents"] == 700 + 2100  # available lines only

    # a gone line can still be removed; an inactive one cannot be set again
    assert_problem(put(client, customer.headers, retired["id"], 2), 422, "validation_error")
    client.simulate_delete(f"/api/cart/items/{deleted['id']}", headers=customer.headers)
    assert deleted["id"] not in [
        line["product_id"] for line in get(client, customer.headers)["items"]
    ]


def test_lines_keep_the_order_they_were_first_added_in(client, customer, make_product):
    a, b, c = make_product(), make_product(), make_product()
    for product in (c, a, b):
        put(client, customer.headers, product["id"], 1)
    put(client, customer.headers, c["id"], 5)  # re-setting keeps its place
    assert lines(get(client, customer.headers)) == [(c["id"], 5), (a["id"], 1), (b["id"], 1)]
    client.simulate_delete(f"/api/cart/items/{c['id']}", headers=customer.headers)
    put(client, customer.headers, c["id"], 2)  # removed and added again: now last
    assert lines(get(client, customer.headers)) == [(a["id"], 1), (b["id"], 1), (c["id"], 2)]


def test_reading_a_cart_is_one_statement(client, customer, make_product, query_counter):
    products = [make_product() for _ in range(5)]
    for product in products:
        put(client, customer.headers, product["id"], 1)
    headers = guest(client)
    for product in products:
        put(client, headers, product["id"], 2)
    for who in (customer.headers, headers):
        with query_counter() as counted:
            cart = get(client, who)
        assert len(cart["items"]) == 5
        assert counted.n == 1


def test_the_cart_read_is_served_by_indexes(database_url):
    """With sequential scans priced out, the planner must still find index paths for every
    table the read touches (a missing index shows up as a Seq Scan nonetheless)."""
    sql = queries.get_cart.sql
    with psycopg.connect(database_url) as conn:
        conn.execute("SET enable_seqscan = off")
        for params in (
            {"user_id": 1, "token_hash": None, "currency": "USD"},
            {"user_id": None, "token_hash": b"x" * 32, "currency": "USD"},
        ):
            plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + sql, params))
            assert "Seq Scan" not in plan, plan


# ------------------------------------------------------------------ claim


def test_claim_merges_keeping_the_larger_quantity_and_deletes_the_guest_cart(
    client, customer, make_product, database_url
):
    a, b, c = make_product(), make_product(), make_product()
    put(client, customer.headers, a["id"], 2)
    put(client, customer.headers, b["id"], 1)
    guest_headers = guest(client)
    for product, quantity in ((a, 1), (c, 3), (b, 4)):
        put(client, guest_headers, product["id"], quantity)
    user_cart = get(client, customer.headers)["id"]

    response = client.simulate_post(
        "/api/cart/claim", headers={**customer.headers, **guest_headers}
    )
    assert response.status_code == 200, response.text
    cart = response.json
    assert set(cart) == CART_KEYS
    assert cart["id"] == user_cart and cart["expires_at"] is None
    # the larger of both quantities, never the sum; the guest's new lines come last
    assert lines(cart) == [(a["id"], 2), (b["id"], 4), (c["id"], 3)]
    assert lines(get(client, customer.headers)) == lines(cart)

    assert [row[0] for row in cart_rows(database_url)] == [user_cart]
    assert {row[0] for row in item_rows(database_url)} == {user_cart}
    assert_problem(client.simulate_get("/api/cart", headers=guest_headers), 404, "not_found")
    again = client.simulate_post("/api/cart/claim", headers={**customer.headers, **guest_headers})
    assert_problem(again, 404, "not_found")
    assert lines(get(client, customer.headers)) == lines(cart)


def test_claim_makes_the_users_cart_when_it_has_none(client, customer, make_product, database_url):
    product = make_product()
    guest_headers = guest(client)
    put(client, guest_headers, product["id"], 3)
    response = client.simulate_post(
        "/api/cart/claim", headers={**customer.headers, **guest_headers}
    )
    assert response.status_code == 200, response.text
    assert lines(response.json) == [(product["id"], 3)]
    assert [row[1] for row in cart_rows(database_url)] == [customer.id]


def test_claim_needs_a_bearer_token_and_a_live_cart_token(
    client, customer, make_product, database_url
):
    product = make_product()
    guest_headers = guest(client)
    put(client, guest_headers, product["id"], 1)
    before = (cart_rows(database_url), item_rows(database_url))

    assert_problem(
        client.simulate_post("/api/cart/claim", headers=guest_headers), 401, "not_authenticated"
    )
    missing = client.simulate_post("/api/cart/claim", headers=customer.headers)
    assert assert_problem(missing, 422, "validation_error")["errors"][0]["field"] == "X-Cart-Token"
    unknown = client.simulate_post(
        "/api/cart/claim", headers={**customer.headers, "X-Cart-Token": "nope"}
    )
    assert_problem(unknown, 404, "not_found")
    assert (cart_rows(database_url), item_rows(database_url)) == before

    execute(
        database_url, "UPDATE carts SET expires_at = now() - interval '1 s' WHERE user_id IS NULL"
    )
    expired = client.simulate_post("/api/cart/claim", headers={**customer.headers, **guest_headers})
    assert_problem(expired, 404, "not_found")
    assert item_rows(database_url) == before[1]


def test_claim_refuses_a_merge_over_50_lines_and_changes_nothing(
    client, customer, make_product, database_url
):
    user_cart = get(client, customer.headers)["id"]
    fill(database_url, user_cart, 48)
    guest_headers = guest(client)
    guest_cart = get(client, guest_headers)["id"]
    fill(database_url, guest_cart, 1, first=GONE)  # shared with the user's: merges into one
    fill(database_url, guest_cart, 2, first=GONE + 100)  # 48 + 2 = 50: fits
    fill(database_url, guest_cart, 1, first=GONE + 200)  # the 51st
    before = (cart_rows(database_url), item_rows(database_url))

    full = client.simulate_post("/api/cart/claim", headers={**customer.headers, **guest_headers})
    assert_problem(full, 409, "cart_full")
    assert (cart_rows(database_url), item_rows(database_url)) == before

    execute(database_url, "DELETE FROM cart_items WHERE product_id = %s", (GONE + 200,))
    fits = client.simulate_post("/api/cart/claim", headers={**customer.headers, **guest_headers})
    assert fits.status_code == 200, fits.text
    assert len(fits.json["items"]) == 50


# ------------------------------------------------------------------ lifecycle


def test_deleting_the_account_erases_its_cart(client, customer, make_product, database_url):
    product = make_product()
    put(client, customer.headers, product["id"], 2)
    guest_headers = guest(client)
    put(client, guest_headers, product["id"], 1)
    response = client.simulate_post(
        "/api/auth/delete-account", headers=customer.headers, json={"password": "password123"}
    )
    assert response.status_code == 204, response.text
    assert db_rows(
        database_url, "SELECT count(*) FROM carts WHERE user_id = %s", (customer.id,)
    ) == [(0,)]
    # other carts stay
    assert lines(get(client, guest_headers)) == [(product["id"], 1)]
    assert len(item_rows(database_url)) == 1


def test_the_purge_removes_only_expired_guest_carts(
    client, customer, make_product, app_loop, pool, database_url
):
    product = make_product()
    put(client, customer.headers, product["id"], 1)
    live, expired = guest(client), guest(client)
    put(client, live, product["id"], 2)
    put(client, expired, product["id"], 3)
    expired_id = get(client, expired)["id"]
    execute(
        database_url,
        "UPDATE carts SET expires_at = now() - interval '1 s' WHERE id = %s",
        (expired_id,),
    )

    assert app_loop.run(carts.purge_expired_guest_carts, pool) == 1
    remaining = {row[0] for row in cart_rows(database_url)}
    assert expired_id not in remaining and len(remaining) == 2
    assert sorted(row[2] for row in item_rows(database_url)) == [1, 2]  # its line cascaded
    assert app_loop.run(carts.purge_expired_guest_carts, pool) == 0


# ------------------------------------------------------------------ races


def test_two_racing_adds_to_a_cart_of_49_lines_leave_exactly_50(
    app, client, customer, make_product, database_url
):
    cart_id = get(client, customer.headers)["id"]
    fill(database_url, cart_id, 49)
    first, second = make_product(), make_product()

    def add(index: int) -> int:
        product = (first, second)[index]
        return put(testing.TestClient(app), customer.headers, product["id"], 1).status_code

    for _ in range(3):  # a few rounds, so an unlocked count would likely be caught
        statuses = together(2, add)
        assert sorted(statuses) == [201, 409]
        assert db_rows(database_url, "SELECT count(*) FROM cart_items") == [(50,)]
        execute(
            database_url,
            "DELETE FROM cart_items WHERE product_id IN (%s, %s)",
            (first["id"], second["id"]),
        )


def test_a_users_first_uses_racing_make_one_cart(app, customer, make_product, database_url):
    products = [make_product() for _ in range(4)]

    def first_use(index: int) -> tuple[int, int]:
        client = testing.TestClient(app)
        if index % 2:
            response = client.simulate_get("/api/cart", headers=customer.headers)
        else:
            response = put(client, customer.headers, products[index]["id"], 1)
        return response.status_code, response.json["id"]

    results = together(4, first_use)
    assert sorted(status for status, _ in results) == [200, 200, 201, 201]
    assert len({cart_id for _, cart_id in results}) == 1
    assert db_rows(database_url, "SELECT count(*) FROM carts") == [(1,)]
    assert db_rows(database_url, "SELECT count(*) FROM cart_items") == [(2,)]


def test_the_openapi_document_lists_the_cart_token_header(client):
    spec = client.simulate_get("/api/docs/openapi.json").json
    for method, path in (
        ("get", "/api/cart"),
        ("put", "/api/cart/items/{product_id}"),
        ("post", "/api/cart/claim"),
    ):
        names = [p["name"] for p in spec["paths"][path][method]["parameters"]]
        assert "X-Cart-Token" in names
