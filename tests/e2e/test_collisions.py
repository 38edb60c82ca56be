"""Name collisions are refused, never resolved by picking one side silently."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.harness import run_gateway, stdio_upstream, write_config
from tests.upstreams.launch import KITCHEN, REPO

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_alias_collision_is_refused_at_load_naming_both_sources(tmp_path) -> None:
    upstreams = {"a": stdio_upstream(KITCHEN), "b": stdio_upstream(KITCHEN)}
    servers = {
        "clash": {
            "namespace": False,
            "members": [
                {"upstream": "a", "tools": ["echo"], "aliases": {"echo": "say"}},
                {"upstream": "b", "tools": ["add"], "aliases": {"add": "say"}},
            ],
        }
    }
    config = write_config(tmp_path, upstreams, servers)
    run = subprocess.run(
        [sys.executable, "-m", "manifold.cli", "--config", str(config), "check"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 1
    out = run.stdout + run.stderr
    assert "clash.yaml" in out and "say" in out
    assert "'a'" in out and "'b'" in out, out
    serve = subprocess.run(
        [sys.executable, "-m", "manifold.cli", "--config", str(config), "serve", "--port", "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert serve.returncode == 2 and "say" in serve.stderr


async def test_names_that_meet_at_run_time_are_both_left_out() -> None:
    # Globs hide the clash from the loader; the catalog finds it when the lists arrive.
    upstreams = {
        "a": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "a"),
        "b": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "b"),
    }
    servers = {
        "flat": {
            "namespace": False,
            "members": [{"upstream": "a", "tools": ["ech*", "add"]}, {"upstream": "b", "tools": ["ech*", "whoami"]}],
        }
    }
    async with run_gateway(upstreams, servers) as gw, gw.client("flat") as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert names == ["add", "whoami"]
        async with gw.http() as http:
            health = (await http.get(f"{gw.base}/healthz")).json()
        assert "collides" in gw.log()
    message = " ".join(health["name_collisions"]["flat"])
    assert "'echo'" in message and "member 'a'" in message and "member 'b'" in message
