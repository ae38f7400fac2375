"""/api/webhooks (ADMIN): subscriptions, the secret shown once, validation with field paths,
the delivery log and redelivery."""

from __future__ import annotations

import json

import psycopg
import pytest
from falcon import testing

from shopapi.app import create_app
from tests.conftest import assert_problem, db_rows, make_settings

URL = "http://127.0.0.1:9999/hooks"


def create(client, admin, **body):
    return client.simulate_post(
        "/api/webhooks",
        json={"url": URL, "events": ["order.created"], **body},
        headers=admin.headers,
    )


def fields(response) -> list[str]:
    return [e["field"] for e in response.json["errors"]]


def test_create_answers_the_secret_once(client, admin):
    response = create(client, admin, events=["order.created", "product.out_of_stock"])
    assert response.status_code == 201, response.text
    hook = response.json
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
    assert {k: hook[k] for k in ("url", "events", "is_active")} == {
        "url": URL,
        "events": ["order.created", "product.out_of_stock"],
        "is_active": True,
    }
    got = client.simulate_get(f"/api/webhooks/{hook['id']}", headers=admin.headers).json
    listed = client.simulate_get("/api/webhooks", headers=admin.headers).json
    assert "secret" not in got and "secret" not in listed["items"][0]
    assert got == {k: v for k, v in hook.items() if k != "secret"}
    assert (listed["total"], listed["page"]) == (1, 1)


def test_list_pages_by_id(client, admin):
    ids = [create(client, admin).json["id"] for _ in range(3)]
    first = client.simulate_get("/api/webhooks?per_page=2", headers=admin.headers).json
    second = client.simulate_get("/api/webhooks?per_page=2&page=2", headers=admin.headers).json
    assert [h["id"] for h in first["items"] + second["items"]] == ids
    assert first["total"] == 3


def test_update_is_partial_for_put_and_patch_and_delete_removes(client, admin):
    hook = create(client, admin).json
    url = f"/api/webhooks/{hook['id']}"
    patched = client.simulate_patch(url, json={"is_active": False}, headers=admin.headers).json
    assert (patched["is_active"], patched["url"], patched["events"]) == (
        False,
        URL,
        ["order.created"],
    )
    put = client.simulate_put(
        url, json={"events": ["order.status_changed"], "url": URL + "/2"}, headers=admin.headers
    ).json
    assert (put["events"], put["url"], put["is_active"]) == (
        ["order.status_changed"],
        URL + "/2",
        False,
    )
    assert client.simulate_delete(url, headers=admin.headers).status_code == 204
    assert_problem(client.simulate_get(url, headers=admin.headers), 404, "not_found")
    assert_problem(client.simulate_delete(url, headers=admin.headers), 404, "not_found")
    assert_problem(
        client.simulate_patch(url, json={"is_active": True}, headers=admin.headers),
        404,
        "not_found",
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "https://user:pw@example.com/"}, "url"),
        ({"url": "http://no-such-host.invalid/x"}, "url"),
        ({"url": "http://x/" + "a" * 2048}, "url"),
        ({"url": 5}, "url"),
        ({"events": ["order.created", "order.created"]}, "events[1]"),
        ({"events": ["order.created", "order.deleted"]}, "events[1]"),
        ({"events": []}, "events"),
        ({"events": "order.created"}, "events"),
        ({"is_active": "yes"}, "is_active"),
    ],
)
def test_bad_input_is_a_422_with_the_field_and_writes_nothing(
    client, admin, database_url, body, field
):
    response = create(client, admin, **body)
    assert_problem(response, 422, "validation_error")
    assert field in fields(response)
    assert db_rows(database_url, "SELECT count(*) FROM webhooks") == [(0,)]


def test_missing_fields_and_bad_json_are_refused(client, admin):
    missing = client.simulate_post("/api/webhooks", json={"url": URL}, headers=admin.headers)
    assert_problem(missing, 422, "validation_error")
    assert fields(missing) == ["events"]
    broken = client.simulate_post(
        "/api/webhooks",
        body=b"{nope",
        headers={**admin.headers, "Content-Type": "application/json"},
    )
    assert_problem(broken, 400, "invalid_json")


@pytest.fixture()
def guarded_client(database_url, pool, async_redis, app_loop):
    """The app as production runs it: private webhook targets refused."""
    app = create_app(
        make_settings(database_url, WEBHOOK_ALLOW_PRIVATE="false"), pool=pool, redis=async_redis
    )
    yield testing.TestClient(app)
    app_loop.run(app.ctx.close)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost:8080/x",
        "https://10.0.0.5/x",
        "http://192.168.1.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0/x",
    ],
)
def test_private_targets_are_refused_unless_allowed(guarded_client, client, admin, url):
    refused = guarded_client.simulate_post(
        "/api/webhooks", json={"url": url, "events": ["order.created"]}, headers=admin.headers
    )
    assert_problem(refused, 422, "validation_error")
    assert fields(refused) == ["url"]
    # the test settings allow them (WEBHOOK_ALLOW_PRIVATE=true)
    assert create(client, admin, url=url).status_code == 201


def test_a_private_target_cannot_come_in_through_an_update(guarded_client, admin, client):
    hook = create(client, admin, url="http://93.184.216.34/x").json
    refused = guarded_client.simulate_patch(
        f"/api/webhooks/{hook['id']}", json={"url": "http://127.0.0.1/x"}, headers=admin.headers
    )
    assert_problem(refused, 422, "validation_error")
    assert db_rows(
        client.app.ctx.settings.dsn, "SELECT url FROM webhooks WHERE id = %s", (hook["id"],)
    ) == [("http://93.184.216.34/x",)]


def test_the_twenty_first_webhook_is_refused(client, admin, database_url):
    for _ in range(20):
        assert create(client, admin).status_code == 201
    refused = create(client, admin)
    assert_problem(refused, 422, "validation_error")
    assert fields(refused) == ["webhooks"]
    assert db_rows(database_url, "SELECT count(*) FROM webhooks") == [(20,)]


def test_only_admins_manage_webhooks(client, admin, editor, customer):
    hook = create(client, admin).json
    for path, method in [
        ("/api/webhooks", "GET"),
        ("/api/webhooks", "POST"),
        (f"/api/webhooks/{hook['id']}", "GET"),
        (f"/api/webhooks/{hook['id']}", "PATCH"),
        (f"/api/webhooks/{hook['id']}", "DELETE"),
        (f"/api/webhooks/{hook['id']}/deliveries", "GET"),
        (f"/api/webhooks/{hook['id']}/deliveries/1/redeliver", "POST"),
    ]:
        body = {"url": URL, "events": ["order.created"]}
        for user in (editor, customer):
            answer = client.simulate_request(method, path, json=body, headers=user.headers)
            assert_problem(answer, 403, "forbidden")
        assert_problem(client.simulate_request(method, path, json=body), 401, "not_authenticated")


def log_attempts(database_url, webhook_id, attempts) -> str:
    with psycopg.connect(database_url) as conn:
        event_id = conn.execute(
            "INSERT INTO events (type, data) VALUES ('order.created', '{\"order\": {}}') "
            "RETURNING id::text"
        ).fetchone()[0]
        for attempt, status, error in attempts:
            conn.execute(
                "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, attempt, "
                "status_code, error, duration_ms, next_attempt_at) "
                "VALUES (%s, %s, 'order.created', %s, %s, %s, 12, "
                "CASE WHEN %s::text IS NULL THEN NULL ELSE now() + interval '15 s' END)",
                (webhook_id, event_id, attempt, status, error, error),
            )
    return event_id


def test_the_delivery_log_is_newest_first(client, admin, database_url):
    hook = create(client, admin).json
    event_id = log_attempts(
        database_url,
        hook["id"],
        [(1, 500, "HTTP 500"), (2, None, "timed out after 5 s"), (3, 200, None)],
    )
    log = client.simulate_get(f"/api/webhooks/{hook['id']}/deliveries", headers=admin.headers)
    assert log.status_code == 200
    items = log.json["items"]
    assert [i["attempt"] for i in items] == [3, 2, 1] and log.json["total"] == 3
    assert set(items[0]) == {
        "id",
        "event_id",
        "event_type",
        "attempt",
        "status_code",
        "error",
        "duration_ms",
        "delivered_at",
        "next_attempt_at",
    }
    assert items[0]["event_id"] == event_id and items[0]["next_attempt_at"] is None
    assert items[1]["status_code"] is None and items[1]["next_attempt_at"] is not None
    paged = client.simulate_get(
        f"/api/webhooks/{hook['id']}/deliveries?per_page=1&page=3", headers=admin.headers
    ).json
    assert [i["attempt"] for i in paged["items"]] == [1]
    assert_problem(
        client.simulate_get("/api/webhooks/999/deliveries", headers=admin.headers), 404, "not_found"
    )


def test_redeliver_queues_one_delivery_job_for_the_event(client, admin, database_url):
    hook = create(client, admin).json
    other = create(client, admin).json
    event_id = log_attempts(database_url, hook["id"], [(1, 500, "HTTP 500")])
    [delivery] = client.simulate_get(
        f"/api/webhooks/{hook['id']}/deliveries", headers=admin.headers
    ).json["items"]

    answer = client.simulate_post(
        f"/api/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver", headers=admin.headers
    )
    assert answer.status_code == 202 and answer.json == {"queued": True}
    jobs = db_rows(
        database_url, "SELECT task_name, args::text, status::text FROM procrastinate_jobs"
    )
    assert [(t, json.loads(a), s) for t, a, s in jobs] == [
        ("deliver_webhook", {"event_id": event_id, "webhook_id": hook["id"]}, "todo")
    ]
    for path in (
        f"/api/webhooks/{other['id']}/deliveries/{delivery['id']}/redeliver",  # not its own
        f"/api/webhooks/{hook['id']}/deliveries/999/redeliver",
    ):
        assert_problem(client.simulate_post(path, headers=admin.headers), 404, "not_found")
    assert len(db_rows(database_url, "SELECT id FROM procrastinate_jobs")) == 1


def test_openapi_documents_the_routes_and_the_event_envelope(client):
    spec = client.simulate_get("/api/docs/openapi.json").json
    assert {"/api/webhooks", "/api/webhooks/{webhook_id}/deliveries"} <= set(spec["paths"])
    redeliver = spec["paths"]["/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"]
    assert "202" in redeliver["post"]["responses"]
    assert set(spec["webhooks"]) == {
        "order.created",
        "order.status_changed",
        "order.payment_failed",
        "product.out_of_stock",
    }
    body = spec["webhooks"]["order.created"]["post"]["requestBody"]["content"]["application/json"]
    envelope = spec["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[1]]
    assert set(envelope["required"]) == {"id", "type", "created_at", "data"}
    assert "Shopapi-Signature" in spec["webhooks"]["order.created"]["post"]["description"]
