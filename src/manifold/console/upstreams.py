"""The console's home, upstream and export pages.

GET  /admin                                  home: what the console has, with counts
GET  /admin/upstreams                        every upstream: transport, auth mode, state, last error, tools
GET  /admin/upstreams/new                    the form to add one (stdio, HTTP, SSE; each auth mode's fields)
POST /admin/upstreams/new                    add it (POST /admin/api/upstreams: checked, applied, audited)
GET  /admin/upstreams/{id}/edit              the form of an API-made upstream (secrets never shown)
POST /admin/upstreams/{id}/edit              replace it (PUT /admin/api/upstreams/{id}); blank secrets are kept
GET  /admin/upstreams/{id}/remove            are you sure? (and what still uses it)
POST /admin/upstreams/{id}/remove            remove it (DELETE /admin/api/upstreams/{id})
GET  /admin/upstreams/{id}/tools?q=&ro=1&page=  one upstream's tools (50 a page): description, schema, annotations
POST /admin/upstreams/{id}/refresh           fetch that tool list again
GET  /admin/upstreams/{id}/yaml              an API-made upstream as a manifold.yaml entry (download)
GET  /admin/export                           every API-made object as the files it would be (admin/export.py)
GET  /admin/export/{file}                    one of those files, or all.zip

Upstreams declared in files are shown read-only, with their file. Every change goes through the admin API's
own route (`AdminApi.perform`); its problems are shown next to the fields, with what was typed kept (but
never a secret: those are typed again).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from manifold.admin.catalog import API_SOURCE, InvalidBody, Kind
from manifold.admin.export import ExportFile, export_files, read_exportable, upstream_file, zip_bytes
from manifold.admin.ops import OpError
from manifold.catalog.lists import describe_failure
from manifold.console.frame import HEADERS, METHODS, PREFIX, Endpoint, Frame, problem, redirect, render
from manifold.console.views import (
    AUTH_LABELS,
    AUTH_MODES,
    TRANSPORTS,
    UpstreamForm,
    UpstreamRow,
    body_of_form,
    form_of,
    matching,
    paged,
    posted_form,
    problems_by_field,
    upstream_row,
)
from manifold.outbound.resolver import AuthRequired
from manifold.principal import Principal
from manifold.web.session import WebSession

log = logging.getLogger(__name__)
ALL_ZIP = "all.zip"


class UpstreamPages:
    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.services = frame.services

    def routes(self) -> list[BaseRoute]:
        page = self.frame.page
        return [
            Route(PREFIX, page(self.home), methods=METHODS),
            Route(PREFIX + "/upstreams", page(self.upstreams), methods=METHODS),
            Route(
                PREFIX + "/upstreams/new",
                _by_method(page(self.new_upstream), page(self.create_upstream, post=True)),
                methods=METHODS,
            ),
            Route(
                PREFIX + "/upstreams/{upstream_id}/edit",
                _by_method(page(self.edit_upstream), page(self.update_upstream, post=True)),
                methods=METHODS,
            ),
            Route(
                PREFIX + "/upstreams/{upstream_id}/remove",
                _by_method(page(self.confirm_remove), page(self.remove_upstream, post=True)),
                methods=METHODS,
            ),
            Route(PREFIX + "/upstreams/{upstream_id}/tools", page(self.tools), methods=METHODS),
            Route(PREFIX + "/upstreams/{upstream_id}/refresh", page(self.refresh, post=True), methods=METHODS),
            Route(PREFIX + "/upstreams/{upstream_id}/yaml", page(self.upstream_yaml), methods=METHODS),
            Route(PREFIX + "/export", page(self.export), methods=METHODS),
            Route(PREFIX + "/export/{name:path}", page(self.export_file), methods=METHODS),
        ]

    async def rows(self) -> list[UpstreamRow]:
        health = self.services.health.health()
        rows: list[UpstreamRow] = []
        for entry in await self.services.catalog_ops.list(Kind.UPSTREAM):
            upstream_id = str(entry.get("id"))
            cached = self.services.lists.entry(upstream_id, "tools")  # what is known; listing connects nothing here
            tools = len(cached.items) if cached.fetched_at >= 0 else None
            rows.append(upstream_row(entry, health.get(upstream_id, {}), tools, None))
        return rows

    async def home(self, request: Request, principal: Principal, session: WebSession) -> Response:
        rows = await self.rows()
        states = {s: sum(1 for r in rows if r.state == s) for s in ("up", "degraded", "down", "idle")}
        made = sum(1 for r in rows if r.source == API_SOURCE)
        _, waiting = await self.services.admin.perform(principal, "GET", ["tools", "pins"], query={"status": "changed"})
        return render(
            "home.html",
            viewer=self.frame.who(session),
            upstreams=len(rows),
            states=states,
            made=made,
            pins_waiting=len(waiting),
        )

    async def upstreams(self, request: Request, principal: Principal, session: WebSession) -> Response:
        done = request.query_params.get("removed", "")[:100]
        return render("upstreams.html", viewer=self.frame.who(session), rows=await self.rows(), removed=done)

    # ---- add / edit / remove -------------------------------------------------------------------------

    async def entry(self, upstream_id: str) -> dict[str, Any] | None:
        entry = (await self.services.catalog_ops.current()).entry(Kind.UPSTREAM, upstream_id)
        return entry.public() if entry is not None else None

    def form_page(
        self,
        session: WebSession,
        form: UpstreamForm,
        *,
        editing: bool,
        problems: dict[str, list[str]] | None = None,
        status: int = 200,
    ) -> Response:
        if editing:
            action, token = f"{PREFIX}/upstreams/{form.id}/edit", self.frame.csrf(session, "update_upstream", form.id)
        else:
            action, token = f"{PREFIX}/upstreams/new", self.frame.csrf(session, "create_upstream")
        return render(
            "upstream_form.html",
            status,
            viewer=self.frame.who(session),
            form=form,
            editing=editing,
            action=action,
            csrf=token,
            problems=problems or {},
            transports=TRANSPORTS,
            auth_modes=AUTH_MODES,
            auth_labels=AUTH_LABELS,
        )

    async def new_upstream(self, request: Request, principal: Principal, session: WebSession) -> Response:
        return self.form_page(session, UpstreamForm(), editing=False)

    async def create_upstream(self, request: Request, principal: Principal, session: WebSession) -> Response:
        form = posted_form(self.frame.form_lists(request), None)
        return await self.save(principal, session, form, None)

    async def editable(self, session: WebSession, upstream_id: str) -> dict[str, Any] | Response:
        """The API-made upstream's public entry (also one the catalog leaves out, say because a file now
        declares the same id), or the page that says why it cannot be changed here."""
        catalog = await self.services.catalog_ops.current()
        made = catalog.api_entry(Kind.UPSTREAM, upstream_id)
        if made is not None:
            return made.public()
        declared = catalog.entry(Kind.UPSTREAM, upstream_id)
        who = self.frame.who(session)
        if declared is None:
            return problem(404, "Not found", f"There is no upstream '{upstream_id[:100]}'.", who)
        message = f"Upstream '{upstream_id[:100]}' is defined in {declared.source}; change it there."
        return problem(409, "Defined in a file", message, who)

    async def edit_upstream(self, request: Request, principal: Principal, session: WebSession) -> Response:
        entry = await self.editable(session, request.path_params["upstream_id"])
        if isinstance(entry, Response):
            return entry
        return self.form_page(session, form_of(str(entry["id"]), entry.get("body") or {}), editing=True)

    async def update_upstream(self, request: Request, principal: Principal, session: WebSession) -> Response:
        entry = await self.editable(session, request.path_params["upstream_id"])
        if isinstance(entry, Response):
            return entry
        body = entry.get("body") or {}
        form = posted_form(self.frame.form_lists(request), form_of(str(entry["id"]), body))
        return await self.save(principal, session, form, body)

    async def save(
        self, principal: Principal, session: WebSession, form: UpstreamForm, stored: dict[str, Any] | None
    ) -> Response:
        editing = stored is not None
        body, missing = body_of_form(form, stored)
        try:
            if missing:
                raise _FormProblems(missing)
            if editing:
                await self.services.admin.perform(principal, "PUT", ["upstreams", form.id], body)
                self.services.lists.invalidate(form.id, "tools")
            else:
                await self.services.admin.perform(principal, "POST", ["upstreams"], body)
        except _FormProblems as exc:
            return self.form_page(session, form, editing=editing, problems=problems_by_field(exc.problems), status=400)
        except InvalidBody as exc:
            placed = problems_by_field([(p.field_path, p.reason) for p in exc.problems])
            return self.form_page(session, form, editing=editing, problems=placed, status=400)
        except OpError as exc:
            return self.form_page(session, form, editing=editing, problems={"": [exc.message]}, status=exc.status)
        return redirect(f"{PREFIX}/upstreams/{form.id}/tools")

    async def confirm_remove(self, request: Request, principal: Principal, session: WebSession) -> Response:
        entry = await self.editable(session, request.path_params["upstream_id"])
        if isinstance(entry, Response):
            return entry
        return self.remove_page(session, str(entry["id"]), None, 200)

    def remove_page(self, session: WebSession, upstream_id: str, error: str | None, status: int) -> Response:
        return render(
            "upstream_remove.html",
            status,
            viewer=self.frame.who(session),
            upstream_id=upstream_id,
            error=error,
            csrf=self.frame.csrf(session, "remove_upstream", upstream_id),
        )

    async def remove_upstream(self, request: Request, principal: Principal, session: WebSession) -> Response:
        upstream_id = request.path_params["upstream_id"]
        try:
            await self.services.admin.perform(principal, "DELETE", ["upstreams", upstream_id])
        except OpError as exc:
            return self.remove_page(session, upstream_id[:100], exc.message, exc.status)
        return redirect(f"{PREFIX}/upstreams?removed={upstream_id}")

    # ---- tools ---------------------------------------------------------------------------------------

    async def tools(self, request: Request, principal: Principal, session: WebSession) -> Response:
        upstream_id = request.path_params["upstream_id"]
        entry = await self.entry(upstream_id)
        if entry is None:
            return problem(404, "Not found", f"There is no upstream '{upstream_id[:100]}'.", self.frame.who(session))
        query = request.query_params.get("q", "")[:200]
        read_only = request.query_params.get("ro") == "1"
        error: str | None = None
        connect_url: str | None = None
        items: list[dict[str, Any]] = []
        try:
            outbound = await self.services.credential_of(principal, upstream_id)
            items = (await self.services.lists.get(upstream_id, "tools", outbound=outbound)).items
        except AuthRequired as exc:  # listed with each person's own account: the admin's is not connected
            connect_url = exc.connect_url
        except Exception as exc:  # noqa: BLE001 — an upstream that cannot list is shown as such, with why
            error = describe_failure(exc)
        health = self.services.health.health().get(upstream_id, {})
        row = upstream_row(entry, health, None if error else len(items), error)
        _, waiting = await self.services.admin.perform(
            principal, "GET", ["tools", "pins"], query={"upstream": upstream_id, "status": "changed"}
        )
        found = matching(items, query, read_only)
        return render(
            "tools.html",
            viewer=self.frame.who(session),
            upstream=row,
            tools=paged(found, request.query_params.get("page", "1")[:10]),
            matched=len(found),
            total=len(items),
            query=query,
            read_only=read_only,
            refresh_csrf=self.frame.csrf(session, "refresh", upstream_id),
            connect_url=connect_url,
            pins_waiting=len(waiting),  # changed definitions held out of this list (or flagged) until approved
        )

    async def refresh(self, request: Request, principal: Principal, session: WebSession) -> Response:
        upstream_id = request.path_params["upstream_id"]
        self.services.lists.invalidate(upstream_id, "tools")
        log.info("console: %s refreshed the tool list of %s", principal.id, upstream_id[:100])
        return redirect(f"{PREFIX}/upstreams/{upstream_id}/tools")

    # ---- export --------------------------------------------------------------------------------------

    async def upstream_yaml(self, request: Request, principal: Principal, session: WebSession) -> Response:
        entry = await self.editable(session, request.path_params["upstream_id"])
        if isinstance(entry, Response):
            return entry
        return _download(upstream_file(entry))

    async def exported(self) -> list[ExportFile]:
        return export_files(await read_exportable(self.services.catalog_ops, self.services.admin.ops))

    async def export(self, request: Request, principal: Principal, session: WebSession) -> Response:
        return render("export.html", viewer=self.frame.who(session), files=await self.exported(), all_zip=ALL_ZIP)

    async def export_file(self, request: Request, principal: Principal, session: WebSession) -> Response:
        name = request.path_params["name"]
        files = await self.exported()
        if name == ALL_ZIP and files:
            headers = {**HEADERS, "content-disposition": 'attachment; filename="manifold-export.zip"'}
            return Response(zip_bytes(files), media_type="application/zip", headers=headers)
        for f in files:
            if f.name == name:
                return _download(f)
        return problem(404, "Not found", "There is no such export file.", self.frame.who(session))


class _FormProblems(Exception):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("the form is incomplete")
        self.problems = problems


def _download(f: ExportFile) -> Response:
    filename = f.name.rsplit("/", 1)[-1]
    headers = {**HEADERS, "content-disposition": f'attachment; filename="{filename}"'}
    return Response(f.text, media_type="application/yaml; charset=utf-8", headers=headers)


def _by_method(get: Endpoint, post: Endpoint) -> Endpoint:
    """One path, the page (GET) and its form (POST), each behind its own checks."""

    async def endpoint(request: Request) -> Response:
        return await (post if request.method == "POST" else get)(request)

    return endpoint
