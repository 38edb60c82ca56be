"""What the access pages (grants, keys, audit, connections) share: times as people read them."""

from __future__ import annotations

from datetime import UTC, datetime


def when(at: float | None, empty: str = "—") -> str:
    """Unix time as `2026-12-03 12:40:05 UTC` (the console shows UTC, as the audit's JSON does)."""
    if at is None:
        return empty
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
