"""The order status machine: staff moves, invalid transitions, cancelling gives stock back once."""

from __future__ import annotations

import pytest
from falcon import testing

from shopapi.services.orders import TRANSITIONS
from tests.conftest import assert_problem, db_rows, stock_of, together
from tests.helpers import place

pytestmark = pytest.mark.usefixtures("ledger_holds")

STATES = ("pending", "paid", "shipped", "delivered", "cancelled")
# the allowed moves from the contract, spelled out (independent of the code's table)
ALLOWED = {
    ("pending", "paid"),
    ("paid", "shipped"),
    ("shipped", "delivered"),
    ("pending", "cancelled"),
    ("paid", "cancelled"),
}
# the shortest way to reach each state from pending
PATH = {
    "pending": [],
    "paid": ["paid"],
    "shipped": ["paid", "shipped"],
    "delivered": ["paid", "shipped", "delivered"],
    "cancelled": ["cancelled"],
}


def set_status(client, staff, order_id, status):
    return client.simulate_put(
        f"/api/orders/{order_id}/status", json={"status": status}, headers=staff.headers
    )


def order_in(client, staff, buyer, product, state, quantity=1) -> dict:
    order = place(client, buyer, [(product["id"], quantity)]).json
    for status in PATH[state]:
        response = set_status(client, staff, order["id"], status)
        assert response.status_code == 200, response.text
        order = response.json
    return order


def test_the_code_allows_exactly_the_contracts_moves():
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED


def test_staff_move_an_order_to_delivered_and_every_step_is_recorded(
    client, admin, editor, customer, make_product
):
    order = place(client, customer, [(make_product()["id"], 1)]).json

    paid = set_status(client, admin, order["id"], "paid").json
    shipped = set_status(client, editor, order["id"], "shipped").json
    delivered = set_status(client, admin, order["id"], "delivered")

    assert delivered.status_code == 200
    final = delivered.json
    assert final["status"] == "delivered"
    assert [(h["status"], h["by_user_id"]) for h in final["status_history"]] == [
        ("pending", customer.id),
        ("paid", admin.id),
        ("shipped", editor.id),
        ("delivered", admin.id),
    ]
    assert final["updated_at"] >= shipped["updated_at"] >= paid["updated_at"]
    assert final["status_history"][-1]["at"] == final["updated_at"]
    assert client.simulate_get(f"/api/orders/{order['id']}", headers=customer.headers).json == final


@pytest.mark.parametrize(
    "source,target", [(a, b) for a in STATES for b in STATES if (a, b) not in ALLOWED]
)
def test_moves_outside_the_machine_are_409_and_change_nothing(
    client, admin, customer, make_product, database_url, source, target
):
    product = make_product(stock=5)
    order = order_in(client, admin, customer, product, source)
    stock = stock_of(database_url, product["id"])

    response = set_status(client, admin, order["id"], target)

    problem = assert_problem(response, 409, "invalid_transition")
    assert source in problem["detail"] and target in problem["detail"]
    after = client.simulate_get(f"/api/orders/{order['id']}", headers=admin.headers).json
    assert after == order
    assert stock_of(database_url, product["id"]) == stock


@pytest.mark.parametrize("status", ["PAID", "Paid", "", "refunded", None, 1])
def test_unknown_status_is_422(client, admin, customer, make_product, status):
    order = place(client, customer, [(make_product()["id"], 1)]).json
    response = set_status(client, admin, order["id"], status)
    assert_problem(response, 422, "validation_error")
    assert (
        client.simulate_get(f"/api/orders/{order['id']}", headers=admin.headers).json["status"]
        == "pending"
    )


def test_customers_cannot_set_a_status(client, customer, make_product):
    order = place(client, customer, [(make_product()["id"], 1)]).json
    assert_problem(set_status(client, customer, order["id"], "paid"), 403, "forbidden")
    assert_problem(set_status(client, customer, order["id"], "cancelled"), 403, "forbidden")


def test_status_of_an_unknown_order_is_404(client, admin):
    assert_problem(set_status(client, admin, 987654, "paid"), 404, "not_found")


@pytest.mark.parametrize("source", ["pending", "paid"])
def test_staff_cancel_gives_the_stock_back_with_cancel_movements(
    client, editor, customer, make_product, database_url, source
):
    first = make_product(stock=10)
    second = make_product(stock=10)
    order = place(client, customer, [(first["id"], 3), (second["id"], 4)]).json
    for status in PATH[source]:
        set_status(client, editor, order["id"], status)

    response = set_status(client, editor, order["id"], "cancelled")

    assert response.status_code == 200
    assert response.json["status"] == "cancelled"
    assert response.json["status_history"][-1]["by_user_id"] == editor.id
    assert stock_of(database_url, first["id"]) == 10
    assert stock_of(database_url, second["id"]) == 10
    assert db_rows(
        database_url,
        """
        SELECT product_id, delta, order_id, by_user_id FROM stock_movements
         WHERE reason = 'cancel' ORDER BY product_id""",
    ) == [(first["id"], 3, order["id"], editor.id), (second["id"], 4, order["id"], editor.id)]


def test_owner_cancels_their_pending_order(client, customer, make_product, database_url):
    product = make_product(stock=5)
    order = place(client, customer, [(product["id"], 2)]).json

    response = client.simulate_post(f"/api/orders/{order['id']}/cancel", headers=customer.headers)

    assert response.status_code == 200
    assert response.json["id"] == order["id"]
    assert response.json["status"] == "cancelled"
    assert [h["status"] for h in response.json["status_history"]] == ["pending", "cancelled"]
    assert response.json["status_history"][-1]["by_user_id"] == customer.id
    assert stock_of(database_url, product["id"]) == 5
    # twice: the second is a refused move, and nothing more comes back
    again = client.simulate_post(f"/api/orders/{order['id']}/cancel", headers=customer.headers)
    assert_problem(again, 409, "invalid_transition")
    assert stock_of(database_url, product["id"]) == 5


def test_owner_cannot_cancel_once_paid(client, admin, customer, make_product, database_url):
    product = make_product(stock=5)
    order = order_in(client, admin, customer, product, "paid")

    response = client.simulate_post(f"/api/orders/{order['id']}/cancel", headers=customer.headers)

    assert_problem(response, 409, "invalid_transition")
    assert stock_of(database_url, product["id"]) == 4


def test_cancel_endpoint_is_404_for_anyone_but_the_owner(
    client, admin, editor, customer, make_user, make_product, database_url
):
    product = make_product(stock=5)
    order = place(client, customer, [(product["id"], 1)]).json
    for user in (make_user(), admin, editor):
        response = client.simulate_post(f"/api/orders/{order['id']}/cancel", headers=user.headers)
        assert_problem(response, 404, "not_found")
    assert_problem(
        client.simulate_post("/api/orders/987654/cancel", headers=customer.headers),
        404,
        "not_found",
    )
    assert stock_of(database_url, product["id"]) == 4
    assert (
        client.simulate_get(f"/api/orders/{order['id']}", headers=customer.headers).json["status"]
        == "pending"
    )


def test_racing_cancels_give_the_stock_back_exactly_once(
    app, admin, customer, make_product, database_url
):
    first = make_product(stock=20)
    second = make_product(stock=20)
    client = testing.TestClient(app)
    order = place(client, customer, [(first["id"], 5), (second["id"], 7)]).json
    racers = 12

    def cancel(index: int) -> int:
        own = testing.TestClient(app)
        if index % 2:
            response = own.simulate_post(
                f"/api/orders/{order['id']}/cancel", headers=customer.headers
            )
        else:
            response = own.simulate_put(
                f"/api/orders/{order['id']}/status",
                json={"status": "cancelled"},
                headers=admin.headers,
            )
        return response.status_code

    statuses = together(racers, cancel)

    assert sorted(statuses) == [200] + [409] * (racers - 1)
    assert stock_of(database_url, first["id"]) == 20
    assert stock_of(database_url, second["id"]) == 20
    assert (
        db_rows(database_url, "SELECT count(*) FROM stock_movements WHERE reason = 'cancel'")[0][0]
        == 2
    )
    assert (
        db_rows(
            database_url, "SELECT count(*) FROM order_status_history WHERE status = 'cancelled'"
        )[0][0]
        == 1
    )
