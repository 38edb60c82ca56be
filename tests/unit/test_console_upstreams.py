"""The console's upstream pages in process, over a real SQLite file (the fixture of test_console.py): add,
edit and remove an upstream through the form (the admin API's own route underneath), problems shown next to
the fields with what was typed kept, secrets write-only, file upstreams read-only, the YAML export, the
tool pages' paging, and the checks (403 for a non-admin, CSRF) on every new URL and form."""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import unescape
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import select

from manifold.admin.catalog import CatalogOperations, Kind
from manifold.config.loader import load_config
from manifold.console.frame import Frame
from manifold.console.views import UpstreamForm, body_of_form, form_of, matching, paged, posted_form
from manifold.store.db import catalog_objects, default_url, open_database
from manifold.web import csrf
from tests.unit.test_console import ADMIN, PERSON, Site, as_user, site

pytestmark = pytest.mark.anyio
FIXTURES = (site,)  # test_console.py's `site`: a console over a real SQLite file, one file upstream 'notes'

SECRET = "s3cret-bearer-value"


def token(site: Site, user: str, action: str) -> str:
    """The CSRF token of a form: `action` is "<handler>" or "<handler>:<upstream id>"."""
    session = site.cookies.session({site.cookies.session_name: site.tokens[user]})
    assert session is not None
    handler, _, object_id = action.partition(":")
    return csrf.token(site.cookies.signer, session.sid, Frame.action(handler, [object_id] if object_id else []))


async def post(site: Site, path: str, action: str, fields: Mapping[str, str | list[str]]) -> httpx2.Response:
    data = {**fields, "csrf": token(site, ADMIN, action)}
    return await site.http.post(path, data=data, headers=as_user(site, ADMIN))


async def revealed(site: Site, body: dict[str, object] | None) -> dict[str, object] | None:
    """`body` with its `secret:` names replaced by the values the secret store holds for them."""
    assert site.secrets is not None
    await site.secrets.load()
    store = site.secrets

    def walk(value: object) -> object:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, str) and value.startswith("secret:catalog."):
            return store.lookup(value[len("secret:") :])
        return value

    return None if body is None else walk(body)  # type: ignore[return-value]


async def stored(tmp_path: Path, upstream_id: str) -> dict[str, object] | None:
    engine = await open_database(default_url(tmp_path))
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    select(catalog_objects.c.body).where(
                        catalog_objects.c.kind == "upstream", catalog_objects.c.id == upstream_id
                    )
                )
            ).first()
        return dict(row[0]) if row is not None else None
    finally:
        await engine.dispose()


HTTP_FORM: dict[str, str | list[str]] = {
    "id": "crm",
    "transport": "http",
    "url": "http://127.0.0.1:9/crm",
    "header_name_1": "X-Team",
    "header_value_1": "sales",
    "auth_mode": "static",
    "static_bearer": SECRET,
    "required": "1",
}


async def test_an_admin_adds_an_upstream_through_the_form(site: Site, tmp_path: Path) -> None:
    form = await site.http.get("/admin/upstreams/new", headers=as_user(site, ADMIN))
    assert form.status_code == 200
    assert 'name="static_bearer"' in form.text and 'type="password"' in form.text
    added = await post(site, "/admin/upstreams/new", "create_upstream", HTTP_FORM)
    assert added.status_code == 303
    assert added.headers["location"] == "/admin/upstreams/crm/tools"
    assert await revealed(site, await stored(tmp_path, "crm")) == {
        "transport": "http",
        "url": "http://127.0.0.1:9/crm",
        "headers": {"X-Team": "sales"},
        "auth": {"mode": "static", "bearer": SECRET},
    }
    assert SECRET not in str(await stored(tmp_path, "crm"))  # in the encrypted store, not the catalog table
    listed = await site.http.get("/admin/upstreams", headers=as_user(site, ADMIN))
    assert 'href="/admin/upstreams/crm/edit"' in listed.text and 'href="/admin/upstreams/crm/remove"' in listed.text
    assert SECRET not in listed.text


async def test_problems_are_shown_next_to_their_fields_and_what_was_typed_is_kept(site: Site, tmp_path: Path) -> None:
    bad = {**HTTP_FORM, "url": "ftp://127.0.0.1/crm"}
    answer = await post(site, "/admin/upstreams/new", "create_upstream", bad)
    assert answer.status_code == 400
    text = unescape(answer.text)
    assert re.search(r'id="f-url"[^>]*value="ftp://127.0.0.1/crm"', text)
    assert re.search(r'<p class="field-error" id="err-url-1">[^<]*http:// or https://', text), text
    slow = await post(site, "/admin/upstreams/new", "create_upstream", {**HTTP_FORM, "connect_timeout": "-1"})
    assert slow.status_code == 400 and 'id="err-connect_timeout-1"' in slow.text
    assert 'value="crm"' in text and 'value="X-Team"' in text  # typed values kept
    assert SECRET not in text  # a typed secret is not echoed back
    assert "Type the secret values again" in text
    assert await stored(tmp_path, "crm") is None


async def test_a_new_header_needs_a_value_and_a_file_upstreams_id_is_taken(site: Site) -> None:
    blank = {**HTTP_FORM, "header_name_2": "X-Key", "header_value_2": ""}
    answer = await post(site, "/admin/upstreams/new", "create_upstream", blank)
    assert answer.status_code == 400 and 'id="err-header-1"' in answer.text
    taken = await post(site, "/admin/upstreams/new", "create_upstream", {**HTTP_FORM, "id": "notes"})
    assert taken.status_code == 409 and "already exists (declared in manifold.yaml)" in taken.text


async def test_editing_never_shows_a_secret_and_a_blank_one_is_kept(site: Site, tmp_path: Path) -> None:
    fields = {**HTTP_FORM, "header_name_1": "Authorization", "header_value_1": "Bearer hdr-secret"}
    assert (await post(site, "/admin/upstreams/new", "create_upstream", fields)).status_code == 303
    page = await site.http.get("/admin/upstreams/crm/edit", headers=as_user(site, ADMIN))
    assert page.status_code == 200
    assert SECRET not in page.text and "hdr-secret" not in page.text
    assert "A value is stored (not shown)" in page.text and 'value="Authorization"' in page.text
    edit = {
        "transport": "http",
        "url": "http://127.0.0.1:9/crm2",
        "header_name_1": "Authorization",
        "header_value_1": "",
        "header_name_2": "X-New",
        "header_value_2": "new",
        "auth_mode": "static",
        "static_bearer": "",
        "required": "1",
    }
    saved = await post(site, "/admin/upstreams/crm/edit", "update_upstream:crm", edit)
    assert saved.status_code == 303, saved.text
    assert await revealed(site, await stored(tmp_path, "crm")) == {
        "transport": "http",
        "url": "http://127.0.0.1:9/crm2",
        "headers": {"Authorization": "Bearer hdr-secret", "X-New": "new"},
        "auth": {"mode": "static", "bearer": SECRET},
    }
    changed = await post(site, "/admin/upstreams/crm/edit", "update_upstream:crm", {**edit, "static_bearer": "other"})
    assert changed.status_code == 303
    body = await revealed(site, await stored(tmp_path, "crm"))
    assert body is not None and body["auth"] == {"mode": "static", "bearer": "other"}


async def test_a_file_upstream_is_read_only(site: Site) -> None:
    listed = await site.http.get("/admin/upstreams", headers=as_user(site, ADMIN))
    assert "defined in manifold.yaml" in listed.text
    assert "/admin/upstreams/notes/edit" not in listed.text and "/admin/upstreams/notes/remove" not in listed.text
    for path in ("/admin/upstreams/notes/edit", "/admin/upstreams/notes/remove", "/admin/upstreams/notes/yaml"):
        answer = await site.http.get(path, headers=as_user(site, ADMIN))
        assert answer.status_code == 409 and "defined in manifold.yaml" in answer.text, path
    edit = await post(site, "/admin/upstreams/notes/edit", "update_upstream:notes", HTTP_FORM)
    assert edit.status_code == 409
    removed = await post(site, "/admin/upstreams/notes/remove", "remove_upstream:notes", {})
    assert removed.status_code == 409 and "change it there" in removed.text


async def test_removal_asks_first_and_refuses_while_a_virtual_server_uses_it(site: Site, tmp_path: Path) -> None:
    assert (await post(site, "/admin/upstreams/new", "create_upstream", HTTP_FORM)).status_code == 303
    confirm = await site.http.get("/admin/upstreams/crm/remove", headers=as_user(site, ADMIN))
    assert confirm.status_code == 200 and "Remove crm" in confirm.text
    assert await stored(tmp_path, "crm") is not None  # asking removed nothing
    engine = await open_database(default_url(tmp_path))
    ops = CatalogOperations(engine, load_config(tmp_path / "manifold.yaml"), env={})
    await ops.create(Kind.VSERVER, {"id": "sales", "members": [{"upstream": "crm"}]})
    refused = await post(site, "/admin/upstreams/crm/remove", "remove_upstream:crm", {})
    assert refused.status_code == 409 and "still used by virtual server &#39;sales&#39;" in refused.text
    await ops.delete(Kind.VSERVER, "sales")
    await engine.dispose()
    removed = await post(site, "/admin/upstreams/crm/remove", "remove_upstream:crm", {})
    assert removed.status_code == 303 and removed.headers["location"] == "/admin/upstreams?removed=crm"
    assert await stored(tmp_path, "crm") is None


async def test_the_export_has_every_made_object_and_no_secret(site: Site, tmp_path: Path) -> None:
    assert (await post(site, "/admin/upstreams/new", "create_upstream", HTTP_FORM)).status_code == 303
    page = await site.http.get("/admin/export", headers=as_user(site, ADMIN))
    assert page.status_code == 200 and "upstreams.yaml" in page.text and SECRET not in page.text
    one = await site.http.get("/admin/upstreams/crm/yaml", headers=as_user(site, ADMIN))
    assert one.status_code == 200 and one.headers["content-disposition"] == 'attachment; filename="upstream-crm.yaml"'
    assert "bearer: ${CRM_AUTH_BEARER}" in one.text and SECRET not in one.text
    assert "X-Team: ${CRM_HEADERS_X_TEAM}" in one.text  # every header value counts as a credential
    whole = await site.http.get("/admin/export/upstreams.yaml", headers=as_user(site, ADMIN))
    assert whole.status_code == 200 and "crm:" in whole.text and "notes:" not in whole.text
    archive = await site.http.get("/admin/export/all.zip", headers=as_user(site, ADMIN))
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    missing = await site.http.get("/admin/export/nope.yaml", headers=as_user(site, ADMIN))
    assert missing.status_code == 404


async def test_every_new_page_and_form_is_for_admins_only_and_needs_its_token(site: Site) -> None:
    assert (await post(site, "/admin/upstreams/new", "create_upstream", HTTP_FORM)).status_code == 303
    pages = [
        "/admin/upstreams/new",
        "/admin/upstreams/crm/edit",
        "/admin/upstreams/crm/remove",
        "/admin/upstreams/crm/yaml",
        "/admin/export",
        "/admin/export/all.zip",
        "/admin/export/upstreams.yaml",
    ]
    for path in pages:
        answer = await site.http.get(path, headers=as_user(site, PERSON))
        assert answer.status_code == 403, path
    forms = [
        ("/admin/upstreams/new", "create_upstream"),
        ("/admin/upstreams/crm/edit", "update_upstream:crm"),
        ("/admin/upstreams/crm/remove", "remove_upstream:crm"),
    ]
    for path, action in forms:
        theirs = {**HTTP_FORM, "csrf": token(site, PERSON, action)}
        assert (await site.http.post(path, data=theirs, headers=as_user(site, PERSON))).status_code == 403, path
        for fields in (HTTP_FORM, {**HTTP_FORM, "csrf": token(site, ADMIN, "create_upstream:other")}):
            refused = await site.http.post(path, data=fields, headers=as_user(site, ADMIN))
            assert refused.status_code == 403 and "not one this console gave you" in refused.text, path
    # A token for one upstream's form does not remove another.
    other = {"csrf": token(site, ADMIN, "remove_upstream:notes")}
    assert (
        await site.http.post("/admin/upstreams/crm/remove", data=other, headers=as_user(site, ADMIN))
    ).status_code == 403


def test_the_form_round_trips_a_body_without_its_secrets() -> None:
    shown = {
        "transport": "http",
        "url": "http://u/mcp",
        "headers": {"Authorization": "(hidden)", "X-Env": "${TEAM}"},
        "auth": {
            "mode": "oauth",
            "client_id": "c",
            "client_secret": "(hidden)",
            "scopes": ["a", "b"],
            "extra_authorize_params": {"access_type": "offline"},
        },
        "protocol": "2025-11-25",
        "pinning": "flag",
        "sessions": "per_user",
        "max_response_bytes": 2_000_000,
    }
    form = form_of("u", shown)
    assert form.auth_value("oauth", "scopes") == "a b" and form.stored_secret("oauth", "client_secret") == "(hidden)"
    fields = {
        "transport": ["http"],
        "url": ["http://u/mcp"],
        "auth_mode": ["oauth"],
        "oauth_client_id": ["c"],
        "oauth_scopes": ["a b"],
        "header_name_1": ["Authorization"],
        "header_name_2": ["X-Env"],
        "required": ["1"],
    }
    body, problems = body_of_form(posted_form(fields, form), shown)
    assert problems == []
    assert body == {
        "id": "u",
        "transport": "http",
        "protocol": "2025-11-25",  # not on the form: kept, and so are these (were dropped: console review)
        "pinning": "flag",
        "sessions": "per_user",
        "max_response_bytes": 2_000_000,
        "url": "http://u/mcp",
        "headers": {"Authorization": "(hidden)", "X-Env": "${TEAM}"},  # blank: kept (the API restores hidden ones)
        "auth": {
            "mode": "oauth",
            "client_id": "c",
            "client_secret": "(hidden)",
            "scopes": ["a", "b"],
            "extra_authorize_params": {"access_type": "offline"},
            "allow_insecure_discovery": False,
        },
    }
    stdio = posted_form(
        {
            "id": ["s"],
            "transport": ["stdio"],
            "command": ["python"],
            "args": ["a.py\n\n-v"],
            "auth_mode": ["static"],
            "env_name_1": ["K"],
            "env_value_1": ["v"],
        },
        None,
    )
    body, problems = body_of_form(stdio)
    assert body == {
        "id": "s",
        "transport": "stdio",
        "command": "python",
        "args": ["a.py", "-v"],
        "env": {"K": "v"},
        "required": False,
    }
    assert UpstreamForm().transport == "http"


def test_tool_pages_show_fifty_at_a_time() -> None:
    rows = matching([{"name": f"t{i:03d}"} for i in range(120)], "")
    first, last, beyond = paged(rows, "1"), paged(rows, "3"), paged(rows, "99")
    assert (len(first.rows), first.pages, first.first) == (50, 3, 1)
    assert (len(last.rows), last.first, last.rows[0].name) == (20, 101, "t100")
    assert beyond.page == 3 and paged(rows, "x").page == 1 and paged([], "1").first == 0


async def test_a_stdio_upstream_is_added_and_its_environment_kept_on_edit(site: Site, tmp_path: Path) -> None:
    fields = {
        "id": "local",
        "transport": "stdio",
        "command": "python",
        "args": "server.py\n--quiet",
        "env_name_1": "API_TOKEN",
        "env_value_1": "env-s3cret",
        "auth_mode": "static",  # hidden for stdio, and ignored
        "required": "1",
    }
    added = await post(site, "/admin/upstreams/new", "create_upstream", fields)
    assert added.status_code == 303, added.text
    assert await stored(tmp_path, "local") == {
        "transport": "stdio",
        "command": "python",
        "args": ["server.py", "--quiet"],
        "env": {"API_TOKEN": "env-s3cret"},
    }
    page = await site.http.get("/admin/upstreams/local/edit", headers=as_user(site, ADMIN))
    assert "env-s3cret" not in page.text and 'value="API_TOKEN"' in page.text
    edit = {**fields, "env_value_1": "", "args": "server.py", "connect_timeout": "5"}
    assert (await post(site, "/admin/upstreams/local/edit", "update_upstream:local", edit)).status_code == 303
    assert await stored(tmp_path, "local") == {
        "transport": "stdio",
        "command": "python",
        "args": ["server.py"],
        "env": {"API_TOKEN": "env-s3cret"},
        "connect_timeout": 5.0,
    }


async def test_a_made_upstream_the_catalog_leaves_out_says_why(site: Site, tmp_path: Path) -> None:
    assert (await post(site, "/admin/upstreams/new", "create_upstream", HTTP_FORM)).status_code == 303
    engine = await open_database(default_url(tmp_path))
    try:
        async with engine.begin() as conn:  # as if manifold.yaml declared 'crm' since: the file wins
            await conn.execute(catalog_objects.update().where(catalog_objects.c.id == "crm").values(id="notes"))
    finally:
        await engine.dispose()
    listed = await site.http.get("/admin/upstreams", headers=as_user(site, ADMIN))
    assert "Not served:</strong> manifold.yaml also declares upstream &#39;notes&#39;, and the file wins" in listed.text
    # The made one can still be removed here (the file's stays).
    confirm = await site.http.get("/admin/upstreams/notes/remove", headers=as_user(site, ADMIN))
    assert confirm.status_code == 200
    removed = await post(site, "/admin/upstreams/notes/remove", "remove_upstream:notes", {})
    assert removed.status_code == 303 and await stored(tmp_path, "notes") is None
    listed = await site.http.get("/admin/upstreams", headers=as_user(site, ADMIN))
    assert "Not served" not in listed.text and "defined in manifold.yaml" in listed.text


async def test_an_openapi_upstream_is_added_and_kept_on_edit(site: Site, tmp_path: Path) -> None:
    form = await site.http.get("/admin/upstreams/new", headers=as_user(site, ADMIN))
    assert '<option value="openapi">OpenAPI (a REST API)</option>' in form.text and 'name="spec"' in form.text
    fields = {"id": "shop", "transport": "openapi", "spec": "specs/shop.yaml", "auth_mode": "none", "required": "1"}
    added = await post(site, "/admin/upstreams/new", "create_upstream", fields)
    assert added.status_code == 303, added.text
    assert await stored(tmp_path, "shop") == {"transport": "openapi", "spec": "specs/shop.yaml"}
    # Editing shows it as an OpenAPI upstream with its document, and saving keeps both.
    edit = await site.http.get("/admin/upstreams/shop/edit", headers=as_user(site, ADMIN))
    assert '<option value="openapi" selected>' in edit.text and 'value="specs/shop.yaml"' in edit.text
    changed = {**fields, "url": "https://shop.example/v2"}
    del changed["id"]
    saved = await post(site, "/admin/upstreams/shop/edit", "update_upstream:shop", changed)
    assert saved.status_code == 303, saved.text
    assert await stored(tmp_path, "shop") == {
        "transport": "openapi",
        "spec": "specs/shop.yaml",
        "url": "https://shop.example/v2",
    }
