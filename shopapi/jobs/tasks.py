"""The worker's tasks: plain async functions that call services, like the resources do.

`app` declares them; `shopapi worker` runs them with `app.with_connector(...)` on the real
database. Task names are fixed (events.sql, webhooks.sql and users.sql defer jobs by name,
in SQL, in the same statement that relays an event or issues an account token).
Queues: `emails`, `webhooks`, `payments`, `housekeeping`.
"""

from __future__ import annotations

import datetime
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import procrastinate
import psycopg_pool
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy, RetryDecision

from shopapi import instruments
from shopapi.config import Settings
from shopapi.jobs.context import WorkerContext
from shopapi.services import auth, carts, deliveries, events, notifications, orders, payments

log = logging.getLogger("shopapi.jobs")


class EnginePool:
    """Builds the job engine's own pool (fetching and finishing jobs, its LISTEN connection)
    from the settings the worker gives at start: procrastinate's connector calls it each
    time the app is opened, and closes what it built when the app closes."""

    settings: Settings | None = None

    def __call__(self, **kwargs: Any) -> psycopg_pool.AsyncConnectionPool:
        settings = self.settings
        assert settings is not None, "shopapi.jobs.tasks.configure(settings) first"
        # LISTEN holds a session: never through a transaction pooler (DATABASE_DIRECT_URL)
        return psycopg_pool.AsyncConnectionPool(
            settings.direct_dsn,
            min_size=1,
            max_size=settings.worker_concurrency + 2,
            kwargs={"application_name": "shopapi-worker"},
            name="procrastinate",
            **kwargs,  # open=False and check=, from procrastinate
        )


ENGINE_POOL = EnginePool()
app = procrastinate.App(connector=procrastinate.PsycopgConnector(pool_factory=ENGINE_POOL))


class RetryAt(Exception):
    """The task failed and says itself when to try again (a webhook's logged next attempt)."""

    def __init__(self, at: datetime.datetime, reason: str | None) -> None:
        super().__init__(reason or "retry")
        self.at = at


class Backoff(BaseRetryStrategy):
    """RetryAt is retried when it says; any other error after JOB_RETRY_BASE x 4^(n-1)
    seconds, up to JOB_MAX_ATTEMPTS (set by the worker from its settings at start)."""

    max_attempts = 8
    base = 15.0

    def configure(self, max_attempts: int, base: float) -> None:
        self.max_attempts, self.base = max_attempts, base

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, RetryAt):
            return RetryDecision(retry_at=exception.at)
        attempt = job.attempts + 1
        if attempt >= self.max_attempts:
            return None
        delay = datetime.timedelta(seconds=deliveries.retry_delay(self.base, attempt))
        return RetryDecision(retry_at=datetime.datetime.now(datetime.UTC) + delay)


BACKOFF = Backoff()


def configure(settings: Settings) -> procrastinate.App:
    """The app, set up for this worker's settings (database, retries); open it to use it."""
    ENGINE_POOL.settings = settings
    BACKOFF.configure(settings.job_max_attempts, settings.job_retry_base)
    return app


def counted(
    name: str,
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Count every run of a task in shopapi_jobs_total{task, status}."""

    def wrap(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fn)
        async def run(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await fn(*args, **kwargs)
            except RetryAt:
                instruments.JOBS.labels(task=name, status="retry").inc()
                raise
            except Exception:
                instruments.JOBS.labels(task=name, status="error").inc()
                log.exception("job %s failed", name, extra={"task": name, **kwargs})
                raise
            instruments.JOBS.labels(task=name, status="succeeded").inc()
            return result

        return run

    return wrap


def _shop(context: procrastinate.JobContext) -> WorkerContext:
    return context.additional_context["shop"]


@app.task(name="send_event_email", queue="emails", pass_context=True, retry=BACKOFF)
@counted("send_event_email")
async def send_event_email(context: procrastinate.JobContext, event_id: str) -> None:
    await notifications.send_event_email(_shop(context), event_id)


@app.task(name="send_account_email", queue="emails", pass_context=True, retry=BACKOFF)
@counted("send_account_email")
async def send_account_email(context: procrastinate.JobContext, token_id: int) -> None:
    await notifications.send_account_email(_shop(context), token_id)


@app.task(name="deliver_webhook", queue="webhooks", pass_context=True, retry=BACKOFF)
@counted("deliver_webhook")
async def deliver_webhook(
    context: procrastinate.JobContext, event_id: str, webhook_id: int
) -> None:
    attempt = await deliveries.deliver(
        _shop(context), event_id, webhook_id, attempt=context.job.attempts + 1
    )
    if attempt.retry_at is not None:
        raise RetryAt(attempt.retry_at, attempt.error)


@app.task(name="refund_payment", queue="payments", pass_context=True, retry=BACKOFF)
@counted("refund_payment")
async def refund_payment(context: procrastinate.JobContext, order_id: int) -> str | None:
    """Deferred in SQL with what needs it (a paid order cancelled, a payment that arrived for
    a cancelled one), under the lock `refund-order-<id>`."""
    return await payments.refund_payment(_shop(context), order_id)


# ------------------------------------------------------------------ periodic jobs

# Hourly housekeeping: each entry deletes what outlived its retention.
HOUSEKEEPING: dict[str, Callable[[WorkerContext], Awaitable[int]]] = {
    "idempotency_keys": lambda w: orders.purge_idempotency_keys(
        w.pool, w.settings.idempotency_key_ttl
    ),
    "refresh_tokens": lambda w: auth.purge_refresh_tokens(w.pool),
    "account_tokens": lambda w: auth.purge_account_tokens(w.pool),
    "events": lambda w: events.purge_events(w.pool, w.settings.event_retention),
    "guest_carts": lambda w: carts.purge_expired_guest_carts(w.pool),
    "payment_events": lambda w: payments.purge_payment_events(w.pool, w.settings.event_retention),
}


@app.periodic(cron="17 * * * *")
@app.task(name="housekeeping", queue="housekeeping", pass_context=True, retry=BACKOFF)
@counted("housekeeping")
async def housekeeping(context: procrastinate.JobContext, timestamp: int) -> dict[str, int]:
    removed = {name: await purge(_shop(context)) for name, purge in HOUSEKEEPING.items()}
    log.info("housekeeping: %s", removed)
    return removed


@app.periodic(cron="* * * * *")
@app.task(
    name="expire_unpaid_orders",
    queue="housekeeping",
    queueing_lock="expire_unpaid_orders",
    pass_context=True,
)
@counted("expire_unpaid_orders")
async def expire_unpaid_orders(context: procrastinate.JobContext, timestamp: int) -> int:
    """Every minute: pending orders past ORDER_PAYMENT_TIMEOUT are cancelled (stock back)."""
    return await payments.expire_unpaid_orders(_shop(context))


@app.periodic(cron="* * * * * */5")
@app.task(
    name="retry_stalled_jobs",
    queue="housekeeping",
    queueing_lock="retry_stalled_jobs",
    pass_context=True,
)
@counted("retry_stalled_jobs")
async def retry_stalled_jobs(context: procrastinate.JobContext, timestamp: int) -> int:
    """Jobs left `doing` by a worker that stopped sending heartbeats (killed, frozen, cut
    off) are run again: at least once, never lost."""
    manager = context.app.job_manager
    stalled = list(
        await manager.get_stalled_jobs(
            seconds_since_heartbeat=_shop(context).settings.worker_stalled_after
        )
    )
    for job in stalled:
        log.warning("retrying stalled job %s (%s)", job.id, job.task_name)
        await manager.retry_job(job)
    return len(stalled)
