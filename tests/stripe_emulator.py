"""A real local Stripe for the payment tests: localstripe (PyPI), started on a free port.

The app talks to it through the official `stripe` library (STRIPE_API_BASE); the tests play
the buyer's phone with the same library (a card PaymentMethod, attached to the order's
PaymentIntent and confirmed, as Stripe's SDK does), and read what Stripe holds (intents,
refunds). localstripe sends signed webhooks itself once one is registered
(`register_webhook`), about a second after the payment. `signed_event` builds an event the way
Stripe signs it (HMAC-SHA256 of "<t>.<body>" with the endpoint's secret), for the deliveries
localstripe cannot produce: a redelivery of the same event id, events out of order, an event
for a PaymentIntent it cannot take through failure and then success.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import stripe

from tests.live import free_port

SECRET_KEY = "sk_test_shopapi_local"  # noqa: S105 - the emulator accepts any sk_ key
PUBLISHABLE_KEY = "pk_test_shopapi_local"
WEBHOOK_SECRET = "whsec_shopapi_local_test"  # noqa: S105
CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000341"  # attaches, then the charge is declined (localstripe)


class StripeEmulator:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(f"/tmp/localstripe-{self.port}.log")
        self.proc: subprocess.Popen | None = None
        self.client = stripe.StripeClient(
            SECRET_KEY, base_addresses={"api": self.url}, max_network_retries=0
        )

    def settings(self) -> dict[str, str]:
        """The app's settings for this emulator (PAYMENT_PROVIDER=stripe)."""
        return {
            "PAYMENT_PROVIDER": "stripe",
            "STRIPE_SECRET_KEY": SECRET_KEY,
            "STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": self.url,
        }

    def start(self, timeout: float = 20) -> StripeEmulator:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "localstripe", "--port", str(self.port), "--from-scratch"],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"localstripe exited: {self.log.read_text()[-2000:]}")
            try:
                self.client.v1.balance.retrieve()
                return self
            except stripe.APIConnectionError:
                time.sleep(0.1)
        raise RuntimeError("localstripe did not answer in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def register_webhook(self, url: str, secret: str = WEBHOOK_SECRET) -> None:
        """localstripe POSTs every event, signed with `secret`, to `url` (one endpoint: a
        new registration replaces the previous one)."""
        data = urllib.parse.urlencode({"url": url, "secret": secret}).encode()
        request = urllib.request.Request(
            f"{self.url}/_config/webhooks/shopapi", data=data, method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            assert response.status == 200

    # ---------------------------------------------------------------- the buyer's phone

    def pay(self, intent_id: str, card: str = CARD_OK) -> Any:
        """What Stripe's SDK does with the client secret: a card PaymentMethod, attached to
        the PaymentIntent and confirmed. A declined card raises stripe.CardError (402)."""
        method = self.client.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
            }
        )
        self.client.v1.payment_intents.update(intent_id, params={"payment_method": method.id})
        return self.client.v1.payment_intents.confirm(intent_id)

    def intent(self, intent_id: str) -> Any:
        return self.client.v1.payment_intents.retrieve(intent_id)

    def refunds(self, intent_id: str) -> list[Any]:
        return list(self.client.v1.refunds.list(params={"payment_intent": intent_id}).data)

    def intents_of_order(self, order_id: int, *, besides: set[str] = frozenset()) -> list[Any]:
        """Every PaymentIntent the emulator holds for an order (metadata.order_id), all pages.
        The emulator lives for the whole session while order ids restart in each test: pass
        the ids that existed before the test as `besides` (`intent_ids()`)."""
        return [
            pi
            for pi in self.client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()
            if pi.metadata.to_dict().get("order_id") == str(order_id) and pi.id not in besides
        ]

    def intent_ids(self) -> set[str]:
        return {
            pi.id
            for pi in self.client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()
        }


def signature(body: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """A Stripe-Signature header for `body`, as Stripe computes it."""
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def signed_event(
    event_type: str,
    intent_id: str,
    amount: int,
    currency: str = "usd",
    *,
    event_id: str | None = None,
    secret: str = WEBHOOK_SECRET,
    at: int | None = None,
) -> tuple[bytes, str]:
    """(body, Stripe-Signature) of a PaymentIntent event as Stripe would deliver it."""
    event_id = event_id or f"evt_test_{time.monotonic_ns()}"
    body = json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "api_version": "2017-08-15",
            "data": {
                "object": {
                    "id": intent_id,
                    "object": "payment_intent",
                    "amount": amount,
                    "currency": currency,
                    "status": "succeeded" if event_type.endswith("succeeded") else "failed",
                }
            },
        }
    ).encode()
    return body, signature(body, secret, at)
