"""The cluster (tests/cluster/cluster.py), started once for the suite and stopped after its
last test; a test that breaks a part (kills an instance, stops the replica) puts it back
itself. The suite runs under a 5-minute bound (tests/cluster/deadline.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.cluster import Cluster, missing_parts, running_cluster
from tests.cluster.deadline import Deadline
from tests.cluster.figures import LINES
from tests.conftest import REDIS_URL
from tests.faults.helpers import server_missing


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "tests/cluster/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="package")
def suite_deadline() -> Deadline:
    """The suite's clock, from its first test."""
    return Deadline()


@pytest.fixture(autouse=True)
def _within_the_suite_bound(request, suite_deadline: Deadline) -> Iterator[None]:
    """Every test, its fixtures included, stops when the suite's time is up."""
    suite_deadline.arm(request.node.nodeid)
    try:
        yield
    finally:
        suite_deadline.disarm()


@pytest.fixture(scope="package")
def cluster(suite_deadline: Deadline) -> Iterator[Cluster]:
    """Package scope: stopped after the suite's last test, not at the end of a full run (the
    rest of bin/test does not share the machine with it, and the suite's time is its own)."""
    why = missing_parts()
    if why:
        server_missing(why)
    suite_deadline.arm("the cluster's start")
    try:
        with running_cluster(REDIS_URL) as started:
            suite_deadline.disarm()  # each test arms it again; the stop runs unarmed
            yield started
    finally:
        suite_deadline.disarm()  # a start cut short: running_cluster stopped what it started
    summary = suite_deadline.summary()
    LINES.append(summary)
    print(summary)
    if suite_deadline.over():
        pytest.fail(f"{summary}: over the bound", pytrace=False)


@pytest.fixture()
def shop_cluster(request, cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with every part running; a failing test shows the instances' logs."""
    cluster.ensure_standby()
    yield cluster
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(cluster.logs())


def pytest_terminal_summary(terminalreporter) -> None:
    if LINES:
        terminalreporter.section("cluster summary (tests/cluster)")
        for line in LINES:
            terminalreporter.write_line(line)
