"""Passwords: 8-128 code points of any script (bcrypt behind a pre-hash), no enumeration by
timing at login, and password changes by the user themself (with current_password) or an admin."""

from __future__ import annotations

import bcrypt
import pytest

from shopapi.security import check_password, hash_password
from tests.conftest import assert_problem, db_rows
from tests.helpers import db_state, login, me, refresh, register


@pytest.mark.parametrize(
    "password",
    [
        pytest.param("p" * 8, id="8-ascii"),
        pytest.param("p" * 128, id="128-ascii"),
        pytest.param("é" * 128, id="128-two-byte"),  # 256 bytes: bcrypt alone refuses > 72
        pytest.param("😀" * 128, id="128-four-byte"),  # 512 bytes
        pytest.param("密码" * 4, id="8-cjk"),
        pytest.param("        ", id="8-spaces"),
    ],
)
def test_register_and_login_work_with_any_password_of_8_to_128_characters(client, password):
    response = register(client, email="pw@example.com", password=password)
    assert response.status_code == 201, response.text
    pair = login(client, "pw@example.com", password)
    assert me(client, pair["access_token"]).status_code == 200


def test_passwords_sharing_the_first_72_bytes_are_different_passwords(client):
    # plain bcrypt would have compared only the first 72 bytes
    stem = "a" * 72
    assert register(client, email="long@example.com", password=stem + "X").status_code == 201
    response = client.simulate_post(
        "/api/auth/login", json={"email": "long@example.com", "password": stem + "Y"}
    )
    assert_problem(response, 401, "invalid_credentials")


@pytest.mark.parametrize(
    "password",
    [pytest.param("é" * 7, id="7-two-byte-is-14-bytes"), pytest.param("😀" * 129, id="129-emoji")],
)
def test_password_length_counts_characters_not_bytes(client, database_url, password):
    assert_problem(register(client, password=password), 422, "validation_error")
    assert db_state(database_url) == ([], [])


def test_stored_hash_is_bcrypt_with_the_configured_cost(client, database_url):
    register(client, email="cost@example.com", password="password123")
    [(stored,)] = db_rows(database_url, "SELECT password_hash FROM users")
    assert stored.startswith("$2b$04$")
    assert check_password("password123", stored)
    assert not check_password("password124", stored)


def test_check_password_is_false_for_a_corrupt_hash():
    assert check_password("password123", "not-a-bcrypt-hash") is False
    assert check_password("password123", hash_password("password123", 4)) is True


# ------------------------------------------------------------------ no user enumeration by timing


@pytest.fixture()
def checkpw_calls(monkeypatch):
    """Spy on bcrypt.checkpw: records the hash each call checked, still runs the real thing."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    return calls


@pytest.mark.parametrize("case", ["unknown-email", "wrong-password", "deactivated"])
def test_every_failed_login_path_runs_one_bcrypt_check_of_the_same_cost(
    client, make_user, checkpw_calls, case
):
    make_user(email="known@example.com")
    make_user(email="off@example.com", is_active=False)
    email, password = {
        "unknown-email": ("unknown@example.com", "password123"),
        "wrong-password": ("known@example.com", "wrong-password"),
        "deactivated": ("off@example.com", "password123"),
    }[case]
    response = client.simulate_post("/api/auth/login", json={"email": email, "password": password})
    assert_problem(response, 401, "invalid_credentials")
    assert len(checkpw_calls) == 1
    assert checkpw_calls[0].startswith(b"$2b$04$")  # BCRYPT_ROUNDS=4, the cost real hashes have


def test_a_successful_login_runs_one_bcrypt_check(client, make_user, checkpw_calls):
    user = make_user()
    login(client, user.email, user.password)
    assert len(checkpw_calls) == 1


# ------------------------------------------------------------------ changing a password


def test_a_user_changes_their_password_with_the_current_one(client, database_url, make_user):
    user = make_user()
    pair = login(client, user.email, user.password)
    response = client.simulate_patch(
        f"/api/users/{user.id}",
        json={"password": "brand-new-pass", "current_password": user.password},
        headers=user.headers,
    )
    assert response.status_code == 200, response.text
    assert "password" not in response.text
    assert_problem(
        client.simulate_post(
            "/api/auth/login", json={"email": user.email, "password": user.password}
        ),
        401,
        "invalid_credentials",
    )
    login(client, user.email, "brand-new-pass")
    # every earlier login has to start again
    assert_problem(refresh(client, pair["refresh_token"]), 401, "not_authenticated")


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="missing"),
        pytest.param({"current_password": "wrong-password"}, id="wrong"),
    ],
)
def test_a_self_password_change_without_the_right_current_password_returns_422(
    client, database_url, make_user, extra
):
    user = make_user()
    pair = login(client, user.email, user.password)
    before = db_state(database_url)
    response = client.simulate_put(
        f"/api/users/{user.id}",
        json={"password": "brand-new-pass", "full_name": "X", **extra},
        headers=user.headers,
    )
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["field"] == "current_password"
    assert db_state(database_url) == before
    assert refresh(client, pair["refresh_token"]).status_code == 200


def test_an_admin_changing_their_own_password_also_needs_the_current_one(
    client, database_url, admin
):
    before = db_state(database_url)
    response = client.simulate_put(
        f"/api/users/{admin.id}", json={"password": "brand-new-pass"}, headers=admin.headers
    )
    assert_problem(response, 422, "validation_error")
    assert db_state(database_url) == before


def test_an_admin_resets_another_users_password_without_the_current_one(client, admin, make_user):
    user = make_user()
    pair = login(client, user.email, user.password)
    response = client.simulate_put(
        f"/api/users/{user.id}", json={"password": "reset-by-admin"}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    login(client, user.email, "reset-by-admin")
    assert_problem(refresh(client, pair["refresh_token"]), 401, "not_authenticated")


@pytest.mark.parametrize("password", ["short", "p" * 129, None, "passw\x00rd123"])
def test_a_password_change_to_an_invalid_password_returns_422(
    client, database_url, make_user, password
):
    user = make_user()
    before = db_state(database_url)
    response = client.simulate_patch(
        f"/api/users/{user.id}",
        json={"password": password, "current_password": user.password},
        headers=user.headers,
    )
    assert_problem(response, 422, "validation_error")
    assert db_state(database_url) == before


def test_a_long_multibyte_password_can_be_set_by_a_password_change(client, make_user):
    user = make_user()
    response = client.simulate_patch(
        f"/api/users/{user.id}",
        json={"password": "é" * 128, "current_password": user.password},
        headers=user.headers,
    )
    assert response.status_code == 200, response.text
    login(client, user.email, "é" * 128)
