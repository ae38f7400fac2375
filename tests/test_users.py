"""/api/users: admin listing with pagination and filters, read/update by admin or self, delete."""

from __future__ import annotations

import psycopg
import pytest

from tests.conftest import assert_problem, db_rows
from tests.helpers import USER_FIELDS, db_state, login, me, refresh

# ------------------------------------------------------------------ list


@pytest.fixture()
def population(make_user, admin):
    """The admin (id 1) plus 6 users with names and roles to filter on."""
    return [
        admin,
        make_user("EDITOR", email="ed.one@example.com", full_name="Edith Editor"),
        make_user("EDITOR", email="ed.two@example.com", full_name="Edgar Editor"),
        make_user("CUSTOMER", email="carol@shop.test", full_name="Carol Buyer"),
        make_user("CUSTOMER", email="dave@shop.test", full_name="Dave 100% Real"),
        make_user("CUSTOMER", email="erin_x@shop.test", full_name="Erin Buyer"),
        make_user("CUSTOMER", email="frank@shop.test", full_name="Frank Buyer", is_active=False),
    ]


def _list(client, admin, **params):
    response = client.simulate_get("/api/users", params=params, headers=admin.headers)
    assert response.status_code == 200, response.text
    return response.json


def test_list_users_answers_a_page_of_users_in_id_order(client, population):
    admin = population[0]
    page = _list(client, admin)
    assert page["page"] == 1 and page["per_page"] == 20
    assert page["total"] == 7
    assert page["next_cursor"] is None
    assert [u["id"] for u in page["items"]] == [u.id for u in population]
    for item in page["items"]:
        assert set(item) == USER_FIELDS
    assert "$2b$" not in str(page)


def test_list_users_paginates_with_page_and_per_page(client, population):
    admin = population[0]
    page = _list(client, admin, page=2, per_page=3)
    assert page["page"] == 2 and page["per_page"] == 3 and page["total"] == 7
    assert [u["id"] for u in page["items"]] == [u.id for u in population[3:6]]
    assert page["next_cursor"] is None
    last = _list(client, admin, page=3, per_page=3)
    assert [u["id"] for u in last["items"]] == [population[6].id]


def test_list_users_past_the_last_page_is_empty_with_the_right_total(client, population):
    page = _list(client, population[0], page=50, per_page=3)
    assert page["items"] == []
    assert page["total"] == 7 and page["page"] == 50
    assert page["next_cursor"] is None


def test_list_users_accepts_per_page_100(client, population):
    assert len(_list(client, population[0], per_page=100)["items"]) == 7


@pytest.mark.parametrize(
    "params",
    [
        {"per_page": 101},
        {"per_page": 0},
        {"per_page": -1},
        {"per_page": "ten"},
        {"page": 0},
        {"page": -1},
        {"page": "x"},
        {"page": 2**63},
        {"role": "admin"},
        {"role": "SUPERUSER"},
        {"role": ""},
        {"q": "a\x00b"},
        {"q": "x" * 201},
    ],
    ids=lambda p: "-".join(f"{k}={str(v)[:10]!r}" for k, v in p.items()),
)
def test_list_users_with_a_bad_query_parameter_returns_422(client, admin, params):
    response = client.simulate_get("/api/users", params=params, headers=admin.headers)
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["field"] == next(iter(params))


@pytest.mark.parametrize(("role", "count"), [("ADMIN", 1), ("EDITOR", 2), ("CUSTOMER", 4)])
def test_list_users_filters_by_role(client, population, role, count):
    page = _list(client, population[0], role=role)
    assert page["total"] == count
    assert {u["role"] for u in page["items"]} == {role}


@pytest.mark.parametrize(
    ("q", "emails"),
    [
        ("EDITOR", {"ed.one@example.com", "ed.two@example.com"}),  # name, case-insensitive
        ("SHOP.TEST", {"carol@shop.test", "dave@shop.test", "erin_x@shop.test", "frank@shop.test"}),
        ("buyer", {"carol@shop.test", "erin_x@shop.test", "frank@shop.test"}),
        ("%", {"dave@shop.test"}),  # LIKE wildcards are literal characters
        ("_", {"erin_x@shop.test"}),
        ("100%", {"dave@shop.test"}),
        ("\\", set()),
        ("nobody-matches", set()),
    ],
)
def test_list_users_q_finds_a_substring_of_email_or_name(client, population, q, emails):
    page = _list(client, population[0], q=q)
    assert {u["email"] for u in page["items"]} == emails
    assert page["total"] == len(emails)


def test_list_users_combines_role_and_q_and_pages(client, population):
    page = _list(client, population[0], role="CUSTOMER", q="buyer", per_page=2, page=2)
    assert page["total"] == 3
    assert [u["email"] for u in page["items"]] == ["frank@shop.test"]


def test_list_users_costs_the_same_statements_for_one_row_or_a_hundred(
    client, population, query_counter
):
    counts = []
    _list(client, population[0], per_page=1)  # warm: the caller's state is now in memory
    for per_page in (1, 100):
        with query_counter() as counted:
            _list(client, population[0], per_page=per_page)
        counts.append(counted.n)
    assert counts[0] == counts[1]
    # the total rides on the page's rows; only a page past the end needs a count of its own
    with query_counter() as counted:
        _list(client, population[0], page=99)
    assert counted.n == counts[0] + 1


# ------------------------------------------------------------------ get one


def test_admin_gets_any_user(client, admin, make_user):
    user = make_user("EDITOR", full_name="Someone")
    response = client.simulate_get(f"/api/users/{user.id}", headers=admin.headers)
    assert response.status_code == 200
    assert set(response.json) == USER_FIELDS
    assert response.json["email"] == user.email and response.json["full_name"] == "Someone"


@pytest.mark.parametrize("role", ["CUSTOMER", "EDITOR"])
def test_a_user_gets_their_own_account(client, make_user, role):
    user = make_user(role)
    response = client.simulate_get(f"/api/users/{user.id}/", headers=user.headers)
    assert response.status_code == 200
    assert response.json["id"] == user.id


@pytest.mark.parametrize("role", ["CUSTOMER", "EDITOR"])
def test_a_non_admin_gets_403_for_another_user_existing_or_not(client, make_user, role):
    user = make_user(role)
    other = make_user()
    for target in (other.id, other.id + 100, 2**63 - 1):
        response = client.simulate_get(f"/api/users/{target}", headers=user.headers)
        assert_problem(response, 403, "forbidden")


def test_admin_gets_404_for_an_unknown_user(client, admin):
    response = client.simulate_get("/api/users/999999", headers=admin.headers)
    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize("raw_id", ["abc", str(2**63), str(-(2**63) - 1), "1.5", "+1", "1e3"])
def test_a_user_id_that_is_not_a_64_bit_integer_returns_422(client, database_url, admin, raw_id):
    before = db_state(database_url)
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        response = client.simulate_request(
            method, f"/api/users/{raw_id}", headers=admin.headers, json={"full_name": "X"}
        )
        problem = assert_problem(response, 422, "validation_error")
        assert problem["errors"][0]["field"] == "user_id"
    assert db_state(database_url) == before


# ------------------------------------------------------------------ update


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_admin_updates_every_field_of_a_user(client, database_url, admin, make_user, method):
    user = make_user()
    response = client.simulate_request(
        method,
        f"/api/users/{user.id}",
        headers=admin.headers,
        json={
            "email": " New@Example.COM ",
            "full_name": "New Name",
            "role": "EDITOR",
            "is_active": False,
            "password": "admin-set-pass",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json
    assert set(body) == USER_FIELDS
    assert (body["email"], body["full_name"], body["role"], body["is_active"]) == (
        "new@example.com",
        "New Name",
        "EDITOR",
        False,
    )
    assert body["updated_at"] > body["created_at"]
    stored = db_rows(
        database_url,
        "SELECT email, full_name, role, is_active FROM users WHERE id = %s",
        (user.id,),
    )
    assert stored == [("new@example.com", "New Name", "EDITOR", False)]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_an_update_keeps_the_fields_left_out(client, database_url, admin, make_user, method):
    user = make_user("EDITOR", full_name="Keep Me")
    response = client.simulate_request(
        method, f"/api/users/{user.id}", headers=admin.headers, json={"full_name": "Changed"}
    )
    assert response.status_code == 200
    assert response.json["email"] == user.email
    assert response.json["role"] == "EDITOR" and response.json["is_active"] is True
    login(client, user.email, user.password)


def test_an_empty_full_name_is_allowed_and_stored(client, make_user):
    user = make_user(full_name="Someone")
    response = client.simulate_patch(
        f"/api/users/{user.id}", json={"full_name": ""}, headers=user.headers
    )
    assert response.status_code == 200
    assert response.json["full_name"] == ""


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_a_user_updates_their_own_email_and_name(client, database_url, make_user, method):
    user = make_user()
    response = client.simulate_request(
        method,
        f"/api/users/{user.id}",
        headers=user.headers,
        json={
            "email": "Me.New@Example.com",
            "full_name": "Me Myself",
            "current_password": user.password,
        },
    )
    assert response.status_code == 200, response.text
    assert response.json["email"] == "me.new@example.com"
    assert response.json["full_name"] == "Me Myself"
    assert response.json["email_verified"] is False  # a new address is not proven yet
    login(client, "me.new@example.com", user.password)


def test_a_self_email_change_needs_the_current_password(client, database_url, make_user):
    user = make_user()
    before = db_state(database_url)
    for extra in ({}, {"current_password": "wrong-password"}):
        response = client.simulate_patch(
            f"/api/users/{user.id}",
            headers=user.headers,
            json={"email": "elsewhere@example.com", **extra},
        )
        body = assert_problem(response, 422, "validation_error")
        assert body["errors"][0]["field"] == "current_password"
    assert db_state(database_url) == before


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"role": "ADMIN"}, id="role-admin"),
        pytest.param({"role": "CUSTOMER"}, id="role-unchanged"),
        pytest.param({"is_active": True}, id="is-active-unchanged"),
        pytest.param({"is_active": False}, id="is-active-false"),
        pytest.param({"full_name": "Sneaky", "role": "ADMIN"}, id="name-with-role"),
        pytest.param({"email": "sneaky@example.com", "is_active": True}, id="email-with-is-active"),
    ],
)
def test_a_non_admin_setting_role_or_is_active_on_themself_gets_403_and_nothing_changes(
    client, database_url, make_user, body
):
    user = make_user()
    pair = login(client, user.email, user.password)
    before = db_state(database_url)
    for method in ("PUT", "PATCH"):
        response = client.simulate_request(
            method, f"/api/users/{user.id}", headers=user.headers, json=body
        )
        assert_problem(response, 403, "forbidden")
    assert db_state(database_url) == before
    assert refresh(client, pair["refresh_token"]).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"role": "CUSTOMER"},
        {"is_active": False},
        {"role": "ADMIN"},
        {"full_name": "Still me", "is_active": True},
    ],
)
def test_an_admin_setting_their_own_role_or_is_active_gets_403(client, database_url, admin, body):
    """An admin cannot demote or deactivate themselves (the last admin would lock everyone
    out); another admin can, and their name and email stay theirs to edit."""
    before = db_state(database_url)
    for method in ("PUT", "PATCH"):
        response = client.simulate_request(
            method, f"/api/users/{admin.id}", json=body, headers=admin.headers
        )
        assert_problem(response, 403, "forbidden")
    assert db_state(database_url) == before
    renamed = client.simulate_patch(
        f"/api/users/{admin.id}", json={"full_name": "Root"}, headers=admin.headers
    )
    assert renamed.status_code == 200 and renamed.json["full_name"] == "Root"


def test_an_editor_setting_their_own_role_gets_403(client, database_url, editor):
    before = db_state(database_url)
    response = client.simulate_put(
        f"/api/users/{editor.id}", json={"role": "ADMIN"}, headers=editor.headers
    )
    assert_problem(response, 403, "forbidden")
    assert db_state(database_url) == before


@pytest.mark.parametrize("role", ["CUSTOMER", "EDITOR"])
def test_a_non_admin_updating_another_user_gets_403_existing_or_not(
    client, database_url, make_user, role
):
    user = make_user(role)
    other = make_user()
    before = db_state(database_url)
    for target in (other.id, 999999):
        response = client.simulate_patch(
            f"/api/users/{target}", json={"full_name": "Hacked"}, headers=user.headers
        )
        assert_problem(response, 403, "forbidden")
    assert db_state(database_url) == before


@pytest.mark.parametrize("spelling", ["taken@example.com", "TAKEN@example.com"])
@pytest.mark.parametrize("as_admin", [True, False], ids=["admin", "self"])
def test_an_update_to_an_email_already_taken_returns_409(
    client, database_url, admin, make_user, spelling, as_admin
):
    make_user(email="taken@example.com")
    user = make_user()
    before = db_state(database_url)
    response = client.simulate_patch(
        f"/api/users/{user.id}",
        json={"email": spelling, "full_name": "Renamed", "current_password": user.password},
        headers=admin.headers if as_admin else user.headers,
    )
    assert_problem(response, 409, "email_taken")
    assert db_state(database_url) == before


def test_an_update_to_the_users_own_email_in_another_case_is_allowed(client, make_user):
    user = make_user(email="same@example.com")
    response = client.simulate_patch(
        f"/api/users/{user.id}", json={"email": "SAME@example.com"}, headers=user.headers
    )
    assert response.status_code == 200
    assert response.json["email"] == "same@example.com"


def test_admin_updating_an_unknown_user_gets_404(client, database_url, admin):
    before = db_state(database_url)
    response = client.simulate_put(
        "/api/users/999999", json={"full_name": "X"}, headers=admin.headers
    )
    assert_problem(response, 404, "not_found")
    assert db_state(database_url) == before


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"email": "no-at"}, id="email-without-at"),
        pytest.param({"email": "a@b@c"}, id="email-with-two-at"),
        pytest.param({"email": "a" * 250 + "@x.io"}, id="email-of-255-characters"),
        pytest.param({"email": "İ" * 200 + "@x.io"}, id="email-too-long-once-lower-cased"),
        pytest.param({"email": None}, id="email-null"),
        pytest.param({"full_name": "n" * 201}, id="full-name-of-201-characters"),
        pytest.param({"full_name": "a\x00b"}, id="full-name-with-nul"),
        pytest.param({"full_name": None}, id="full-name-null"),
        pytest.param({"role": "admin"}, id="role-lower-case"),
        pytest.param({"role": ""}, id="role-empty"),
        pytest.param({"role": None}, id="role-null"),
        pytest.param({"is_active": "false"}, id="is-active-string"),
        pytest.param({"is_active": None}, id="is-active-null"),
    ],
)
def test_admin_update_with_an_invalid_field_returns_422(
    client, database_url, admin, make_user, body
):
    user = make_user()
    before = db_state(database_url)
    response = client.simulate_patch(f"/api/users/{user.id}", json=body, headers=admin.headers)
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["field"] == next(iter(body))
    assert db_state(database_url) == before


def test_an_update_with_a_body_that_is_not_an_object_returns_400(
    client, database_url, admin, make_user
):
    user = make_user()
    before = db_state(database_url)
    for raw in (b"[]", b"{", b""):
        response = client.simulate_patch(
            f"/api/users/{user.id}",
            body=raw,
            headers={**admin.headers, "Content-Type": "application/json"},
        )
        assert_problem(response, 400, "invalid_json")
    assert db_state(database_url) == before


def test_an_update_with_a_body_over_one_mebibyte_returns_413(
    client, database_url, admin, make_user
):
    user = make_user()
    before = db_state(database_url)
    raw = b'{"full_name": "' + b"x" * (1 << 20) + b'"}'
    response = client.simulate_patch(
        f"/api/users/{user.id}",
        body=raw,
        headers={**admin.headers, "Content-Type": "application/json"},
    )
    assert_problem(response, 413, "payload_too_large")
    assert db_state(database_url) == before


def test_deactivation_by_update_blocks_login(client, admin, make_user):
    user = make_user()
    client.simulate_patch(f"/api/users/{user.id}", json={"is_active": False}, headers=admin.headers)
    response = client.simulate_post(
        "/api/auth/login", json={"email": user.email, "password": user.password}
    )
    assert_problem(response, 401, "invalid_credentials")


# ------------------------------------------------------------------ delete


def _insert_order(database_url: str, user_id: int) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "INSERT INTO orders (user_id, status, total_cents, currency)"
            " VALUES (%s, 'delivered', 1999, 'USD') RETURNING id",
            (user_id,),
        ).fetchone()[0]


def test_admin_deletes_a_user_without_orders(client, database_url, admin, make_user):
    user = make_user()
    login(client, user.email, user.password)
    response = client.simulate_delete(f"/api/users/{user.id}", headers=admin.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert db_rows(database_url, "SELECT id FROM users WHERE id = %s", (user.id,)) == []
    assert (
        db_rows(database_url, "SELECT id FROM refresh_tokens WHERE user_id = %s", (user.id,)) == []
    )
    assert_problem(
        client.simulate_get(f"/api/users/{user.id}", headers=admin.headers), 404, "not_found"
    )
    # the email is free again
    assert (
        client.simulate_post(
            "/api/auth/register", json={"email": user.email, "password": "password123"}
        ).status_code
        == 201
    )


def test_deleting_a_user_with_orders_deactivates_them_and_keeps_the_orders(
    client, database_url, admin, make_user
):
    user = make_user()
    pair = login(client, user.email, user.password)
    order_id = _insert_order(database_url, user.id)
    response = client.simulate_delete(f"/api/users/{user.id}", headers=admin.headers)
    assert response.status_code == 204
    assert db_rows(database_url, "SELECT is_active FROM users WHERE id = %s", (user.id,)) == [
        (False,)
    ]
    assert db_rows(database_url, "SELECT id, user_id FROM orders") == [(order_id, user.id)]
    assert db_rows(
        database_url,
        "SELECT count(*) FROM refresh_tokens WHERE user_id = %s AND revoked_at IS NULL",
        (user.id,),
    ) == [(0,)]
    assert_problem(me(client, pair["access_token"]), 401, "not_authenticated")
    assert_problem(refresh(client, pair["refresh_token"]), 401, "not_authenticated")
    assert_problem(
        client.simulate_post(
            "/api/auth/login", json={"email": user.email, "password": user.password}
        ),
        401,
        "invalid_credentials",
    )
    # the closed account is still visible to the admin, and deleting it again is still a 204
    shown = client.simulate_get(f"/api/users/{user.id}", headers=admin.headers)
    assert shown.status_code == 200 and shown.json["is_active"] is False
    assert client.simulate_delete(f"/api/users/{user.id}", headers=admin.headers).status_code == 204


def test_an_admin_deleting_themself_gets_409_and_nothing_changes(client, database_url, admin):
    login(client, admin.email, admin.password)
    before = db_state(database_url)
    response = client.simulate_delete(f"/api/users/{admin.id}", headers=admin.headers)
    assert_problem(response, 409, "cannot_delete_self")
    assert db_state(database_url) == before


def test_deleting_an_unknown_user_returns_404(client, database_url, admin):
    before = db_state(database_url)
    assert_problem(
        client.simulate_delete("/api/users/999999", headers=admin.headers), 404, "not_found"
    )
    assert db_state(database_url) == before


def test_deleting_another_admin_works(client, database_url, admin, make_user):
    other = make_user("ADMIN")
    response = client.simulate_delete(f"/api/users/{other.id}", headers=admin.headers)
    assert response.status_code == 204
    assert_problem(
        client.simulate_get("/api/auth/me", headers=other.headers), 401, "not_authenticated"
    )
