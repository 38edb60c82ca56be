"""The web pages as one ASGI app, in process, over a real SQLite file: what every answer carries, what is
refused before any page runs, and a session that lasts only as long as the key that signed it in.

The whole connect flow (with a real authorization server) is tests/e2e/test_connect_flow.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import httpx2
import pytest

from manifold.config.models import GatewayConfig, GatewaySettings, IdentitySettings, UpstreamConfig
from manifold.identity.api_keys import KeyRepository, OwnerKind
from manifold.identity.authenticator import Authenticator
from manifold.identity.directory import Directory
from manifold.outbound.oauth import ConnectLinks, OAuthFlows, Vault
from manifold.security.crypto import Cipher, generate_key
from manifold.security.secret_store import SecretStore
from manifold.store.db import default_url, open_database
from manifold.web.responses import SECURITY_HEADERS
from manifold.web.routes import WebApp

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8470"
USER = "alice@corp.com"
MAX_BODY = 2048


@dataclass
class Site:
    http: httpx2.AsyncClient
    keys: KeyRepository
    authenticator: Authenticator
    key_id: str
    token: str
    syncs: list[None]


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

    def no_upstreams(upstream_id: str) -> UpstreamConfig | None:
        return None

    web = WebApp(
        settings=GatewaySettings(max_body_bytes=MAX_BODY),
        identity=IdentitySettings(),
        keys=keys,
        authenticator=authenticator,
        engine=engine,
        cipher=cipher,
        secrets=secrets,
        links=ConnectLinks.from_cipher(cipher),
        flows=flows,
        vault=Vault(engine, cipher),
        upstream_config=no_upstreams,
        sync=sync,
    )
    # The gateway's ASGI types (manifold.asgi) say dict where the ASGI spec says mutable mapping.
    transport = httpx2.ASGITransport(app=web)  # pyright: ignore[reportArgumentType]
    async with httpx2.AsyncClient(transport=transport, base_url=BASE) as http:
        yield Site(http, keys, authenticator, record.id, token, syncs)
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


async def test_too_many_failed_sign_ins_are_refused_even_with_the_right_key(site: Site) -> None:
    for _ in range(10):
        form = await site.http.get("/login")
        fields = {**hidden_fields(form.text), "key": "mfk_000000000000_" + "x" * 43}
        failed = await site.http.post("/login", data=fields, headers={"Origin": BASE})
        assert failed.status_code == 401
    refused = await sign_in(site)
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.text
