"""One webhook delivery attempt: sign, POST to the checked address, log the attempt.

The target's address is resolved and checked at delivery time (netguard), and the request
goes to that very address (Host and TLS SNI keep the name), so a name that resolves to a
public address when the webhook is created and to 127.0.0.1 later (DNS rebinding) reaches
nothing. Redirects are not followed; 5 s per attempt.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from shopapi import instruments, netguard
from shopapi.db import connection, queries
from shopapi.jobs.context import WorkerContext
from shopapi.schemas.webhooks import EventEnvelope

log = logging.getLogger("shopapi.webhooks")

ATTEMPT_TIMEOUT = 5.0  # seconds; the whole attempt: resolution, connection, answer
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class Attempt:
    """What one attempt found out; `retry_at` None once delivered or given up."""

    delivered: bool
    status_code: int | None
    error: str | None
    retry_at: datetime.datetime | None


def retry_delay(base: float, attempt: int) -> float:
    """Seconds between attempt `attempt` failing and the next: base, 4 x base, 16 x base..."""
    return base * 4 ** (attempt - 1)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The Shopapi-Signature header: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def envelope(row: dict[str, Any]) -> bytes:
    """The body of a delivery: the EventEnvelope the OpenAPI `webhooks` section documents."""
    return _encode(EventEnvelope(row["event_id"], row["type"], row["created_at"], row["data"]))


async def deliver(wctx: WorkerContext, event_id: str, webhook_id: int, attempt: int) -> Attempt:
    """Make attempt number `attempt` (1-based) of delivering an event to a webhook."""
    async with connection(wctx.pool) as conn:
        row = await queries.get_delivery(conn, webhook_id=webhook_id, event_id=event_id)
    if row is None or not row["is_active"]:  # deleted or switched off since: nothing to do
        instruments.WEBHOOK_DELIVERIES.labels(result="skipped").inc()
        return Attempt(delivered=False, status_code=None, error=None, retry_at=None)
    body = envelope(row)
    started = time.monotonic()
    status_code, error = await _post(wctx, row["url"], body, row, int(time.time()))
    duration_ms = round((time.monotonic() - started) * 1000)
    delivered = status_code is not None and 200 <= status_code < 300
    retry_at = None
    if not delivered and attempt < wctx.settings.webhook_max_attempts:
        delay = retry_delay(wctx.settings.job_retry_base, attempt)
        retry_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=delay)
    async with connection(wctx.pool) as conn:
        await queries.record_delivery(
            conn,
            webhook_id=webhook_id,
            event_id=event_id,
            event_type=row["type"],
            attempt=attempt,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
            next_attempt_at=retry_at,
        )
    result = "delivered" if delivered else ("failed" if retry_at else "given_up")
    instruments.WEBHOOK_DELIVERIES.labels(result=result).inc()
    log.info(
        "webhook %s: %s",
        result,
        error or status_code,
        extra={"event_id": event_id, "webhook_id": webhook_id, "attempt": attempt},
    )
    return Attempt(delivered, status_code, error, retry_at)


async def _post(
    wctx: WorkerContext, url: str, body: bytes, row: dict[str, Any], timestamp: int
) -> tuple[int | None, str | None]:
    """(status code, error) of one POST; the status is None when no answer came."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "shopapi-webhooks",
        "Shopapi-Event-Id": row["event_id"],
        "Shopapi-Event-Type": row["type"],
        "Shopapi-Signature": sign(row["secret"], timestamp, body),
    }
    try:
        async with asyncio.timeout(ATTEMPT_TIMEOUT):
            target, extensions = await _pinned(wctx, url, headers)
            response = await wctx.http.post(
                target, content=body, headers=headers, extensions=extensions
            )
    except netguard.AddressRefused as exc:
        return None, f"refused: {exc}"
    except TimeoutError:
        return None, f"timed out after {ATTEMPT_TIMEOUT:g} s"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}"


async def _pinned(
    wctx: WorkerContext, url: str, headers: dict[str, str]
) -> tuple[httpx.URL, dict[str, Any]]:
    """The URL with its host replaced by the checked address; Host (and SNI) keep the name."""
    scheme, host, port = netguard.url_target(url)
    addresses = await netguard.checked_addresses(
        host, port, allow_private=wctx.settings.webhook_allow_private
    )
    parsed = httpx.URL(url)
    headers["Host"] = parsed.netloc.decode("ascii")
    extensions = {"sni_hostname": host} if scheme == "https" else {}
    return parsed.copy_with(host=addresses[0]), extensions
