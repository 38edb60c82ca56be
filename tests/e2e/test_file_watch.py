"""Configuration files changed while the gateway runs (runtime/file_watch.py): upstreams, groups and virtual-server
files are applied live; a file with a problem is said in the log and changes nothing; other sections wait for
the next start, and the log says so.

Was (found by a newcomer's walkthrough): a virtual server added as a file was not served until a restart, while
`manifold check` and `manifold vservers list` showed it as fine and the gateway answered 404 "unknown server".
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import Gateway, manifold_cli, run_gateway, stdio_upstream
from tests.upstreams.launch import KITCHEN

pytestmark = pytest.mark.anyio

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def status_of(gw: Gateway, server: str, key: str | None = None) -> int:
    async with gw.http() as http:
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        return (await http.post(gw.url(server), headers={**HEADERS, **auth}, json=INITIALIZE)).status_code


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    """Poll a condition seen from outside the gateway process (nothing there can signal the test)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g}s")
        await asyncio.sleep(0.05)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


async def test_files_changed_while_running_are_applied_or_said() -> None:
    upstreams = {"alpha": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "alpha")}
    servers = {"one": {"members": [{"upstream": "alpha", "tools": ["echo"]}]}}
    extra = {"users": {"bob@corp.com": {}}, "grants": [{"who": "anyone", "what": ["vserver:*"]}]}
    async with run_gateway(upstreams, servers, extra=extra) as gw:
        bob = json.loads(
            (await manifold_cli(gw, "keys", "create", "--user", "bob@corp.com", "--name", "laptop", "--json")).stdout
        )["token"]
        folder = gw.config_dir / "virtual_servers"
        assert await status_of(gw, "two") == 404

        # A new virtual-server file is served, with its tools.
        write(folder / "two.yaml", "members:\n  - upstream: alpha\n    tools: [add]\n")

        async def two_served() -> bool:
            return await status_of(gw, "two") == 200

        await eventually(two_served, "serving the new file's virtual server")
        async with gw.client("two") as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["alpha__add"]

        # A file with a problem changes nothing, and the log names the file, the field and the line.
        write(folder / "three.yaml", "members:\n  - upstream: alhpa\n")

        async def refused() -> bool:
            return "not applied" in gw.log()

        await eventually(refused, "the log saying the files were not applied")
        assert "virtual_servers/three.yaml: members[0].upstream: unknown upstream 'alhpa'" in gw.log()
        assert "did you mean 'alpha'? (line 2)" in gw.log()
        assert await status_of(gw, "three") == 404 and await status_of(gw, "two") == 200
        (folder / "three.yaml").unlink()

        # manifold.yaml: a new upstream and a grant to it apply at once; a change to the gateway's settings
        # waits for a restart.
        assert await status_of(gw, "alpha", bob) == 403  # no grant gives bob the upstream itself
        main = gw.config_dir / "manifold.yaml"
        config = yaml.safe_load(main.read_text())
        config["upstreams"]["beta"] = stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "beta")
        config["grants"].append({"who": "user:bob@corp.com", "what": ["server:beta"]})
        config["gateway"]["max_body_bytes"] = 12345
        main.write_text(yaml.safe_dump(config))

        async def beta_served() -> bool:
            return await status_of(gw, "beta", bob) == 200

        await eventually(beta_served, "serving the upstream added to manifold.yaml, to the user granted it")
        assert await status_of(gw, "alpha", bob) == 403
        async with gw.http() as http:  # what the admin API lists is what is enforced (review)
            listed = (await http.get(f"{gw.base}/admin/api/grants")).json()
        assert any(g["who"] == "user:bob@corp.com" and g["what"] == ["server:beta"] for g in listed), listed
        assert "manifold.yaml: changes to gateway apply at the next start" in gw.log()

        # A file removed: its virtual server is no longer served.
        (folder / "two.yaml").unlink()

        async def two_gone() -> bool:
            return await status_of(gw, "two") == 404

        await eventually(two_gone, "the removed file's virtual server ending")
        assert await status_of(gw, "one") == 200
