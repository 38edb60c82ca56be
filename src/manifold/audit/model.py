"""What one audit row says: the `AuditEvent`, its closed set of `Outcome`s, and its JSON form.

An event holds the principal id and the credential's *reference* (a key id or an IdP id), never a token.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any


class Outcome(enum.StrEnum):
    """Every outcome an audit row can have: the writer stores only these, `query` filters by them and
    `manifold audit --outcome` offers exactly these choices."""

    OK = "ok"
    ERROR = "error"  # JSON-RPC error, upstream unreachable, timeout
    TOOL_ERROR = "tool_error"  # the tool ran and answered isError: true
    DENIED = "denied"  # no grant (or the key is restricted to other servers)
    UNKNOWN = "unknown"  # no such tool / prompt / resource on this server
    AUTH_REQUIRED = "auth_required"  # the upstream needs the user to connect an account (OAuth) first
    UNAUTHENTICATED = "unauthenticated"  # HTTP 401: a credential was sent and refused (audit/unauthorized.py)
    RATE_LIMITED = "rate_limited"  # over a rate limit or quota (policy/rate_limits.py); nothing reached upstream
    APPROVAL_REQUIRED = "approval_required"  # a call held for a human approver (policy/approvals.py)
    APPROVED = "approved"  # an approver approved a held call (the row's principal is the approver)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One audited request. `principal` is `Principal.id`; `credential` is `str(Principal.credential)`
    (a kind and a key or IdP id, never a secret). `arguments` may be the request's own dict: it is read by
    the background writer later, so it must not be mutated after `record`."""

    at: float  # unix time the request arrived
    request_id: str | int | None
    principal: str
    credential: str
    server: str
    member: str | None
    upstream: str | None
    method: str  # tools/call | resources/read | prompts/get | connect | admin <HTTP method>
    target: str | None  # tool / prompt name or resource URI, as the client named it
    outcome: Outcome
    detail: str | None = None  # why it failed; must not hold secrets
    latency_ms: float | None = None
    arguments: Mapping[str, Any] | None = None  # kept only with audit.include_arguments


FIELDS = tuple(f.name for f in fields(AuditEvent))


def event_to_json(event: AuditEvent | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON form used by `manifold audit --json` and the JSON-lines mirror: every field (of an event or
    of a table row), plus `time` in ISO-8601 UTC."""
    values: Mapping[str, Any] = event if isinstance(event, Mapping) else {name: getattr(event, name) for name in FIELDS}
    out: dict[str, Any] = {"time": datetime.fromtimestamp(values["at"], UTC).isoformat(timespec="milliseconds")}
    for name in FIELDS:
        value = values.get(name)
        out[name] = value.value if isinstance(value, Outcome) else value
    return out
