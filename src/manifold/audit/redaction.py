"""Tool arguments as the audit table may keep them (only with `audit.include_arguments`): values under keys
that look like secrets are replaced by `REDACTED` at any depth, long strings are clipped, deep structures cut."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeAlias

REDACTED = "[redacted]"
MAX_ARGUMENT_DEPTH = 32  # deeper structures are cut, so a hostile payload cannot exhaust the stack
MAX_ARGUMENT_STRING = 4096  # longer argument strings are clipped: the audit table is not a file store
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1

# Keys whose values are credentials. Matched anywhere in the key, case-insensitively: `client_secret`,
# `X-Api-Key`, `db_password`, `refreshToken` are all caught. Over-redacting a harmless field is the price.
_SECRET_KEY = re.compile(
    r"token|passw|passphrase|pwd|secret|authori[sz]ation|^auth$|api[-_]?key|access[-_]?key|private[-_]?key"
    r"|credential|cookie|session[-_]?id|signature",
    re.IGNORECASE,
)

# What redact returns: plain JSON values only.
JsonSafe: TypeAlias = "str | int | float | bool | None | list[JsonSafe] | dict[str, JsonSafe]"


def redact(value: object, _depth: int = 0) -> JsonSafe:
    """A JSON-safe copy of `value` with every value under a secret-looking key replaced by REDACTED, at any
    depth (in objects and in lists). Long strings are clipped; anything not JSON becomes its str(), and so does
    an integer beyond 64 bits (the gateway relays those exactly: jsoncodec.py)."""
    if _depth > MAX_ARGUMENT_DEPTH:
        return "[too deep]"
    if isinstance(value, Mapping):
        return {str(k): REDACTED if _SECRET_KEY.search(str(k)) else redact(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, _depth + 1) for v in value]
    if isinstance(value, str):
        if len(value) > MAX_ARGUMENT_STRING:
            return value[:MAX_ARGUMENT_STRING] + f"...[{len(value) - MAX_ARGUMENT_STRING} more characters]"
        return value
    if isinstance(value, int) and not _INT64_MIN <= value <= _UINT64_MAX:
        return str(value)  # the rows are written with orjson, which holds no integer beyond 64 bits: its digits
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)
