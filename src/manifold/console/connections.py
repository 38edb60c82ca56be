"""The console's connections page: which users connected which OAuth upstreams, and revoking one.

GET  /admin/connections[?user=]     user, upstream, status, scopes, expiry, connected at (never a token)
POST /admin/connections/revoke      fields user, upstream: DELETE /admin/api/connections?user=&upstream=
                                    (RFC 7009 at the authorization server where it has a revocation
                                    endpoint; the user sees "connect your account" again)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from manifold.admin.ops import OpError
from manifold.console.access_views import when
from manifold.console.frame import METHODS, PREFIX, Frame, redirect, render
from manifold.principal import Principal
from manifold.web.session import WebSession

MAX_FIELD = 400


@dataclass(frozen=True)
class ConnectionRow:
    user: str
    upstream: str
    status: str
    scopes: str
    expires: str
    connected: str
    updated: str


def connection_row(c: dict[str, Any]) -> ConnectionRow:
    return ConnectionRow(
        user=str(c["user"]),
        upstream=str(c["upstream"]),
        status=str(c["status"]),
        scopes=" ".join(c.get("scopes") or []) or "—",
        expires=when(c.get("expires_at"), "no lifetime given"),
        connected=when(c.get("created_at")),
        updated=when(c.get("updated_at")),
    )


class ConnectionPages:
    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.services = frame.services

    def routes(self) -> list[BaseRoute]:
        page = self.frame.page
        return [
            Route(PREFIX + "/connections", page(self.connections), methods=METHODS),
            Route(PREFIX + "/connections/revoke", page(self.revoke_connection, post=True), methods=METHODS),
        ]

    async def connections(self, request: Request, principal: Principal, session: WebSession) -> Response:
        user = request.query_params.get("user", "").strip()[:MAX_FIELD]
        done = self.frame.notice(request, session, "revoked")
        return await self._page(principal, session, user, notice=f"Revoked the connection {done}." if done else None)

    async def _page(
        self,
        principal: Principal,
        session: WebSession,
        user: str,
        *,
        notice: str | None = None,
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        query = {"user": user} if user else {}
        _, found = await self.services.admin.perform(principal, "GET", ["connections"], query=query)
        return render(
            "connections.html",
            status,
            viewer=self.frame.who(session),
            rows=[connection_row(c) for c in found],
            user=user,
            notice=notice,
            error=error,
            csrf=self.frame.csrf(session, "revoke_connection"),
        )

    async def revoke_connection(self, request: Request, principal: Principal, session: WebSession) -> Response:
        form = self.frame.form(request)
        user, upstream = form.get("user", "")[:MAX_FIELD], form.get("upstream", "")[:MAX_FIELD]
        query = {"user": user, "upstream": upstream}
        try:
            _, done = await self.services.admin.perform(principal, "DELETE", ["connections"], query=query)
        except OpError as exc:
            return await self._page(principal, session, "", error=exc.message, status=exc.status)
        await self.services.sync()
        what = f"of {done['user']} to {done['upstream']}"
        return redirect(f"{PREFIX}/connections?{self.frame.notice_query(session, 'revoked', what)}")
