"""The real nginx (Debian's package) running deploy/nginx.conf on loopback, for live tests.

`render_nginx_conf(upstreams, listen_port, workdir)` writes the file as ops render it for a VM
(deploy/render_nginx_conf.py: fixed upstreams instead of Docker's DNS), with every path nginx
writes (pid, logs, temporary files) under `workdir`, so it runs as any user. `running_nginx`
starts it in the foreground and stops it; `nginx_front` puts it in front of a live gunicorn.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from prometheus_client.parser import text_string_to_metric_families

from shopapi.config import ROOT
from tests.faults.helpers import real_servers_required, server_missing
from tests.live import LiveServer, free_port

DEBIAN_NGINX = "/usr/sbin/nginx"  # not on a non-root user's PATH
NO_NGINX = "nginx is not installed (bin/test installs Debian's package: apt-get install nginx)"


def _renderer() -> ModuleType:
    """deploy/render_nginx_conf.py, the ops' script (deploy/ is no package)."""
    spec = importlib.util.spec_from_file_location(
        "render_nginx_conf", ROOT / "deploy" / "render_nginx_conf.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


renderer = _renderer()


def nginx_binary() -> str | None:
    """The nginx to run; None when it is not installed (the caller skips), except under
    SHOPAPI_REQUIRE_REAL_SERVERS=1 (.ci/run), where a missing nginx fails the test here: every
    test that runs nginx asks this first, so none of them can pass by skipping it."""
    found = shutil.which("nginx")
    if found:
        return found
    if os.access(DEBIAN_NGINX, os.X_OK):
        return DEBIAN_NGINX
    if real_servers_required():
        server_missing(NO_NGINX)
    return None


def require_nginx() -> str:
    """The nginx to run, or the test stops here: skipped, or failed under
    SHOPAPI_REQUIRE_REAL_SERVERS=1 (server_missing)."""
    return nginx_binary() or server_missing(NO_NGINX)


def render_nginx_conf(upstreams: Sequence[str], listen_port: int, workdir: Path) -> Path:
    """deploy/nginx.conf rendered for `upstreams` (`host:port`), listening on
    127.0.0.1:`listen_port`, with pid, logs and temporary files under `workdir`; its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    text = renderer.render(
        (ROOT / "deploy" / "nginx.conf").read_text(),
        upstreams,
        listen=f"127.0.0.1:{listen_port}",
        pid=str(workdir / "nginx.pid"),
        error_log=str(workdir / "logs" / "error.log"),
        access_log=str(workdir / "logs" / "access.log"),
        temp_dir=str(workdir / "tmp"),
    )
    conf = workdir / "nginx.conf"
    conf.write_text(text)
    return conf


def nginx_test(conf: Path) -> subprocess.CompletedProcess:
    """`nginx -t` of `conf` (its prefix is the file's folder)."""
    binary = require_nginx()
    # -e: the log of what happens before the file is read (a build's compiled-in path, e.g.
    # Ubuntu's /var/log/nginx/error.log, is not writable by a non-root user)
    return subprocess.run(
        [binary, "-t", "-p", str(conf.parent), "-c", str(conf), "-e", str(conf.parent / "t.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )


@dataclass
class RunningNginx:
    port: int
    workdir: Path
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.workdir / "logs" / "access.log"

    @property
    def error_log(self) -> Path:
        return self.workdir / "logs" / "error.log"

    def access_entries(self) -> list[dict]:
        """Every line of the JSON access log so far (nginx writes each at the request's end)."""
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def running_nginx(
    upstreams: Sequence[str], workdir: Path | None = None, timeout: float = 10
) -> Iterator[RunningNginx]:
    """nginx in the foreground on a free loopback port in front of `upstreams`; stopped
    (gracefully, SIGQUIT) on exit. Skips the test when nginx is not installed."""
    binary = require_nginx()
    owned = workdir is None
    if workdir is None:
        # readable by the worker processes' user when the master runs as root
        workdir = Path(tempfile.mkdtemp(prefix="shopapi-nginx-"))
        workdir.chmod(0o755)
    port = free_port()
    conf = render_nginx_conf(upstreams, port, workdir)
    stderr = (workdir / "logs" / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "logs" / "error.log")]
        + ["-g", "daemon off;"],
        stdout=stderr,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout
        while not _listening(port):
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(workdir / 'logs' / 'stderr.log').read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not listen in time")
            time.sleep(0.05)
        yield RunningNginx(port, workdir, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        stderr.close()
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Front:
    """nginx on loopback in front of one live gunicorn, as the compose stack runs them."""

    app: LiveServer
    nginx: RunningNginx

    def requests_seen(self) -> Counter[tuple[str, str, str]]:
        """Requests the app has answered, all workers: (method, route template, status) ->
        count, from a direct scrape of /metrics (loopback, no proxy: allowed), which is not
        counted itself."""
        with urllib.request.urlopen(f"{self.app.url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        seen: Counter[tuple[str, str, str]] = Counter()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "http_requests_total" and labels.get("route") != "/metrics":
                    seen[(labels["method"], labels["route"], labels["status"])] += int(sample.value)
        return seen

    def app_log_request_ids(self) -> list[str]:
        """The request ids of the app's access log so far (LOG_LEVEL=INFO)."""
        ids = []
        for line in self.app.log.read_text().splitlines():
            if line.startswith("{") and '"event":"request"' in line:
                ids.append(json.loads(line)["request_id"])
        return ids


@contextlib.contextmanager
def nginx_front(env: dict[str, str], workers: int = 2) -> Iterator[Front]:
    """A live gunicorn with `env` that trusts the loopback proxy (like compose: one hop, the
    proxy's network), and nginx in front of it."""
    require_nginx()
    env = {"TRUSTED_PROXIES": "1", "TRUSTED_PROXY_NETWORKS": "127.0.0.1/32", **env}
    with (
        LiveServer(env, workers=workers) as app,
        running_nginx([f"127.0.0.1:{app.port}"]) as nginx,
    ):
        yield Front(app, nginx)
    app.log.unlink(missing_ok=True)


# ------------------------------------------------------------------ raw HTTP/1.1 on a socket


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    body: bytes


def _read_response(data: bytes) -> tuple[RawResponse, bytes] | None:
    """The first complete response in `data` and what follows it, or None if incomplete."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                return None
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return None
            body, rest = body + rest[:size], rest[size + 2 :]
            if size == 0:
                return RawResponse(status, headers, body), rest
    length = int(headers.get("content-length", "0"))
    if len(rest) < length:
        return None
    return RawResponse(status, headers, rest[:length]), rest[length:]


def exchange(
    port: int, raw: bytes, settle: float = 0.3, timeout: float = 10, expect: int | None = None
) -> list[RawResponse]:
    """Send `raw` as is on one connection; every response that comes back until the server
    closes, or nothing more arrives for `settle` seconds after a complete one (or, with
    `expect`, as soon as that many have come)."""
    responses: list[RawResponse] = []
    buffer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(settle if responses else max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            buffer += chunk
            while (parsed := _read_response(buffer)) is not None:
                response, buffer = parsed
                responses.append(response)
            if expect is not None and len(responses) >= expect:
                break
    return responses
