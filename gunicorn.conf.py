"""gunicorn settings: `gunicorn -c gunicorn.conf.py shopapi.asgi:app`.

Every value can be overridden by the environment (twelve-factor) or on the command line.
Workers import the app after fork (no preload_app), so each opens its own database pool.
Prometheus counts from all workers are merged through PROMETHEUS_MULTIPROC_DIR (see the hooks).
The master checks the app's settings before any worker exists, and gives every worker one
signing key (see on_starting).
"""

from __future__ import annotations

import glob
import multiprocessing
import os
import shutil
import signal
import tempfile


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


# --- sockets -----------------------------------------------------------------------------
# BIND wins over PORT; the default listens on every interface of the container
bind = os.environ.get("BIND") or f"0.0.0.0:{os.environ.get('PORT') or '8000'}"
backlog = _int_env("GUNICORN_BACKLOG", 2048)

# --- workers -----------------------------------------------------------------------------
# gunicorn's asgi worker: one event loop per process (uvloop) serving keep-alive
# connections; the app is async end to end (bcrypt alone runs on PASSWORD_HASH_THREADS
# threads of its own). Its ASGI lifespan opens the pools at start-up and closes them on exit.
# One worker per core keeps every core busy, and never fewer than two: one stuck worker must
# not stop the API. Each opens up to DB_POOL_MAX connections per pool.
# (Measured in bin/bench against sync workers: README, "Performance".)
workers = max(2, _int_env("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS") or "asgi"
timeout = 30  # a worker silent this long is killed and replaced
graceful_timeout = 30  # on SIGTERM, in-flight requests get this long to finish
keepalive = _int_env("GUNICORN_KEEPALIVE", 5)  # idle seconds before a client connection closes
max_requests = _int_env("GUNICORN_MAX_REQUESTS", 0)  # 0: never recycle workers
max_requests_jitter = _int_env("GUNICORN_MAX_REQUESTS_JITTER", 0)
# import the app in each worker after fork: pools, Redis sockets and mmap'ed metric files
# must not be shared between processes
preload_app = False
# workers touch a heartbeat file every second: keep it in memory, not on a container's
# overlay filesystem where a slow write can get a healthy worker killed
# (gunicorn creates it there with mkstemp: no predictable name, hence the noqa)
_SHM = "/dev/shm"  # noqa: S108
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or (
    _SHM if os.path.isdir(_SHM) else None
)

# --- request limits (gunicorn answers 400 above them, before the app sees anything) ------
limit_request_line = 4094  # request line incl. query string, bytes
limit_request_fields = 100  # header count
limit_request_field_size = 8190  # one header, bytes (long bearer tokens fit)

# --- logging -----------------------------------------------------------------------------
# the app writes one JSON line per request itself; gunicorn's access log would double it
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# --- control socket ----------------------------------------------------------------------
# gunicorn 27 opens ~/.gunicorn/gunicorn.ctl by default: several instances on one machine
# would fight over it, and the container user has no home directory
control_socket_disable = True

# --- Prometheus multiprocess mode --------------------------------------------------------
_created: list[str] = []  # the directory on_starting made itself, removed again on exit


def _one_signing_key() -> None:
    """Refuse to start when nothing may sign tokens (APP_ENV and SECRET_KEY both unset, or
    production without a strong key), with the reason, before a worker exists; and when an
    explicit development/test run has no SECRET_KEY, make its random key here, in the master,
    so that every worker inherits the same one (workers replaced later too): a token from one
    worker is valid on the others."""
    from shopapi.config import ConfigError, share_signing_key

    try:
        share_signing_key()
    except ConfigError as exc:
        raise SystemExit(f"shopapi: refusing to start: {exc}") from None


def on_starting(server) -> None:
    """Before any worker exists: check the settings and share one signing key
    (`_one_signing_key`), and give the workers an empty directory for their metric files.

    prometheus-client chooses multiprocess mode when it is first imported, so the variable
    must be in the environment the workers inherit; stale files from a previous run would
    otherwise be added to the new counts.
    """
    _one_signing_key()
    # the app's rate limits, while Redis is down, grant each worker its share of a limit
    # (shopapi.ratelimits.server_workers)
    # (written for the workers, not a setting read from the environment)
    os.environ.update(SHOPAPI_SERVER_WORKERS=str(server.cfg.workers))
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = tempfile.mkdtemp(prefix="shopapi-prometheus-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        _created.append(path)
    server.log.info("Prometheus multiprocess directory: %s", path)


# A SIGTERM that reaches a new worker before its event loop runs would be lost: before the
# worker installs its handlers it runs the arbiter's handler copied into the child, and uvloop
# drops a signal that arrives before the loop starts. The worker would then serve on until
# graceful_timeout ran out and the arbiter killed it (seen when a worker replaced after
# GUNICORN_MAX_REQUESTS was stopped while it booted). So SIGTERM waits, blocked, until the
# loop runs.
def post_fork(server, worker) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def post_worker_init(worker) -> None:
    loop = getattr(worker, "loop", None)  # the asgi worker's, about to run
    if loop is None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    else:
        loop.call_soon(signal.pthread_sigmask, signal.SIG_UNBLOCK, {signal.SIGTERM})


def child_exit(server, worker) -> None:
    """A worker died or was replaced: its live gauges (the pool sizes) must stop counting."""
    from prometheus_client import multiprocess  # after on_starting set the directory

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    for path in _created:
        shutil.rmtree(path, ignore_errors=True)
