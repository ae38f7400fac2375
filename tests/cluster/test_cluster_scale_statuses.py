"""bench/cluster_scale.py's wrk runs record which non-2xx answers they got (wrk alone only counts
those over 399): its scenarios, run as it runs them (bench.loopback.wrk), against a fake shop
that answers some 404s and 503s; no cluster needed."""

from __future__ import annotations

import shutil
import threading
from collections import Counter

import pytest

from bench import cluster_scale, loopback
from tests.helpers import QuietHandler, WrkTarget

pytestmark = pytest.mark.no_db


class FakeShop(WrkTarget):
    """Every 7th answer 503, every 5th (not 7th) 404, the rest 200 (detail) or 201 (order);
    counted by status as sent."""

    def __init__(self) -> None:
        super().__init__(FakeShopHandler)
        self.sent: Counter[int] = Counter()
        self.n = 0


class FakeShopHandler(QuietHandler):
    server: FakeShop

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        srv = self.server
        with srv.lock:
            srv.n += 1
            if srv.n % 7 == 0:
                status = 503
            elif srv.n % 5 == 0:
                status = 404
            else:
                status = 201 if self.command == "POST" else 200
            srv.sent[status] += 1
        body = b'{"id":1}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer


@pytest.mark.parametrize(("scenario", "ok"), [("cluster_detail", 200), ("cluster_order", 201)])
def test_every_answer_is_counted_by_status_and_the_5xx_are_reported(
    scenario, ok, tmp_path, monkeypatch
):
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (bin/bench installs it)")
    assert scenario in dict(cluster_scale.SCENARIOS)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("token1\ntoken2\n")
    monkeypatch.setattr(loopback, "DUR", "1s")
    monkeypatch.setattr(loopback, "CONNECTIONS", 4)
    server = FakeShop()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = loopback.wrk(scenario, server.server_port, tokens, n_products=50)
    finally:
        server.shutdown()
        server.server_close()

    statuses = {int(status): n for status, n in result["statuses"].items()}
    assert set(statuses) == {ok, 404, 503}
    # every answer wrk completed, by status: at most one a connection fewer than were sent
    assert sum(statuses.values()) == result["requests"]
    for status, sent in server.sent.items():
        assert sent - 4 <= statuses[status] <= sent
    assert result["non2xx"] == statuses[404] + statuses[503]  # wrk's own count, kept

    result["round"] = 1
    report = cluster_scale.answers_report({("orders", "3 instances"): [result]})
    assert cluster_scale.non_2xx(result) == {404: statuses[404], 503: statuses[503]}
    assert f"{{404: {statuses[404]}, 503: {statuses[503]}}}" in report
    assert report.endswith(f"5xx answers: {statuses[503]} of {result['requests']}")


def test_a_run_without_errors_still_says_so():
    clean = {"round": 1, "statuses": {"201": 900}, "socket_errors": 0}
    report = cluster_scale.answers_report({("orders", "1 instance"): [clean]})
    assert report.splitlines() == [
        "non-2xx answers by status, per run:",
        "  none",
        "5xx answers: 0 of 900",
    ]
