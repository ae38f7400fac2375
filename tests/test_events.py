"""Events are written in the same statement as the change that causes them (the outbox), and
the relay turns each committed event into its jobs exactly once."""

from __future__ import annotations

import json

import pytest

from shopapi.services.events import relay_events
from tests.conftest import assert_problem, db_rows
from tests.helpers import place

pytestmark = pytest.mark.usefixtures("ledger_holds")


def events(database_url, type_=None):
    rows = db_rows(
        database_url,
        "SELECT id::text, type, data::text, created_at, relayed_at FROM events "
        "WHERE %s::text IS NULL OR type = %s ORDER BY created_at, id",
        (type_, type_),
    )
    return [
        {"id": r[0], "type": r[1], "data": json.loads(r[2]), "created_at": r[3], "relayed": r[4]}
        for r in rows
    ]


def jobs(database_url):
    return db_rows(
        database_url,
        "SELECT queue_name, task_name, args::text FROM procrastinate_jobs ORDER BY id",
    )


def set_status(client, staff, order_id, status):
    return client.simulate_put(
        f"/api/orders/{order_id}/status", json={"status": status}, headers=staff.headers
    )


def test_an_order_writes_exactly_one_order_created_event_holding_the_answer(
    client, customer, make_product, database_url
):
    product = make_product(stock=5)
    response = place(client, customer, [(product["id"], 2)])
    assert response.status_code == 201

    [event] = events(database_url)
    assert event["type"] == "order.created"
    assert event["data"] == {"order": response.json}
    assert event["relayed"] is None


def test_an_idempotent_replay_writes_no_second_event(client, customer, make_product, database_url):
    product = make_product(stock=5)
    headers = {"Idempotency-Key": "k-1"}
    first = place(client, customer, [(product["id"], 1)], headers=headers)
    again = place(client, customer, [(product["id"], 1)], headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert len(events(database_url, "order.created")) == 1


def test_a_refused_order_writes_no_event(client, customer, make_product, database_url):
    product = make_product(stock=1)
    assert_problem(place(client, customer, [(product["id"], 2)]), 409, "insufficient_stock")
    assert_problem(place(client, customer, [(999_999, 1)]), 422, "validation_error")
    assert_problem(
        place(client, customer, [], body={"items": [{"product_id": "x", "quantity": 1}]}),
        422,
        "validation_error",
    )
    assert events(database_url) == []


def test_taking_the_last_units_writes_product_out_of_stock(
    client, customer, make_product, database_url
):
    scarce, plenty = make_product(stock=2), make_product(stock=10)
    place(client, customer, [(scarce["id"], 2), (plenty["id"], 1)])

    [event] = events(database_url, "product.out_of_stock")
    assert event["data"] == {"product": {"id": scarce["id"], "name": scarce["name"], "stock": 0}}


def test_a_staff_edit_to_zero_stock_writes_product_out_of_stock_once(
    client, editor, make_product, database_url
):
    product = make_product(stock=3)
    url = f"/api/products/{product['id']}"
    assert client.simulate_patch(url, json={"stock": 0}, headers=editor.headers).status_code == 200
    assert client.simulate_patch(url, json={"stock": 0}, headers=editor.headers).status_code == 200
    assert (
        client.simulate_patch(url, json={"price_cents": 5}, headers=editor.headers).json["stock"]
        == 0
    )

    [event] = events(database_url, "product.out_of_stock")
    assert event["data"]["product"] == {"id": product["id"], "name": product["name"], "stock": 0}


def test_status_changes_write_their_event_with_from_and_to(
    client, admin, customer, make_product, database_url
):
    order = place(client, customer, [(make_product()["id"], 1)]).json
    paid = set_status(client, admin, order["id"], "paid").json
    shipped = set_status(client, admin, order["id"], "shipped").json

    changes = events(database_url, "order.status_changed")
    assert [(e["data"]["from"], e["data"]["to"]) for e in changes] == [
        ("pending", "paid"),
        ("paid", "shipped"),
    ]
    assert [e["data"]["order"] for e in changes] == [paid, shipped]


def test_a_refused_move_writes_no_event(client, admin, customer, make_product, database_url):
    order = place(client, customer, [(make_product()["id"], 1)]).json
    assert_problem(set_status(client, admin, order["id"], "shipped"), 409, "invalid_transition")
    own_cancel = client.simulate_post(f"/api/orders/{order['id']}/cancel", headers=customer.headers)
    assert own_cancel.status_code == 200
    assert_problem(
        client.simulate_post(f"/api/orders/{order['id']}/cancel", headers=customer.headers),
        409,
        "invalid_transition",
    )
    changes = events(database_url, "order.status_changed")
    assert [(e["data"]["from"], e["data"]["to"]) for e in changes] == [("pending", "cancelled")]
    assert changes[0]["data"]["order"] == own_cancel.json


def test_the_relay_turns_each_event_into_its_jobs_once(
    client, customer, make_product, database_url, pool, app_loop
):
    db_rows(
        database_url,
        "INSERT INTO webhooks (url, events, secret, is_active) VALUES "
        "('http://127.0.0.1:9/a', '{order.created,product.out_of_stock}', 's', true), "
        "('http://127.0.0.1:9/b', '{order.status_changed}', 's', true), "
        "('http://127.0.0.1:9/c', '{order.created}', 's', false) RETURNING id",
    )
    product = make_product(stock=1)
    place(client, customer, [(product["id"], 1)])  # order.created + product.out_of_stock

    assert app_loop.run(relay_events, pool) == (2, 3)
    assert app_loop.run(relay_events, pool) == (0, 0)

    created, sold_out = (
        events(database_url, "order.created"),
        events(database_url, "product.out_of_stock"),
    )
    assert created[0]["relayed"] is not None and sold_out[0]["relayed"] is not None
    found = sorted(((q, t, json.loads(a)) for q, t, a in jobs(database_url)), key=str)
    assert found == sorted(
        [
            ("emails", "send_event_email", {"event_id": created[0]["id"]}),
            ("webhooks", "deliver_webhook", {"event_id": created[0]["id"], "webhook_id": 1}),
            ("webhooks", "deliver_webhook", {"event_id": sold_out[0]["id"], "webhook_id": 1}),
        ],
        key=str,
    )


def test_the_relay_takes_events_in_batches(client, customer, make_product, pool, app_loop):
    product = make_product(stock=10)
    for _ in range(3):
        place(client, customer, [(product["id"], 1)])
    assert app_loop.run(relay_events, pool, 2) == (2, 2)
    assert app_loop.run(relay_events, pool, 2) == (1, 1)
    assert app_loop.run(relay_events, pool, 2) == (0, 0)
