"""Which header names a `forwarded` upstream may list in `auth.allow` (the rule `outbound/forwarded.py`
also applies to what a client sends). A leaf of config, so the config models can check an allow-list
without importing the outbound layer.

Some names are never forwarded, whatever the list says: they would let a client steer the gateway's own
connection (Host, Content-Length, hop-by-hop headers), the MCP session, or smuggle cookies.
"""

from __future__ import annotations

import re

FIELD_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 field-name
NEVER = frozenset(
    {
        "host",
        "cookie",
        "set-cookie",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "mcp-session-id",
        "mcp-protocol-version",
        "accept",
    }
)  # lower case


def check_allowed_name(name: str) -> str:
    """`name`, or a ValueError saying why it may not be on a forwarded allow-list."""
    if not FIELD_NAME.fullmatch(name):
        raise ValueError(f"'{name}' is not a valid header name")
    if name.lower() in NEVER:
        raise ValueError(f"header '{name}' can never be forwarded")
    return name
