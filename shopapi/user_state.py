"""Who may still call: each worker's memory of users' (role, is_active), kept true by Redis pub/sub.

Authenticating a request must not cost a database round trip, yet a deactivated, deleted or
re-roled user must be refused at once on every worker. So:

- each process remembers the state it last read from PostgreSQL, per user id;
- every write that changes a user's role or activity (services/users.py) publishes the id on
  CHANNEL after its transaction commits, and every process's listener thread forgets that user
  (Redis delivers before PUBLISH returns, so before the admin's answer leaves);
- while the listener is not connected (Redis down, or not yet subscribed) nothing is served from
  memory: every request reads PostgreSQL, and memory is wiped when the listener reconnects,
  since messages may have been missed meanwhile;
- a generation counter stops a slow read that began before an invalidation from storing a stale
  state after it; entries also expire after MAX_AGE seconds as a last guard.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

log = logging.getLogger("shopapi.user_state")

CHANNEL = "shopapi:user-changed"
MAX_AGE = 60.0
RETRY_SECONDS = 1.0

State = tuple[str, bool]  # (role, is_active)


class UserStates:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._states: dict[int, tuple[State, float]] = {}
        self._generation = 0
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    # ------------------------------------------------------------------ reading
    def get(self, user_id: int, load: Callable[[int], State | None]) -> State | None:
        """The user's state: from memory while the listener is live, else from `load`."""
        self._ensure_listener()
        state = self.peek(user_id)
        if state is not None:
            return state
        generation = self._generation
        state = load(user_id)
        if state is not None and self._listening.is_set():
            with self._lock:
                if generation == self._generation:
                    self._states[user_id] = (state, time.monotonic() + MAX_AGE)
        return state

    def peek(self, user_id: int) -> State | None:
        """The user's state from memory alone (no waiting, no I/O); None: `get` must load it."""
        if self._listening.is_set() and self._pid == os.getpid():
            entry = self._states.get(user_id)
            if entry is not None and entry[1] > time.monotonic():
                return entry[0]
        return None

    # ------------------------------------------------------------------ writing
    def changed(self, user_id: int) -> None:
        """Call after the commit that changed the user: every worker forgets them."""
        self._forget(user_id)
        try:
            self._client.publish(CHANNEL, str(user_id))
        except redis.RedisError as exc:
            # nobody can trust memory now: listeners reconnect and wipe, this one wipes now
            log.warning("user_state: publish failed (%s); clearing local state", exc)
            self._wipe()

    def _forget(self, user_id: int) -> None:
        with self._lock:
            self._generation += 1
            self._states.pop(user_id, None)

    def _wipe(self) -> None:
        with self._lock:
            self._generation += 1
            self._states.clear()

    # ------------------------------------------------------------------ listening
    def _ensure_listener(self) -> None:
        # started lazily in the serving process: a thread started before gunicorn forks
        # would not exist in the workers
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._listening.clear()
            self._thread = threading.Thread(target=self._listen, name="user-state-listener",
                                            daemon=True)
            self._thread.start()
        # once per process: give the subscription a moment, so memory serves from request one
        self._listening.wait(0.2)

    def _listen(self) -> None:
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=False)
            try:
                pubsub.subscribe(CHANNEL)
                while True:
                    message: dict[str, Any] | None = pubsub.get_message(timeout=5.0)
                    if message is None:
                        pubsub.ping()  # a silent dead connection surfaces as an error here
                        continue
                    if message["type"] == "subscribe":
                        self._wipe()  # anything remembered may have missed messages
                        self._listening.set()
                    elif message["type"] == "message":
                        self._forget(int(message["data"]))
            except (redis.RedisError, OSError, ValueError) as exc:
                if self._listening.is_set():
                    log.warning("user_state: listener lost Redis (%s); reading PostgreSQL", exc)
                self._listening.clear()
                self._wipe()
            finally:
                with contextlib.suppress(Exception):  # closing a broken connection may fail
                    pubsub.close()
            time.sleep(RETRY_SECONDS)


_registry: dict[int, UserStates] = {}
_registry_lock = threading.Lock()


def for_client(client: redis.Redis) -> UserStates:
    """One listener per Redis client per process (apps built on one client share it)."""
    with _registry_lock:
        states = _registry.get(id(client))
        if states is None or states._client is not client:
            states = _registry[id(client)] = UserStates(client)
        return states


def forget_everything() -> None:
    """Wipe every process-local state (tests that empty the users table behind the app's back)."""
    with _registry_lock:
        for states in _registry.values():
            states._wipe()
