"""Demo upstream over streamable HTTP: a few small utilities.

    python -m manifold.demo.toolbox --port 8471     # http://127.0.0.1:8471/mcp

Tools: now(), add(a, b), uuid(), echo(text), word_count(text).
Listens on 127.0.0.1 only.
"""

import argparse
import uuid as uuid_module
import warnings
from datetime import UTC, datetime

import uvicorn
from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel

warnings.filterwarnings("ignore", message=r".*deprecated as of 2026-07-28.*")

DEFAULT_PORT = 8471


class Sum(BaseModel):
    sum: float


class WordCount(BaseModel):
    words: int
    characters: int


def build_server() -> MCPServer:
    mcp = MCPServer("toolbox", version="0.1.0", instructions="Small, deterministic utilities.", log_level="WARNING")

    @mcp.tool()
    def now() -> str:
        """The current time in UTC, ISO 8601."""
        return datetime.now(UTC).isoformat(timespec="seconds")

    @mcp.tool()
    def add(a: float, b: float) -> Sum:
        """Add two numbers."""
        return Sum(sum=a + b)

    @mcp.tool()
    def uuid() -> str:
        """A new random UUID (version 4)."""
        return str(uuid_module.uuid4())

    @mcp.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @mcp.tool()
    def word_count(text: str) -> WordCount:
        """Count the words (split on whitespace) and characters of a text."""
        return WordCount(words=len(text.split()), characters=len(text))

    return mcp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Manifold demo upstream: small utilities over streamable HTTP.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    # Accepted so tests/upstreams/launch.py can start it like the other upstreams.
    parser.add_argument("--transport", choices=["http"], default="http")
    args = parser.parse_args(argv)
    uvicorn.run(build_server().streamable_http_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
