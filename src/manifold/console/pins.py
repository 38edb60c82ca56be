"""The console's tool pins page (docs/pinning.md): tool definitions that changed since they were approved,
each with its diff, approved one by one or all at once.

GET  /admin/pins[?upstream=]     the waiting definitions (diff of the approved and the seen canonical JSON),
                                 and how many tools are pinned
POST /admin/pins/approve         fields upstream, tool (both empty: everything waiting; tool empty: the
                                 upstream's): POST /admin/api/tools/pins[/{upstream}[/{tool}]]/approve
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from manifold.admin.catalog import Kind
from manifold.admin.ops import OpError
from manifold.console.access_views import when
from manifold.console.frame import METHODS, PREFIX, Frame, redirect, render
from manifold.principal import Principal
from manifold.web.session import WebSession

MAX_FIELD = 400


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "add" | "del" | "hunk" | "same"
    text: str


@dataclass(frozen=True)
class WaitingPin:
    upstream: str
    tool: str
    approved_hash: str
    pending_hash: str
    approved_by: str
    approved: str
    seen: str
    lines: tuple[DiffLine, ...]


def _kind(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "hunk"
    if line.startswith("+"):
        return "add"
    if line.startswith("-"):
        return "del"
    return "hunk" if line.startswith("@@") else "same"


def waiting_pin(d: dict[str, Any]) -> WaitingPin:
    return WaitingPin(
        upstream=str(d["upstream"]),
        tool=str(d["tool"]),
        approved_hash=str(d["approved_hash"]),
        pending_hash=str(d["pending_hash"] or ""),
        approved_by=str(d["approved_by"]),
        approved=when(d.get("approved_at")),
        seen=when(d.get("seen_at")),
        lines=tuple(DiffLine(_kind(line), line) for line in str(d["diff"]).splitlines()),
    )


class PinPages:
    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.services = frame.services

    def routes(self) -> list[BaseRoute]:
        page = self.frame.page
        return [
            Route(PREFIX + "/pins", page(self.pins), methods=METHODS),
            Route(PREFIX + "/pins/approve", page(self.approve_pins, post=True), methods=METHODS),
        ]

    async def pins(self, request: Request, principal: Principal, session: WebSession) -> Response:
        upstream = request.query_params.get("upstream", "").strip()[:MAX_FIELD]
        done = self.frame.notice(request, session, "approved")
        return await self._page(principal, session, upstream, notice=f"Approved {done}." if done else None)

    async def _page(
        self,
        principal: Principal,
        session: WebSession,
        upstream: str,
        *,
        notice: str | None = None,
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        known = sorted(str(e.get("id")) for e in await self.services.catalog_ops.list(Kind.UPSTREAM))
        if upstream and upstream not in known and error is None:
            error = f"There is no upstream '{upstream}'."  # not "nothing waits on it" (review: a typo said that)
        query = {"upstream": upstream} if upstream else {}
        _, waiting = await self.services.admin.perform(principal, "GET", ["tools", "pins", "diff"], query=query)
        _, pinned = await self.services.admin.perform(principal, "GET", ["tools", "pins"], query=query)
        return render(
            "pins.html",
            status,
            viewer=self.frame.who(session),
            rows=[waiting_pin(d) for d in waiting],
            pinned=len(pinned),
            upstream=upstream,
            upstreams=known,
            notice=notice,
            error=error,
            csrf=self.frame.csrf(session, "approve_pins"),
        )

    async def approve_pins(self, request: Request, principal: Principal, session: WebSession) -> Response:
        form = self.frame.form(request)
        upstream, tool = form.get("upstream", "")[:MAX_FIELD], form.get("tool", "")[:MAX_FIELD]
        parts = ["tools", "pins", *([upstream] if upstream else []), *([tool] if upstream and tool else []), "approve"]
        # One tool: exactly the definition whose diff the page showed (409 if the upstream changed it since).
        body = {"sha256": form["sha256"][:64]} if upstream and tool and form.get("sha256") else None
        try:
            _, done = await self.services.admin.perform(principal, "POST", parts, body)
        except OpError as exc:
            return await self._page(principal, session, "", error=exc.message, status=exc.status)
        await self.services.sync()  # this replica serves the approved definitions before the next page
        approved = [f"{a['upstream']}/{a['tool']}" for a in done["approved"]]
        what = ", ".join(approved) if approved else "nothing (nothing was waiting)"
        return redirect(f"{PREFIX}/pins?{self.frame.notice_query(session, 'approved', what[:MAX_FIELD])}")
