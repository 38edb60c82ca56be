"""The web pages as one ASGI app, in process, over a real SQLite file: what every answer carries, what is
refused before any page runs, a session that lasts only as long as the key that signed it in, and the frame
every page shares (the stylesheet, the product's name, who is signed in) and what the sign-in page is for.

The whole connect flow (with a real authorization server) is tests/e2e/test_connect_flow.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import urlencode

import anyio
import httpx2
import pytest

from manifold.app import WEB_PREFIXES
from manifold.config.models import GatewayConfig, GatewaySettings, IdentitySettings, UpstreamConfig
from manifold.identity.api_keys import KeyRepository, OwnerKind
from manifold.identity.authenticator import Authenticator
from manifold.identity.directory import Directory
from manifold.outbound.oauth import ConnectLinks, OAuthFlows, Vault
from manifold.security.crypto import Cipher, generate_key
from manifold.security.secret_store import SecretStore
from manifold.store.db import default_url, open_database
from manifold.web import pages
from manifold.web.responses import SECURITY_HEADERS
from manifold.web.routes import WebApp

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8470"
SIGN_IN_LIMIT = 10  # failed sign-ins per address (web/throttle.py)
USER = "alice@corp.com"
MAX_BODY = 2048
OAUTH_UPSTREAM = "linear"  # the one upstream of these pages (per-user OAuth)
PLAIN_UPSTREAM = "toolbox"  # an upstream without per-user OAuth: nothing to connect
UPSTREAMS = {
    OAUTH_UPSTREAM: UpstreamConfig.model_validate(
        {"transport": "http", "url": "https://mcp.linear.example/mcp", "auth": {"mode": "oauth", "scopes": ["read"]}}
    ),
    PLAIN_UPSTREAM: UpstreamConfig.model_validate({"transport": "http", "url": "https://toolbox.example/mcp"}),
}


@dataclass
class Site:
    http: httpx2.AsyncClient
    transport: httpx2.ASGITransport
    app: WebApp
    keys: KeyRepository
    authenticator: Authenticator
    key_id: str
    token: str
    syncs: list[None]
    links: ConnectLinks


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    engine = await open_database(default_url(tmp_path))
    cipher = Cipher([generate_key()], source="test")
    secrets = SecretStore(engine, cipher)
    flows = OAuthFlows(engine, cipher, secret=secrets.lookup)
    keys = KeyRepository(engine)
    directory = Directory(engine, GatewayConfig.model_validate({"users": {USER: {}}}))
    await directory.load()
    authenticator = Authenticator(keys, directory, None, cache_seconds=0)
    record, token = await keys.create(OwnerKind.USER, USER, "laptop")
    syncs: list[None] = []

    async def sync() -> None:
        syncs.append(None)
        authenticator.invalidate()  # what the gateway's change sync does when a key changed

    links = ConnectLinks.from_cipher(cipher)
    web = WebApp(
        settings=GatewaySettings(max_body_bytes=MAX_BODY),
        identity=IdentitySettings(),
        keys=keys,
        authenticator=authenticator,
        engine=engine,
        cipher=cipher,
        secrets=secrets,
        links=links,
        flows=flows,
        vault=Vault(engine, cipher),
        upstream_config=UPSTREAMS.get,
        sync=sync,
    )
    # The gateway's ASGI types (manifold.asgi) say dict where the ASGI spec says mutable mapping.
    transport = httpx2.ASGITransport(app=web)  # pyright: ignore[reportArgumentType]
    async with httpx2.AsyncClient(transport=transport, base_url=BASE) as http:
        yield Site(http, transport, web, keys, authenticator, record.id, token, syncs, links)
    await flows.aclose()
    await engine.dispose()


def hidden_fields(page: str) -> dict[str, str]:
    found = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    return {unescape(name): unescape(value) for name, value in found}


async def sign_in(site: Site, next_url: str = "/connections") -> httpx2.Response:
    form = await site.http.get("/login", params={"next": next_url})
    fields = {**hidden_fields(form.text), "key": site.token}
    return await site.http.post("/login", data=fields, headers={"Origin": BASE})


def assert_a_page(response: httpx2.Response) -> None:
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name


async def test_every_answer_is_a_page_with_the_security_headers(site: Site) -> None:
    answers = {
        "sign-in form": await site.http.get("/login"),
        "no such page": await site.http.get("/login/elsewhere"),
        "trailing slash": await site.http.get("/connections/"),
        "not a method of these pages": await site.http.put("/connections"),
        "the callback is a GET": await site.http.post("/oauth/callback", headers={"Origin": BASE}),
        "DNS rebinding": await site.http.get("/login", headers={"Host": "evil.example"}),
        "IdP sign-in not set up": await site.http.get("/login/oidc"),
        "no such upstream": await site.http.get("/connect/github?t=x"),
    }
    statuses = {what: r.status_code for what, r in answers.items()}
    assert statuses == {
        "sign-in form": 200,
        "no such page": 404,
        "trailing slash": 404,
        "not a method of these pages": 405,
        "the callback is a GET": 405,
        "DNS rebinding": 403,
        "IdP sign-in not set up": 404,
        "no such upstream": 404,
    }
    for response in answers.values():
        assert_a_page(response)
    assert "No OAuth upstream named &#x27;github&#x27;" in answers["no such upstream"].text


async def test_a_form_over_the_body_limit_is_refused_before_it_is_read(site: Site) -> None:
    form = await site.http.get("/login")
    fields = {**hidden_fields(form.text), "key": "x" * MAX_BODY}
    refused = await site.http.post("/login", data=fields, headers={"Origin": BASE})
    assert refused.status_code == 413 and f"over {MAX_BODY} bytes" in refused.text
    assert_a_page(refused)
    assert "set-cookie" not in refused.headers


async def test_a_form_posted_from_another_site_is_refused(site: Site) -> None:
    form = await site.http.get("/login")
    fields = {**hidden_fields(form.text), "key": site.token}
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        refused = await site.http.post("/login", data=fields, headers=headers)
        assert refused.status_code == 403 and "set-cookie" not in refused.headers
        assert_a_page(refused)


# What Chromium sends with a same-origin form POST when the page's referrer policy withheld the referrer
# (the pages used to say `no-referrer`): `Origin: null`, and `Sec-Fetch-Site: same-origin`.
CHROMIUM_SAME_ORIGIN_NO_REFERRER = {"Origin": "null", "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"}
# A sandboxed frame on another site also sends `Origin: null`, with `Sec-Fetch-Site: cross-site`.
CHROMIUM_SANDBOXED_FRAME_ELSEWHERE = {"Origin": "null", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}


async def test_a_browser_signs_in_on_our_own_form_and_a_foreign_frame_does_not(site: Site) -> None:
    form = await site.http.get("/login")
    # The pages ask browsers for the referrer on our own origin, so our forms carry a real Origin.
    assert form.headers["referrer-policy"] == "same-origin"
    fields = {**hidden_fields(form.text), "key": site.token}
    signed_in = await site.http.post("/login", data=fields, headers=CHROMIUM_SAME_ORIGIN_NO_REFERRER)
    assert signed_in.status_code == 303 and "set-cookie" in signed_in.headers
    refused = await site.http.post("/login", data=fields, headers=CHROMIUM_SANDBOXED_FRAME_ELSEWHERE)
    assert refused.status_code == 403 and "set-cookie" not in refused.headers


async def test_signing_in_with_a_key_lasts_as_long_as_the_key(site: Site) -> None:
    signed_in = await sign_in(site, "/connections")
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/connections"
    assert_a_page(signed_in)
    page = await site.http.get("/connections")
    assert page.status_code == 200 and "no connected accounts" in page.text
    assert f"Signed in as <strong>{USER}</strong>" in page.text

    await site.keys.revoke(site.key_id)  # from the CLI, say
    after = await site.http.get("/connections")
    assert after.status_code == 303 and after.headers["location"].startswith("/login?")


async def test_every_page_applies_the_changes_made_elsewhere_first(site: Site) -> None:
    before = len(site.syncs)
    await site.http.get("/login")
    await site.http.get("/no-such-page-here")
    assert len(site.syncs) == before + 2


WRONG_KEY = "mfk_000000000000_" + "x" * 43


async def test_too_many_failed_sign_ins_are_refused_but_the_right_key_still_signs_in(site: Site) -> None:
    for _ in range(SIGN_IN_LIMIT):
        form = await site.http.get("/login")
        fields = {**hidden_fields(form.text), "key": WRONG_KEY}
        failed = await site.http.post("/login", data=fields, headers={"Origin": BASE})
        assert failed.status_code == 401
    form = await site.http.get("/login")
    fields = {**hidden_fields(form.text), "key": WRONG_KEY}
    refused = await site.http.post("/login", data=fields, headers={"Origin": BASE})
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.text
    assert_a_page(refused)
    # Everyone behind the same address (one NAT) is not locked out by whoever keeps failing.
    signed_in = await sign_in(site)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/connections"


async def test_concurrent_failed_sign_ins_get_no_more_tries_than_the_limit(site: Site) -> None:
    """Sixty wrong keys sent at once from one address: the limit counts them as they start, not as they
    finish, so no more than the limit's worth are ever checked as ordinary tries."""
    attempts: list[tuple[str, str]] = []  # (Cookie header, CSRF token) of a sign-in form each
    for _ in range(60):
        form = await site.http.get("/login")
        cookie = form.headers["set-cookie"].split(";", 1)[0]
        attempts.append((cookie, hidden_fields(form.text)["csrf"]))
    answers: list[int] = []

    async def attempt(cookie: str, token: str) -> None:
        async with httpx2.AsyncClient(transport=site.transport, base_url=BASE) as browser:
            fields = {"csrf": token, "next": "/connections", "key": WRONG_KEY}
            answer = await browser.post("/login", data=fields, headers={"Origin": BASE, "Cookie": cookie})
            answers.append(answer.status_code)

    async with anyio.create_task_group() as group:
        for cookie, token in attempts:
            group.start_soon(attempt, cookie, token)
    assert sorted(set(answers)) == [401, 429]
    assert answers.count(401) <= SIGN_IN_LIMIT, answers
    assert answers.count(401) + answers.count(429) == 60

    site.http.cookies.clear()
    signed_in = await sign_in(site)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/connections"


MALFORMED = {
    "non-ASCII": "ä" * 43,
    "non-ASCII, mixed": "abc\u00e9\u2603" + "a" * 38,
    "huge": "A" * 1500,
    "empty": "",
    "wrong shape": "a.b.c",
    "padding": "=" * 43,
    "control characters": "\x00\x01\x7f" + "a" * 40,
    "spaces": " " * 43,
}


@pytest.mark.parametrize("value", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_sign_in_token_is_refused_with_a_page(site: Site, value: str) -> None:
    form = await site.http.get("/login")
    fields = {**hidden_fields(form.text), "csrf": value, "key": site.token}
    refused = await site.http.post("/login", data=fields, headers={"Origin": BASE})
    assert refused.status_code == 403, refused.text
    assert_a_page(refused)
    assert "sign-in form expired" in refused.text
    assert (await site.http.get("/connections")).status_code == 303  # not signed in


@pytest.mark.parametrize("value", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_sign_out_token_is_refused_with_a_page(site: Site, value: str) -> None:
    assert (await sign_in(site)).status_code == 303
    refused = await site.http.post("/logout", data={"csrf": value}, headers={"Origin": BASE})
    assert refused.status_code == 403, refused.text
    assert_a_page(refused)
    assert (await site.http.get("/connections")).status_code == 200  # still signed in


COOKIE_VALUES = {
    "non-ASCII": "\u00e4\u00f6.\u00fc" * 10,
    "non-ASCII MAC": "eyJwIjoieCJ9." + "\u00e4" * 43,
    "huge": "A" * 3000 + "." + "B" * 43,
    "empty": "",
    "wrong shape": "a.b.c",
    "no MAC": "eyJwIjoieCJ9.",
    "not base64": "!!!!." + "a" * 43,
    "quotes and semicolons": '"a;b=c"',
    "control characters": "\x01\x02.\x7f",
}


@pytest.mark.parametrize("value", COOKIE_VALUES.values(), ids=COOKIE_VALUES.keys())
async def test_a_malformed_cookie_is_as_good_as_none(site: Site, value: str) -> None:
    raw = value.encode("utf-8")
    for name in ("manifold-session", "manifold-login", "manifold-oidc"):
        cookie = [(b"cookie", b"other=1; " + name.encode() + b"=" + raw)]
        page = await raw_request(site, "GET", "/connections", headers=cookie)
        assert page.status_code == 303, (name, page.status_code)  # to the sign-in form: nobody is signed in
        form = await raw_request(site, "GET", "/login", headers=cookie)
        assert form.status_code == 200
        posted = await raw_request(
            site,
            "POST",
            "/login",
            headers=[*cookie, (b"origin", BASE.encode()), (b"content-type", b"application/x-www-form-urlencoded")],
            body=b"csrf=x&key=x",
        )
        assert posted.status_code == 403, (name, posted.status_code)
        out = await raw_request(
            site,
            "POST",
            "/logout",
            headers=[*cookie, (b"origin", BASE.encode()), (b"content-type", b"application/x-www-form-urlencoded")],
            body=b"csrf=x",
        )
        assert out.status_code == 200, (name, out.status_code)  # nobody was signed in: signed out


@dataclass
class RawAnswer:
    status_code: int
    headers: dict[str, str]
    body: bytes


async def raw_request(
    site: Site,
    method: str,
    path: str,
    *,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
) -> RawAnswer:
    """A request exactly as given, bytes and all (an HTTP client would clean up what a crafted one need not)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8470"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8470),
    }
    sent = False
    messages: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        messages.append(message)

    await site.app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    raw_headers = start.get("headers") or []
    assert isinstance(raw_headers, list)
    answer_headers = {bytes(k).decode("latin-1"): bytes(v).decode("latin-1") for k, v in raw_headers}
    content = b"".join(bytes(m.get("body", b"")) for m in messages if m["type"] == "http.response.body")  # type: ignore[arg-type]
    status = start["status"]
    assert isinstance(status, int)
    return RawAnswer(status, answer_headers, content)


CRAFTED: dict[str, tuple[str, str, bytes, list[tuple[bytes, bytes]], bytes]] = {
    # what: (method, path, query string, extra headers, body)
    "huge query string": ("GET", "/login", b"next=/" + b"a" * 200_000, [], b""),
    "a long address to come back to": ("GET", "/connections", b"x=" + b"%e2%98%83" * 3000, [], b""),
    "many parameters": ("GET", "/connections", b"&".join(b"p%d=%d" % (i, i) for i in range(5000)), [], b""),
    "repeated parameters": ("GET", "/login", b"next=/a&" * 5000, [], b""),
    "invalid UTF-8 in the query": ("GET", "/login", b"next=%ff%fe%80/\xff\xc3(", [], b""),
    "raw bytes in the query": ("GET", "/connect/github", bytes(range(128, 256)), [], b""),
    "NUL in the query": ("GET", "/login", b"next=/%00a&x=%00", [], b""),
    "callback with odd bytes": ("GET", "/oauth/callback", b"code=%ff&state=%c3%28&state=x", [], b""),
    "IdP callback with odd bytes": ("GET", "/login/callback", b"code=%ff&state=%c3%28", [], b""),
    "invalid UTF-8 in a form": (
        "POST",
        "/login",
        b"",
        [(b"content-type", b"application/x-www-form-urlencoded")],
        b"csrf=%ff%fe&key=%c3%28&next=\xff\xfe",
    ),
    "raw bytes in a form": (
        "POST",
        "/login",
        b"",
        [(b"content-type", b"application/x-www-form-urlencoded")],
        bytes(range(256)),
    ),
    "repeated form fields": (
        "POST",
        "/logout",
        b"",
        [(b"content-type", b"application/x-www-form-urlencoded")],
        b"csrf=a&" * 200,
    ),
    "a form that is not URL-encoded": (
        "POST",
        "/login",
        b"",
        [(b"content-type", b"multipart/form-data; boundary=\xff")],
        b"--\xff\r\n",
    ),
    "odd content type": ("POST", "/login", b"", [(b"content-type", b"\xff\xfe;;;=")], b"csrf=x"),
    "odd cookie bytes": ("GET", "/connections", b"", [(b"cookie", bytes(range(1, 256)))], b""),
    "many cookies": ("GET", "/connections", b"", [(b"cookie", b"; ".join(b"c%d=v" % i for i in range(3000)))], b""),
    "odd bytes in the upstream name": ("GET", "/connect/%ff\xff", b"t=\xff", [], b""),
    "odd content length": ("POST", "/login", b"", [(b"content-length", b"\xd9\xa1")], b""),
}


@pytest.mark.parametrize("request_parts", CRAFTED.values(), ids=CRAFTED.keys())
async def test_a_crafted_request_gets_a_page_never_a_500(
    site: Site, request_parts: tuple[str, str, bytes, list[tuple[bytes, bytes]], bytes]
) -> None:
    method, path, query, headers, body = request_parts
    if method == "POST":
        headers = [*headers, (b"origin", BASE.encode())]
    answer = await raw_request(site, method, path, query=query, headers=headers, body=body)
    assert 200 <= answer.status_code < 500, answer.body[:500]
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert b"Traceback" not in answer.body
    assert len(answer.headers.get("location", "")) <= 4096  # a Location header proxies and browsers accept


# ---- the frame every page shares: the stylesheet, the product's name, who is signed in -------------------------

STYLESHEET_LINK = re.compile(r'<link rel="stylesheet" href="([^"]+)">')


def header(page: str) -> str:
    found = re.search(r"<header\b.*?</header>", page, re.S)
    assert found, page
    return found.group(0)


def main_part(page: str) -> str:
    found = re.search(r"<main\b.*?</main>", page, re.S)
    assert found, page
    return found.group(0)


def csp(response: httpx2.Response) -> dict[str, str]:
    directives = (d.strip().split(" ", 1) for d in response.headers["content-security-policy"].split(";"))
    return {d[0]: d[1] if len(d) > 1 else "" for d in directives if d[0]}


async def test_the_stylesheet_is_served_by_the_gateway_and_the_pages_may_load_it(site: Site) -> None:
    form = await site.http.get("/login")
    found = STYLESHEET_LINK.search(form.text)
    assert found, "the sign-in page links no stylesheet"
    href = unescape(found.group(1))
    assert href.startswith("/static/") and href.startswith(WEB_PREFIXES)  # our own origin, routed to the pages

    sheet = await site.http.get(href)
    assert sheet.status_code == 200
    assert sheet.headers["content-type"].startswith("text/css")
    assert sheet.headers["x-content-type-options"] == "nosniff"
    assert "font-family" in sheet.text and "@import" not in sheet.text and "url(" not in sheet.text  # nothing else
    # The address carries the content's hash: kept for a year; any other address is checked each time.
    assert "max-age=31536000" in sheet.headers["cache-control"] and "immutable" in sheet.headers["cache-control"]
    unversioned = await site.http.get(href.split("?", 1)[0])
    assert unversioned.status_code == 200 and unversioned.text == sheet.text
    assert unversioned.headers["cache-control"] == "no-cache"
    assert (await site.http.post(href.split("?", 1)[0], headers={"Origin": BASE})).status_code == 405

    # The page's CSP lets it load that stylesheet and nothing else: no script, no inline style, no framing.
    policy = csp(form)
    assert policy["style-src"] == "'self'" and policy["default-src"] == "'none'"
    assert "script-src" not in policy and "'unsafe-inline'" not in form.headers["content-security-policy"]
    assert policy["frame-ancestors"] == "'none'" and form.headers["referrer-policy"] == "same-origin"
    assert " style=" not in form.text and "<style" not in form.text and "<script" not in form.text


async def test_every_page_links_the_stylesheet_and_names_the_product(site: Site) -> None:
    answers = {
        "sign-in form": await site.http.get("/login"),
        "signed out": await site.http.get("/logout"),
        "no such page": await site.http.get("/nowhere"),
        "no such upstream": await site.http.get("/connect/github?t=x"),
        "a link that does not verify": await site.http.get(f"/connect/{OAUTH_UPSTREAM}?t=forged"),
    }
    assert (await sign_in(site)).status_code == 303
    answers["connections"] = await site.http.get("/connections")
    answers["sign out?"] = await site.http.get("/logout")
    answers["a link that does not verify, signed in"] = await site.http.get(f"/connect/{OAUTH_UPSTREAM}?t=forged")
    sheet = pages.stylesheet()
    for what, answer in answers.items():
        text = answer.text
        assert [unescape(h) for h in STYLESHEET_LINK.findall(text)] == [sheet.url], what
        assert "Manifold" in header(text), what
        assert text.count("<h1>") == 1 and '<html lang="en">' in text and 'name="viewport"' in text, what
        assert "<h1>" in main_part(text), what


async def test_signed_in_pages_show_who_is_signed_in_with_their_connections_and_sign_out(site: Site) -> None:
    signed_out = await site.http.get("/login")
    assert "Signed in as" not in signed_out.text and 'action="/logout"' not in signed_out.text

    assert (await sign_in(site)).status_code == 303
    for path in ("/connections", "/logout", f"/connect/{OAUTH_UPSTREAM}?t=forged", "/no-such-page"):
        top = header((await site.http.get(path)).text)
        assert f"Signed in as <strong>{USER}</strong>" in top, path
        assert '<a href="/connections">Your connections</a>' in top, path
        assert re.search(r'<form method="post" action="/logout">.*?>Sign out</button></form>', top), path

    # Opening /logout while signed in asks, with the button on the page itself (a GET never signs out).
    asked = await site.http.get("/logout")
    body = main_part(asked.text)
    assert 'role="alert"' not in body and "<h1>Sign out?</h1>" in body
    assert 'action="/logout"' in body and ">Sign out</button>" in body
    out = await site.http.post("/logout", data=hidden_fields(body), headers={"Origin": BASE})
    assert out.status_code == 200 and "<h1>Signed out</h1>" in out.text
    assert "Signed in as" not in out.text


async def login_page_from(site: Site, next_url: str) -> str:
    page = await site.http.get("/login?" + urlencode({"next": next_url}))
    assert page.status_code == 200
    return page.text


async def test_the_sign_in_page_says_which_upstream_it_connects_and_only_for_a_real_link(site: Site) -> None:
    link = site.links.mint(f"user:{USER}", OAUTH_UPSTREAM, BASE).removeprefix(BASE)
    opened = await site.http.get(link)
    assert opened.status_code == 303 and opened.headers["location"].startswith("/login?")
    page = (await site.http.get(opened.headers["location"])).text
    assert f"<h1>Sign in to connect {OAUTH_UPSTREAM}</h1>" in page
    assert f"<title>Sign in to connect {OAUTH_UPSTREAM} · Manifold</title>" in page
    assert hidden_fields(page)["next"] == link  # and back to the link after signing in

    # A `next` that does not verify names nothing: the plain sign-in page, whatever the address says.
    token = link.split("t=", 1)[1]
    not_verified = {
        "forged token": f"/connect/{OAUTH_UPSTREAM}?t=forged-by-someone",
        "no token": f"/connect/{OAUTH_UPSTREAM}",
        "markup as upstream": "/connect/%3Cscript%3Ealert(1)%3C%2Fscript%3E?t=" + token,
        "another upstream's path": f"/connect/{PLAIN_UPSTREAM}?t={token}",
        "no such upstream": "/connect/GitHub%20Enterprise?t=" + token,
        "deeper path": f"/connect/{OAUTH_UPSTREAM}/x?t={token}",
        "elsewhere": f"/elsewhere/connect/{OAUTH_UPSTREAM}?t={token}",
        "another site": f"https://evil.example/connect/{OAUTH_UPSTREAM}?t={token}",
    }
    for what, next_url in not_verified.items():
        text = await login_page_from(site, next_url)
        assert "<h1>Sign in</h1>" in text and "to connect" not in text, what
        assert "<script>" not in text and "GitHub Enterprise" not in text, what
    # A link minted for an upstream this gateway has no OAuth for names nothing either.
    plain = site.links.mint(f"user:{USER}", PLAIN_UPSTREAM, BASE).removeprefix(BASE)
    assert "to connect" not in await login_page_from(site, plain)

    # Whatever the page names is escaped.
    markup = pages.login(next_url="/", csrf="c", connect='<img src=x onerror="alert(1)">')
    assert "<img" not in markup and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in markup


async def test_signing_in_with_no_next_page_lands_on_the_persons_servers(site: Site) -> None:
    """Someone who opens /login by hand wants to use the gateway: their servers and the snippets."""
    form = await site.http.get("/login")
    fields = {**hidden_fields(form.text), "key": site.token}
    signed_in = await site.http.post("/login", data=fields, headers={"Origin": BASE})
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/servers"
