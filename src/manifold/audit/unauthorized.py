"""Audit rows for refused credentials (HTTP 401: a revoked, expired, unknown or malformed token), with a
bound on how many: a flood of bad tokens must not flood the audit table.

Only requests that *sent* a credential are recorded: a request without one is a client discovering that it
must sign in (RFC 9728), not an event. A row names no token. Its credential is the key id the bearer
claims (`api_key:<id>`, `sa_token:<id>`; the development key is `api_key:dev`) when it is shaped like one of
ours, else `unknown`; its principal is `unknown` (a refused credential proves nobody); outcome
`unauthenticated`; detail the reason the client was told, plus the client's address.

The rate: at most one row per second per *source*, the key id the bearer names (so one leaked, revoked key
tried from many addresses is one source) or else the client address. The refusals in between are counted
and the next row of that source says how many there were ("… (and 41 more since 10:02:03)"). At most
`max_sources` sources are remembered (old entries are dropped first; if a second brings more new sources
than that, the excess shares one source, `other`), so memory stays bounded.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

from manifold.audit.model import AuditEvent, Outcome
from manifold.audit.writer import AuditLog

UNKNOWN = "unknown"
_OTHER = "other"
_KINDS = {"mfk": "api_key", "mfs": "sa_token"}
# The key id a token claims (identity/api_keys.py's grammar); nothing else of the token is kept.
_TOKEN = re.compile(r"^(mfk|mfs)_([a-z0-9]{12})_")
_DEV_PREFIX = "mfd_"


def claimed_credential(authorization: str | None) -> str:
    """`api_key:<id>`, `sa_token:<id>` or `api_key:dev` for a bearer shaped like one of ours, else `unknown`."""
    if not authorization:
        return UNKNOWN
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return UNKNOWN
    token = token.strip()
    if token.startswith(_DEV_PREFIX):
        return "api_key:dev"
    m = _TOKEN.match(token)
    return f"{_KINDS[m.group(1)]}:{m.group(2)}" if m else UNKNOWN


class _Source:
    __slots__ = ("last_row", "since", "suppressed")

    def __init__(self, now: float) -> None:
        self.last_row = now
        self.since = now
        self.suppressed = 0


class UnauthorizedAudit:
    """Records refused credentials in the audit log, at most one row per source per `interval` seconds."""

    def __init__(
        self,
        log: AuditLog,
        *,
        interval: float = 1.0,
        max_sources: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._log = log
        self._interval = interval
        self._max_sources = max_sources
        self._clock = clock
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def refused(
        self,
        *,
        authorization: str | None,
        missing: bool,
        reason: str,
        client: str | None,
        server: str,
        method: str,
    ) -> None:
        """One 401. Synchronous and cheap: a dict lookup, and now and then one audit row."""
        if missing:
            return
        now = self._clock()
        credential = claimed_credential(authorization)
        address = client or UNKNOWN
        key = credential if credential != UNKNOWN else f"addr:{address}"
        source = self._sources.get(key)
        if source is None:
            key, source = self._new_source(key, now)
            if source is None:
                return
        elif now - source.last_row < self._interval:
            source.suppressed += 1
            return
        detail = f"{reason} (from {address})"
        if source.suppressed:
            since = datetime.fromtimestamp(source.since).strftime("%H:%M:%S")
            detail += f" (and {source.suppressed} more since {since})"
        source.last_row = source.since = now
        source.suppressed = 0
        self._sources.move_to_end(key)
        self._log.record(
            AuditEvent(
                at=now,
                request_id=None,
                principal=UNKNOWN,
                credential=credential,
                server=server,
                member=None,
                upstream=None,
                method=method,
                target=None,
                outcome=Outcome.UNAUTHENTICATED,
                detail=detail[:400],
            )
        )

    def _new_source(self, key: str, now: float) -> tuple[str, _Source | None]:
        """A source seen for the first time: it is recorded now (None: counted in `other`, not recorded)."""
        sources = self._sources
        for _ in range(len(sources)):
            if len(sources) < self._max_sources:
                break
            oldest_key, oldest = next(iter(sources.items()))
            if oldest_key == _OTHER:
                sources.move_to_end(_OTHER)
            elif now - oldest.last_row >= self._interval:
                del sources[oldest_key]  # quiet for a second: what it had suppressed is not reported
            else:
                break
        if len(sources) < self._max_sources:
            source = sources[key] = _Source(now)
            source.last_row = now - self._interval  # so this first refusal is recorded
            return key, source
        other = sources.get(_OTHER)
        if other is None:
            sources.popitem(last=False)
            other = sources[_OTHER] = _Source(now - self._interval)
        if now - other.last_row < self._interval:
            other.suppressed += 1
            return _OTHER, None
        return _OTHER, other
