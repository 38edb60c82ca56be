"""The gateway's HTTP surface outside the MCP endpoints, attacked as an outsider would, against a real
`manifold serve`: DNS rebinding of the health and metadata documents, Host and Origin values a lenient parser
would let through, malformed form tokens and cookies, and a flood of concurrent sign-ins.

Raw aiohttp requests, so every header is sent exactly as written (an HTTP client library would fix up Host).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from html import unescape
from urllib.parse import urlencode

import aiohttp
import pytest

from tests.e2e.harness import Gateway, run_gateway
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio

PRM = "/.well-known/oauth-protected-resource/mcp/up"
INFORMATIVE = ("/healthz", "/readyz", PRM)
EVIL_HOSTS = ["rebind.evil.example", "rebind.evil.example:8470", "localhost:@evil.example", "[::1]evil.example"]
SIGN_IN_LIMIT = 10  # failed sign-ins per address (web/throttle.py)
WRONG_KEY = "mfk_000000000000_" + "x" * 43


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    async with run_http_upstream(KITCHEN) as url:
        async with run_gateway({"up": {"transport": "http", "url": url}}) as gateway:
            yield gateway


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No cookie jar: each test sends exactly the cookies it means to.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def port_of(gw: Gateway) -> int:
    return int(gw.base.rsplit(":", 1)[1])


def assert_no_traceback(gw: Gateway) -> None:
    log = gw.log()
    assert "Traceback" not in log and "Internal Server Error" not in log, log[-3000:]


@pytest.mark.parametrize("path", INFORMATIVE)
@pytest.mark.parametrize("host", EVIL_HOSTS)
async def test_a_rebound_host_learns_nothing_from_health_or_metadata(
    gw: Gateway, http: aiohttp.ClientSession, path: str, host: str
) -> None:
    async with http.get(gw.base + path, headers={"Host": host}) as refused:
        body = await refused.text()
    assert refused.status == 403, body
    assert "allowed_hosts" in body
    assert "up" not in re.findall(r"[a-z]+", body)  # no upstream names, states or errors
    assert "evil" not in body  # and nothing built from the attacker's Host


@pytest.mark.parametrize("path", INFORMATIVE)
async def test_a_rebinding_page_cannot_read_health_or_metadata(
    gw: Gateway, http: aiohttp.ClientSession, path: str
) -> None:
    headers = {"Origin": "http://localhost:1@evil.example"}
    async with http.get(gw.base + path, headers=headers) as refused:
        assert refused.status == 403, await refused.text()


async def test_health_and_metadata_answer_on_the_gateways_own_names(gw: Gateway, http: aiohttp.ClientSession) -> None:
    port = port_of(gw)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST.:{port}"):
        async with http.get(gw.base + "/healthz", headers={"Host": host}) as health:
            assert health.status == 200 and "up" in (await health.json())["upstreams"]
        async with http.get(gw.base + "/readyz", headers={"Host": host}) as ready:
            assert ready.status == 200 and "up" in (await ready.json())["servers"]
        async with http.get(gw.base + PRM, headers={"Host": host}) as metadata:
            assert metadata.status == 200
            assert (await metadata.json())["resource"] == f"http://{host}/mcp/up"


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "localhost:@evil.example"},
        {"Host": "[::1]evil.example"},
        {"Host": "localhost:1@evil.example"},
        {"Host": "localhost\\evil.example"},
        {"Host": "local%68ost"},
        {"Host": "127.1"},
        {"Origin": "http://localhost:1@evil.example"},
        {"Origin": "http://[::1]evil.example"},
        {"Origin": "http://localhost/evil"},
        {"Origin": "null"},
    ],
)
async def test_host_and_origin_are_parsed_strictly_everywhere(
    gw: Gateway, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    auth = {"Authorization": f"Bearer {gw.key}", "Content-Type": "application/json"}
    ping = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    async with http.post(gw.url("up"), data=ping, headers={**auth, **headers}) as mcp:
        assert mcp.status == 403
    async with http.get(gw.base + "/admin/api/upstreams", headers={**auth, **headers}) as admin:
        assert admin.status == 403
    async with http.get(gw.base + "/login", headers=headers) as login:
        assert login.status == 403
    async with http.get(gw.base + "/healthz", headers=headers) as health:
        assert health.status == 403


async def sign_in_form(http: aiohttp.ClientSession, gw: Gateway) -> tuple[str, dict[str, str]]:
    """(the pre-login Cookie header, the form's hidden fields) of a fresh sign-in form."""
    async with http.get(gw.base + "/login") as form:
        assert form.status == 200
        page = await form.text()
        cookie = form.headers["Set-Cookie"].split(";", 1)[0]
    found = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    return cookie, {unescape(name): unescape(value) for name, value in found}


def form_body(fields: dict[str, str]) -> bytes:
    return urlencode(fields).encode()


def session_cookie(response: aiohttp.ClientResponse) -> str | None:
    """`manifold-session=...` when the answer signs the browser in."""
    for header in response.headers.getall("Set-Cookie", []):
        pair = header.split(";", 1)[0]
        if pair.startswith("manifold-session=") and pair != "manifold-session=":
            return pair
    return None


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize(
    "token",
    ["ä" * 43, "☃", "A" * 5000, "", "a.b.c", "=" * 43, "%00" * 43, "\x01\x7f"],
    ids=["non-ASCII", "snowman", "huge", "empty", "wrong shape", "padding", "NULs", "control"],
)
async def test_a_malformed_form_token_is_a_403_page(gw: Gateway, http: aiohttp.ClientSession, token: str) -> None:
    cookie, fields = await sign_in_form(http, gw)
    headers = {**FORM, "Origin": gw.base, "Cookie": cookie}
    body = form_body({**fields, "csrf": token, "key": gw.key})
    async with http.post(gw.base + "/login", data=body, headers=headers, allow_redirects=False) as login:
        assert login.status == 403, await login.text()
        assert login.headers["Content-Type"] == "text/html; charset=utf-8"
        assert session_cookie(login) is None

    cookie, fields = await sign_in_form(http, gw)
    body = form_body({**fields, "key": gw.key})
    async with http.post(
        gw.base + "/login", data=body, headers={**FORM, "Origin": gw.base, "Cookie": cookie}, allow_redirects=False
    ) as ok:
        assert ok.status == 303
        session = session_cookie(ok)
    assert session is not None
    headers = {**FORM, "Origin": gw.base, "Cookie": session}
    async with http.post(
        gw.base + "/logout", data=form_body({"csrf": token}), headers=headers, allow_redirects=False
    ) as logout:
        assert logout.status == 403, await logout.text()
    async with http.get(gw.base + "/connections", headers={"Cookie": session}, allow_redirects=False) as still:
        assert still.status == 200  # the refused sign-out did not sign anyone out
    assert_no_traceback(gw)


@pytest.mark.parametrize(
    "raw",
    [b"csrf=%C3%A4%C3%A4&key=x", b"csrf=\xff\xfe\xfd&key=\xc3(", bytes(range(256)), b"csrf=x&" * 300],
    ids=["percent-encoded UTF-8", "invalid UTF-8", "every byte", "repeated fields"],
)
async def test_odd_form_bodies_get_a_page(gw: Gateway, http: aiohttp.ClientSession, raw: bytes) -> None:
    cookie, _ = await sign_in_form(http, gw)
    for path in ("/login", "/logout"):
        headers = {**FORM, "Origin": gw.base, "Cookie": cookie}
        async with http.post(gw.base + path, data=raw, headers=headers, allow_redirects=False) as r:
            assert 400 <= r.status < 500 or (path == "/logout" and r.status == 200), (path, r.status)
            assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert_no_traceback(gw)


@pytest.mark.parametrize(
    "cookie",
    [
        "manifold-session=ä.ö",
        "manifold-session=eyJwIjoieCJ9." + "ä" * 43,
        "manifold-login=" + "A" * 5000,
        "manifold-session=; manifold-login=a.b.c; manifold-oidc=!!",
        'manifold-session="x;y"',
        "manifold-session=" + "a" * 100 + "." + "b" * 43,
    ],
    ids=["non-ASCII", "non-ASCII MAC", "huge", "empty and odd", "quoted", "forged"],
)
async def test_odd_cookies_are_no_session(gw: Gateway, http: aiohttp.ClientSession, cookie: str) -> None:
    async with http.get(gw.base + "/connections", headers={"Cookie": cookie}, allow_redirects=False) as page:
        assert page.status == 303 and page.headers["Location"].startswith("/login?")
    async with http.post(
        gw.base + "/login",
        data=b"csrf=x&key=x",
        headers={**FORM, "Origin": gw.base, "Cookie": cookie},
        allow_redirects=False,
    ) as login:
        assert login.status == 403
    assert_no_traceback(gw)


@pytest.mark.parametrize(
    "query",
    ["next=/" + "a" * 6000, "&".join(f"p{i}=v" for i in range(1000)), "next=/a&" * 500, "next=%ff%fe%c3%28"],
    ids=["huge", "many parameters", "repeated", "invalid UTF-8"],
)
async def test_odd_query_strings_get_a_page(gw: Gateway, http: aiohttp.ClientSession, query: str) -> None:
    for path in ("/login", "/connections", "/connect/up", "/oauth/callback", "/login/callback"):
        url = f"{gw.base}{path}?{query}"
        async with http.get(url, allow_redirects=False) as page:
            assert 200 <= page.status < 500, (path, page.status)
            assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert_no_traceback(gw)


async def test_a_flood_of_concurrent_wrong_keys_gets_no_more_tries_than_the_limit(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    forms = [await sign_in_form(http, gw) for _ in range(60)]

    async def attempt(cookie: str, fields: dict[str, str]) -> int:
        body = form_body({**fields, "key": WRONG_KEY})
        headers = {**FORM, "Origin": gw.base, "Cookie": cookie}
        async with http.post(gw.base + "/login", data=body, headers=headers, allow_redirects=False) as answer:
            return answer.status

    statuses = await asyncio.gather(*(attempt(cookie, fields) for cookie, fields in forms))
    assert set(statuses) == {401, 429}, statuses
    assert statuses.count(401) <= SIGN_IN_LIMIT, statuses

    # Someone else behind the same address, with the right key, still signs in.
    cookie, fields = await sign_in_form(http, gw)
    body = form_body({**fields, "key": gw.key})
    headers = {**FORM, "Origin": gw.base, "Cookie": cookie}
    async with http.post(gw.base + "/login", data=body, headers=headers, allow_redirects=False) as signed_in:
        assert signed_in.status == 303 and session_cookie(signed_in) is not None
    assert_no_traceback(gw)
