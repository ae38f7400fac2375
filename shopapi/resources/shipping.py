"""Placeholder: being written (issue 16)."""

from __future__ import annotations

from shopapi.context import AppContext


def routes(ctx: AppContext) -> list[tuple[str, object, str | None]]:
    return []
