"""GET /metrics: series by route template, the shop's own series, every gunicorn worker."""

from __future__ import annotations

import glob
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from falcon import testing
from prometheus_client.parser import text_string_to_metric_families

from shopapi.app import create_app
from tests.conftest import app_env, make_settings, wait_for
from tests.live import LiveServer

Series = dict[tuple[str, frozenset], float]


def parse(text: str) -> Series:
    """Every sample of an exposition: (sample name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


def scrape(client) -> Series:
    response = client.simulate_get("/metrics")
    assert response.status_code == 200
    return parse(response.text)


def test_requests_are_counted_by_method_route_template_and_status(client, admin, customer):
    before = scrape(client)
    own = f"/api/users/{admin.id}"
    for _ in range(2):
        assert client.simulate_get(own, headers=admin.headers).status_code == 200
    assert client.simulate_get(own, headers=customer.headers).status_code == 403
    assert client.simulate_get("/api/users/987654321", headers=admin.headers).status_code == 404
    assert client.simulate_get("/api/no/such/thing/42").status_code == 404
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    item = "/api/users/{user_id}"
    assert delta("http_requests_total", method="GET", route=item, status="200") == 2
    assert delta("http_requests_total", method="GET", route=item, status="403") == 1
    assert delta("http_requests_total", method="GET", route=item, status="404") == 1
    assert delta("http_requests_total", method="GET", route="unmatched", status="404") == 1
    # the scrape before counts itself once it has answered
    assert delta("http_requests_total", method="GET", route="/metrics", status="200") == 1
    assert delta("http_request_duration_seconds_count", method="GET", route=item, status="200") == 2
    assert delta("http_request_duration_seconds_sum", method="GET", route=item, status="200") > 0
    assert (
        delta(
            "http_request_duration_seconds_bucket",
            method="GET",
            route=item,
            status="200",
            le="+Inf",
        )
        == 2
    )
    # raw paths never become labels: one series per route, not one per id
    routes = {dict(labels).get("route") for (_, labels) in after}
    assert not any(r and ("987654321" in r or "/api/no/such" in r) for r in routes)


def test_catalog_cache_and_orders_are_counted_where_prometheus_sees_them(
    client, customer, make_product
):
    product = make_product(stock=5)
    url = f"/api/products/{product['id']}"
    before = scrape(client)
    assert client.simulate_get(url).status_code == 200
    assert client.simulate_get(url).status_code == 200
    order = {"items": [{"product_id": product["id"], "quantity": 1}]}
    assert (
        client.simulate_post("/api/orders", json=order, headers=customer.headers).status_code == 201
    )
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        delta("http_requests_total", method="GET", route="/api/products/{product_id}", status="200")
        == 2
    )
    assert delta("http_requests_total", method="POST", route="/api/orders", status="201") == 1
    assert delta("shopapi_cache_requests_total", result="miss") >= 1
    assert delta("shopapi_cache_requests_total", result="hit") >= 1
    assert delta("shopapi_orders_placed_total") == 1


@pytest.mark.filterwarnings("ignore::wsgiref.validate.WSGIWarning")
def test_an_invented_http_method_is_labelled_other(client):
    before = scrape(client)
    status = client.simulate_request("BREW", "/healthz").status_code
    after = scrape(client)
    labels = {"method": "other", "route": "/healthz", "status": str(status)}
    assert (
        value(after, "http_requests_total", **labels)
        - value(before, "http_requests_total", **labels)
        == 1
    )
    assert not any(dict(k).get("method") == "BREW" for (_, k) in after)


def test_metrics_exposes_the_shops_own_series(client, pool):
    response = client.simulate_get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    series = parse(response.text)
    names = {name for (name, _) in series}
    assert {"shopapi_orders_placed_total", "shopapi_rate_limited_total"} <= names
    assert ("shopapi_cache_requests_total", frozenset({("result", "hit")})) in series
    assert ("shopapi_cache_requests_total", frozenset({("result", "miss")})) in series
    # the pool gauge is read from the real pool when scraped
    in_use = value(series, "shopapi_db_pool_connections", state="in_use")
    idle = value(series, "shopapi_db_pool_connections", state="idle")
    assert in_use >= 0 and idle >= 1
    # the worker's pool (no replica configured here)
    assert in_use + idle == pool.get_stats()["pool_size"]


def test_metrics_can_be_negotiated_as_openmetrics(client):
    response = client.simulate_get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_metrics_needs_no_token_and_is_never_rate_limited(
    async_redis, database_url, pool, redis_client
):
    settings = make_settings(database_url, RATE_LIMIT_ENABLED="true", RATE_LIMIT_DEFAULT="2/minute")
    client = testing.TestClient(create_app(settings, pool=pool, redis=async_redis))
    for _ in range(5):
        response = client.simulate_get("/metrics")
        assert response.status_code == 200
        assert "RateLimit-Limit" not in response.headers


# ------------------------------------------------------------ gunicorn, several workers


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.live
def test_gunicorn_metrics_add_up_every_worker_including_replaced_ones(database_url):
    # each worker is replaced after 5 requests: the requests below cross at least 4
    # processes, and the counts of the replaced ones must still be in the total
    # (BCRYPT_ROUNDS=4 from app_env: nothing here hashes a password)
    server = LiveServer(app_env(database_url, DB_POOL_MAX=2, GUNICORN_MAX_REQUESTS=5), workers=2)
    # unset: gunicorn.conf.py makes (and logs, and finally removes) a directory of its own
    server.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    try:
        server.start(timeout=30)
        found = re.search(r"Prometheus multiprocess directory: (\S+)", server.log.read_text())
        assert found, server.log.read_text()
        prom_dir = Path(found.group(1))
        # an asgi worker past its max_requests finishes what it has accepted before it
        # exits (its loop checks about once a second): ask until 4 processes have answered
        made, deadline = 0, time.monotonic() + 30
        while len(glob.glob(str(prom_dir / "counter_*.db"))) < 4:
            assert time.monotonic() < deadline, "workers were never replaced"
            assert _get(f"{server.url}/readyz")[0] == 200
            made += 1
            time.sleep(0.05)

        status, text = _get(f"{server.url}/metrics")
        assert status == 200
        series = parse(text)
        assert made >= 4 * 5 - 2 * 4  # each replaced worker served its 5 at least
        assert (
            value(series, "http_requests_total", method="GET", route="/readyz", status="200")
            == made
        )
        assert (
            value(
                series,
                "http_request_duration_seconds_count",
                method="GET",
                route="/readyz",
                status="200",
            )
            == made
        )

        # a replaced worker's pool gauge leaves the sum (child_exit -> mark_process_dead):
        # only the two live workers keep a live-gauge file
        wait_for(
            lambda: len(glob.glob(str(prom_dir / "gauge_livesum_*.db"))) == 2,
            10,
            interval=0.1,
            what="dead workers' gauges to be dropped",
        )
        series = parse(_get(f"{server.url}/metrics")[1])
        pooled = value(series, "shopapi_db_pool_connections", state="in_use") + value(
            series, "shopapi_db_pool_connections", state="idle"
        )
        assert 1 <= pooled <= 2 * 2  # two live workers, DB_POOL_MAX=2 each
    finally:
        returncode = server.stop(timeout=20)
    assert returncode == 0, server.log.read_text()[-3000:]
    assert not prom_dir.exists()  # on_exit removed the directory it made
    server.log.unlink()
