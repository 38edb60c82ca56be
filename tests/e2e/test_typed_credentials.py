"""A bearer token typed into an upstream made at run time (admin API here; the console form and the CLI go
through the same operation) reaches the upstream, and is kept encrypted: the gateway's database files never
hold it, and the API shows it as (hidden). Real gateway, real HTTP upstream (kitchen, whose `headers` tool
says what it received)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import postgres
from tests.e2e.harness import run_gateway
from tests.upstreams.launch import run_http_upstream

pytestmark = pytest.mark.anyio
KITCHEN = str(Path(__file__).resolve().parents[1] / "upstreams" / "kitchen.py")
TOKEN = "typed-bearer-4f9c2a7e51"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_typed_bearer_reaches_the_upstream_and_is_stored_encrypted() -> None:
    async with run_http_upstream(KITCHEN, "--name", "crm") as crm_url, run_gateway({}) as gw:
        body = {"id": "crm", "transport": "http", "url": crm_url, "auth": {"mode": "static", "bearer": TOKEN}}
        async with gw.http() as http:
            made = await http.post(f"{gw.base}/admin/api/upstreams", json=body)
            assert made.status_code == 201, made.text
            shown = await http.get(f"{gw.base}/admin/api/upstreams/crm")
        assert shown.json()["body"]["auth"]["bearer"] == "(hidden)"
        async with gw.client("crm") as client:
            result = await client.call_tool("headers", {})
        seen = json.loads(next(c.text for c in result.content if c.type == "text"))
        assert seen.get("authorization") == f"Bearer {TOKEN}"
        if gw.database_url.startswith("postgresql"):  # make test's second pass (tests/postgres.py)
            stored = postgres.cluster().dump(gw.database_url).encode()
        else:
            stored = b"".join(p.read_bytes() for p in gw.config_dir.rglob("*.db*") if p.is_file())
        assert stored and TOKEN.encode() not in stored
        assert TOKEN not in gw.log()
