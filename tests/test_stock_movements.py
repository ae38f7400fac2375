"""The stock ledger of staff edits and GET /api/products/{id}/stock-movements."""

import pytest

from tests.conftest import assert_problem, db_rows


def ledger_matches_stock(database_url) -> bool:
    mismatched = db_rows(
        database_url,
        """
        SELECT p.id FROM products p
          LEFT JOIN stock_movements m ON m.product_id = p.id
         GROUP BY p.id, p.stock
        HAVING p.stock <> coalesce(sum(m.delta), 0)""",
    )
    return mismatched == []


def test_staff_lists_a_products_movements_oldest_first(
    client, admin, editor, make_category, database_url
):
    category = make_category()
    created = client.simulate_post(
        "/api/products",
        headers=admin.headers,
        json={"name": "Kettle", "price_cents": 2500, "category_id": category["id"], "stock": 5},
    ).json
    url = f"/api/products/{created['id']}"
    client.simulate_patch(url, headers=editor.headers, json={"stock": 2})
    client.simulate_put(url, headers=admin.headers, json={"stock": 9})
    response = client.simulate_get(f"{url}/stock-movements", headers=editor.headers)
    assert response.status_code == 200
    body = response.json
    assert body["total"] == 3 and body["page"] == 1 and body["next_cursor"] is None
    assert [(m["delta"], m["reason"], m["by_user_id"], m["order_id"]) for m in body["items"]] == [
        (5, "adjust", admin.id, None),
        (-3, "adjust", editor.id, None),
        (7, "adjust", admin.id, None),
    ]
    first = body["items"][0]
    assert set(first) == {"id", "product_id", "delta", "reason", "order_id", "by_user_id", "at"}
    assert first["product_id"] == created["id"] and first["at"].endswith("Z")
    assert response.headers["etag"]
    assert ledger_matches_stock(database_url)


def test_movements_page_and_page_past_the_end(client, admin, make_product):
    product = make_product(stock=1)
    url = f"/api/products/{product['id']}"
    for stock in (2, 3, 4, 5):
        client.simulate_patch(url, headers=admin.headers, json={"stock": stock})
    second = client.simulate_get(
        f"{url}/stock-movements", headers=admin.headers, params={"page": 2, "per_page": 2}
    ).json
    assert [m["delta"] for m in second["items"]] == [1, 1] and second["total"] == 5
    past = client.simulate_get(
        f"{url}/stock-movements", headers=admin.headers, params={"page": 9, "per_page": 2}
    ).json
    assert past["items"] == [] and past["total"] == 5


def test_a_product_without_movements_has_an_empty_ledger(client, admin, make_product):
    product = make_product(stock=0)
    body = client.simulate_get(
        f"/api/products/{product['id']}/stock-movements", headers=admin.headers
    ).json
    assert body["items"] == [] and body["total"] == 0


def test_movements_of_an_unknown_product_return_404(client, admin):
    assert_problem(
        client.simulate_get("/api/products/404/stock-movements", headers=admin.headers),
        404,
        "not_found",
    )
    assert_problem(
        client.simulate_get("/api/products/x/stock-movements", headers=admin.headers),
        422,
        "validation_error",
    )


@pytest.mark.parametrize("role", ["CUSTOMER", None])
def test_movements_are_for_staff_only(client, make_user, make_product, role):
    product = make_product()
    headers = make_user(role).headers if role else {}
    status, code = (403, "forbidden") if role else (401, "not_authenticated")
    assert_problem(
        client.simulate_get(f"/api/products/{product['id']}/stock-movements", headers=headers),
        status,
        code,
    )


def test_refused_stock_edit_writes_no_movement(client, admin, make_product, database_url):
    product = make_product(stock=4)
    url = f"/api/products/{product['id']}"
    assert_problem(
        client.simulate_patch(url, headers=admin.headers, json={"stock": -2}),
        422,
        "validation_error",
    )
    assert_problem(
        client.simulate_patch(
            url, headers={**admin.headers, "If-Match": '"old"'}, json={"stock": 1}
        ),
        412,
        "precondition_failed",
    )
    assert db_rows(database_url, "SELECT count(*) FROM stock_movements") == [(1,)]
    assert ledger_matches_stock(database_url)


def test_deleting_a_product_removes_its_ledger_with_it(client, admin, make_product, database_url):
    product = make_product(stock=4)
    client.simulate_delete(f"/api/products/{product['id']}", headers=admin.headers)
    assert db_rows(database_url, "SELECT count(*) FROM stock_movements") == [(0,)]
