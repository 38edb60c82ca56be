"""The admin console, one ASGI app mounted at `/admin` (app.py routes `/admin` and `/admin/...` here, except
`/admin/api/`, the JSON API).

Who may: a person signed in to the web pages (`/login?next=/admin`) who is an admin principal — the check
the admin API makes (policy/admins.py `is_admin`); everyone else gets 403 on every URL and form, and someone
not signed in is sent to sign in. Every POST passes the web pages' cross-site check and carries a CSRF token
bound to the session, to its action and to the object it acts on (web/csrf.py). Changes go through the admin
API's own operations (`AdminApi.perform`: one code path, audited). Errors are pages, never a traceback.

The pages live in one module per concern (console/frame.py has what they share):
    upstreams.py   home, upstreams, an upstream's tools
    servers.py     virtual servers: list, editor with a live preview, snippets
    access.py      grants and explain, keys and service accounts, connections, audit
    pins.py        tool pins: changed tool definitions, their diffs, approving them
    GET /admin/static/{htmx.min.js,console.css}  the console's own files (htmx vendored from npm `htmx.org`)
"""

from __future__ import annotations

from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Send as StarletteSend

from manifold.asgi import Receive, Scope, Send
from manifold.console.access import AccessPages
from manifold.console.frame import PREFIX, Frame, Services, problem, static_file
from manifold.console.pins import PinPages
from manifold.console.servers import ServerPages
from manifold.console.upstreams import UpstreamPages

STATIC = {"htmx.min.js": "text/javascript", "console.css": "text/css", "console.js": "text/javascript"}
YEAR_SECONDS = 365 * 24 * 3600


class ConsoleApp:
    """`await console(scope, receive, send)` for `/admin` and `/admin/...` (not `/admin/api/`)."""

    def __init__(self, services: Services) -> None:
        self.frame = Frame(services)
        routes = [
            *UpstreamPages(self.frame).routes(),
            *ServerPages(self.frame).routes(),
            *AccessPages(self.frame).routes(),
            *PinPages(self.frame).routes(),
            Route(PREFIX + "/static/{name}", self._static, methods=["GET", "HEAD"]),
        ]
        self.router = Router(routes=routes, redirect_slashes=False, default=self._not_found)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        send_message = cast(StarletteSend, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if headers.get("origin") == "null" and headers.get("sec-fetch-site") == "same-origin":
            del headers["origin"]  # as the web pages (web/routes.py): the browser's own word, Host still checked
        refused = self.frame.origin.check(headers)
        if refused is not None:
            await problem(403, "Not allowed", refused)(scope, receive, send_message)
            return
        await self.router(scope, receive, send_message)

    async def _static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return problem(404, "Not found", "There is no such file.")
        body, version = static_file(name)
        cache = f"public, max-age={YEAR_SECONDS}, immutable" if request.query_params.get("v") == version else "no-cache"
        headers = {"x-content-type-options": "nosniff", "cache-control": cache, "etag": f'"{version}"'}
        return Response(body, media_type=STATIC[name], headers=headers)

    async def _not_found(self, scope: Any, receive: Any, send: Any) -> None:
        await problem(404, "Not found", "There is no such console page.")(scope, receive, send)
