"""Fuzzing the admin API with the development key (an admin): random paths (known routes, made-up segments,
odd encodings), methods, query strings and JSON bodies shaped like each route's (with fuzzed values) or not.
A gateway of its own (module scope), so what the fuzzer creates and deletes stays there."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.e2e.harness import run_gateway, stdio_upstream
from tests.fuzz import strategies as fs
from tests.fuzz.probe import Probe
from tests.upstreams.launch import KITCHEN

pytestmark = pytest.mark.anyio

TARGET = "admin"
SEGMENTS = ["keys", "users", "teams", "service-accounts", "grants", "upstreams", "groups", "virtual-servers"]
FIELDS = [
    "id",
    "name",
    "user",
    "sa",
    "expires",
    "email",
    "teams",
    "description",
    "who",
    "what",
    "claims",
    "upstreams",
    "members",
    "transport",
    "url",
    "command",
    "args",
    "auth",
    "mode",
    "require_approval",
    "approvers",
    "approval_timeout_seconds",
    "self_approval",
]


@pytest.fixture(scope="module")
async def admin_probe() -> AsyncIterator[Probe]:
    upstreams = {"kitchen": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "kitchen")}
    async with run_gateway(upstreams) as gw, Probe.open(gw) as probe:
        yield probe


PATH_SEGMENTS = st.one_of(
    st.sampled_from(SEGMENTS),
    st.sampled_from(["kitchen", "dev", "..", ".", "%2e%2e", "%00", "%ff", "%", "a" * 300, "", "teams"]),
    fs.TEXT.map(lambda t: quote(t, safe="")),
)
# The API's routes with fuzzed ids (most of the time, so bodies reach the operations), or any path at all.
ROUTES = st.sampled_from(
    [*SEGMENTS, *(f"{segment}/{{x}}" for segment in SEGMENTS), "users/{x}/teams", "users/{x}/teams/{x}", "{x}"]
)
PATHS = st.one_of(
    st.builds(lambda route, x: "/admin/api/" + route.replace("{x}", x), ROUTES, PATH_SEGMENTS),
    st.builds(lambda route, x: "/admin/api/" + route.replace("{x}", x), ROUTES, PATH_SEGMENTS),
    st.lists(PATH_SEGMENTS, min_size=0, max_size=4).map(lambda parts: "/admin/api/" + "/".join(parts)),
)

VALUES = st.one_of(
    fs.JSON_VALUES,
    st.sampled_from(["kitchen", "dev", "eng", "anyone", "server:*", "tool:kitchen/echo", "http://127.0.0.1:1/mcp"]),
    st.lists(st.sampled_from(["kitchen", "eng", "server:*", "vserver:*", "tool:*/*", ""]), max_size=3),
    st.builds(fs.Big, size=st.sampled_from([70_000])),
)
BODIES = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=5),
    st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=5),
    st.dictionaries(fs.STRINGS, fs.HOSTILE_VALUES, max_size=3),
    fs.HOSTILE_VALUES,
)


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "GET", "POST", "PATCH", "HEAD", "OPTIONS"]),
    path=PATHS,
    query=st.dictionaries(st.sampled_from(["owner", "all", "x"]), fs.TEXT, max_size=2),
    body=st.one_of(BODIES.map(lambda b: fs.encode(b).encode()), st.binary(max_size=100), st.just(b"")),
    content_type=fs.CONTENT_TYPES,
)
async def test_admin_api(
    admin_probe: Probe, method: str, path: str, query: dict[str, str], body: bytes, content_type: str | None
) -> None:
    target = path + ("?" + urlencode(query) if query else "")
    data = body if method in ("POST", "PUT", "PATCH", "DELETE") else None
    headers: dict[str, Any] = {"Content-Type": content_type}
    await admin_probe.send(TARGET, method, target, headers=headers, data=data)
