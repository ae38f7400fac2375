"""The figures every cluster test ends with, printed like the fault suite's summary lines."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tests.faults.helpers import Audit, Traffic

LINES: list[str] = []


@dataclass
class Figures:
    scenario: str
    requests: int = 0
    server_errors: Counter = field(default_factory=Counter)  # 5xx and no-answers, by status
    oversells: int = 0
    lost: int = 0
    duplicates: int = 0
    stale_reads: int = 0
    note: str = ""

    @classmethod
    def of(cls, scenario: str, traffic: Traffic, books: Audit | None = None, **extra) -> Figures:
        errors = Counter(r.outcome for r in traffic.of() if r.status is None or r.status >= 500)
        figures = cls(scenario, len(traffic.of()), errors, **extra)
        if books is not None:
            figures.oversells = len(books.oversold)
            figures.lost = len(books.lost)
            figures.duplicates = len(books.duplicates)
        return figures

    def line(self) -> str:
        errors = ", ".join(f"{k}: {n}" for k, n in sorted(self.server_errors.items(), key=str))
        return (
            f"{self.scenario}: {self.requests} requests, 5xx/no answer "
            f"{'{' + errors + '}' if errors else 'none'}, oversells {self.oversells}, "
            f"orders lost {self.lost}, duplicates {self.duplicates}, "
            f"stale reads {self.stale_reads}{', ' + self.note if self.note else ''}"
        )

    def report(self) -> Figures:
        LINES.append(self.line())
        print(self.line())
        return self
