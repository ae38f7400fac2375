"""Seed data: the contract's users, a small catalog, shipping methods, and N generated products
for load tests.

Idempotent: running it twice changes nothing (`--products N` tops the generated set up to N).
"""

from __future__ import annotations

import sys

from shopapi.config import Settings
from shopapi.db import Pool, queries, transaction
from shopapi.security import hash_password
from shopapi.slugs import slugify

USERS = (
    ("admin@example.com", "adminpass123", "Ada Admin", "ADMIN"),
    ("editor@example.com", "editorpass123", "Eddie Editor", "EDITOR"),
    ("customer@example.com", "customerpass", "Casey Customer", "CUSTOMER"),
)

CATALOG = {
    "Books": [
        ("The Pragmatic Programmer", "Classic software craftsmanship.", 3999, 25),
        ("Designing Data-Intensive Applications", "Databases, streams, trade-offs.", 4599, 15),
    ],
    "Electronics": [
        ("Noise-cancelling headphones", "Over-ear, 30 h battery.", 19900, 10),
        ("USB-C charger 65 W", "Gallium nitride, two ports.", 3499, 50),
    ],
    "Home": [
        ("Ceramic pour-over coffee set", "Dripper, carafe and two cups.", 5400, 8),
        ("Linen throw blanket", "Stonewashed, 130 x 170 cm.", 6900, 12),
    ],
    "Outdoor": [
        ("Trail running shoes", "Grippy outsole, 8 mm drop.", 12900, 20),
        ("Insulated water bottle 750 ml", "Keeps cold 24 h.", 2900, 40),
    ],
}

# (name, price_cents, free_over_cents: None = never free, countries: empty = everywhere)
SHIPPING_METHODS: tuple[tuple[str, int, int | None, list[str]], ...] = (
    ("Standard", 499, 5000, []),
    ("Express", 1499, None, []),
)

BATCH = 10_000


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // total if total else width
    sys.stderr.write(f"\r  products [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


async def seed(pool: Pool, settings: Settings, *, products: int = 0) -> dict[str, int]:
    """Run by `shopapi seed` (bin/seed) in an event loop of its own; bcrypt runs inline, as
    nothing else is served meanwhile."""
    created = {"users": 0, "products": 0, "shipping_methods": 0, "generated": 0}
    async with transaction(pool) as conn:
        for email, password, name, role in USERS:
            if await queries.get_login(conn, email=email) is None:
                await queries.seed_user(
                    conn,
                    email=email,
                    full_name=name,
                    role=role,
                    password_hash=hash_password(password, settings.bcrypt_rounds),
                )
                created["users"] += 1
        category_ids = []
        for category, items in CATALOG.items():
            category_ids.append(
                await queries.seed_category(
                    conn, name=category, slug=slugify(category), description=f"{category} we love."
                )
            )
            for name, description, price, stock in items:
                created["products"] += await queries.seed_product(
                    conn,
                    name=name,
                    description=description,
                    price_cents=price,
                    stock=stock,
                    category_id=category_ids[-1],
                )
        for name, price, free_over, countries in SHIPPING_METHODS:
            created["shipping_methods"] += await queries.seed_shipping_method(
                conn, name=name, price_cents=price, free_over_cents=free_over, countries=countries
            )
    if products > 0:
        async with transaction(pool) as conn:
            have = await queries.count_generated_products(conn)
        done = have
        while done < products:
            last = min(done + BATCH, products)
            async with transaction(pool) as conn:
                created["generated"] += await queries.seed_generated_products(
                    conn, first=done + 1, last=last, category_ids=category_ids
                )
            done = last
            _progress(done, products)
    return created
