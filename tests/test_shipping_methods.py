"""Shipping methods: public reads of the active ones, staff writes, unique names, bad input,
and a method some order used is deactivated instead of deleted."""

import psycopg
import pytest
from falcon import testing

from tests.conftest import assert_problem, backends, db_rows, in_background, wait_for

URL = "/api/shipping-methods"
FIELDS = {
    "id",
    "name",
    "price_cents",
    "free_over_cents",
    "countries",
    "is_active",
    "created_at",
    "updated_at",
}


def all_rows(database_url) -> list[tuple]:
    """Every stored method, to prove what a request wrote (or did not)."""
    return db_rows(
        database_url,
        "SELECT id, name, price_cents, free_over_cents, countries, is_active, updated_at "
        "FROM shipping_methods ORDER BY id",
    )


@pytest.fixture()
def make_method(client, admin):
    """`make_method(name="Standard", price_cents=499, ...)`: created through the API."""
    counter = iter(range(1, 1_000_000))

    def make(**fields) -> dict:
        body = {"name": f"Method {next(counter)}", "price_cents": 500, **fields}
        response = client.simulate_post(URL, headers=admin.headers, json=body)
        assert response.status_code == 201, response.text
        return response.json

    return make


def insert_order_using(database_url, user_id: int, method: dict) -> int:
    """An order row that used `method`, written straight to the database."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "INSERT INTO orders (user_id, shipping_cents, total_cents, currency, "
            "shipping_method_id, shipping_method_name) VALUES (%s, 499, 1499, 'USD', %s, %s) "
            "RETURNING id",
            (user_id, method["id"], method["name"]),
        ).fetchone()[0]


# ------------------------------------------------------------------ create


def test_staff_creates_a_method_with_location_and_normalized_countries(
    client, editor, database_url
):
    response = client.simulate_post(
        URL,
        headers=editor.headers,
        json={
            "name": "  Express  ",
            "price_cents": 1499,
            "free_over_cents": 10000,
            "countries": ["FR", "DE", "FR", "AT"],
        },
    )
    assert response.status_code == 201, response.text
    body = response.json
    assert set(body) == FIELDS
    assert body["name"] == "Express"
    assert body["price_cents"] == 1499
    assert body["free_over_cents"] == 10000
    assert body["countries"] == ["AT", "DE", "FR"]
    assert body["is_active"] is True
    assert body["created_at"].endswith("Z") and len(body["created_at"]) == 27
    assert response.headers["location"] == f"{URL}/{body['id']}"
    assert response.headers["etag"].startswith('"')
    assert db_rows(database_url, "SELECT name, countries FROM shipping_methods") == [
        ("Express", ["AT", "DE", "FR"])
    ]
    # the Location answers the same object
    assert client.simulate_get(response.headers["location"]).json == body


def test_create_defaults_never_free_everywhere_active(client, admin):
    body = client.simulate_post(
        URL, headers=admin.headers, json={"name": "Pickup", "price_cents": 0}
    ).json
    assert body["free_over_cents"] is None
    assert body["countries"] == []
    assert body["is_active"] is True
    assert body["price_cents"] == 0


def test_create_takes_free_over_null_and_inactive(client, admin, database_url):
    body = client.simulate_post(
        URL,
        headers=admin.headers,
        json={
            "name": "Freight",
            "price_cents": 10**12,
            "free_over_cents": None,
            "is_active": False,
        },
    ).json
    assert body["price_cents"] == 10**12 and body["free_over_cents"] is None
    assert body["is_active"] is False
    assert db_rows(database_url, "SELECT free_over_cents, is_active FROM shipping_methods") == [
        (None, False)
    ]


def test_create_ignores_unknown_fields_and_the_id(client, admin):
    body = client.simulate_post(
        URL,
        headers=admin.headers,
        json={"name": "Standard", "price_cents": 499, "id": 999, "colour": "red"},
    ).json
    assert body["id"] == 1
    assert "colour" not in body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Standard", "price_cents": -1}, "price_cents"),
        ({"name": "Standard", "price_cents": 10**12 + 1}, "price_cents"),
        ({"name": "Standard", "price_cents": "499"}, "price_cents"),
        ({"name": "Standard", "price_cents": 4.99}, "price_cents"),
        ({"name": "Standard", "price_cents": 499, "free_over_cents": -1}, "free_over_cents"),
        (
            {"name": "Standard", "price_cents": 499, "free_over_cents": 10**12 + 1},
            "free_over_cents",
        ),
        ({"name": "Standard", "price_cents": 499, "countries": ["de"]}, "countries[0]"),
        ({"name": "Standard", "price_cents": 499, "countries": ["DE", "XX"]}, "countries[1]"),
        ({"name": "Standard", "price_cents": 499, "countries": ["DEU"]}, "countries[0]"),
        ({"name": "Standard", "price_cents": 499, "countries": "DE"}, "countries"),
        ({"name": "Standard", "price_cents": 499, "is_active": "yes"}, "is_active"),
        ({"name": "", "price_cents": 499}, "name"),
        ({"name": "   ", "price_cents": 499}, "name"),
        ({"name": "\t\n", "price_cents": 499}, "name"),
        ({"name": "x" * 101, "price_cents": 499}, "name"),
        ({"name": "Bad\x00name", "price_cents": 499}, "name"),
        ({"price_cents": 499}, "name"),
        ({"name": "Standard"}, "price_cents"),
    ],
)
def test_invalid_create_bodies_are_422_naming_the_field(client, admin, body, field, database_url):
    problem = assert_problem(
        client.simulate_post(URL, headers=admin.headers, json=body), 422, "validation_error"
    )
    assert [error["field"] for error in problem["errors"]] == [field]
    assert all_rows(database_url) == []


def test_a_name_of_100_characters_is_accepted(client, admin):
    response = client.simulate_post(
        URL, headers=admin.headers, json={"name": "x" * 100, "price_cents": 1}
    )
    assert response.status_code == 201, response.text


def test_non_json_body_is_400(client, admin, database_url):
    response = client.simulate_post(
        URL, headers={**admin.headers, "Content-Type": "application/json"}, body="not json"
    )
    assert_problem(response, 400, "invalid_json")
    assert all_rows(database_url) == []


def test_duplicate_name_in_another_case_is_409_name_taken(client, admin, make_method, database_url):
    make_method(name="Standard", price_cents=499)
    before = all_rows(database_url)
    for name in ("Standard", "STANDARD", " standard "):
        response = client.simulate_post(
            URL, headers=admin.headers, json={"name": name, "price_cents": 1}
        )
        assert_problem(response, 409, "name_taken")
    assert all_rows(database_url) == before


# ------------------------------------------------------------------ roles


@pytest.mark.parametrize("role", [None, "CUSTOMER"])
def test_writes_need_admin_or_editor_and_write_nothing(
    client, make_user, make_method, role, database_url
):
    method = make_method(name="Standard")
    before = all_rows(database_url)
    headers = make_user(role).headers if role else {}
    status, code = (403, "forbidden") if role else (401, "not_authenticated")
    item = f"{URL}/{method['id']}"
    assert_problem(
        client.simulate_post(URL, headers=headers, json={"name": "New", "price_cents": 1}),
        status,
        code,
    )
    assert_problem(
        client.simulate_put(item, headers=headers, json={"price_cents": 1}), status, code
    )
    assert_problem(
        client.simulate_patch(item, headers=headers, json={"is_active": False}), status, code
    )
    assert_problem(client.simulate_delete(item, headers=headers), status, code)
    assert all_rows(database_url) == before


@pytest.mark.parametrize("role", ["ADMIN", "EDITOR"])
def test_admin_and_editor_may_write(client, make_user, role, database_url):
    headers = make_user(role).headers
    created = client.simulate_post(URL, headers=headers, json={"name": "Mine", "price_cents": 1})
    assert created.status_code == 201
    item = f"{URL}/{created.json['id']}"
    assert client.simulate_patch(item, headers=headers, json={"price_cents": 2}).status_code == 200
    assert client.simulate_delete(item, headers=headers).status_code == 204
    assert all_rows(database_url) == []


def test_a_bad_token_is_401_on_writes(client, make_method):
    method = make_method()
    bad = {"Authorization": "Bearer not-a-token"}
    assert_problem(
        client.simulate_delete(f"{URL}/{method['id']}", headers=bad), 401, "not_authenticated"
    )


# ------------------------------------------------------------------ update


def test_patch_and_put_are_the_same_partial_update(client, editor, make_method, database_url):
    method = make_method(name="Standard", price_cents=499, free_over_cents=5000, countries=["DE"])
    item = f"{URL}/{method['id']}"
    patched = client.simulate_patch(item, headers=editor.headers, json={"price_cents": 599})
    assert patched.status_code == 200, patched.text
    assert patched.json == {
        **method,
        "price_cents": 599,
        "updated_at": patched.json["updated_at"],
    }
    assert patched.json["updated_at"] > method["updated_at"]
    put = client.simulate_put(
        item, headers=editor.headers, json={"countries": ["NL", "BE", "NL"], "name": " Slow "}
    )
    assert put.status_code == 200, put.text
    assert put.json["name"] == "Slow"
    assert put.json["countries"] == ["BE", "NL"]
    assert put.json["price_cents"] == 599
    assert put.json["free_over_cents"] == 5000
    assert put.json["is_active"] is True
    assert put.headers["etag"].startswith('"')
    assert db_rows(
        database_url,
        "SELECT name, price_cents, free_over_cents, countries FROM shipping_methods",
    ) == [("Slow", 599, 5000, ["BE", "NL"])]


def test_free_over_null_clears_it_and_left_out_keeps_it(client, admin, make_method):
    method = make_method(free_over_cents=5000)
    item = f"{URL}/{method['id']}"
    kept = client.simulate_patch(item, headers=admin.headers, json={"price_cents": 1})
    assert kept.json["free_over_cents"] == 5000
    cleared = client.simulate_patch(item, headers=admin.headers, json={"free_over_cents": None})
    assert cleared.json["free_over_cents"] is None
    assert cleared.json["price_cents"] == 1
    again = client.simulate_patch(item, headers=admin.headers, json={"free_over_cents": 0})
    assert again.json["free_over_cents"] == 0


def test_empty_countries_ships_everywhere_again(client, admin, make_method):
    method = make_method(countries=["DE"])
    response = client.simulate_patch(
        f"{URL}/{method['id']}", headers=admin.headers, json={"countries": []}
    )
    assert response.json["countries"] == []


def test_rename_onto_a_taken_name_in_any_case_is_409(client, admin, make_method, database_url):
    make_method(name="Standard")
    express = make_method(name="Express")
    before = all_rows(database_url)
    response = client.simulate_patch(
        f"{URL}/{express['id']}", headers=admin.headers, json={"name": "sTaNdArD", "price_cents": 1}
    )
    assert_problem(response, 409, "name_taken")
    assert all_rows(database_url) == before


def test_renaming_a_method_to_its_own_name_in_another_case_is_fine(client, admin, make_method):
    method = make_method(name="Express")
    response = client.simulate_put(
        f"{URL}/{method['id']}", headers=admin.headers, json={"name": "EXPRESS"}
    )
    assert response.status_code == 200, response.text
    assert response.json["name"] == "EXPRESS"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"price_cents": -1}, "price_cents"),
        ({"price_cents": 10**12 + 1}, "price_cents"),
        ({"free_over_cents": -5}, "free_over_cents"),
        ({"countries": ["de"]}, "countries[0]"),
        ({"countries": ["XX"]}, "countries[0]"),
        ({"name": ""}, "name"),
        ({"name": "  "}, "name"),
        ({"name": None}, "name"),
        ({"name": "y" * 101}, "name"),
        ({"is_active": None}, "is_active"),
    ],
)
def test_invalid_update_bodies_are_422_and_change_nothing(
    client, admin, make_method, body, field, database_url
):
    method = make_method()
    before = all_rows(database_url)
    problem = assert_problem(
        client.simulate_patch(f"{URL}/{method['id']}", headers=admin.headers, json=body),
        422,
        "validation_error",
    )
    assert [error["field"] for error in problem["errors"]] == [field]
    assert all_rows(database_url) == before


def test_update_of_an_unknown_method_is_404(client, admin, database_url):
    response = client.simulate_patch(f"{URL}/42", headers=admin.headers, json={"price_cents": 1})
    assert_problem(response, 404, "not_found")
    assert all_rows(database_url) == []


# ------------------------------------------------------------------ reads


def test_anyone_reads_an_active_method_with_an_etag(client, make_method, customer):
    method = make_method(name="Standard", price_cents=499, free_over_cents=5000)
    for headers in ({}, customer.headers):
        response = client.simulate_get(f"{URL}/{method['id']}", headers=headers)
        assert response.status_code == 200
        assert response.json == method
    etag = response.headers["etag"]
    again = client.simulate_get(f"{URL}/{method['id']}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.text == ""


def test_an_inactive_method_is_404_for_the_public_and_visible_to_staff(
    client, make_method, customer, editor, admin
):
    method = make_method(is_active=False)
    item = f"{URL}/{method['id']}"
    assert_problem(client.simulate_get(item), 404, "not_found")
    assert_problem(client.simulate_get(item, headers=customer.headers), 404, "not_found")
    for user in (editor, admin):
        response = client.simulate_get(item, headers=user.headers)
        assert response.status_code == 200
        assert response.json["is_active"] is False


def test_unknown_and_malformed_ids(client, admin):
    assert_problem(client.simulate_get(f"{URL}/999"), 404, "not_found")
    assert_problem(client.simulate_get(f"{URL}/999", headers=admin.headers), 404, "not_found")
    assert_problem(client.simulate_get(f"{URL}/abc"), 422, "validation_error")
    assert_problem(client.simulate_get(f"{URL}/{2**63}"), 422, "validation_error")
    assert_problem(
        client.simulate_delete(f"{URL}/{2**63}", headers=admin.headers), 422, "validation_error"
    )


def test_list_shape_order_and_pages(client, make_method):
    methods = [make_method(name=f"M{i}") for i in range(5)]
    listed = client.simulate_get(URL)
    assert listed.status_code == 200
    assert listed.headers["etag"].startswith('"')
    body = listed.json
    assert set(body) == {"items", "page", "per_page", "total", "next_cursor"}
    assert body["page"] == 1 and body["per_page"] == 20 and body["total"] == 5
    assert body["next_cursor"] is None
    assert body["items"] == methods  # by id, each the full object
    second = client.simulate_get(URL, params={"page": 2, "per_page": 2}).json
    assert [m["name"] for m in second["items"]] == ["M2", "M3"]
    assert second["total"] == 5 and second["next_cursor"] is None
    past = client.simulate_get(URL, params={"page": 9, "per_page": 2}).json
    assert past["items"] == [] and past["total"] == 5 and past["page"] == 9
    # trailing slash is the same route
    assert client.simulate_get(URL + "/").json == body


def test_an_empty_list(client):
    body = client.simulate_get(URL).json
    assert body == {"items": [], "page": 1, "per_page": 20, "total": 0, "next_cursor": None}


@pytest.mark.parametrize(
    "params",
    [{"per_page": 101}, {"per_page": 0}, {"page": 0}, {"include_inactive": "maybe"}],
)
def test_bad_list_parameters_are_422(client, params):
    assert_problem(client.simulate_get(URL, params=params), 422, "validation_error")


def test_include_inactive_is_for_staff_only(client, make_method, customer, editor, admin):
    active = make_method(name="Standard")
    inactive = make_method(name="Retired", is_active=False)

    def names(headers, **params):
        body = client.simulate_get(URL, headers=headers, params=params).json
        return [m["name"] for m in body["items"]], body["total"]

    # the public and customers asking for inactive ones just get the active ones
    for headers in ({}, customer.headers):
        assert names(headers) == ([active["name"]], 1)
        assert names(headers, include_inactive="true") == ([active["name"]], 1)
    for user in (editor, admin):
        assert names(user.headers) == ([active["name"]], 1)
        assert names(user.headers, include_inactive="true") == (
            [active["name"], inactive["name"]],
            2,
        )
        assert names(user.headers, include_inactive="false") == ([active["name"]], 1)


def test_a_page_past_the_end_counts_only_what_the_caller_may_see(client, make_method, admin):
    make_method()
    make_method(is_active=False)
    assert client.simulate_get(URL, params={"page": 5}).json["total"] == 1
    staff = client.simulate_get(
        URL, headers=admin.headers, params={"page": 5, "include_inactive": "true"}
    ).json
    assert staff["total"] == 2 and staff["items"] == []


def test_the_list_runs_a_constant_number_of_queries(client, make_method, query_counter):
    make_method()
    with query_counter() as few:
        assert len(client.simulate_get(URL).json["items"]) == 1
    for _ in range(14):
        make_method()
    with query_counter() as many:
        assert len(client.simulate_get(URL).json["items"]) == 15
    assert many.n == few.n == 1


# ------------------------------------------------------------------ delete


def test_deleting_an_unused_method_removes_it(client, editor, make_method, database_url):
    unused = make_method(name="Unused")
    other = make_method(name="Other")
    response = client.simulate_delete(f"{URL}/{unused['id']}", headers=editor.headers)
    assert response.status_code == 204
    assert response.text == ""
    assert [row[1] for row in all_rows(database_url)] == ["Other"]
    assert_problem(
        client.simulate_get(f"{URL}/{unused['id']}", headers=editor.headers), 404, "not_found"
    )
    assert_problem(
        client.simulate_delete(f"{URL}/{unused['id']}", headers=editor.headers), 404, "not_found"
    )
    assert client.simulate_get(f"{URL}/{other['id']}").status_code == 200


def test_deleting_a_method_an_order_used_deactivates_it(
    client, admin, customer, make_method, database_url
):
    method = make_method(name="Standard", price_cents=499)
    order_id = insert_order_using(database_url, customer.id, method)
    response = client.simulate_delete(f"{URL}/{method['id']}", headers=admin.headers)
    assert response.status_code == 204
    assert response.text == ""
    assert db_rows(
        database_url, "SELECT name, is_active FROM shipping_methods WHERE id = %s", (method["id"],)
    ) == [("Standard", False)]
    assert db_rows(
        database_url, "SELECT shipping_method_id FROM orders WHERE id = %s", (order_id,)
    ) == [(method["id"],)]
    # gone for the public, kept (inactive) for staff
    assert_problem(client.simulate_get(f"{URL}/{method['id']}"), 404, "not_found")
    assert client.simulate_get(URL).json["items"] == []
    staff = client.simulate_get(f"{URL}/{method['id']}", headers=admin.headers).json
    assert staff["is_active"] is False and staff["price_cents"] == 499
    # deleting it again changes nothing more and still answers 204
    assert client.simulate_delete(f"{URL}/{method['id']}", headers=admin.headers).status_code == 204
    assert db_rows(database_url, "SELECT count(*) FROM shipping_methods") == [(1,)]


def test_a_cancelled_order_still_keeps_its_method(
    client, admin, customer, make_method, database_url
):
    method = make_method()
    order_id = insert_order_using(database_url, customer.id, method)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE orders SET status = 'cancelled' WHERE id = %s", (order_id,))
    assert client.simulate_delete(f"{URL}/{method['id']}", headers=admin.headers).status_code == 204
    assert db_rows(database_url, "SELECT is_active FROM shipping_methods") == [(False,)]


@pytest.mark.parametrize("order_commits", [True, False], ids=["commits", "rolls-back"])
def test_a_delete_racing_an_order_deactivates_it_or_removes_it(
    app, admin, customer, make_method, database_url, order_commits
):
    """An order that used the method is still uncommitted when the delete checks for orders:
    the delete waits for it (the order's foreign key lock), then falls back to deactivating if
    it committed, or removes the method if it rolled back."""
    method = make_method(name="Standard")
    with psycopg.connect(database_url) as order:
        order.execute(
            "INSERT INTO orders (user_id, shipping_cents, total_cents, currency, "
            "shipping_method_id, shipping_method_name) VALUES (%s, 499, 1499, 'USD', %s, %s)",
            (customer.id, method["id"], method["name"]),
        )
        deleting = in_background(
            lambda: testing.TestClient(app).simulate_delete(
                f"{URL}/{method['id']}", headers=admin.headers
            )
        )
        wait_for(
            lambda: backends(database_url, waiting_on_lock=True),
            timeout=10,
            interval=0.01,
            what="the delete to wait for the order's lock",
        )
        if order_commits:
            order.commit()
        else:
            order.rollback()
        response = deleting.join()
    assert response.status_code == 204, response.text
    if order_commits:
        assert db_rows(database_url, "SELECT is_active FROM shipping_methods") == [(False,)]
        assert db_rows(database_url, "SELECT count(*) FROM orders") == [(1,)]
    else:
        assert all_rows(database_url) == []
