"""deploy/nginx.conf on Debian's nginx 1.22 (issue 18 items 9 and 11): the file the compose
stack mounts needs nginx >= 1.27.3 (`server api:8000 resolve`); deploy/render_nginx_conf.py
renders it for a VM, changing only the compose-specific lines, and the distribution's nginx
accepts the result (`nginx -t`). The same rendering runs in front of a live gunicorn in
tests/security/test_api8_nginx_front.py and test_request_smuggling.py."""

from __future__ import annotations

import difflib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shopapi.config import ROOT
from tests.live import free_port
from tests.nginx import (
    exchange,
    nginx_binary,
    nginx_test,
    render_nginx_conf,
    renderer,
    require_nginx,
    running_nginx,
)

pytestmark = pytest.mark.no_db

CONF = ROOT / "deploy" / "nginx.conf"
SCRIPT = ROOT / "deploy" / "render_nginx_conf.py"


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """(lines removed, lines added), stripped, comments and blank lines ignored."""
    removed, added = [], []
    for line in difflib.ndiff(before.splitlines(), after.splitlines()):
        text = line[2:].strip()
        if not text or text.startswith("#"):
            continue
        if line.startswith("- "):
            removed.append(text)
        elif line.startswith("+ "):
            added.append(text)
    return removed, added


def test_the_compose_file_marks_what_needs_a_newer_nginx():
    text = CONF.read_text()
    marked = text.split("# upstream-begin")[1].split("# upstream-end")[0]
    # `resolve` (nginx >= 1.27.3) and the shared zone it needs are inside the marked lines
    assert "resolve;" in marked and "zone api" in marked
    assert "resolve;" not in text.replace(marked, "")


def test_the_vm_rendering_changes_only_upstreams_resolver_listen_pid_and_logs(tmp_path):
    upstreams = ["127.0.0.1:8001", "127.0.0.1:8002", "10.0.0.7:8000"]
    conf = render_nginx_conf(upstreams, 18080, tmp_path)
    removed, added = changed_lines(CONF.read_text(), conf.read_text())
    assert sorted(removed) == sorted(
        [
            "error_log /dev/stderr warn;",
            "pid /tmp/nginx.pid;",
            "resolver 127.0.0.11 valid=10s ipv6=off;",
            "resolver_timeout 2s;",
            "zone api 64k;                   # shared state, required by `resolve`",
            "server api:8000 resolve;        # every replica's address (nginx >= 1.27.3)",
            "access_log /dev/stdout json;",
            "listen 8000;",
        ]
    )
    temp = [f"{kind}_temp_path {tmp_path}/tmp/{kind};" for kind in renderer.TEMP_PATHS]
    assert sorted(added) == sorted(
        [
            f"error_log {tmp_path}/logs/error.log warn;",
            f"pid {tmp_path}/nginx.pid;",
            *(f"server {address};" for address in upstreams),
            f"access_log {tmp_path}/logs/access.log json;",
            "listen 127.0.0.1:18080;",
            *temp,
        ]
    )


def test_debian_nginx_accepts_the_rendered_file(tmp_path):
    binary = require_nginx()
    version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
    result = nginx_test(render_nginx_conf(["127.0.0.1:8001", "127.0.0.1:8002"], 18080, tmp_path))
    assert result.returncode == 0, f"{version}: {result.stderr}"
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


def test_debian_nginx_refuses_the_compose_file_as_it_is(tmp_path):
    """Why the rendering exists: the distribution's nginx has no `resolve` (a test that starts
    passing means Debian ships >= 1.27.3, and the VM rendering could keep the DNS lines)."""
    binary = require_nginx()
    version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version)
    assert found
    if tuple(int(part) for part in found.groups()) >= (1, 27, 3):
        pytest.skip(f"{version.strip()} has `resolve`")
    conf = tmp_path / "compose.conf"
    conf.write_text(CONF.read_text().replace("/tmp/nginx.pid", str(tmp_path / "nginx.pid")))
    result = nginx_test(conf)
    assert result.returncode != 0
    assert "resolve" in result.stderr


def test_the_ops_command_writes_a_file_debian_nginx_accepts(tmp_path):
    """The README's command for a VM (with the paths moved under tmp_path, the test not being
    root on a real VM)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    command = [
        sys.executable,
        str(SCRIPT),
        "--upstream",
        "127.0.0.1:8000",
        "--upstream",
        "[::1]:8001",
        "--upstream",
        "unix:/run/shopapi/gunicorn.sock",
        "--listen",
        "127.0.0.1:18081",
        "--pid",
        str(tmp_path / "nginx.pid"),
        "--error-log",
        str(logs / "error.log"),
        "--access-log",
        str(logs / "access.log"),
        "--user",
        "",
        "--temp-dir",
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    for server in ("127.0.0.1:8000", "[::1]:8001", "unix:/run/shopapi/gunicorn.sock"):
        assert f"server {server};" in result.stdout
    conf = tmp_path / "nginx.conf"
    conf.write_text(result.stdout)
    if nginx_binary() is not None:
        tested = nginx_test(conf)
        assert tested.returncode == 0, tested.stderr


def test_the_ops_command_defaults_to_debians_paths_and_user():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--upstream", "127.0.0.1:8000"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("user www-data;\n")
    for line in (
        "pid /run/nginx.pid;",  # what Debian's systemd unit waits for
        "error_log /var/log/nginx/error.log warn;",
        "access_log /var/log/nginx/access.log json;",
        "listen 8000;",
    ):
        assert line in out, line
    assert not re.search(r"^\s*resolver", out, re.M) and "resolve;" not in out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("# upstream-end", "# end"), "upstream-begin"),
        (lambda t: t.replace("# upstream-begin", "#"), "upstream-begin"),
        (lambda t: t.replace("    resolver ", "    # resolver "), "resolver"),
        (lambda t: t.replace("listen 8000;", "listen 8000;\n        listen 8001;"), "listen"),
        (lambda t: t.replace("pid /tmp/nginx.pid;", ""), "pid"),
    ],
)
def test_the_renderer_refuses_a_file_it_cannot_follow(edit, message):
    with pytest.raises(renderer.RenderError, match=message):
        renderer.render(
            edit(CONF.read_text()),
            ["127.0.0.1:8000"],
            listen="80",
            pid="/run/nginx.pid",
            error_log="/var/log/nginx/error.log",
            access_log="/var/log/nginx/access.log",
        )


@pytest.mark.parametrize(
    "upstream", ["", "127.0.0.1", "api:8000; evil", "127.0.0.1:80 backup", "unix:relative.sock"]
)
def test_the_renderer_refuses_what_is_no_host_and_port(upstream, tmp_path):
    with pytest.raises(renderer.RenderError):
        render_nginx_conf([upstream], 18080, tmp_path)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--upstream", upstream],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "render_nginx_conf:" in result.stderr


def test_no_upstream_is_an_error(tmp_path: Path):
    with pytest.raises(renderer.RenderError, match="at least one"):
        render_nginx_conf([], 18080, tmp_path)


def test_with_no_replica_answering_nginx_says_503_problem_json_with_retry_after():
    """The rendered file runs (not only parses): nginx on loopback in front of two addresses
    where nothing listens answers the API's 503 shape, not its own HTML page."""
    with running_nginx([f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]) as nginx:
        (answer,) = exchange(
            nginx.port, b"GET /api/products HTTP/1.1\r\nHost: localhost\r\n\r\n", expect=1
        )
    assert answer.status == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == "5"
    assert json.loads(answer.body)["code"] == "service_unavailable"
    assert answer.headers["server"] == "nginx"
