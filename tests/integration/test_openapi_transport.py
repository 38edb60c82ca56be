"""The openapi transport under the pool, in this process, against the real REST service (its own process):
the credential headers the outbound layer decides reach the REST API as they do an MCP upstream, and a
per-user OAuth token the REST API refuses is reported as a refused credential (so the relay renews it)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from manifold.config.models import UpstreamConfig
from manifold.upstream import openapi
from manifold.upstream.base import ErrorKind, UpstreamError
from manifold.upstream.credential import Outbound
from manifold.upstream.openapi_spec import load_spec_file
from manifold.upstream.pool import UpstreamPool
from tests.upstreams.launch import UPSTREAMS, run_http_upstream

pytestmark = pytest.mark.anyio

REST_SERVICE = str(UPSTREAMS / "rest_service.py")
SPEC = str(UPSTREAMS / "rest_service.yaml")
OAUTH = {
    "mode": "oauth",
    "client_id": "c",
    "authorization_endpoint": "https://as.example/authorize",
    "token_endpoint": "https://as.example/token",
}


@pytest.fixture(scope="module")
async def rest() -> AsyncIterator[str]:
    async with run_http_upstream(REST_SERVICE) as url:
        yield url.removesuffix("/mcp")


def pool_for(rest: str, **extra: object) -> UpstreamPool:
    config = UpstreamConfig.model_validate({"transport": "openapi", "spec": SPEC, "url": rest, **extra})
    return UpstreamPool({"pets": config})


async def test_a_callers_credential_goes_to_the_rest_api_on_its_own_session(rest: str) -> None:
    pool = pool_for(rest, auth={"mode": "passthrough", "audience": "https://pets.example"})
    try:
        alice = Outbound({"Authorization": "Bearer alice-token"}, identity="alice")
        bob = Outbound({"Authorization": "Bearer bob-token"}, identity="bob")
        for who, outbound in (("alice", alice), ("bob", bob), ("alice", alice)):
            reply = await pool.request("pets", "tools/call", {"name": "whoami", "arguments": {}}, outbound=outbound)
            headers = reply["result"]["structuredContent"]["headers"]
            assert headers["authorization"] == f"Bearer {who}-token"
        assert (await pool.session("pets", alice)) is not (await pool.session("pets", bob))
    finally:
        await pool.aclose()


async def test_a_refused_oauth_token_is_a_refused_credential(rest: str) -> None:
    pool = pool_for(rest, auth=OAUTH)
    try:
        stale = Outbound({"Authorization": "Bearer old-token"}, identity="alice")
        with pytest.raises(UpstreamError) as caught:
            await pool.request("pets", "tools/call", {"name": "private", "arguments": {}}, outbound=stale)
        assert caught.value.kind is ErrorKind.AUTH
        assert str(caught.value) == "upstream 'pets' refused the credential (HTTP 401)"
        fresh = Outbound({"Authorization": "Bearer good-token"}, identity="alice")
        reply = await pool.request("pets", "tools/call", {"name": "private", "arguments": {}}, outbound=fresh)
        assert reply["result"]["structuredContent"] == {"secret": "granted"}
    finally:
        await pool.aclose()


async def test_without_oauth_a_401_is_the_tools_error(rest: str) -> None:
    pool = pool_for(rest)
    try:
        outbound = Outbound({"Authorization": "Bearer wrong-token-1234"})  # as `static` resolves
        reply = await pool.request("pets", "tools/call", {"name": "private", "arguments": {}}, outbound=outbound)
        result = reply["result"]
        assert result["isError"] is True
        # The REST API echoed the credential; the caller sees it taken out.
        assert result["content"][0]["text"] == (
            'upstream \'pets\' answered HTTP 401 Unauthorized: {"error":"unauthorized","got":"[redacted]"}'
        )
    finally:
        await pool.aclose()


async def test_an_unreachable_rest_api_is_an_upstream_error(rest: str) -> None:
    pool = pool_for("http://127.0.0.1:9")  # discard port: nothing listens
    try:
        with pytest.raises(UpstreamError) as caught:
            await pool.request("pets", "tools/call", {"name": "text", "arguments": {}})
        assert str(caught.value) == "upstream 'pets' refused the connection"
    finally:
        await pool.aclose()


async def test_the_credential_goes_along_for_the_document_only_to_the_apis_own_origin(rest: str) -> None:
    other_origin = rest.replace("127.0.0.1", "localhost")  # the same service under another origin
    for url, expected in ((rest, "Bearer doc-token"), (other_origin, None)):
        config = UpstreamConfig.model_validate({"transport": "openapi", "spec": f"{rest}/openapi.yaml", "url": url})
        pool = UpstreamPool({"pets": config})
        try:
            await pool.session("pets", Outbound({"Authorization": "Bearer doc-token"}))  # as `static` resolves
        finally:
            await pool.aclose()
        async with httpx2.AsyncClient() as http:
            seen = (await http.get(f"{rest}/spec-requests")).json()
        assert seen[-1].get("authorization") == expected


async def test_per_caller_sessions_share_one_reading_of_the_document(
    rest: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "pets.yaml"
    shutil.copy(SPEC, spec)
    reads: list[Path] = []

    def counted(path: Path, display: str) -> Any:
        reads.append(path)
        return load_spec_file(path, display)

    monkeypatch.setattr(openapi, "load_spec_file", counted)
    config = UpstreamConfig.model_validate({"transport": "openapi", "spec": str(spec), "url": rest})
    pool = UpstreamPool({"pets": config})
    try:
        for who in ("alice", "bob", "carol"):
            outbound = Outbound({"X-Api-Key": f"{who}-key"}, identity=who)
            reply = await pool.request("pets", "tools/list", outbound=outbound)
            assert "getPet" in {t["name"] for t in reply["result"]["tools"]}
            reply["result"]["tools"][0]["name"] = "changed by a caller"  # never seen by the next one
        assert reads == [spec]
        again = await pool.request(
            "pets", "tools/list", outbound=Outbound({"X-Api-Key": "alice-key"}, identity="alice")
        )
        assert "changed by a caller" not in {t["name"] for t in again["result"]["tools"]}
        # A changed document is read again by the next session.
        spec.write_text(spec.read_text().replace("operationId: getPet", "operationId: fetchPet"))
        reply = await pool.request("pets", "tools/list", outbound=Outbound({"X-Api-Key": "dave"}, identity="dave"))
        assert "fetchPet" in {t["name"] for t in reply["result"]["tools"]} and len(reads) == 2
    finally:
        await pool.aclose()
