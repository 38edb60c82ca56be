"""The credential an upstream session carries: the value the outbound layer decides and the pool keys by.

It lives here, below `manifold.outbound`, because the pool needs the type and must not import the layer that
decides it (outbound/resolver.py chooses the value; upstream/pool.py only uses it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Outbound:
    """Headers to add to the upstream requests, and the identity the upstream session is keyed by.

    `identity=None` means one shared session for every caller (none, static); any per-caller credential
    gets its own session per (upstream, identity). `handshake`: the session is the upstream's 2025-11-25-era
    one (`in_handshake_era`), and `fallback` the identity of the session its clients use when the upstream
    will not have one. The era is a field of its own, not a mark in the identity string: an identity holds a
    principal's id, which may contain anything (isolation probe: user `bob|handshake-era` had bob's session)."""

    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # credentials: never in a repr or log
    identity: str | None = None
    handshake: bool = False
    fallback: str | None = None


# No credential headers, one session shared by every caller.
SHARED = Outbound()


def in_handshake_era(outbound: Outbound, identity: str) -> Outbound:
    """The same credential, keyed to the upstream's 2025-11-25-era session of `identity`: clients of that era
    of an upstream (`protocol: auto`) that speaks both are relayed through it (upstream/pool.py `speaks_both`),
    so what the upstream does only on such connections (server→client requests from FastMCP tools, say)
    reaches them as it would directly. `outbound` stays the session they fall back to."""
    return Outbound(outbound.headers, identity, handshake=True, fallback=outbound.identity)


def own_era(outbound: Outbound) -> Outbound:
    """The same credential, keyed to the upstream's own-era session (undoing `in_handshake_era`)."""
    return Outbound(outbound.headers, outbound.fallback) if outbound.handshake else outbound
