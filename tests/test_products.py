"""Products: shape, staff writes, visibility, filters, sorts, cursors, If-Match, bad input."""

import pytest

from tests.conftest import assert_problem, db_rows

PRODUCT_FIELDS = {
    "id",
    "name",
    "description",
    "price_cents",
    "currency",
    "stock",
    "image_url",
    "category",
    "is_active",
    "created_at",
    "updated_at",
}


def count_products(database_url) -> int:
    return db_rows(database_url, "SELECT count(*) FROM products")[0][0]


def ids(response) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json["items"]]


def place_order_row(database_url, user_id: int, product_id: int) -> None:
    """An order line for the product, written directly (the orders API is another module)."""
    db_rows(
        database_url,
        """
        WITH o AS (INSERT INTO orders (user_id, total_cents, currency)
                   VALUES (%s, 100, 'USD') RETURNING id)
        INSERT INTO order_items (order_id, product_id, name, unit_price_cents, quantity)
        SELECT o.id, %s, 'x', 100, 1 FROM o RETURNING order_id""",
        (user_id, product_id),
    )


# ------------------------------------------------------------------ create


def test_staff_creates_a_product_with_defaults(client, editor, make_category, database_url):
    category = make_category("Books")
    response = client.simulate_post(
        "/api/products",
        headers=editor.headers,
        json={"name": " Dune ", "price_cents": 1999, "category_id": category["id"]},
    )
    assert response.status_code == 201, response.text
    body = response.json
    assert set(body) == PRODUCT_FIELDS
    assert body["name"] == "Dune"
    assert body["price_cents"] == 1999 and body["currency"] == "USD"
    assert body["description"] == "" and body["stock"] == 0 and body["image_url"] is None
    assert body["is_active"] is True
    assert body["category"] == {"id": category["id"], "name": "Books"}
    assert body["created_at"].endswith("Z")
    assert response.headers["etag"]
    # no stock, no ledger row
    assert db_rows(database_url, "SELECT count(*) FROM stock_movements") == [(0,)]


def test_product_created_with_stock_writes_an_adjust_movement(
    client, admin, make_category, database_url
):
    category = make_category()
    response = client.simulate_post(
        "/api/products",
        headers=admin.headers,
        json={
            "name": "Lamp",
            "price_cents": 0,
            "category_id": category["id"],
            "stock": 7,
            "image_url": "https://img.example.com/lamp.png?size=2",
            "is_active": False,
            "description": "Bright",
        },
    )
    assert response.status_code == 201
    assert response.json["stock"] == 7 and response.json["is_active"] is False
    assert response.json["image_url"] == "https://img.example.com/lamp.png?size=2"
    assert db_rows(
        database_url, "SELECT product_id, delta, reason, order_id, by_user_id FROM stock_movements"
    ) == [(response.json["id"], 7, "adjust", None, admin.id)]


def test_currency_comes_from_the_settings(
    async_redis, settings, pool, redis_client, make_product, database_url
):
    from dataclasses import replace

    from falcon import testing

    from shopapi.app import create_app

    product = make_product()
    app = create_app(replace(settings, currency="EUR"), pool=pool, redis=async_redis)
    response = testing.TestClient(app).simulate_get(f"/api/products/{product['id']}")
    assert response.json["currency"] == "EUR"


def test_create_with_unknown_category_returns_422_and_writes_nothing(client, admin, database_url):
    response = client.simulate_post(
        "/api/products",
        headers=admin.headers,
        json={"name": "Ghost", "price_cents": 100, "category_id": 12345, "stock": 3},
    )
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"][0]["field"] == "category_id"
    assert count_products(database_url) == 0
    assert db_rows(database_url, "SELECT count(*) FROM stock_movements") == [(0,)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"price_cents": 100}, ""),
        ({"name": "X", "price_cents": -1}, "price_cents"),
        ({"name": "X", "price_cents": 10**12 + 1}, "price_cents"),
        ({"name": "X", "price_cents": 1.5}, "price_cents"),
        ({"name": "X", "price_cents": "100"}, "price_cents"),
        ({"name": "X", "price_cents": 1, "stock": -1}, "stock"),
        ({"name": "X", "price_cents": 1, "stock": 10**9 + 1}, "stock"),
        ({"name": "x" * 201, "price_cents": 1}, "name"),
        ({"name": "", "price_cents": 1}, "name"),
        ({"name": "a\u0000b", "price_cents": 1}, "name"),
        ({"name": "X", "price_cents": 1, "description": "d" * 5001}, "description"),
        ({"name": "X", "price_cents": 1, "image_url": "ftp://example.com/a.png"}, "image_url"),
        ({"name": "X", "price_cents": 1, "image_url": "javascript:alert(1)"}, "image_url"),
        ({"name": "X", "price_cents": 1, "image_url": "https://a.b/" + "x" * 2040}, "image_url"),
        ({"name": "X", "price_cents": 1, "image_url": "https://exa mple.com/"}, "image_url"),
        ({"name": "X", "price_cents": 1, "is_active": "yes"}, "is_active"),
        ({"name": "X", "price_cents": 1, "category_id": 2**63}, "category_id"),
    ],
    ids=[
        "missing-name",
        "negative-price",
        "huge-price",
        "float-price",
        "string-price",
        "negative-stock",
        "huge-stock",
        "long-name",
        "empty-name",
        "nul-name",
        "long-description",
        "ftp-url",
        "js-url",
        "long-url",
        "blank-in-url",
        "bad-bool",
        "huge-category-id",
    ],
)
def test_invalid_product_bodies_return_422_and_write_nothing(
    client, admin, make_category, database_url, body, field
):
    body = {"category_id": make_category()["id"], **body}
    response = client.simulate_post("/api/products", headers=admin.headers, json=body)
    problem = assert_problem(response, 422, "validation_error")
    if field:
        assert problem["errors"][0]["field"] == field
    assert count_products(database_url) == 0


def test_product_body_that_is_not_json_returns_400(client, admin, database_url):
    response = client.simulate_post(
        "/api/products", headers=admin.headers, body="{nope", content_type="application/json"
    )
    assert_problem(response, 400, "invalid_json")
    assert count_products(database_url) == 0


def test_unknown_fields_are_ignored_on_create(client, admin, make_category):
    response = client.simulate_post(
        "/api/products",
        headers=admin.headers,
        json={
            "name": "X",
            "price_cents": 5,
            "category_id": make_category()["id"],
            "id": 999,
            "currency": "EUR",
            "created_at": "1999-01-01",
        },
    )
    assert response.status_code == 201
    assert response.json["id"] != 999 and response.json["currency"] == "USD"


@pytest.mark.parametrize("role", ["CUSTOMER", None])
def test_product_writes_need_admin_or_editor(client, make_user, make_product, role, database_url):
    product = make_product(name="Kept", price_cents=100)
    headers = make_user(role).headers if role else {}
    status, code = (403, "forbidden") if role else (401, "not_authenticated")
    assert_problem(
        client.simulate_post(
            "/api/products",
            headers=headers,
            json={"name": "New", "price_cents": 1, "category_id": product["category_id"]},
        ),
        status,
        code,
    )
    assert_problem(
        client.simulate_patch(
            f"/api/products/{product['id']}", headers=headers, json={"price_cents": 1}
        ),
        status,
        code,
    )
    assert_problem(
        client.simulate_delete(f"/api/products/{product['id']}", headers=headers), status, code
    )
    assert db_rows(database_url, "SELECT name, price_cents FROM products") == [("Kept", 100)]


# ------------------------------------------------------------------ read one


def test_anyone_reads_an_active_product(client, make_product):
    product = make_product(name="Chair", price_cents=4500, stock=3)
    response = client.simulate_get(f"/api/products/{product['id']}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json["name"] == "Chair" and response.json["stock"] == 3
    assert set(response.json) == PRODUCT_FIELDS


def test_inactive_product_is_404_for_the_public_and_visible_to_staff(
    client, make_product, customer, editor
):
    product = make_product(is_active=False)
    url = f"/api/products/{product['id']}"
    assert_problem(client.simulate_get(url), 404, "not_found")
    assert_problem(client.simulate_get(url, headers=customer.headers), 404, "not_found")
    staff = client.simulate_get(url, headers=editor.headers)
    assert staff.status_code == 200 and staff.json["is_active"] is False
    # and again, now that the entry is cached
    assert_problem(client.simulate_get(url), 404, "not_found")


def test_unknown_and_malformed_product_ids(client):
    assert_problem(client.simulate_get("/api/products/424242"), 404, "not_found")
    assert_problem(client.simulate_get("/api/products/abc"), 422, "validation_error")
    assert_problem(client.simulate_get("/api/products/1.5"), 422, "validation_error")
    assert_problem(client.simulate_get(f"/api/products/{2**63}"), 422, "validation_error")


# ------------------------------------------------------------------ update


def test_put_and_patch_are_partial_updates(client, editor, make_product, make_category):
    product = make_product(name="Mug", price_cents=800, description="Blue")
    other = make_category("Kitchen")
    url = f"/api/products/{product['id']}"
    patched = client.simulate_patch(url, headers=editor.headers, json={"price_cents": 900})
    assert patched.status_code == 200
    assert patched.json["price_cents"] == 900 and patched.json["name"] == "Mug"
    assert patched.json["description"] == "Blue"
    put = client.simulate_put(
        url, headers=editor.headers, json={"category_id": other["id"], "image_url": "http://x.io/m"}
    )
    assert put.json["price_cents"] == 900
    assert put.json["category"] == {"id": other["id"], "name": "Kitchen"}
    assert put.json["image_url"] == "http://x.io/m"
    cleared = client.simulate_patch(url, headers=editor.headers, json={"image_url": None})
    assert cleared.json["image_url"] is None and cleared.json["category"]["id"] == other["id"]
    assert put.json["updated_at"] >= patched.json["updated_at"]


def test_update_to_unknown_category_returns_422_and_writes_nothing(
    client, admin, make_product, database_url
):
    product = make_product(price_cents=100)
    response = client.simulate_patch(
        f"/api/products/{product['id']}",
        headers=admin.headers,
        json={"category_id": 9999, "price_cents": 5},
    )
    assert_problem(response, 422, "validation_error")
    assert db_rows(database_url, "SELECT category_id, price_cents FROM products") == [
        (product["category_id"], 100)
    ]


def test_update_of_unknown_product_returns_404(client, admin):
    assert_problem(
        client.simulate_patch("/api/products/77", headers=admin.headers, json={"price_cents": 5}),
        404,
        "not_found",
    )


def test_invalid_update_returns_422_and_writes_nothing(client, admin, make_product, database_url):
    product = make_product(name="Same", price_cents=100)
    for body in (
        {"price_cents": -5},
        {"name": "n" * 201},
        {"stock": -1},
        {"name": "\u0000"},
        {"image_url": "file:///etc/passwd"},
    ):
        response = client.simulate_put(
            f"/api/products/{product['id']}", headers=admin.headers, json=body
        )
        assert_problem(response, 422, "validation_error")
    assert db_rows(database_url, "SELECT name, price_cents, stock FROM products") == [
        ("Same", 100, 10)
    ]


def test_stock_edit_writes_the_delta_to_the_ledger(client, editor, make_product, database_url):
    product = make_product(stock=10)
    url = f"/api/products/{product['id']}"
    assert client.simulate_patch(url, headers=editor.headers, json={"stock": 4}).json["stock"] == 4
    client.simulate_patch(url, headers=editor.headers, json={"stock": 4, "name": "Same stock"})
    client.simulate_put(url, headers=editor.headers, json={"stock": 12})
    rows = db_rows(
        database_url,
        "SELECT delta, reason, by_user_id FROM stock_movements WHERE product_id = %s ORDER BY id",
        (product["id"],),
    )
    assert rows == [(10, "adjust", None), (-6, "adjust", editor.id), (8, "adjust", editor.id)]
    assert db_rows(database_url, "SELECT stock FROM products") == [(12,)]


def test_if_match_with_the_current_etag_updates(client, admin, make_product):
    product = make_product(price_cents=100)
    url = f"/api/products/{product['id']}"
    etag = client.simulate_get(url).headers["etag"]
    response = client.simulate_patch(
        url, headers={**admin.headers, "If-Match": etag}, json={"price_cents": 200}
    )
    assert response.status_code == 200
    assert response.headers["etag"] != etag
    # the ETag of a write answer is the one the next GET gives
    assert client.simulate_get(url).headers["etag"] == response.headers["etag"]


def test_if_match_with_a_stale_etag_returns_412_and_writes_nothing(
    client, admin, editor, make_product, database_url
):
    product = make_product(price_cents=100, stock=5)
    url = f"/api/products/{product['id']}"
    stale = client.simulate_get(url).headers["etag"]
    client.simulate_patch(url, headers=editor.headers, json={"price_cents": 150})
    response = client.simulate_put(
        url, headers={**admin.headers, "If-Match": stale}, json={"price_cents": 999, "stock": 1}
    )
    assert_problem(response, 412, "precondition_failed")
    assert db_rows(database_url, "SELECT price_cents, stock FROM products") == [(150, 5)]
    assert db_rows(database_url, "SELECT count(*) FROM stock_movements") == [(1,)]


def test_empty_if_match_returns_422_and_writes_nothing(client, admin, make_product, database_url):
    product = make_product(price_cents=100)
    response = client.simulate_patch(
        f"/api/products/{product['id']}",
        headers={**admin.headers, "If-Match": ""},
        json={"price_cents": 1},
    )
    assert_problem(response, 422, "validation_error")
    assert db_rows(database_url, "SELECT price_cents FROM products") == [(100,)]


def test_if_match_star_and_lists(client, admin, make_product):
    product = make_product()
    url = f"/api/products/{product['id']}"
    etag = client.simulate_get(url).headers["etag"]
    star = client.simulate_patch(
        url, headers={**admin.headers, "If-Match": "*"}, json={"price_cents": 1}
    )
    assert star.status_code == 200
    listed = client.simulate_patch(
        url,
        headers={**admin.headers, "If-Match": f'"nope", {star.headers["etag"]}'},
        json={"price_cents": 2},
    )
    assert listed.status_code == 200
    weak = client.simulate_patch(
        url,
        headers={**admin.headers, "If-Match": "W/" + listed.headers["etag"]},
        json={"price_cents": 3},
    )
    assert_problem(weak, 412, "precondition_failed")  # If-Match uses strong comparison
    assert etag != listed.headers["etag"]


# ------------------------------------------------------------------ delete


def test_delete_of_a_never_ordered_product_removes_it(client, editor, make_product, database_url):
    product = make_product(stock=3)
    response = client.simulate_delete(f"/api/products/{product['id']}", headers=editor.headers)
    assert response.status_code == 204 and response.text == ""
    assert count_products(database_url) == 0
    assert_problem(
        client.simulate_get(f"/api/products/{product['id']}", headers=editor.headers),
        404,
        "not_found",
    )


def test_delete_of_an_ordered_product_deactivates_it(
    client, admin, customer, make_product, database_url
):
    product = make_product(stock=3)
    place_order_row(database_url, customer.id, product["id"])
    response = client.simulate_delete(f"/api/products/{product['id']}", headers=admin.headers)
    assert response.status_code == 204
    assert db_rows(database_url, "SELECT is_active, stock FROM products") == [(False, 3)]
    assert_problem(client.simulate_get(f"/api/products/{product['id']}"), 404, "not_found")
    assert (
        client.simulate_get(f"/api/products/{product['id']}", headers=admin.headers).json[
            "is_active"
        ]
        is False
    )


def test_delete_of_an_unknown_product_returns_404(client, admin):
    assert_problem(
        client.simulate_delete("/api/products/5", headers=admin.headers), 404, "not_found"
    )


# ------------------------------------------------------------------ lists


def test_public_list_shows_active_products_newest_first(client, make_product):
    first = make_product(name="First")
    make_product(name="Hidden", is_active=False)
    third = make_product(name="Third")
    response = client.simulate_get("/api/products")
    assert ids(response) == [third["id"], first["id"]]
    body = response.json
    assert body["total"] == 2 and body["page"] == 1 and body["per_page"] == 20
    assert body["next_cursor"] is None
    assert set(body["items"][0]) == PRODUCT_FIELDS


def test_include_inactive_is_for_staff_only(client, make_product, editor, customer):
    active = make_product()
    hidden = make_product(is_active=False)
    params = {"include_inactive": "true"}
    assert set(
        ids(client.simulate_get("/api/products", params=params, headers=editor.headers))
    ) == {active["id"], hidden["id"]}
    # anyone else just gets the active ones
    assert ids(client.simulate_get("/api/products", params=params, headers=customer.headers)) == [
        active["id"]
    ]
    assert ids(client.simulate_get("/api/products", params=params)) == [active["id"]]


def test_list_filters_by_category_price_and_stock(client, make_product, make_category):
    books = make_category("Books")
    music = make_category("Music")
    cheap_book = make_product(category_id=books["id"], price_cents=500, stock=0)
    dear_book = make_product(category_id=books["id"], price_cents=5000, stock=2)
    record = make_product(category_id=music["id"], price_cents=2000, stock=1)

    def listed(**params):
        return set(ids(client.simulate_get("/api/products", params=params)))

    assert listed(category_id=books["id"]) == {cheap_book["id"], dear_book["id"]}
    assert listed(min_price_cents=1000) == {dear_book["id"], record["id"]}
    assert listed(max_price_cents=2000) == {cheap_book["id"], record["id"]}
    assert listed(min_price_cents=1000, max_price_cents=2000) == {record["id"]}
    assert listed(in_stock="true") == {dear_book["id"], record["id"]}
    # in_stock=false is no filter at all: 422, not a silent "everything" (test_catalog_bounds)
    assert client.simulate_get("/api/products", params={"in_stock": "false"}).status_code == 422
    assert listed(category_id=books["id"], in_stock="true") == {dear_book["id"]}
    assert listed(category_id=999) == set()
    assert client.simulate_get("/api/products", params={"in_stock": "true"}).json["total"] == 2


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("name", ["apple", "Banana", "cherry", "cherry"]),
        ("-name", ["cherry", "cherry", "Banana", "apple"]),
        ("price_cents", [100, 200, 300, 300]),
        ("-price_cents", [300, 300, 200, 100]),
    ],
)
def test_list_sorts_with_id_as_tie_breaker(client, make_product, sort, expected):
    made = [
        make_product(name=name, price_cents=price)
        for name, price in (("cherry", 300), ("apple", 100), ("Banana", 200), ("cherry", 300))
    ]
    items = client.simulate_get("/api/products", params={"sort": sort}).json["items"]
    field = sort.lstrip("-")
    assert [item[field] for item in items] == expected
    tied = [item["id"] for item in items if item["name"] == "cherry"]
    ascending = [made[0]["id"], made[3]["id"]]
    assert tied == (ascending if not sort.startswith("-") else ascending[::-1])


def test_created_at_sorts_both_ways(client, make_product):
    made = [make_product()["id"] for _ in range(3)]
    assert ids(client.simulate_get("/api/products", params={"sort": "created_at"})) == made
    assert ids(client.simulate_get("/api/products", params={"sort": "-created_at"})) == made[::-1]


@pytest.mark.parametrize(
    "params",
    [
        {"sort": "price;drop table products"},
        {"sort": "stock"},
        {"sort": ""},
        {"sort": "NAME"},
        {"per_page": "10000"},
        {"per_page": "0"},
        {"page": "0"},
        {"page": "x"},
        {"min_price_cents": "-1"},
        {"max_price_cents": str(10**12 + 1)},
        {"category_id": "abc"},
        {"in_stock": "maybe"},
        {"q": "a\u0000b"},
        {"q": "q" * 201},
        {"cursor": "not a cursor!"},
    ],
)
def test_bad_list_parameters_return_422(client, make_product, params, database_url):
    make_product()
    assert_problem(client.simulate_get("/api/products", params=params), 422, "validation_error")
    assert count_products(database_url) == 1


def test_full_text_search_ranks_name_matches_first(client, make_product):
    in_description = make_product(name="Blue mug", description="A lamp-shaped mug")
    in_name = make_product(name="Desk lamp", description="Bright")
    make_product(name="Chair", description="Wooden")
    response = client.simulate_get("/api/products", params={"q": "lamps"})
    assert ids(response) == [in_name["id"], in_description["id"]]
    assert response.json["total"] == 2
    # an explicit sort replaces the ranking
    by_name = client.simulate_get("/api/products", params={"q": "lamp", "sort": "name"})
    assert ids(by_name) == [in_description["id"], in_name["id"]]


def test_search_totals_count_every_match_on_every_page(client, make_product):
    """A ranked search counts its matches as it ranks them: the total of a middle page, of a
    cursor page and of a page past the end is still every match."""
    for n in range(12):
        make_product(name=f"Widget {n}")
    make_product(name="Chair")
    first = client.simulate_get("/api/products", params={"q": "widget", "per_page": 5})
    assert first.json["total"] == 12 and len(first.json["items"]) == 5
    middle = client.simulate_get("/api/products", params={"q": "widget", "per_page": 5, "page": 2})
    assert middle.json["total"] == 12 and len(middle.json["items"]) == 5
    cursor = client.simulate_get(
        "/api/products", params={"q": "widget", "per_page": 5, "cursor": first.json["next_cursor"]}
    )
    assert cursor.json["total"] == 12
    assert ids(cursor) == ids(middle)
    past = client.simulate_get("/api/products", params={"q": "widget", "per_page": 5, "page": 9})
    assert past.json["total"] == 12 and past.json["items"] == []


def test_search_understands_web_syntax(client, make_product):
    red = make_product(name="Red shoes")
    make_product(name="Red hat")
    assert ids(client.simulate_get("/api/products", params={"q": "red -hat"})) == [red["id"]]
    assert ids(client.simulate_get("/api/products", params={"q": '"red shoes"'})) == [red["id"]]


def test_search_falls_back_to_name_prefixes(client, make_product):
    laptop = make_product(name="Laptop stand")
    make_product(name="Desk")
    assert ids(client.simulate_get("/api/products", params={"q": "lap"})) == [laptop["id"]]
    assert ids(client.simulate_get("/api/products", params={"q": "LAPTOP S"})) == [laptop["id"]]
    # LIKE wildcards are literal; stop words alone find nothing but do not fail
    assert ids(client.simulate_get("/api/products", params={"q": "%"})) == []
    assert ids(client.simulate_get("/api/products", params={"q": "the"})) == []
    # a blank q is no filter at all
    assert len(ids(client.simulate_get("/api/products", params={"q": "  "}))) == 2


def test_page_past_the_end_is_empty_with_the_total(client, make_product):
    for _ in range(3):
        make_product()
    body = client.simulate_get("/api/products", params={"page": 5, "per_page": 2}).json
    assert body["items"] == [] and body["total"] == 3 and body["page"] == 5
    assert body["next_cursor"] is None


def test_offset_pages_carry_a_next_cursor_until_the_last(client, make_product):
    for _ in range(5):
        make_product()
    first = client.simulate_get("/api/products", params={"per_page": 2}).json
    assert first["total"] == 5 and first["next_cursor"]
    last = client.simulate_get("/api/products", params={"per_page": 2, "page": 3}).json
    assert len(last["items"]) == 1 and last["next_cursor"] is None and last["total"] == 5


@pytest.mark.parametrize(
    "sort", [None, "name", "-name", "price_cents", "-price_cents", "created_at", "-created_at"]
)
def test_cursor_walk_visits_every_product_once_in_order(client, make_product, sort):
    totals = []
    for i in range(7):
        make_product(name=f"P{i % 3}", price_cents=100 * (i % 2))
    params = {"per_page": 3, **({"sort": sort} if sort else {})}
    full = client.simulate_get("/api/products", params={**params, "per_page": 100})
    expected = ids(full)
    seen = []
    response = client.simulate_get("/api/products", params=params)
    assert response.json["page"] == 1
    while True:
        seen += ids(response)
        totals.append(response.json["total"])
        cursor = response.json["next_cursor"]
        if cursor is None:
            break
        response = client.simulate_get("/api/products", params={**params, "cursor": cursor})
        assert response.json["page"] is None
    assert seen == expected
    assert set(totals) == {7}


def test_cursor_walk_over_ranked_search(client, make_product):
    for i in range(6):
        make_product(name=f"lamp {'lamp ' * (i % 3)}{i}", description="lamp" if i % 2 else "")
    params = {"q": "lamp", "per_page": 2}
    expected = ids(client.simulate_get("/api/products", params={**params, "per_page": 50}))
    seen, response = [], client.simulate_get("/api/products", params=params)
    while True:
        seen += ids(response)
        if response.json["next_cursor"] is None:
            break
        response = client.simulate_get(
            "/api/products", params={**params, "cursor": response.json["next_cursor"]}
        )
    assert seen == expected and len(seen) == 6


def test_cursor_is_stable_under_concurrent_inserts(client, make_product, admin):
    products = [make_product() for _ in range(4)]
    made = [p["id"] for p in products]
    first = client.simulate_get("/api/products", params={"per_page": 2})
    assert ids(first) == made[:1:-1]
    # newer: lands on page 1, not in the middle of the walk
    client.simulate_post(
        "/api/products",
        headers=admin.headers,
        json={"name": "Newer", "price_cents": 1, "category_id": products[0]["category_id"]},
    )
    second = client.simulate_get(
        "/api/products", params={"per_page": 2, "cursor": first.json["next_cursor"]}
    )
    assert ids(second) == made[1::-1]
    assert second.json["total"] == 5


def test_cursor_misuse_returns_422(client, make_product):
    for _ in range(3):
        make_product(price_cents=100)
    cursor = client.simulate_get("/api/products", params={"per_page": 1}).json["next_cursor"]
    get = client.simulate_get
    assert_problem(
        get("/api/products", params={"per_page": 1, "cursor": cursor, "page": 1}),
        422,
        "validation_error",
    )
    assert_problem(
        get("/api/products", params={"cursor": cursor, "sort": "name"}), 422, "validation_error"
    )
    assert_problem(
        get("/api/products", params={"cursor": cursor, "min_price_cents": 1}),
        422,
        "validation_error",
    )
    forged = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    assert_problem(get("/api/products", params={"cursor": forged}), 422, "validation_error")
    assert_problem(get("/api/products", params={"cursor": "AAAA"}), 422, "validation_error")
    # the same filters with another page size are fine
    assert get("/api/products", params={"cursor": cursor, "per_page": 5}).status_code == 200


def test_list_runs_a_constant_number_of_statements(
    async_redis, client, make_product, query_counter, settings, pool, redis_client
):
    from dataclasses import replace

    from falcon import testing

    from shopapi.app import create_app

    for _ in range(30):
        make_product()
    uncached = testing.TestClient(
        create_app(replace(settings, cache_enabled=False), pool=pool, redis=async_redis)
    )
    counts = []
    for params in (
        {"per_page": 1},
        {"per_page": 25},
        {"per_page": 100},
        {"per_page": 5, "page": 3},
        {"per_page": 10, "q": "product"},
    ):
        with query_counter() as counted:
            assert uncached.simulate_get("/api/products", params=params).status_code == 200
        counts.append(counted.n)
    # page + count (+ the pool's connection check), whatever per_page; the last page needs
    # no count (its total is offset + rows), nor does a search (it counts while it ranks)
    assert counts[0] == counts[1] == counts[3] <= 3
    assert counts[2] == counts[4] == counts[0] - 1
