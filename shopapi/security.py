"""Passwords (bcrypt) and tokens (PyJWT, HS256) in one place."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import bcrypt
import jwt

from shopapi.errors import NotAuthenticated

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
    """bcrypt off the event loop, on a few threads of its own (PASSWORD_HASH_THREADS): a hash
    costs ~0.24 s at cost 12, and bcrypt releases the GIL, so a burst of logins waits for
    these threads while the loop and the pool keep serving everything else."""

    def __init__(self, rounds: int, threads: int) -> None:
        self.rounds = rounds
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="bcrypt")
        # checked against when the email is unknown, so both paths cost the same
        self._dummy: str | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def hash(self, password: str) -> str:
        return await self._run(hash_password, password, self.rounds)

    async def check(self, password: str, password_hash: str) -> bool:
        return await self._run(check_password, password, password_hash)

    async def check_nobody(self, password: str) -> None:
        """Spend a check's time on no account (an unknown email: no enumeration by timing)."""
        if self._dummy is None:
            self._dummy = await self.hash(os.urandom(16).hex())
        await self.check(password, self._dummy)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


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
