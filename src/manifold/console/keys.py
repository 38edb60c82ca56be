"""The console's keys and service accounts page.

GET  /admin/keys                                 every key (active, expired, revoked), the service accounts, and
                                                 the forms that create them
POST /admin/keys/add                             create a key (POST /admin/api/keys): the answer is the one page
                                                 that shows its secret, rendered for this POST (no redirect
                                                 carries it; `cache-control: no-store`)
GET  /admin/keys/{key_id}                        confirm revoking it
POST /admin/keys/{key_id}/revoke                 revoke it (DELETE /admin/api/keys/{id})
POST /admin/service-accounts/add                 create a service account (POST /admin/api/service-accounts)
GET  /admin/service-accounts/{sa_id}             confirm deleting it (its keys are revoked with it)
POST /admin/service-accounts/{sa_id}/delete      delete it (DELETE /admin/api/service-accounts/{id})

The create form carries a one-time field (`once`): the same form sent again (a reload of the result page
re-posts it) creates no second key and shows no secret. The used values are remembered in memory, bounded
(`MAX_REMEMBERED`), by this process.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from manifold.admin.ops import OpError
from manifold.console.access_views import when
from manifold.console.frame import METHODS, PREFIX, Frame, problem, redirect, render
from manifold.principal import Principal
from manifold.web.session import WebSession

MAX_REMEMBERED = 4096
KEY_FIELDS = ("owner", "name", "expires", "servers", "once")
SA_FIELDS = ("id", "description", "teams")


@dataclass(frozen=True)
class KeyRow:
    id: str
    name: str
    owner: str
    servers: str
    created: str
    last_used: str
    expires: str
    state: str  # active | expired | revoked
    revoked: str


def key_row(k: dict[str, Any]) -> KeyRow:
    servers = k.get("servers")
    return KeyRow(
        id=str(k["id"]),
        name=str(k["name"]),
        owner=str(k["owner"]),
        servers="all" if servers is None else ", ".join(servers) or "none",
        created=when(k.get("created_at")),
        last_used=when(k.get("last_used_at"), "never (or not yet recorded)"),
        expires=when(k.get("expires_at"), "never"),
        state=str(k.get("state", "active")),
        revoked=when(k.get("revoked_at"), ""),
    )


def key_body(form: dict[str, str]) -> dict[str, Any]:
    """The admin API's body for a key: `sa:<id>` is a service account, anything else a user."""
    owner = form["owner"].strip()
    body: dict[str, Any] = {"name": form["name"].strip()}
    if owner.startswith("sa:"):
        body["sa"] = owner.removeprefix("sa:")
    else:
        body["user"] = owner.removeprefix("user:")
    if form["expires"].strip():
        body["expires"] = form["expires"].strip()
    servers = [s.strip() for s in form["servers"].split(",") if s.strip()]
    if servers:
        body["servers"] = servers
    return body


class KeyPages:
    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.services = frame.services
        self._sent: OrderedDict[str, None] = OrderedDict()  # `once` values of create forms already used

    def routes(self) -> list[BaseRoute]:
        page = self.frame.page
        return [
            Route(PREFIX + "/keys", page(self.keys), methods=METHODS),
            Route(PREFIX + "/keys/add", page(self.create_key, post=True), methods=METHODS),
            Route(PREFIX + "/keys/{key_id}", page(self.confirm_revoke), methods=METHODS),
            Route(PREFIX + "/keys/{key_id}/revoke", page(self.revoke_key, post=True), methods=METHODS),
            Route(PREFIX + "/service-accounts/add", page(self.create_sa, post=True), methods=METHODS),
            Route(PREFIX + "/service-accounts/{sa_id}", page(self.confirm_delete_sa), methods=METHODS),
            Route(PREFIX + "/service-accounts/{sa_id}/delete", page(self.delete_sa, post=True), methods=METHODS),
        ]

    # ---- the list ------------------------------------------------------------------------------------

    async def keys(self, request: Request, principal: Principal, session: WebSession) -> Response:
        notice = {"revoked": "The key is revoked.", "deleted": "The service account is deleted."}.get(
            request.query_params.get("done", "")
        )
        return await self._page(principal, session, notice=notice)

    async def _page(
        self,
        principal: Principal,
        session: WebSession,
        *,
        key_form: dict[str, str] | None = None,
        sa_form: dict[str, str] | None = None,
        key_errors: list[str] | None = None,
        sa_errors: list[str] | None = None,
        notice: str | None = None,
        status: int = 200,
    ) -> Response:
        admin = self.services.admin
        _, keys = await admin.perform(principal, "GET", ["keys"], query={"all": "1"})
        _, accounts = await admin.perform(principal, "GET", ["service-accounts"])
        _, users = await admin.perform(principal, "GET", ["users"])
        rows = sorted((key_row(k) for k in keys), key=lambda r: (r.state != "active", r.owner, r.created))
        key_form = dict(key_form or {"owner": "", "name": "", "expires": "", "servers": ""})
        key_form["once"] = secrets.token_urlsafe(16)  # a fresh one: this page's form may be sent once
        frame = self.frame
        return render(
            "keys.html",
            status,
            viewer=frame.who(session),
            rows=rows,
            accounts=accounts,
            owners=[f"{u['id']}" for u in users] + [f"sa:{a['id']}" for a in accounts],
            key_form=key_form,
            sa_form=sa_form or {"id": "", "description": "", "teams": ""},
            key_errors=key_errors or [],
            sa_errors=sa_errors or [],
            notice=notice,
            key_csrf=frame.csrf(session, "create_key"),
            sa_csrf=frame.csrf(session, "create_sa"),
        )

    # ---- keys ----------------------------------------------------------------------------------------

    async def create_key(self, request: Request, principal: Principal, session: WebSession) -> Response:
        form = {k: self.frame.form(request).get(k, "")[:1000] for k in KEY_FIELDS}
        once = form["once"]
        if once in self._sent:
            return render("keys_sent.html", 409, viewer=self.frame.who(session), title="This form was already sent")
        errors = []
        if not form["owner"].strip():
            errors.append("Name the owner: a user's email or subject, or sa:<service account id>.")
        if not form["name"].strip():
            errors.append("Give the key a name (what it is for, e.g. ci or laptop).")
        if errors:
            return await self._page(principal, session, key_form=form, key_errors=errors, status=400)
        try:
            _, made = await self.services.admin.perform(principal, "POST", ["keys"], key_body(form))
        except OpError as exc:
            return await self._page(principal, session, key_form=form, key_errors=[exc.message], status=exc.status)
        if once:
            self._sent[once] = None
            while len(self._sent) > MAX_REMEMBERED:
                self._sent.popitem(last=False)
        await self.services.sync()
        # The secret exists only in this answer: rendered for this POST, never stored, never redirected with.
        return render("keys_created.html", 201, viewer=self.frame.who(session), key=key_row(made), token=made["token"])

    async def _key(self, principal: Principal, key_id: str) -> dict[str, Any] | None:
        _, keys = await self.services.admin.perform(principal, "GET", ["keys"], query={"all": "1"})
        return next((k for k in keys if k["id"] == key_id), None)

    async def confirm_revoke(self, request: Request, principal: Principal, session: WebSession) -> Response:
        key_id = request.path_params["key_id"]
        found = await self._key(principal, key_id)
        if found is None:
            return problem(404, "Not found", f"There is no key '{key_id[:100]}'.", self.frame.who(session))
        return render(
            "keys_revoke.html",
            viewer=self.frame.who(session),
            key=key_row(found),
            csrf=self.frame.csrf(session, "revoke_key", key_id),
            own=session.method == f"api_key:{key_id}",  # the key this console session was signed in with
        )

    async def revoke_key(self, request: Request, principal: Principal, session: WebSession) -> Response:
        key_id = request.path_params["key_id"]
        try:
            await self.services.admin.perform(principal, "DELETE", ["keys", key_id])
        except OpError as exc:
            return problem(exc.status, "Not revoked", exc.message, self.frame.who(session))
        await self.services.sync()
        return redirect(f"{PREFIX}/keys?done=revoked")

    # ---- service accounts ----------------------------------------------------------------------------

    async def create_sa(self, request: Request, principal: Principal, session: WebSession) -> Response:
        form = {k: self.frame.form(request).get(k, "")[:1000] for k in SA_FIELDS}
        body: dict[str, Any] = {"id": form["id"].strip()}
        if form["description"].strip():
            body["description"] = form["description"].strip()
        teams = [t.strip() for t in form["teams"].split(",") if t.strip()]
        if teams:
            body["teams"] = teams
        try:
            await self.services.admin.perform(principal, "POST", ["service-accounts"], body)
        except OpError as exc:
            return await self._page(principal, session, sa_form=form, sa_errors=[exc.message], status=exc.status)
        await self.services.sync()
        return redirect(f"{PREFIX}/keys#service-accounts")

    async def confirm_delete_sa(self, request: Request, principal: Principal, session: WebSession) -> Response:
        sa_id = request.path_params["sa_id"]
        _, accounts = await self.services.admin.perform(principal, "GET", ["service-accounts"])
        account = next((a for a in accounts if a["id"] == sa_id), None)
        if account is None:
            return problem(404, "Not found", f"There is no service account '{sa_id[:100]}'.", self.frame.who(session))
        _, keys = await self.services.admin.perform(principal, "GET", ["keys"], query={"owner": f"sa:{sa_id}"})
        return render(
            "keys_sa_delete.html",
            viewer=self.frame.who(session),
            account=account,
            keys=len(keys),
            csrf=self.frame.csrf(session, "delete_sa", sa_id),
        )

    async def delete_sa(self, request: Request, principal: Principal, session: WebSession) -> Response:
        sa_id = request.path_params["sa_id"]
        try:
            await self.services.admin.perform(principal, "DELETE", ["service-accounts", sa_id])
        except OpError as exc:
            return problem(exc.status, "Not deleted", exc.message, self.frame.who(session))
        await self.services.sync()
        return redirect(f"{PREFIX}/keys?done=deleted")
