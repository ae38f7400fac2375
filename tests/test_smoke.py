"""Smoke: the app answers, errors are problem+json, factories work on the real database."""

from tests.conftest import assert_problem


def test_healthz_answers_ok(client):
    response = client.simulate_get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_unknown_route_is_problem_json_404(client):
    assert_problem(client.simulate_get("/api/nope"), 404, "not_found")


def test_factories_write_real_rows(make_user, make_product, client):
    user = make_user()
    product = make_product(stock=5)
    assert product["id"] > 0
    response = client.simulate_get("/api/auth/me", headers=user.headers)
    assert response.status_code == 200
    assert response.json["email"] == user.email
