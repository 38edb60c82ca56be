"""Web security of the gateway's own authorization server, in process (the flows end to end are in
tests/e2e/test_gateway_oauth.py): what a client that describes itself may make the gateway do with a person's
browser.

A Client ID Metadata Document is anyone's JSON on anyone's server. It is served here by a real HTTP server on
loopback (so `allow_insecure_client_urls`, as in development) and fetched by the gateway's own fetcher."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from manifold.authserver.clients import ClientProblem, ClientRegistry, redirect_uri_allowed
from manifold.authserver.store import AuthStore
from manifold.config.models import AuthorizationServerSettings
from manifold.outbound.oauth.discovery import Fetcher

pytestmark = pytest.mark.anyio


class _Documents(http.server.BaseHTTPRequestHandler):
    """GET /<name>.json answers a client metadata document naming itself, with the redirect URIs `redirects`
    holds under that name."""

    redirects: dict[str, list[str]] = {}

    def do_GET(self) -> None:  # noqa: N802 — http.server's name
        name = self.path.strip("/").removesuffix(".json")
        body = json.dumps(
            {
                "client_id": f"http://{self.headers.get('host')}{self.path}",
                "client_name": "Doc IDE",
                "redirect_uris": self.redirects.get(name, []),
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


@pytest.fixture(scope="module")
def documents() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Documents)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


HOSTILE = {
    "javascript": "javascript:alert(document.domain)//",
    "data": "data:text/html,<script>alert(1)</script>",
    "vbscript": "vbscript:msgbox(1)",
    "fragment": "https://ide.example/cb#x",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
async def test_a_metadata_document_may_not_name_a_script_or_data_redirect_uri(documents: str, kind: str) -> None:
    """Before: the document was taken as it came, so /authorize sent the person (with `error`, or after Allow
    with a code) to `javascript:…` or `data:…`, and the consent page named it as where they would go."""
    _Documents.redirects[kind] = ["http://127.0.0.1:9/cb", HOSTILE[kind]]
    settings = AuthorizationServerSettings(allow_insecure_client_urls=True)
    fetcher = Fetcher()
    registry = ClientRegistry(settings, AuthStore(create_async_engine("sqlite+aiosqlite://")), fetcher, str)
    try:
        with pytest.raises(ClientProblem, match="redirect URI that is not https, loopback http or an app scheme"):
            await registry.find(f"{documents}/{kind}.json")
        _Documents.redirects["fine"] = ["http://127.0.0.1:9/cb", "com.example.ide:/cb", "https://ide.example/cb"]
        client = await registry.find(f"{documents}/fine.json")
        assert client.check_redirect_uri("http://127.0.0.1:51234/cb")
    finally:
        await fetcher.aclose()


@pytest.mark.parametrize(
    ("uri", "secure", "insecure"),
    [
        ("https://ide.example/cb", True, True),
        ("http://127.0.0.1:3000/cb", True, True),
        ("http://[::1]/cb", True, True),
        ("com.example.ide:/cb", True, True),
        ("http://ide.example/cb", False, True),  # plain http elsewhere: development only
        ("http://localhost.evil.example/cb", False, True),
        ("javascript:alert(1)", False, False),
        ("JavaScript:alert(1)", False, False),
        ("data:text/html,x", False, False),
        ("https:ide.example", False, False),
        ("https://ide.example/cb#frag", False, False),
        ("/relative", False, False),
        ("http://[zz]/cb", False, False),  # no URL at all: refused, never a ValueError
        ("https://[::1/cb", False, False),
        ("http://127.0.0.1:99999/cb", False, False),
        ("http://evil.example\\@127.0.0.1/cb", False, False),  # a browser goes to evil.example
        ("https://ide.example\\@other.example/cb", False, False),
        ("http://user@127.0.0.1/cb", False, False),  # userinfo
        ("https://user:pw@ide.example/cb", False, False),
        ("https://ide.example/c b", False, False),
        ("https://ide.example/cb\t", False, False),
    ],
)
def test_which_redirect_uris_a_client_may_have(uri: str, secure: bool, insecure: bool) -> None:
    assert redirect_uri_allowed(uri) is secure
    assert redirect_uri_allowed(uri, insecure=True) is insecure
