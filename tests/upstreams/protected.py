"""Protected: an MCP upstream that demands OAuth access tokens from a real authorization server, for tests.

    python tests/upstreams/protected.py --issuer http://127.0.0.1:9500 --port 8123 [--scopes mcp:tools]
                                        [--record FILE]
    # http://127.0.0.1:8123/mcp

FastMCP 4 with `JWTVerifier` (the issuer's JWKS, `iss`, `aud` = this server's own URL, required scopes) behind
`RemoteAuthProvider`, so it behaves like a real protected MCP server: an unauthenticated request gets
401 with `WWW-Authenticate: Bearer … resource_metadata="http://127.0.0.1:PORT/.well-known/oauth-protected-
resource/mcp"`, and that RFC 9728 document names the issuer as its authorization server.

Tools: whoami() → the token's subject; echo(text).
--record FILE appends one JSON line per request that passed authentication: {"method", "authorization" (the
header as received), "sub"}. Test-only: tokens are written as received.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import uvicorn
from fastmcp import FastMCP
from fastmcp.server.auth import RemoteAuthProvider
from fastmcp.server.auth.providers.jwt import JWTVerifier
from fastmcp.server.dependencies import get_access_token, get_http_headers
from fastmcp.server.middleware import Middleware

HOST = "127.0.0.1"


class Recorder(Middleware):
    def __init__(self, path: str) -> None:
        self._path = path

    async def on_request(self, context: Any, call_next: Any) -> Any:
        token = get_access_token()
        entry = {
            "method": context.method,
            "authorization": get_http_headers(include={"authorization"}).get("authorization"),
            "sub": token.claims.get("sub") if token is not None else None,
        }
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(entry) + "\n").encode())
        finally:
            os.close(fd)
        return await call_next(context)


def build(issuer: str, port: int, scopes: list[str], record: str | None) -> FastMCP:
    base_url = f"http://{HOST}:{port}"
    verifier = JWTVerifier(
        jwks_uri=f"{issuer}/jwks",
        issuer=issuer,
        audience=f"{base_url}/mcp",
        required_scopes=scopes or None,
    )
    auth = RemoteAuthProvider(verifier, authorization_servers=[issuer], base_url=base_url, scopes_supported=scopes)
    mcp = FastMCP("protected", auth=auth, middleware=[Recorder(record)] if record else [])

    @mcp.tool
    def whoami() -> str:
        """The subject of the access token this call carried."""
        token = get_access_token()
        return str(token.claims.get("sub")) if token is not None else "anonymous"

    @mcp.tool
    def echo(text: str) -> str:
        return text

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transport", choices=["http"], default="http")
    parser.add_argument("--scopes", default="", help="space-separated scopes every token must carry")
    parser.add_argument("--record")
    args = parser.parse_args()
    mcp = build(args.issuer, args.port, args.scopes.split(), args.record)
    uvicorn.run(mcp.http_app(path="/mcp"), host=HOST, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
