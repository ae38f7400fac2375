"""Zero-setup start: local services are found or provided, configured URLs are respected."""

import pytest

from shopapi import devservices
from tests.conftest import ADMIN_URL, TEST_DB


def test_configured_urls_are_left_alone(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.example/x")
    monkeypatch.setenv("REDIS_URL", "redis://cache.example/0")
    assert devservices.provision() == {}


def test_running_local_servers_are_used(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    env = devservices.provision(database=f"{TEST_DB}_dev")
    assert env["DATABASE_URL"].endswith(f"/{TEST_DB}_dev")
    assert env["REDIS_URL"].startswith("redis://127.0.0.1:6379")


@pytest.mark.parametrize(
    "admin,expected",
    [
        (
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "postgresql://postgres@127.0.0.1:5432/shop",
        ),
        # the embedded server's Unix-socket URL keeps its host query
        (
            "postgresql://postgres:@/postgres?host=/tmp/pg",
            "postgresql://postgres:@/shop?host=/tmp/pg",
        ),
    ],
)
def test_database_url_is_derived_from_the_admin_url(admin, expected):
    assert devservices.database_url(admin, "shop") == expected


def test_admin_url_for_tests_answers():
    assert devservices._port_open("127.0.0.1", 5432) or "127.0.0.1" not in ADMIN_URL
