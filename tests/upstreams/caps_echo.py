"""An upstream that tells what client it was asked for (mcp 2.3.0 `MCPServer`, both eras).

    python tests/upstreams/caps_echo.py --port 8123          # http://127.0.0.1:8123/mcp

Tool `capabilities()` returns, as JSON text, the client capabilities the request declared (2026-07-28: the
request's `_meta`; handshake era: the session's `initialize`), or `null` when none were declared. The
gateway's tests use it to see which capabilities reach an upstream on a client's behalf.
"""

import argparse
import json

import uvicorn
from mcp.server.mcpserver import Context, MCPServer


def build_server() -> MCPServer:
    mcp = MCPServer("caps-echo", version="1.0.0", log_level="WARNING")

    @mcp.tool()
    def capabilities(ctx: Context) -> str:
        """The client capabilities this request was made with, as JSON."""
        caps = ctx.client_capabilities
        return json.dumps(None if caps is None else caps.model_dump(mode="json", exclude_none=True, by_alias=True))

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser(description="An upstream that tells what client it was asked for.")
    parser.add_argument("--transport", choices=["http"], default="http")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(build_server().streamable_http_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
