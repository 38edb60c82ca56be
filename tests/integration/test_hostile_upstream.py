"""An upstream attacking the gateway: each misbehaviour fails only its own call, at once, with a message naming
the upstream, in bounded memory and work (tests/upstreams/hostile_http.py, a real process on a socket)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "upstreams"))
from upstream_min_launch import RecordingSink, ServerProcess  # noqa: E402

from manifold.config.models import UpstreamConfig  # noqa: E402
from manifold.upstream.base import ErrorKind, UpstreamError, UpstreamTimeout  # noqa: E402
from manifold.upstream.credential import Outbound  # noqa: E402
from manifold.upstream.http import MAX_RESPONSE_BYTES  # noqa: E402
from manifold.upstream.pool import UpstreamPool  # noqa: E402
from manifold.upstream.session import MAX_SERVER_REQUESTS  # noqa: E402
from tests.upstreams.launch import run_http_upstream  # noqa: E402
from tests.waiting import wait_for, within  # noqa: E402

HOSTILE_HTTP = Path(__file__).parents[1] / "upstreams" / "hostile_http.py"
# Long enough that "failed at once" and "waited for the timeout" cannot be confused on a loaded machine.
CALL_TIMEOUT = 8.0

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def hostile():
    server = ServerProcess("http", script=HOSTILE_HTTP).start()
    yield server
    server.kill()


def make_pool(url: str) -> UpstreamPool:
    config = UpstreamConfig(transport="http", url=url, protocol="2025-11-25", call_timeout=CALL_TIMEOUT)
    return UpstreamPool({"bad": config})


def tool_result(reply: dict) -> str:
    """The text of a tools/call reply (hostile_http.py answers in plain text content)."""
    assert "result" in reply, reply
    return "".join(part["text"] for part in reply["result"]["content"])


async def call(pool: UpstreamPool, name: str, sink: RecordingSink | None = None) -> dict:
    return await pool.request("bad", "tools/call", {"name": name, "arguments": {}}, sink=sink)


@pytest.mark.parametrize("tool", ["endless_json", "endless_chunked"])
async def test_an_endless_body_fails_its_call_at_the_size_bound_not_after_buffering_until_the_timeout(
    hostile, tool
) -> None:
    """Was: the whole body buffered until call_timeout (about 250 MB a second: 15 GB at the default 60 s)."""
    pool = make_pool(hostile.url)
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            await call(pool, tool)
        assert not isinstance(caught.value, UpstreamTimeout)
        assert time.monotonic() - started < CALL_TIMEOUT / 2
        assert str(caught.value) == f"upstream 'bad' sent a response larger than {MAX_RESPONSE_BYTES // 2**20} MB"
        assert caught.value.kind is ErrorKind.PROTOCOL
        assert tool_result(await call(pool, "echo")) == "fine"  # only that call failed
    finally:
        await pool.aclose()


async def test_a_reply_with_another_callers_request_id_fails_its_own_call_and_answers_nobody_else(hostile) -> None:
    """Was: the reply was taken as the answer to the other (held) request, and its own call waited for
    call_timeout."""
    pool = make_pool(hostile.url)
    held_sink = RecordingSink()
    held = asyncio.ensure_future(call(pool, "hold", held_sink))
    try:
        await wait_for(lambda: bool(held_sink.notifications), what="the upstream holding the first call")
        started = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            await call(pool, "other_id")  # its reply carries the held call's id
        assert not isinstance(caught.value, UpstreamTimeout)
        assert time.monotonic() - started < CALL_TIMEOUT / 2
        assert str(caught.value).startswith("upstream 'bad' answered with a JSON-RPC id the gateway never sent")
        assert caught.value.kind is ErrorKind.PROTOCOL
        session = await pool.session("bad")
        assert not held.done() and session.in_flight() == 1  # the held call was not answered with that reply
        assert tool_result(await call(pool, "echo")) == "fine"
    finally:
        held.cancel()
        await asyncio.gather(held, return_exceptions=True)
        await pool.aclose()


async def test_a_flood_of_pings_during_a_call_is_answered_only_up_to_a_bound_and_the_call_completes(
    hostile, caplog
) -> None:
    """Was: each of the 50,000 pings became a task and a POST (about 350 MB and seconds of CPU for one call)."""
    pool = make_pool(hostile.url)
    try:
        before = int(tool_result(await call(pool, "replies")))
        with caplog.at_level(logging.WARNING, logger="manifold.upstream.session"):
            assert tool_result(await within(call(pool, "ping_flood"), what="the call after the flood")) == (
                "after the flood"
            )
        session = await pool.session("bad")
        await wait_for(lambda: session._answering == 0, what="the answered pings' replies sent")
        answered = int(tool_result(await call(pool, "replies"))) - before
        assert 0 < answered <= MAX_SERVER_REQUESTS * 2  # not 50,000
        warnings = [r.getMessage() for r in caplog.records if "requests to the gateway at once" in r.getMessage()]
        assert warnings == [f"upstream bad: more than {MAX_SERVER_REQUESTS} requests to the gateway at once; "
                            "the excess is dropped"]  # fmt: skip
    finally:
        await pool.aclose()


@pytest.mark.parametrize(
    ("tool", "problem"),
    [
        ("text_result", "answered with a result that is not a JSON object"),
        ("null_result", "answered with a result that is not a JSON object"),
        ("text_error", "answered with a malformed JSON-RPC error"),
        ("no_result", "answered with no result"),
    ],
)
async def test_a_reply_that_is_no_mcp_answer_fails_its_call_naming_the_upstream(hostile, tool, problem) -> None:
    """Was: relayed as it was; the client could not parse the answer at all, and nothing named the upstream."""
    pool = make_pool(hostile.url)
    try:
        with pytest.raises(UpstreamError) as caught:
            await call(pool, tool)
        assert str(caught.value) == f"upstream 'bad' {problem} (a protocol error of the upstream)"
        assert caught.value.kind is ErrorKind.PROTOCOL
        assert tool_result(await call(pool, "echo")) == "fine"
    finally:
        await pool.aclose()


@pytest.fixture(scope="module")
def hostile_sse():
    server = ServerProcess("sse", script=HOSTILE_HTTP).start()
    yield server
    server.kill()


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_an_endless_acknowledgement_of_the_gateways_reply_is_abandoned_at_the_size_bound(
    hostile, hostile_sse, transport
) -> None:
    """The upstream pings, and answers the POST carrying the gateway's reply with an endless body. Nobody awaits
    that POST, so nothing bounded it: was read into memory for as long as the upstream kept sending."""
    server = hostile if transport == "http" else hostile_sse
    config = UpstreamConfig(transport=transport, url=server.url, protocol="2025-11-25", call_timeout=CALL_TIMEOUT)
    pool = UpstreamPool({"bad": config})
    try:
        before = int(tool_result(await call(pool, "abandoned")))
        assert tool_result(await call(pool, "endless_ack")) == "pinged"
        session = await pool.session("bad")
        await wait_for(lambda: session._answering == 0, what="the endless acknowledgement given up")

        async def abandoned() -> None:  # the gateway closed that connection (the upstream notices on its next write)
            while int(tool_result(await call(pool, "abandoned"))) == before:
                await asyncio.sleep(0.01)

        await within(abandoned(), what="the upstream seeing its endless body abandoned")
        assert tool_result(await call(pool, "echo")) == "fine"
    finally:
        await pool.aclose()


async def test_messages_whose_method_is_not_a_string_are_dropped_and_the_call_completes(hostile) -> None:
    """Was: TypeError (unhashable list) out of the session, into the relay."""
    pool = make_pool(hostile.url)
    try:
        assert tool_result(await call(pool, "odd_method")) == "odd"
    finally:
        await pool.aclose()


HOSTILE_STDIO = Path(__file__).parents[1] / "upstreams" / "hostile_stdio.py"


def stdio_pool(call_timeout: float = CALL_TIMEOUT) -> UpstreamPool:
    """hostile_stdio.py as upstream 'bad'."""
    config = UpstreamConfig(
        transport="stdio", command=sys.executable, args=[str(HOSTILE_STDIO)], protocol="2025-11-25",
        call_timeout=call_timeout,
    )  # fmt: skip
    return UpstreamPool({"bad": config})


async def test_a_stdio_upstream_writing_an_endless_line_is_stopped_and_the_error_says_why(caplog) -> None:
    """Was: 'process exited', as if it had crashed by itself, when the gateway had stopped it."""
    pool = stdio_pool()
    try:
        assert tool_result(await call(pool, "garbage")) == "after the garbage"  # junk lines are skipped
        assert tool_result(await call(pool, "deep")) == "after the deep line"  # so is a line too deep to parse
        with caplog.at_level(logging.WARNING, logger="manifold.upstream.stdio"):
            with pytest.raises(UpstreamError) as caught:
                await call(pool, "huge_line")
        assert str(caught.value) == (
            "upstream 'bad' sent a message larger than 32 MB on stdout; the gateway stopped its process"
        )
        assert [r.getMessage() for r in caplog.records] == [f"upstream bad: {caught.value.reason}"]
        assert tool_result(await call(pool, "echo")) == "fine"  # started again on the next call
    finally:
        await pool.aclose()


async def test_a_stdio_reply_too_deep_to_read_or_a_parse_error_fails_its_call_at_once() -> None:
    """Was: a reply nested past the JSON parser's depth limit was skipped like junk, and its call waited out
    call_timeout; an upstream's parse error (JSON-RPC's id null) was 'an id the gateway never sent'."""
    pool = stdio_pool()
    try:
        for tool, said in (
            ("deep_reply", "upstream 'bad' sent a message nested too deep to read, most likely the answer"),
            ("null_error", "upstream 'bad' answered with an error for no request (id null: it could not read one)"),
        ):
            started = time.monotonic()
            with pytest.raises(UpstreamError) as caught:
                await call(pool, tool)
            assert time.monotonic() - started < CALL_TIMEOUT / 2, tool
            assert str(caught.value).startswith(said), caught.value
        assert tool_result(await call(pool, "deep")) == "after the deep line"  # a deep line that is no object
        assert tool_result(await call(pool, "echo")) == "fine"
    finally:
        await pool.aclose()


async def test_a_stdio_upstream_that_stops_reading_its_stdin_is_refused_at_once_once_its_backlog_is_full() -> None:
    """Was: every call's message was added to the pipe's buffer and waited there until call_timeout, the buffer
    only growing; and the write lock was held while a message waited, so once a cancellation notice was stuck
    behind the unread bytes, every later call waited out its timeout. Past 32 MB waiting, a call is refused at
    once, saying why."""
    pool = stdio_pool(call_timeout=0.5)
    big = {"name": "echo", "arguments": {"text": "x" * (12 * 1024 * 1024)}}
    try:
        assert tool_result(await call(pool, "deaf")) == "deaf now"
        for _ in range(2):  # 12 MB each, waiting in the pipe's buffer: each call times out
            with pytest.raises(UpstreamError) as caught:
                await pool.request("bad", "tools/call", big)
            assert caught.value.kind is ErrorKind.TIMEOUT, caught.value
        started = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            await pool.request("bad", "tools/call", big)
        assert time.monotonic() - started < 0.4
        assert str(caught.value).startswith("upstream 'bad' is not reading its stdin ("), caught.value
    finally:
        await pool.aclose()


@pytest.mark.parametrize("client", ["lean", "aiohttp"])
@pytest.mark.parametrize("tool", ["endless_head", "endless_header", "bad_head"])
async def test_an_endless_response_head_fails_its_call_at_once(hostile, tool, client, monkeypatch) -> None:
    """Was (the lean client, every http:// upstream): header after header buffered until call_timeout, about
    500 MB a second. With aiohttp (https upstreams, legacy SSE) it failed at once but said "could not be
    reached (ClientResponseError)"."""
    if client == "aiohttp":
        monkeypatch.setenv("MANIFOLD_LEAN_HTTP", "0")  # the switch an operator has: aiohttp for http:// too
    pool = make_pool(hostile.url)
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            await call(pool, tool)
        assert time.monotonic() - started < CALL_TIMEOUT / 2
        unreadable = "upstream 'bad' sent a response head the gateway could not read (malformed, or too long)"
        too_long = "upstream 'bad' sent a response head larger than 1 MB"
        assert str(caught.value) == (too_long if client == "lean" and tool != "bad_head" else unreadable)
        assert tool_result(await call(pool, "echo")) == "fine"
    finally:
        await pool.aclose()


@pytest.fixture(scope="module")
async def garbled() -> AsyncIterator[str]:
    async with run_http_upstream(str(HOSTILE_HTTP), "--garbled-hello") as url:
        yield url


@pytest.mark.parametrize("protocol", ["2025-11-25", "2026-07-28", "auto"])
async def test_a_handshake_with_fields_of_the_wrong_types_counts_them_as_absent(garbled, protocol, caplog) -> None:
    """Was, 2026-07-28: AttributeError on `_meta: "x"`, logged with its traceback, the upstream unusable; 2025-11-25:
    serverInfo "x" and capabilities [1] kept for everyone after the handshake to call `.get` on."""
    config = UpstreamConfig(transport="http", url=garbled, protocol=protocol, call_timeout=CALL_TIMEOUT)
    pool = UpstreamPool({"bad": config})
    try:
        with caplog.at_level(logging.DEBUG):
            session = await within(pool.session("bad"), what="the handshake")
        assert (session.server_info, session.capabilities, session.instructions) == ({}, {}, None)
        assert session.protocol_version in ("2025-11-25", "2026-07-28")
        assert tool_result(await call(pool, "echo")) == "fine"
        assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    finally:
        await pool.aclose()


async def test_an_error_echoing_the_request_headers_reaches_the_caller_without_the_gateways_credentials(
    hostile,
) -> None:
    """Was (found by a security probe): an upstream's JSON-RPC error was relayed as it came, so a server that
    echoes the request's headers (debug mode) showed every caller the static credential the gateway sends it,
    shared by all of them. The credentials the gateway sent (the upstream's headers, the resolved auth) are
    blanked; the rest of the error is kept."""
    static = "Bearer static-secret-0123456789"
    config = UpstreamConfig(
        transport="http", url=hostile.url, protocol="2025-11-25", call_timeout=CALL_TIMEOUT,
        headers={"X-Api-Key": "configured-key-abcdefgh"},
    )  # fmt: skip
    pool = UpstreamPool({"bad": config})
    try:
        params = {"name": "headers_error", "arguments": {}}
        reply = await pool.request("bad", "tools/call", params, outbound=Outbound({"Authorization": static}))
        text = json.dumps(reply["error"])
        assert "static-secret-0123456789" not in text and "configured-key-abcdefgh" not in text
        assert reply["error"]["code"] == -32000 and "not allowed with" in reply["error"]["message"]
        assert "[redacted]" in reply["error"]["message"] and "POST /mcp" in reply["error"]["message"]
        # A handler's exception as an SDK reports it: a tool result with isError (review of the first fix).
        params = {"name": "headers_failed", "arguments": {}}
        reply = await pool.request("bad", "tools/call", params, outbound=Outbound({"Authorization": static}))
        said = reply["result"]["content"][0]["text"]
        assert reply["result"]["isError"] and said.startswith("handler failed: POST /mcp")
        assert "static-secret-0123456789" not in said and "configured-key-abcdefgh" not in said
    finally:
        await pool.aclose()


async def test_a_refused_handshake_that_echoes_the_request_headers_is_said_without_the_credentials() -> None:
    """The upstream's own words in "refused initialize: ..." reach every caller of its tools (review)."""
    async with run_http_upstream(str(HOSTILE_HTTP), "--refused-hello") as url:
        config = UpstreamConfig(
            transport="http", url=url + "?api_key=url-secret-0123456789", protocol="2025-11-25",
            headers={"X-Api-Key": "configured-key-abcdefgh"},
        )  # fmt: skip
        pool = UpstreamPool({"bad": config})
        outbound = Outbound({"Authorization": "Bearer static-0123456789"})
        secrets = ("configured-key-abcdefgh", "static-0123456789", "url-secret-0123456789")
        try:
            with pytest.raises(UpstreamError) as caught:
                await pool.request("bad", "tools/list", outbound=outbound)
            said = str(caught.value)
            assert said.startswith("upstream 'bad' refused initialize: who are you? POST /mcp")
            assert not any(secret in said for secret in secrets) and "[redacted]" in said
            # Review: also where the list cache first meets the upstream (pool.session), in the backoff's
            # repeat of the failure, and on /healthz.
            with pytest.raises(UpstreamError) as again:
                await pool.session("bad", outbound)
            assert not any(secret in str(again.value) for secret in secrets)
            assert not any(secret in json.dumps(pool.health(), default=str) for secret in secrets)
        finally:
            await pool.aclose()
