"""A stdio server that ignores methods it does not know never answers protocol `auto`'s `server/discover`: the
probe gives up after DISCOVER_PROBE_SECONDS and the handshake falls back to `initialize`, as the SDK's client does
(was: the whole start, 120 s under the pool, with its tools missing meanwhile). The end-to-end check, through the
gateway: tests/e2e/test_stdio_ignores_unknown.py."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from manifold.config.models import UpstreamConfig
from manifold.protocol import Era
from manifold.upstream import session as session_module
from manifold.upstream.base import UpstreamError
from manifold.upstream.session import DISCOVER_PROBE_SECONDS, JsonRpcSession
from manifold.upstream.stdio import StdioTransport
from tests.waiting import wait_for, within

pytestmark = pytest.mark.anyio

SERVER = str(Path(__file__).resolve().parents[1] / "upstreams" / "ignores_unknown_stdio.py")
SLOW_DUAL = str(Path(__file__).resolve().parents[1] / "upstreams" / "slow_dual_stdio.py")


def session(protocol: str) -> JsonRpcSession:
    config = UpstreamConfig(transport="stdio", command=sys.executable, args=[SERVER], protocol=protocol)
    return JsonRpcSession("old", config, StdioTransport("old", config))


async def test_auto_falls_back_to_initialize_once_the_probe_goes_unanswered() -> None:
    auto = session("auto")
    began = time.monotonic()
    try:
        await auto.connect(within=120.0)  # what the pool gives a stdio command
        took = time.monotonic() - began
        assert auto.protocol_version == "2025-11-25"
        assert took < DISCOVER_PROBE_SECONDS + 3, f"the handshake took {took:.1f}s"
        reply = await auto.request("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
        assert reply["result"]["content"][0]["text"] == "hi"
    finally:
        await auto.aclose()


async def test_a_start_shorter_than_the_probe_names_the_probe_and_the_setting_that_helps() -> None:
    auto = session("auto")
    with pytest.raises(UpstreamError) as caught:
        await auto.connect(within=DISCOVER_PROBE_SECONDS / 2)
    assert "server/discover" in caught.value.reason and "protocol: 2025-11-25" in caught.value.reason


async def test_the_handshake_era_setting_works_with_it() -> None:
    handshake = session("2025-11-25")
    try:
        await handshake.connect(within=10.0)
        assert handshake.protocol_version == "2025-11-25"
    finally:
        await handshake.aclose()


async def test_a_command_still_starting_is_waited_for_not_taken_for_one_that_ignores_the_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's time counts from when the command read it: one still starting (its package being fetched) has
    not, and answers it once it does. Was: the probe given up while it was starting, `initialize` sent, and a
    server of both eras (answering both) ended up on 2025-11-25."""
    monkeypatch.setattr(session_module, "DISCOVER_PROBE_SECONDS", 0.3)
    gate = tmp_path / "fetched"
    config = UpstreamConfig.model_validate(
        {"transport": "stdio", "command": sys.executable, "args": [SLOW_DUAL, str(gate)]}
    )
    dual = JsonRpcSession("dual", config, StdioTransport("dual", config))
    try:
        connecting = asyncio.ensure_future(dual.connect(within=60.0))
        began = time.monotonic()
        # Time passing is the subject: well past the probe's time, the command still "fetching".
        await wait_for(lambda: time.monotonic() - began > 10 * 0.3, what="the probe's time passing")
        assert not connecting.done()
        gate.touch()
        await within(connecting, 10, what="the handshake once the command is up")
        assert dual.era is Era.MODERN, dual.era
    finally:
        await dual.aclose()
