"""The console's grants page: who may use which server or tools, edited in place, and the explain box.

GET  /admin/grants[?server=<id>][&who=<user>&tool=<name>]  grants (all, or those touching one server), the
                                                          add form, and "can <who> call <server>/<tool>"
POST /admin/grants                                        add a grant (POST /admin/api/grants)
POST /admin/grants/{grant_id}/remove                      remove an API-made grant (DELETE /admin/api/grants/{id})

Grants from manifold.yaml are listed read-only, with their file. The explain box decides exactly as
`manifold explain` does: the same principal (admin/explain.py `principal_from`), the same resolution of the
exposed name (`resolve_live` over the gateway's own list cache, the configuration's rules where a list needs
a caller's credential) and the same decision text (policy/explain.py `explain`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from manifold.admin.explain import principal_from, resolve_live
from manifold.admin.ops import OpError
from manifold.config.loaded import LoadedConfig
from manifold.console.frame import METHODS, PREFIX, Frame, redirect, render
from manifold.policy.access import PolicyAccess
from manifold.policy.explain import explain
from manifold.policy.store import StoredGrant, file_grants
from manifold.principal import Principal, PrincipalKind
from manifold.web.session import WebSession

FORM_FIELDS = (
    "kind", "subject", "server", "tools", "description",
    "approval_tools", "approvers", "approval_timeout", "approval_valid", "self_approval",
)  # fmt: skip
SUBJECT_KINDS = {"user": "User (email or subject)", "team": "Team", "sa": "Service account"}
MAX_FIELD = 400


@dataclass(frozen=True)
class GrantRow:
    id: str
    who: str
    what: list[str]
    description: str | None
    source: str  # the file it is declared in, or "console / API"
    removable: bool
    gate: list[str] | None = None  # the tools whose calls wait for approval (None: no gate)
    approvers: str | None = None
    gate_terms: str = ""  # how long a call waits, how long an approval lasts, self-approval: in words


@dataclass(frozen=True)
class Explained:
    allowed: bool
    lines: list[str]  # the decision line first, then why (as `manifold explain` prints them)


def grant_row(stored: StoredGrant, config_file: str) -> GrantRow:
    c = stored.config
    from_file = stored.source != "api"
    return GrantRow(
        id=stored.id,
        who=c.who,
        what=list(c.what),
        description=c.description,
        source=config_file if from_file else "console / API",
        removable=not from_file,
        gate=list(c.require_approval) or None,
        approvers=c.approvers,
        gate_terms=_gate_terms(c.approval_timeout_seconds, c.approval_valid_seconds, c.self_approval),
    )


def _gate_terms(timeout: float, valid: float, self_approval: bool) -> str:
    terms = [f"a call waits {_duration(timeout)}", f"an approval lasts {_duration(valid)}" if valid else "one call"]
    if self_approval:
        terms.append("self-approval allowed")
    return "; ".join(terms)


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _seconds(text: str, what: str, errors: list[str]) -> float | None:
    """A number of seconds typed in the form (empty: None); a word that is not one is said on the page."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        errors.append(f"{what} must be a number of seconds.")
        return None
    if value != value or value in (float("inf"), float("-inf")):
        errors.append(f"{what} must be a number of seconds.")
        return None
    return value


def _globs(tools_text: str) -> list[str]:
    return [g.strip() for line in tools_text.splitlines() for g in line.split(",") if g.strip()]


def what_for(server_id: str, virtual: bool, members: list[str], tools_text: str) -> list[str]:
    """The `what` selectors of a grant on `server_id`: the whole server when no tool glob is given, else
    `tool:<upstream>/<glob>` per glob (on a virtual server a bare glob applies to each member's upstream;
    `upstream/glob` names one). The approval form's tools are read the same way."""
    globs = _globs(tools_text)
    if not globs:
        return [f"vserver:{server_id}" if virtual else f"server:{server_id}"]
    what: list[str] = []
    for glob in globs:
        if "/" in glob:
            what.append(f"tool:{glob}")
        else:
            what.extend(f"tool:{upstream}/{glob}" for upstream in dict.fromkeys(members))
    return what


class GrantPages:
    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.services = frame.services

    def routes(self) -> list[BaseRoute]:
        page = self.frame.page
        return [
            Route(PREFIX + "/grants", page(self.grants), methods=METHODS),
            Route(PREFIX + "/grants/add", page(self.add_grant, post=True), methods=METHODS),
            Route(PREFIX + "/grants/{grant_id}/remove", page(self.remove_grant, post=True), methods=METHODS),
        ]

    async def _config(self) -> LoadedConfig:
        """The configuration in force: the files plus the upstreams, groups and servers made through the API."""
        base = self.services.admin.config
        return (await self.services.catalog_ops.current()).effective_config(base)

    async def _stored(self, config: LoadedConfig) -> list[StoredGrant]:
        return file_grants(config.gateway.grants) + await self.services.admin.ops.grants.list()

    async def grants(self, request: Request, principal: Principal, session: WebSession) -> Response:
        query = request.query_params
        return await self._page(
            session,
            server=query.get("server", "")[:MAX_FIELD],
            explain_who=query.get("who", "")[:MAX_FIELD],
            explain_tool=query.get("tool", "")[:MAX_FIELD],
            asked=query.get("who") is not None,
            notice=f"Added grant {added}." if (added := self.frame.notice(request, session, "added")) else None,
        )

    async def _page(
        self,
        session: WebSession,
        *,
        server: str,
        explain_who: str = "",
        explain_tool: str = "",
        asked: bool = False,
        form: dict[str, str] | None = None,
        errors: list[str] | None = None,
        status: int = 200,
        notice: str | None = None,
    ) -> Response:
        config = await self._config()
        servers = config.served_servers()
        stored = await self._stored(config)
        access = PolicyAccess(config)
        access.load(stored)
        selected = servers.get(server)
        if selected is not None:
            touching = {g.id for m in selected.members for g, _ in access.policy.touching(server, m.upstream)}
            stored = [s for s in stored if s.id in touching]
        rows = [grant_row(s, config.path.name) for s in stored]
        explained: Explained | None = None
        explain_error: str | None = None
        if asked:
            explained, explain_error = await self._explain(config, access, server, explain_who, explain_tool)
        frame = self.frame
        return render(
            "grants.html",
            status,
            viewer=frame.who(session),
            rows=rows,
            servers=sorted(servers),
            virtual=set(config.virtual_servers),
            server=server if selected is not None else "",
            unknown_server=server if server and selected is None else "",
            subject_kinds=SUBJECT_KINDS,
            form=form or {key: "" for key in FORM_FIELDS} | {"kind": "user", "server": server},
            errors=errors or [],
            notice=notice,
            explain_who=explain_who,
            explain_tool=explain_tool,
            explained=explained,
            explain_error=explain_error,
            add_csrf=frame.csrf(session, "add_grant"),
            remove_csrf={r.id: frame.csrf(session, "remove_grant", r.id) for r in rows if r.removable},
        )

    async def _explain(
        self, config: LoadedConfig, access: PolicyAccess, server_id: str, who: str, tool: str
    ) -> tuple[Explained | None, str | None]:
        server = config.served_servers().get(server_id)
        if server is None:
            return None, "Choose a server first."
        if not who.strip():
            return None, "Name the user (an email or subject), or sa:<id>."
        directory = self.services.admin.ops.directory
        await directory.load()
        try:
            asked = principal_from(who.strip(), directory, [])
        except ValueError as exc:
            return None, str(exc)
        members = [(m.member_id, m.upstream) for m in server.members]
        named = who.strip().removeprefix("user:")
        unknown = (
            [f"  note: no user '{named}' is configured (users:): evaluated as a person with no teams (a typo?)"]
            if asked.kind is PrincipalKind.USER and not directory.snapshot.knows_user(named)
            else []
        )  # console review: a typo was evaluated silently, as a real person without grants
        if not tool.strip():
            lines = explain(access.policy, asked, server_id, members)
            return Explained(lines[0].startswith("ALLOW"), [*lines, *unknown]), None
        found = await resolve_live(config, server_id, server, tool.strip(), self.services.lists)
        if found.item is None:
            return None, f"'{tool.strip()}' is not served by '{server_id}': {found.not_served}"
        lines = explain(access.policy, asked, server_id, members, found.item)
        notes = [*(f"  note: {n}" for n in found.notes), *unknown]
        return Explained(lines[0].startswith("ALLOW"), [*lines, *notes]), None

    async def add_grant(self, request: Request, principal: Principal, session: WebSession) -> Response:
        form = {k: self.frame.form(request).get(k, "")[:4000] for k in FORM_FIELDS}
        errors: list[str] = []
        kind, subject, server_id = form["kind"], form["subject"].strip(), form["server"]
        config = await self._config()
        server = config.served_servers().get(server_id)
        if kind not in SUBJECT_KINDS:
            errors.append("Choose who the grant is for: a user, a team or a service account.")
        if not subject:
            errors.append("Name the user, team or service account.")
        if server is None:
            errors.append("Choose a server.")
        timeout = _seconds(form["approval_timeout"], "How long a call waits for approval", errors)
        valid = _seconds(form["approval_valid"], "How long an approval lasts", errors)
        self_approval = form["self_approval"] == "on"
        gated = bool(_globs(form["approval_tools"]) or form["approvers"].strip())
        if not gated and (timeout is not None or valid is not None or self_approval):
            errors.append("The approval's terms need a gate: name the tools that wait for approval and the approvers.")
        if errors or server is None:
            return await self._page(session, server=server_id, form=form, errors=errors, status=400)
        virtual = server_id in config.virtual_servers
        body: dict[str, object] = {
            "who": f"{kind}:{subject}",
            "what": what_for(server_id, virtual, [m.upstream for m in server.members], form["tools"]),
        }
        if form["description"].strip():
            body["description"] = form["description"].strip()
        if gated:  # checked by the API, as any grant (ranges included)
            members = [m.upstream for m in server.members]
            body["require_approval"] = (
                what_for(server_id, virtual, members, form["approval_tools"]) if _globs(form["approval_tools"]) else []
            )
            body["approvers"] = form["approvers"].strip() or None
            if timeout is not None:
                body["approval_timeout_seconds"] = timeout
            if valid is not None:
                body["approval_valid_seconds"] = valid
            if self_approval:
                body["self_approval"] = True
        try:
            _, made = await self.services.admin.perform(principal, "POST", ["grants"], body)
        except OpError as exc:
            return await self._page(session, server=server_id, form=form, errors=[exc.message], status=exc.status)
        await self.services.sync()
        return redirect(f"{PREFIX}/grants?{self.frame.notice_query(session, 'added', made['id'], server=server_id)}")

    async def remove_grant(self, request: Request, principal: Principal, session: WebSession) -> Response:
        grant_id = request.path_params["grant_id"]
        server_id = self.frame.form(request).get("server", "")[:MAX_FIELD]
        try:
            await self.services.admin.perform(principal, "DELETE", ["grants", grant_id])
        except OpError as exc:
            return await self._page(session, server=server_id, errors=[exc.message], status=exc.status)
        await self.services.sync()
        return redirect(f"{PREFIX}/grants?{urlencode({'server': server_id})}" if server_id else f"{PREFIX}/grants")
