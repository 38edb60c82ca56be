"""/healthz and /readyz answer anyone (a load balancer's probe has no key), so they show states only: what an
upstream said — a stdio command's stderr, its last error, why a member was left out, the tool names that
collide — may name internal hosts and paths, and only a gateway admin's credential gets it (outside probe: an
unauthenticated /healthz showed a crashed upstream's stderr lines and error text). docs/security.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.e2e.harness import Gateway, manifold_cli, run_gateway, stdio_upstream

pytestmark = pytest.mark.anyio

SERVER = Path(__file__).parents[1] / "upstreams" / "upstream_min.py"
INTERNAL = "db-7.internal.corp.example:5432"
PATH = "/srv/payroll/etc/files.conf"
CRASH = f"""
import sys
print("connecting to {INTERNAL} with {PATH}", file=sys.stderr)
print("Error: cannot reach {INTERNAL}", file=sys.stderr)
sys.exit(1)
"""


async def health_of(gw: Gateway, path: str, authorization: str | None) -> httpx2.Response:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        return await http.get(f"{gw.base}{path}")


def assert_states_only(answer: httpx2.Response, *, ready: bool) -> None:
    """What anyone gets: states and counts, no word an upstream provided."""
    assert answer.status_code == (503 if ready else 200), answer.text
    assert INTERNAL not in answer.text and PATH not in answer.text and "Error:" not in answer.text, answer.text
    assert "'echo'" not in answer.text, answer.text  # the colliding tool's name is the upstream's too
    body: dict[str, Any] = answer.json()
    files = body["upstreams"]["files"]
    assert files["down"] is True and files["state"] != "connected" and files["required"] is True
    assert "stderr" not in files and "last_error" not in files
    assert body["upstreams"]["live"]["state"] == "connected"
    assert body["degraded_servers"] == {"eng": ["files"]}  # which server is degraded, by which member
    assert body["name_collisions"] == {"flat": 1}
    assert "admin" in body["details"]
    if ready:
        assert body["down_upstreams"] == ["files"] and "eng" in body["servers"]


async def test_anonymous_callers_get_states_and_an_admin_gets_what_the_upstream_said(tmp_path: Path) -> None:
    files = tmp_path / "files.py"
    files.write_text(CRASH)
    upstreams = {
        "files": stdio_upstream(str(files)),
        "live": stdio_upstream(str(SERVER)),
        "twin": stdio_upstream(str(SERVER)),
    }
    servers = {
        "eng": {"members": [{"upstream": "files"}, {"upstream": "live"}]},
        "flat": {"namespace": False, "members": [{"upstream": "live"}, {"upstream": "twin", "tools": ["echo"]}]},
    }
    async with run_gateway(upstreams, servers) as gw:
        for server in ("eng", "flat"):
            async with gw.client(server) as client:
                await client.list_tools()  # files fails to start; live and twin both offer `echo`
        created = await manifold_cli(gw, "keys", "create", "--user", "alice@corp.com", "--name", "a", "--json")
        alice = json.loads(created.stdout)["token"]

        # No credential, a refused one, a user's who is no admin: the same answer, states only, never a 401.
        for authorization in (None, "Bearer mfk_notakey0000_nothing", f"Bearer {alice}"):
            assert_states_only(await health_of(gw, "/healthz", authorization), ready=False)
            assert_states_only(await health_of(gw, "/readyz", authorization), ready=True)

        # The development key is an admin's: the details as before.
        for path in ("/healthz", "/readyz"):
            answer = await health_of(gw, path, f"Bearer {gw.key}")
            body = answer.json()
            files_health = body["upstreams"]["files"]
            assert files_health["stderr"][-1] == f"Error: cannot reach {INTERNAL}", body
            assert INTERNAL in files_health["last_error"]
            assert INTERNAL in body["degraded_servers"]["eng"]["files"]
            (collision,) = body["name_collisions"]["flat"]
            assert "'echo'" in collision
            assert "details" not in body
        assert "mfk_notakey0000_nothing" not in gw.log()
