"""The gateway composed in process (runtime/compose.py) and driven through its ASGI app: the answers every
protected endpoint shares. No upstream is called here; the relay's own behaviour is test_relay_handlers.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest

from manifold.config.loader import load_config
from manifold.runtime.compose import Runtime, build_app, compose

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8470"
DEV_KEY = "mfd_" + "a" * 43


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Runtime, httpx2.AsyncClient]]:
    (tmp_path / "manifold.yaml").write_text(
        f"gateway:\n  state_dir: {tmp_path / 'state'}\n  port: 8470\n"
        "upstreams:\n  up:\n    transport: http\n    url: http://127.0.0.1:9/mcp\n"
    )
    runtime = compose(load_config(tmp_path / "manifold.yaml"), dev_key=DEV_KEY, public_base=BASE)
    await runtime.start()
    try:
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=build_app(runtime)), base_url=BASE) as http:
            yield runtime, http
    finally:
        await runtime.aclose()


@pytest.mark.parametrize("path", ["/mcp/up", "/admin/api/keys"])
async def test_no_credential_gets_the_same_401_everywhere(gateway, path: str) -> None:
    _, http = gateway
    reply = await http.post(path, json={}) if path.startswith("/mcp") else await http.get(path)
    assert reply.status_code == 401
    challenge = reply.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="manifold"')
    assert "error=" not in challenge  # RFC 6750 §3.1: no credential, no error code
    assert f'resource_metadata="{BASE}/.well-known/oauth-protected-resource' in challenge
    assert reply.json()["error"] == "unauthorized"


@pytest.mark.parametrize("path", ["/mcp/up", "/admin/api/keys"])
async def test_a_wrong_credential_is_an_invalid_token_everywhere(gateway, path: str) -> None:
    _, http = gateway
    headers = {"authorization": "Bearer mfk_nope_nope"}
    if path.startswith("/mcp"):
        reply = await http.post(path, json={}, headers=headers)
    else:
        reply = await http.get(path, headers=headers)
    assert reply.status_code == 401
    assert 'error="invalid_token"' in reply.headers["www-authenticate"]
    assert reply.json()["error"] == "invalid_token"


async def test_the_development_key_reaches_the_admin_api_and_a_new_key_works_at_once(gateway) -> None:
    runtime, http = gateway
    admin = {"authorization": f"Bearer {DEV_KEY}"}
    created = await http.post("/admin/api/keys", json={"user": "alice@corp.com", "name": "laptop"}, headers=admin)
    assert created.status_code == 201
    token = created.json()["token"]
    listed = await http.get("/admin/api/keys", headers=admin)
    assert token.split("_")[1] in {k["id"] for k in listed.json()}
    # Alice has no grant: she is who she says she is (not 401), and may not use the server (403).
    refused = await http.post("/mcp/up", json={}, headers={"authorization": f"Bearer {token}"})
    assert refused.status_code == 403
    assert "up" in runtime.served
