"""Address book /api/me/addresses: own addresses only, validation, the default, the limit of 20
(also under concurrent creates), pagination without N+1, and account deletion."""

from __future__ import annotations

import pytest
from falcon import testing

from tests.conftest import assert_problem, db_rows, together

BOOK = "/api/me/addresses"
COLUMNS = (
    "id, user_id, full_name, line1, line2, city, region, postal_code, country, phone, "
    "is_default, created_at, updated_at"
)
KEYS = {
    "id",
    "full_name",
    "line1",
    "line2",
    "city",
    "region",
    "postal_code",
    "country",
    "phone",
    "is_default",
    "created_at",
    "updated_at",
}


def address(**changes) -> dict:
    body = {
        "full_name": "Erika Mustermann",
        "line1": "Heidestraße 17",
        "city": "Köln",
        "postal_code": "51147",
        "country": "DE",
    }
    body.update(changes)
    return body


def create(client, user, **changes):
    return client.simulate_post(BOOK, json=address(**changes), headers=user.headers)


def created(client, user, **changes) -> dict:
    response = create(client, user, **changes)
    assert response.status_code == 201, response.text
    return response.json


def rows(database_url, user_id: int | None = None) -> list[tuple]:
    """Every address row (of one user), as stored."""
    where, params = ("WHERE user_id = %s", (user_id,)) if user_id is not None else ("", ())
    return db_rows(database_url, f"SELECT {COLUMNS} FROM addresses {where} ORDER BY id", params)


def defaults(database_url, user_id: int) -> list[int]:
    return [
        row[0]
        for row in db_rows(
            database_url,
            "SELECT id FROM addresses WHERE user_id = %s AND is_default ORDER BY id",
            (user_id,),
        )
    ]


def fill_book(database_url, user_id: int, count: int) -> list[int]:
    """`count` non-default addresses written directly (faster than the API for big books)."""
    return [
        row[0]
        for row in db_rows(
            database_url,
            "INSERT INTO addresses (user_id, full_name, line1, city, postal_code, country) "
            "SELECT %s, 'Filler ' || n, 'Street ' || n, 'Berlin', '10115', 'DE' "
            "FROM generate_series(1, %s) AS n RETURNING id",
            (user_id, count),
        )
    ]


# ------------------------------------------------------------------ create, read


def test_create_answers_201_with_the_address_and_its_location(client, customer, database_url):
    response = create(
        client,
        customer,
        full_name="  Erika  Mustermann ",
        line2="c/o Gabler",
        region="NRW",
        phone="+49 (221) 123-456",
        is_default=False,
    )
    assert response.status_code == 201, response.text
    body = response.json
    assert set(body) == KEYS
    assert response.headers["location"] == f"{BOOK}/{body['id']}"
    # kept exactly as sent: nothing trimmed
    assert body["full_name"] == "  Erika  Mustermann "
    assert (body["line1"], body["line2"], body["city"], body["region"]) == (
        "Heidestraße 17",
        "c/o Gabler",
        "Köln",
        "NRW",
    )
    assert (body["postal_code"], body["country"], body["phone"]) == (
        "51147",
        "DE",
        "+49 (221) 123-456",
    )
    # the first address is the default whatever was sent
    assert body["is_default"] is True
    for stamp in ("created_at", "updated_at"):
        assert body[stamp].endswith("Z") and len(body[stamp]) == 27
    ((row_id, user_id, full_name, *_rest),) = rows(database_url)
    assert (row_id, user_id, full_name) == (body["id"], customer.id, "  Erika  Mustermann ")

    fetched = client.simulate_get(f"{BOOK}/{body['id']}", headers=customer.headers)
    assert fetched.status_code == 200
    assert fetched.json == body
    # trailing slash too
    assert client.simulate_get(f"{BOOK}/{body['id']}/", headers=customer.headers).json == body


def test_optional_fields_default_to_empty_strings_and_unknown_fields_are_ignored(
    client, customer, database_url
):
    body = created(client, customer, user_id=999, id=5, created_at="yesterday")
    assert (body["line2"], body["region"], body["phone"]) == ("", "", "")
    assert rows(database_url)[0][1] == customer.id


def test_lengths_at_the_limits_are_accepted(client, customer):
    body = created(
        client,
        customer,
        full_name="n" * 200,
        line1="a" * 200,
        line2="b" * 200,
        city="c" * 100,
        region="r" * 100,
        postal_code="1" * 20,
        phone="1" * 32,
    )
    assert len(body["full_name"]) == 200 and len(body["phone"]) == 32


def test_every_role_has_its_own_book(client, admin, editor, customer):
    for user in (admin, editor, customer):
        created(client, user, full_name=f"{user.role} home")
    for user in (admin, editor, customer):
        listed = client.simulate_get(BOOK, headers=user.headers).json
        assert [a["full_name"] for a in listed["items"]] == [f"{user.role} home"]
        assert listed["total"] == 1


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"country": "de"}, "country"),
        ({"country": "XX"}, "country"),
        ({"country": "DEU"}, "country"),
        ({"country": ""}, "country"),
        ({"country": 49}, "country"),
        ({"full_name": "n" * 201}, "full_name"),
        ({"line1": "a" * 201}, "line1"),
        ({"line2": "b" * 201}, "line2"),
        ({"city": "c" * 101}, "city"),
        ({"region": "r" * 101}, "region"),
        ({"postal_code": "1" * 21}, "postal_code"),
        ({"phone": "1" * 33}, "phone"),
        ({"phone": "+49 call me"}, "phone"),
        ({"phone": "0049x221"}, "phone"),
        ({"full_name": ""}, "full_name"),
        ({"full_name": "   "}, "full_name"),
        ({"city": "\t"}, "city"),
        ({"full_name": "Erika\x00Mustermann"}, "full_name"),
        ({"line1": "Heidestraße\n17"}, "line1"),
        ({"line2": "c/o\tGabler"}, "line2"),
        ({"region": "NRW\x7f"}, "region"),
        ({"postal_code": "511\r47"}, "postal_code"),
        ({"line2": None}, "line2"),
        ({"is_default": "yes"}, "is_default"),
    ],
)
def test_invalid_fields_are_422_naming_the_field_and_write_nothing(
    client, customer, database_url, changes, field
):
    response = create(client, customer, **changes)
    problem = assert_problem(response, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == [field]
    assert rows(database_url) == []


@pytest.mark.parametrize("missing", ["full_name", "line1", "city", "postal_code", "country"])
def test_required_fields_are_required(client, customer, database_url, missing):
    body = address()
    del body[missing]
    response = client.simulate_post(BOOK, json=body, headers=customer.headers)
    problem = assert_problem(response, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == [missing]
    assert rows(database_url) == []


def test_a_body_that_is_not_a_json_object_is_400(client, customer, database_url):
    for raw in ("[]", "not json", ""):
        response = client.simulate_post(
            BOOK, body=raw, headers={**customer.headers, "Content-Type": "application/json"}
        )
        assert_problem(response, 400, "invalid_json")
    assert rows(database_url) == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"country": "de"}, "country"),
        ({"country": "XX"}, "country"),
        ({"city": "c" * 101}, "city"),
        ({"phone": "call me"}, "phone"),
        ({"full_name": " "}, "full_name"),
        ({"line1": "a\nb"}, "line1"),
        ({"postal_code": None}, "postal_code"),
    ],
)
def test_invalid_updates_are_422_and_change_nothing(client, customer, database_url, changes, field):
    mine = created(client, customer)
    before = rows(database_url)
    for method in ("PUT", "PATCH"):
        response = client.simulate_request(
            method, f"{BOOK}/{mine['id']}", json=changes, headers=customer.headers
        )
        problem = assert_problem(response, 422, "validation_error")
        assert [e["field"] for e in problem["errors"]] == [field]
    assert rows(database_url) == before


@pytest.mark.parametrize(
    ("params", "field"),
    [({"per_page": 101}, "per_page"), ({"per_page": 0}, "per_page"), ({"page": 0}, "page")],
)
def test_bad_list_parameters_are_422(client, customer, params, field):
    response = client.simulate_get(BOOK, params=params, headers=customer.headers)
    problem = assert_problem(response, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == [field]


@pytest.mark.parametrize("bad_id", ["abc", "1.5", str(2**63)])
def test_an_id_that_is_not_a_64_bit_integer_is_422(client, customer, bad_id):
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        response = client.simulate_request(
            method, f"{BOOK}/{bad_id}", json={"city": "Bonn"}, headers=customer.headers
        )
        assert_problem(response, 422, "validation_error")


# ------------------------------------------------------------------ who


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}]
)
def test_every_route_needs_a_valid_token(client, customer, database_url, headers):
    mine = created(client, customer)
    before = rows(database_url)
    calls = [
        ("GET", BOOK, None),
        ("POST", BOOK, address()),
        ("GET", f"{BOOK}/{mine['id']}", None),
        ("PUT", f"{BOOK}/{mine['id']}", {"city": "Bonn"}),
        ("PATCH", f"{BOOK}/{mine['id']}", {"city": "Bonn"}),
        ("DELETE", f"{BOOK}/{mine['id']}", None),
    ]
    for method, path, body in calls:
        response = client.simulate_request(method, path, json=body, headers=headers)
        assert_problem(response, 401, "not_authenticated")
    assert rows(database_url) == before


def test_another_users_address_is_404_on_every_route_and_stays_unchanged(
    client, customer, make_user, database_url
):
    owner = make_user()
    theirs = created(client, owner, full_name="Owner")
    mine = created(client, customer, full_name="Me")
    before = rows(database_url)
    for method, body in (
        ("GET", None),
        ("PUT", {"city": "Bonn"}),
        ("PATCH", {"city": "Bonn"}),
        # would also clear the caller's own default if it were not undone
        ("PATCH", {"is_default": True}),
        ("PUT", {"is_default": False}),
        ("DELETE", None),
    ):
        response = client.simulate_request(
            method, f"{BOOK}/{theirs['id']}", json=body, headers=customer.headers
        )
        problem = assert_problem(response, 404, "not_found")
        assert "Owner" not in response.text and str(owner.id) not in problem.get("detail", "")
    assert rows(database_url) == before
    assert defaults(database_url, customer.id) == [mine["id"]]
    listed = client.simulate_get(BOOK, headers=customer.headers).json
    assert [a["id"] for a in listed["items"]] == [mine["id"]]


def test_an_unknown_id_is_404(client, customer, database_url):
    created(client, customer)
    before = rows(database_url)
    for method, body in (
        ("GET", None),
        ("PUT", {"city": "Bonn"}),
        ("PATCH", {"is_default": True}),
        ("DELETE", None),
    ):
        response = client.simulate_request(
            method, f"{BOOK}/999999", json=body, headers=customer.headers
        )
        assert_problem(response, 404, "not_found")
    assert rows(database_url) == before


# ------------------------------------------------------------------ update, delete


def test_put_and_patch_are_the_same_partial_update(client, customer, database_url):
    mine = created(client, customer, line2="Hinterhaus", phone="123")
    after_put = client.simulate_put(
        f"{BOOK}/{mine['id']}",
        json={"city": "Bonn", "postal_code": "53111"},
        headers=customer.headers,
    )
    assert after_put.status_code == 200, after_put.text
    assert after_put.json["updated_at"] > mine["updated_at"]
    assert after_put.json["created_at"] == mine["created_at"]
    expected = {**mine, "city": "Bonn", "postal_code": "53111"}
    assert {k: v for k, v in after_put.json.items() if k != "updated_at"} == {
        k: v for k, v in expected.items() if k != "updated_at"
    }

    after_patch = client.simulate_patch(
        f"{BOOK}/{mine['id']}",
        json={"country": "AT", "line2": "", "region": " Tirol ", "phone": ""},
        headers=customer.headers,
    )
    assert after_patch.status_code == 200, after_patch.text
    body = after_patch.json
    assert (body["city"], body["country"], body["line2"], body["region"], body["phone"]) == (
        "Bonn",
        "AT",
        "",
        " Tirol ",
        "",
    )
    assert body["updated_at"] > after_put.json["updated_at"]
    assert body["is_default"] is True
    assert client.simulate_get(f"{BOOK}/{mine['id']}", headers=customer.headers).json == body
    ((_id, _uid, *stored, _c, _u),) = rows(database_url)
    assert stored == [
        "Erika Mustermann",
        "Heidestraße 17",
        "",
        "Bonn",
        " Tirol ",
        "53111",
        "AT",
        "",
        True,
    ]


def test_an_empty_update_changes_only_updated_at(client, customer):
    mine = created(client, customer)
    response = client.simulate_patch(f"{BOOK}/{mine['id']}", json={}, headers=customer.headers)
    assert response.status_code == 200
    assert {k: v for k, v in response.json.items() if k != "updated_at"} == {
        k: v for k, v in mine.items() if k != "updated_at"
    }


def test_delete_answers_204_and_removes_only_that_address(client, customer, database_url):
    first = created(client, customer)
    second = created(client, customer)
    response = client.simulate_delete(f"{BOOK}/{second['id']}", headers=customer.headers)
    assert response.status_code == 204
    assert response.text == ""
    assert [row[0] for row in rows(database_url)] == [first["id"]]
    assert_problem(
        client.simulate_get(f"{BOOK}/{second['id']}", headers=customer.headers), 404, "not_found"
    )
    # a second delete finds nothing
    assert_problem(
        client.simulate_delete(f"{BOOK}/{second['id']}", headers=customer.headers),
        404,
        "not_found",
    )


# ------------------------------------------------------------------ the default


def test_only_the_first_address_becomes_default_on_its_own(client, customer, database_url):
    first = created(client, customer, is_default=False)
    second = created(client, customer)
    third = created(client, customer, is_default=False)
    assert (first["is_default"], second["is_default"], third["is_default"]) == (
        True,
        False,
        False,
    )
    assert defaults(database_url, customer.id) == [first["id"]]


def test_creating_with_is_default_moves_the_default(client, customer, database_url):
    first = created(client, customer)
    second = created(client, customer, is_default=True)
    assert second["is_default"] is True
    assert defaults(database_url, customer.id) == [second["id"]]
    old = client.simulate_get(f"{BOOK}/{first['id']}", headers=customer.headers).json
    assert old["is_default"] is False
    assert old["updated_at"] > first["updated_at"]  # it changed


def test_updating_with_is_default_moves_the_default(client, customer, make_user, database_url):
    other = make_user()
    theirs = created(client, other)
    first = created(client, customer)
    second = created(client, customer)
    for method in ("PATCH", "PUT"):
        response = client.simulate_request(
            method, f"{BOOK}/{second['id']}", json={"is_default": True}, headers=customer.headers
        )
        assert response.status_code == 200
        assert response.json["is_default"] is True
        assert defaults(database_url, customer.id) == [second["id"]]
    # setting it on the default again keeps it
    again = client.simulate_patch(
        f"{BOOK}/{second['id']}", json={"is_default": True}, headers=customer.headers
    )
    assert again.json["is_default"] is True
    back = client.simulate_patch(
        f"{BOOK}/{first['id']}", json={"is_default": True}, headers=customer.headers
    )
    assert back.json["is_default"] is True
    assert defaults(database_url, customer.id) == [first["id"]]
    # another user's default is not theirs to clear
    assert defaults(database_url, other.id) == [theirs["id"]]


def test_is_default_false_on_the_default_leaves_none(client, customer, database_url):
    first = created(client, customer)
    created(client, customer)
    response = client.simulate_patch(
        f"{BOOK}/{first['id']}", json={"is_default": False}, headers=customer.headers
    )
    assert response.status_code == 200
    assert response.json["is_default"] is False
    assert defaults(database_url, customer.id) == []
    # a book that is not empty gives a new address no default on its own
    assert created(client, customer)["is_default"] is False
    assert defaults(database_url, customer.id) == []


def test_deleting_the_default_leaves_none(client, customer, database_url):
    first = created(client, customer)
    second = created(client, customer)
    assert (
        client.simulate_delete(f"{BOOK}/{first['id']}", headers=customer.headers).status_code == 204
    )
    assert defaults(database_url, customer.id) == []
    listed = client.simulate_get(BOOK, headers=customer.headers).json["items"]
    assert [(a["id"], a["is_default"]) for a in listed] == [(second["id"], False)]
    # once the book is empty again, the next address is the first one: the default
    client.simulate_delete(f"{BOOK}/{second['id']}", headers=customer.headers)
    assert created(client, customer, is_default=False)["is_default"] is True


# ------------------------------------------------------------------ the limit


def test_twenty_addresses_fit_and_the_21st_is_409_with_nothing_written(
    client, customer, make_user, database_url
):
    made = [created(client, customer, full_name=f"Address {n}") for n in range(20)]
    assert [a["is_default"] for a in made] == [True] + [False] * 19
    before = rows(database_url)
    for body in (address(), address(is_default=True)):
        response = client.simulate_post(BOOK, json=body, headers=customer.headers)
        problem = assert_problem(response, 409, "address_limit")
        assert "20" in problem["detail"]
        assert "location" not in response.headers
    # the refused is_default: true did not clear the default either
    assert rows(database_url) == before
    assert defaults(database_url, customer.id) == [made[0]["id"]]
    # the limit is per user
    assert created(client, make_user())["is_default"] is True
    # deleting one makes room again
    client.simulate_delete(f"{BOOK}/{made[5]['id']}", headers=customer.headers)
    assert created(client, customer)["is_default"] is False


def test_concurrent_creates_never_pass_the_limit(app, customer, database_url):
    fill_book(database_url, customer.id, 19)

    def add(index: int):
        return create(testing.TestClient(app), customer, full_name=f"Racer {index}")

    for _round in range(3):  # a race may go right by luck once: run it a few times
        answers = together(8, add)
        statuses = sorted(
            (r.status_code, None if r.status_code == 201 else r.json["code"]) for r in answers
        )
        assert statuses == [(201, None)] + [(409, "address_limit")] * 7
        assert len(rows(database_url, customer.id)) == 20
        db_rows(
            database_url,
            "DELETE FROM addresses WHERE id = (SELECT max(id) FROM addresses WHERE user_id = %s) "
            "RETURNING id",
            (customer.id,),
        )


def test_concurrent_first_addresses_make_exactly_one_default(app, customer, database_url):
    for _round in range(3):
        answers = together(6, lambda i: create(testing.TestClient(app), customer, line2=str(i)))
        assert [r.status_code for r in answers] == [201] * 6
        assert sum(r.json["is_default"] for r in answers) == 1
        assert len(defaults(database_url, customer.id)) == 1
        db_rows(database_url, "DELETE FROM addresses RETURNING id")


def test_concurrent_moves_of_the_default_leave_exactly_one(app, client, customer, database_url):
    ids = [created(client, customer)["id"]] + fill_book(database_url, customer.id, 7)

    def promote(index: int):
        return testing.TestClient(app).simulate_patch(
            f"{BOOK}/{ids[index]}", json={"is_default": True}, headers=customer.headers
        )

    answers = together(len(ids), promote)
    assert [r.status_code for r in answers] == [200] * len(ids)
    assert len(defaults(database_url, customer.id)) == 1


# ------------------------------------------------------------------ listing


def test_list_pages_by_id_with_the_contract_shape(client, customer, make_user, database_url):
    created(client, make_user())  # someone else's: never listed
    ids = [created(client, customer)["id"]] + fill_book(database_url, customer.id, 14)

    first = client.simulate_get(BOOK, params={"per_page": 10}, headers=customer.headers)
    assert first.status_code == 200
    body = first.json
    assert set(body) == {"items", "page", "per_page", "total", "next_cursor"}
    assert (body["page"], body["per_page"], body["total"], body["next_cursor"]) == (1, 10, 15, None)
    assert [a["id"] for a in body["items"]] == ids[:10]
    assert set(body["items"][0]) == KEYS

    second = client.simulate_get(
        BOOK, params={"per_page": 10, "page": 2}, headers=customer.headers
    ).json
    assert (second["page"], second["total"], second["next_cursor"]) == (2, 15, None)
    assert [a["id"] for a in second["items"]] == ids[10:]

    past = client.simulate_get(BOOK, params={"per_page": 10, "page": 3}, headers=customer.headers)
    assert past.status_code == 200
    assert (past.json["items"], past.json["total"], past.json["next_cursor"]) == ([], 15, None)

    default = client.simulate_get(BOOK, headers=customer.headers).json
    assert (default["page"], default["per_page"], len(default["items"])) == (1, 20, 15)


def test_an_empty_book_lists_nothing(client, customer):
    body = client.simulate_get(BOOK, headers=customer.headers).json
    assert body == {"items": [], "page": 1, "per_page": 20, "total": 0, "next_cursor": None}


def test_listing_runs_the_same_statements_for_2_or_15_addresses(
    client, make_user, database_url, query_counter
):
    counts = []
    for size in (2, 15):
        user = make_user()
        fill_book(database_url, user.id, size)
        client.simulate_get(BOOK, headers=user.headers)  # the caller is now known to the app
        with query_counter() as counted:
            response = client.simulate_get(BOOK, headers=user.headers)
        assert len(response.json["items"]) == size
        counts.append(counted.n)
    assert counts[0] == counts[1]
    # one statement: the total rides on the page's rows
    assert counts == [1, 1], counts


# ------------------------------------------------------------------ account deletion


def test_an_account_deactivated_after_its_token_was_checked_writes_nothing(
    client, customer, database_url
):
    mine = created(client, customer)  # the app now remembers the caller as active
    # deactivated behind the app's back: the window between the token check and the write
    db_rows(
        database_url,
        "UPDATE users SET is_active = false WHERE id = %s RETURNING id",
        (customer.id,),
    )
    before = rows(database_url)
    assert_problem(create(client, customer), 401, "not_authenticated")
    assert_problem(
        client.simulate_patch(
            f"{BOOK}/{mine['id']}", json={"is_default": True}, headers=customer.headers
        ),
        401,
        "not_authenticated",
    )
    assert rows(database_url) == before


def test_deleting_the_account_deletes_its_addresses(client, customer, make_user, database_url):
    other = make_user()
    kept = created(client, other)
    for _ in range(3):
        created(client, customer)
    response = client.simulate_post(
        "/api/auth/delete-account", json={"password": "password123"}, headers=customer.headers
    )
    assert response.status_code == 204, response.text
    assert rows(database_url, customer.id) == []
    assert [row[0] for row in rows(database_url)] == [kept["id"]]
    # and its token no longer reaches the book
    assert_problem(client.simulate_get(BOOK, headers=customer.headers), 401, "not_authenticated")
    assert_problem(create(client, customer), 401, "not_authenticated")
    assert rows(database_url, customer.id) == []
