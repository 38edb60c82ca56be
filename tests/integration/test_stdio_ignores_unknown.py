"""A stdio server that ignores methods it does not know never answers protocol `auto`'s `server/discover`: the
handshake's failure says so and names the way out; `protocol: 2025-11-25` works with it. Was (ops probe): "did
not complete the handshake within 120s", restarted for good, with no word of why."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from manifold.config.models import UpstreamConfig
from manifold.upstream.base import UpstreamError
from manifold.upstream.session import JsonRpcSession
from manifold.upstream.stdio import StdioTransport

pytestmark = pytest.mark.anyio

SERVER = str(Path(__file__).resolve().parents[1] / "upstreams" / "ignores_unknown_stdio.py")


def session(protocol: str) -> JsonRpcSession:
    config = UpstreamConfig(transport="stdio", command=sys.executable, args=[SERVER], protocol=protocol)
    return JsonRpcSession("old", config, StdioTransport("old", config))


async def test_auto_names_the_probe_it_waited_for_and_the_setting_that_helps() -> None:
    auto = session("auto")
    with pytest.raises(UpstreamError) as caught:
        await auto.connect(within=2.0)
    assert "server/discover" in caught.value.reason and "protocol: 2025-11-25" in caught.value.reason


async def test_the_handshake_era_setting_works_with_it() -> None:
    handshake = session("2025-11-25")
    try:
        await handshake.connect(within=10.0)
        assert handshake.protocol_version == "2025-11-25"
    finally:
        await handshake.aclose()
