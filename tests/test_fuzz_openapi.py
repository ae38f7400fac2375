"""Fuzzing: schemathesis 4 turns our own OpenAPI document into requests for a live gunicorn;
no answer may be a 5xx, an undocumented status, or a body or header that breaks the document.

One run covers every operation with the examples, coverage (boundary values, every enum,
missing and malformed parts) and fuzzing phases, positive and negative data, with every
check schemathesis has (`--checks all`), as an ADMIN so the protected operations are reached.
It is deterministic (derandomized, no example database) so CI sees the same cases each time,
and bounded: FUZZ_MAX_EXAMPLES generated cases per operation (default 30) and a time budget.
The schemathesis CLI runs in a subprocess: its report names each failure with a curl line
that reproduces it. Run alone with `pytest tests/test_fuzz_openapi.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from shopapi.db import make_pool
from shopapi.seed import seed
from tests.conftest import _CLEAN_SQL, REDIS_URL, TEST_SECRET, db_rows, make_settings
from tests.live import LiveServer

pytestmark = [pytest.mark.live, pytest.mark.no_db]  # no_db: the fixture seeds its own data

FUZZ_MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "30"))
FUZZ_MAX_SECONDS = 170  # the whole run, so a slow machine shortens it rather than hangs CI
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")

# Every check is on; the [[operations]] blocks switch one off where the contract refuses
# schema-valid data with a documented 422 that JSON Schema cannot express.
CONFIG = """
seed = 20261126
max-time = {max_time}
request-timeout = 15
workers = 2

[generation]
deterministic = true
database = "none"
max-examples = {max_examples}

[auth.openapi.bearer]
bearer = "${{SHOPAPI_FUZZ_TOKEN}}"

# `page` together with `cursor` is 422, and so is a cursor the server did not issue
[[operations]]
include-path = ["/api/products", "/api/orders"]
include-method = "GET"
checks.positive_data_acceptance.enabled = false

# `category_id` must name an existing category (422 otherwise)
[[operations]]
include-path-regex = "^/api/products(/\\\\{{product_id\\\\}})?$"
include-method = ["POST", "PUT", "PATCH"]
checks.positive_data_acceptance.enabled = false

# each product at most once per order, existing and for sale (422 otherwise)
[[operations]]
include-path = "/api/orders"
include-method = "POST"
checks.positive_data_acceptance.enabled = false

# writes to a user always aim at a decoy customer: were the fuzzing admin to demote or
# deactivate itself, every later case would be a plain 401 and prove nothing
[[operations]]
include-path = "/api/users/{{user_id}}"
include-method = ["PUT", "PATCH", "DELETE"]
parameters = {{ "path.user_id" = {decoy_id} }}
"""


@dataclass(frozen=True)
class Target:
    server: LiveServer
    token: str
    admin_id: int
    decoy_id: int


@pytest.fixture(scope="module")
def fuzz_target(database_url, _cleaner, redis_client):
    """The contract's seed (users and a small catalog) behind a 2-worker gunicorn."""
    _cleaner.execute(_CLEAN_SQL)
    redis_client.flushdb()
    app_settings = make_settings(database_url)
    pool = make_pool(app_settings)
    try:
        seed(pool, app_settings)
    finally:
        pool.close()
    env = {"APP_ENV": "test", "DATABASE_URL": database_url, "REDIS_URL": REDIS_URL,
           "SECRET_KEY": TEST_SECRET, "BCRYPT_ROUNDS": "4", "RATE_LIMIT_ENABLED": "false",
           "ACCESS_TOKEN_TTL": "3600", "LOG_LEVEL": "WARNING"}
    with LiveServer(env, workers=2) as server:
        status, tokens, _ = server.request(
            "POST", "/api/auth/login", {"email": "admin@example.com", "password": "adminpass123"})
        assert status == 200, tokens
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        admin_id = server.request("GET", "/api/auth/me", headers=auth)[1]["id"]
        status, decoy, _ = server.request(
            "POST", "/api/auth/register", {"email": "decoy@example.com", "password": "decoy-pass"})
        assert status == 201, decoy
        yield Target(server, tokens["access_token"], admin_id, decoy["id"])


def test_fuzzing_every_operation_finds_no_server_error_and_no_schema_violation(
    fuzz_target: Target, database_url, tmp_path: Path
):
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(max_time=FUZZ_MAX_SECONDS, max_examples=FUZZ_MAX_EXAMPLES,
                                    decoy_id=fuzz_target.decoy_id))
    started = time.monotonic()
    run = subprocess.run(
        [str(SCHEMATHESIS), "--no-color", "--config-file", str(config), "run",
         f"{fuzz_target.server.url}/api/docs/openapi.json", "--checks", "all",
         "--phases", "examples,coverage,fuzzing", "--output-truncate", "false"],
        env={**os.environ, "SHOPAPI_FUZZ_TOKEN": fuzz_target.token}, cwd=tmp_path,
        capture_output=True, text=True, timeout=FUZZ_MAX_SECONDS + 60,
    )
    report = run.stdout + run.stderr
    summary = report[report.find("SUMMARY"):] if "SUMMARY" in report else report[-3000:]
    print(f"schemathesis ran {time.monotonic() - started:.0f} s\n{summary}")
    assert run.returncode == 0, report[-30000:]
    assert "Tested: " in report and "0 generated" not in report

    # the run must have been an admin's from start to end, and the server still whole
    assert fuzz_target.server.request("GET", "/healthz")[0] == 200
    assert db_rows(database_url, "SELECT role, is_active FROM users WHERE id = %s",
                   (fuzz_target.admin_id,)) == [("ADMIN", True)]
