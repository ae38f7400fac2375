"""Who may read /metrics (issue 18 item 1; API.md, Operations, 2026-12 revision): a socket peer
inside METRICS_ALLOWED_NETWORKS that sends no X-Forwarded-For; anyone else gets the 404 of an
unknown route. The spelling cases through the real nginx are in
tests/security/test_api8_nginx_front.py."""

from __future__ import annotations

import ipaddress

import pytest
from falcon import testing

from shopapi.app import create_app
from shopapi.config import ConfigError, Settings, setting
from tests.conftest import app_env, assert_problem, make_settings

PRIVATE_PEERS = [
    "127.0.0.1",
    "127.8.9.10",
    "::1",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.20",
    "fd00::7",
    "::ffff:10.0.0.5",  # an IPv4 peer on a dual-stack socket
]
PUBLIC_PEERS = [
    "203.0.113.9",
    "8.8.8.8",
    "172.32.0.1",  # just past 172.16.0.0/12
    "192.169.0.1",
    "11.0.0.1",
    "2001:db8::1",
    "fe80::1",  # link-local is not in the defaults
    "::ffff:203.0.113.9",
]


def scrape(client: testing.TestClient, peer: str | None, **headers: str):
    return client.simulate_get("/metrics", remote_addr=peer, headers=headers)


def assert_hidden(response) -> None:
    """Exactly the answer of a route that does not exist: nothing says /metrics is there."""
    body = assert_problem(response, 404, "not_found")
    assert body == {"type": "about:blank", "title": "Not found", "status": 404, "code": "not_found"}
    assert "http_requests_total" not in response.text


def test_the_default_networks_are_loopback_and_the_private_ranges():
    default = setting("METRICS_ALLOWED_NETWORKS").default
    assert default is not None
    assert (
        {str(net) for net in Settings.from_env(env={}).metrics_allowed_networks}
        == {str(ipaddress.ip_network(part.strip())) for part in default.split(",")}
        == {
            "127.0.0.0/8",
            "::1/128",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "fc00::/7",
        }
    )


@pytest.mark.parametrize("peer", PRIVATE_PEERS)
def test_a_peer_on_loopback_or_a_private_network_reads_the_metrics(client, peer):
    response = scrape(client, peer)
    assert response.status_code == 200, response.text
    assert "http_requests_total" in response.text


@pytest.mark.parametrize("peer", PUBLIC_PEERS)
def test_a_public_peer_gets_the_404_of_an_unknown_route(client, peer):
    assert_hidden(scrape(client, peer))
    assert_hidden(client.simulate_get("/metrics/", remote_addr=peer))


@pytest.mark.parametrize(
    "header",
    [
        {"X-Forwarded-For": "127.0.0.1"},
        {"X-Forwarded-For": "10.0.0.1, 127.0.0.1"},
        {"X-Forwarded-For": ""},
        {"Forwarded": "for=127.0.0.1"},
    ],
)
def test_a_request_through_a_proxy_is_refused_even_from_loopback(client, header):
    """nginx adds X-Forwarded-For to everything it passes on: a request that reached the app
    through it is the public side's, whatever the peer (nginx on the same host or network)."""
    assert_hidden(scrape(client, "127.0.0.1", **header))
    assert_hidden(scrape(client, "10.0.0.2", **header))


def test_forwarded_headers_cannot_make_a_public_peer_look_private(client):
    """The peer is the ASGI connection's address, never read from a header, whatever the
    trusted-proxy settings say (the rate limits' client address follows them; this does not)."""
    for xff in ("127.0.0.1", "203.0.113.9, 127.0.0.1", "10.0.0.1"):
        assert_hidden(scrape(client, "203.0.113.9", **{"X-Forwarded-For": xff}))
    assert_hidden(scrape(client, "203.0.113.9", **{"X-Real-IP": "127.0.0.1"}))


def test_metrics_allowed_networks_is_read_from_the_environment(database_url, pool, async_redis):
    settings = make_settings(
        database_url, METRICS_ALLOWED_NETWORKS="198.51.100.0/24, 2001:db8::/32"
    )
    client = testing.TestClient(create_app(settings, pool=pool, redis=async_redis))
    assert scrape(client, "198.51.100.7").status_code == 200
    assert scrape(client, "2001:db8::5").status_code == 200
    # the list replaces the defaults: loopback is no longer in it
    assert_hidden(scrape(client, "127.0.0.1"))
    assert_hidden(scrape(client, "10.0.0.1"))


def test_an_invalid_network_stops_the_start_with_the_settings_name(database_url):
    with pytest.raises(ConfigError, match="METRICS_ALLOWED_NETWORKS"):
        Settings.from_env(env=app_env(database_url, METRICS_ALLOWED_NETWORKS="10.0.0.0/33"))
    with pytest.raises(ConfigError, match="METRICS_ALLOWED_NETWORKS"):
        Settings.from_env(env=app_env(database_url, METRICS_ALLOWED_NETWORKS="internal"))


def test_the_job_workers_own_metrics_port_answers_only_allowed_networks():
    """The job worker serves /metrics on a port of its own (WORKER_METRICS_PORT): the same rule
    (instruments.may_scrape). A scraper on loopback reads the series with the default networks,
    and is refused 404 when the networks leave loopback out or the request came through a
    proxy."""
    import urllib.error
    import urllib.request

    from shopapi.jobs.worker import start_metrics
    from tests.live import free_port

    def scrape(port: int, **headers: str) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as refused:
            return refused.code, ""

    assert start_metrics(0, ()) is None  # no port: no server
    default = Settings.from_env(env={"APP_ENV": "test"}).metrics_allowed_networks
    private = (ipaddress.ip_network("10.0.0.0/8"),)
    servers = [start_metrics(free_port(), networks) for networks in (default, private)]
    try:
        status, text = scrape(servers[0].server_port)
        assert status == 200 and "# TYPE" in text
        assert scrape(servers[1].server_port) == (404, "")
        # through a proxy, even from an allowed peer: the same 404 as the API's
        assert scrape(servers[0].server_port, **{"X-Forwarded-For": "10.1.2.3"}) == (404, "")
        assert scrape(servers[0].server_port, Forwarded="for=10.1.2.3") == (404, "")
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
