"""The console's home and upstream pages.

GET  /admin                                  home: what the console has, with counts
GET  /admin/upstreams                        every upstream: transport, auth mode, state, last error, tools
GET  /admin/upstreams/{id}/tools?q=&ro=1     one upstream's tools: description, input schema, annotations
POST /admin/upstreams/{id}/refresh           fetch that tool list again
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from manifold.admin.catalog import Kind
from manifold.catalog.lists import describe_failure
from manifold.console.frame import PREFIX, Frame, problem, redirect, render
from manifold.console.views import UpstreamRow, matching, upstream_row
from manifold.principal import Principal
from manifold.web.session import WebSession

log = logging.getLogger(__name__)
METHODS = ["GET", "HEAD", "POST"]  # the wrong one gets the console's 405 page, not Starlette's


class UpstreamPages:
    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.services = frame.services

    def routes(self) -> list[BaseRoute]:
        page = self.frame.page
        return [
            Route(PREFIX, page(self.home), methods=METHODS),
            Route(PREFIX + "/upstreams", page(self.upstreams), methods=METHODS),
            Route(PREFIX + "/upstreams/{upstream_id}/tools", page(self.tools), methods=METHODS),
            Route(PREFIX + "/upstreams/{upstream_id}/refresh", page(self.refresh, post=True), methods=METHODS),
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
        return render("home.html", viewer=self.frame.who(session), upstreams=len(rows), states=states)

    async def upstreams(self, request: Request, principal: Principal, session: WebSession) -> Response:
        return render("upstreams.html", viewer=self.frame.who(session), rows=await self.rows())

    async def tools(self, request: Request, principal: Principal, session: WebSession) -> Response:
        upstream_id = request.path_params["upstream_id"]
        ids = {str(e.get("id")): e for e in await self.services.catalog_ops.list(Kind.UPSTREAM)}
        entry = ids.get(upstream_id)
        if entry is None:
            return problem(404, "Not found", f"There is no upstream '{upstream_id[:100]}'.", self.frame.who(session))
        query = request.query_params.get("q", "")[:200]
        read_only = request.query_params.get("ro") == "1"
        error: str | None = None
        items: list[dict[str, Any]] = []
        try:
            items = (await self.services.lists.get(upstream_id, "tools")).items
        except Exception as exc:  # noqa: BLE001 — an upstream that cannot list is shown as such, with why
            error = describe_failure(exc)
        health = self.services.health.health().get(upstream_id, {})
        row = upstream_row(entry, health, None if error else len(items), error)
        return render(
            "tools.html",
            viewer=self.frame.who(session),
            upstream=row,
            tools=matching(items, query, read_only),
            total=len(items),
            query=query,
            read_only=read_only,
            refresh_csrf=self.frame.csrf(session, "refresh", upstream_id),
        )

    async def refresh(self, request: Request, principal: Principal, session: WebSession) -> Response:
        upstream_id = request.path_params["upstream_id"]
        self.services.lists.invalidate(upstream_id, "tools")
        log.info("console: %s refreshed the tool list of %s", principal.id, upstream_id[:100])
        return redirect(f"{PREFIX}/upstreams/{upstream_id}/tools")
