"""Passwords (bcrypt) and tokens (PyJWT, HS256) in one place."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import math
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import bcrypt
import jwt

from shopapi.errors import NotAuthenticated, ServiceUnavailable
from shopapi.instruments import PASSWORD_JOBS_SHED

T = TypeVar("T")
ALGORITHM = "HS256"
_REQUIRED = ["exp", "iat", "sub", "type", "jti", "iss", "aud"]
# the defaults of JWT_ISSUER, JWT_AUDIENCE and JWT_LEEWAY (config.Settings)
ISSUER = "shopapi"
AUDIENCE = "shopapi-api"
LEEWAY = 10


def _prehash(password: str) -> bytes:
    # bcrypt 5 refuses passwords over 72 bytes; the contract allows 128 characters,
    # so every password is first reduced to a fixed 44-byte digest
    return base64.b64encode(hashlib.sha256(password.encode()).digest())


def hash_password(password: str, rounds: int) -> str:
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds)).decode()


def check_password(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(_prehash(password), password_hash.encode())
    except ValueError:
        return False


class Passwords:
    """bcrypt off the event loop, on a few threads of its own, with a bounded queue.

    bcrypt 5 releases the GIL while it hashes (measured: README, "Login floods"), so threads are
    enough: the loop and the pool keep serving everything else while a check runs. What a
    flood of logins must not get is a queue: at cost 12 a check is ~0.24 s of a core, so
    `threads` checks run at a time (PASSWORD_HASH_THREADS) and at most `queue` more wait
    (PASSWORD_HASH_QUEUE); past that a hash or check is refused at once with 503 and a
    Retry-After of about the time the queue needs to drain, instead of waiting for seconds.
    The bound is also one of time: when the CPU is busy and jobs take longer than the start-up
    hash did, fewer may wait, so that the jobs ahead never need longer to drain than
    `threads + queue` start-up hashes would (or a second, whichever is longer). The hashing
    threads run at a lower CPU priority (Linux), so when they and the event loop want the same
    core, the loop's requests go first."""

    def __init__(self, rounds: int, threads: int, queue: int = 4) -> None:
        self.rounds = rounds
        self.threads = threads
        self.queue = queue
        self._executor = ThreadPoolExecutor(
            threads, thread_name_prefix="bcrypt", initializer=_lower_priority
        )
        # jobs handed to the threads and not finished yet, running or waiting; changed by the
        # loop when it submits and by a hashing thread when a job ends, hence the lock
        self._in_flight = 0
        self._lock = threading.Lock()
        # checked against when the email is unknown, so both paths cost the same; made now (at
        # start-up) rather than by the first unknown-email login, which would pay for it twice
        started = time.perf_counter()
        self.dummy = hash_password(os.urandom(16).hex(), rounds)
        # what the queue may hold, in seconds of work: `threads + queue` start-up hashes, and
        # never under a second (a wait that short is no queueing; cheap test costs vary a lot)
        self.budget_seconds = max(1.0, (threads + queue) * (time.perf_counter() - started))
        # seconds one job takes now, for the bound and Retry-After (moving average)
        self.job_seconds = time.perf_counter() - started

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def refuse_if_full(self) -> None:
        """Answer 503 now when a hash or check would be refused anyway: a login calls this
        before its database lookup, so a refused attempt costs no round trip."""
        in_flight = self._in_flight
        if self._is_full(in_flight):
            self._refuse(in_flight)

    def _is_full(self, in_flight: int) -> bool:
        return in_flight >= self.threads + self.queue or (
            in_flight * self.job_seconds > self.budget_seconds
        )

    def _admit(self) -> None:
        with self._lock:
            in_flight = self._in_flight
            if not self._is_full(in_flight):
                self._in_flight += 1
                return
        self._refuse(in_flight)

    def _refuse(self, in_flight: int) -> None:
        PASSWORD_JOBS_SHED.inc()
        retry = max(1, math.ceil(in_flight * self.job_seconds / self.threads))
        raise ServiceUnavailable(
            f"Too many password checks in progress; retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )

    def _timed(self, fn: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            # a float store is atomic under the GIL; a lost update only blurs the average
            self.job_seconds += (time.perf_counter() - started - self.job_seconds) / 8

    def _finished(self, _: Future) -> None:
        # runs when the job ends, or at once when it is cancelled before it started
        with self._lock:
            self._in_flight -= 1

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        self._admit()
        try:
            job = self._executor.submit(self._timed, fn, *args)
        except BaseException:
            with self._lock:
                self._in_flight -= 1
            raise
        job.add_done_callback(self._finished)
        return await asyncio.wrap_future(job)

    async def hash(self, password: str) -> str:
        return await self._run(hash_password, password, self.rounds)

    async def check(self, password: str, password_hash: str) -> bool:
        return await self._run(check_password, password, password_hash)

    async def check_nobody(self, password: str) -> None:
        """Spend a check's time on no account (an unknown email: no enumeration by timing)."""
        await self.check(password, self.dummy)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# How much less CPU priority the hashing threads get than the event loop (nice 0): at 10 the
# scheduler gives a runnable loop thread ~10 times the hashing thread's share of a core.
HASHING_NICENESS = 10


def _lower_priority() -> None:
    """Lower the calling thread's CPU priority. Linux only: there `setpriority` with a thread
    id changes that thread alone (elsewhere it would name a process)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


def token_digest(token: str) -> bytes:
    """What the database keeps of a refresh token or an account (reset, verification) token."""
    return hashlib.sha256(token.encode()).digest()


def account_token(key: str, nonce: bytes) -> str:
    """The token of an email link: HMAC-SHA256(key, nonce), URL-safe. The database keeps the
    nonce and the token's digest, so the worker sending the email derives the token while a
    copy of the database (or of the job queue) alone yields nothing usable."""
    mac = hmac.new(key.encode(), b"shopapi account token\x00" + nonce, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def new_account_token(key: str) -> tuple[bytes, bytes]:
    """(nonce, token digest) for a new email link: 256 random bits from `secrets`. What the
    database stores; the token itself is derived again by the worker that emails it."""
    nonce = secrets.token_bytes(32)
    return nonce, token_digest(account_token(key, nonce))


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    role: str
    exp: int
    iat: int
    generation: int = 0  # claim `gen`: the user's token generation it was issued in
    session_id: int | None = None  # claim `sid`: the login it belongs to


class TokenCodec:
    """Issues and verifies JWTs; verified access tokens are remembered until they expire.

    Every token names its issuer (`iss`) and audience (`aud`), and verifying requires both to
    be exactly ours: a token another service signed with a shared key, or one from before the
    claims existed, is refused. `leeway` seconds of clock skew are allowed on `exp` and `iat`
    (several hosts' clocks, a client's clock)."""

    _CACHE_MAX = 10_000

    def __init__(
        self,
        key: str,
        access_ttl: int,
        refresh_ttl: int,
        *,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        leeway: int = LEEWAY,
    ) -> None:
        self.key = key
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._verified: dict[str, AccessClaims] = {}

    def _encode(self, claims: dict[str, Any]) -> str:
        claims = {"iss": self.issuer, "aud": self.audience, **claims}
        return jwt.encode(claims, self.key, algorithm=ALGORITHM)

    def issue_access(
        self, user_id: int, role: str, generation: int = 0, session_id: int | None = None
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "role": role,
            "type": "access",
            "iat": now,
            "exp": now + self.access_ttl,
            "jti": uuid.uuid4().hex,
            "gen": generation,
        }
        if session_id is not None:
            claims["sid"] = session_id
        return self._encode(claims)

    def issue_refresh(self, user_id: int, family_id: uuid.UUID) -> tuple[str, int]:
        now = int(time.time())
        exp = now + self.refresh_ttl
        token = self._encode(
            {
                "sub": str(user_id),
                "type": "refresh",
                "fam": str(family_id),
                "iat": now,
                "exp": exp,
                "jti": uuid.uuid4().hex,
            }
        )
        return token, exp

    def _decode(self, token: str, expected_type: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                # `aud` must be our audience itself, not a list that merely contains it
                options={"require": _REQUIRED, "strict_aud": True},
            )
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated("Token expired") from None
        except jwt.PyJWTError:
            raise NotAuthenticated("Invalid token") from None
        if claims.get("type") != expected_type:
            raise NotAuthenticated(f"Not an {expected_type} token")
        sub = claims.get("sub")
        # ASCII digits only: str.isdigit() also accepts "²" (int() then fails) and "٣" (read as 3)
        if not isinstance(sub, str) or not (sub.isascii() and sub.isdigit()):
            raise NotAuthenticated("Invalid token subject")
        return claims

    def verify_access(self, token: str) -> AccessClaims:
        cached = self._verified.get(token)
        if cached is not None:
            if cached.exp + self.leeway > time.time():
                return cached
            # pop, not del: two threads of one worker may both find it expired
            self._verified.pop(token, None)
        claims = self._decode(token, "access")
        role = claims.get("role")
        if role not in ("ADMIN", "EDITOR", "CUSTOMER"):
            raise NotAuthenticated("Invalid token role")
        generation = claims.get("gen", 0)  # tokens from before generations were generation 0
        session_id = claims.get("sid")
        if type(generation) is not int or not (session_id is None or type(session_id) is int):
            raise NotAuthenticated("Invalid token claims")
        verified = AccessClaims(
            int(claims["sub"]),
            role,
            int(claims["exp"]),
            int(claims["iat"]),
            generation,
            session_id,
        )
        if len(self._verified) >= self._CACHE_MAX:
            self._verified.clear()
        self._verified[token] = verified
        return verified

    def verify_refresh(self, token: str) -> dict[str, Any]:
        return self._decode(token, "refresh")
