"""Builds the gateway's ASGI app: routing, the checks every request passes, and the lifespan.

Order of checks on an MCP endpoint: Host/Origin (DNS-rebinding protection) → changes made elsewhere
(store/revisions.py) → credential (401) → server exists (404) → may use the server (403) → body size →
transport. `/healthz`, `/readyz` and the RFC 9728 metadata pass the same Host/Origin check (they name
upstreams and build URLs from the Host header); the web pages make it themselves (web/routes.py).
Routing is a few string operations rather than a framework router: it runs on every relayed call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from sqlalchemy.exc import DBAPIError

from manifold.admin.api import AdminApi
from manifold.asgi import JSON_HEADERS, Receive, Scope, Send, header_map, send_body
from manifold.audit.unauthorized import UnauthorizedAudit
from manifold.authserver.routes import PATHS as AUTHORIZATION_SERVER_PATHS
from manifold.catalog.served import ServedServers
from manifold.catalog.view import VirtualServerView
from manifold.config.loader import LoadedConfig
from manifold.identity import resource_server
from manifold.identity.authenticator import Authenticator, Unauthenticated
from manifold.policy.admins import is_admin
from manifold.principal import CredentialKind, Principal
from manifold.protocol import INVALID_REQUEST
from manifold.relay.access import Access, Auditor
from manifold.relay.hub import Listener
from manifold.relay.sse import LegacySse
from manifold.relay.streamable_http import StreamableHttp
from manifold.security.origin import OriginPolicy
from manifold.telemetry.context import CURRENT
from manifold.telemetry.logs import REQUEST_ID, request_id
from manifold.upstream.pool import UpstreamPool

if TYPE_CHECKING:
    from manifold.telemetry.tracing import Tracing

log = logging.getLogger(__name__)
# No icon (204, no body: RFC 9110 allows no Content-Length there), kept a day by the browser.
FAVICON_HEADERS = [(b"cache-control", b"public, max-age=86400"), (b"x-content-type-options", b"nosniff")]
JSON = dict[str, Any]
# What an upstream said, in each /healthz and /readyz upstream entry (upstream/health.py): an admin's only.
UPSTREAM_TEXT_FIELDS = ("last_error", "stderr")
HEALTH_DETAILS = "errors, stderr and collisions are shown to a gateway admin's credential (Authorization: Bearer)"


class Lifecycle(Protocol):
    """What the lifespan starts and stops (runtime/compose.py `Runtime`)."""

    async def start(self) -> None: ...

    def end_streams(self, spare: AbstractSet[Listener] = ...) -> None: ...

    async def aclose(self) -> None: ...


class Changes(Protocol):
    """Applies changes committed elsewhere before a request is decided (runtime/changes.py)."""

    async def sync(self) -> None: ...

    async def database_problem(self, *, read: bool) -> str | None: ...


class WebPages(Protocol):
    """The browser pages: connect, sign-in, OAuth callback, connections (web/)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


# A traced request's server span name, by (route, ends in /messages): only POSTs are traced.
_SPAN_NAMES = {
    (route, messages): f"POST /{route}/{{server}}" + ("/messages" if messages else "")
    for route in ("mcp", "sse")
    for messages in (False, True)
}
WEB_PREFIXES = (
    "/connect/",
    "/login",
    "/logout",
    "/connections",
    "/servers",
    "/oauth/callback",
    "/oauth/as/",  # a dynamically registered client's callback (outbound/oauth/registration.py)
    "/static/",
    "/approvals",
)


class ManifoldApp:
    def __init__(
        self,
        config: LoadedConfig,
        *,
        origin: OriginPolicy,
        authenticator: Authenticator,
        served: ServedServers,
        access: Access,
        auditor: Auditor,
        unauthorized: UnauthorizedAudit,
        changes: Changes,
        pool: UpstreamPool,
        http: StreamableHttp,
        sse: LegacySse,
        admin: AdminApi,
        web: WebPages,
        lifecycle: Lifecycle,
        authorization_server: WebPages | None = None,
        console: WebPages | None = None,
        metrics: WebPages | None = None,
        tracing: Tracing | None = None,
        json_logs: bool = False,
    ) -> None:
        self.config = config
        self.max_body = config.settings.max_body_bytes
        self.origin = origin
        self.authenticator = authenticator
        self.served = served
        self.access = access
        self.auditor = auditor
        self.unauthorized = unauthorized
        self.changes = changes
        self.pool = pool
        self.http = http
        self.sse = sse
        self.admin = admin
        self.web = web
        self.authorization_server = authorization_server  # authserver/: the gateway's own OAuth endpoints
        self.lifecycle = lifecycle
        self.console = console  # console/: the admin console at /admin (checks Host/Origin itself)
        self.metrics = metrics  # telemetry/endpoint.py: /metrics (its own bearer check; no Host/Origin check)
        self.tracing = tracing  # telemetry/tracing.py, None when tracing is off
        self.json_logs = json_logs  # telemetry.logs: json: each MCP request gets a request id in the log
        self.started = time.time()

    def end_streams(self) -> None:
        """The server is stopping (runtime/server.py `on_stopping`): held streams end now, but a legacy /sse
        stream still owed replies only once they are queued on it (they travel nowhere else)."""
        self.lifecycle.end_streams(self.sse.stopping())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._route(scope, receive, send)
        except DBAPIError as exc:
            # The database is busy past its timeout or unreachable: the caller may try again; not a 500, and
            # one line in the log (the driver's message may name the database URL).
            cause = type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
            log.warning("the database could not answer %s %s (%s)", scope.get("method"), scope.get("path"), cause)
            try:
                await send_body(send, 503, b'{"error":"the gateway\'s database is busy or unreachable; try again"}')
            except Exception:  # noqa: BLE001 — the answer had already begun: the connection just ends
                pass

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind == "websocket":
            # MCP has no WebSocket transport. uvicorn hands an upgrade request over as a handshake; closing it
            # before accepting answers 403 (returning without a word made uvicorn answer 500).
            await send({"type": "websocket.close", "code": 1008})
            return
        if kind != "http":
            return
        path: str = scope["path"]
        headers = header_map(scope)
        scope["_headers"] = headers

        if path in ("/healthz", "/readyz"):
            # Upstream names, states and errors: not for a page that rebinds its name to this gateway.
            if await self._refused(send, headers):
                return
            admin = await self._health_admin(scope, headers, path)
            await self._health(send, ready=path == "/readyz", admin=admin)
            return
        if path == "/favicon.ico":
            # Browsers ask for it on every page's first load; a 404 was an error in their console each time.
            await send({"type": "http.response.start", "status": 204, "headers": FAVICON_HEADERS})
            await send({"type": "http.response.body", "body": b""})
            return
        if path == "/metrics" and self.metrics is not None:
            await self.changes.sync()  # keys made or revoked elsewhere
            await self.metrics(scope, receive, send)
            return
        if path == "/" or path.startswith(WEB_PREFIXES):
            await self.web(scope, receive, send)  # web pages: web/
            return
        if path.startswith(resource_server.WELL_KNOWN_PRM + "/"):
            # The document's `resource` is built from the Host header: only from one that is allowed.
            if await self._refused(send, headers):
                return
            await self._protected_resource_metadata(send, path, headers)
            return
        parts = path.strip("/").split("/")
        if parts[0] == "admin" and self.console is not None and (len(parts) < 2 or parts[1] != "api"):
            await self.console(scope, receive, send)
            return
        if parts[0] == "admin" and len(parts) >= 2 and parts[1] == "api":
            problem = self.origin.check(headers)
            if problem is not None:
                await send_body(send, 403, orjson.dumps({"error": problem}))
                return
            await self.changes.sync()
            await self.admin(scope, receive, send, self._read_body)
            return
        if len(parts) < 2 or parts[0] not in ("mcp", "sse"):
            if self.authorization_server is not None and path in AUTHORIZATION_SERVER_PATHS:
                await self.authorization_server(scope, receive, send)  # checks Host/Origin itself
                return
            if "text/html" in headers.get("accept", ""):
                # A person typed or followed an address that is not ours: the web pages' own "Not found"
                # page (with who is signed in and a way on), not a JSON body; programs still get JSON.
                await self.web(scope, receive, send)
                return
            await send_body(send, 404, b'{"error":"not found"}')
            return
        problem = self.origin.check(headers)
        if problem is not None:
            await send_body(send, 403, orjson.dumps({"error": problem}))
            return
        await self.changes.sync()
        if self.json_logs:
            REQUEST_ID.set(request_id(headers.get("x-request-id")))
        began = time.time_ns() if self.tracing is not None else 0
        principal = await self._authenticate(scope, send, headers, parts)
        if principal is None:
            return
        authenticated = time.time_ns() if self.tracing is not None else 0
        view = self.served.get(parts[1])
        if view is None:
            server = parts[1][:100]
            unknown = {"error": "unknown server", "server": server}
            await send_body(send, 404, _refusal(scope, f"unknown server '{server}'", unknown))
            return
        if not self.access.server_allowed(principal, view):
            self.auditor.refusal(principal, view.id)
            why = f"you may not use server '{view.id}'"
            await send_body(send, 403, _refusal(scope, why, {"error": "forbidden", "error_description": why}))
            return

        body: bytes | None = None
        if scope["method"] == "POST":
            body = await self._read_body(scope, receive, send)
            if body is None:
                return
        if self.tracing is not None and body is not None:
            # The client's trace (header, or a 2026-07-28 request's _meta) is known once the body is read.
            # Only POSTs: a GET stream lives for hours and a DELETE does nothing worth a trace.
            tracing = self.tracing
            name = _SPAN_NAMES[parts[0], len(parts) == 3]
            kind = principal.credential.kind
            span = tracing.traced(name, headers, body, began, view.id, principal.id, authenticated, kind)
            token = CURRENT.set(span)  # not `with`: one call fewer on every traced request's way
            try:
                await self._transport(scope, receive, send, parts, view, principal, body)
            finally:
                CURRENT.reset(token)
                tracing.end(span)
            return
        await self._transport(scope, receive, send, parts, view, principal, body)

    def _transport(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        parts: list[str],
        view: VirtualServerView,
        principal: Principal,
        body: bytes | None,
    ) -> Awaitable[None]:
        # What to await: a plain function, no frame of its own on the stack of a held stream.
        if parts[0] == "mcp" and len(parts) == 2:
            return self.http(scope, receive, send, view, principal, body)
        if parts[0] == "sse" and len(parts) == 2 and scope["method"] == "GET":
            return self.sse.open_stream(scope, receive, send, view, principal)
        if parts[0] == "sse" and len(parts) == 3 and parts[2] == "messages" and scope["method"] == "POST":
            return self.sse.post_message(scope, send, view, principal, body or b"")
        return send_body(send, 404, b'{"error":"not found"}')

    async def _refused(self, send: Send, headers: dict[str, str]) -> bool:
        """The Host/Origin check (DNS-rebinding protection): True when the request was answered 403."""
        problem = self.origin.check(headers)
        if problem is None:
            return False
        await send_body(send, 403, orjson.dumps({"error": problem}))
        return True

    def _audit_refused(
        self, scope: Scope, authorization: str | None, exc: Unauthenticated, server: str, method: str
    ) -> None:
        """A refused credential, audited (throttled: audit/unauthorized.py) with the caller's address."""
        client = scope.get("client")
        self.unauthorized.refused(
            authorization=authorization,
            missing=exc.missing,
            reason=exc.reason,
            client=client[0] if client else None,
            server=server,
            method=method,
        )

    async def _authenticate(
        self, scope: Scope, send: Send, headers: dict[str, str], parts: list[str]
    ) -> Principal | None:
        authorization = headers.get("authorization")
        try:
            principal = await self.authenticator.authenticate(authorization, accept_gateway_tokens=True)
            if principal.credential.kind is CredentialKind.GATEWAY_OAUTH and principal.claims.get("aud") != (
                f"{resource_server.base_url(self.config, headers)}/{parts[0]}/{parts[1]}"
            ):
                # RFC 8707: a token of ours is good for the one server URL it was issued for.
                raise Unauthenticated("the token was issued for another server")
            return principal
        except Unauthenticated as exc:
            self._audit_refused(scope, authorization, exc, parts[1][:100], "connect")
            await resource_server.send_unauthorized(send, self.config, headers, "/" + "/".join(parts[:2]), exc)
            return None

    async def _protected_resource_metadata(self, send: Send, path: str, headers: dict[str, str]) -> None:
        rest = path[len(resource_server.WELL_KNOWN_PRM) :].strip("/").split("/")
        if len(rest) != 2 or rest[0] not in ("mcp", "sse") or rest[1] not in self.served:
            await send_body(send, 404, b'{"error":"not found"}')
            return
        body = resource_server.metadata(self.config, headers, rest[0], rest[1])
        await send_body(send, 200, orjson.dumps(body), JSON_HEADERS + [(b"cache-control", b"max-age=300")])

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        declared = scope["_headers"].get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await send_body(send, 413, orjson.dumps({"error": f"request body over {self.max_body} bytes"}))
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await send_body(send, 413, orjson.dumps({"error": f"request body over {self.max_body} bytes"}))
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _health_admin(self, scope: Scope, headers: dict[str, str], path: str) -> bool:
        """Whether a /healthz or /readyz caller sent a gateway admin's credential (policy/admins.py). Anything
        else (none, a refused one, a non-admin's, any while the database does not answer) gets the states only,
        never a 401: a probe needs no key. A refused credential is audited like the admin API's."""
        authorization = headers.get("authorization")
        if not authorization:
            return False
        try:
            await self.changes.sync()  # keys revoked elsewhere
            principal = await self.authenticator.authenticate(authorization)
        except DBAPIError:
            return False  # the database does not answer: /healthz stays 200 (alive), with the states only
        except Unauthenticated as exc:
            self._audit_refused(scope, authorization, exc, path.strip("/"), f"{path.strip('/')} {scope['method']}")
            return False
        return is_admin(principal, self.config.gateway.identity.admins)

    async def _health(self, send: Send, *, ready: bool, admin: bool) -> None:
        """/healthz: liveness, always 200, with every upstream's state. /readyz: 503 while a required
        upstream is down (each is tried again first, briefly), naming them, or while the database does not
        answer a read; 200 otherwise. Both are unauthenticated: text an upstream provided (its last error,
        a stdio command's stderr, the reasons a member was left out, colliding tool names) may name internal
        hosts, paths and whatever a server prints, so only a gateway admin's credential gets it; anyone else
        gets the states, which upstreams and servers are affected, and counts (docs/security.md)."""
        down: list[str] = []
        if ready:
            down = self.pool.down_required()
            if down:
                await self.pool.reconnect_down(down, wait=1.0)  # a probe's answer stays prompt
                down = self.pool.down_required()
        upstreams = self.pool.health()
        if not admin:
            for entry in upstreams.values():
                for field in UPSTREAM_TEXT_FIELDS:
                    entry.pop(field, None)
        failures = {sid: v.last_failures for sid, v in self.served.items() if v.last_failures}
        database = await self.changes.database_problem(read=ready)
        unready = bool(down) or (ready and database is not None)
        body: JSON = {"status": "unavailable" if unready else "ok", "upstreams": upstreams}
        if database is not None:
            body["database"] = database  # the gateway's own words (store/revisions.py): no driver text
        if down:
            body["down_upstreams"] = sorted(down)
        if failures:
            # admin: {server: {member: why}}; anyone else: {server: [member, ...]}
            body["degraded_servers"] = failures if admin else {sid: sorted(f) for sid, f in failures.items()}
        collisions = {sid: [c for cs in v.collisions.values() for c in cs] for sid, v in self.served.items()}
        collisions = {sid: cs for sid, cs in collisions.items() if cs}
        if collisions:
            # admin: {server: [message, ...]}, naming the upstreams' tools; anyone else: {server: how many}
            body["name_collisions"] = collisions if admin else {sid: len(cs) for sid, cs in collisions.items()}
        if ready:
            body["servers"] = self.served.ids()
        if not admin:
            body["details"] = HEALTH_DETAILS
        await send_body(send, 503 if unready else 200, orjson.dumps(body))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.lifecycle.start()
                except Exception as exc:  # a clear message, not a traceback
                    log.error("startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.lifecycle.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _refusal(scope: Scope, message: str, fields: dict[str, str]) -> bytes:
    """The body of a 403 or 404 on an MCP endpoint. A POST carries a JSON-RPC request, so it gets a JSON-RPC
    error (id null: the body is not read yet), which an SDK client shows as it is (mcp's Python client shows
    "Server returned an error response" for any other 403 body); `fields` go in its `data`. A GET or DELETE
    gets `fields` as the body itself."""
    if scope["method"] != "POST":
        return orjson.dumps(fields)
    error = {"code": INVALID_REQUEST, "message": message, "data": fields}
    return orjson.dumps({"jsonrpc": "2.0", "id": None, "error": error})
