"""A real gunicorn serving shopapi on a free loopback port, for live tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from shopapi.config import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gunicorn_command(port: int, workers: int = 2, *extra_args: str) -> list[str]:
    """gunicorn as ops start it (gunicorn.conf.py, shopapi.asgi:app) on a loopback port."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(ROOT / "gunicorn.conf.py"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        *extra_args,
        "shopapi.asgi:app",
    ]


class LiveServer:
    def __init__(
        self,
        env: dict[str, str],
        workers: int = 2,
        extra_args: tuple[str, ...] = (),
        port: int | None = None,  # a given one: a server started again where it was
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        self.args = gunicorn_command(self.port, workers, *extra_args)
        self.proc: subprocess.Popen | None = None
        self.log = Path(f"/tmp/shopapi-live-{self.port}.log")

    def start(self, timeout: float = 20) -> LiveServer:
        return self.spawn().wait_healthy(timeout)

    def spawn(self) -> LiveServer:
        """Start the process without waiting for it (several servers start side by side)."""
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, env=self.env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT
        )
        return self

    def wait_healthy(self, timeout: float = 20) -> LiveServer:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log.read_text()[-2000:]}")
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not become healthy in time")

    def request(self, method: str, path: str, body=None, headers=None, timeout: float = 10):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None), resp.headers
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, (json.loads(raw) if raw else None), err.headers

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 35) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
