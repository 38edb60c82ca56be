"""An upstream that sends and receives integers beyond 64 bits (mcp 2.3.0 `MCPServer`, both eras).

    python tests/upstreams/big_numbers.py --transport stdio
    python tests/upstreams/big_numbers.py --transport http --port 8123   # http://127.0.0.1:8123/mcp
    python tests/upstreams/big_numbers.py --transport sse  --port 8124   # GET /sse + POST /messages/

Tool `big(value)` answers with `structuredContent` (and the same JSON as text) holding what it received
(`received`, and `received_type`: the Python type the SDK parsed it as) and integers no 64-bit type holds
(BIG = 2**70 + 1, its negative, 2**64, -(2**63) - 1), next to a float and a string of digits. Python's json and
the SDK keep integers of any size, so a client connected directly gets them exactly; the gateway's tests check
that one connected through the gateway does too, in both directions.
"""

import argparse
import json
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent

BIG = 2**70 + 1


def build_server() -> MCPServer:
    mcp = MCPServer("big-numbers", version="1.0.0", log_level="WARNING")

    @mcp.tool()
    def big(value: Any = None) -> CallToolResult:
        """Echo `value` (and its Python type) next to integers beyond 64 bits."""
        structured = {
            "received": value,
            "received_type": type(value).__name__,
            "big": BIG,
            "negative": -BIG,
            "u64_plus_one": 2**64,
            "i64_min_minus_one": -(2**63) - 1,
            "nested": [{"factorial_25": 15511210043330985984000000}],
            "float": 1.5,
            "digits": "12345678901234567890123",
        }
        return CallToolResult(
            content=[TextContent(type="text", text=json.dumps(structured))], structured_content=structured
        )

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser(description="An upstream that sends and receives integers beyond 64 bits.")
    parser.add_argument("--transport", choices=["stdio", "http", "sse"], default="stdio")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    mcp = build_server()
    if args.transport == "stdio":
        anyio.run(mcp.run_stdio_async)
        return
    app = mcp.streamable_http_app() if args.transport == "http" else mcp.sse_app()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
