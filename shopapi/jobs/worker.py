"""`shopapi worker`: the procrastinate worker, the event relay beside it, its own /metrics.

One process runs the jobs of every queue (WORKER_CONCURRENCY at once) and one relay loop;
start more processes to scale (`docker compose up --scale worker=N`): jobs are fetched with
FOR UPDATE SKIP LOCKED and events relayed the same way, so workers share the work without
coordinating. SIGTERM (or SIGINT) stops fetching; running jobs finish, then the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import msgspec
import procrastinate
import psycopg
import psycopg_pool
from procrastinate.app import WorkerOptions

from shopapi.cache import CatalogCache
from shopapi.client_ip import Networks
from shopapi.config import Settings
from shopapi.db import make_pool
from shopapi.instruments import PROXY_HEADERS, may_scrape
from shopapi.jobs import tasks
from shopapi.jobs.context import WorkerContext
from shopapi.payment_providers import make_provider
from shopapi.redis_client import make_redis
from shopapi.replica import WritePositions
from shopapi.services import deliveries, events
from shopapi.services.email import Mailer

log = logging.getLogger("shopapi.worker")

_encode = msgspec.json.Encoder().encode
# LogRecord attributes that are not extras
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonLines(logging.Formatter):
    """One JSON object per line; extras (event_id, webhook_id, task, ...) become fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **{k: v for k, v in vars(record).items() if k not in _STANDARD},
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line).decode(errors="replace")


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # one line per request or job otherwise; our own lines say what each job did, with ids
    if logging.getLogger().level > logging.DEBUG:
        for noisy in ("httpx", "procrastinate"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


async def run_relay(wctx: WorkerContext, stop: asyncio.Event) -> None:
    """Relay committed events into jobs until `stop`; a full batch is followed at once, an
    idle look waits RELAY_INTERVAL. The database going away is waited out, not fatal."""
    while not stop.is_set():
        relayed = 0
        try:
            relayed, jobs = await events.relay_events(wctx.pool)
            if relayed:
                log.debug("relayed %d event(s) into %d job(s)", relayed, jobs)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            log.warning("relay: database unavailable (%s), retrying", type(exc).__name__)
            await _wait(stop, 1.0)
            continue
        if relayed < events.RELAY_BATCH:
            await _wait(stop, wctx.settings.relay_interval)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes are not worth a log line each


class _MetricsServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


# the WSGI environ's names of instruments.PROXY_HEADERS
_PROXY_KEYS = tuple("HTTP_" + name.upper().replace("-", "_") for name in PROXY_HEADERS)


def start_metrics(port: int, allowed: Networks) -> WSGIServer | None:
    """The worker's /metrics on its own port (Prometheus scrapes each worker there), in a
    thread. Who may read it is the API's rule (instruments.may_scrape); anyone else gets the
    404 of an unknown page."""
    if not port:
        return None
    from prometheus_client import make_wsgi_app

    metrics = make_wsgi_app()

    def private(environ: dict, start_response: Any) -> Any:
        proxied = any(key in environ for key in _PROXY_KEYS)
        if not may_scrape(environ.get("REMOTE_ADDR"), proxied, allowed):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Not Found"]
        return metrics(environ, start_response)

    server = make_server("", port, private, _MetricsServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on :%d/metrics", server.server_port)
    return server


RESTART_WAIT = 1.0  # seconds before the job worker starts again after losing the database


async def run_worker(
    settings: Settings, *, queues: list[str] | None = None, install_signal_handlers: bool = True
) -> None:
    """Run until SIGTERM/SIGINT (or cancelled, in tests: `install_signal_handlers=False`).
    Every connection is direct (DATABASE_DIRECT_URL): the job engine LISTENs on one."""
    pool = make_pool(settings, settings.direct_dsn)
    http = httpx.AsyncClient(
        follow_redirects=False, timeout=deliveries.ATTEMPT_TIMEOUT, trust_env=False
    )
    # the API's catalog cache, to invalidate the stock the worker gives back, and with a read
    # replica the write position its catalog reads wait for (shopapi.replica)
    caching = settings.cache_enabled and bool(settings.cache_ttl)
    shared_redis = make_redis(settings) if caching or settings.database_read_url else None
    wctx = WorkerContext(
        settings=settings,
        pool=pool,
        mailer=Mailer(settings),
        http=http,
        payments=make_provider(settings),
        cache=CatalogCache(shared_redis if caching else None, settings.cache_ttl),
        writes=WritePositions(pool, shared_redis) if settings.database_read_url else None,
    )
    stop = asyncio.Event()
    app = tasks.configure(settings)
    options: WorkerOptions = {
        "concurrency": settings.worker_concurrency,
        "additional_context": {"shop": wctx},
        "delete_jobs": "successful",
        # scheduled retries wake no LISTEN: look for due jobs every second
        "fetch_job_polling_interval": 1.0,
        "update_heartbeat_interval": max(settings.worker_stalled_after / 3, 0.5),
        "stalled_worker_timeout": settings.worker_stalled_after,
        # our own handlers below: a signal stops for good, a lost database does not
        "install_signal_handlers": False,
    }
    if queues:  # else every queue
        options["queues"] = queues
    try:
        async with app.open_async():
            relay = asyncio.create_task(run_relay(wctx, stop), name="event relay")
            started = time.monotonic()
            if install_signal_handlers:
                _on_signals(stop)
            log.info("worker started", extra={"queues": queues or "all", "pid": os.getpid()})
            try:
                await _supervise(app, options, stop)
            finally:
                stop.set()
                await relay
                log.info("worker stopped after %.1f s", time.monotonic() - started)
    finally:
        await http.aclose()
        await wctx.payments.close()
        if shared_redis is not None:
            await shared_redis.aclose()
        await pool.close()


def _on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def _supervise(app: procrastinate.App, options: WorkerOptions, stop: asyncio.Event) -> None:
    """procrastinate's worker until `stop`: cancelling it is its graceful stop (no new jobs,
    running ones finish). It also ends when its LISTEN connection dies with the database;
    then it is started again (its jobs were left `doing` and come back as stalled jobs)."""
    while not stop.is_set():
        jobs = asyncio.create_task(app.run_worker_async(**options), name="job worker")
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({jobs, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not jobs.done():
                jobs.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(jobs, return_exceptions=True)
        if not stop.is_set():
            error = jobs.exception() if not jobs.cancelled() else None
            log.warning(
                "job worker ended (%s); starting it again in %.0f s",
                type(error).__name__ if error else "database connection lost",
                RESTART_WAIT,
            )
            await _wait(stop, RESTART_WAIT)


def main(settings: Settings, *, queues: list[str] | None = None) -> None:
    # the worker exposes its own registry; it never writes into gunicorn's multiprocess files
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    configure_logging(settings.log_level)
    start_metrics(settings.worker_metrics_port, settings.metrics_allowed_networks)
    asyncio.run(run_worker(settings, queues=queues))
