"""`manifold upstreams create` does not judge `${ENV}` references by its own environment.

Outside probe: `env: {TOKEN: "${VAR}"}` was created (exit 0) because VAR was set in the operator's shell,
and the running gateway, which resolves it in its own environment, then left the upstream out ("VAR is not
set"); with VAR unset in the shell the CLI refused what the gateway would have served. Now the CLI stores the
reference as written whatever its own environment holds, and says that the gateway resolves it; the gateway's
own word on an unset variable stays as clear as before.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator

import httpx2
import pytest
import yaml

from tests import zygote
from tests.e2e.harness import REPO, Gateway, run_gateway
from tests.waiting import wait_for

pytestmark = pytest.mark.anyio

VAR = "MANIFOLD_TEST_GATEWAY_ONLY_TOKEN"
URL_VAR = "MANIFOLD_TEST_GATEWAY_ONLY_URL"


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    grants = [{"who": "user:dev", "what": ["server:*", "vserver:*"]}]
    async with run_gateway({}, extra={"grants": grants}) as gateway:  # neither variable set in its environment
        yield gateway


async def create(gw: Gateway, body: dict[str, object], env: dict[str, str]) -> tuple[int, str, str]:
    """`manifold upstreams create` in a shell whose environment is the test's plus `env`, less both variables."""
    shell = {k: v for k, v in os.environ.items() if k not in (VAR, URL_VAR)} | env
    command = [sys.executable, "-m", "manifold.cli", "--config", str(gw.config_dir / "manifold.yaml")]
    done = await zygote.run([*command, "upstreams", "create"], input=yaml.safe_dump(body).encode(), cwd=REPO, env=shell)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def stored(gw: Gateway, upstream_id: str) -> dict[str, object]:
    async with gw.http() as http:
        answer = await http.get(f"{gw.base}/admin/api/upstreams/{upstream_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize(
    ("upstream_id", "shell"), [("unset-here", {}), ("set-here", {VAR: "a-token-only-the-shell-has"})]
)
async def test_a_reference_is_stored_as_written_whatever_the_shell_holds(
    gw: Gateway, upstream_id: str, shell: dict[str, str]
) -> None:
    body = {"id": upstream_id, "transport": "stdio", "command": sys.executable, "env": {"TOKEN": f"${{{VAR}}}"}}
    status, out, err = await create(gw, body, shell)
    assert status == 0, err
    assert f"Created upstream '{upstream_id}'" in out
    assert f"${{{VAR}}} is resolved in the gateway's environment, not this command's" in err, err
    assert "a-token-only-the-shell-has" not in out + err
    entry = await stored(gw, upstream_id)
    assert entry["body"]["env"] == {"TOKEN": f"${{{VAR}}}"}  # type: ignore[index]
    # The gateway, without the variable, leaves it out and says why, as it did before.
    assert entry["applied"] is False
    assert entry["problem"] == f"env.TOKEN: environment variable {VAR} is not set"
    await wait_for(
        lambda: (
            f"upstream '{upstream_id}' (created through the API) is left out: env.TOKEN: environment variable "
            f"{VAR} is not set" in gw.log()
        )
    )
    async with httpx2.AsyncClient(timeout=30) as http:
        assert upstream_id not in (await http.get(f"{gw.base}/healthz")).json()["upstreams"]


async def test_a_whole_url_reference_is_not_judged_by_the_shell_either(gw: Gateway) -> None:
    body = {"id": "remote", "transport": "http", "url": f"${{{URL_VAR}}}", "headers": {"X-Token": f"${{{VAR}}}"}}
    status, _, err = await create(gw, body, {URL_VAR: "not a url"})
    assert status == 0, err
    note = next(line for line in err.splitlines() if line.startswith("note: "))
    assert f"${{{URL_VAR}}}" in note and f"${{{VAR}}}" in note and "are resolved in the gateway's environment" in note
    assert (await stored(gw, "remote"))["body"]["url"] == f"${{{URL_VAR}}}"  # type: ignore[index]


async def test_what_does_not_depend_on_a_reference_is_still_checked(gw: Gateway) -> None:
    body = {"id": "broken", "transport": "http", "url": f"http://127.0.0.1:99999/${{{VAR}}}"}
    status, _, err = await create(gw, body, {VAR: "mcp"})
    assert status == 1, err
    assert "url: 'url' has port '99999'" in err, err
