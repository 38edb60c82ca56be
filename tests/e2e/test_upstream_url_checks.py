"""An upstream URL that cannot be connected to is refused where it is written, naming the field.

Outside probe: `url: "http://"` and `url: "http://exa mple.com:99999/mcp"` passed `manifold check`,
`manifold upstreams create` and `POST /admin/api/upstreams`, then failed at first use with a logged traceback
(`upstream gh3: connect failed` + yarl's `Port out of range`) while clients read `could not be connected
(ValueError)`. Now the configuration model refuses a URL without a host, with a port outside 1-65535, with
whitespace or with another scheme: `check` by file, field and line, the admin API with 400 and its problems
list, the CLI naming the field; nothing is stored.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
import yaml

from tests import zygote
from tests.e2e.harness import REPO, Gateway, manifold_cli, run_gateway

pytestmark = pytest.mark.anyio

BAD = {
    "no-host": ("http://", "has no host"),
    "spaced-port": ("http://exa mple.com:99999/mcp", "must not contain spaces"),
    "big-port": ("http://mcp.example.com:99999/mcp", "has port '99999'"),
    "word-port": ("https://mcp.example.com:https/mcp", "has port 'https'"),
    "ftp": ("ftp://mcp.example.com/mcp", "must start with http:// or https://"),
    "open-bracket": ("http://[::1/mcp", "is not a valid URL"),
}


async def test_check_refuses_each_unusable_url_by_file_field_and_line(tmp_path: Path) -> None:
    upstreams = {uid: {"transport": "sse" if uid == "ftp" else "http", "url": url} for uid, (url, _) in BAD.items()}
    upstreams["fine"] = {"transport": "http", "url": "https://mcp.example.com:8443/mcp?x=1"}
    upstreams["ipv6"] = {"transport": "http", "url": "http://[::1]:8471/mcp"}
    config = tmp_path / "manifold.yaml"
    config.write_text(yaml.safe_dump({"upstreams": upstreams}, sort_keys=False))
    lines = config.read_text().splitlines()
    done = await zygote.run([sys.executable, "-m", "manifold.cli", "--config", str(config), "check"], cwd=REPO)
    out = done.stdout.decode()
    assert done.returncode == 1, out
    assert f"{len(BAD)} problems in manifold.yaml" in out, out
    for uid, (_, words) in BAD.items():
        line = next(
            i for i, text in enumerate(lines, 1) if text.strip().startswith("url:") and i > lines.index(f"  {uid}:")
        )
        problem = next((x for x in out.splitlines() if x.startswith(f"manifold.yaml: upstreams.{uid}.url: ")), None)
        assert problem is not None and words in problem and problem.endswith(f"(line {line})"), (uid, out)


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    grants = [{"who": "user:dev", "what": ["server:*", "vserver:*"]}]
    async with run_gateway({}, extra={"grants": grants}) as gateway:
        yield gateway


@pytest.mark.parametrize("uid", list(BAD))
async def test_the_admin_api_answers_400_naming_url(gw: Gateway, uid: str) -> None:
    url, words = BAD[uid]
    async with gw.http() as http:
        answer = await http.post(f"{gw.base}/admin/api/upstreams", json={"id": uid, "transport": "http", "url": url})
        assert answer.status_code == 400, answer.text
        problems = answer.json()["problems"]
        assert any(p["field"] == "url" and words in p["reason"] for p in problems), problems
        listed = (await http.get(f"{gw.base}/admin/api/upstreams")).json()
    assert uid not in {e["id"] for e in listed}  # nothing stored


async def test_the_cli_refuses_an_unusable_url_naming_the_field(gw: Gateway) -> None:
    body = {"id": "gh3", "transport": "http", "url": "http://exa mple.com:99999/mcp"}
    done = await manifold_cli(gw, "upstreams", "create", input=yaml.safe_dump(body).encode(), check=False)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "invalid upstream 'gh3'" in err and "url: 'url' must not contain spaces" in err, err
    assert "Traceback" not in err
    async with httpx2.AsyncClient(timeout=30) as http:
        assert "gh3" not in (await http.get(f"{gw.base}/healthz")).json()["upstreams"]
