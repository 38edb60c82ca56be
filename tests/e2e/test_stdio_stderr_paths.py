"""What a stdio upstream that exits at start says reaches the caller with its file paths (upstream/stdio.py
`redact`): mcp-server-git started on a missing repository says only "ERROR:mcp_server_git.server:<path> does
not exist", and a path of 32 characters or more was taken for a base64 secret."""

from __future__ import annotations

import sys

import pytest

from tests.e2e.harness import run_gateway

pytestmark = pytest.mark.anyio
REPOSITORY = "/home/alice/projects/my-company-website-repo"
# What mcp-server-git 2026.10.19 writes before it exits with status 1, as the one line of its stderr.
EXITS_LIKE_MCP_SERVER_GIT = f"import sys; sys.exit('ERROR:mcp_server_git.server:{REPOSITORY} does not exist')"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_an_upstream_that_exits_at_start_is_told_with_the_path_it_named() -> None:
    upstreams = {"git": {"transport": "stdio", "command": sys.executable, "args": ["-c", EXITS_LIKE_MCP_SERVER_GIT]}}
    async with run_gateway(upstreams) as gw, gw.client("git") as client:
        result = await client.call_tool("git_status", {"repo_path": REPOSITORY})
        assert result.is_error
        assert result.content[0].text == (  # type: ignore[union-attr]
            "Tool 'git_status' is unavailable: member 'git': process exited (code 1):"
            f" ERROR:mcp_server_git.server:{REPOSITORY} does not exist"
        )
