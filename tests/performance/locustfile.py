"""A mobile shopper's traffic mix against a running shopapi, for locust.

    .venv-locust/bin/locust -f tests/performance/locustfile.py --headless -u 20 -r 5 -t 30s \
        --host http://127.0.0.1:8001 --html results/locust.html

`bin/bench --locust` does the same against a production-like gunicorn it starts on :8001
(database shopapi_bench, 10,000 products, the 100 bench customers). Install locust in its own
virtualenv, never in .venv (it monkey-patches the standard library with gevent on import):
    python3 -m venv .venv-locust && .venv-locust/bin/pip install -r bench/requirements-locust.txt
This file is not named test_*.py, and nothing in shopapi/ or tests/ imports it.

Each simulated user logs in as one of the bench customers (customer1..100@example.com,
password123) or, when those do not exist, as the seeded customer@example.com, then thinks
for 0.5-2 s between actions. Weights per 100 actions:

    34  product detail (ids seen in lists; If-None-Match when seen before: 304 is fine)
    28  browse the catalog, pages 1-3
    14  search (q = one of the nouns bin/seed puts in product names)
     7  my orders
     6  add to cart: PUT /api/cart/items/{id} (an id seen in lists), quantity 1-2 (422 for a
        product deactivated meanwhile and 409 cart_full are normal answers)
     2  view the cart (GET /api/cart)
     3  checkout: POST /api/cart/checkout, Idempotency-Key = a fresh uuid (422 for an empty
        cart and 409 insufficient stock are normal answers; after the 409 the app empties
        the cart)
     5  place an order directly, 1-3 products, Idempotency-Key = a fresh uuid (409
        insufficient stock is a normal answer, not a failure)
     1  log in again (rare: apps keep their tokens)

Orders stay pending (nobody pays them): against a server with the default
MAX_PENDING_ORDERS (10), a customer's 11th order is 409 too_many_pending_orders, counted as a
failure. `bin/bench --locust` runs shopapi with MAX_PENDING_ORDERS=0 (no cap).

Environment: LOCUST_PRODUCTS (10000) ids to pick from before any list was seen,
LOCUST_CUSTOMERS (100) how many bench customers exist.
"""

from __future__ import annotations

import os
import random
import uuid

from locust import HttpUser, between, task

NOUNS = (
    "lamp",
    "chair",
    "table",
    "phone",
    "camera",
    "guitar",
    "jacket",
    "kettle",
    "bottle",
    "backpack",
    "watch",
    "speaker",
    "monitor",
    "keyboard",
    "mouse",
    "blender",
    "candle",
    "notebook",
    "pillow",
    "sneaker",
)
PRODUCTS = int(os.environ.get("LOCUST_PRODUCTS", "10000"))
CUSTOMERS = int(os.environ.get("LOCUST_CUSTOMERS", "100"))
SEEDED_CUSTOMER = ("customer@example.com", "customerpass")


class MobileShopper(HttpUser):
    wait_time = between(0.5, 2.0)
    bench_customers = True  # switched off for everyone once one login proves they are absent

    def on_start(self) -> None:
        self.token = ""
        self.seen: list[int] = []  # product ids from list answers: what a user can tap
        self.etags: dict[int, str] = {}
        self.credentials = SEEDED_CUSTOMER
        if MobileShopper.bench_customers:
            self.credentials = (
                f"customer{random.randint(1, CUSTOMERS)}@example.com",
                "password123",
            )
        self.login()

    # ------------------------------------------------------------ helpers

    def login(self) -> None:
        email, password = self.credentials
        with self.client.post(
            "/api/auth/login",
            json={"email": email, "password": password},
            name="/api/auth/login",
            catch_response=True,
        ) as resp:
            if resp.status_code == 401 and self.credentials != SEEDED_CUSTOMER:
                # no bench customers in this database: everyone uses the seeded one
                MobileShopper.bench_customers = False
                self.credentials = SEEDED_CUSTOMER
                resp.success()
                self.login()
                return
            if resp.status_code != 200:
                resp.failure(f"login answered {resp.status_code}")
                return
            self.token = resp.json()["access_token"]

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def remember(self, resp) -> None:
        if resp.status_code == 200:
            self.seen.extend(item["id"] for item in resp.json()["items"])
            del self.seen[:-200]

    def pick_product(self) -> int:
        return random.choice(self.seen) if self.seen else random.randint(1, PRODUCTS)

    # ------------------------------------------------------------ the mix

    @task(34)
    def product_detail(self) -> None:
        product_id = self.pick_product()
        headers = {"If-None-Match": self.etags[product_id]} if product_id in self.etags else {}
        with self.client.get(
            f"/api/products/{product_id}",
            headers=headers,
            name="/api/products/{id}",
            catch_response=True,
        ) as resp:
            if resp.status_code == 200:
                etag = resp.headers.get("ETag")
                if etag:
                    self.etags[product_id] = etag
            elif resp.status_code in (304, 404):  # not modified / deactivated meanwhile
                resp.success()

    @task(28)
    def browse(self) -> None:
        page = random.randint(1, 3)
        resp = self.client.get(
            f"/api/products?page={page}&per_page=20", name="/api/products?page=[1-3]"
        )
        self.remember(resp)

    @task(14)
    def search(self) -> None:
        resp = self.client.get(
            f"/api/products?q={random.choice(NOUNS)}&per_page=20", name="/api/products?q=[noun]"
        )
        self.remember(resp)

    @task(7)
    def my_orders(self) -> None:
        with self.client.get(
            "/api/orders?per_page=20", headers=self.auth(), name="/api/orders", catch_response=True
        ) as resp:
            if resp.status_code == 401:
                resp.success()  # token expired: log in again, as the app would
                self.login()

    @task(6)
    def add_to_cart(self) -> None:
        product_id = self.pick_product()
        with self.client.put(
            f"/api/cart/items/{product_id}",
            json={"quantity": random.randint(1, 2)},
            headers=self.auth(),
            name="/api/cart/items/{id}",
            catch_response=True,
        ) as resp:
            gone = resp.status_code == 422  # the product was deactivated meanwhile
            full = resp.status_code == 409 and resp.json().get("code") == "cart_full"
            if gone or full:
                resp.success()
            elif resp.status_code == 401:
                resp.success()
                self.login()

    @task(2)
    def view_cart(self) -> None:
        with self.client.get(
            "/api/cart", headers=self.auth(), name="/api/cart", catch_response=True
        ) as resp:
            if resp.status_code == 401:
                resp.success()
                self.login()

    @task(3)
    def checkout(self) -> None:
        headers = {**self.auth(), "Idempotency-Key": str(uuid.uuid4())}
        with self.client.post(
            "/api/cart/checkout",
            json={},
            headers=headers,
            name="/api/cart/checkout",
            catch_response=True,
        ) as resp:
            if resp.status_code == 422:  # an empty cart (or a line gone): nothing to buy
                resp.success()
            elif resp.status_code == 409 and resp.json().get("code") == "insufficient_stock":
                resp.success()
                # the cart is left as it was: the app lets the shopper start over
                self.client.delete("/api/cart", headers=self.auth(), name="/api/cart [empty]")
            elif resp.status_code == 401:
                resp.success()
                self.login()

    @task(5)
    def place_order(self) -> None:
        choices = sorted(set(self.seen)) or range(1, PRODUCTS + 1)
        ids = random.sample(choices, random.randint(1, min(3, len(choices))))
        body = {"items": [{"product_id": i, "quantity": random.randint(1, 2)} for i in ids]}
        headers = {**self.auth(), "Idempotency-Key": str(uuid.uuid4())}
        with self.client.post(
            "/api/orders",
            json=body,
            headers=headers,
            name="/api/orders [place]",
            catch_response=True,
        ) as resp:
            if resp.status_code == 409 and resp.json().get("code") == "insufficient_stock":
                resp.success()
            elif resp.status_code == 401:
                resp.success()
                self.login()

    @task(1)
    def relogin(self) -> None:
        self.login()
