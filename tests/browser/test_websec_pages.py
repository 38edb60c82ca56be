"""The gateway's pages as an outside attacker meets them, in headless Chromium (docs/security.md).

Real processes, shared by the module: the gateway (`manifold serve`) and a hostile upstream (stdio,
tests/upstreams/hostile.py) whose server name, instructions, tool title, description and annotations are all
markup, served alone and inside a virtual server whose description is markup too. The person signed in is an
admin, so every console page is open to them.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx2
import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import NewPage
from tests.e2e.harness import Gateway, run_gateway, stdio_upstream

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

REGISTRATIONS_PER_MINUTE = 20  # the default, spelled out: registrations and document fetches per address
HOSTILE = str(Path(__file__).resolve().parents[1] / "upstreams" / "hostile.py")
ADMIN = "root@corp.com"
MARKUP = "<img id=pwned src=x><script>window.pwned=1</script>"
# Every page that shows what an upstream, a virtual server or a client said of itself.
PAGES = (
    "/admin",
    "/admin/upstreams",
    "/admin/upstreams/hostile/tools",
    "/admin/servers",
    "/admin/servers/shady",
    "/admin/servers/new",
    "/admin/pins",
    "/admin/grants",
    "/admin/audit",
    "/servers",
    "/connections",
)


@dataclass
class Site:
    gw: Gateway
    key: str


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[Site]:
    # Client metadata documents on loopback (as in development): served by the test's own HTTP server.
    server = {"allow_insecure_client_urls": True, "registrations_per_minute": REGISTRATIONS_PER_MINUTE}
    extra = {"identity": {"admins": [f"user:{ADMIN}"], "authorization_server": server}, "users": {ADMIN: {}}}
    shady = {"description": "Shady " + MARKUP, "members": [{"upstream": "hostile"}]}
    async with run_gateway({"hostile": stdio_upstream(HOSTILE)}, {"shady": shady}, extra=extra) as gw:
        async with gw.http() as http:
            made = await http.post(f"{gw.base}/admin/api/keys", json={"user": ADMIN, "name": "web"})
            assert made.status_code == 201, made.text
        yield Site(gw, made.json()["token"])
        assert "Traceback" not in gw.log(), gw.log()[-4000:]


async def sign_in(page: Page, site: Site, path: str = "/admin") -> None:
    await page.goto(site.gw.base + path)
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Sign in")
    await page.get_by_label("API key").fill(site.key)
    await page.get_by_role("button", name=re.compile(r"^Sign in$")).click()
    await page.wait_for_url(site.gw.base + path)


async def test_what_an_upstream_says_of_itself_is_shown_as_text_on_every_page(site: Site, new_page: NewPage) -> None:
    page = await new_page()
    await sign_in(page, site)
    for path in PAGES:
        answer = await page.goto(site.gw.base + path)
        assert answer is not None and answer.status == 200, path
        # Markup would have made elements (CSP blocks the script, not the DOM it would have changed).
        assert await page.locator("#pwned, #pwned2").count() == 0, path
        assert await page.evaluate("window.pwned") is None, path
    await page.goto(site.gw.base + "/admin/upstreams/hostile/tools")
    await expect(page.locator("main")).to_contain_text("Description " + '"><img id=pwned')


async def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(site: Site, new_page: NewPage) -> None:
    """Before: sign-out only cleared this browser's cookie; a copy of it (another profile, a leaked cookie)
    still opened the console and signed in applications for eight hours."""
    page = await new_page()
    await sign_in(page, site)
    cookies = [(c.get("name"), c.get("value")) for c in await page.context.cookies()]
    copied = {name: value for name, value in cookies if name == "manifold-session" and value}
    assert copied
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Signed out")

    registered = await site.gw.http().post(
        f"{site.gw.base}/register",
        json={"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"},
    )
    authorize = "/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": registered.json()["client_id"],
            "redirect_uri": "http://127.0.0.1:9/cb",
            "state": "s",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
            "resource": site.gw.url("hostile"),
        }
    )
    async with httpx2.AsyncClient(base_url=site.gw.base, cookies=copied) as thief:
        for path in ("/servers", "/admin", "/admin/upstreams", authorize):
            answer = await thief.get(path)
            assert answer.status_code == 303, (path, answer.status_code)
            assert answer.headers["location"].startswith("/login?next="), path
        refused = await thief.post("/admin/keys/add", data={"csrf": "x"}, headers={"Origin": site.gw.base})
        assert refused.status_code == 403 and "Sign in first" in refused.text


async def test_the_authorization_servers_json_is_never_read_as_a_page(site: Site) -> None:
    """A registration answer echoes the client's own words; it must stay JSON in any browser (before: no
    X-Content-Type-Options on the authorization server's answers)."""
    async with site.gw.http() as http:
        answers = [
            await http.post(
                f"{site.gw.base}/register",
                json={"redirect_uris": ["http://127.0.0.1:9/cb"], "client_name": MARKUP},
            ),
            await http.post(f"{site.gw.base}/token", data={"grant_type": "authorization_code", "code": MARKUP}),
            await http.get(f"{site.gw.base}/.well-known/oauth-authorization-server"),
        ]
    for answer in answers:
        assert answer.headers["content-type"] == "application/json", answer.request.url
        assert answer.headers["x-content-type-options"] == "nosniff", answer.request.url
    assert answers[0].json()["client_name"] == MARKUP


async def test_urls_that_are_no_urls_are_refused_never_a_500(site: Site) -> None:
    """Before: a bracketed host that is no address (`http://[zz]/`), an unclosed bracket, a number where
    RFC 7591 says string, or a non-ASCII redirect URI made the authorization server answer 500 with a
    traceback in the log."""
    base = site.gw.base
    async with site.gw.http() as http:
        for uri in ("http://[zz]/cb", "https://[::1/cb", "http://127.0.0.1:99999/cb"):
            answer = await http.post(f"{base}/register", json={"redirect_uris": [uri]})
            assert answer.status_code == 400 and answer.json()["error"] == "invalid_redirect_uri", uri
        for field, value in (("scope", 5), ("client_name", {"a": 1}), ("contacts", [1]), ("jwks", "x")):
            body = {"redirect_uris": ["http://127.0.0.1:9/cb"], field: value}
            answer = await http.post(f"{base}/register", json=body)
            assert answer.status_code == 400 and answer.json()["error"] == "invalid_client_metadata", field
        registered = await http.post(
            f"{base}/register", json={"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"}
        )
        client_id = registered.json()["client_id"]
        authorize = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": "http://127.0.0.1:9/cb",
            "state": "s",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
            "resource": site.gw.url("hostile"),
        }
        for client in ("https://[::1", "http://[zz]/client.json"):
            answer = await http.get(f"{base}/authorize", params={**authorize, "client_id": client})
            assert answer.status_code == 400 and "Unknown application" in answer.text, client
        answer = await http.get(f"{base}/authorize", params={**authorize, "redirect_uri": "http://[zz]/cb"})
        assert answer.status_code == 400 and "location" not in answer.headers
        # Only printable ASCII is OAuth (RFC 6749 Appendix A); Authlib failed on the rest when saying so.
        for field, value in (("redirect_uri", "http://127.0.0.1:9/cé"), ("response_type", "co\x00de"), ("state", "é")):
            answer = await http.get(f"{base}/authorize", params={**authorize, field: value})
            assert answer.status_code == 400 and "location" not in answer.headers, field
            assert f"{field} has characters OAuth does not allow" in answer.text, field
        answer = await http.get(f"{base}/authorize", params={**authorize, "resource": "http://[zz]/mcp/hostile"})
        assert answer.status_code == 400 and "invalid_target" in answer.text and "location" not in answer.headers
    assert "Traceback" not in site.gw.log()


async def test_a_client_cannot_write_lines_into_the_gateways_log(site: Site) -> None:
    """Before: a registration's client_name went into the log as it came, line breaks and all."""
    forged = "2026-01-01 00:00:00,000 CRITICAL manifold: forged"
    async with site.gw.http() as http:
        answer = await http.post(
            f"{site.gw.base}/register",
            json={"redirect_uris": ["http://127.0.0.1:9/cb"], "client_name": f"IDE\n{forged}\r\n{forged}"},
        )
    assert answer.status_code == 201
    client_id = answer.json()["client_id"]
    logged = [line for line in site.gw.log().splitlines() if client_id in line]
    assert logged and "forged" in logged[0]
    assert not any(line.startswith(forged) for line in site.gw.log().splitlines())


async def test_the_authorization_server_is_no_open_redirector(site: Site, new_page: NewPage) -> None:
    """Registration is open: anyone may register `https://evil.example/…` and hand out a link to this gateway's
    /authorize. Before: any request that failed its checks went straight there, no sign-in, no click (a
    phishing link on the gateway's own name). Now the person is shown the error; once they allowed an
    application, its errors go back to it as OAuth says."""
    async with site.gw.http() as http:
        registered = await http.post(
            f"{site.gw.base}/register",
            json={"redirect_uris": ["https://evil.example/phish"], "token_endpoint_auth_method": "none"},
        )
    lure = f"{site.gw.base}/authorize?" + urlencode(
        {"client_id": registered.json()["client_id"], "response_type": "code"}
    )
    page = await new_page()
    landed: list[str] = []
    page.on("request", lambda request: landed.append(request.url) if "evil.example" in request.url else None)
    answer = await page.goto(lure)
    assert answer is not None and answer.status == 400
    assert page.url == lure and not landed
    await expect(page.locator("main")).to_contain_text("Nothing was sent to the application")
    await sign_in(page, site, "/admin")
    answer = await page.goto(lure)  # signed in, but this application was never allowed: still a page
    assert answer is not None and answer.status == 400 and page.url == lure and not landed


class _Documents(http.server.BaseHTTPRequestHandler):
    """Any GET answers a client metadata document naming its own URL; `fetched` counts them."""

    fetched = 0

    def do_GET(self) -> None:  # noqa: N802 — http.server's name
        type(self).fetched += 1
        body = json.dumps(
            {
                "client_id": f"http://{self.headers.get('host')}{self.path}",
                "redirect_uris": ["http://127.0.0.1:9/cb"],
                "token_endpoint_auth_method": "none",
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 — http.server's name
        return None


@pytest.fixture
def documents() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Documents)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{server.server_address[0]!s}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_nobody_makes_the_gateway_fetch_documents_without_limit(site: Site, documents: str) -> None:
    """Any visitor may name a client metadata document, and the gateway fetches it. Before: as many as they
    liked, each a new URL (a free relay for requests to any public host). Now as many per address and minute
    as registrations; a document already fetched is served from the cache."""
    _Documents.fetched = 0
    async with site.gw.http() as http:
        for n in range(REGISTRATIONS_PER_MINUTE):
            answer = await http.get(f"{site.gw.base}/authorize", params={"client_id": f"{documents}/c{n}.json"})
            assert "Unknown application" not in answer.text, answer.text
        assert _Documents.fetched == REGISTRATIONS_PER_MINUTE
        over = await http.get(f"{site.gw.base}/authorize", params={"client_id": f"{documents}/more.json"})
        assert over.status_code == 400 and "too many client metadata documents" in over.text
        token = await http.post(f"{site.gw.base}/token", data={"client_id": f"{documents}/more2.json", "code": "x"})
        assert token.status_code == 401 and token.json()["error"] == "invalid_client"
        again = await http.get(f"{site.gw.base}/authorize", params={"client_id": f"{documents}/c0.json"})
        assert "Unknown application" not in again.text  # cached: no fetch, no count
    assert _Documents.fetched == REGISTRATIONS_PER_MINUTE
