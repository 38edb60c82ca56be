"""Integers beyond 64 bits pass through the gateway unchanged, both ways: a tool's arguments reach the upstream
as the client sent them, its `structuredContent` (and text) reaches the client as the upstream sent it. orjson
alone reads such an integer as a float and cannot write one back (jsoncodec.py).

Upstream: tests/upstreams/big_numbers.py over streamable HTTP, stdio and SSE. Clients: mcp 2.3.0 in both eras,
and over the gateway's own SSE endpoint. The control: the same call straight to the upstream.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client

from tests.e2e.harness import Gateway, manifold_cli, run_gateway, stdio_upstream
from tests.upstreams.launch import UPSTREAMS, run_http_upstream

pytestmark = pytest.mark.anyio

BIG_NUMBERS = str(UPSTREAMS / "big_numbers.py")
BIG = 2**70 + 1
ARGUMENT = {"n": -(2**100) - 7, "list": [2**64, 18446744073709551615], "f": 2.5, "s": "123456789012345678901234"}
EXPECTED = {
    "received": ARGUMENT,
    "received_type": "dict",
    "big": BIG,
    "negative": -BIG,
    "u64_plus_one": 2**64,
    "i64_min_minus_one": -(2**63) - 1,
    "nested": [{"factorial_25": 15511210043330985984000000}],
    "float": 1.5,
    "digits": "12345678901234567890123",
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def upstream_urls() -> AsyncIterator[dict[str, str]]:
    async with (
        run_http_upstream(BIG_NUMBERS) as http,
        run_http_upstream(BIG_NUMBERS, "--transport", "sse") as sse,
    ):
        yield {"http": http, "sse": sse}


@pytest.fixture(scope="module")
async def gw(upstream_urls: dict[str, str]) -> AsyncIterator[Gateway]:
    upstreams = {
        "over-http": {"transport": "http", "url": upstream_urls["http"]},
        "over-stdio": stdio_upstream(BIG_NUMBERS, "--transport", "stdio"),
        "over-sse": {"transport": "sse", "url": upstream_urls["sse"]},
    }
    async with run_gateway(upstreams, extra={"audit": {"include_arguments": True}}) as gateway:
        yield gateway


def _exact(value: Any, expected: Any) -> None:
    """`value` equals `expected` with the same types all the way down (an int is no float, 2**70 no 2.0**70)."""
    assert type(value) is type(expected), (value, expected)
    if isinstance(expected, dict):
        assert value.keys() == expected.keys()
        for key in expected:
            _exact(value[key], expected[key])
    elif isinstance(expected, list):
        assert len(value) == len(expected)
        for item, want in zip(value, expected, strict=True):
            _exact(item, want)
    else:
        assert value == expected


def _check(result: types.CallToolResult, sent: Any = ARGUMENT) -> None:
    expected = {**EXPECTED, "received": sent, "received_type": type(sent).__name__}
    assert not result.is_error, result
    _exact(result.structured_content, expected)
    text = "".join(c.text for c in result.content if isinstance(c, types.TextContent))
    _exact(json.loads(text), expected)


async def test_the_sdk_keeps_big_integers_on_a_direct_connection(upstream_urls: dict[str, str]) -> None:
    """The control: without the gateway, client and upstream keep them."""
    async with Client(upstream_urls["http"]) as client:
        _check(await client.call_tool("big", {"value": ARGUMENT}))


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
@pytest.mark.parametrize("upstream", ["over-http", "over-stdio", "over-sse"])
async def test_big_integers_pass_through_unchanged(gw: Gateway, upstream: str, mode: str) -> None:
    async with gw.client(upstream, mode=mode) as client:
        _check(await client.call_tool("big", {"value": ARGUMENT}))  # both ways
        _check(await client.call_tool("big", {"value": BIG}), BIG)  # a bare one
        _check(await client.call_tool("big", {}), None)  # only the upstream's


async def test_big_integers_on_the_gateways_sse_endpoint(gw: Gateway) -> None:
    async with gw.client("over-stdio", transport="sse") as client:
        _check(await client.call_tool("big", {"value": ARGUMENT}))


async def test_the_audit_keeps_big_integer_arguments_as_their_digits(gw: Gateway) -> None:
    """orjson writes the audit rows: a kept argument beyond 64 bits is stored as its digits (audit/redaction.py),
    where it would otherwise fail the row."""
    async with gw.client("over-http") as client:
        _check(await client.call_tool("big", {"value": {"audited": BIG}}), {"audited": BIG})
    deadline = time.monotonic() + 20
    while True:
        done = await manifold_cli(gw, "audit", "--json", "--limit", "1000")
        events = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
        kept = [e["arguments"] for e in events if e["target"] == "big" and "audited" in str(e["arguments"])]
        if kept:
            break
        assert time.monotonic() < deadline, f"no audit row kept the call's arguments: {events}"
        await anyio.sleep(0.2)
    assert kept[0] == {"value": {"audited": str(BIG)}}
    assert "cannot append to the journal" not in gw.log()
