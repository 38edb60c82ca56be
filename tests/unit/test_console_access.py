"""The console's access pages (console/grants.py, keys.py, audit_viewer.py, connections.py) in process, over a
real SQLite file and the real admin API: grants listed, added and removed in place and the explain box;
keys made with the secret shown once, revoked; service accounts; the audit viewer's filters and keyset
paging; users' OAuth connections listed (never a token) and revoked, through the admin API's own route
(`GET/DELETE /admin/api/connections`). Every URL and form refuses a non-admin and a form without its token.

The same pages in Chromium against `manifold serve` are tests/browser/test_console_access.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.admin.api import AdminApi
from manifold.admin.catalog import CatalogOperations
from manifold.admin.ops import NotFound, Operations
from manifold.audit import AuditLog
from manifold.audit.unauthorized import UnauthorizedAudit
from manifold.catalog.lists import UpstreamLists
from manifold.config.loader import load_config
from manifold.console.app import ConsoleApp
from manifold.console.frame import Services, static_url
from manifold.console.grants import what_for
from manifold.identity.api_keys import KeyRepository, OwnerKind
from manifold.identity.authenticator import Authenticator
from manifold.identity.directory import Directory
from manifold.outbound.oauth.client import OAuthFlows
from manifold.outbound.oauth.vault import Connection, Vault
from manifold.principal import Principal
from manifold.security.crypto import Cipher, generate_key
from manifold.store.db import audit_events, default_url, open_database
from manifold.upstream.credential import SHARED, Outbound
from manifold.web import csrf
from manifold.web.session import SessionCookies, session_keys


async def shared_credential(principal: Principal, upstream_id: str) -> Outbound:
    return SHARED


pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8470"
ADMIN = "root@corp.com"
PERSON = "pat@corp.com"
ALICE = "alice@corp.com"


class Down:
    """The pool's side of the list cache: the upstream does not answer (explain then resolves by the rules)."""

    async def request(self, upstream_id: str, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise ConnectionRefusedError(f"{upstream_id} refused the connection")

    async def session(self, upstream_id: str, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError(f"{upstream_id} refused the connection")


class NoReload:
    async def reload(self) -> None:
        return None


class Health:
    def health(self) -> dict[str, dict[str, object]]:
        return {}


@dataclass
class Site:
    http: httpx2.AsyncClient
    cookies: SessionCookies
    keys: KeyRepository
    tokens: dict[str, str]
    engine: AsyncEngine
    vault: Vault
    audit_log: AuditLog
    admin: AdminApi


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    (tmp_path / "manifold.yaml").write_text(
        f"gateway:\n  state_dir: {tmp_path / 'state'}\n"
        f"identity:\n  admins: ['user:{ADMIN}']\n"
        f"users:\n  {ADMIN}: {{}}\n  {PERSON}: {{}}\n  {ALICE}: {{}}\n"
        "teams:\n  eng: null\n"
        "service_accounts:\n  filebot: {}\n"
        "upstreams:\n  notes:\n    transport: http\n    url: http://127.0.0.1:9/mcp\n"
        "  files:\n    transport: http\n    url: http://127.0.0.1:9/mcp\n"
        "grants:\n  - who: team:eng\n    what: ['server:files']\n    description: eng reads files\n"
    )
    config = load_config(tmp_path / "manifold.yaml")
    engine = await open_database(default_url(tmp_path))
    cipher = Cipher([generate_key()], source="test")
    keys = KeyRepository(engine)
    directory = Directory(engine, config.gateway)
    await directory.load()
    cookies = SessionCookies(session_keys(cipher), secure=False)
    catalog_ops = CatalogOperations(engine, config, env={})
    audit_log = AuditLog(engine, config.gateway.audit, config.state_dir)
    await audit_log.start()
    flows = OAuthFlows(engine, cipher)
    admin = AdminApi(
        config,
        Authenticator(keys, directory, None, cache_seconds=0),
        Operations(engine, config, flows=flows),
        catalog_ops,
        NoReload(),
        audit_log,
        UnauthorizedAudit(audit_log),
    )

    async def sync() -> None:
        return None

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
            lists=UpstreamLists(Down(), 60),
            sync=sync,
            engine=engine,
            vault=Vault(engine, cipher),
            credential_of=shared_credential,  # no upstream here wants a credential
        )
    )
    tokens: dict[str, str] = {}
    for user in (ADMIN, PERSON):
        record, _ = await keys.create(OwnerKind.USER, user, "web")
        set_cookie = cookies.new_session(f"user:{user}", user, f"api_key:{record.id}")
        tokens[user] = set_cookie.split(";", 1)[0].split("=", 1)[1]
    transport = httpx2.ASGITransport(app=console)  # pyright: ignore[reportArgumentType]
    async with httpx2.AsyncClient(transport=transport, base_url=BASE) as http:
        yield Site(http, cookies, keys, tokens, engine, Vault(engine, cipher), audit_log, admin)
    await flows.aclose()
    await audit_log.aclose()
    await engine.dispose()


def as_user(site: Site, user: str) -> dict[str, str]:
    return {"cookie": f"{site.cookies.session_name}={site.tokens[user]}"}


def field(page: str, name: str) -> str:
    """The value of the first form field `name` on the page."""
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no field {name}"
    return found.group(1)


def form_of(page: str, action: str) -> dict[str, str]:
    """The hidden fields of the form posting to `action`."""
    start = page.index(f'action="{action}"')
    form = page[start : page.index("</form>", start)]
    return dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', form))


PAGES = (
    "/admin/grants",
    "/admin/grants?server=notes",
    "/admin/grants?server=notes&who=alice@corp.com&tool=read_note",
    "/admin/keys",
    "/admin/keys/0123456789ab",
    "/admin/service-accounts/filebot",
    "/admin/audit",
    "/admin/audit?user=x&outcome=ok",
    "/admin/audit/1",
    "/admin/connections",
)
FORMS = {  # form action → the CSRF action its token is bound to
    "/admin/grants/add": "console:add_grant:",
    "/admin/grants/g-1/remove": "console:remove_grant:g-1",
    "/admin/keys/add": "console:create_key:",
    "/admin/keys/0123456789ab/revoke": "console:revoke_key:0123456789ab",
    "/admin/service-accounts/add": "console:create_sa:",
    "/admin/service-accounts/filebot/delete": "console:delete_sa:filebot",
    "/admin/connections/revoke": "console:revoke_connection:",
}


async def test_a_person_who_is_not_an_admin_gets_403_on_every_page_and_form(site: Site) -> None:
    for path in PAGES:
        answer = await site.http.get(path, headers=as_user(site, PERSON))
        assert answer.status_code == 403, path
        assert "administrators" in answer.text
    session = site.cookies.session({site.cookies.session_name: site.tokens[PERSON]})
    assert session is not None
    for path, action in FORMS.items():
        # Even with a token this console would have given that session, the form is refused.
        token = csrf.token(site.cookies.signer, session.sid, action)
        answer = await site.http.post(path, data={"csrf": token}, headers=as_user(site, PERSON))
        assert answer.status_code == 403, path
    assert await site.keys.list() != [] and len(await site.keys.list()) == 2  # nothing was made


async def admin_api(site: Site, method: str, path: str, key: str, body: dict[str, Any] | None) -> tuple[int, Any]:
    """One request to the admin API (as app.py hands it one), with `key` as the bearer token."""
    raw = json.dumps(body).encode() if body is not None else b""
    sent: list[dict[str, Any]] = []

    async def read_body(*_: Any) -> bytes:
        return raw

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": b"",
             "_headers": {"authorization": f"Bearer {key}"}, "client": ("127.0.0.1", 1)}  # fmt: skip
    await site.admin(scope, receive, send, read_body)
    body_bytes = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body_bytes)


async def test_an_admins_key_restricted_to_some_servers_is_no_admin_credential(site: Site) -> None:
    """Was (found by a security probe): an administrator's key made with `--servers notes` (an agent's key) was
    refused on other servers' MCP endpoints but was a full admin credential: the admin API listed keys and
    minted an unrestricted one, added upstreams (stdio commands), and a console sign-in with it got every
    page. A restricted key is for its servers' MCP endpoints only."""
    record, secret = await site.keys.create(OwnerKind.USER, ADMIN, "agent", servers=["notes"])
    cookie = site.cookies.new_session(f"user:{ADMIN}", ADMIN, f"api_key:{record.id}").split(";", 1)[0]
    for path in PAGES:
        answer = await site.http.get(path, headers={"cookie": cookie})
        assert answer.status_code == 403 and "administrators" in answer.text, path
    before = len(await site.keys.list())
    for method, path in (("GET", "/admin/api/keys"), ("POST", "/admin/api/keys"), ("GET", "/admin/api/upstreams")):
        body = {"user": ADMIN, "name": "minted"} if method == "POST" else None
        answer = await admin_api(site, method, path, secret, body)
        assert answer == (403, {"error": "admin principals only"}), path
    assert len(await site.keys.list()) == before  # nothing was minted
    _, unrestricted = await site.keys.create(OwnerKind.USER, ADMIN, "laptop")
    assert (await admin_api(site, "GET", "/admin/api/keys", unrestricted, None))[0] == 200  # her own other key


async def test_every_form_refuses_a_post_without_its_own_token(site: Site) -> None:
    grants = (await site.http.get("/admin/grants", headers=as_user(site, ADMIN))).text
    stolen = form_of(grants, "/admin/grants/add")["csrf"]  # a real token, of another form
    for path in FORMS:
        for fields in ({}, {"csrf": "forged"}, {"csrf": stolen} if path != "/admin/grants/add" else {}):
            answer = await site.http.post(path, data=fields, headers=as_user(site, ADMIN))
            assert answer.status_code == 403, (path, fields)
            assert "not one this console gave you" in answer.text
        cross = await site.http.post(path, data={}, headers={"Sec-Fetch-Site": "cross-site", **as_user(site, ADMIN)})
        assert cross.status_code == 403


async def test_grants_are_listed_added_explained_and_removed_in_place(site: Site) -> None:
    admin = as_user(site, ADMIN)
    page = await site.http.get("/admin/grants", headers=admin)
    assert page.status_code == 200
    assert "grants[0]" in page.text and "team:eng" in page.text and "manifold.yaml" in page.text
    assert "read-only" in page.text and "/admin/grants/grants" not in page.text  # a file grant has no remove

    # Explain before: alice has nothing on notes.
    asked = await site.http.get(
        "/admin/grants", params={"server": "notes", "who": ALICE, "tool": "read_note"}, headers=admin
    )
    assert "Denied" in asked.text and "no grant applies to user:alice@corp.com" in asked.text
    assert "is configured" not in asked.text  # alice is one of the users
    typo = await site.http.get(
        "/admin/grants", params={"server": "notes", "who": "alcie@corp.com", "tool": "read_note"}, headers=admin
    )  # console review: evaluated silently, as a real person without grants
    assert "no user &#39;alcie@corp.com&#39; is configured" in typo.text or (
        "no user 'alcie@corp.com' is configured" in typo.text
    ), typo.text[-2000:]

    add = form_of(page.text, "/admin/grants/add")
    fields = {
        **add,
        "kind": "user",
        "subject": ALICE,
        "server": "notes",
        "tools": "read_*",
        "description": "alice reads",
    }
    made = await site.http.post("/admin/grants/add", data=fields, headers=admin)
    assert made.status_code == 303
    assert made.headers["location"].startswith("/admin/grants?server=notes&added=g-")
    grant_id = parse_qs(urlsplit(made.headers["location"]).query)["added"][0]
    shown = await site.http.get(made.headers["location"], headers=admin)
    assert f"Added grant {grant_id}" in shown.text
    # a link made up elsewhere cannot put words on the page: the notice is signed for the session's own action
    forged = await site.http.get(
        "/admin/grants", params={"server": "notes", "added": "g-1. Your key leaked: call +1 555 0100"}, headers=admin
    )
    assert forged.status_code == 200 and "Your key leaked" not in forged.text and "Added grant" not in forged.text
    replayed = await site.http.get(
        "/admin/grants",
        params={
            "server": "notes",
            "added": "g-other",
            "signed": parse_qs(urlsplit(made.headers["location"]).query)["signed"][0],
        },
        headers=admin,
    )
    assert "Added grant" not in replayed.text  # the signature covers the text
    assert "tool:notes/read_*" in shown.text and f"user:{ALICE}" in shown.text
    assert "grants[0]" not in shown.text  # ?server=notes shows only the grants touching notes

    asked = await site.http.get(
        "/admin/grants", params={"server": "notes", "who": ALICE, "tool": "read_note"}, headers=admin
    )
    assert "Allowed" in asked.text
    assert f"by grant {grant_id} (api): user:{ALICE} → tool:notes/read_*" in asked.text
    assert "resolved by the configuration" in asked.text  # the upstream is down: by the rules, and it says so
    denied = await site.http.get(
        "/admin/grants", params={"server": "notes", "who": ALICE, "tool": "write_note"}, headers=admin
    )
    assert "Denied" in denied.text
    server_level = await site.http.get("/admin/grants", params={"server": "files", "who": "sa:filebot"}, headers=admin)
    assert "Denied" in server_level.text and "not in team eng" in server_level.text

    remove = form_of(shown.text, f"/admin/grants/{grant_id}/remove")
    gone = await site.http.post(f"/admin/grants/{grant_id}/remove", data=remove, headers=admin)
    assert gone.status_code == 303 and gone.headers["location"] == "/admin/grants?server=notes"
    assert grant_id not in (await site.http.get("/admin/grants", headers=admin)).text


async def test_a_grant_with_an_approval_gate_and_its_terms_is_made_on_the_console(site: Site) -> None:
    """The console set only a gate's tools and approvers; how long a held call waits, how long an approval lasts
    and self-approval needed the CLI or the API."""
    admin = as_user(site, ADMIN)
    add = form_of((await site.http.get("/admin/grants", headers=admin)).text, "/admin/grants/add")
    fields = {**add, "kind": "user", "subject": ALICE, "server": "notes", "approval_tools": "delete_*",
              "approvers": "team:eng", "approval_timeout": "120", "approval_valid": "3600",
              "self_approval": "on"}  # fmt: skip
    made = await site.http.post("/admin/grants/add", data=fields, headers=admin)
    assert made.status_code == 303, made.text
    grant_id = parse_qs(urlsplit(made.headers["location"]).query)["added"][0]
    stored = {g.id: g.config for g in await site.admin.ops.grants.list()}[grant_id]
    assert stored.require_approval == ["tool:notes/delete_*"] and stored.approvers == "team:eng"
    assert (stored.approval_timeout_seconds, stored.approval_valid_seconds, stored.self_approval) == (120, 3600, True)
    shown = (await site.http.get(made.headers["location"], headers=admin)).text
    assert "a call waits 2 min; an approval lasts 1 h; self-approval allowed" in shown

    for bad, said in (
        ({"approval_timeout": "soon"}, "How long a call waits for approval must be a number of seconds."),
        ({"approval_timeout": "0"}, "approval_timeout_seconds"),  # the API's own range check, said on the page
        ({"approval_tools": "", "approvers": ""}, "The approval&#39;s terms need a gate"),
    ):
        refused = await site.http.post("/admin/grants/add", data={**fields, **bad}, headers=admin)
        assert refused.status_code == 400 and said in refused.text, (bad, refused.text[-2000:])
        assert 'name="self_approval" checked' in refused.text  # the form kept as typed


async def test_a_bad_grant_or_a_file_grant_is_said_on_the_page_never_a_500(site: Site) -> None:
    admin = as_user(site, ADMIN)
    page = (await site.http.get("/admin/grants", headers=admin)).text
    add = form_of(page, "/admin/grants/add")
    empty = await site.http.post("/admin/grants/add", data={**add, "kind": "user", "server": ""}, headers=admin)
    assert empty.status_code == 400
    assert "Name the user" in empty.text and "Choose a server" in empty.text
    bad = {**add, "kind": "user", "subject": "bob@corp.com", "server": "notes", "tools": "notes/"}
    refused = await site.http.post("/admin/grants/add", data=bad, headers=admin)
    assert refused.status_code == 400
    assert (
        'value="bob@corp.com"' in refused.text
        and "notes/</textarea>" in refused.text
        and "names no tool after" in refused.text
    )  # kept as typed
    token = csrf.token(site.cookies.signer, _sid(site, ADMIN), "console:remove_grant:grants[0]")
    kept = await site.http.post("/admin/grants/grants%5B0%5D/remove", data={"csrf": token}, headers=admin)
    assert kept.status_code == 409
    assert "declared in manifold.yaml" in kept.text


def test_a_grants_what_from_the_form() -> None:
    assert what_for("notes", False, ["notes"], "") == ["server:notes"]
    assert what_for("desk", True, ["notes", "files"], "  \n") == ["vserver:desk"]
    assert what_for("notes", False, ["notes"], "read_*\nlist, get") == [
        "tool:notes/read_*",
        "tool:notes/list",
        "tool:notes/get",
    ]
    assert what_for("desk", True, ["notes", "files", "notes"], "read_*\nfiles/stat") == [
        "tool:notes/read_*",
        "tool:files/read_*",
        "tool:files/stat",
    ]


def _sid(site: Site, user: str) -> str:
    session = site.cookies.session({site.cookies.session_name: site.tokens[user]})
    assert session is not None
    return session.sid


async def test_a_keys_secret_is_shown_once_and_never_again(site: Site) -> None:
    admin = as_user(site, ADMIN)
    page = (await site.http.get("/admin/keys", headers=admin)).text
    form = {**form_of(page, "/admin/keys/add"), "owner": ALICE, "name": "laptop", "expires": "30d", "servers": ""}
    made = await site.http.post("/admin/keys/add", data=form, headers=admin)
    assert made.status_code == 201
    assert made.headers["cache-control"] == "no-store"
    token = re.search(r'id="key-secret"[^>]*value="(mfk_[^"]+)"', made.text)
    assert token is not None
    secret = token.group(1)
    assert "readonly" in made.text and static_url("console.js") in made.text
    record = next(k for k in await site.keys.list(owner=f"user:{ALICE}"))
    assert record.matches(secret) and record.name == "laptop" and record.expires_at is not None

    listed = await site.http.get("/admin/keys", headers=admin)
    assert secret not in listed.text and secret.split("_", 2)[2] not in listed.text  # mfk_<id>_<secret>
    assert "laptop" in listed.text and f"user:{ALICE}" in listed.text
    # The same form again (a reload of the answer re-posts it): no second key, no secret.
    again = await site.http.post("/admin/keys/add", data=form, headers=admin)
    assert again.status_code == 409
    assert "mfk_" not in again.text and "already" in again.text
    assert len(await site.keys.list(owner=f"user:{ALICE}")) == 1


async def test_a_key_is_revoked_after_confirming_and_a_service_account_has_keys(site: Site) -> None:
    admin = as_user(site, ADMIN)
    page = (await site.http.get("/admin/keys", headers=admin)).text
    made = await site.http.post(
        "/admin/service-accounts/add",
        data={**form_of(page, "/admin/service-accounts/add"), "id": "ci-bot", "description": "CI", "teams": "eng"},
        headers=admin,
    )
    assert made.status_code == 303
    page = (await site.http.get("/admin/keys", headers=admin)).text
    assert "sa:ci-bot" in page and "CI" in page
    dup = await site.http.post(
        "/admin/service-accounts/add",
        data={**form_of(page, "/admin/service-accounts/add"), "id": "ci-bot"},
        headers=admin,
    )
    assert dup.status_code == 409 and 'value="ci-bot"' in dup.text

    form = {
        **form_of(page, "/admin/keys/add"),
        "owner": "sa:ci-bot",
        "name": "deploy",
        "expires": "",
        "servers": "notes",
    }
    created = await site.http.post("/admin/keys/add", data=form, headers=admin)
    assert created.status_code == 201 and 'value="mfs_' in created.text
    key = (await site.keys.list(owner="sa:ci-bot"))[0]
    assert key.servers == ("notes",)

    confirm = await site.http.get(f"/admin/keys/{key.id}", headers=admin)
    assert confirm.status_code == 200 and "refused from its very next request" in confirm.text
    revoked = await site.http.post(
        f"/admin/keys/{key.id}/revoke", data=form_of(confirm.text, f"/admin/keys/{key.id}/revoke"), headers=admin
    )
    assert revoked.status_code == 303
    assert (await site.keys.get(key.id)) is not None and (await site.keys.get(key.id)).revoked_at is not None  # type: ignore[union-attr]
    listed = (await site.http.get("/admin/keys?done=revoked", headers=admin)).text
    assert "The key is revoked." in listed and "revoked" in listed

    bad = await site.http.post("/admin/keys/add", data={**form, "owner": "sa:nobody", "once": "x1"}, headers=admin)
    assert bad.status_code == 404 and "no service account &#39;nobody&#39;" in bad.text

    confirm_sa = await site.http.get("/admin/service-accounts/ci-bot", headers=admin)
    assert confirm_sa.status_code == 200
    deleted = await site.http.post(
        "/admin/service-accounts/ci-bot/delete",
        data=form_of(confirm_sa.text, "/admin/service-accounts/ci-bot/delete"),
        headers=admin,
    )
    assert deleted.status_code == 303
    assert "sa:ci-bot" not in (await site.http.get("/admin/keys", headers=admin)).text.split('id="service-accounts"')[1]
    missing = await site.http.get("/admin/keys/ffffffffffff", headers=admin)
    assert missing.status_code == 404


async def _rows(site: Site, n: int) -> None:
    """`n` audit rows a second apart, newest last; every fifth one shares its time with the next (ties)."""
    start = time.time() - n - 10
    rows = []
    for i in range(n):
        rows.append(
            {
                "at": start + (i - 1 if i % 5 == 4 else i),
                "request_id": f"r{i}",
                "principal": f"user:{ALICE}" if i % 2 else f"user:{PERSON}",
                "credential": "api_key:abc",
                "server": "notes" if i % 3 else "files",
                "member": "notes",
                "upstream": "notes",
                "method": "tools/call",
                "target": f"notes__read_{i}" if i % 4 else "notes__write",
                "outcome": "ok" if i % 7 else "denied",
                "detail": None if i % 7 else "not granted",
                "latency_ms": 1.5,
                "arguments": {"path": "[redacted]"} if i == 0 else None,
            }
        )
    async with site.engine.begin() as conn:
        await conn.execute(insert(audit_events), rows)


def _ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'href="/admin/audit/(\d+)"', page)]


async def test_the_audit_viewer_pages_newest_first_by_keyset_without_gaps(site: Site) -> None:
    await _rows(site, 123)
    admin = as_user(site, ADMIN)
    seen: list[int] = []
    url = "/admin/audit"
    pages: list[str] = []
    for _ in range(5):
        page = await site.http.get(url, headers=admin)
        assert page.status_code == 200
        pages.append(page.text)
        seen.extend(_ids(page.text))
        found = re.search(r'href="(/admin/audit\?[^"]*before=[^"]+)" rel="next"', page.text)
        if found is None:
            break
        url = found.group(1).replace("&amp;", "&")
    assert [len(_ids(p)) for p in pages] == [50, 50, 23]
    assert len(seen) == 123 and len(set(seen)) == 123  # every row once, ties at the same time included
    async with site.engine.connect() as conn:
        ordered = (
            (await conn.execute(select(audit_events.c.id).order_by(audit_events.c.at.desc(), audit_events.c.id.desc())))
            .scalars()
            .all()
        )
    assert seen == list(ordered)
    assert "Newest rows" in pages[-1] and "Newest rows" not in pages[0]


async def test_the_audit_viewer_filters_and_shows_one_row_in_full(site: Site) -> None:
    await _rows(site, 40)
    admin = as_user(site, ADMIN)

    async def count(**params: str) -> int:
        page = await site.http.get("/admin/audit", params=params, headers=admin)
        assert page.status_code == 200, page.text
        return len(_ids(page.text))

    async with site.engine.connect() as conn:

        def where(*cond: Any) -> Any:
            return conn.execute(select(func.count()).select_from(audit_events).where(*cond))

        c = audit_events.c
        alice = (await where(c.principal == f"user:{ALICE}")).scalar_one()
        files = (await where(c.server == "files")).scalar_one()
        writes = (await where(c.target == "notes__write")).scalar_one()
        denied = (await where(c.outcome == "denied")).scalar_one()
        both = (await where(c.principal == f"user:{ALICE}", c.server == "notes", c.outcome == "ok")).scalar_one()
    assert await count(user=ALICE) == alice
    assert await count(server="files") == files
    assert await count(tool="notes__write") == writes
    assert await count(tool="notes__read_1*") == 9  # 1, 10..19 but 12 and 16 (notes__write)
    assert await count(outcome="denied") == denied
    assert await count(user=ALICE, server="notes", outcome="ok") == both
    assert await count(since="20s") < 40 and await count(since="1h") == 40
    assert await count(until="1h") == 0
    bad = await site.http.get("/admin/audit", params={"since": "yesterday"}, headers=admin)
    assert bad.status_code == 400 and "neither a duration" in bad.text and 'value="yesterday"' in bad.text

    page = (await site.http.get("/admin/audit", params={"outcome": "denied"}, headers=admin)).text
    first = _ids(page)[-1]
    detail = await site.http.get(f"/admin/audit/{first}", headers=admin)
    assert detail.status_code == 200
    for column in (
        "Request id",
        "Principal",
        "Credential",
        "Server",
        "Member",
        "Upstream",
        "Method",
        "Target",
        "Outcome",
        "Detail",
        "Latency (ms)",
    ):
        assert f"<dt>{column}</dt>" in detail.text
    assert "not granted" in detail.text and "api_key:abc" in detail.text
    async with site.engine.connect() as conn:
        with_args = (
            await conn.execute(select(audit_events.c.id).where(audit_events.c.request_id == "r0"))
        ).scalar_one()
    shown = await site.http.get(f"/admin/audit/{with_args}", headers=admin)
    assert "[redacted]" in shown.text
    for missing in ("/admin/audit/999999", "/admin/audit/nope", "/admin/audit/99999999999999999999999"):
        assert (await site.http.get(missing, headers=admin)).status_code == 404


async def test_the_consoles_own_changes_are_audit_rows(site: Site) -> None:
    admin = as_user(site, ADMIN)
    page = (await site.http.get("/admin/keys", headers=admin)).text
    await site.http.post(
        "/admin/service-accounts/add",
        data={**form_of(page, "/admin/service-accounts/add"), "id": "audited"},
        headers=admin,
    )
    await site.audit_log.flush()
    rows = await site.http.get("/admin/audit", params={"server": "admin", "user": ADMIN}, headers=admin)
    assert "console POST" in rows.text and "/admin/api/service-accounts" in rows.text


def _connection(user: str, upstream: str) -> Connection:
    now = time.time()
    return Connection(
        user=user,
        upstream=upstream,
        access_token="at-SECRET-123",
        refresh_token="rt-SECRET-456",
        expires_at=now + 3600,
        scopes=["repo", "read:org"],
        token_type="Bearer",
        issuer="https://issuer.example",
        client_id="client-1",
        created_at=now - 60,
        updated_at=now - 30,
    )


async def test_connections_are_listed_without_tokens_and_revoked(site: Site) -> None:
    await site.vault.put(_connection(f"user:{ALICE}", "notes"))
    await site.vault.put(_connection(f"user:{PERSON}", "files"))
    admin = as_user(site, ADMIN)
    page = await site.http.get("/admin/connections", headers=admin)
    assert page.status_code == 200
    assert f"user:{ALICE}" in page.text and "repo read:org" in page.text and f"user:{PERSON}" in page.text
    assert "SECRET" not in page.text
    only = await site.http.get("/admin/connections", params={"user": ALICE}, headers=admin)
    assert f"user:{PERSON}" not in only.text

    forms = re.findall(r'action="/admin/connections/revoke">(.*?)</form>', page.text, re.S)
    fields = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', next(f for f in forms if ALICE in f)))
    revoked = await site.http.post("/admin/connections/revoke", data=fields, headers=admin)
    assert revoked.status_code == 303
    after = await site.http.get(revoked.headers["location"], headers=admin)
    assert f"Revoked the connection of user:{ALICE} to notes" in after.text
    assert await site.vault.get(f"user:{ALICE}", "notes") is None
    assert await site.vault.get(f"user:{PERSON}", "files") is not None
    again = await site.http.post("/admin/connections/revoke", data=fields, headers=admin)
    assert again.status_code == 404 and "has no connection" in again.text


async def test_the_admin_api_lists_and_revokes_connections(site: Site, tmp_path: Path) -> None:
    await site.vault.put(_connection(f"user:{ALICE}", "notes"))
    with pytest.raises(NotFound):  # a gateway built without the OAuth flows says so
        await Operations(site.engine, load_config(tmp_path / "manifold.yaml")).list_connections()
    status, rows = await site.admin.route("GET", ["connections"], {"user": ALICE}, {})
    assert status == 200 and rows[0]["user"] == f"user:{ALICE}" and rows[0]["scopes"] == ["repo", "read:org"]
    assert "access_token" not in rows[0] and "SECRET" not in str(rows)
    status, done = await site.admin.route("DELETE", ["connections"], {"user": ALICE, "upstream": "notes"}, {})
    assert done == {"user": f"user:{ALICE}", "upstream": "notes", "revoked": True, "asked_authorization_server": False}
    with pytest.raises(NotFound):
        await site.admin.route("DELETE", ["connections"], {"user": ALICE, "upstream": "notes"}, {})
