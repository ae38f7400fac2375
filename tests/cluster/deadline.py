"""The cluster suite's time bound, enforced (issue 19: "stays under 5 minutes").

The clock starts with the suite's first test (the cluster's start is part of it) and the suite
ends when the cluster has stopped. Starting the cluster, and every test with its fixtures, run
under a SIGALRM set to what is left of the bound minus `TEARDOWN_RESERVE` (kept for stopping
the cluster, which runs unarmed: an alarm there would leave processes behind). When it rings,
the test fails where it stands (its traceback says where it hung) and every test after it
fails at once; the cluster's teardown then fails the suite if the whole took longer than the
bound. pytest-timeout is not a dependency: this needs nothing but the standard library.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

SUITE_SECONDS = float(os.environ.get("CLUSTER_SUITE_SECONDS", "300"))
TEARDOWN_RESERVE = 30.0  # stopping 3 instances, 2 workers, nginx, PgBouncer, 2 PostgreSQL


class Deadline:
    def __init__(self, seconds: float = SUITE_SECONDS, reserve: float = TEARDOWN_RESERVE) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.ends = self.started + seconds - reserve  # for the start and the tests

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.ends - time.monotonic()

    def arm(self, what: str) -> None:
        """Fail `what` (a test, the cluster's start) when the suite's time runs out during it;
        fail it at once if it already has."""
        left = self.left()
        if left <= 0:
            pytest.fail(
                f"the cluster suite has used its {self.seconds:.0f} s bound "
                f"({self.elapsed():.0f} s so far): {what} does not start",
                pytrace=False,
            )

        def expired(signum: int, frame: object) -> None:
            pytest.fail(
                f"the cluster suite ran past its {self.seconds:.0f} s bound "
                f"({self.elapsed():.0f} s) during {what}: stopped here"
            )

        signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, left)

    def disarm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    def summary(self) -> str:
        return f"cluster suite: {self.elapsed():.0f} s (bound {self.seconds:.0f} s)"

    def over(self) -> bool:
        return self.elapsed() > self.seconds
