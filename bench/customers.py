"""Create the 100 bench customers in the database named by DATABASE_URL (idempotent).

customer1@example.com ... customer100@example.com, password "password123": the same
accounts the peer's seed makes, so the peer's gen_tokens.py logs in to either server.
Inserted with the seed's own named query (`seed_user`), hashed at BCRYPT_ROUNDS (run it
with BCRYPT_ROUNDS=4: the cost is stored in each hash, so logins stay cheap too).
Usage: DATABASE_URL=... BCRYPT_ROUNDS=4 .venv/bin/python bench/customers.py [N]
"""

from __future__ import annotations

import asyncio
import sys

from shopapi.config import Settings
from shopapi.db import make_pool, queries, transaction
from shopapi.security import hash_password

PASSWORD = "password123"  # noqa: S105  (the peer seed's shared bench password)


async def main(count: int) -> None:
    settings = Settings.from_env()
    created = 0
    pool = make_pool(settings)
    async with transaction(pool) as conn:
        for i in range(1, count + 1):
            email = f"customer{i}@example.com"
            if await queries.get_login(conn, email=email) is None:
                await queries.seed_user(
                    conn,
                    email=email,
                    full_name=f"Bench Customer {i}",
                    role="CUSTOMER",
                    password_hash=hash_password(PASSWORD, settings.bcrypt_rounds),
                )
                created += 1
    await pool.close()
    print(f"bench customers: {created} created, {count - created} already there")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
