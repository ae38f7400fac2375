"""Real parts for the background-work tests: an SMTP server (aiosmtpd), an HTTP receiver
that checks webhook signatures, and `shopapi worker` processes."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from shopapi.config import ROOT
from tests.live import free_port


def wait_until(check: Callable[[], Any], timeout: float = 20, pace: float = 0.05) -> Any:
    """The first truthy `check()` within `timeout` seconds, else AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {check}")
        time.sleep(pace)


# ------------------------------------------------------------------ SMTP


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd API)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)
        return "250 OK"


class SmtpServer:
    """aiosmtpd on a loopback port; `stop()` and `start()` again keep the port (an outage)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.inbox = _Inbox()
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> SmtpServer:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self) -> list[email.message.EmailMessage]:
        with self.inbox.lock:
            return list(self.inbox.messages)

    def to(self, address: str, template: str | None = None) -> list[email.message.EmailMessage]:
        return [
            m
            for m in self.messages
            if m["To"] == address and (template is None or m["X-Shopapi-Template"] == template)
        ]


# ------------------------------------------------------------------ webhooks receiver


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int | str  # a status, or "timeout" (no answer within the worker's 5 s)

    def verified(self, secret: str) -> bool:
        """The Shopapi-Signature checks out with `secret` (as a merchant would check it)."""
        parts = dict(p.split("=", 1) for p in self.headers["shopapi-signature"].split(","))
        expected = hmac.new(
            secret.encode(), parts["t"].encode() + b"." + self.body, hashlib.sha256
        ).hexdigest()
        return hmac.compare_digest(parts["v1"], expected)


@dataclass
class Receiver:
    """An HTTP server on loopback recording every POST; `script` is what the next requests
    get, in order ("timeout" sleeps past the worker's timeout), then `default`."""

    script: list[int | str] = field(default_factory=list)
    default: int = 200
    hang: float = 6.0
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    answer = receiver.script.pop(0) if receiver.script else receiver.default
                    receiver.received.append(
                        Received(
                            time.time(),
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            answer,
                        )
                    )
                if answer == "timeout":
                    time.sleep(receiver.hang)
                    answer = 200
                self.send_response(int(answer))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ worker processes


class WorkerProcess:
    """`shopapi worker` as ops run it, its JSON log in a file."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, "WORKER_METRICS_PORT": "0", **env}
        self.proc: subprocess.Popen | None = None
        self.log = Path(f"/tmp/shopapi-worker-{free_port()}.log")

    def start(self) -> WorkerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shopapi.cli", "worker"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: b"worker started" in self.log.read_bytes() or self.exited(), 20)
            assert not self.exited(), self.log_tail()
        except AssertionError:
            self.close()  # never leave a worker behind
            raise
        return self

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, size: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-size:]
