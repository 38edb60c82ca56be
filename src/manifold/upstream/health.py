"""Per-upstream connection health, as the pool saw it (for /healthz, /readyz and the admin view)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from manifold.protocol import Era

# Back-off after a failed connect, so a dead upstream is not hammered by every incoming call, yet a
# restarted one is retried on demand within a second or two.
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 1.5
# A session that ends sooner than this after its handshake, having answered nothing, counts as a failed start
# for the back-off: a stdio command that exits right after it started was otherwise started again by every
# call, 16 times a second under load, both cores busy starting it (resilience review).
SHORT_LIVED_SECONDS = 5.0


def iso_utc(timestamp: float) -> str:
    """A Unix time as ISO 8601 UTC, e.g. 2026-12-03T08:50:18.123Z."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class UpstreamHealth:
    state: str = "idle"  # idle | connecting | connected | failed
    era: Era | None = None
    protocol_version: str | None = None
    last_error: str | None = None  # safe text: UpstreamError messages never carry secrets
    stderr: tuple[str, ...] = ()  # a stdio child's last stderr lines when it last died (redacted, bounded)
    since: float = 0.0  # wall-clock time the state was entered
    failures: int = 0
    retry_at: float = 0.0  # monotonic time before which a new connect is not attempted
    connected_at: float = 0.0  # monotonic time of the last handshake

    def connecting(self) -> None:
        self._enter("connecting")

    def connected(self, era: Era, protocol_version: str) -> None:
        # `failures` stays until the session has lived SHORT_LIVED_SECONDS (`disconnected`): one that dies at
        # once goes on counting towards the back-off.
        self._enter("connected")
        self.era, self.protocol_version, self.retry_at = era, protocol_version, 0.0
        self.connected_at = time.monotonic()
        self.last_error, self.stderr = None, ()  # recovered: the old failure no longer describes it

    def failed(self, error: str, stderr: tuple[str, ...] = ()) -> None:
        self._enter("failed")
        self.last_error, self.stderr = error, stderr
        self.failures += 1
        self.retry_at = time.monotonic() + min(BACKOFF_FIRST * 2 ** (self.failures - 1), BACKOFF_MAX)

    def disconnected(self, error: str | None, stderr: tuple[str, ...] = (), *, served: bool = True) -> None:
        """The live session died (process exit, session expired): the next call reconnects at once, unless
        it died within SHORT_LIVED_SECONDS of its handshake without having `served` a request, which is a
        failed start (backed off)."""
        if self.state == "connected":
            lived = time.monotonic() - self.connected_at
            if lived < SHORT_LIVED_SECONDS and not served:
                self.failed(error or "ended right after it started", stderr)
                return
            self.failures = 0
            self._enter("idle")
        if error:
            self.last_error, self.stderr = error, stderr

    @property
    def down(self) -> bool:
        """The last thing known of it is a failure (a failed connect, or a session that died with an error)
        and it has not connected since. An upstream never used yet is not down: it is connected lazily."""
        return self.state != "connected" and self.last_error is not None

    def in_backoff(self) -> bool:
        return self.state == "failed" and time.monotonic() < self.retry_at

    def _enter(self, state: str) -> None:
        if self.state != state:
            self.since = time.time()
        self.state = state

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "down": self.down,
            "era": self.era.value if self.era else None,
            "protocol_version": self.protocol_version,
            "last_error": self.last_error,
            "stderr": list(self.stderr),
            "since": iso_utc(self.since) if self.since else None,
        }
