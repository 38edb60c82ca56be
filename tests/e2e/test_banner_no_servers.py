"""`manifold serve` with nothing to serve says how to add a server, instead of a sign-in hint and client snippets
for a `/mcp/demo` that does not exist (outside probe: "serving 0 servers", then snippets for a made-up server).
With servers, the banner is as before: the snippets name a server that is served."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.e2e.harness import Gateway, manifold_cli, run_gateway, stdio_upstream
from tests.waiting import wait_for

pytestmark = pytest.mark.anyio

SERVER = Path(__file__).parents[1] / "upstreams" / "upstream_min.py"


async def banner_of(gw: Gateway) -> str:
    """The banner (printed once the server has started, so perhaps after /healthz first answered)."""
    await wait_for(lambda: "Development key" in gw.log(), 20, what="the banner")
    return gw.log()


async def test_with_no_server_the_banner_says_how_to_add_one_and_following_it_serves_one(tmp_path: Path) -> None:
    async with run_gateway({}, {}) as gw:
        banner = await banner_of(gw)
        assert "Manifold is serving 0 servers" in banner
        # Nothing for a server that does not exist: no URL of one, no snippet, no sign-in hint.
        for absent in ("/mcp/demo", "/mcp/", "mcpServers", "claude mcp add", "Sign in from your IDE"):
            assert absent not in banner.replace("/mcp/<its id>", ""), (absent, banner)
        config = gw.config_dir / "manifold.yaml"
        assert f"under `upstreams:` in {config}" in banner, banner
        assert f"manifold --config {config} upstreams create --file server.yaml" in banner, banner
        assert f"one *.yaml file in {gw.config_dir / 'virtual_servers'}" in banner, banner
        assert "vservers create" in banner and f"{gw.base}/admin/upstreams/new" in banner, banner
        assert gw.key in banner  # the development key, to sign in to the console or use the admin API

        # Done as it says, the server is served at once.
        server = tmp_path / "server.yaml"
        server.write_text(f"id: notes\ntransport: stdio\ncommand: {sys.executable}\nargs: [{str(SERVER)!r}]\n")
        await manifold_cli(gw, "upstreams", "create", "--file", str(server))
        async with gw.client("notes") as client:
            assert "echo" in {t.name for t in (await client.list_tools()).tools}


async def test_with_a_server_the_banner_gives_its_url_and_the_snippets() -> None:
    async with run_gateway({"up": stdio_upstream(str(SERVER))}) as gw:
        banner = await banner_of(gw)
    assert "Manifold is serving 1 server on" in banner and f"{gw.url('up')}  {gw.sse_url('up')}" in banner, banner
    assert f"claude mcp add --transport http manifold {gw.url('up')}" in banner, banner
    assert '"mcpServers"' in banner and "/mcp/demo" not in banner and "upstreams create" not in banner, banner
