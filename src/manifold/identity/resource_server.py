"""What the gateway must do as an OAuth 2.1 protected resource (MCP authorization, RFC 9728, RFC 6750).

Every MCP endpoint `/mcp/{server}` (and `/sse/{server}`) is a protected resource with its own metadata
document at `/.well-known/oauth-protected-resource/mcp/{server}`, naming the authorization servers whose
tokens it accepts (the configured IdPs). A 401 points at that document, so an MCP client can discover where
to get a token. The gateway itself is named first (its own authorization server, authserver/), unless
`identity.authorization_server.enabled` is off.
"""

from __future__ import annotations

from typing import Any

import orjson

from manifold.asgi import JSON_HEADERS, Send, send_body
from manifold.config.loaded import LoadedConfig
from manifold.identity.authenticator import Unauthenticated

WELL_KNOWN_PRM = "/.well-known/oauth-protected-resource"


def base_url(config: LoadedConfig, headers: dict[str, str]) -> str:
    """The origin clients reach us at: `public_url` if set, else from the (already validated) Host."""
    if config.settings.public_url:
        return config.settings.public_url
    host = headers.get("host") or f"127.0.0.1:{config.settings.port}"
    return f"http://{host}"


def metadata(config: LoadedConfig, headers: dict[str, str], endpoint: str, server_id: str) -> dict[str, Any]:
    base = base_url(config, headers)
    identity = config.gateway.identity
    servers = [base] if identity.authorization_server.enabled else []
    return {
        "resource": f"{base}/{endpoint}/{server_id}",
        "authorization_servers": servers + [idp.issuer for idp in identity.idps.values()],
        "bearer_methods_supported": ["header"],
        "resource_name": f"Manifold: {server_id}",
    }


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(
    config: LoadedConfig, headers: dict[str, str], path: str, *, error: str | None, description: str
) -> bytes:
    """`WWW-Authenticate` for a 401. RFC 6750 §3.1: a request with no credentials gets no error code."""
    parts = ['Bearer realm="manifold"']
    if error is not None:
        parts.append(f"error={_quote(error)}")
        parts.append(f"error_description={_quote(description)}")
    parts.append(f"resource_metadata={_quote(base_url(config, headers) + WELL_KNOWN_PRM + path)}")
    return ", ".join(parts).encode("latin-1", "replace")


def error_body(error: str, description: str) -> bytes:
    return orjson.dumps({"error": error, "error_description": description})


async def send_unauthorized(
    send: Send, config: LoadedConfig, headers: dict[str, str], resource_path: str, exc: Unauthenticated
) -> None:
    """The one 401 of every protected endpoint (MCP, admin API): no error code when no credential was sent
    (RFC 6750 §3.1), `invalid_token` otherwise, and always the metadata URL."""
    error = None if exc.missing else "invalid_token"
    www = challenge(config, headers, resource_path, error=error, description=exc.reason)
    body = error_body(error or "unauthorized", exc.reason)
    await send_body(send, 401, body, JSON_HEADERS + [(b"www-authenticate", www)])
