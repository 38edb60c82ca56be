"""OpenAPI upstreams end to end: the real gateway process, a real REST service in its own process
(tests/upstreams/rest_service.py, described by rest_service.yaml), real MCP clients.

One gateway and one REST service for the module (no test changes what another reads, except createPet, which
only adds a pet). The document is given as a file relative to the config file (`pets`, `pets-fwd`, ...) and as
a URL whose servers[0] is relative to it (`pets-url`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.harness import Gateway, run_gateway
from tests.idp import IdpClient, run_idp
from tests.upstreams.launch import UPSTREAMS, run_http_upstream

pytestmark = pytest.mark.anyio

REST_SERVICE = str(UPSTREAMS / "rest_service.py")
SPEC = UPSTREAMS / "rest_service.yaml"
STATIC_TOKEN = "pets-static-token-5f1c2a"
SMALL = 1000  # max_response_bytes of pets-small


GATEWAY_AUD = "https://manifold.openapi.test/mcp"
PASS_AUD = "https://pets.openapi.test"  # what a token for the passthrough REST API is issued for


@dataclass
class World:
    gw: Gateway
    rest: str  # the REST service's base URL
    pass_token: str  # alice's IdP token for PASS_AUD


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    folder = tmp_path_factory.mktemp("openapi-gateway")
    (folder / "specs").mkdir()
    shutil.copy(SPEC, folder / "specs" / "pets.yaml")
    async with contextlib.AsyncExitStack() as stack:
        # Started side by side: each takes a second or two.
        url, idp = await asyncio.gather(
            stack.enter_async_context(run_http_upstream(REST_SERVICE)),
            stack.enter_async_context(run_idp([IdpClient("alice", claims={"email": "alice@corp.com"})])),
        )
        rest = url.removesuffix("/mcp")
        spec_file = {"transport": "openapi", "spec": "specs/pets.yaml", "url": rest}
        upstreams: dict[str, Any] = {
            "pets": spec_file,
            "pets-url": {"transport": "openapi", "spec": f"{rest}/openapi.yaml"},
            "pets-fwd": {**spec_file, "auth": {"mode": "forwarded", "allow": ["X-Api-Key"]}},
            "pets-static": {**spec_file, "auth": {"mode": "static", "bearer": "${PETS_TOKEN}"}},
            "pets-small": {**spec_file, "call_timeout": 1, "max_response_bytes": SMALL},
            "pets-pass": {**spec_file, "auth": {"mode": "passthrough", "audience": PASS_AUD}},
        }
        servers = {"shop": {"members": [{"upstream": "pets", "tools": ["getPet", "listPets"]}]}}
        extra = {"identity": {"idps": {"corp": {"issuer": idp.issuer, "audience": [GATEWAY_AUD, PASS_AUD]}}}}
        env = {"PETS_TOKEN": STATIC_TOKEN}
        gw = await stack.enter_async_context(run_gateway(upstreams, servers, env=env, extra=extra, directory=folder))
        yield World(gw, rest, await idp.token("alice", resource=PASS_AUD))


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def call(gw: Gateway, server: str, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
    async with gw.client(server) as client:
        return await client.call_tool(tool, arguments)


async def test_operations_are_tools_selectable_in_a_virtual_server(world: World) -> None:
    async with world.gw.client("pets") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {
        "listPets",
        "createPet",
        "getPet",
        "delete_pets_pet_id",  # no operationId: method and path
        "whoami",
        "echo",
        "text",
        "big",
        "hang",
        "private",
    }  # `upload` takes multipart only: left out
    get_pet = tools["getPet"]
    assert get_pet.description == "Get one pet"
    assert get_pet.input_schema["required"] == ["pet_id"]
    assert get_pet.input_schema["properties"]["pet_id"] == {"type": "integer", "description": "The pet's id."}
    assert get_pet.annotations is not None and get_pet.annotations.read_only_hint is True
    delete = tools["delete_pets_pet_id"].annotations
    assert delete is not None and delete.destructive_hint is True and delete.read_only_hint is False
    # The request body's schema, its $refs (one recursive) carried along as $defs.
    create = tools["createPet"].input_schema
    assert create["properties"]["body"] == {"$ref": "#/$defs/NewPet"}
    assert create["$defs"]["Category"]["properties"]["parent"] == {"$ref": "#/$defs/Category"}

    async with world.gw.client("shop") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"pets__getPet", "pets__listPets"}
        result = await client.call_tool("pets__getPet", {"pet_id": 1})
    assert result.structured_content == {"id": 1, "name": "Rex", "tag": "dog"}


async def test_a_2026_07_28_client_calls_the_same_tools(world: World) -> None:
    async with world.gw.client("pets", mode="2026-07-28") as client:
        assert "getPet" in {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("getPet", {"pet_id": 3})
    assert result.structured_content == {"id": 3, "name": "Nemo", "tag": "fish"}


async def test_get_with_path_and_query_parameters(world: World) -> None:
    result = await call(world.gw, "pets", "getPet", {"pet_id": 2, "verbose": True})
    assert not result.is_error, text_of(result)
    assert result.structured_content == {"id": 2, "name": "Tom", "tag": "cat", "query": {"verbose": "true"}}
    assert json.loads(text_of(result)) == result.structured_content
    # An array query parameter is sent repeated; a $ref'd parameter (limit) works like any other.
    result = await call(world.gw, "pets", "listPets", {"tag": ["dog", "fish"], "limit": 5})
    assert result.structured_content is not None
    assert [p["name"] for p in result.structured_content["pets"]] == ["Rex", "Nemo"]


async def test_post_with_a_json_body(world: World) -> None:
    result = await call(world.gw, "pets", "createPet", {"body": {"name": "Bo", "tag": "bird"}})
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    assert result.structured_content["name"] == "Bo" and result.structured_content["tag"] == "bird"
    listed = await call(world.gw, "pets", "listPets", {"tag": ["bird"]})
    assert listed.structured_content is not None and listed.structured_content["count"] == 1
    # DELETE, answered 204 with no body.
    deleted = await call(world.gw, "pets", "delete_pets_pet_id", {"pet_id": result.structured_content["id"]})
    assert not deleted.is_error and text_of(deleted) == "HTTP 204 No Content"
    listed = await call(world.gw, "pets", "listPets", {"tag": ["bird"]})
    assert listed.structured_content is not None and listed.structured_content["count"] == 0


async def test_an_http_error_status_is_a_tool_error_naming_the_upstream(world: World) -> None:
    result = await call(world.gw, "pets", "getPet", {"pet_id": 999})
    assert result.is_error
    assert text_of(result) == 'upstream \'pets\' answered HTTP 404 Not Found: {"error":"no such pet"}'
    # A missing required argument is the caller's mistake, said before any request is made.
    result = await call(world.gw, "pets", "getPet", {})
    assert result.is_error and text_of(result) == "missing required argument 'pet_id'"


async def test_a_path_value_stays_in_its_segment(world: World) -> None:
    result = await call(world.gw, "pets", "echo", {"value": "../whoami?x=1#f"})
    assert result.structured_content == {"raw_path": "/echo/..%2Fwhoami%3Fx%3D1%23f", "value": "../whoami?x=1#f"}
    result = await call(world.gw, "pets", "echo", {"value": ".."})
    assert result.structured_content == {"raw_path": "/echo/%2E%2E", "value": ".."}


async def test_a_document_by_url_with_a_relative_server(world: World) -> None:
    async with world.gw.client("pets-url") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"getPet", "text"} <= names
        result = await client.call_tool("text", {})
    assert not result.is_error and text_of(result) == "plain words"
    assert result.structured_content is None  # text/plain: text only


async def test_forwarded_headers_reach_the_rest_service_and_the_callers_authorization_does_not(world: World) -> None:
    gw = world.gw
    headers = {"Authorization": f"Bearer {gw.key}", "x-mcp-headers": json.dumps({"X-Api-Key": "tenant-key-77"})}
    http = httpx2.AsyncClient(headers=headers, timeout=60)
    async with Client(streamable_http_client(gw.url("pets-fwd"), http_client=http), mode="legacy") as client:
        result = await client.call_tool("whoami", {"X-Request-Tag": "from-args"})
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    received = result.structured_content["headers"]
    assert received["x-api-key"] == "tenant-key-77"
    assert received["x-request-tag"] == "from-args"  # a header parameter, from the tool's arguments
    assert "authorization" not in received and "x-mcp-headers" not in received
    assert received["user-agent"].startswith("manifold/")
    assert gw.key not in json.dumps(received)


async def test_with_passthrough_the_callers_own_token_reaches_the_rest_service(world: World) -> None:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {world.pass_token}"}, timeout=60)
    async with Client(streamable_http_client(world.gw.url("pets-pass"), http_client=http), mode="legacy") as client:
        result = await client.call_tool("whoami", {})
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    assert result.structured_content["headers"]["authorization"] == f"Bearer {world.pass_token}"


async def test_a_static_credential_reaches_the_rest_service(world: World) -> None:
    result = await call(world.gw, "pets-static", "whoami", {})
    assert result.structured_content is not None
    received = result.structured_content["headers"]
    assert received["authorization"] == f"Bearer {STATIC_TOKEN}"
    # Without a credential mode nothing of the caller goes along.
    plain = await call(world.gw, "pets", "whoami", {})
    assert plain.structured_content is not None and "authorization" not in plain.structured_content["headers"]


async def test_time_and_size_are_bounded(world: World) -> None:
    result = await call(world.gw, "pets-small", "hang", {})
    assert result.is_error
    assert (
        text_of(result)
        == "Tool 'hang' is unavailable: member 'pets-small': upstream 'pets-small' did not answer within 1s"
    )
    result = await call(world.gw, "pets-small", "big", {"size": SMALL + 1})
    assert result.is_error and text_of(result) == "upstream 'pets-small' answered more than 1000 bytes (GET /big)"
    result = await call(world.gw, "pets-small", "big", {"size": SMALL})
    assert not result.is_error and text_of(result) == "x" * SMALL


async def test_nothing_went_wrong_inside_the_gateway(world: World) -> None:
    log = world.gw.log()
    assert "Traceback" not in log and STATIC_TOKEN not in log
