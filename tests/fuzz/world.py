"""The gateway under attack, started once for the fuzz package: three upstreams (kitchen on stdio, kitchen
over streamable HTTP, kitchen in `forwarded` mode so `x-mcp-headers` is read), a virtual server over two of
them, and a real OpenID Provider configured as an IdP, so a JWT-shaped bearer reaches the JWT checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tests.e2e.harness import Gateway, run_gateway, stdio_upstream
from tests.idp import Idp, run_idp
from tests.upstreams.launch import KITCHEN, run_http_upstream

AUDIENCE = "https://manifold.fuzz.test/mcp"


@dataclass
class World:
    gw: Gateway
    idp: Idp


@asynccontextmanager
async def run_world() -> AsyncIterator[World]:
    async with (
        run_idp([]) as idp,
        run_http_upstream(KITCHEN, "--name", "web") as web_url,
        run_http_upstream(KITCHEN, "--name", "fwd") as fwd_url,
    ):
        upstreams = {
            "kitchen": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "kitchen"),
            "web": {"transport": "http", "url": web_url},
            "fwd": {"transport": "http", "url": fwd_url, "auth": {"mode": "forwarded", "allow": ["X-Api-Key"]}},
        }
        servers = {"pair": {"members": [{"upstream": "kitchen"}, {"upstream": "fwd"}]}}
        extra = {"identity": {"idps": {"corp": {"issuer": idp.issuer, "audience": [AUDIENCE]}}}}
        async with run_gateway(upstreams, servers, extra=extra) as gw:
            yield World(gw, idp)
