"""The admin console (console/) in process, over a real SQLite file: who gets a page and who is refused, what
every answer carries, the CSRF check of its forms, its static files, and what its rows say of an upstream.

The console used in Chromium against a running gateway and a real upstream is tests/browser/test_console.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from manifold.admin.api import AdminApi
from manifold.admin.catalog import CatalogOperations
from manifold.admin.catalog_secrets import CatalogSecrets
from manifold.admin.ops import Operations
from manifold.audit import AuditLog
from manifold.audit.unauthorized import UnauthorizedAudit
from manifold.catalog.lists import UpstreamLists
from manifold.config.loader import load_config
from manifold.console.app import ConsoleApp
from manifold.console.frame import CSP, Services, static_url
from manifold.console.views import matching, state_of, tool_row, upstream_row
from manifold.identity.api_keys import KeyRepository, OwnerKind
from manifold.identity.authenticator import Authenticator
from manifold.identity.directory import Directory
from manifold.outbound.oauth.vault import Vault
from manifold.principal import Principal
from manifold.security.crypto import Cipher, generate_key
from manifold.security.secret_store import SecretStore
from manifold.store.db import default_url, open_database
from manifold.upstream.credential import SHARED, Outbound
from manifold.web import csrf
from manifold.web.session import SessionCookies, session_keys


async def shared_credential(principal: Principal, upstream_id: str) -> Outbound:
    return SHARED


pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8470"
ADMIN = "root@corp.com"
PERSON = "pat@corp.com"


class NoUpstreams:
    """The pool's side of the list cache; the pages tested here must not reach an upstream at all."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def request(self, upstream_id: str, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.asked.append(upstream_id)
        raise AssertionError("the console listed upstreams by connecting to them")

    async def session(self, upstream_id: str, *args: Any, **kwargs: Any) -> Any:
        self.asked.append(upstream_id)
        raise AssertionError("the console listed upstreams by connecting to them")


class NoReload:
    """The catalog hot-swap (runtime/catalog_swap.py); these tests serve nothing."""

    async def reload(self) -> None:
        return None


class Health:
    def health(self) -> dict[str, dict[str, object]]:
        return {"notes": {"state": "failed", "down": True, "last_error": "connect refused"}}


@dataclass
class Site:
    http: httpx2.AsyncClient
    cookies: SessionCookies
    keys: KeyRepository
    tokens: dict[str, str]  # user → session cookie value (signed in with a key of theirs)
    key_ids: dict[str, str]
    upstreams: NoUpstreams
    secrets: SecretStore | None = None  # where typed upstream credentials are kept (admin/catalog_secrets.py)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    (tmp_path / "manifold.yaml").write_text(
        f"gateway:\n  state_dir: {tmp_path / 'state'}\n"
        f"identity:\n  admins: ['user:{ADMIN}']\n"
        f"users:\n  {ADMIN}: {{}}\n  {PERSON}: {{}}\n"
        "upstreams:\n  notes:\n    transport: http\n    url: http://127.0.0.1:9/mcp\n"
    )
    config = load_config(tmp_path / "manifold.yaml")
    engine = await open_database(default_url(tmp_path))
    cipher = Cipher([generate_key()], source="test")
    keys = KeyRepository(engine)
    directory = Directory(engine, config.gateway)
    await directory.load()
    cookies = SessionCookies(session_keys(cipher), secure=False)
    upstreams = NoUpstreams()

    async def sync() -> None:
        return None

    secrets = SecretStore(engine, cipher)
    catalog_ops = CatalogOperations(engine, config, env={}, secrets=CatalogSecrets(secrets))
    audit_log = AuditLog(engine, config.gateway.audit, config.state_dir)
    await audit_log.start()
    admin = AdminApi(
        config,
        Authenticator(keys, directory, None, cache_seconds=0),
        Operations(engine, config),
        catalog_ops,
        NoReload(),
        audit_log,
        UnauthorizedAudit(audit_log),
    )
    console = ConsoleApp(
        Services(
            settings=config.settings,
            admins=config.gateway.identity.admins,
            cookies=cookies,
            keys=keys,
            directory=lambda: directory.snapshot,
            admin=admin,
            catalog_ops=catalog_ops,
            health=Health(),
            lists=UpstreamLists(upstreams, 60),
            sync=sync,
            engine=engine,
            vault=Vault(engine, cipher),
            credential_of=shared_credential,  # no upstream here wants a credential
        )
    )
    tokens: dict[str, str] = {}
    key_ids: dict[str, str] = {}
    for user in (ADMIN, PERSON):
        record, _ = await keys.create(OwnerKind.USER, user, "web")
        key_ids[user] = record.id
        set_cookie = cookies.new_session(f"user:{user}", user, f"api_key:{record.id}")
        tokens[user] = set_cookie.split(";", 1)[0].split("=", 1)[1]
    transport = httpx2.ASGITransport(app=console)  # pyright: ignore[reportArgumentType]
    async with httpx2.AsyncClient(transport=transport, base_url=BASE) as http:
        yield Site(http, cookies, keys, tokens, key_ids, upstreams, secrets)
    await audit_log.aclose()
    await engine.dispose()


def as_user(site: Site, user: str) -> dict[str, str]:
    return {"cookie": f"{site.cookies.session_name}={site.tokens[user]}"}


async def test_someone_not_signed_in_is_sent_to_sign_in_and_back(site: Site) -> None:
    for path in ("/admin", "/admin/upstreams"):
        answer = await site.http.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/login?next={path}"
    refused = await site.http.post("/admin/upstreams/notes/refresh", data={"csrf": "x"})
    assert refused.status_code == 403


async def test_an_admin_sees_the_upstreams_without_the_console_connecting_to_them(site: Site) -> None:
    home = await site.http.get("/admin", headers=as_user(site, ADMIN))
    assert home.status_code == 200
    assert home.headers["content-security-policy"] == CSP
    assert "1 upstream: 0 up, 0 degraded, 1 down" in home.text
    page = await site.http.get("/admin/upstreams", headers=as_user(site, ADMIN))
    assert page.status_code == 200
    assert "connect refused" in page.text and "state-down" in page.text and ">http<" in page.text
    assert site.upstreams.asked == []


async def test_a_person_who_is_not_an_admin_gets_403_everywhere(site: Site) -> None:
    for path in ("/admin", "/admin/upstreams", "/admin/upstreams/notes/tools", "/admin/upstreams/nope/tools"):
        answer = await site.http.get(path, headers=as_user(site, PERSON))
        assert answer.status_code == 403, path
        assert "administrators" in answer.text
    token = csrf.token(site.cookies.signer, "any", "console:refresh:notes")
    answer = await site.http.post("/admin/upstreams/notes/refresh", data={"csrf": token}, headers=as_user(site, PERSON))
    assert answer.status_code == 403


async def test_an_admin_whose_key_was_revoked_is_refused(site: Site) -> None:
    await site.keys.revoke(site.key_ids[ADMIN])
    answer = await site.http.get("/admin", headers=as_user(site, ADMIN))
    assert answer.status_code == 403


async def test_a_post_needs_the_token_of_its_own_form_and_our_origin(site: Site) -> None:
    path = "/admin/upstreams/notes/refresh"
    for fields in ({}, {"csrf": "forged"}):
        answer = await site.http.post(path, data=fields, headers=as_user(site, ADMIN))
        assert answer.status_code == 403
        assert "not one this console gave you" in answer.text
    other_site = {"Sec-Fetch-Site": "cross-site", **as_user(site, ADMIN)}
    answer = await site.http.post(path, data={}, headers=other_site)
    assert answer.status_code == 403
    assert "another site" in answer.text
    get = await site.http.get(path, headers=as_user(site, ADMIN))
    assert get.status_code == 405


async def test_the_static_files_are_served_and_nothing_else(site: Site) -> None:
    htmx = await site.http.get(static_url("htmx.min.js"))
    assert htmx.status_code == 200
    assert htmx.headers["content-type"].startswith("text/javascript")
    assert "immutable" in htmx.headers["cache-control"]
    assert b"htmx" in htmx.content[:200]
    missing = await site.http.get("/admin/static/../app.py")
    assert missing.status_code == 404


def test_an_upstreams_state() -> None:
    assert state_of({"state": "connected", "down": False}, list_failed=False) == "up"
    assert state_of({"state": "connected", "down": False}, list_failed=True) == "degraded"
    assert state_of({"state": "failed", "down": True, "last_error": "x"}, list_failed=False) == "down"
    assert state_of({"state": "idle", "down": False}, list_failed=False) == "idle"
    row = upstream_row(
        {"id": "a", "source": "manifold.yaml", "body": {"transport": "sse", "auth": {"mode": "oauth"}}},
        {"state": "connected", "down": False},
        3,
        "tools/list failed: boom",
    )
    assert (row.transport, row.auth, row.state, row.tools, row.last_error) == (
        "sse",
        "oauth",
        "degraded",
        3,
        "tools/list failed: boom",
    )


def test_tools_filter_by_text_and_read_only() -> None:
    tools = [
        {
            "name": "write",
            "description": "Write a file",
            "annotations": {"readOnlyHint": False, "destructiveHint": True},
        },
        {"name": "read", "description": "Read a file", "annotations": {"readOnlyHint": True}, "inputSchema": {"a": 1}},
        {"name": "ping", "annotations": "not an object"},
    ]
    assert [t.name for t in matching(tools, "FILE")] == ["read", "write"]
    assert [t.name for t in matching(tools, "", only_read_only=True)] == ["read"]
    assert tool_row(tools[0]).hints == [("readOnlyHint", False), ("destructiveHint", True)]
    assert tool_row(tools[2]).hints == []
    assert '"a": 1' in tool_row(tools[1]).schema
