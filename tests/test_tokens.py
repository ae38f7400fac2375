"""Access and refresh tokens: HS256 claims, and every forged, expired or misused token is a 401."""

from __future__ import annotations

import base64
import json
import time
import warnings

import jwt
import pytest

from shopapi.app import create_app
from shopapi.security import AUDIENCE, ISSUER
from tests.conftest import TEST_SECRET, assert_problem, make_settings
from tests.helpers import bearer, db_state, login, me, refresh

PROTECTED = ["/api/auth/me", "/api/users"]


def _b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(user_id: int, **overrides) -> dict:
    """Valid claims of a CUSTOMER's access token; an override of None drops that claim.

    The forgeries below carry the victim's real role, so only the forged part can refuse them.
    """
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "role": "CUSTOMER",
        "type": "access",
        "iat": now,
        "exp": now + 600,
        "jti": "0" * 32,
        "iss": ISSUER,
        "aud": AUDIENCE,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(claims: dict, key: str = TEST_SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        # HS512 with our 56-byte test key: PyJWT's advice does not matter for a forgery
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, key, algorithm=algorithm)


def _arabic_indic(number: int) -> str:
    return str(number).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))


def _decode(token: str) -> dict:
    """A token's claims, checked as the app checks them (key, issuer and audience)."""
    return jwt.decode(token, TEST_SECRET, algorithms=["HS256"], issuer=ISSUER, audience=AUDIENCE)


def _tampered(token: str, **changes) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{header}.{_b64(claims)}.{signature}"


# ------------------------------------------------------------------ what a token holds


def test_access_token_is_hs256_with_the_contract_claims(client, make_user):
    user = make_user("EDITOR")
    pair = login(client, user.email, user.password)
    token = pair["access_token"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = _decode(token)
    assert set(claims) >= {"exp", "iat", "sub", "role", "type", "jti", "iss", "aud"}
    assert (claims["iss"], claims["aud"]) == ("shopapi", "shopapi-api")
    assert claims["sub"] == str(user.id) and isinstance(claims["sub"], str)
    assert claims["role"] == "EDITOR"
    assert claims["type"] == "access"
    assert claims["exp"] - claims["iat"] == 900
    assert abs(claims["iat"] - time.time()) < 5
    again = _decode(login(client, user.email, user.password)["access_token"])
    assert again["jti"] != claims["jti"]


def test_refresh_token_is_a_refresh_type_token_with_the_refresh_lifetime(client, make_user):
    user = make_user()
    claims = _decode(login(client, user.email, user.password)["refresh_token"])
    assert claims["type"] == "refresh"
    assert (claims["iss"], claims["aud"]) == ("shopapi", "shopapi-api")
    assert claims["sub"] == str(user.id)
    assert claims["exp"] - claims["iat"] == 2592000


def test_token_lifetimes_and_expires_in_follow_the_settings(
    async_redis, database_url, pool, redis_client, make_user
):
    from falcon import testing

    settings = make_settings(database_url, ACCESS_TOKEN_TTL=60, REFRESH_TOKEN_TTL=3600)
    client = testing.TestClient(create_app(settings, pool=pool, redis=async_redis))
    user = make_user()
    pair = login(client, user.email, user.password)
    assert pair["expires_in"] == 60
    access = _decode(pair["access_token"])
    refresh_claims = _decode(pair["refresh_token"])
    assert access["exp"] - access["iat"] == 60
    assert refresh_claims["exp"] - refresh_claims["iat"] == 3600


# ------------------------------------------------------------------ forged and misused tokens


def _forged_tokens(user_id: int, real_access: str, real_refresh: str) -> dict[str, str]:
    none_token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(user_id))}."
    return {
        "alg-none": none_token,
        "alg-none-with-signature": none_token + real_access.rsplit(".", 1)[1],
        "other-key": _signed(_claims(user_id), key="another-secret-key-of-sufficient-length-42"),
        "hs512-same-key": _signed(_claims(user_id), algorithm="HS512"),
        "role-tampered-to-admin": _tampered(real_access, role="ADMIN"),
        "sub-tampered": _tampered(real_access, sub=str(user_id + 1)),
        "expired": _signed(_claims(user_id, iat=int(time.time()) - 120, exp=int(time.time()) - 60)),
        "missing-exp": _signed(_claims(user_id, exp=None)),
        "missing-type": _signed(_claims(user_id, type=None)),
        "missing-jti": _signed(_claims(user_id, jti=None)),
        "missing-role": _signed(_claims(user_id, role=None)),
        "unknown-role": _signed(_claims(user_id, role="ROOT")),
        "integer-sub": _signed(_claims(user_id, sub=user_id)),
        "non-numeric-sub": _signed(_claims(user_id, sub="me")),
        "huge-sub": _signed(_claims(user_id, sub="9" * 30)),
        "superscript-digit-sub": _signed(_claims(user_id, sub="²")),
        # the user's own id in Arabic-Indic digits: int() reads it as that id
        "arabic-indic-digit-sub": _signed(_claims(user_id, sub=_arabic_indic(user_id))),
        "missing-iss": _signed(_claims(user_id, iss=None)),
        "missing-aud": _signed(_claims(user_id, aud=None)),
        "other-iss": _signed(_claims(user_id, iss="another-service")),
        "other-aud": _signed(_claims(user_id, aud="another-api")),
        "unknown-user": _signed(_claims(user_id + 1000)),
        "refresh-as-access": real_refresh,
        "garbage": "garbage",
        "three-garbage-parts": "a.b.c",
        "truncated": real_access[:-5],
    }


FORGERIES = [
    "alg-none",
    "alg-none-with-signature",
    "other-key",
    "hs512-same-key",
    "role-tampered-to-admin",
    "sub-tampered",
    "expired",
    "missing-exp",
    "missing-type",
    "missing-jti",
    "missing-role",
    "unknown-role",
    "integer-sub",
    "non-numeric-sub",
    "huge-sub",
    "superscript-digit-sub",
    "arabic-indic-digit-sub",
    "missing-iss",
    "missing-aud",
    "other-iss",
    "other-aud",
    "unknown-user",
    "refresh-as-access",
    "garbage",
    "three-garbage-parts",
    "truncated",
]


@pytest.mark.parametrize("kind", FORGERIES)
def test_a_forged_expired_or_misused_token_on_a_protected_route_returns_401(
    client, make_user, kind
):
    user = make_user("CUSTOMER")
    make_user("CUSTOMER")  # a real neighbour for the sub-tampered token to point at
    pair = login(client, user.email, user.password)
    token = _forged_tokens(user.id, pair["access_token"], pair["refresh_token"])[kind]
    for path in PROTECTED:
        response = client.simulate_get(path, headers=bearer(token))
        assert_problem(response, 401, "not_authenticated")
        assert response.headers["www-authenticate"] == "Bearer"


def test_the_same_claims_signed_with_the_real_key_are_accepted(client, make_user):
    """Control for the forgeries above: only the forged part makes them fail."""
    user = make_user("CUSTOMER")
    mine = me(client, _signed(_claims(user.id)))
    assert mine.status_code == 200 and mine.json["id"] == user.id
    # a CUSTOMER's valid token on the admin list is a 403, so the 401s above are not role checks
    listing = client.simulate_get("/api/users", headers=bearer(_signed(_claims(user.id))))
    assert_problem(listing, 403, "forbidden")


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Bearer    ", "Basic dXNlcjpwYXNz", "Token abc", "bearer-abc", "abc"],
)
def test_a_malformed_authorization_header_returns_401(client, customer, header):
    response = client.simulate_get("/api/auth/me", headers={"Authorization": header})
    assert_problem(response, 401, "not_authenticated")


def test_the_bearer_scheme_is_case_insensitive(client, customer):
    response = client.simulate_get(
        "/api/auth/me", headers={"Authorization": f"bearer {customer.token}"}
    )
    assert response.status_code == 200


def test_a_bad_token_on_a_public_route_is_ignored(client, database_url):
    response = client.simulate_post(
        "/api/auth/register",
        json={"email": "pub@example.com", "password": "password123"},
        headers={"Authorization": "Bearer garbage"},
    )
    assert response.status_code == 201


def test_an_access_token_at_refresh_returns_401_and_revokes_nothing(
    client, database_url, make_user
):
    user = make_user()
    pair = login(client, user.email, user.password)
    before = db_state(database_url)
    assert_problem(refresh(client, pair["access_token"]), 401, "not_authenticated")
    assert db_state(database_url) == before
    assert refresh(client, pair["refresh_token"]).status_code == 200


@pytest.mark.parametrize("sub", ["²", "arabic-indic own id"])
def test_a_refresh_token_whose_sub_is_not_ascii_digits_returns_401(
    client, database_url, make_user, sub
):
    """Validly signed (so only the server's own bug could mint it): `str.isdigit()` accepted
    these, and int() then failed (a 500) or read another spelling of an id."""
    user = make_user()
    pair = login(client, user.email, user.password)
    claims = _decode(pair["refresh_token"])
    claims["sub"] = _arabic_indic(user.id) if sub != "²" else sub
    before = db_state(database_url)
    assert_problem(refresh(client, _signed(claims)), 401, "not_authenticated")
    assert db_state(database_url) == before
    assert refresh(client, pair["refresh_token"]).status_code == 200


@pytest.mark.parametrize("kind", ["expired", "other-key", "alg-none", "type-tampered"])
def test_a_forged_or_expired_refresh_token_at_refresh_returns_401(
    client, database_url, make_user, kind
):
    user = make_user()
    pair = login(client, user.email, user.password)
    claims = _decode(pair["refresh_token"])
    token = {
        "expired": _signed({**claims, "iat": claims["iat"] - 100, "exp": int(time.time()) - 60}),
        "other-key": _signed(claims, key="another-secret-key-of-sufficient-length-42"),
        "alg-none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "type-tampered": _tampered(pair["access_token"], type="refresh"),
    }[kind]
    before = db_state(database_url)
    assert_problem(refresh(client, token), 401, "not_authenticated")
    assert db_state(database_url) == before


def test_an_access_token_stops_working_when_it_expires_even_after_being_verified(
    async_redis, database_url, pool, redis_client, make_user
):
    from falcon import testing

    # no clock-skew leeway here (JWT_LEEWAY, tested in tests/security/test_api2_authentication.py)
    settings = make_settings(database_url, ACCESS_TOKEN_TTL=1, JWT_LEEWAY=0)
    client = testing.TestClient(create_app(settings, pool=pool, redis=async_redis))
    user = make_user()
    token = login(client, user.email, user.password)["access_token"]
    exp = _decode(token)["exp"]
    assert me(client, token).status_code == 200
    time.sleep(max(0.0, exp - time.time()) + 0.05)
    assert_problem(me(client, token), 401, "not_authenticated")


# ------------------------------------------------------------ revocation reaches access tokens


def test_deactivating_a_user_stops_their_access_and_refresh_tokens_at_once(
    client, database_url, admin, make_user
):
    user = make_user()
    pair = login(client, user.email, user.password)
    assert me(client, pair["access_token"]).status_code == 200
    response = client.simulate_put(
        f"/api/users/{user.id}", json={"is_active": False}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    assert response.json["is_active"] is False
    assert_problem(me(client, pair["access_token"]), 401, "not_authenticated")
    assert_problem(refresh(client, pair["refresh_token"]), 401, "not_authenticated")
    # reactivating brings neither token back (deactivation started a new token generation),
    # and a fresh login works
    client.simulate_put(f"/api/users/{user.id}", json={"is_active": True}, headers=admin.headers)
    assert_problem(refresh(client, pair["refresh_token"]), 401, "not_authenticated")
    assert_problem(me(client, pair["access_token"]), 401, "not_authenticated")
    fresh = login(client, user.email, user.password)
    assert me(client, fresh["access_token"]).status_code == 200


def test_deleting_a_user_stops_their_access_and_refresh_tokens_at_once(
    client, database_url, admin, make_user
):
    user = make_user()
    pair = login(client, user.email, user.password)
    assert client.simulate_delete(f"/api/users/{user.id}", headers=admin.headers).status_code == 204
    assert_problem(me(client, pair["access_token"]), 401, "not_authenticated")
    assert_problem(refresh(client, pair["refresh_token"]), 401, "not_authenticated")


def test_a_role_change_revokes_refresh_tokens_and_the_old_access_token(client, admin, make_user):
    user = make_user("CUSTOMER")
    pair = login(client, user.email, user.password)
    response = client.simulate_patch(
        f"/api/users/{user.id}", json={"role": "EDITOR"}, headers=admin.headers
    )
    assert response.status_code == 200 and response.json["role"] == "EDITOR"
    assert_problem(me(client, pair["access_token"]), 401, "not_authenticated")
    assert_problem(refresh(client, pair["refresh_token"]), 401, "not_authenticated")
    # a fresh login carries the new role
    fresh = login(client, user.email, user.password)
    mine = me(client, fresh["access_token"])
    assert mine.json["role"] == "EDITOR"
    assert _decode(fresh["access_token"])["role"] == "EDITOR"


def test_an_admin_edit_that_keeps_the_role_leaves_tokens_alone(client, admin, make_user):
    user = make_user("CUSTOMER")
    pair = login(client, user.email, user.password)
    response = client.simulate_patch(
        f"/api/users/{user.id}",
        json={"role": "CUSTOMER", "full_name": "Renamed"},
        headers=admin.headers,
    )
    assert response.status_code == 200
    assert me(client, pair["access_token"]).status_code == 200
    assert refresh(client, pair["refresh_token"]).status_code == 200
