"""How the suites find and require their real servers: PostgreSQL's server binaries in the
newest installed version's folder (not a fixed 15), and under SHOPAPI_REQUIRE_REAL_SERVERS=1
(.ci/run) a missing server fails the test instead of skipping it."""

from __future__ import annotations

import pytest

from tests import nginx
from tests.faults.helpers import postgres_bin_dir, server_missing

pytestmark = pytest.mark.no_db


def _version(root, name: str, *, server: bool) -> None:
    (root / name / "bin").mkdir(parents=True)
    if server:
        (root / name / "bin" / "initdb").touch()


def test_the_newest_postgresql_with_initdb_is_chosen(tmp_path, monkeypatch):
    monkeypatch.delenv("PG_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "no-pg-config"))
    _version(tmp_path, "9", server=True)
    _version(tmp_path, "15", server=True)
    _version(tmp_path, "16", server=False)  # a client-only folder
    _version(tmp_path, "common", server=True)  # not a version
    assert postgres_bin_dir(tmp_path) == tmp_path / "15" / "bin"  # 15 > 9: compared as numbers
    _version(tmp_path, "17", server=True)
    assert postgres_bin_dir(tmp_path) == tmp_path / "17" / "bin"
    monkeypatch.setenv("PG_BIN", "/opt/pg/bin")
    assert str(postgres_bin_dir(tmp_path)) == "/opt/pg/bin"


def test_pg_config_names_the_folder_when_initdb_is_there(tmp_path, monkeypatch):
    monkeypatch.delenv("PG_BIN", raising=False)
    _version(tmp_path, "18", server=True)
    _version(tmp_path, "14", server=True)
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "pg_config").write_text(f"#!/bin/sh\necho {tmp_path / '14' / 'bin'}\n")
    (tools / "pg_config").chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    assert postgres_bin_dir(tmp_path) == tmp_path / "14" / "bin"
    (tmp_path / "14" / "bin" / "initdb").unlink()  # libpq's pg_config, no server: the newest
    assert postgres_bin_dir(tmp_path) == tmp_path / "18" / "bin"


def test_a_missing_server_skips_unless_real_servers_are_required(monkeypatch):
    monkeypatch.delenv("SHOPAPI_REQUIRE_REAL_SERVERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="pgbouncer is not installed"):
        server_missing("pgbouncer is not installed")
    monkeypatch.setenv("SHOPAPI_REQUIRE_REAL_SERVERS", "1")
    with pytest.raises(pytest.fail.Exception, match="SHOPAPI_REQUIRE_REAL_SERVERS=1"):
        server_missing("pgbouncer is not installed")


def test_a_missing_nginx_fails_where_it_is_looked_up_when_required(monkeypatch):
    monkeypatch.setattr(nginx.shutil, "which", lambda name: None)
    monkeypatch.setattr(nginx, "DEBIAN_NGINX", "/nonexistent/nginx")
    monkeypatch.delenv("SHOPAPI_REQUIRE_REAL_SERVERS", raising=False)
    assert nginx.nginx_binary() is None  # the caller skips
    monkeypatch.setenv("SHOPAPI_REQUIRE_REAL_SERVERS", "1")
    with pytest.raises(pytest.fail.Exception, match="nginx is not installed"):
        nginx.nginx_binary()
