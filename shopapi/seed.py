"""Seed data: the contract's demo users, a small catalog, shipping methods, and N generated
products for load tests; in production, the first admin instead of the demo data.

The demo accounts have passwords published in the contract and the README, so a production
database (`APP_ENV=production`) gets them only when asked with `demo=True` (`bin/seed --demo`).
Without it, production gets the shipping methods and a first admin (`first_admin`): the account
of `ADMIN_EMAIL` with `ADMIN_PASSWORD`, or, with no password given, a generated one that is
printed once and stored nowhere but as its hash.

Idempotent: running it twice changes nothing (`--products N` tops the generated set up to N; an
existing admin account is never changed, an existing other account never promoted).
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass
from typing import Any

import msgspec

from shopapi.config import Settings
from shopapi.db import Pool, queries, transaction
from shopapi.schemas.users import Email, Password
from shopapi.security import hash_password
from shopapi.slugs import slugify
from shopapi.text import normalize_email

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

# the production admin's address when ADMIN_EMAIL is unset (change it through the API later)
DEFAULT_ADMIN_EMAIL = "admin@localhost"
ADMIN_PASSWORD_MIN = 12
# published passwords: the demo accounts' and the usual guesses, refused for ADMIN_PASSWORD
WEAK_PASSWORDS = {password for _, password, _, _ in USERS} | {
    "adminadminadmin",
    "administrator",
    "changemechangeme",
    "password1234",
}


class SeedError(Exception):
    """The seed refuses to run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class FirstAdmin:
    email: str
    created: bool
    # the generated password, to be shown once; None when it was given or nothing was created
    generated_password: str | None = None


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // total if total else width
    sys.stderr.write(f"\r  products [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


async def seed(
    pool: Pool, settings: Settings, *, products: int = 0, demo: bool | None = None
) -> dict[str, int]:
    """Run by `shopapi seed` (bin/seed) in an event loop of its own; bcrypt runs inline, as
    nothing else is served meanwhile. `demo` (default: not in production) adds the demo
    accounts, the catalog and, with `products`, the generated products; without it only the
    shipping methods are seeded (the first admin is `first_admin`'s)."""
    if demo is None:
        demo = not settings.is_production
    if products > 0 and not demo:
        raise SeedError("--products N generates demo catalog data: add --demo to seed it here")
    created = {"users": 0, "products": 0, "shipping_methods": 0, "generated": 0}
    async with transaction(pool) as conn:
        category_ids = await _demo_data(conn, settings, created) if demo else []
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


async def _demo_data(conn: Any, settings: Settings, created: dict[str, int]) -> list[int]:
    """The demo accounts (known passwords) and the small catalog; the categories' ids."""
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
    return category_ids


async def first_admin(pool: Pool, settings: Settings) -> FirstAdmin | None:
    """A production's first admin: `ADMIN_EMAIL`'s account, created with `ADMIN_PASSWORD` or a
    generated password. Without `ADMIN_EMAIL`, only when no active admin exists, as
    `DEFAULT_ADMIN_EMAIL`. An existing admin is left as it is (None when nothing was asked and
    an admin exists); an existing account of another role is refused, never promoted: whoever
    registered that address first would otherwise become an admin with their own password."""
    email, password = admin_credentials(settings)
    async with transaction(pool) as conn:
        if email is None:
            if await queries.active_admin_exists(conn):
                return None
            email = DEFAULT_ADMIN_EMAIL
        existing = await queries.get_login(conn, email=email)
        if existing is not None:
            if existing["role"] != "ADMIN" or not existing["is_active"]:
                state = "an" if existing["is_active"] else "a deactivated"
                raise SeedError(
                    f"{email} is {state} {existing['role']} account: the seed does not promote or "
                    "reactivate accounts; set ADMIN_EMAIL to an unused address"
                )
            return FirstAdmin(email=email, created=False)
        generated = None
        if password is None:
            password = generated = secrets.token_urlsafe(18)  # 24 characters, 144 bits
        user_id = await queries.seed_user(
            conn,
            email=email,
            full_name="Administrator",
            role="ADMIN",
            password_hash=hash_password(password, settings.bcrypt_rounds),
        )
    if user_id is None:  # a concurrent seed created it first: its password, not ours
        return FirstAdmin(email=email, created=False)
    return FirstAdmin(email=email, created=True, generated_password=generated)


def admin_credentials(settings: Settings) -> tuple[str | None, str | None]:
    """ADMIN_EMAIL (normalized) and ADMIN_PASSWORD, checked: an admin's password must be long
    and must not be one anybody can look up."""
    email, password = settings.admin_email, settings.admin_password
    if password is not None and email is None:
        raise SeedError("ADMIN_PASSWORD is set but ADMIN_EMAIL is not: set both, or neither")
    if email is not None:
        try:
            email = normalize_email(msgspec.convert(email, Email))
        except msgspec.ValidationError:
            raise SeedError(f"ADMIN_EMAIL is not an email address: {email!r}") from None
    if password is not None:
        try:
            msgspec.convert(password, Password)
        except msgspec.ValidationError:
            raise SeedError("ADMIN_PASSWORD must be 12 to 128 characters, without NUL") from None
        if len(password) < ADMIN_PASSWORD_MIN:
            raise SeedError(f"ADMIN_PASSWORD must be at least {ADMIN_PASSWORD_MIN} characters")
        if password.lower() in WEAK_PASSWORDS:
            raise SeedError("ADMIN_PASSWORD is a published demo or default password")
    return email, password
