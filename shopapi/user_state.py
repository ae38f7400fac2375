"""Who may still call: each worker's memory of users' state, kept true by Redis pub/sub.

A user's state is (role, is_active, token_generation, email_verified): an access token is
refused when its user is inactive, has another role, or has moved to a newer token
generation than the token carries (a password change, logout-all, deactivation, deletion).

Authenticating a request must not cost a database round trip, yet a deactivated, deleted or
re-roled user must be refused at once on every worker. So:

- each process remembers the state it last read from PostgreSQL, per user id;
- every write that changes any of it (services/users.py, services/account.py) publishes the id on
  CHANNEL after its transaction commits, and every process's listener (a task on its event
  loop, on the worker's Redis client) forgets that user (Redis delivers before PUBLISH
  returns, so before the admin's answer leaves);
- while the listener is not connected (Redis down, or not yet subscribed) nothing is served from
  memory: every request reads PostgreSQL, and memory is wiped when the listener reconnects,
  since messages may have been missed meanwhile;
- a hung Redis (connection open, nothing answering) counts as down: the listener PINGs every
  PING_EVERY s and gives the connection up when the PONG is not back within PONG_WAIT s;
- a generation counter stops a slow read that began before an invalidation from storing a stale
  state after it; entries also expire after MAX_AGE seconds as a last guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio

log = logging.getLogger("shopapi.user_state")

CHANNEL = "shopapi:user-changed"
MAX_AGE = 60.0
RETRY_SECONDS = 1.0
SUBSCRIBE_WAIT = 0.2  # the first request waits this long for the subscription, once
PING_EVERY = 1.0  # seconds between two PINGs on a quiet connection
PONG_WAIT = 1.0  # seconds a PING may wait for its PONG before the connection counts as hung

State = tuple[str, bool, int, bool]  # (role, is_active, token_generation, email_verified)

_FAILURES = (redis.RedisError, OSError, ValueError)
# every instance of this process, so tests that empty the users table can wipe them all
_instances: weakref.WeakSet[UserStates] = weakref.WeakSet()


class UserStates:
    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        self._states: dict[int, tuple[State, float]] = {}
        self._generation = 0
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        _instances.add(self)

    # ------------------------------------------------------------------ reading
    async def get(
        self, user_id: int, load: Callable[[int], Awaitable[State | None]]
    ) -> State | None:
        """The user's state: from memory while the listener is live, else from `load`."""
        await self._ensure_listener()
        state = self.peek(user_id)
        if state is not None:
            return state
        generation = self._generation
        state = await load(user_id)
        if state is not None and self._listening.is_set() and generation == self._generation:
            self._states[user_id] = (state, time.monotonic() + MAX_AGE)
        return state

    def peek(self, user_id: int) -> State | None:
        """The user's state from memory alone (no waiting, no I/O); None: `get` must load it."""
        if self._listening.is_set():
            entry = self._states.get(user_id)
            if entry is not None and entry[1] > time.monotonic():
                return entry[0]
        return None

    # ------------------------------------------------------------------ writing
    async def changed(self, user_id: int) -> None:
        """Call after the commit that changed the user: every worker forgets them."""
        self._forget(user_id)
        try:
            await self._client.publish(CHANNEL, str(user_id))
        except _FAILURES as exc:
            # nobody can trust memory now: listeners reconnect and wipe, this one wipes now
            log.warning("user_state: publish failed (%s); clearing local state", exc)
            self.wipe()

    def _forget(self, user_id: int) -> None:
        self._generation += 1
        self._states.pop(user_id, None)

    def wipe(self) -> None:
        self._generation += 1
        self._states.clear()

    # ------------------------------------------------------------------ listening
    async def _ensure_listener(self) -> None:
        # started on first use, inside the event loop that serves the requests
        if self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(
            self._listen(), name="user-state-listener"
        )
        # once: give the subscription a moment, so memory serves from request one
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), SUBSCRIBE_WAIT)

    async def close(self) -> None:
        """Stop the listener (app shutdown)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._listening.clear()

    async def _listen(self) -> None:
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=False)
            try:
                await pubsub.subscribe(CHANNEL)
                await self._receive(pubsub)
            except _FAILURES as exc:
                if self._listening.is_set():
                    log.warning("user_state: listener lost Redis (%s); reading PostgreSQL", exc)
                self._listening.clear()
                self.wipe()
            finally:
                with contextlib.suppress(Exception):  # closing a broken connection may fail
                    await pubsub.aclose()
            await asyncio.sleep(RETRY_SECONDS)

    async def _receive(self, pubsub: Any) -> None:
        """Apply messages until the connection fails or stops answering PINGs (raises)."""
        clock = time.monotonic
        next_ping = clock() + PING_EVERY
        pong_due: float | None = None  # when the PING in flight must have been answered
        while True:
            deadline = next_ping if pong_due is None else pong_due
            message: dict[str, Any] | None = await pubsub.get_message(
                timeout=max(0.0, deadline - clock())
            )
            if message is not None:
                kind = message["type"]
                if kind == "pong":
                    pong_due, next_ping = None, clock() + PING_EVERY
                elif kind == "subscribe":
                    self.wipe()  # anything remembered may have missed messages
                    self._listening.set()
                elif kind == "message":
                    self._forget(int(message["data"]))
            now = clock()
            if pong_due is not None and now >= pong_due:
                raise redis.TimeoutError(f"no PONG from Redis within {PONG_WAIT} s")
            if pong_due is None and now >= next_ping:
                await pubsub.ping()
                pong_due = now + PONG_WAIT


def forget_everything() -> None:
    """Wipe every process-local state (tests that empty the users table behind the app's back)."""
    for states in list(_instances):
        states.wipe()
