"""The admin console, one ASGI app mounted at `/admin` (app.py routes `/admin` and `/admin/...` here, except
`/admin/api/`, the JSON API).

    GET  /admin                                  home: what the console has, with counts
    GET  /admin/upstreams                        every upstream: transport, auth mode, state, last error, tools
    GET  /admin/upstreams/{id}/tools?q=&ro=1     one upstream's tools: description, input schema, annotations
    POST /admin/upstreams/{id}/refresh           fetch that tool list again
    GET  /admin/static/{htmx.min.js,console.css} the console's own files (htmx vendored from npm `htmx.org`)

Who may: a person signed in to the web pages (`/login?next=/admin`) who is an admin principal — the check
the admin API makes (policy/admins.py `is_admin`); everyone else gets 403 on every URL and form, and someone
not signed in is sent to sign in. Every POST passes the web pages' cross-site check and carries a CSRF token
bound to the session and to its action (web/csrf.py). Reads go through the operations the admin API uses
(admin/catalog.py `CatalogOperations`). Errors are pages, never a traceback.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Protocol, cast

import jinja2
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route, Router
from starlette.types import Send as StarletteSend

from manifold.admin.catalog import CatalogOperations, Kind
from manifold.asgi import Receive, Scope, Send
from manifold.catalog.lists import UpstreamLists, describe_failure
from manifold.config.models import GatewaySettings
from manifold.console.views import UpstreamRow, matching, upstream_row
from manifold.identity.api_keys import KeyRepository
from manifold.identity.directory import Snapshot
from manifold.identity.gateway_tokens import principal_for
from manifold.policy.admins import is_admin
from manifold.principal import Credential, CredentialKind, Principal
from manifold.security.origin import OriginPolicy
from manifold.web import csrf
from manifold.web.forms import BodyTooLarge, TooManyFields, form_fields, read_body
from manifold.web.page_request import viewer
from manifold.web.pages import stylesheet
from manifold.web.session import SessionCookies, WebSession

log = logging.getLogger(__name__)

PREFIX = "/admin"
# The web pages' policy, plus the console's own script (htmx) and its requests back to the console.
CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}
STATIC = {"htmx.min.js": "text/javascript", "console.css": "text/css"}
YEAR_SECONDS = 365 * 24 * 3600


class Health(Protocol):
    """The pool's view of each upstream (upstream/pool.py `UpstreamPool.health`)."""

    def health(self) -> dict[str, dict[str, object]]: ...


@functools.cache
def _static(name: str) -> tuple[bytes, str]:
    body = resources.files("manifold.console").joinpath("static", name).read_bytes()
    return body, hashlib.sha256(body).hexdigest()[:16]


def static_url(name: str) -> str:
    return f"{PREFIX}/static/{name}?v={_static(name)[1]}"


@functools.cache
def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("manifold.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals["static_url"] = static_url
    env.globals["stylesheet_url"] = lambda: stylesheet().url
    return env


def render(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    return HTMLResponse(_templates().get_template(template).render(**values), status_code=status, headers=HEADERS)


def problem(status: int, title: str, message: str, who: object = None) -> HTMLResponse:
    return render("problem.html", status, title=title, message=message, viewer=who)


class Refused(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("refused")
        self.response = response


class ConsoleApp:
    """`await console(scope, receive, send)` for `/admin` and `/admin/...` (not `/admin/api/`)."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        admins: list[str],
        cookies: SessionCookies,
        keys: KeyRepository,
        directory: Callable[[], Snapshot],
        catalog_ops: CatalogOperations,
        health: Health,
        lists: UpstreamLists,
        sync: Callable[[], Awaitable[None]],
    ) -> None:
        self.public_url = settings.public_url
        self.max_body = settings.max_body_bytes
        self.origin = OriginPolicy.from_settings(settings)
        self.admins = admins
        self.cookies = cookies
        self.keys = keys
        self.directory = directory
        self.catalog_ops = catalog_ops
        self.pool = health
        self.lists = lists
        self.sync = sync
        self.router = Router(
            routes=[
                Route(PREFIX, self._page(self.home), methods=["GET", "HEAD", "POST"]),
                Route(PREFIX + "/upstreams", self._page(self.upstreams), methods=["GET", "HEAD", "POST"]),
                Route(
                    PREFIX + "/upstreams/{upstream_id}/tools", self._page(self.tools), methods=["GET", "HEAD", "POST"]
                ),
                Route(
                    PREFIX + "/upstreams/{upstream_id}/refresh",
                    self._page(self.refresh, post=True),
                    methods=["GET", "HEAD", "POST"],
                ),
                Route(PREFIX + "/static/{name}", self._static, methods=["GET", "HEAD"]),
            ],
            redirect_slashes=False,
            default=self._not_found,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        send_message = cast(StarletteSend, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if headers.get("origin") == "null" and headers.get("sec-fetch-site") == "same-origin":
            del headers["origin"]  # as the web pages (web/routes.py): the browser's own word, Host still checked
        refused = self.origin.check(headers)
        if refused is not None:
            await problem(403, "Not allowed", refused)(scope, receive, send_message)
            return
        await self.router(scope, receive, send_message)

    # ---- the checks every page passes ----------------------------------------------------------------

    def _page(
        self, handler: Callable[[Request, Principal, WebSession], Awaitable[Response]], *, post: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                if post != (request.method == "POST"):
                    return problem(405, "Not allowed", f"{request.url.path[:200]} takes no {request.method[:10]}.")
                await self.sync()
                principal, session = await self._admin(request)
                if request.method == "POST":
                    await self._check_post(request, session, handler.__name__)
                return await handler(request, principal, session)
            except Refused as exc:
                return exc.response
            except Exception:  # noqa: BLE001 — a page that says so, never a traceback in the browser
                log.exception("console page %s failed", request.url.path)
                return problem(500, "Something went wrong", "The console could not show this page.")

        return endpoint

    async def _admin(self, request: Request) -> tuple[Principal, WebSession]:
        session = self.cookies.session(dict(request.cookies))
        if session is None:
            if request.method == "POST":
                raise Refused(problem(403, "Not allowed", "Sign in first."))
            target = PREFIX if request.url.path == PREFIX else request.url.path
            raise Refused(RedirectResponse(f"/login?next={target}", status_code=303, headers=HEADERS))
        principal = await self._principal(session)
        who = viewer(self.cookies.signer, session)
        if principal is None or not is_admin(principal, self.admins):
            raise Refused(problem(403, "Not allowed", "The console is for the gateway's administrators.", who))
        return principal, session

    async def _principal(self, session: WebSession) -> Principal | None:
        kind, _, ref = session.method.partition(":")
        if kind == "api_key":
            record = await self.keys.get(ref)  # the session is only as good as the key that opened it
            if record is None or record.usable(time.time()) is not None:
                return None
            credential = Credential(CredentialKind.API_KEY, ref)
        else:
            credential = Credential(CredentialKind.IDP_JWT, ref or None)
        return principal_for(session.principal_id, self.directory(), credential)

    async def _check_post(self, request: Request, session: WebSession, action: str) -> None:
        base = self.public_url or f"http://{request.headers.get('host') or '127.0.0.1'}"
        cross = csrf.cross_site(request.headers, base)
        if cross is not None:
            raise Refused(problem(403, "Not allowed", cross))
        try:
            form = form_fields(request.headers.get("content-type"), await read_body(request, self.max_body))
        except BodyTooLarge:
            raise Refused(problem(413, "Too large", f"The form is over {self.max_body} bytes.")) from None
        except (TooManyFields, ClientDisconnect):
            raise Refused(problem(400, "Not understood", "The form could not be read.")) from None
        if not csrf.valid(self.cookies.signer, session.sid, self.action(action, request), form.get("csrf")):
            raise Refused(problem(403, "Not allowed", "The form was not one this console gave you; reload the page."))

    @staticmethod
    def action(name: str, request: Request) -> str:
        """What a form's CSRF token is bound to: the handler and the object it acts on."""
        return f"console:{name}:{request.path_params.get('upstream_id', '')}"

    # ---- pages ---------------------------------------------------------------------------------------

    def _who(self, session: WebSession) -> object:
        return viewer(self.cookies.signer, session)

    async def _rows(self) -> list[UpstreamRow]:
        health = self.pool.health()
        rows: list[UpstreamRow] = []
        for entry in await self.catalog_ops.list(Kind.UPSTREAM):
            upstream_id = str(entry.get("id"))
            cached = self.lists.entry(upstream_id, "tools")  # what is known; listing connects nothing here
            tools = len(cached.items) if cached.fetched_at >= 0 else None
            rows.append(upstream_row(entry, health.get(upstream_id, {}), tools, None))
        return rows

    async def home(self, request: Request, principal: Principal, session: WebSession) -> Response:
        rows = await self._rows()
        states = {s: sum(1 for r in rows if r.state == s) for s in ("up", "degraded", "down", "idle")}
        return render("home.html", viewer=self._who(session), upstreams=len(rows), states=states)

    async def upstreams(self, request: Request, principal: Principal, session: WebSession) -> Response:
        return render("upstreams.html", viewer=self._who(session), rows=await self._rows())

    async def tools(self, request: Request, principal: Principal, session: WebSession) -> Response:
        upstream_id = request.path_params["upstream_id"]
        ids = {str(e.get("id")): e for e in await self.catalog_ops.list(Kind.UPSTREAM)}
        entry = ids.get(upstream_id)
        if entry is None:
            return problem(404, "Not found", f"There is no upstream '{upstream_id[:100]}'.", self._who(session))
        query = request.query_params.get("q", "")[:200]
        read_only = request.query_params.get("ro") == "1"
        error: str | None = None
        items: list[dict[str, Any]] = []
        try:
            items = (await self.lists.get(upstream_id, "tools")).items
        except Exception as exc:  # noqa: BLE001 — an upstream that cannot list is shown as such, with why
            error = describe_failure(exc)
        row = upstream_row(entry, self.pool.health().get(upstream_id, {}), None if error else len(items), error)
        refresh = csrf.token(self.cookies.signer, session.sid, f"console:refresh:{upstream_id}")
        return render(
            "tools.html",
            viewer=self._who(session),
            upstream=row,
            tools=matching(items, query, read_only),
            total=len(items),
            query=query,
            read_only=read_only,
            refresh_csrf=refresh,
        )

    async def refresh(self, request: Request, principal: Principal, session: WebSession) -> Response:
        upstream_id = request.path_params["upstream_id"]
        self.lists.invalidate(upstream_id, "tools")
        log.info("console: %s refreshed the tool list of %s", principal.id, upstream_id[:100])
        return RedirectResponse(f"{PREFIX}/upstreams/{upstream_id}/tools", status_code=303, headers=HEADERS)

    async def _static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return problem(404, "Not found", "There is no such file.")
        body, version = _static(name)
        cache = f"public, max-age={YEAR_SECONDS}, immutable" if request.query_params.get("v") == version else "no-cache"
        headers = {"x-content-type-options": "nosniff", "cache-control": cache, "etag": f'"{version}"'}
        return Response(body, media_type=STATIC[name], headers=headers)

    async def _not_found(self, scope: Any, receive: Any, send: Any) -> None:
        await problem(404, "Not found", "There is no such console page.")(scope, receive, send)
