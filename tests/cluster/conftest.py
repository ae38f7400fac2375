"""The cluster (tests/cluster/cluster.py), started once for the suite and stopped at its end;
a test that breaks a part (kills an instance, stops the replica) puts it back itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.cluster import Cluster, missing_parts, running_cluster
from tests.cluster.figures import LINES
from tests.conftest import REDIS_URL


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "tests/cluster/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    why = missing_parts()
    if why:
        pytest.skip(why)
    with running_cluster(REDIS_URL) as started:
        yield started


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
