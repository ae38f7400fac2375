"""/api/auth: register, login, refresh rotation with reuse detection, logout, me, request ids."""

from __future__ import annotations

import pytest

from tests.conftest import assert_problem, db_rows, together
from tests.helpers import USER_FIELDS, bearer, db_state, login, me, refresh, register

# ------------------------------------------------------------------ register


def test_register_returns_201_with_the_user_and_no_password_hash(client, database_url):
    response = register(client, email="alice@example.com", full_name="Alice")
    assert response.status_code == 201, response.text
    body = response.json
    assert set(body) == USER_FIELDS
    assert body["email"] == "alice@example.com"
    assert body["full_name"] == "Alice"
    assert body["role"] == "CUSTOMER"
    assert body["is_active"] is True
    assert body["created_at"].endswith("Z") and len(body["created_at"]) == 27
    [(stored_hash,)] = db_rows(database_url, "SELECT password_hash FROM users")
    assert stored_hash not in response.text
    assert "$2b$" not in response.text and "password" not in response.text


def test_register_without_full_name_stores_an_empty_name(client):
    response = register(client)
    assert response.status_code == 201
    assert response.json["full_name"] == ""


def test_register_trims_and_lower_cases_the_email(client, database_url):
    response = register(client, email="  Bob.Smith@Example.COM\t")
    assert response.status_code == 201, response.text
    assert response.json["email"] == "bob.smith@example.com"
    assert db_rows(database_url, "SELECT email FROM users") == [("bob.smith@example.com",)]
    # and the account signs in with any spelling of the address
    login(client, " BOB.smith@example.com ", "password123")


@pytest.mark.parametrize(
    "spelling", ["taken@example.com", "TAKEN@Example.com", " taken@example.com "]
)
def test_register_with_an_email_already_taken_in_any_case_returns_409(
    client, database_url, make_user, spelling
):
    make_user(email="taken@example.com")
    before = db_state(database_url)
    assert_problem(register(client, email=spelling), 409, "email_taken")
    assert db_state(database_url) == before


def test_register_ignores_role_is_active_and_other_fields_the_caller_may_not_set(
    client, database_url
):
    response = register(
        client,
        email="sneaky@example.com",
        role="ADMIN",
        is_active=False,
        id=999,
        password_hash="$2b$04$abcdefghijklmnopqrstuv",
        created_at="2000-01-01T00:00:00Z",
    )
    assert response.status_code == 201, response.text
    assert response.json["role"] == "CUSTOMER"
    assert response.json["is_active"] is True
    assert response.json["id"] != 999
    assert db_rows(database_url, "SELECT role, is_active FROM users") == [("CUSTOMER", True)]
    login(client, "sneaky@example.com", "password123")


def test_register_accepts_an_email_of_254_characters(client):
    email = "a" * (254 - len("@example.com")) + "@example.com"
    response = register(client, email=email)
    assert response.status_code == 201, response.text
    assert response.json["email"] == email


def test_register_accepts_a_full_name_of_200_characters(client):
    response = register(client, full_name="n" * 200)
    assert response.status_code == 201
    assert response.json["full_name"] == "n" * 200


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"email": "no-at-sign.example.com"}, id="email-without-at"),
        pytest.param({"email": "two@at@example.com"}, id="email-with-two-at"),
        pytest.param({"email": "@example.com"}, id="email-without-local-part"),
        pytest.param({"email": "someone@"}, id="email-without-domain"),
        pytest.param({"email": "some one@example.com"}, id="email-with-inner-space"),
        pytest.param(
            {"email": "a" * (255 - len("@example.com")) + "@example.com"},
            id="email-of-255-characters",
        ),
        pytest.param({"email": "nul\x00@example.com"}, id="email-with-nul"),
        pytest.param({"email": "\u00a0@example.com"}, id="email-whose-local-part-is-a-blank"),
        pytest.param({"email": ""}, id="empty-email"),
        pytest.param({"email": 42}, id="email-not-a-string"),
        pytest.param({"email": None}, id="email-null"),
        pytest.param({"full_name": "n" * 201}, id="full-name-of-201-characters"),
        pytest.param({"full_name": "Nul\x00Name"}, id="full-name-with-nul"),
        pytest.param({"full_name": None}, id="full-name-null"),
        pytest.param({"password": "s3cr3t!"}, id="password-of-7-characters"),
        pytest.param({"password": "p" * 129}, id="password-of-129-characters"),
        pytest.param({"password": "passw\x00rd123"}, id="password-with-nul"),
        pytest.param({"password": 12345678}, id="password-not-a-string"),
    ],
)
def test_register_with_an_invalid_field_returns_422_and_writes_nothing(client, database_url, body):
    before = db_state(database_url)
    problem = assert_problem(register(client, **body), 422, "validation_error")
    assert problem["errors"] and problem["errors"][0]["field"] == next(iter(body))
    assert db_state(database_url) == before


@pytest.mark.parametrize("missing", ["email", "password"])
def test_register_without_a_required_field_returns_422(client, database_url, missing):
    body = {"email": "x@example.com", "password": "password123"}
    del body[missing]
    response = client.simulate_post("/api/auth/register", json=body)
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["field"] == missing
    assert db_state(database_url) == ([], [])


def test_register_with_an_email_that_grows_past_254_characters_when_lower_cased_returns_422(
    client, database_url
):
    # "İ" (1 code point) lower-cases to "i̇" (2 code points): the stored value must still fit
    email = "İ" * 200 + "@example.com"
    assert len(email) <= 254 < len(email.lower())
    assert_problem(register(client, email=email), 422, "validation_error")
    assert db_state(database_url) == ([], [])


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"email": "x@example.com", "password": ', id="malformed"),
        pytest.param(b'["x@example.com", "password123"]', id="array"),
        pytest.param(b'"x@example.com"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"", id="empty"),
        pytest.param(b"   \n", id="blank"),
        pytest.param(
            b'{"email": "\\ud800@example.com", "password": "password123"}', id="lone-surrogate"
        ),
    ],
)
def test_register_with_a_body_that_is_not_a_json_object_returns_400(client, database_url, raw):
    response = client.simulate_post(
        "/api/auth/register", body=raw, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "invalid_json")
    assert db_state(database_url) == ([], [])


def test_register_with_a_body_of_exactly_one_mebibyte_is_accepted(client):
    head = b'{"email": "big@example.com", "password": "password123", "pad": "'
    raw = head + b"x" * ((1 << 20) - len(head) - 2) + b'"}'
    assert len(raw) == 1 << 20
    response = client.simulate_post(
        "/api/auth/register", body=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text


def test_register_with_a_body_over_one_mebibyte_returns_413(client, database_url):
    raw = b'{"email": "big@example.com", "password": "password123", "pad": "' + b"x" * (1 << 20)
    raw += b'"}'
    response = client.simulate_post(
        "/api/auth/register", body=raw, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 413, "payload_too_large")
    assert db_state(database_url) == ([], [])


# ------------------------------------------------------------------ login


def test_login_returns_a_bearer_token_pair(client, app, make_user):
    user = make_user()
    response = client.simulate_post(
        "/api/auth/login", json={"email": user.email, "password": user.password}
    )
    assert response.status_code == 200, response.text
    body = response.json
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == app.ctx.settings.access_token_ttl == 900
    assert body["access_token"] != body["refresh_token"]
    mine = me(client, body["access_token"])
    assert mine.status_code == 200
    assert mine.json["id"] == user.id


def test_login_stores_only_a_digest_of_the_refresh_token(client, database_url, make_user):
    user = make_user()
    pair = login(client, user.email, user.password)
    rows = db_rows(database_url, "SELECT user_id, token_hash, revoked_at FROM refresh_tokens")
    assert len(rows) == 1
    user_id, token_hash, revoked_at = rows[0]
    assert user_id == user.id and revoked_at is None
    assert bytes(token_hash) != pair["refresh_token"].encode()
    assert len(bytes(token_hash)) == 32


def test_login_with_unknown_email_or_wrong_password_gives_the_same_401(
    client, database_url, make_user
):
    user = make_user()
    before = db_state(database_url)
    unknown = client.simulate_post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": user.password}
    )
    wrong = client.simulate_post(
        "/api/auth/login", json={"email": user.email, "password": "wrong-password"}
    )
    assert_problem(unknown, 401, "invalid_credentials")
    assert_problem(wrong, 401, "invalid_credentials")
    assert unknown.content == wrong.content
    assert unknown.headers.get("www-authenticate") == wrong.headers.get("www-authenticate")
    assert db_state(database_url) == before


def test_login_of_a_deactivated_user_returns_401_invalid_credentials(
    client, database_url, make_user
):
    user = make_user(is_active=False)
    before = db_state(database_url)
    response = client.simulate_post(
        "/api/auth/login", json={"email": user.email, "password": user.password}
    )
    assert_problem(response, 401, "invalid_credentials")
    assert db_state(database_url) == before


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"email": "x@example.com"}, id="no-password"),
        pytest.param({"password": "password123"}, id="no-email"),
        pytest.param({"email": 1, "password": "password123"}, id="email-not-a-string"),
        pytest.param(
            {"email": "nul\x00@example.com", "password": "password123"}, id="email-with-nul"
        ),
    ],
)
def test_login_with_an_invalid_body_returns_422(client, database_url, make_user, body):
    make_user(email="x@example.com")
    before = db_state(database_url)
    assert_problem(client.simulate_post("/api/auth/login", json=body), 422, "validation_error")
    assert db_state(database_url) == before


def test_login_with_a_json_array_returns_400(client):
    response = client.simulate_post("/api/auth/login", json=["x@example.com", "password123"])
    assert_problem(response, 400, "invalid_json")


# ------------------------------------------------------------------ refresh rotation


def test_refresh_returns_a_new_pair_and_revokes_the_used_token(client, database_url, make_user):
    user = make_user()
    first = login(client, user.email, user.password)
    response = refresh(client, first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json
    assert second["token_type"] == "Bearer" and second["expires_in"] == 900
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert me(client, second["access_token"]).status_code == 200
    # one family, two links, the first revoked
    rows = db_rows(
        database_url, "SELECT family_id, revoked_at IS NOT NULL FROM refresh_tokens ORDER BY id"
    )
    assert [revoked for _, revoked in rows] == [True, False]
    assert rows[0][0] == rows[1][0]
    assert refresh(client, second["refresh_token"]).status_code == 200


def test_reusing_a_rotated_refresh_token_revokes_that_login_but_not_the_others(client, make_user):
    user = make_user()
    phone = login(client, user.email, user.password)
    laptop = login(client, user.email, user.password)
    rotated = refresh(client, phone["refresh_token"]).json
    newest = refresh(client, rotated["refresh_token"]).json

    # the stolen first token comes back: refused, and the whole phone chain dies with it
    assert_problem(refresh(client, phone["refresh_token"]), 401, "not_authenticated")
    assert_problem(refresh(client, newest["refresh_token"]), 401, "not_authenticated")
    # the other login of the same user is untouched
    response = refresh(client, laptop["refresh_token"])
    assert response.status_code == 200, response.text
    assert refresh(client, response.json["refresh_token"]).status_code == 200


def test_concurrent_refreshes_of_one_token_never_fork_the_login(client, database_url, make_user):
    user = make_user()
    pair = login(client, user.email, user.password)

    statuses = together(6, lambda _: refresh(client, pair["refresh_token"]).status_code)
    assert sorted(statuses) == [200] + [401] * 5
    # the losers presented a token already rotated: reuse, so the whole login is gone
    live = db_rows(database_url, "SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL")
    assert live == [(0,)]


def test_refresh_with_an_unknown_but_well_signed_token_returns_401(client, app, make_user):
    import uuid

    user = make_user()
    token, _ = app.ctx.tokens.issue_refresh(user.id, uuid.uuid4())
    assert_problem(refresh(client, token), 401, "not_authenticated")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="missing"),
        pytest.param({"refresh_token": ""}, id="empty"),
        pytest.param({"refresh_token": 5}, id="not-a-string"),
        pytest.param({"refresh_token": "x" * 4097}, id="too-long"),
    ],
)
def test_refresh_with_an_invalid_body_returns_422(client, body):
    response = client.simulate_post("/api/auth/refresh", json=body)
    assert_problem(response, 422, "validation_error")


def test_refresh_with_garbage_returns_401(client, database_url, make_user):
    user = make_user()
    login(client, user.email, user.password)
    before = db_state(database_url)
    assert_problem(refresh(client, "not.a.jwt"), 401, "not_authenticated")
    assert db_state(database_url) == before


# ------------------------------------------------------------------ logout


def test_logout_revokes_that_refresh_token_only(client, make_user):
    user = make_user()
    one = login(client, user.email, user.password)
    other = login(client, user.email, user.password)
    response = client.simulate_post(
        "/api/auth/logout", json={"refresh_token": one["refresh_token"]}
    )
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(refresh(client, one["refresh_token"]), 401, "not_authenticated")
    assert refresh(client, other["refresh_token"]).status_code == 200


def test_logout_twice_is_204_both_times(client, make_user):
    user = make_user()
    pair = login(client, user.email, user.password)
    body = {"refresh_token": pair["refresh_token"]}
    assert client.simulate_post("/api/auth/logout", json=body).status_code == 204
    assert client.simulate_post("/api/auth/logout", json=body).status_code == 204


def test_logout_with_an_access_token_or_garbage_returns_401(client, database_url, make_user):
    user = make_user()
    pair = login(client, user.email, user.password)
    before = db_state(database_url)
    for token in (pair["access_token"], "garbage"):
        response = client.simulate_post("/api/auth/logout", json={"refresh_token": token})
        assert_problem(response, 401, "not_authenticated")
    assert db_state(database_url) == before


def test_logout_all_revokes_every_refresh_token_of_the_caller_only(client, database_url, make_user):
    user = make_user()
    someone = make_user()
    pairs = [login(client, user.email, user.password) for _ in range(3)]
    theirs = login(client, someone.email, someone.password)
    response = client.simulate_post(
        "/api/auth/logout-all", headers=bearer(pairs[0]["access_token"])
    )
    assert response.status_code == 204
    assert response.content == b""
    for pair in pairs:
        assert_problem(refresh(client, pair["refresh_token"]), 401, "not_authenticated")
    assert refresh(client, theirs["refresh_token"]).status_code == 200
    live = db_rows(
        database_url,
        "SELECT count(*) FROM refresh_tokens WHERE user_id = %s AND revoked_at IS NULL",
        (user.id,),
    )
    assert live == [(0,)]


def test_logout_all_without_a_token_returns_401(client, database_url, make_user):
    user = make_user()
    login(client, user.email, user.password)
    before = db_state(database_url)
    assert_problem(client.simulate_post("/api/auth/logout-all"), 401, "not_authenticated")
    assert db_state(database_url) == before


# ------------------------------------------------------------------ me


def test_me_returns_the_callers_user(client, make_user):
    user = make_user("EDITOR", full_name="Eddie")
    response = client.simulate_get("/api/auth/me", headers=user.headers)
    assert response.status_code == 200
    assert set(response.json) == USER_FIELDS
    assert response.json["id"] == user.id
    assert response.json["role"] == "EDITOR"
    assert response.json["full_name"] == "Eddie"


def test_me_without_a_token_returns_401_with_www_authenticate(client):
    response = client.simulate_get("/api/auth/me")
    assert_problem(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == "Bearer"


# ------------------------------------------------------------------ who may call what


ALL_ROUTES = [
    ("POST", "/api/auth/logout-all"),
    ("GET", "/api/auth/me"),
    ("GET", "/api/users"),
    ("GET", "/api/users/{other}"),
    ("PUT", "/api/users/{other}"),
    ("PATCH", "/api/users/{other}"),
    ("DELETE", "/api/users/{other}"),
]
ADMIN_ONLY_FOR_A_CUSTOMER = [
    ("GET", "/api/users"),
    ("GET", "/api/users/{other}"),
    ("PUT", "/api/users/{other}"),
    ("PATCH", "/api/users/{other}"),
    ("DELETE", "/api/users/{other}"),
    ("DELETE", "/api/users/{self}"),
]


@pytest.mark.parametrize(("method", "path"), ALL_ROUTES)
def test_every_protected_route_without_a_token_returns_401(
    client, database_url, make_user, method, path
):
    other = make_user()
    before = db_state(database_url)
    response = client.simulate_request(
        method, path.format(other=other.id), json={"full_name": "Hacked"}
    )
    assert_problem(response, 401, "not_authenticated")
    assert db_state(database_url) == before


@pytest.mark.parametrize(("method", "path"), ADMIN_ONLY_FOR_A_CUSTOMER)
@pytest.mark.parametrize("role", ["CUSTOMER", "EDITOR"])
def test_admin_routes_with_a_customer_or_editor_token_return_403(
    client, database_url, make_user, method, path, role
):
    caller = make_user(role)
    other = make_user()
    before = db_state(database_url)
    response = client.simulate_request(
        method,
        path.format(other=other.id, self=caller.id),
        headers=caller.headers,
        json={"full_name": "Hacked"},
    )
    assert_problem(response, 403, "forbidden")
    assert db_state(database_url) == before


# ------------------------------------------------------------------ request ids


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/api/auth/register", {"email": "r@example.com", "password": "password123"}, 201),
        ("POST", "/api/auth/register", {"email": "rid"}, 422),
        ("POST", "/api/auth/login", {"email": "no@example.com", "password": "password123"}, 401),
        ("GET", "/api/auth/me", None, 401),
        ("GET", "/api/users", None, 401),
        ("GET", "/api/users", "customer", 403),
        ("GET", "/api/auth/me", "customer", 200),
        ("POST", "/api/auth/logout-all", "customer", 204),
        ("DELETE", "/api/users/abc", "customer", 403),
    ],
)
def test_auth_and_users_answers_echo_the_request_id(client, customer, method, path, body, status):
    headers = {"X-Request-ID": "req-abc.123"}
    if body == "customer":
        headers.update(customer.headers)
        body = None
    response = client.simulate_request(method, path, json=body, headers=headers)
    assert response.status_code == status
    assert response.headers["x-request-id"] == "req-abc.123"


def test_an_answer_without_a_request_id_gets_a_generated_one(client, customer):
    first = client.simulate_get("/api/auth/me", headers=customer.headers)
    second = client.simulate_get("/api/auth/me", headers=customer.headers)
    assert first.headers["x-request-id"] and second.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
