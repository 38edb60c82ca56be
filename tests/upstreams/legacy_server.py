"""A handshake-era-only upstream: mcp 1.x `FastMCP`, run from .venv-legacy.

It speaks `initialize` + `Mcp-Session-Id` (protocol 2025-11-25 and older) and nothing of
2026-07-28: `server/discover` is answered with "Method not found", so mcp 2.x clients in
`mode="auto"` fall back to the handshake. Use it to test the gateway against old upstreams.

    scripts/setup-legacy-venv.sh       # once; fast when .venv-legacy is already there
    .venv-legacy/bin/python tests/upstreams/legacy_server.py --transport stdio
    .venv-legacy/bin/python tests/upstreams/legacy_server.py --transport http --port 8125  # /mcp
    .venv-legacy/bin/python tests/upstreams/legacy_server.py --transport sse  --port 8126  # /sse

From a test: `run_http_upstream(LEGACY_SERVER, python=LEGACY_PYTHON)` (tests/upstreams/launch.py).

Tools: echo(text), add(a, b), whoami(). Resource: legacy://readme. Prompt: greet(name).
"""

import argparse
import os

from mcp.server.fastmcp import FastMCP
from pydantic import BaseModel

README = "This upstream only speaks the handshake era (mcp 1.x)."


class Identity(BaseModel):
    name: str
    pid: int


def build_server(name: str, port: int) -> FastMCP:
    mcp = FastMCP(name, host="127.0.0.1", port=port, log_level="WARNING")

    @mcp.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @mcp.tool()
    def whoami() -> Identity:
        """Return this server's --name and process id."""
        return Identity(name=name, pid=os.getpid())

    @mcp.resource("legacy://readme", mime_type="text/plain")
    def readme() -> str:
        return README

    @mcp.prompt()
    def greet(name: str) -> str:
        """Greet someone by name."""
        return f"Say hello to {name}."

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser(description="Handshake-era-only MCP test upstream (mcp 1.x).")
    parser.add_argument("--transport", choices=["stdio", "http", "sse"], default="stdio")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--name", default="legacy")
    args = parser.parse_args()
    transport = {"stdio": "stdio", "http": "streamable-http", "sse": "sse"}[args.transport]
    build_server(args.name, args.port).run(transport)


if __name__ == "__main__":
    main()
