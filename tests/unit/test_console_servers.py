"""The console's virtual server pages (console/servers.py, console/preview.py) in process, over a real SQLite
file and the admin API's own operations; the upstreams are the list cache over a fake pool that answers
tools/list from a table (tests/unit/test_view.py `FakePool`).

The editor used in Chromium against `manifold serve` and real upstreams is tests/browser/test_console_servers.py.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest

from manifold.admin.api import AdminApi
from manifold.admin.catalog import CatalogOperations, Kind
from manifold.admin.ops import Operations
from manifold.audit import AuditLog
from manifold.audit.unauthorized import UnauthorizedAudit
from manifold.catalog.lists import UpstreamLists
from manifold.catalog.view import _matcher  # pyright: ignore[reportPrivateUsage]
from manifold.config.loader import load_config
from manifold.config.models import VirtualServerConfig
from manifold.config.problems import Problem
from manifold.console.app import ConsoleApp
from manifold.console.frame import Services
from manifold.console.preview import (
    MAX_PREVIEW_ROWS,
    Draft,
    Filters,
    Listed,
    body_of,
    matching,
    parse_form,
    place,
    preview,
    select,
)
from manifold.identity.api_keys import KeyRepository, OwnerKind
from manifold.identity.authenticator import Authenticator
from manifold.identity.directory import Directory
from manifold.naming import expose_name
from manifold.outbound.oauth.vault import Vault
from manifold.principal import Principal
from manifold.security.crypto import Cipher, generate_key
from manifold.store.db import default_url, open_database
from manifold.upstream.credential import SHARED, Outbound
from manifold.web import csrf
from manifold.web.session import SessionCookies, session_keys
from tests.unit.test_console import ADMIN, BASE, PERSON, Health, NoReload
from tests.unit.test_view import FakePool, tools


async def shared_credential(principal: Principal, upstream_id: str) -> Outbound:
    return SHARED


pytestmark = pytest.mark.anyio

LONG = "t" * 70


@dataclass
class Editor:
    http: httpx2.AsyncClient
    cookies: SessionCookies
    tokens: dict[str, str]
    catalog_ops: CatalogOperations
    pool: FakePool

    def who(self, user: str = ADMIN) -> dict[str, str]:
        return {"cookie": f"{self.cookies.session_name}={self.tokens[user]}"}

    async def form(self, path: str) -> dict[str, list[str]]:
        """The form a page gives, as the browser would post it untouched (checked boxes, every field)."""
        page = await self.http.get(path, headers=self.who())
        assert page.status_code == 200, page.text
        return form_of(page.text)

    async def post(self, path: str, fields: dict[str, list[str]], user: str = ADMIN) -> httpx2.Response:
        body = urlencode([(k, v) for k, values in fields.items() for v in values])
        headers = {"content-type": "application/x-www-form-urlencoded", **self.who(user)}
        return await self.http.post(path, content=body, headers=headers)


def form_of(html: str) -> dict[str, list[str]]:
    """The fields of the editor's form: inputs with their values (checkboxes only when checked), textareas,
    and each select's selected option."""
    form = html[html.index('<form id="server-form"') : html.index("</form>", html.index('<form id="server-form"'))]
    fields: dict[str, list[str]] = {}
    for tag in re.findall(r"<input [^>]*>", form):
        name = re.search(r'name="([^"]*)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name is None or ('type="checkbox"' in tag and " checked" not in tag):
            continue
        fields.setdefault(unescape(name.group(1)), []).append(unescape(value.group(1)) if value else "")
    for name, text in re.findall(r'<textarea [^>]*name="([^"]*)"[^>]*>(.*?)</textarea>', form, re.S):
        fields.setdefault(unescape(name), []).append(unescape(text))
    for name, options in re.findall(r'<select [^>]*name="([^"]*)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected', options)
        fields[name] = [chosen.group(1) if chosen else ""]
    return fields


def unescape(text: str) -> str:
    return (
        text.replace("&#34;", '"').replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )


@pytest.fixture
async def editor(tmp_path: Path) -> AsyncIterator[Editor]:
    (tmp_path / "virtual_servers").mkdir()
    (tmp_path / "virtual_servers" / "from-file.yaml").write_text("members:\n  - upstream: notes\n")
    pool = FakePool(
        lists={
            "notes": {
                "tools": [
                    {"name": "search", "description": "Find notes", "annotations": {"readOnlyHint": True}},
                    {"name": "add_note", "annotations": {"readOnlyHint": False, "destructiveHint": False}},
                    {"name": "drop_all", "annotations": {"destructiveHint": True}},
                ]
            },
            "tasks": {"tools": [*tools("search", "close"), {"name": LONG}]},
        },
        down={"broken": "connection refused"},
    )
    async with console_over(tmp_path, ["notes", "tasks", "broken"], pool) as made:
        yield made


@asynccontextmanager
async def console_over(tmp_path: Path, upstreams: list[str], pool: FakePool) -> AsyncIterator[Editor]:
    """The console over a real SQLite file and the admin API, with these (http) upstreams listed by `pool`."""
    declared = "".join(f"  {u}:\n    transport: http\n    url: http://127.0.0.1:9/mcp\n" for u in upstreams)
    (tmp_path / "manifold.yaml").write_text(
        f"gateway:\n  state_dir: {tmp_path / 'state'}\n"
        f"identity:\n  admins: ['user:{ADMIN}']\n"
        f"users:\n  {ADMIN}: {{}}\n  {PERSON}: {{}}\n"
        f"upstreams:\n{declared}"
    )
    config = load_config(tmp_path / "manifold.yaml")
    engine = await open_database(default_url(tmp_path))
    cipher = Cipher([generate_key()], source="test")
    keys = KeyRepository(engine)
    directory = Directory(engine, config.gateway)
    await directory.load()
    cookies = SessionCookies(session_keys(cipher), secure=False)

    async def sync() -> None:
        return None

    catalog_ops = CatalogOperations(engine, config, env={})
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
            lists=UpstreamLists(pool, 60),
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
        yield Editor(http, cookies, tokens, catalog_ops, pool)
    await audit_log.aclose()
    await engine.dispose()


async def saved(editor: Editor) -> list[str]:
    return [e["id"] for e in await editor.catalog_ops.list(Kind.VSERVER) if e["source"] == "api"]


# ---- the pages -----------------------------------------------------------------------------------------------


async def test_the_list_shows_file_servers_read_only_with_url_members_and_grants(editor: Editor) -> None:
    page = await editor.http.get("/admin/servers", headers=editor.who())
    assert page.status_code == 200
    assert "virtual_servers/from-file.yaml (read-only)" in page.text
    assert f"<code>{BASE}/mcp/from-file</code>" in page.text
    assert 'href="/admin/grants?server=from-file"' in page.text
    shown = await editor.http.get("/admin/servers/from-file", headers=editor.who())
    assert shown.status_code == 200 and "read-only here; change it there" in shown.text
    assert "upstream: notes" in shown.text


async def test_picking_renaming_and_saving_serves_exactly_those_names(editor: Editor) -> None:
    fields = await editor.form("/admin/servers/new")
    assert "broken" in fields["u"] and fields["namespace"] == ["1"]
    page = await editor.http.get("/admin/servers/new", headers=editor.who())
    assert "Upstream <strong>broken</strong> cannot list its tools: " in page.text and "connection refused" in page.text
    fields |= {"id": ["mixed"], "pick": ["notes/search", "tasks/search", "tasks/close"]}
    shown = await editor.post("/admin/servers/new", fields)  # the preview (htmx posts this on every change)
    assert shown.status_code == 200
    assert "<code>notes__search</code>" in shown.text and "<code>tasks__close</code>" in shown.text
    fields = form_of(shown.text) | {"alias.tasks/close": ["finish"], "action": ["save"]}
    done = await editor.post("/admin/servers/new", fields)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/admin/servers/mixed/clients?saved=1"
    body = (await editor.catalog_ops.get(Kind.VSERVER, "mixed"))["body"]
    assert body == {
        "id": "mixed",
        "members": [
            {"upstream": "notes", "tools": ["search"]},
            {"upstream": "tasks", "tools": ["search", "close"], "aliases": {"close": "finish"}},
        ],
    }
    clients = await editor.http.get(done.headers["location"], headers=editor.who())
    assert clients.status_code == 200 and "mixed is served now" in clients.text
    for label in ("VS Code", "Cursor", "Claude Code", "Claude Desktop", "Python SDK"):
        assert label in clients.text
    assert clients.text.count(f"{BASE}/mcp/mixed") >= 6

    # Editing it again: the picks come back checked, the rename in place; saving replaces it (PUT).
    fields = await editor.form("/admin/servers/mixed")
    assert sorted(fields["pick"]) == ["notes/search", "tasks/close", "tasks/search"]
    assert fields["alias.tasks/close"] == ["finish"]
    fields |= {"pick": ["tasks/close"], "action": ["save"]}
    done = await editor.post("/admin/servers/mixed", fields)
    assert done.status_code == 303, done.text
    body = (await editor.catalog_ops.get(Kind.VSERVER, "mixed"))["body"]
    assert body["members"] == [{"upstream": "tasks", "tools": ["close"], "aliases": {"close": "finish"}}]


async def test_the_preview_marks_collisions_and_shortened_names_before_saving(editor: Editor) -> None:
    fields = await editor.form("/admin/servers/new")
    fields |= {"id": ["flat"], "namespace": [], "pick": ["notes/search", "tasks/search", f"tasks/{LONG}"]}
    shown = await editor.post("/admin/servers/new", fields)
    assert shown.status_code == 200
    assert shown.text.count('<span class="badge badge-broken">collision</span>') == 2
    assert "tools &#39;search&#39; from member &#39;tasks&#39;" in shown.text  # the gateway's own words
    assert "1</strong> tool exposed" in shown.text
    assert f"shortened from <code>{LONG}</code>" in shown.text
    assert await saved(editor) == []  # a preview saves nothing


async def test_select_all_matching_follows_the_filter(editor: Editor) -> None:
    fields = await editor.form("/admin/servers/new")
    fields |= {"in": ["notes"], "ann": ["nd"], "action": ["select"]}
    shown = await editor.post("/admin/servers/new", fields)
    picked = form_of(shown.text)["pick"]
    assert sorted(picked) == ["notes/add_note", "notes/search"]  # drop_all is destructive
    fields = form_of(shown.text) | {"in": [""], "ann": [""], "q": ["close"], "action": ["filter"]}
    shown = await editor.post("/admin/servers/new", fields)
    assert sorted(form_of(shown.text)["pick"]) == ["notes/add_note", "notes/search"]  # kept though not shown
    assert "1 tool matches" in shown.text


async def test_a_bad_glob_is_shown_next_to_its_field_and_nothing_is_saved(editor: Editor) -> None:
    fields = await editor.form("/admin/servers/new")
    fields |= {"id": ["globs"], "globs.notes": ["search\nadd_[note"], "action": ["save"]}
    refused = await editor.post("/admin/servers/new", fields)
    assert refused.status_code == 400
    error = re.search(
        r'<textarea id="(globs-[0-9a-f]+)" name="globs.notes"[^>]*aria-describedby="([^"]+)"', refused.text
    )
    assert error is not None, refused.text
    assert "opens a &#39;[&#39; that is never closed" in refused.text
    assert "add_[note" in refused.text  # what was typed is kept
    assert await saved(editor) == []


async def test_a_duplicate_member_id_is_shown_next_to_the_member_id_and_nothing_is_saved(editor: Editor) -> None:
    fields = await editor.form("/admin/servers/new")
    fields |= {"id": ["twice"], "pick": ["notes/search", "tasks/close"], "mid.tasks": ["notes"], "action": ["save"]}
    refused = await editor.post("/admin/servers/new", fields)
    assert refused.status_code == 400
    at_field = re.search(
        r'name="mid.tasks" value="notes"[^>]*aria-invalid="true"[^>]*>\s*<p class="field-error"[^>]*>([^<]*)<',
        refused.text,
    )
    assert at_field is not None, refused.text
    assert "member id &#39;notes&#39; appears twice" in at_field.group(1)
    assert await saved(editor) == []


async def test_a_file_server_cannot_be_saved_over(editor: Editor) -> None:
    fields = await editor.form("/admin/servers/new")
    session = editor.cookies.session({editor.cookies.session_name: editor.tokens[ADMIN]})
    assert session is not None
    fields |= {
        "csrf": [csrf.token(editor.cookies.signer, session.sid, "console:update:from-file")],
        "pick": ["tasks/close"],
        "action": ["save"],
    }
    refused = await editor.post("/admin/servers/from-file", fields)
    assert refused.status_code == 409
    assert "declared in virtual_servers/from-file.yaml; change it there" in refused.text
    body = (await editor.catalog_ops.get(Kind.VSERVER, "from-file"))["body"]
    assert body["members"] == [
        {
            "upstream": "notes",
            "tools": ["*"],
            "hide": [],
            "aliases": {},
            "descriptions": {},
            "resources": True,
            "prompts": True,
        }
    ]


async def test_not_an_admin_and_no_csrf_token_are_refused_on_every_url(editor: Editor) -> None:
    gets = ["/admin/servers", "/admin/servers/new", "/admin/servers/from-file", "/admin/servers/from-file/clients"]
    for path in gets:
        answer = await editor.http.get(path, headers=editor.who(PERSON))
        assert answer.status_code == 403, path
    fields = await editor.form("/admin/servers/new")
    fields |= {"id": ["nope"], "pick": ["notes/search"], "action": ["save"]}
    for path in ("/admin/servers/new", "/admin/servers/nope", "/admin/servers/nope/delete"):
        assert (await editor.post(path, fields, user=PERSON)).status_code == 403, path
        without = {k: v for k, v in fields.items() if k != "csrf"}
        answer = await editor.post(path, without)
        assert answer.status_code == 403 and "not one this console gave you" in answer.text, path
    assert await saved(editor) == []


# ---- the preview's model -------------------------------------------------------------------------------------


def test_the_preview_is_the_gateways_own_naming() -> None:
    config = VirtualServerConfig.model_validate(
        {
            "members": [
                {"upstream": "a", "tools": ["x", "y"], "aliases": {"y": "z"}},
                {"upstream": "b", "id": "bb", "tools": ["*"], "hide": ["secret"], "descriptions": {"q": "mine"}},
            ]
        }
    )
    listed = {
        "a": Listed("a", [{"name": "x"}, {"name": "y"}, {"name": "w"}]),
        "b": Listed("b", [{"name": "q", "description": "theirs"}, {"name": "secret"}, {"name": "a.b"}]),
    }
    shown = preview("s", config, listed, UpstreamLists(FakePool(), 60), "__")
    names = [r.exposed for r in shown.rows]
    assert names == sorted(["a__x", "a__z", "bb__q", expose_name("bb", "a.b")])
    row = {r.exposed: r for r in shown.rows}
    assert row["bb__q"].description == "mine" and row["bb__q"].override == "mine"
    assert row[expose_name("bb", "a.b")].shortened_from == "bb__a.b"
    assert not shown.collisions and shown.exposed == 4


def test_a_collision_marks_both_sources_and_a_missing_list_says_why() -> None:
    config = VirtualServerConfig.model_validate(
        {"namespace": False, "members": [{"upstream": "a"}, {"upstream": "b"}, {"upstream": "c"}]}
    )
    listed = {
        "a": Listed("a", [{"name": "search"}, {"name": "only_a"}]),
        "b": Listed("b", [{"name": "search"}]),
        "c": Listed("c", [], "connection refused"),
    }
    shown = preview("s", config, listed, UpstreamLists(FakePool(), 60), "__")
    assert [(r.exposed, r.member_id, r.collides) for r in shown.rows] == [
        ("search", "a", True),  # collisions first
        ("search", "b", True),
        ("only_a", "a", False),
    ]
    assert shown.exposed == 1 and len(shown.collisions) == 1
    assert shown.failures == {"c": "connection refused"}


def test_the_form_becomes_the_file_format() -> None:
    fields = {
        "id": ["s"],
        "namespace": [],
        "u": ["a", "b", "zzz"],
        "mid.a": [" aa "],
        "globs.a": ["get_*\n\nget_*\n"],
        "hide.a": ["get_secret"],
        "res.a": ["1"],
        "pick": ["a/x", "b/y", "zzz/q", "bad"],
        "alias.a/x": ["renamed"],
        "alias.a/unpicked": ["gone"],
        "desc.b/y": ["Why"],
        "action": ["save"],
    }
    draft, filters, action = parse_form(fields, ["a", "b"])
    assert action == "save" and filters == Filters()
    assert body_of(draft) == {
        "id": "s",
        "namespace": False,
        "members": [
            {
                "upstream": "a",
                "id": "aa",
                "tools": ["x", "get_*"],
                "hide": ["get_secret"],
                "aliases": {"x": "renamed"},
                "prompts": False,
            },
            {"upstream": "b", "tools": ["y"], "descriptions": {"y": "Why"}, "resources": False, "prompts": False},
        ],
    }
    assert body_of(Draft(server_id="e"))["members"] == []


def test_filters_by_text_upstream_and_annotation() -> None:
    listed = [
        Listed("a", [{"name": "read", "annotations": {"readOnlyHint": True}}, {"name": "wipe"}]),
        Listed("b", [{"name": "keep", "description": "READ it", "annotations": {"destructiveHint": False}}]),
    ]
    assert [t["name"] for _, t in matching(listed, Filters(q="read"))] == ["read", "keep"]
    assert [t["name"] for _, t in matching(listed, Filters(ann="ro"))] == ["read"]
    assert [t["name"] for _, t in matching(listed, Filters(ann="nd"))] == ["read", "keep"]
    assert [t["name"] for _, t in matching(listed, Filters(upstream="a"))] == ["read", "wipe"]


def test_problems_are_placed_next_to_their_fields() -> None:
    body: dict[str, Any] = {"id": "s", "members": [{"upstream": "a", "tools": ["x"]}, {"upstream": "b", "id": "a"}]}

    def at(path: str, reason: str = "bad") -> str:
        return place(Problem("request body", path, reason), body)

    assert at("id") == "id"
    assert at("members[1].id") == "mid.b"
    assert at("members[0].tools[0]") == "globs.a"
    assert at("members[1].hide[2]") == "hide.b"
    assert at("members[0].aliases.x") == "alias.a/x"
    assert at('members[0].descriptions["a b"]') == "desc.a/a b"
    assert at("members", "member id 'a' appears twice") == "mid.b"
    assert at("members[9].id") == "" and at("whatever") == ""


async def test_the_editor_works_at_50_upstreams_of_100_tools(tmp_path: Path) -> None:
    """Issue 13's size: 50 upstreams x 100 tools, 500 of them picked. The editor — the heaviest page, every
    upstream's tools to pick from — lists them all, previews and saves the 500, and opens the saved server
    with them. How long it takes is measured by bench/console_pages.py, not here."""
    names = [f"up{i:02d}" for i in range(50)]
    listing = [
        {
            "name": f"tool_{j}",
            "description": f"Does thing {j} with some words of description",
            "annotations": {"readOnlyHint": j % 2 == 0},
            "inputSchema": {"type": "object", "properties": {"a": {"type": "string"}}},
        }
        for j in range(100)
    ]
    pool = FakePool(lists={u: {"tools": listing} for u in names})
    async with console_over(tmp_path, names, pool) as made:
        fields = await made.form("/admin/servers/new")  # fetches every list once
        fields |= {"id": ["big"], "pick": [f"{u}/tool_{j}" for u in names for j in range(0, 100, 10)]}
        empty = await made.http.get("/admin/servers/new", headers=made.who())
        assert empty.status_code == 200 and "up49" in empty.text and "tool_99" in empty.text
        preview = await made.post("/admin/servers/new", fields)
        assert preview.status_code == 200 and "<strong>500</strong> tools picked" in preview.text, preview.text[:300]
        assert (await made.post("/admin/servers/new", fields | {"action": ["save"]})).status_code == 303
        saved = await made.http.get("/admin/servers/big", headers=made.who())
        assert saved.status_code == 200 and "<strong>500</strong> tools picked" in saved.text
        assert (await made.http.get("/admin/servers", headers=made.who())).status_code == 200


def test_the_views_pattern_matcher_is_fnmatch() -> None:
    """catalog/view.py matches a member's patterns with one set and one regex (what keeps the preview and the
    gateway's list building fast); it must select exactly what fnmatch.fnmatchcase selects."""
    patterns = (
        "a*b*c",
        "*x*y*",
        "[!a]b",
        "q?",
        "exact",
        "a.b",
        "[]]x",
        "[!]]y",
        "p*",
        *(f"*{i}*{i}*" for i in range(50)),
    )
    random = Random(7)
    letters = "abcxyq.[]!p0123456789"
    for _ in range(5000):
        name = "".join(random.choice(letters) for _ in range(random.randint(0, 7)))
        expected = any(fnmatch.fnmatchcase(name, p) for p in patterns)
        assert _matcher(patterns)(name) == expected, name
    assert _matcher(("only", "exact"))("exact") and not _matcher(())("x")


def test_a_large_selection_stays_a_readable_form() -> None:
    """Every picked tool and every preview row is a form field, and a form has at most 5000 (console/frame.py):
    select-all picks at most MAX_PICKS and says how many it left, and the preview shows MAX_PREVIEW_ROWS rows
    with the collisions first, counting the rest."""
    draft = Draft()
    found = [("a", {"name": f"t{i}"}) for i in range(5)]
    assert select(draft, found, on=True, limit=3) == 2
    assert draft.members["a"].picks == ["t0", "t1", "t2"]
    assert select(draft, found[:1], on=False) == 0 and draft.members["a"].picks == ["t1", "t2"]

    config = VirtualServerConfig.model_validate({"namespace": False, "members": [{"upstream": "a"}, {"upstream": "b"}]})
    many = [{"name": f"tool_{i:03d}"} for i in range(MAX_PREVIEW_ROWS + 50)]
    listed = {"a": Listed("a", many), "b": Listed("b", [{"name": "zzz"}, {"name": "tool_999"}, {"name": "zzz2"}])}
    listed["b"].tools.append({"name": "tool_349"})  # the last of a's: collides
    shown = preview("s", config, listed, UpstreamLists(FakePool(), 60), "__")
    assert len(shown.rows) == MAX_PREVIEW_ROWS
    assert [r.exposed for r in shown.rows[:2]] == ["tool_349", "tool_349"] and shown.rows[0].collides
    assert shown.more == MAX_PREVIEW_ROWS + 50 + 4 - MAX_PREVIEW_ROWS
    assert shown.exposed == MAX_PREVIEW_ROWS + 50 - 1 + 3


async def test_a_console_server_is_removed_and_a_file_server_is_not(editor: Editor) -> None:
    fields = await editor.form("/admin/servers/new")
    fields |= {"id": ["gone"], "pick": ["tasks/close"], "action": ["save"]}
    assert (await editor.post("/admin/servers/new", fields)).status_code == 303
    page = await editor.http.get("/admin/servers/gone", headers=editor.who())
    token = re.search(
        r'action="/admin/servers/gone/delete"><input type="hidden" name="csrf" value="([^"]+)"', page.text
    )
    assert token is not None
    removed = await editor.post("/admin/servers/gone/delete", {"csrf": [token.group(1)]})
    assert removed.status_code == 303 and removed.headers["location"] == "/admin/servers"
    assert await saved(editor) == []
    session = editor.cookies.session({editor.cookies.session_name: editor.tokens[ADMIN]})
    assert session is not None
    own = csrf.token(editor.cookies.signer, session.sid, "console:delete:from-file")
    refused = await editor.post("/admin/servers/from-file/delete", {"csrf": [own]})
    assert refused.status_code == 409 and "virtual_servers/from-file.yaml" in refused.text


async def test_the_preview_shows_references_as_written_not_their_values(editor: Editor) -> None:
    editor.catalog_ops.env = {"NOTE_TEXT": "the-resolved-value"}
    fields = await editor.form("/admin/servers/new")
    fields |= {"id": ["refs"], "pick": ["notes/search"], "desc.notes/search": ["${NOTE_TEXT}"]}
    shown = await editor.post("/admin/servers/new", fields)
    assert shown.status_code == 200
    assert 'value="${NOTE_TEXT}"' in shown.text
    assert "the-resolved-value" not in shown.text


async def test_an_id_already_taken_is_said_and_nothing_is_replaced(editor: Editor) -> None:
    fields = await editor.form("/admin/servers/new")
    fields |= {"id": ["from-file"], "pick": ["tasks/close"], "action": ["save"]}
    refused = await editor.post("/admin/servers/new", fields)
    assert refused.status_code == 400
    assert "<p>Not saved.</p>" in refused.text
    assert "already exists (declared in virtual_servers/from-file.yaml)" in refused.text
    body = (await editor.catalog_ops.get(Kind.VSERVER, "from-file"))["body"]
    assert body["members"][0]["upstream"] == "notes"


async def test_a_server_with_one_upstream_in_two_members_is_shown_as_yaml(editor: Editor) -> None:
    body = {"id": "twin", "members": [{"upstream": "tasks"}, {"upstream": "tasks", "id": "again"}]}
    await editor.catalog_ops.create(Kind.VSERVER, body)
    page = await editor.http.get("/admin/servers/twin", headers=editor.who())
    assert page.status_code == 200
    assert "the editor cannot show it (upstream &#39;tasks&#39; is in two members)" in page.text
    assert "PUT /admin/api/virtual-servers/twin" in page.text and "id: again" in page.text
