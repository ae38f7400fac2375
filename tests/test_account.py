"""Account lifecycle on real PostgreSQL, Redis and SMTP (aiosmtpd): password reset, email
verification, sessions, access tokens that end with the password, account deletion."""

from __future__ import annotations

import re
import statistics
import time

from shopapi.security import account_token
from shopapi.services import notifications
from tests.conftest import TEST_SECRET, assert_problem, db_rows
from tests.helpers import bearer, login, me, place, refresh, register

RESET = "/api/auth/password-reset"
CONFIRM = "/api/auth/password-reset/confirm"
VERIFY = "/api/auth/verify-email"
RESEND = "/api/auth/verify-email/resend"
SESSIONS = "/api/auth/sessions"
DELETE = "/api/auth/delete-account"


# ------------------------------------------------------------------ helpers


def issued(database_url, email: str, purpose: str) -> list[dict]:
    """The user's live tokens of `purpose`, newest first, each with the token its email
    carries (derived from the stored nonce exactly as the worker derives it)."""
    rows = db_rows(
        database_url,
        "SELECT t.id, t.nonce, t.email FROM account_tokens t JOIN users u ON u.id = t.user_id "
        "WHERE lower(u.email) = lower(%s) AND t.purpose = %s AND t.used_at IS NULL "
        "ORDER BY t.id DESC",
        (email, purpose),
    )
    return [
        {"id": id_, "token": account_token(TEST_SECRET, bytes(nonce)), "email": to}
        for id_, nonce, to in rows
    ]


def reset_token(client, database_url, email: str) -> str:
    assert client.simulate_post(RESET, json={"email": email}).status_code == 202
    return issued(database_url, email, "password_reset")[0]["token"]


def verification_token(database_url, email: str) -> str:
    return issued(database_url, email, "email_verification")[0]["token"]


def confirm(client, token: str, password: str = "brand-new-password"):
    return client.simulate_post(CONFIRM, json={"token": token, "password": password})


def run_email_jobs(database_url, wctx, app_loop) -> list[str | None]:
    """Run every queued send_account_email job's work, as the worker does."""
    ids = [
        row[0]
        for row in db_rows(
            database_url,
            "SELECT (args->>'token_id')::bigint FROM procrastinate_jobs "
            "WHERE task_name = 'send_account_email' ORDER BY id",
        )
    ]
    return [app_loop.run(notifications.send_account_email, wctx, token_id) for token_id in ids]


def body_text(message) -> str:
    return message.get_body(("plain",)).get_content()


# ------------------------------------------------------------------ password reset


def test_the_reset_flow_from_the_email_to_a_login_with_the_new_password(
    client, database_url, make_user, smtp, wctx, app_loop
):
    user = make_user(email="forgetful@example.com")
    old = login(client, user.email, user.password)
    assert client.simulate_post(RESET, json={"email": " Forgetful@Example.com "}).status_code == 202

    assert run_email_jobs(database_url, wctx, app_loop) == ["password_reset"]
    (message,) = smtp.messages
    assert message["To"] == "forgetful@example.com"
    assert message["Subject"] == "Reset your password"
    text = body_text(message)
    token = re.search(r"myshop://reset\?token=([A-Za-z0-9_-]+)", text).group(1)
    assert f"code in the app: {token}" in text
    assert len(token) >= 43  # 256 bits, URL-safe base64
    assert token in message.get_body(("html",)).get_content()

    assert confirm(client, token).status_code == 204
    assert_problem(
        client.simulate_post(
            "/api/auth/login", json={"email": user.email, "password": user.password}
        ),
        401,
        "invalid_credentials",
    )
    fresh = login(client, user.email, "brand-new-password")
    assert me(client, fresh["access_token"]).status_code == 200
    # every token from before the reset is dead at once
    assert_problem(me(client, old["access_token"]), 401, "not_authenticated")
    assert_problem(me(client, user.token), 401, "not_authenticated")
    assert_problem(refresh(client, old["refresh_token"]), 401, "not_authenticated")
    # the job ran once: running it again sends nothing more
    assert run_email_jobs(database_url, wctx, app_loop) == [None]
    assert len(smtp.messages) == 1


def test_reused_expired_forged_and_voided_reset_tokens_are_400(client, database_url, make_user):
    user = make_user()
    first = reset_token(client, database_url, user.email)
    second = reset_token(client, database_url, user.email)  # a newer request voids the first
    assert_problem(confirm(client, first), 400, "invalid_token")
    assert confirm(client, second).status_code == 204
    assert_problem(confirm(client, second, "another-password"), 400, "invalid_token")  # reused
    forged = account_token("not-the-server-key-" * 3, b"\x00" * 32)
    assert_problem(confirm(client, forged), 400, "invalid_token")
    assert_problem(confirm(client, "x"), 400, "invalid_token")

    expired = reset_token(client, database_url, user.email)
    db_rows(
        database_url, "UPDATE account_tokens SET expires_at = now() - interval '1 s' RETURNING 1"
    )
    assert_problem(confirm(client, expired), 400, "invalid_token")
    login(client, user.email, "brand-new-password")  # only the one good token changed it


def test_a_refused_confirmation_writes_nothing(client, database_url, make_user):
    user = make_user()
    before = db_rows(database_url, "SELECT password_hash, token_generation FROM users")
    assert_problem(confirm(client, "forged-token-value-0123456789"), 400, "invalid_token")
    token = reset_token(client, database_url, user.email)
    response = client.simulate_post(CONFIRM, json={"token": token, "password": "short"})
    assert_problem(response, 422, "validation_error")
    assert db_rows(database_url, "SELECT password_hash, token_generation FROM users") == before
    assert confirm(client, token).status_code == 204  # the token survived the refusal


def test_a_deactivated_account_gets_no_reset_email_and_its_token_dies(
    client, database_url, admin, make_user
):
    user = make_user()
    token = reset_token(client, database_url, user.email)
    (before,) = issued(database_url, user.email, "password_reset")
    client.simulate_patch(f"/api/users/{user.id}", json={"is_active": False}, headers=admin.headers)
    assert_problem(confirm(client, token), 400, "invalid_token")
    assert client.simulate_post(RESET, json={"email": user.email}).status_code == 202
    assert issued(database_url, user.email, "password_reset") == [before]  # no new one


def test_nothing_a_leak_could_use_is_stored(client, database_url, make_user):
    user = make_user()
    token = reset_token(client, database_url, user.email)
    dump = db_rows(
        database_url,
        "SELECT (SELECT string_agg(t::text, '') FROM account_tokens t) || "
        "       (SELECT string_agg(j.args::text, '') FROM procrastinate_jobs j)",
    )[0][0]
    assert token not in dump
    assert token.encode().hex() not in dump


def _answer(response) -> tuple:
    """Status, body and headers, minus the ones that differ per request whatever the email.

    RateLimit-Reset counts seconds down on the clock, so two requests a millisecond apart may
    straddle a second: it is compared apart, within one second (see the test).
    """
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() not in ("x-request-id", "date", "ratelimit-reset")
    }
    return response.status_code, response.content, headers


def _reset_seconds(response) -> int:
    return int(response.headers["ratelimit-reset"])


def test_known_and_unknown_emails_get_the_same_answer_in_the_same_time(
    database_url, app_client, make_user
):
    client = app_client(
        RATE_LIMIT_ENABLED="true",
        RATE_LIMIT_DEFAULT="1000/minute",
        RATE_LIMIT_PASSWORD_RESET_IP="1000/hour",
        RATE_LIMIT_PASSWORD_RESET_EMAIL="1000/hour",
    )
    make_user(email="known@example.com")
    timings: dict[str, list[float]] = {"known@example.com": [], "unknown@example.com": []}
    answers: dict[str, list] = {email: [] for email in timings}
    resets: dict[str, list[int]] = {email: [] for email in timings}
    for round_ in range(21):
        for side, email in enumerate(timings):  # interleaved: drift hits both alike
            started = time.perf_counter()
            # each from an address of its own, so the per-IP counters read alike too
            response = client.simulate_post(
                RESET, json={"email": email}, remote_addr=f"10.{side}.{round_}.1"
            )
            elapsed = time.perf_counter() - started
            if round_:  # the first round warms both paths up
                timings[email].append(elapsed)
                answers[email].append(_answer(response))
                resets[email].append(_reset_seconds(response))
    assert answers["known@example.com"] == answers["unknown@example.com"]
    # the same window for both: at most the one clock tick between the two requests of a round
    assert all(
        0 <= known - unknown <= 1
        for known, unknown in zip(resets["known@example.com"], resets["unknown@example.com"])
    ), resets
    status, content, headers = answers["known@example.com"][-1]
    assert (status, content) == (202, b"")
    assert {k.lower(): v for k, v in headers.items()}["ratelimit-remaining"] == str(
        1000 - 21
    )  # the per-email count, alike
    assert len(issued(database_url, "known@example.com", "password_reset")) == 1
    medians = {email: statistics.median(times) for email, times in timings.items()}
    assert abs(medians["known@example.com"] - medians["unknown@example.com"]) < 0.020, medians


# ------------------------------------------------------------------ access tokens end


def test_a_self_password_change_and_an_admin_reset_end_access_tokens_at_once(
    client, admin, make_user
):
    user = make_user()
    pair = login(client, user.email, user.password)
    response = client.simulate_patch(
        f"/api/users/{user.id}",
        json={"password": "changed-by-me-1", "current_password": user.password},
        headers=bearer(pair["access_token"]),
    )
    assert response.status_code == 200, response.text
    assert_problem(me(client, pair["access_token"]), 401, "not_authenticated")
    second = login(client, user.email, "changed-by-me-1")
    client.simulate_patch(
        f"/api/users/{user.id}", json={"password": "changed-by-admin"}, headers=admin.headers
    )
    assert_problem(me(client, second["access_token"]), 401, "not_authenticated")
    assert me(client, admin.token).status_code == 200  # nobody else is touched


def test_logout_all_ends_every_access_token_at_once(client, make_user):
    user = make_user()
    first = login(client, user.email, user.password)
    second = login(client, user.email, user.password)
    assert me(client, second["access_token"]).status_code == 200
    response = client.simulate_post("/api/auth/logout-all", headers=bearer(first["access_token"]))
    assert response.status_code == 204
    for pair in (first, second):
        assert_problem(me(client, pair["access_token"]), 401, "not_authenticated")
        assert_problem(refresh(client, pair["refresh_token"]), 401, "not_authenticated")
    assert me(client, login(client, user.email, user.password)["access_token"]).status_code == 200


# ------------------------------------------------------------------ email verification


def test_registration_sends_a_verification_email_whose_link_verifies(
    client, database_url, smtp, wctx, app_loop
):
    response = register(client, email="New@Example.com", password="password123")
    assert response.status_code == 201
    assert response.json["email_verified"] is False
    assert run_email_jobs(database_url, wctx, app_loop) == ["email_verification"]
    (message,) = smtp.messages
    assert message["To"] == "new@example.com"
    token = re.search(r"https://shop\.example/verify\?token=(\S+)", body_text(message)).group(1)

    response = client.simulate_post(VERIFY, json={"token": token})
    assert response.status_code == 200, response.text
    assert response.json["email_verified"] is True and response.json["email"] == "new@example.com"
    pair = login(client, "new@example.com", "password123")
    assert me(client, pair["access_token"]).json["email_verified"] is True
    assert_problem(client.simulate_post(VERIFY, json={"token": token}), 400, "invalid_token")


def test_an_email_change_unverifies_and_sends_to_the_new_address(client, database_url, make_user):
    user = make_user(email="before@example.com")
    db_rows(database_url, "UPDATE users SET email_verified = true RETURNING 1")
    response = client.simulate_patch(
        f"/api/users/{user.id}",
        json={"email": "after@example.com", "current_password": user.password},
        headers=user.headers,
    )
    assert response.json["email_verified"] is False
    (token,) = issued(database_url, "after@example.com", "email_verification")
    assert token["email"] == "after@example.com"
    old_link = token["token"]
    # changed again before following the link: the first link proves nothing any more
    client.simulate_patch(
        f"/api/users/{user.id}",
        json={"email": "final@example.com", "current_password": user.password},
        headers=user.headers,
    )
    assert_problem(client.simulate_post(VERIFY, json={"token": old_link}), 400, "invalid_token")
    response = client.simulate_post(
        VERIFY, json={"token": verification_token(database_url, "final@example.com")}
    )
    assert response.json == {**response.json, "email": "final@example.com", "email_verified": True}


def test_resend_sends_a_new_link_and_nothing_once_verified(
    client, database_url, make_user, smtp, wctx, app_loop
):
    user = make_user()
    assert client.simulate_post(RESEND, headers=user.headers).status_code == 202
    first = verification_token(database_url, user.email)
    assert client.simulate_post(RESEND, headers=user.headers).status_code == 202
    second = verification_token(database_url, user.email)
    assert first != second
    assert_problem(client.simulate_post(VERIFY, json={"token": first}), 400, "invalid_token")
    assert client.simulate_post(VERIFY, json={"token": second}).status_code == 200
    assert client.simulate_post(RESEND, headers=user.headers).status_code == 202
    assert issued(database_url, user.email, "email_verification") == []
    # of the three queued emails only the live link's would have gone out; it is used now
    assert run_email_jobs(database_url, wctx, app_loop) == [None, None]
    assert smtp.messages == []
    assert_problem(client.simulate_post(RESEND), 401, "not_authenticated")


def test_require_verified_email_gates_order_placement(
    database_url, app_client, make_user, make_product
):
    client = app_client(REQUIRE_VERIFIED_EMAIL="true")
    product = make_product(stock=5)
    user = make_user()
    client.simulate_post(RESEND, headers=user.headers)
    assert_problem(place(client, user, [(product["id"], 1)]), 403, "email_not_verified")
    assert db_rows(database_url, "SELECT count(*), sum(stock) FROM orders, products") == [(0, None)]
    token = verification_token(database_url, user.email)
    assert client.simulate_post(VERIFY, json={"token": token}).status_code == 200
    # the same access token, remembered by this worker as unverified a moment ago
    assert place(client, user, [(product["id"], 1)]).status_code == 201


# ------------------------------------------------------------------ sessions


def test_sessions_list_the_logins_newest_first_and_mark_the_current_one(client, make_user):
    user = make_user()
    phone = client.simulate_post(
        "/api/auth/login",
        json={"email": user.email, "password": user.password},
        headers={"User-Agent": "ShopApp/1.0 (iPhone)"},
    ).json
    laptop = client.simulate_post(
        "/api/auth/login",
        json={"email": user.email, "password": user.password},
        headers={"User-Agent": "ShopApp/1.0 (Android)"},
    ).json
    response = client.simulate_get(SESSIONS, headers=bearer(phone["access_token"]))
    assert response.status_code == 200
    newest, oldest = response.json
    assert set(newest) == {"id", "created_at", "last_used_at", "user_agent", "current"}
    assert (newest["user_agent"], newest["current"]) == ("ShopApp/1.0 (Android)", False)
    assert (oldest["user_agent"], oldest["current"]) == ("ShopApp/1.0 (iPhone)", True)

    rotated = client.simulate_post(
        "/api/auth/refresh",
        json={"refresh_token": phone["refresh_token"]},
        headers={"User-Agent": "ShopApp/1.1 (iPhone)"},
    ).json
    sessions = client.simulate_get(SESSIONS, headers=bearer(rotated["access_token"])).json
    phone_session = next(s for s in sessions if s["id"] == oldest["id"])
    assert phone_session["current"] is True  # rotation keeps the login
    assert phone_session["user_agent"] == "ShopApp/1.1 (iPhone)"
    assert phone_session["last_used_at"] > oldest["last_used_at"]

    # ending one login: its refresh chain dies, the other login lives on
    response = client.simulate_delete(
        f"{SESSIONS}/{newest['id']}", headers=bearer(rotated["access_token"])
    )
    assert response.status_code == 204
    assert_problem(refresh(client, laptop["refresh_token"]), 401, "not_authenticated")
    assert refresh(client, rotated["refresh_token"]).status_code == 200
    ids = [s["id"] for s in client.simulate_get(SESSIONS, headers=user.headers).json]
    assert ids == [oldest["id"]]
    again = client.simulate_delete(f"{SESSIONS}/{newest['id']}", headers=user.headers)
    assert_problem(again, 404, "not_found")


def test_another_users_session_is_404_and_stays_alive(client, make_user):
    owner, other = make_user(), make_user()
    pair = login(client, owner.email, owner.password)
    (session,) = client.simulate_get(SESSIONS, headers=bearer(pair["access_token"])).json
    assert client.simulate_get(SESSIONS, headers=other.headers).json == []
    response = client.simulate_delete(f"{SESSIONS}/{session['id']}", headers=other.headers)
    assert_problem(response, 404, "not_found")
    assert refresh(client, pair["refresh_token"]).status_code == 200
    assert_problem(
        client.simulate_delete(f"{SESSIONS}/999999", headers=owner.headers), 404, "not_found"
    )
    assert_problem(client.simulate_get(SESSIONS), 401, "not_authenticated")


# ------------------------------------------------------------------ account deletion


def test_deleting_an_account_erases_it_keeps_its_orders_and_frees_the_email(
    client, database_url, admin, make_user, make_product
):
    user = make_user(email="leaving@example.com", full_name="Leaving Person")
    pair = login(client, user.email, user.password)
    order = place(client, user, [(make_product()["id"], 2)]).json
    reset_token(client, database_url, user.email)

    wrong = client.simulate_post(DELETE, json={"password": "not-my-password"}, headers=user.headers)
    assert_problem(wrong, 403, "forbidden")
    assert me(client, pair["access_token"]).status_code == 200

    response = client.simulate_post(DELETE, json={"password": user.password}, headers=user.headers)
    assert response.status_code == 204
    for token in (pair["access_token"], user.token):
        assert_problem(me(client, token), 401, "not_authenticated")
    assert_problem(refresh(client, pair["refresh_token"]), 401, "not_authenticated")
    assert_problem(
        client.simulate_post(
            "/api/auth/login", json={"email": user.email, "password": user.password}
        ),
        401,
        "invalid_credentials",
    )
    ((email, name, active, verified, hash_),) = db_rows(
        database_url,
        "SELECT email, full_name, is_active, email_verified, password_hash FROM users "
        "WHERE id = %s",
        (user.id,),
    )
    assert email.endswith("@deleted.invalid") and "leaving" not in email
    assert (name, active, verified, hash_) == ("", False, False, "!")
    for table in ("sessions", "refresh_tokens", "account_tokens"):
        assert db_rows(
            database_url, f"SELECT count(*) FROM {table} WHERE user_id = %s", (user.id,)
        ) == [(0,)]

    # the orders stay, for staff
    listed = client.simulate_get("/api/orders", headers=admin.headers).json["items"]
    assert [o["id"] for o in listed] == [order["id"]]
    assert (
        client.simulate_get(f"/api/orders/{order['id']}", headers=admin.headers).json["total_cents"]
        == order["total_cents"]
    )

    # the email is free again
    response = register(client, email="leaving@example.com", password="a-new-life-123")
    assert response.status_code == 201
    assert response.json["id"] != user.id
    login(client, "leaving@example.com", "a-new-life-123")


def test_delete_account_needs_a_caller_and_a_password(client, customer):
    assert_problem(client.simulate_post(DELETE, json={"password": "x"}), 401, "not_authenticated")
    assert_problem(
        client.simulate_post(DELETE, json={}, headers=customer.headers), 422, "validation_error"
    )
    assert me(client, customer.token).status_code == 200
