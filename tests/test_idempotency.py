"""Idempotency-Key on POST /api/orders: replay, reuse with another body, races, retention."""

from __future__ import annotations

import json

import pytest
from falcon import testing

from shopapi.services.orders import purge_idempotency_keys
from tests.conftest import assert_problem, db_rows, stock_of, together
from tests.helpers import place, written

pytestmark = pytest.mark.usefixtures("ledger_holds")


def post_raw(client, user, raw: str, key: str | None):
    headers = {**user.headers, "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.simulate_post("/api/orders", body=raw, headers=headers)


def test_same_key_and_body_replays_the_first_answer_and_deducts_once(
    client, customer, make_product, database_url
):
    product = make_product(stock=10)
    key = {"Idempotency-Key": "order-1"}

    first = place(client, customer, [(product["id"], 3)], headers=key)
    again = place(client, customer, [(product["id"], 3)], headers=key)

    assert first.status_code == 201 and again.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"]
    assert stock_of(database_url, product["id"]) == 7
    assert db_rows(database_url, "SELECT count(*) FROM orders")[0][0] == 1
    assert db_rows(database_url, "SELECT user_id, key, order_id FROM idempotency_keys") == [
        (customer.id, "order-1", first.json["id"])
    ]


def test_replay_is_the_first_answer_even_after_the_order_changed(
    client, customer, admin, make_product, database_url
):
    product = make_product(stock=10, price_cents=100)
    key = {"Idempotency-Key": "k"}
    first = place(client, customer, [(product["id"], 1)], headers=key)
    client.simulate_put(
        f"/api/orders/{first.json['id']}/status", json={"status": "paid"}, headers=admin.headers
    )
    db_rows(
        database_url, "UPDATE products SET stock = 0 WHERE id = %s RETURNING id", (product["id"],)
    )
    db_rows(
        database_url,
        "INSERT INTO stock_movements (product_id, delta, reason) "
        "VALUES (%s, -9, 'adjust') RETURNING id",
        (product["id"],),
    )

    again = place(client, customer, [(product["id"], 1)], headers=key)

    assert again.status_code == 201  # not insufficient_stock: nothing is placed again
    assert again.content == first.content
    assert again.json["status"] == "pending"


def test_key_order_and_white_space_of_the_body_do_not_matter(client, customer, make_product):
    product = make_product(stock=10)
    first = post_raw(
        client, customer, json.dumps({"items": [{"product_id": product["id"], "quantity": 2}]}), "k"
    )
    spaced = '\n{ "items" : [ { "quantity":2 ,"product_id" : PID } ] }'
    again = post_raw(client, customer, spaced.replace("PID", str(product["id"])), "k")

    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json["id"] == first.json["id"]


def test_same_key_with_another_body_is_409_and_writes_nothing(
    client, customer, make_product, database_url
):
    pen = make_product(stock=10)
    ink = make_product(stock=10)
    first = place(
        client, customer, [(pen["id"], 1), (ink["id"], 1)], headers={"Idempotency-Key": "k"}
    )
    assert first.status_code == 201
    before = written(database_url)

    others = [
        {
            "items": [
                {"product_id": pen["id"], "quantity": 2},
                {"product_id": ink["id"], "quantity": 1},
            ]
        },
        # the order of the lines counts
        {
            "items": [
                {"product_id": ink["id"], "quantity": 1},
                {"product_id": pen["id"], "quantity": 1},
            ]
        },
        # so do fields the server ignores
        {
            "items": [
                {"product_id": pen["id"], "quantity": 1},
                {"product_id": ink["id"], "quantity": 1},
            ],
            "note": "x",
        },
    ]
    for body in others:
        response = place(client, customer, None, body=body, headers={"Idempotency-Key": "k"})
        assert_problem(response, 409, "idempotency_key_reused")
    assert written(database_url) == before


def test_keys_belong_to_one_user(client, customer, make_user, make_product, database_url):
    product = make_product(stock=10)
    other = make_user()

    mine = place(client, customer, [(product["id"], 1)], headers={"Idempotency-Key": "shared"})
    theirs = place(client, other, [(product["id"], 1)], headers={"Idempotency-Key": "shared"})

    assert mine.status_code == theirs.status_code == 201
    assert mine.json["id"] != theirs.json["id"]
    assert "idempotent-replayed" not in theirs.headers
    assert stock_of(database_url, product["id"]) == 8


def test_a_refused_request_stores_no_key_and_can_be_retried(
    client, customer, make_product, database_url
):
    product = make_product(stock=1)
    key = {"Idempotency-Key": "retry-me"}

    refused = place(client, customer, [(product["id"], 2)], headers=key)
    assert_problem(refused, 409, "insufficient_stock")
    assert db_rows(database_url, "SELECT count(*) FROM idempotency_keys")[0][0] == 0
    invalid = place(client, customer, [(product["id"], 0)], headers=key)
    assert_problem(invalid, 422, "validation_error")

    db_rows(
        database_url, "UPDATE products SET stock = 2 WHERE id = %s RETURNING id", (product["id"],)
    )
    db_rows(
        database_url,
        "INSERT INTO stock_movements (product_id, delta, reason) "
        "VALUES (%s, 1, 'adjust') RETURNING id",
        (product["id"],),
    )
    retried = place(client, customer, [(product["id"], 2)], headers=key)

    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert stock_of(database_url, product["id"]) == 0


def test_a_key_of_255_characters_is_accepted(client, customer, make_product):
    product = make_product()
    key = {"Idempotency-Key": "é" * 255}
    assert place(client, customer, [(product["id"], 1)], headers=key).status_code == 201
    again = place(client, customer, [(product["id"], 1)], headers=key)
    assert again.headers["idempotent-replayed"] == "true"


def test_without_a_key_every_request_is_a_new_order(client, customer, make_product, database_url):
    product = make_product(stock=10)
    first = place(client, customer, [(product["id"], 1)])
    second = place(client, customer, [(product["id"], 1)])
    assert first.json["id"] != second.json["id"]
    assert stock_of(database_url, product["id"]) == 8


def _race(app, user, body: dict, key: str, racers: int) -> list:
    """`racers` identical requests with one Idempotency-Key, released at once."""
    return together(
        racers,
        lambda _: testing.TestClient(app).simulate_post(
            "/api/orders", json=body, headers={**user.headers, "Idempotency-Key": key}
        ),
    )


def test_racing_requests_with_the_same_key_create_exactly_one_order(
    app, customer, make_product, database_url
):
    first = make_product(stock=100)
    second = make_product(stock=100)
    body = {
        "items": [
            {"product_id": first["id"], "quantity": 2},
            {"product_id": second["id"], "quantity": 3},
        ]
    }

    responses = _race(app, customer, body, "race", racers=10)

    assert [r.status_code for r in responses] == [201] * 10
    assert len({r.json["id"] for r in responses}) == 1
    assert len({r.content for r in responses}) == 1
    assert sum("idempotent-replayed" in r.headers for r in responses) == 9
    assert db_rows(database_url, "SELECT count(*) FROM orders")[0][0] == 1
    assert stock_of(database_url, first["id"]) == 98
    assert stock_of(database_url, second["id"]) == 97


def test_racing_retries_replay_rather_than_report_the_stock_the_first_one_took(
    app, customer, make_product, database_url
):
    product = make_product(stock=1)
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}

    responses = _race(app, customer, body, "last-unit", racers=6)

    assert [r.status_code for r in responses] == [201] * 6
    assert len({r.json["id"] for r in responses}) == 1
    assert stock_of(database_url, product["id"]) == 0


def test_purge_removes_keys_older_than_the_window_only(
    app_loop, client, customer, make_product, pool, database_url, settings
):
    product = make_product(stock=10)
    old = place(client, customer, [(product["id"], 1)], headers={"Idempotency-Key": "old"})
    place(client, customer, [(product["id"], 1)], headers={"Idempotency-Key": "fresh"})
    db_rows(
        database_url,
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' "
        "WHERE key = 'old' RETURNING key",
    )

    assert settings.idempotency_key_ttl >= 24 * 3600
    assert app_loop.run(purge_idempotency_keys, pool, settings.idempotency_key_ttl) == 1

    assert db_rows(database_url, "SELECT key FROM idempotency_keys") == [("fresh",)]
    again = place(client, customer, [(product["id"], 1)], headers={"Idempotency-Key": "old"})
    assert again.status_code == 201
    assert again.json["id"] != old.json["id"]  # the window passed: a new order
    fresh = place(client, customer, [(product["id"], 1)], headers={"Idempotency-Key": "fresh"})
    assert fresh.headers["idempotent-replayed"] == "true"


def test_a_body_with_an_ignored_field_json_cannot_hold_as_a_number_still_replays(
    client, customer, make_product, database_url
):
    product = make_product(stock=5)
    raw = '{"items": [{"product_id": PID, "quantity": 1}], "note": 1e400}'.replace(
        "PID", str(product["id"])
    )

    first = post_raw(client, customer, raw, "odd")
    again = post_raw(client, customer, raw, "odd")

    assert first.status_code == 201, first.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json["id"] == first.json["id"]
    assert stock_of(database_url, product["id"]) == 4
