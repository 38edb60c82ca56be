"""Failed sign-ins per client address: keys cannot be guessed, but a flood of tries should not become a
flood of work and log lines."""

from __future__ import annotations

import time


class FailedAttempts:
    """Failures per client address in a sliding window."""

    def __init__(self, limit: int = 10, window_seconds: float = 300.0, max_clients: int = 10_000) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_clients = max_clients
        self._seen: dict[str, list[float]] = {}

    def _recent(self, client: str) -> list[float]:
        cutoff = time.monotonic() - self.window
        recent = [t for t in self._seen.get(client, ()) if t > cutoff]
        if recent:
            self._seen[client] = recent
        else:
            self._seen.pop(client, None)
        return recent

    def exceeded(self, client: str) -> bool:
        return len(self._recent(client)) >= self.limit

    def add(self, client: str) -> None:
        if len(self._seen) >= self.max_clients and client not in self._seen:
            self._seen.clear()  # bounded memory; an attacker spreading over many addresses gains nothing
        self._seen.setdefault(client, []).append(time.monotonic())
