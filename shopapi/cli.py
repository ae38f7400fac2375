"""`shopapi` command line: serve, worker, dev, migrate, seed, check-ledger,
purge-idempotency-keys, purge-carts."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from shopapi.config import ROOT, ConfigError, Settings

T = TypeVar("T")


def _settings() -> Settings:
    return Settings.from_env()


def _with_pool(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(pool)` on a pool of its own, in an event loop of its own (the CLI has none)."""
    from shopapi.db import make_pool

    async def run() -> T:
        pool = make_pool(settings)
        try:
            await pool.ensure_open()
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(run())


def cmd_migrate(args: argparse.Namespace) -> int:
    from shopapi.db import migrate

    # direct: a migration may be non-transactional (CREATE INDEX CONCURRENTLY) or SET things
    count = migrate(_settings().direct_dsn, rollback_all=args.rollback_all)
    print(f"{'rolled back' if args.rollback_all else 'applied'} {count} migration(s)")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    """Demo data outside production; in production the first admin, and the demo data only
    with `--demo` (its accounts' passwords are published)."""
    from shopapi.seed import USERS, FirstAdmin, SeedError, admin_credentials, first_admin, seed

    settings = _settings()
    demo = args.demo or not settings.is_production

    async def work(pool: Any) -> tuple[dict[str, int], FirstAdmin | None]:
        created = await seed(pool, settings, products=args.products, demo=demo)
        return created, None if demo else await first_admin(pool, settings)

    try:
        if not demo:
            admin_credentials(settings)  # a bad ADMIN_* is refused before anything is written
        created, admin = _with_pool(settings, work)
    except SeedError as exc:
        print(f"seed refused: {exc}", file=sys.stderr)
        return 2
    print("seeded: " + ", ".join(f"{k} +{v}" for k, v in created.items()))
    if settings.is_production and demo:
        demo_logins = ", ".join(f"{email}/{password}" for email, password, _, _ in USERS)
        print(
            f"WARNING: --demo in production: demo accounts with published passwords exist "
            f"({demo_logins}); never on a stack others can reach",
            file=sys.stderr,
        )
    if admin is not None and admin.created:
        print(f"created ADMIN {admin.email}")
    elif admin is not None:
        print(f"ADMIN {admin.email} exists: left as it is")
    if admin is not None and admin.generated_password is not None:
        # the only time it is ever shown: only its bcrypt hash is stored
        print(f"password of {admin.email}: {admin.generated_password}")
        print("(shown once and stored nowhere: keep it now, change it after logging in)")
    return 0


def cmd_check_ledger(args: argparse.Namespace) -> int:
    """Exit 1 when any product's stock differs from the sum of its stock movements."""
    from shopapi.services.ledger import check_ledger

    mismatches = _with_pool(_settings(), check_ledger)
    for row in mismatches:
        print(f"product {row['product_id']}: stock {row['stock']} != ledger {row['ledger_stock']}")
    print("ledger ok" if not mismatches else f"{len(mismatches)} product(s) out of balance")
    return 1 if mismatches else 0


def cmd_purge(args: argparse.Namespace) -> int:
    from shopapi.services.orders import purge_idempotency_keys

    settings = _settings()
    removed = _with_pool(
        settings, lambda pool: purge_idempotency_keys(pool, settings.idempotency_key_ttl)
    )
    print(f"purged {removed} idempotency key(s)")
    return 0


def cmd_purge_carts(args: argparse.Namespace) -> int:
    from shopapi.services.carts import purge_expired_guest_carts

    removed = _with_pool(_settings(), purge_expired_guest_carts)
    print(f"purged {removed} expired guest cart(s)")
    return 0


def _gunicorn(bind: str | None) -> list[str]:
    # gunicorn of this interpreter's environment (the venv may not be on PATH)
    argv = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")]
    if bind:
        argv += ["--bind", bind]
    return [*argv, "shopapi.asgi:app"]


def cmd_serve(args: argparse.Namespace) -> int:
    argv = _gunicorn(args.bind)
    # gunicorn is the process manager ops run: hand the process over to it
    os.execv(argv[0], argv)  # noqa: S606
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """The background worker: jobs, the event relay, periodic housekeeping (SIGTERM: the
    running jobs finish, then it exits)."""
    from shopapi.devservices import worker_environment
    from shopapi.jobs.worker import main as run

    queues = [q for q in (args.queues or "").split(",") if q] or None
    os.environ.update(worker_environment())
    settings = _settings()
    settings.signing_key  # noqa: B018 - it signs email links: without a key it refuses to start
    run(settings, queues=queues)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    """Zero-setup start: local PostgreSQL and Redis, migrated, seeded, served by gunicorn."""
    from shopapi.devservices import dev_environment, provision

    # development, on a signing key of its own kept in .data/ (the server's workers and the
    # background worker share it, restarts keep logins) unless SECRET_KEY is configured
    os.environ.update(dev_environment())
    os.environ.update(provision())
    print(f"[shopapi] DATABASE_URL={os.environ['DATABASE_URL']}", file=sys.stderr)
    print(f"[shopapi] REDIS_URL={os.environ['REDIS_URL']}", file=sys.stderr)
    cmd_migrate(argparse.Namespace(rollback_all=False))
    cmd_seed(argparse.Namespace(products=args.products, demo=False))
    print(
        "[shopapi] serving on http://127.0.0.1:8000  (docs: /api/docs/swagger-ui/), "
        "one background worker beside it",
        file=sys.stderr,
    )
    return _serve_with_worker(args.bind)


def _serve_with_worker(bind: str) -> int:
    """gunicorn and one `shopapi worker` side by side; a signal to this process reaches both,
    and when gunicorn ends the worker is stopped too."""
    import signal
    import subprocess

    worker_env = {
        **os.environ,
        # development webhooks point at local receivers; the worker's metrics stay off
        "WEBHOOK_ALLOW_PRIVATE": os.environ.get("WEBHOOK_ALLOW_PRIVATE", "true"),
        "WORKER_METRICS_PORT": os.environ.get("WORKER_METRICS_PORT", "0"),
    }
    worker = subprocess.Popen([sys.executable, "-m", "shopapi.cli", "worker"], env=worker_env)
    server = subprocess.Popen(_gunicorn(bind))

    def forward(signum: int, frame: object) -> None:
        for process in (server, worker):
            if process.poll() is None:
                process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = server.wait()
    if worker.poll() is None:
        worker.terminate()
    worker.wait(35)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shopapi", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run gunicorn with gunicorn.conf.py")
    p.add_argument("--bind", default=None)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run the background worker (jobs, event relay)")
    p.add_argument("--queues", default=None, help="comma-separated queues (default: all)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("dev", help="provision local PostgreSQL/Redis, migrate, seed, serve")
    p.add_argument("--bind", default="127.0.0.1:8000")
    p.add_argument("--products", type=int, default=0)
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("migrate", help="apply sql/migrations (same as `yoyo apply`)")
    p.add_argument("--rollback-all", action="store_true")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser(
        "seed",
        help="demo users + small catalog (idempotent); in production the first admin instead",
    )
    p.add_argument("--products", type=int, default=0, help="top generated products up to N")
    p.add_argument(
        "--demo",
        action="store_true",
        help="the demo accounts (published passwords) and catalog even in production",
    )
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("check-ledger", help="every product's stock equals its movements' sum")
    p.set_defaults(func=cmd_check_ledger)

    p = sub.add_parser("purge-idempotency-keys", help="delete keys older than IDEMPOTENCY_KEY_TTL")
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser("purge-carts", help="delete guest carts past their expiry (CART_TTL)")
    p.set_defaults(func=cmd_purge_carts)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"shopapi: refusing to start: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
