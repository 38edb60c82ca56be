"""Failed sign-ins per client address: keys cannot be guessed, but a flood of wrong keys should not become a
flood of answers saying why each failed, nor of work and log lines.

Only failures are limited. An address over the limit still has its keys checked: a right key signs in (one
attacker behind a NAT must not lock out everyone else behind it), a wrong one gets "too many attempts"
instead of the reason it failed. Checking a key costs what any request to `/mcp` with a bearer costs.

An attempt is counted when it starts, not when its check finishes: `begin` reserves one of the address's
tries before the key is checked, so however many arrive at once, no more than `limit` are ever answered as
ordinary failures in a window.
"""

from __future__ import annotations

import time
from collections import deque

SIGN_IN_LIMIT = 10  # failed sign-ins per address in a window, before "too many attempts"
SIGN_IN_WINDOW_SECONDS = 300.0


class Attempt:
    """One sign-in attempt from one address, from before its key is checked until it is settled."""

    def __init__(self, attempts: FailedAttempts, client: str, *, limited: bool) -> None:
        self._attempts = attempts
        self.client = client
        self.limited = limited  # the address was over its limit when this attempt began
        self._open = True

    def settle(self, *, failed: bool) -> None:
        """The check is done: a failure counts against the address, anything else gives the try back.
        Settling twice does nothing, so a `finally` may settle whatever happened before it."""
        if not self._open:
            return
        self._open = False
        self._attempts.end(self, failed=failed)


class FailedAttempts:
    """Failures per client address in a sliding window, and the attempts still being checked."""

    def __init__(
        self,
        limit: int = SIGN_IN_LIMIT,
        window_seconds: float = SIGN_IN_WINDOW_SECONDS,
        max_clients: int = 10_000,
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_clients = max_clients
        self._failures: dict[str, deque[float]] = {}  # the newest `limit` failure times of each address
        self._in_flight: dict[str, int] = {}  # attempts begun but not settled, that were within the limit

    def begin(self, client: str) -> Attempt:
        """Start an attempt. Within the limit it takes one of the address's tries right away (before any
        await), so concurrent attempts cannot all slip under the limit while the first ones are checked."""
        taken = len(self._recent(client)) + self._in_flight.get(client, 0)
        if taken >= self.limit:
            return Attempt(self, client, limited=True)
        self._in_flight[client] = self._in_flight.get(client, 0) + 1
        return Attempt(self, client, limited=False)

    def end(self, attempt: Attempt, *, failed: bool) -> None:
        """(Attempt.settle) The attempt's try is given back; a failure is counted."""
        client = attempt.client
        if not attempt.limited:
            left = self._in_flight.get(client, 0) - 1
            if left > 0:
                self._in_flight[client] = left
            else:
                self._in_flight.pop(client, None)
        if failed:
            self._add(client)

    def _add(self, client: str) -> None:
        if len(self._failures) >= self.max_clients and client not in self._failures:
            self._failures.clear()  # bounded memory; an attacker spreading over many addresses gains nothing
        # The newest `limit` failures are all the window needs: memory per address is bounded too.
        self._failures.setdefault(client, deque(maxlen=self.limit)).append(time.monotonic())

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures.get(client)
        if failures is None:
            return deque()
        cutoff = time.monotonic() - self.window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:
            del self._failures[client]
        return failures
