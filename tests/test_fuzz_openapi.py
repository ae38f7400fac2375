"""Fuzzing: schemathesis 4 turns our own OpenAPI document into requests for a live gunicorn;
no answer may be a 5xx, an undocumented status, or a body or header that breaks the document.

One run covers every operation with all four phases (examples; coverage: boundary values,
every enum, missing and malformed parts; fuzzing; stateful: chains along inferred links),
positive and negative data, and every check schemathesis runs by default (all of them, unless
the config below turns one off for one operation; object_level_authorization needs several
accounts and is left to tests/security/test_api1_object_level_authz.py), as an ADMIN so the
protected operations are reached. It is deterministic (derandomized, no example database) so
CI sees the same cases each time, and bounded: FUZZ_MAX_EXAMPLES generated cases per operation
(default 30: about 2,500 requests in a minute here; 100 gives about 4,500 in two minutes).
The schemathesis CLI runs in a subprocess: its report names each failure with a curl line
that reproduces it (the pytest plugin's lazy loader does not run under pytest 9.2).
Run alone with `pytest tests/test_fuzz_openapi.py`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from shopapi.seed import seed
from tests.conftest import _CLEAN_SQL, app_env, db_rows, make_settings, open_pool
from tests.live import LiveServer

pytestmark = [pytest.mark.live, pytest.mark.no_db]  # no_db: the fixture seeds its own data

FUZZ_MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "30"))
# a guard only: schemathesis' own `max-time` would repeat the fuzzing until it is spent
FUZZ_TIMEOUT_SECONDS = 600
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")

# Every check is on; the [[operations]] blocks switch one off where the contract refuses
# schema-valid data with a documented 4xx that JSON Schema cannot express.
# One worker: with two threads, hypothesis' lambda descriptions (ast.parse) crash CPython 3.11.
CONFIG = """
seed = 20261126
request-timeout = 15
workers = 1

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

# `category_id` must name an existing category (422 otherwise); a made-up If-Match is stale (412)
[[operations]]
include-path-regex = "^/api/products(/\\\\{{product_id\\\\}})?$"
include-method = ["POST", "PUT", "PATCH"]
checks.positive_data_acceptance.enabled = false

# each product at most once per order, existing and for sale (422 otherwise)
[[operations]]
include-path = "/api/orders"
include-method = "POST"
checks.positive_data_acceptance.enabled = false

# a cart line must name an existing product for sale, a claim a live guest token, a checkout a
# cart with lines and the caller's own address (422 or 404 otherwise)
[[operations]]
include-path = ["/api/cart/items/{{product_id}}", "/api/cart/claim", "/api/cart/checkout"]
include-method = ["PUT", "POST"]
checks.positive_data_acceptance.enabled = false

# writes to a user always aim at a decoy customer: were the fuzzing admin to demote or
# deactivate itself, every later case would be a plain 401 and prove nothing. The decoy has an
# order, so DELETE deactivates it rather than removes it and later edits still reach it.
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
def fuzz_target(app_loop, database_url, _cleaner, redis_client):
    """The contract's seed (users and a small catalog) behind a 2-worker gunicorn."""
    _cleaner.execute(_CLEAN_SQL)
    redis_client.flushdb()
    app_settings = make_settings(database_url)
    pool = open_pool(app_loop, app_settings)
    try:
        app_loop.run(seed, pool, app_settings)
    finally:
        app_loop.run(pool.close)
    with LiveServer(app_env(database_url, ACCESS_TOKEN_TTL=3600), workers=2) as server:
        status, tokens, _ = server.request(
            "POST", "/api/auth/login", {"email": "admin@example.com", "password": "adminpass123"}
        )
        assert status == 200, tokens
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        admin_id = server.request("GET", "/api/auth/me", headers=auth)[1]["id"]
        decoy_login = {"email": "decoy@example.com", "password": "decoy-pass"}
        status, decoy, _ = server.request("POST", "/api/auth/register", decoy_login)
        assert status == 201, decoy
        decoy_token = server.request("POST", "/api/auth/login", decoy_login)[1]["access_token"]
        product_id = server.request("GET", "/api/products?per_page=1")[1]["items"][0]["id"]
        status, order, _ = server.request(
            "POST",
            "/api/orders",
            {"items": [{"product_id": product_id, "quantity": 1}]},
            headers={"Authorization": f"Bearer {decoy_token}"},
        )
        assert status == 201, order
        yield Target(server, tokens["access_token"], admin_id, decoy["id"])
    server.log.unlink(missing_ok=True)


def test_fuzzing_every_operation_finds_no_server_error_and_no_schema_violation(
    fuzz_target: Target, database_url, tmp_path: Path
):
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(max_examples=FUZZ_MAX_EXAMPLES, decoy_id=fuzz_target.decoy_id))
    started = time.monotonic()
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--no-color",
            "--config-file",
            str(config),
            "run",
            f"{fuzz_target.server.url}/api/docs/openapi.json",
            "--output-truncate",
            "false",
        ],
        env={**os.environ, "SHOPAPI_FUZZ_TOKEN": fuzz_target.token},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=FUZZ_TIMEOUT_SECONDS,
    )
    report = run.stdout + run.stderr
    summary = report[report.find("SUMMARY") :] if "SUMMARY" in report else report[-3000:]
    print(f"schemathesis ran {time.monotonic() - started:.0f} s\n{summary}")
    assert run.returncode == 0, report[-30000:]
    # every documented operation was reached, with real numbers of cases
    operations = sum(
        len(ops)
        for ops in fuzz_target.server.request("GET", "/api/docs/openapi.json")[1]["paths"].values()
    )
    assert re.search(rf"Tested: {operations}\b", report), summary
    generated = re.search(r"(\d+) generated", report)
    assert generated and int(generated.group(1)) >= operations * 10, summary

    # the run must have been an admin's from start to end, and the server still whole
    assert fuzz_target.server.request("GET", "/healthz")[0] == 200
    assert db_rows(
        database_url, "SELECT role, is_active FROM users WHERE id = %s", (fuzz_target.admin_id,)
    ) == [("ADMIN", True)]
