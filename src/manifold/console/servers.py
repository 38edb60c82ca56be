"""The console's virtual server pages (issue 13 item 3): the list, the editor with a live preview, and the
page a saved server's clients are configured from.

GET  /admin/servers                      every virtual server: source (file or API), URL, members, grants link
GET  /admin/servers/new                  the editor, empty
POST /admin/servers/new                  the editor's form: preview (default), filter, select, clear, save
GET  /admin/servers/{id}                 the editor of an API-made server (a file's server: read-only)
POST /admin/servers/{id}                 its form (save replaces it: PUT)
POST /admin/servers/{id}/delete          remove an API-made server
GET  /admin/servers/{id}/clients         its URL and the client snippets

Saving goes through the admin API's own route (`AdminApi.perform`: POST or PUT /admin/api/virtual-servers,
checked like a file, applied at once, audited). The preview is the gateway's own view code run on the
upstreams' cached tool lists (console/preview.py). htmx re-renders the preview on every change of the form
(and the picker as the filter is typed); without JS the Preview and Filter buttons post the same form.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import yaml
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from manifold.admin.catalog import API_SOURCE, Catalog, InvalidBody, Kind, check_vserver
from manifold.admin.ops import OpError
from manifold.catalog.lists import describe_failure
from manifold.config.models import VirtualServerConfig
from manifold.console.frame import METHODS, PREFIX, Endpoint, Frame, problem, redirect, render
from manifold.console.preview import (
    ANNOTATIONS,
    FORM_LEVEL,
    MAX_PICKS,
    MAX_SHOWN,
    Draft,
    Filters,
    Listed,
    Preview,
    Unsupported,
    body_of,
    draft_of,
    html_id,
    label_of,
    matching,
    new_draft,
    parse_form,
    pick_rows,
    place,
    placed,
    preview,
    python_snippet,
    select,
)
from manifold.outbound.resolver import AuthRequired
from manifold.principal import Principal
from manifold.web.servers_page import snippets
from manifold.web.session import WebSession

log = logging.getLogger(__name__)
DRAFT_ID = "draft"  # the id a server without one yet is checked and previewed under


class ServerPages:
    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.services = frame.services

    def routes(self) -> list[BaseRoute]:
        page = self.frame.page
        return [
            Route(PREFIX + "/servers", page(self.servers), methods=METHODS),
            Route(
                PREFIX + "/servers/new",
                _by_method(page(self.new_server), page(self.create, post=True)),
                methods=METHODS,
            ),
            Route(
                PREFIX + "/servers/{server_id}",
                _by_method(page(self.server), page(self.update, post=True)),
                methods=METHODS,
            ),
            Route(PREFIX + "/servers/{server_id}/delete", page(self.delete, post=True), methods=METHODS),
            Route(PREFIX + "/servers/{server_id}/clients", page(self.clients), methods=METHODS),
        ]

    # ---- the list ------------------------------------------------------------------------------------

    def base_url(self, request: Request) -> str:
        return (self.services.settings.public_url or str(request.base_url)).rstrip("/")

    async def servers(self, request: Request, principal: Principal, session: WebSession) -> Response:
        base = self.base_url(request)
        rows: list[dict[str, Any]] = []
        for entry in await self.services.catalog_ops.list(Kind.VSERVER):
            body = entry.get("body") or {}
            server_id = str(entry.get("id"))
            rows.append(
                {
                    "id": server_id,
                    "source": str(entry.get("source")),
                    "editable": entry.get("source") == API_SOURCE,
                    "problem": entry.get("problem"),
                    "description": body.get("description") or "",
                    "members": len(body.get("members") or []),
                    "url": f"{base}/mcp/{server_id}",
                }
            )
        rows.sort(key=lambda r: r["id"])
        return render("servers.html", viewer=self.frame.who(session), rows=rows)

    # ---- the editor ----------------------------------------------------------------------------------

    async def listed(self, principal: Principal, upstreams: list[str]) -> list[Listed]:
        """Every upstream's tools, from the list cache (fetched for those not listed yet, all at once, with the
        admin's own credential where the upstream wants one)."""

        async def one(upstream: str) -> Listed:
            try:
                outbound = await self.services.credential_of(principal, upstream)
                entry = await self.services.lists.get(upstream, "tools", allow_stale=True, outbound=outbound)
            except AuthRequired as exc:
                why = f"it is reached with each person's own account, and yours is not connected ({exc.connect_url})"
                return Listed(upstream, [], why)
            except Exception as exc:  # noqa: BLE001 — an upstream that cannot list is shown as such, with why
                return Listed(upstream, [], describe_failure(exc))
            return Listed(upstream, entry.items)

        return list(await asyncio.gather(*(one(u) for u in upstreams)))

    async def new_server(self, request: Request, principal: Principal, session: WebSession) -> Response:
        catalog = await self.services.catalog_ops.current()
        upstreams = list(catalog.upstreams)
        return await self.editor(
            session, catalog, new_draft(upstreams), Filters(), await self.listed(principal, upstreams)
        )

    async def server(self, request: Request, principal: Principal, session: WebSession) -> Response:
        server_id = request.path_params["server_id"]
        catalog = await self.services.catalog_ops.current()
        entry = catalog.entry(Kind.VSERVER, server_id)
        who = self.frame.who(session)
        if entry is None:
            return problem(404, "Not found", f"There is no virtual server '{server_id[:100]}'.", who)
        if entry.source != API_SOURCE:
            return render(
                "server_file.html",
                viewer=who,
                server_id=server_id,
                source=entry.source,
                note="",
                yaml=yaml.safe_dump(entry.body, sort_keys=False, allow_unicode=True),
                url=f"{self.base_url(request)}/mcp/{server_id}",
            )
        upstreams = list(catalog.upstreams)
        listed = await self.listed(principal, upstreams)
        names = {x.upstream: {str(t.get("name")) for t in x.tools} for x in listed}
        try:
            draft = draft_of({**entry.body, "id": server_id}, upstreams, names)
        except (Unsupported, ValueError) as exc:
            return render(
                "server_file.html",
                viewer=who,
                server_id=server_id,
                source=API_SOURCE,
                note=(
                    f"Made through the admin API, but the editor cannot show it ({str(exc)[:200]}): "
                    f"change it with PUT /admin/api/virtual-servers/{server_id}."
                ),
                yaml=yaml.safe_dump(entry.body, sort_keys=False, allow_unicode=True),
                url=f"{self.base_url(request)}/mcp/{server_id}",
            )
        return await self.editor(session, catalog, draft, Filters(), listed, editing=server_id)

    async def create(self, request: Request, principal: Principal, session: WebSession) -> Response:
        catalog = await self.services.catalog_ops.current()
        return await self.posted(request, principal, session, catalog, None)

    async def update(self, request: Request, principal: Principal, session: WebSession) -> Response:
        server_id = request.path_params["server_id"]
        catalog = await self.services.catalog_ops.current()
        entry = catalog.entry(Kind.VSERVER, server_id)
        if entry is None or entry.source != API_SOURCE:
            where = "it does not exist" if entry is None else f"it is declared in {entry.source}; change it there"
            message = f"Virtual server '{server_id[:100]}' cannot be edited here: {where}."
            return problem(409, "Not saved", message, self.frame.who(session))
        return await self.posted(request, principal, session, catalog, server_id)

    async def posted(
        self, request: Request, principal: Principal, session: WebSession, catalog: Catalog, editing: str | None
    ) -> Response:
        upstreams = list(catalog.upstreams)
        draft, filters, action = parse_form(self.frame.form_lists(request), upstreams)
        if editing is not None:
            draft.server_id = editing
        for u in upstreams:
            draft.member(u)  # an upstream added since the form was given gets its block
        listed = await self.listed(principal, upstreams)
        notice = ""
        if action in ("select", "clear"):
            left_out = select(draft, matching(listed, filters), on=action == "select")
            if left_out:
                notice = (
                    f"{left_out} matching tools were not picked: at most {MAX_PICKS} tools are picked one by one. "
                    "Select many tools with a pattern (a member's tool patterns, such as *) instead."
                )
        if action != "save":
            return await self.editor(session, catalog, draft, filters, listed, editing=editing, notice=notice)
        body = body_of(draft)
        try:
            if editing is None:
                await self.services.admin.perform(principal, "POST", ["virtual-servers"], body)
            else:
                await self.services.admin.perform(principal, "PUT", ["virtual-servers", editing], body)
        except InvalidBody as exc:
            return await self.editor(
                session,
                catalog,
                draft,
                filters,
                listed,
                editing=editing,
                problems=placed(exc.problems, body),
                status=400,
            )
        except OpError as exc:
            errors = {FORM_LEVEL: [exc.message]}
            return await self.editor(
                session, catalog, draft, filters, listed, editing=editing, problems=errors, status=400
            )
        return redirect(f"{PREFIX}/servers/{draft.server_id}/clients?saved=1")

    async def editor(
        self,
        session: WebSession,
        catalog: Catalog,
        draft: Draft,
        filters: Filters,
        listed: list[Listed],
        *,
        editing: str | None = None,
        problems: dict[str, list[str]] | None = None,
        status: int = 200,
        notice: str = "",
    ) -> Response:
        found = matching(listed, filters)
        rows = pick_rows(found, draft)
        shown = {r.key for r in rows}
        carried = [  # picks the filter hides: still part of the form
            f"{m.upstream}/{name}"
            for m in draft.members.values()
            for name in m.picks
            if f"{m.upstream}/{name}" not in shown
        ]
        preview_of, live = self.preview(catalog, draft, listed)
        in_preview = {r.alias_key for r in preview_of.rows} if preview_of is not None else set()
        kept_aliases = [  # renames and descriptions of tools not in the preview (yet): carried too
            (f"{kind}.{m.upstream}/{name}", value)
            for m in draft.members.values()
            for kind, values in (("alias", m.aliases), ("desc", m.descriptions))
            for name, value in values.items()
            if f"{m.upstream}/{name}" not in in_preview
        ]
        action_path = f"{PREFIX}/servers/{editing}" if editing else f"{PREFIX}/servers/new"
        token = self.frame.csrf(session, "update", editing) if editing else self.frame.csrf(session, "create")
        return render(
            "server_edit.html",
            status,
            viewer=self.frame.who(session),
            editing=editing,
            draft=draft,
            filters=filters,
            annotations=ANNOTATIONS,
            listed=listed,
            rows=rows,
            matched=len(found),
            max_shown=MAX_SHOWN,
            carried=carried,
            kept_aliases=kept_aliases,
            preview=preview_of,
            live=live,
            problems=problems or {},
            notice=notice,
            action_path=action_path,
            csrf=token,
            delete_csrf=self.frame.csrf(session, "delete", editing) if editing else "",
            html_id=html_id,
            picked=sum(len(m.picks) for m in draft.members.values()),
            patterns=sum(len(m.globs) for m in draft.members.values()),
        )

    def preview(self, catalog: Catalog, draft: Draft, listed: list[Listed]) -> tuple[Preview | None, list[str]]:
        """The preview of the draft and the problems the admin API's check finds in it now (shown live; the
        same check refuses them on save)."""
        body = body_of(draft)
        if not body["members"]:
            return None, []
        server_id = draft.server_id or DRAFT_ID
        body["id"] = server_id
        ops = self.services.catalog_ops
        model, problems = check_vserver(ops.config, catalog, server_id, body, ops.env)
        if not draft.server_id:
            problems = [p for p in problems if p.field_path != "id"]  # not typed yet: said on save
        live: list[str] = []
        for p in problems:
            label = label_of(place(p, body))
            live.append(f"{label}: {p.reason}" if label else p.reason)
        if not isinstance(model, VirtualServerConfig):
            return None, live
        try:  # previewed as written: the check resolved `${NAME}` references, which the page must not show
            written = VirtualServerConfig.model_validate(body)
        except ValidationError:
            return None, live
        separator = ops.config.separator_for(written)
        shown = preview(server_id, written, {x.upstream: x for x in listed}, self.services.lists, separator)
        if shown.collisions:  # the preview's own list says it, with both sources
            live = [text for text in live if " collides with " not in text]
        return shown, live

    async def delete(self, request: Request, principal: Principal, session: WebSession) -> Response:
        server_id = request.path_params["server_id"]
        try:
            await self.services.admin.perform(principal, "DELETE", ["virtual-servers", server_id])
        except OpError as exc:
            return problem(exc.status, "Not removed", exc.message, self.frame.who(session))
        return redirect(f"{PREFIX}/servers")

    # ---- after saving --------------------------------------------------------------------------------

    async def clients(self, request: Request, principal: Principal, session: WebSession) -> Response:
        server_id = request.path_params["server_id"]
        catalog = await self.services.catalog_ops.current()
        who = self.frame.who(session)
        entry = catalog.entries.get((Kind.VSERVER, server_id))
        if entry is None:
            return problem(404, "Not found", f"No virtual server '{server_id[:100]}' is served.", who)
        url = f"{self.base_url(request)}/mcp/{server_id}"
        return render(
            "server_clients.html",
            viewer=who,
            server_id=server_id,
            url=url,
            saved=request.query_params.get("saved") == "1",
            editable=entry.source == API_SOURCE,
            snippets=[*snippets(server_id, url), ("Python SDK (mcp), with an API key", python_snippet(url))],
        )


def _by_method(get: Endpoint, post: Endpoint) -> Endpoint:
    """One path, the page (GET) and its form (POST), each behind its own checks."""

    async def endpoint(request: Request) -> Response:
        return await (post if request.method == "POST" else get)(request)

    return endpoint
