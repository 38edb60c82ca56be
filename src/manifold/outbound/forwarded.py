"""`forwarded` mode: headers the client sends for an upstream in `x-mcp-headers`.

    x-mcp-headers: {"github": {"X-GitHub-Token": "..."}, "jira": {"X-Jira-Token": "..."}}

The object is keyed by member id; a one-member server also takes a flat object. Only names on the
upstream's allow-list pass. Some names never do, whatever the list says: they would let a client steer the
gateway's own connection (Host, Content-Length, hop-by-hop headers) or smuggle cookies. Values never reach
a log or an error message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import orjson

from manifold.config.header_names import FIELD_NAME, NEVER

HEADER = "x-mcp-headers"
MAX_HEADER_BYTES = 16 * 1024  # the whole x-mcp-headers value
MAX_VALUE_BYTES = 4 * 1024  # one forwarded header value
_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")  # no CR, LF or other controls (header injection)


class ForwardedError(ValueError):
    """A malformed or refused x-mcp-headers; the message names the problem, never a value."""


def parse(raw: str | None, member_ids: list[str]) -> dict[str, dict[str, str]]:
    """The client's x-mcp-headers as {member id: {name: value}}. Empty when the header is absent."""
    if raw is None or raw == "":
        return {}
    if len(raw.encode("latin-1", "replace")) > MAX_HEADER_BYTES:
        raise ForwardedError(f"{HEADER} is over {MAX_HEADER_BYTES} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ForwardedError(f"{HEADER} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ForwardedError(f"{HEADER} must be a JSON object")
    flat = bool(data) and all(isinstance(v, str) for v in data.values())
    if flat:
        if len(member_ids) != 1:
            raise ForwardedError(
                f"{HEADER} must be keyed by member id on a server with several members ({', '.join(member_ids)})"
            )
        data = {member_ids[0]: data}
    out: dict[str, dict[str, str]] = {}
    for member, headers in data.items():
        if member not in member_ids:
            raise ForwardedError(f"{HEADER}: '{member[:64]}' is not a member of this server")
        if not isinstance(headers, dict):
            raise ForwardedError(f"{HEADER}: the entry for '{member}' must be an object of header names to values")
        checked: dict[str, str] = {}
        for name, value in headers.items():
            if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
                raise ForwardedError(f"{HEADER}: '{str(name)[:64]}' for '{member}' is not a valid header name")
            if not isinstance(value, str):
                raise ForwardedError(f"{HEADER}: the value of '{name}' for '{member}' must be a string")
            if len(value.encode()) > MAX_VALUE_BYTES:
                raise ForwardedError(f"{HEADER}: the value of '{name}' for '{member}' is over {MAX_VALUE_BYTES} bytes")
            if not _VALUE.fullmatch(value):
                raise ForwardedError(f"{HEADER}: the value of '{name}' for '{member}' holds control characters")
            checked[name] = value
        out[member] = checked
    return out


def select(sent: Mapping[str, str], allow: list[str], upstream_id: str) -> dict[str, str]:
    """The headers that go upstream: allowed names only. A refused name is an error, not silently dropped,
    so the client learns why its credential did not arrive."""
    allowed = {a.lower(): a for a in allow}
    out: dict[str, str] = {}
    for name, value in sent.items():
        lower = name.lower()
        if lower in NEVER or lower not in allowed:
            raise ForwardedError(
                f"header '{name}' may not be forwarded to upstream '{upstream_id}' (allowed: {', '.join(allow)})"
            )
        out[allowed[lower]] = value
    return out
