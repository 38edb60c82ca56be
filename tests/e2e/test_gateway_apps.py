"""The applications people allowed through the gateway's own authorization server, in the admin API
(`/admin/api/apps`): the same operation `manifold apps list|revoke` runs (admin/ops.py). Real processes: the
gateway (`manifold serve`) over a stdio upstream; the person's browser step is the HTTP client of
test_gateway_oauth.py, which fills in the sign-in and consent pages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx2
import pytest

from tests.e2e.harness import Gateway, manifold_cli, run_gateway, stdio_upstream
from tests.e2e.test_gateway_oauth import OTHER, UPSTREAM, VSERVER, Browser, Flow, oauth_error

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    upstreams = {OTHER: stdio_upstream(UPSTREAM, "--transport", "stdio")}
    servers = {VSERVER: {"members": [{"upstream": OTHER}]}}
    extra = {
        "users": {"paul@corp.com": {}},
        "identity": {"authorization_server": {"registrations_per_minute": 1000}},
    }
    async with run_gateway(upstreams, servers, extra=extra) as gateway:
        yield gateway
        assert "Traceback" not in gateway.log(), gateway.log()[-4000:]


@pytest.fixture
async def flow(gw: Gateway) -> AsyncIterator[Flow]:
    browser = Browser(gw)
    async with httpx2.AsyncClient(timeout=30) as http:
        flow = Flow(gw, browser, http)
        await flow.register()
        try:
            yield flow
        finally:
            await browser.aclose()


async def test_the_admin_api_lists_and_revokes_an_application_and_its_tokens_end_at_once(flow: Flow) -> None:
    tokens = await flow.tokens()
    assert (await flow.list_tools(tokens["access_token"])).status_code == 200
    async with flow.gw.http() as admin:
        listed = await admin.get(f"{flow.gw.base}/admin/api/apps", params={"user": "dev"})
        assert listed.status_code == 200, listed.text
        rows = [row for row in listed.json() if row["client"] == flow.client_id]
        assert rows == [
            {
                "user": "user:dev",
                "client": flow.client_id,
                "name": "Hand IDE",
                "servers": [flow.gw.url(VSERVER)],
                "updated_at": rows[0]["updated_at"],
            }
        ]
        # The CLI prints the same rows: one operation, two faces.
        cli = json.loads((await manifold_cli(flow.gw, "apps", "list", "--user", "dev", "--json")).stdout)
        assert [row for row in cli if row["client"] == flow.client_id] == rows

        revoked = await admin.delete(f"{flow.gw.base}/admin/api/apps", params={"user": "dev", "client": flow.client_id})
        assert revoked.status_code == 200, revoked.text
        assert revoked.json() == {"user": "user:dev", "client": flow.client_id, "revoked": True}
        refused = await flow.list_tools(tokens["access_token"])  # right after: no wait, no retry
        assert refused.status_code == 401 and "revoked" in refused.json()["error_description"]
        again = await flow.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        assert again.status_code == 400 and oauth_error(again) == "invalid_grant"

        listed = await admin.get(f"{flow.gw.base}/admin/api/apps", params={"user": "dev"})
        assert all(row["client"] != flow.client_id for row in listed.json())
        twice = await admin.delete(f"{flow.gw.base}/admin/api/apps", params={"user": "dev", "client": flow.client_id})
        assert twice.status_code == 404 and flow.client_id in twice.json()["error"]
        missing = await admin.delete(f"{flow.gw.base}/admin/api/apps", params={"user": "dev"})
        assert missing.status_code == 400, missing.text


async def test_only_an_admin_lists_applications(gw: Gateway) -> None:
    async with gw.http() as admin:
        made = await admin.post(f"{gw.base}/admin/api/keys", json={"user": "paul@corp.com", "name": "laptop"})
        paul = made.json()["token"]
        assert (await admin.get(f"{gw.base}/admin/api/apps")).status_code == 200
    async with httpx2.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {paul}"}) as http:
        assert (await http.get(f"{gw.base}/admin/api/apps")).status_code == 403
        refused = await http.delete(f"{gw.base}/admin/api/apps", params={"user": "dev", "client": "x"})
        assert refused.status_code == 403
