"""Deployment files: Dockerfile, compose stack, nginx, CI workflow and gunicorn settings agree."""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
import types
from pathlib import Path

import pytest
import yaml
from gunicorn.config import Config

from shopapi.config import setting
from shopapi.db import yoyo_url

pytestmark = pytest.mark.no_db

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = ROOT / "gunicorn.conf.py"


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), " ".join(args.split())))
    return stages


def args_of(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [args for name, args in stage if name == instruction]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


# ------------------------------------------------------------------------------ Dockerfile


def test_dockerfile_builds_a_venv_then_runs_as_a_non_root_user():
    stages = dockerfile_stages()
    assert len(stages) >= 2
    assert all(args_of(s, "FROM")[0].startswith("python:3.11-slim") for s in stages)
    build, final = stages[0], stages[-1]
    assert any("pyproject.toml" in a for a in args_of(build, "COPY"))
    assert any("/opt/venv/bin/pip install" in a for a in args_of(build, "RUN"))
    assert any(a.startswith("--from=") and "/opt/venv" in a for a in args_of(final, "COPY"))
    users = args_of(final, "USER")
    assert users and users[-1] not in {"root", "0", "0:0"}
    # USER comes after every RUN of the final stage: nothing after it runs as root
    names = [name for name, _ in final]
    assert names.index("USER") > max(i for i, n in enumerate(names) if n == "RUN")


def test_dockerfile_keeps_sql_next_to_the_package_as_config_root_expects():
    final = dockerfile_stages()[-1]
    assert args_of(final, "WORKDIR")[-1] == "/app"
    env = " ".join(args_of(final, "ENV"))
    assert "PYTHONPATH=/app" in env and "APP_ENV=production" in env
    copied = " ".join(args_of(final, "COPY"))
    for source in ("shopapi/", "sql/", "bin/", "gunicorn.conf.py"):
        assert source in copied


def test_dockerfile_exposes_8000_and_9101_checks_healthz_and_starts_gunicorn():
    final = dockerfile_stages()[-1]
    assert args_of(final, "EXPOSE") == ["8000 9101"]  # the API, the worker's /metrics
    healthcheck = args_of(final, "HEALTHCHECK")[-1]
    assert "/healthz" in healthcheck and "urllib" in healthcheck and "curl" not in healthcheck
    assert json.loads(args_of(final, "CMD")[-1]) == [
        "gunicorn",
        "-c",
        "gunicorn.conf.py",
        "shopapi.asgi:app",
    ]


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".git", ".venv", "tests"} <= ignored


# ---------------------------------------------------------------------------- compose


def test_compose_has_every_service_with_health_checks(compose):
    services = compose["services"]
    assert {"db", "redis", "migrate", "seed", "api", "nginx"} <= services.keys()
    assert services["db"]["image"] == "postgres:16"
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["db"]["volumes"])
    assert services["redis"]["image"].startswith("redis:7")
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
    assert services["nginx"]["image"] == "nginx:1.27-alpine"
    assert "healthcheck" in services["nginx"]


def test_compose_migrates_the_apis_database_once_db_is_healthy(compose):
    services = compose["services"]
    migrate, api = services["migrate"], services["api"]
    command = migrate["command"]
    assert command[:3] == ["yoyo", "apply", "--batch"] and command[-1] == "sql/migrations"
    # the same database as the api, in the psycopg 3 scheme yoyo needs
    assert command[command.index("--database") + 1] == yoyo_url(api["environment"]["DATABASE_URL"])
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["seed"]["profiles"] == ["seed"]
    assert "bin/seed" in services["seed"]["command"]


def test_compose_api_is_scalable_behind_one_trusted_proxy(compose):
    api = compose["services"]["api"]
    env = api["environment"]
    assert "ports" not in api  # `--scale api=3` would collide on a published port
    assert env["TRUSTED_PROXIES"] == "1"
    assert env["SECRET_KEY"] == "${SECRET_KEY:?set SECRET_KEY}"
    assert "@db:5432/" in env["DATABASE_URL"] and env["REDIS_URL"].endswith("@redis:6379/0")
    # docker's stop timeout must outlast gunicorn's graceful shutdown
    graceful = runpy.run_path(str(GUNICORN_CONF))["graceful_timeout"]
    assert int(api["stop_grace_period"].rstrip("s")) > graceful
    nginx = compose["services"]["nginx"]
    assert any(str(p).endswith(":8000") for p in nginx["ports"])
    assert any("deploy/nginx.conf" in v for v in nginx["volumes"])


def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _compose_config(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose client installed")
    # an empty --env-file: a developer's .env (or shell) must not change the outcome
    empty = tmp_path / "empty.env"
    empty.write_text("")
    base = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "DOCKER_CONFIG"}}
    return subprocess.run(
        [*cli, "--env-file", str(empty), *args, "config", "-q"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


COMPOSE_SECRETS = {
    "SECRET_KEY": "test-only-secret-0123456789abcdefghij",
    "POSTGRES_PASSWORD": "test-only-database-password",
    "REDIS_PASSWORD": "test-only-redis-password",
}
# what compose refuses to start without: the secrets, and where mail goes (no default: a
# production stack must never send its users' mail to the bundled catcher by accident)
COMPOSE_REQUIRED = {**COMPOSE_SECRETS, "SMTP_URL": "smtp://relay.example.com:587"}


@pytest.mark.parametrize("profiles", [[], ["--profile", "seed", "--profile", "dev-mail"]])
def test_compose_file_is_valid_for_the_docker_client(tmp_path, profiles):
    result = _compose_config(tmp_path, *profiles, **COMPOSE_REQUIRED)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(COMPOSE_REQUIRED))
def test_compose_refuses_to_start_without_each_secret(tmp_path, missing):
    given = {name: value for name, value in COMPOSE_REQUIRED.items() if name != missing}
    result = _compose_config(tmp_path, **given)
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


def _interpolations(value: object) -> list[str]:
    """Every `${NAME...}` of a compose value (strings, lists, mappings)."""
    return re.findall(r"\$\{([^}]*)\}", json.dumps(value))


def test_compose_has_no_default_password_and_redis_requires_one(compose):
    """Issue 18 item 9: no stack starts on a published database or Redis password. Every
    mention of a password or key in compose is `${NAME:?...}` (a default would be `:-`)."""
    secrets = [
        ref
        for ref in _interpolations(compose)
        if ref.split(":")[0].split("?")[0] in COMPOSE_SECRETS
    ]
    assert secrets and all(re.fullmatch(r"[A-Z_]+:\?set [A-Z_]+", ref) for ref in secrets), secrets
    services = compose["services"]
    db, redis, api = services["db"], services["redis"], services["api"]
    assert db["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == "${REDIS_PASSWORD:?set REDIS_PASSWORD}"
    # the health check authenticates (redis-cli exits 0 on a NOAUTH reply: only PONG counts)
    assert redis["environment"]["REDISCLI_AUTH"] == "${REDIS_PASSWORD:?set REDIS_PASSWORD}"
    assert "grep -q PONG" in " ".join(redis["healthcheck"]["test"])
    env = api["environment"]
    assert env["REDIS_URL"] == "redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD}@redis:6379/0"
    assert env["DATABASE_URL"] == (
        "postgresql://shop:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}@db:5432/shop"
    )


APP_SERVICES = ("api", "worker", "migrate", "seed")


def _published(port: str | dict) -> tuple[str, str]:
    """(host address, host port) of a `ports:` entry, short or long syntax; "" = every
    interface."""
    if isinstance(port, dict):
        return port.get("host_ip", ""), str(port.get("published", ""))
    short = re.fullmatch(r"(?:([\d.]+|\[[^]]*\]):)?(\$\{[^}]*\}|[^:]+):[^:]+", str(port))
    assert short, port
    return short.group(1) or "", short.group(2)


def test_mail_catcher_is_opt_in_and_its_ui_answers_only_on_loopback(compose):
    """Mailpit's UI has no login and shows every email, password-reset links included: published
    on every interface, anyone reaching the host took over accounts. And with SMTP_URL
    defaulting to it, a production stack sent real users' mail there without anyone noticing.
    Now: mailpit runs only under the `dev-mail` profile, its UI is bound to 127.0.0.1, and
    SMTP_URL has no default (compose refuses to start without it, like a secret)."""
    services = compose["services"]
    mailpit = services["mailpit"]
    assert mailpit["profiles"] == ["dev-mail"]
    published = [_published(port) for port in mailpit["ports"]]
    assert published and all(host == "127.0.0.1" for host, _ in published), published
    for name in APP_SERVICES:
        smtp = services[name]["environment"]["SMTP_URL"]
        assert re.fullmatch(r"\$\{SMTP_URL:\?set SMTP_URL[^}]*\}", smtp), (name, smtp)
    # no service that starts without the profile needs mailpit (compose would refuse to start)
    for name, service in services.items():
        if "profiles" not in service:
            assert "mailpit" not in (service.get("depends_on") or {}), name
    # beyond loopback, the stack publishes nginx's port and nothing else
    for name, service in services.items():
        for host, port in map(_published, service.get("ports", [])):
            assert host == "127.0.0.1" or (name, port) == ("nginx", "${HTTP_PORT:-8000}"), name


def test_compose_redis_memory_is_bounded_and_never_evicts_rate_limit_counters(compose):
    """Issue 18 item 4: Redis has a memory cap, and the policy when it is reached is
    `noeviction` (writes refused, the app degrades) -- any evicting policy can drop a rate-limit
    counter inside its window and hand its client a fresh allowance."""
    command = compose["services"]["redis"]["command"]
    assert command.count("--maxmemory") == command.count("--maxmemory-policy") == 1
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    cap = command[command.index("--maxmemory") + 1]
    assert cap == "${REDIS_MAXMEMORY:-256mb}"
    default = re.fullmatch(r"\$\{REDIS_MAXMEMORY:-(\d+)mb\}", cap)
    assert default and int(default.group(1)) > 0  # 0 would mean no cap at all


def test_ci_gives_the_compose_stack_every_secret_it_requires():
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    env = workflow["jobs"]["stack"]["env"]
    assert set(COMPOSE_SECRETS) <= set(env)
    # compose has no mail relay by default either: CI sends the stack's mail to mailpit
    assert env["SMTP_URL"] == "smtp://mailpit:1025" and "dev-mail" in env["COMPOSE_PROFILES"]


# ------------------------------------------------------------------------------ nginx


def test_nginx_forwards_the_client_address_and_request_id_to_every_replica():
    conf = " ".join((ROOT / "deploy/nginx.conf").read_text().split())
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in conf
    assert re.search(r"proxy_set_header X-Request-ID \$\w+;", conf)
    assert "server api:8000 resolve;" in conf and "resolver 127.0.0.11" in conf
    assert "proxy_pass http://api;" in conf


def test_nginx_body_limit_matches_the_apps_and_metrics_stay_private():
    conf = " ".join((ROOT / "deploy/nginx.conf").read_text().split())
    size = re.search(r"client_max_body_size (\d+)m;", conf)
    assert size and int(size.group(1)) * 1024 * 1024 == int(setting("MAX_BODY_BYTES").default)
    # every spelling (tests/security/test_api8_nginx_front.py sends them through nginx)
    assert re.search(r"location ~\* \^/\+\(metrics\|readyz\) \{[^}]*return 404", conf)


def test_nginx_hides_its_version_and_drops_slow_clients():
    """Issue 18 item 9: no version in headers or error pages; a client that trickles its
    headers or body, or does not read the answer, loses the connection; upstream timeouts
    outlast gunicorn's worker timeout."""
    conf = " ".join((ROOT / "deploy/nginx.conf").read_text().split())
    assert "server_tokens off;" in conf
    for directive in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        found = re.search(rf"{directive} (\d+)s;", conf)
        assert found and 0 < int(found.group(1)) <= 30, directive
    read = re.search(r"proxy_read_timeout (\d+)s;", conf)
    timeout = runpy.run_path(str(GUNICORN_CONF))["timeout"]
    assert read and int(read.group(1)) > timeout


# --------------------------------------------------------------------------------- CI


def test_ci_runs_the_local_ci_script_against_postgres_and_redis_services():
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    job = workflow["jobs"]["test"]
    assert job["runs-on"] == "ubuntu-latest"
    assert job["services"]["postgres"]["image"] == "postgres:16"
    assert job["services"]["redis"]["image"] == "redis:7"
    for service in job["services"].values():
        assert "--health-cmd" in service["options"]
    assert job["env"] == {
        "TEST_DATABASE_ADMIN_URL": "postgresql://postgres:postgres@localhost:5432/postgres",
        "TEST_REDIS_URL": "redis://localhost:6379/15",
    }
    python = [s for s in job["steps"] if "setup-python" in s.get("uses", "")]
    assert python and python[0]["with"]["python-version"] == "3.11"
    assert job["steps"][-1]["run"] == "bash .ci/run"


# --------------------------------------------------------------------------- gunicorn


def gunicorn_settings(monkeypatch, **env: str) -> dict:
    for name in ("PORT", "BIND", "WEB_CONCURRENCY", "GUNICORN_WORKER_CLASS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(GUNICORN_CONF))


def test_gunicorn_conf_uses_only_real_gunicorn_setting_names(monkeypatch):
    """A misspelt name (say `control_socket_disabled`) would be silently ignored by gunicorn."""
    config = Config()
    for name, value in gunicorn_settings(monkeypatch).items():
        if name.startswith("_") or name == "annotations" or isinstance(value, types.ModuleType):
            continue
        assert name in config.settings, name
        config.set(name, value)  # runs gunicorn's own validator
    assert config.control_socket_disable is True
    assert config.preload_app is False
    assert config.accesslog is None
    assert config.timeout == 30 and config.graceful_timeout == 30
    assert config.limit_request_line and config.limit_request_fields
    assert config.limit_request_field_size


def test_gunicorn_conf_defaults(monkeypatch):
    conf = gunicorn_settings(monkeypatch)
    assert conf["bind"] == "0.0.0.0:8000"
    assert conf["worker_class"] == "asgi"
    assert conf["workers"] == max(2, os.cpu_count() or 1)


def test_gunicorn_conf_reads_the_environment(monkeypatch):
    conf = gunicorn_settings(
        monkeypatch,
        PORT="9000",
        WEB_CONCURRENCY="1",
        GUNICORN_WORKER_CLASS="uvicorn_worker.UvicornWorker",
    )
    assert conf["bind"] == "0.0.0.0:9000"
    assert conf["workers"] == 2  # never fewer than two: one stuck worker must not stop the API
    assert conf["worker_class"] == "uvicorn_worker.UvicornWorker"
    conf = gunicorn_settings(monkeypatch, PORT="9000", BIND="127.0.0.1:7000", WEB_CONCURRENCY="5")
    assert conf["bind"] == "127.0.0.1:7000"
    assert conf["workers"] == 5


def test_compose_runs_workers_from_the_api_image_on_the_worker_command(compose):
    worker, api = compose["services"]["worker"], compose["services"]["api"]
    assert worker["image"] == api["image"] and worker["command"] == [
        "python",
        "-m",
        "shopapi.cli",
        "worker",
    ]
    assert "ports" not in worker  # scalable: nothing published
    assert "9101/metrics" in " ".join(worker["healthcheck"]["test"])
    assert worker["environment"]["SMTP_URL"] == api["environment"]["SMTP_URL"]
