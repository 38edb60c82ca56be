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
    gets its own session per (upstream, identity)."""

    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # credentials: never in a repr or log
    identity: str | None = None


# No credential headers, one session shared by every caller.
SHARED = Outbound()

# Appended to a session's identity for the 2025-11-25-era session of an upstream (`protocol: auto`) that speaks
# both eras: clients of that era are relayed through it (upstream/pool.py `speaks_both`), so what the upstream
# does only on such connections (server→client requests from FastMCP tools, say) reaches them as it would directly.
HANDSHAKE_SESSION = "|handshake-era"


def in_handshake_era(outbound: Outbound) -> Outbound:
    """The same credential, keyed to the upstream's handshake-era session."""
    return Outbound(outbound.headers, f"{outbound.identity or ''}{HANDSHAKE_SESSION}")


def base_identity(identity: str | None) -> str | None:
    """Whose session this is, whatever its era: None for a shared one (the handshake-era one included)."""
    return identity.removesuffix(HANDSHAKE_SESSION) or None if identity is not None else None


def own_era(outbound: Outbound) -> Outbound:
    """The same credential, keyed to the upstream's own-era session (undoing `in_handshake_era`)."""
    identity = outbound.identity
    if identity is None or not identity.endswith(HANDSHAKE_SESSION):
        return outbound
    return Outbound(outbound.headers, identity.removesuffix(HANDSHAKE_SESSION) or None)
