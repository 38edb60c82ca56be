"""Builds the gateway's ASGI app: routing, the checks every request passes, and the lifespan.

Order of checks on an MCP endpoint: Host/Origin (DNS-rebinding protection) → changes made elsewhere
(store/revisions.py) → credential (401) → server exists (404) → may use the server (403) → body size →
transport. Routing is a few string operations rather than a framework router: it runs on every relayed call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from manifold.catalog.lists import UpstreamLists
from manifold.catalog.view import VirtualServerView
from manifold.config.loaded import LoadedConfig
from manifold.identity import resource_server
from manifold.live import Live
from manifold.principal import Principal
from manifold.relay.handlers import Gateway
from manifold.relay.hub import Hub
from manifold.relay.sessions import PendingReplies, SessionStore
from manifold.relay.sse import LegacySse
from manifold.relay.streamable_http import JSON_HEADERS, StreamableHttp, send_body
from manifold.security.origin import OriginPolicy
from manifold.upstream.pool import UpstreamPool

log = logging.getLogger(__name__)
JSON = dict[str, Any]


@dataclass
class Services:
    """Everything the app holds while it runs (also what tests and benchmarks reach into)."""

    config: LoadedConfig
    pool: UpstreamPool
    lists: UpstreamLists
    hub: Hub
    gateway: Gateway
    views: dict[str, VirtualServerView]
    sessions: SessionStore
    pending: PendingReplies
    live: Live
    started: float = field(default_factory=time.time)


def build_services(
    config: LoadedConfig, *, dev_key: str | None = None, public_base: str | None = None
) -> Services:
    settings = config.settings
    # Relative stdio `cwd`s are relative to the config file, not to wherever the gateway was started.
    upstreams = {
        uid: (u.model_copy(update={"cwd": config.stdio_cwd(uid)}) if u.transport.value == "stdio" else u)
        for uid, u in config.upstreams.items()
    }
    hub_ref: list[Hub] = []

    async def on_notification(upstream_id: str, message: JSON) -> None:
        await hub_ref[0].on_upstream_notification(upstream_id, message)

    pool = UpstreamPool(upstreams, on_notification)
    lists = UpstreamLists(pool, settings.tool_list_ttl_seconds)
    hub = Hub(lists)
    hub_ref.append(hub)
    gateway = Gateway(pool=pool, hub=hub)
    views = {
        sid: VirtualServerView(sid, vs, lists, config.separator_for(vs)) for sid, vs in config.served_servers().items()
    }
    sessions = SessionStore(hub)
    live = Live(config, gateway, views, dev_key=dev_key, lists=lists)
    if public_base:
        live.public_base = public_base
    live.sessions = sessions
    return Services(
        config=config,
        pool=pool,
        lists=lists,
        hub=hub,
        gateway=gateway,
        views=views,
        sessions=sessions,
        pending=PendingReplies(),
        live=live,
    )


class ManifoldApp:
    def __init__(self, services: Services) -> None:
        self.s = services
        settings = services.config.settings
        self.max_body = settings.max_body_bytes
        self.origin = OriginPolicy.from_settings(settings)
        self.http = StreamableHttp(services.gateway, services.sessions, services.pending, stateless=settings.stateless)
        self.sse = LegacySse(services.gateway, services.sessions, services.pending)
        from manifold.web.routes import WebApp  # web pages (connect, sign-in, connections): web/routes.py

        self.web = WebApp(services.live)

    async def __call__(self, scope: JSON, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        scope["_headers"] = headers

        if path in ("/healthz", "/readyz"):
            await self._health(send, ready=path == "/readyz")
            return
        if path.startswith(("/connect/", "/login", "/logout", "/connections", "/oauth/callback")):
            await self.web(scope, receive, send, self._read_body)  # web pages: web/routes.py
            return
        if path.startswith(resource_server.WELL_KNOWN_PRM + "/"):
            await self._protected_resource_metadata(send, path, headers)
            return
        parts = path.strip("/").split("/")
        if parts[0] == "admin" and len(parts) >= 2 and parts[1] == "api":
            problem = self.origin.check(headers)
            if problem is not None:
                await send_body(send, 403, orjson.dumps({"error": problem}))
                return
            await self.s.live.sync()
            await self.s.live.admin(scope, receive, send, self._read_body)
            return
        if len(parts) < 2 or parts[0] not in ("mcp", "sse"):
            await send_body(send, 404, b'{"error":"not found"}')
            return
        problem = self.origin.check(headers)
        if problem is not None:
            await send_body(send, 403, orjson.dumps({"error": problem}))
            return
        live = self.s.live
        await live.sync()
        principal = await self._authenticate(send, headers, "/" + "/".join(parts[:2]))
        if principal is None:
            return
        view = self.s.views.get(parts[1])
        if view is None:
            await send_body(send, 404, orjson.dumps({"error": "unknown server", "server": parts[1][:100]}))
            return
        if not live.access.server_allowed(principal, view):
            live.audit_refusal(principal, view.id, headers)
            await send_body(
                send,
                403,
                resource_server.error_body("forbidden", f"you may not use server '{view.id}'"),
            )
            return

        body: bytes | None = None
        if scope["method"] == "POST":
            body = await self._read_body(scope, receive, send)
            if body is None:
                return
        if parts[0] == "mcp" and len(parts) == 2:
            await self.http(scope, receive, send, view, principal, body)
        elif parts[0] == "sse" and len(parts) == 2 and scope["method"] == "GET":
            await self.sse.open_stream(scope, receive, send, view, principal)
        elif parts[0] == "sse" and len(parts) == 3 and parts[2] == "messages" and scope["method"] == "POST":
            await self.sse.post_message(scope, send, view, principal, body or b"")
        else:
            await send_body(send, 404, b'{"error":"not found"}')

    async def _authenticate(self, send: Any, headers: dict[str, str], resource_path: str) -> Principal | None:
        from manifold.identity.authenticator import Unauthenticated

        try:
            return await self.s.live.authenticator.authenticate(headers.get("authorization"))
        except Unauthenticated as exc:
            config = self.s.config
            error = None if exc.missing else "invalid_token"
            www = resource_server.challenge(config, headers, resource_path, error=error, description=exc.reason)
            await send_body(
                send,
                401,
                resource_server.error_body("invalid_token" if error else "unauthorized", exc.reason),
                JSON_HEADERS + [(b"www-authenticate", www)],
            )
            return None

    async def _protected_resource_metadata(self, send: Any, path: str, headers: dict[str, str]) -> None:
        rest = path[len(resource_server.WELL_KNOWN_PRM) :].strip("/").split("/")
        if len(rest) != 2 or rest[0] not in ("mcp", "sse") or rest[1] not in self.s.views:
            await send_body(send, 404, b'{"error":"not found"}')
            return
        body = resource_server.metadata(self.s.config, headers, rest[0], rest[1])
        await send_body(send, 200, orjson.dumps(body), JSON_HEADERS + [(b"cache-control", b"max-age=300")])

    async def _read_body(self, scope: JSON, receive: Any, send: Any) -> bytes | None:
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

    async def _health(self, send: Any, *, ready: bool) -> None:
        upstreams = self.s.pool.health()
        failures = {sid: v.last_failures for sid, v in self.s.views.items() if v.last_failures}
        body: JSON = {"status": "ok", "upstreams": upstreams}
        if failures:
            body["degraded_servers"] = failures
        collisions = {sid: [c for cs in v.collisions.values() for c in cs] for sid, v in self.s.views.items()}
        collisions = {sid: cs for sid, cs in collisions.items() if cs}
        if collisions:
            body["name_collisions"] = collisions
        if ready:
            body["servers"] = sorted(self.s.views)
        await send_body(send, 200, orjson.dumps(body))

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.s.live.start()
                except Exception as exc:  # a clear message, not a traceback
                    log.error("startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.s.hub.close_all()
                self.s.sessions.close_all()
                await self.s.live.aclose()
                await self.s.pool.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
