"""`/admin/api/...`: the admin REST API. Admin principals only (policy/admins.py); JSON in, JSON out;
the operations are admin/ops.py, the same ones the CLI runs.

Routes (all JSON; errors are {"error": "..."} with 400/401/403/404/409):
  GET  /admin/api/keys[?owner=&all=1]     POST /admin/api/keys          DELETE /admin/api/keys/{id}
  GET  /admin/api/users                   POST /admin/api/users         PUT /admin/api/users/{id}/teams
                                                                        DELETE /admin/api/users/{id}
  GET  /admin/api/teams                   POST /admin/api/teams         DELETE /admin/api/teams/{id}
  GET  /admin/api/service-accounts        POST /admin/api/service-accounts  DELETE /admin/api/service-accounts/{id}
  GET  /admin/api/grants[/{id}]           POST /admin/api/grants        PATCH|DELETE /admin/api/grants/{id}
  GET  /admin/api/rate-limits             POST /admin/api/rate-limits   PUT|DELETE /admin/api/rate-limits/{id}
  GET  /admin/api/upstreams[/{id}]        POST /admin/api/upstreams     DELETE /admin/api/upstreams/{id}
  GET  /admin/api/groups[/{id}]           POST /admin/api/groups        DELETE /admin/api/groups/{id}
  GET  /admin/api/virtual-servers[/{id}]  POST /admin/api/virtual-servers  DELETE /admin/api/virtual-servers/{id}
  PUT  /admin/api/{upstreams,groups,virtual-servers}/{id}   replace an API-made object's body
  GET  /admin/api/apps[?user=]                                          DELETE /admin/api/apps?user=&client=
  GET  /admin/api/connections[?user=]                                   DELETE /admin/api/connections?user=&upstream=
  GET  /admin/api/tools/pins[?upstream=&status=changed]  GET /admin/api/tools/pins/diff[?upstream=]
  GET  /admin/api/tools/pins/{upstream}/{tool}            (with the diff of a changed definition)
  POST /admin/api/tools/pins/approve  /{upstream}/approve  /{upstream}/{tool}/approve   (docs/pinning.md)

Catalog changes (upstreams, groups, virtual servers) are applied before the answer is sent; a 400 for an
invalid body also lists each problem as {"field", "reason"} under "problems". docs/admin-api.md has it all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

import orjson

from manifold.admin.catalog import KIND_PATHS, CatalogOperations, InvalidBody
from manifold.admin.ops import BadRequest, NotFound, Operations, OpError
from manifold.admin.pins import PinOperations
from manifold.admin.rate_limits import RateLimitAdmin
from manifold.asgi import Receive, Scope, Send, send_body
from manifold.audit import AuditEvent, AuditLog, Outcome
from manifold.audit.unauthorized import UnauthorizedAudit
from manifold.catalog.pin_store import PinStore
from manifold.config.loader import LoadedConfig
from manifold.identity import resource_server
from manifold.identity.authenticator import Authenticator, Unauthenticated
from manifold.policy.admins import is_admin
from manifold.principal import Principal

log = logging.getLogger(__name__)
JSON = dict[str, Any]
# Reads a request body within the gateway's limit; None when it answered 413 or the client left (app.py).
ReadBody = Callable[[Scope, Receive, Send], Awaitable[bytes | None]]


class CatalogReloader(Protocol):
    """Applies the effective catalog to the running gateway (runtime/catalog_swap.py)."""

    async def reload(self) -> None: ...


class AdminApi:
    def __init__(
        self,
        config: LoadedConfig,
        authenticator: Authenticator,
        ops: Operations,
        catalog_ops: CatalogOperations,
        catalog: CatalogReloader,
        audit_log: AuditLog,
        unauthorized: UnauthorizedAudit,
        rate_limits: RateLimitAdmin | None = None,
    ) -> None:
        self.config = config
        self.authenticator = authenticator
        self.ops = ops
        self.catalog_ops = catalog_ops
        self.catalog = catalog
        self.audit_log = audit_log
        self.unauthorized = unauthorized
        self.rate_limits = rate_limits
        self.pins = PinOperations(PinStore(ops.engine, audit=config.gateway.audit.enabled))

    async def __call__(self, scope: Scope, receive: Receive, send: Send, read_body: ReadBody) -> None:
        headers = scope["_headers"]
        authorization = headers.get("authorization")
        try:
            principal = await self.authenticator.authenticate(authorization)
        except Unauthenticated as exc:
            client = scope.get("client")
            self.unauthorized.refused(
                authorization=authorization,
                missing=exc.missing,
                reason=exc.reason,
                client=client[0] if client else None,
                server="admin",
                method=f"admin {scope['method']}",
            )
            await resource_server.send_unauthorized(send, self.config, headers, "/admin/api", exc)
            return
        if not is_admin(principal, self.config.gateway.identity.admins):
            await send_body(send, 403, orjson.dumps({"error": "admin principals only"}))
            return
        body: JSON = {}
        if scope["method"] in ("POST", "PUT", "PATCH"):
            raw = await read_body(scope, receive, send)
            if raw is None:
                return
            try:
                body = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                await send_body(send, 400, orjson.dumps({"error": "the body must be JSON"}))
                return
            if not isinstance(body, dict):
                await send_body(send, 400, orjson.dumps({"error": "the body must be a JSON object"}))
                return
        parts = [unquote(p) for p in scope["path"].strip("/").split("/")[2:]]
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        try:
            status, result = await self.route(scope["method"], parts, query, body, principal)
        except InvalidBody as exc:
            self._audit(principal, scope, Outcome.ERROR, exc.message)
            await send_body(send, exc.status, orjson.dumps({"error": exc.message, "problems": exc.details()}))
            return
        except OpError as exc:
            self._audit(principal, scope, Outcome.ERROR, exc.message)
            await send_body(send, exc.status, orjson.dumps({"error": exc.message}))
            return
        log.info("admin %s %s by %s", scope["method"], scope["path"], principal.id)
        if scope["method"] != "GET":
            self._audit(principal, scope, Outcome.OK, None)
        await send_body(send, status, orjson.dumps(result))

    async def perform(
        self,
        principal: Principal,
        method: str,
        parts: list[str],
        body: JSON | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One admin operation for the console (console/): the route the JSON API takes for `method` and
        `/admin/api/<parts>`, audited the same way (method `console <METHOD>`). The caller has already
        checked that `principal` is an admin. Raises InvalidBody or OpError, as `route` does."""
        path = "/admin/api/" + "/".join(parts)
        try:
            status, result = await self.route(method, parts, query or {}, body or {}, principal)
        except (InvalidBody, OpError) as exc:
            self._record(principal, f"console {method}", path, Outcome.ERROR, exc.message)
            raise
        if method != "GET":
            log.info("console %s %s by %s", method, path, principal.id)
            self._record(principal, f"console {method}", path, Outcome.OK, None)
        return status, result

    def _audit(self, principal: Principal, scope: Scope, outcome: Outcome, detail: str | None) -> None:
        self._record(principal, f"admin {scope['method']}", scope["path"], outcome, detail)

    def _record(self, principal: Principal, method: str, path: str, outcome: Outcome, detail: str | None) -> None:
        """Changes made through the API are audited like calls (the body is not: it may hold secrets)."""
        self.audit_log.record(
            AuditEvent(
                at=time.time(),
                request_id=None,
                principal=principal.id,
                credential=str(principal.credential),
                server="admin",
                member=None,
                upstream=None,
                method=method,
                target=path[:400],
                outcome=outcome,
                detail=detail,
            )
        )

    async def route(
        self, method: str, parts: list[str], query: dict[str, str], body: JSON, principal: Principal | None = None
    ) -> tuple[int, Any]:
        """`principal`: who asks (recorded as the approver of tool pins)."""
        ops = self.ops
        match method, parts:
            case "GET", ["keys"]:
                return 200, await ops.list_keys(query.get("owner"), include_revoked=query.get("all") == "1")
            case "POST", ["keys"]:
                return 201, await ops.create_key(body)
            case "DELETE", ["keys", key_id]:
                return 200, await ops.revoke_key(key_id)
            case "GET", ["users"]:
                return 200, await ops.list_users()
            case "POST", ["users"]:
                return 201, await ops.create_user(body)
            case "PUT", ["users", user_id, "teams"]:
                return 200, await ops.set_user_teams(user_id, body)
            case "DELETE", ["users", user_id]:
                return 200, await ops.delete_user(user_id)
            case "GET", ["teams"]:
                return 200, await ops.list_teams()
            case "POST", ["teams"]:
                return 201, await ops.create_team(body)
            case "DELETE", ["teams", team_id]:
                return 200, await ops.delete_team(team_id)
            case "GET", ["service-accounts"]:
                return 200, await ops.list_service_accounts()
            case "POST", ["service-accounts"]:
                return 201, await ops.create_service_account(body)
            case "DELETE", ["service-accounts", sa_id]:
                return 200, await ops.delete_service_account(sa_id)
            case "GET", ["grants"]:
                return 200, await ops.list_grants()
            case "POST", ["grants"]:
                return 201, await ops.add_grant(body)
            case "GET", ["grants", grant_id]:
                return 200, await ops.get_grant(grant_id)
            case "PATCH", ["grants", grant_id]:
                return 200, await ops.update_grant(grant_id, body)
            case "DELETE", ["grants", grant_id]:
                return 200, await ops.remove_grant(grant_id)
            case _, ["rate-limits", *rest] if self.rate_limits is not None:  # admin/rate_limits.py
                return await self.rate_limits.route(method, rest, body)
            case "GET", ["apps"]:
                return 200, await ops.list_apps(query.get("user"))
            case "DELETE", ["apps"]:
                return 200, await ops.revoke_app(query.get("user") or "", query.get("client") or "")
            case "GET", ["connections"]:
                return 200, await ops.list_connections(query.get("user"))
            case "DELETE", ["connections"]:
                return 200, await ops.revoke_connection(query.get("user") or "", query.get("upstream") or "")
            case "GET", [segment] if segment in KIND_PATHS:
                return 200, await self.catalog_ops.list(KIND_PATHS[segment])
            case "GET", [segment, object_id] if segment in KIND_PATHS:
                return 200, await self.catalog_ops.get(KIND_PATHS[segment], object_id)
            case "POST", [segment] if segment in KIND_PATHS:
                created = await self.catalog_ops.create(KIND_PATHS[segment], body)
                await self.catalog.reload()  # live before the answer: the caller may use it at once
                return 201, created
            case "PUT", [segment, object_id] if segment in KIND_PATHS:
                updated = await self.catalog_ops.update(KIND_PATHS[segment], object_id, body)
                await self.catalog.reload()
                return 200, updated
            case "DELETE", [segment, object_id] if segment in KIND_PATHS:
                deleted = await self.catalog_ops.delete(KIND_PATHS[segment], object_id)
                await self.catalog.reload()
                return 200, deleted
            case "GET", ["tools", "pins"]:
                return 200, await self.pins.list(query.get("upstream"), changed_only=query.get("status") == "changed")
            case "GET", ["tools", "pins", "diff"]:
                return 200, await self.pins.diffs(query.get("upstream"))
            case "GET", ["tools", "pins", upstream_id, tool]:
                return 200, await self.pins.get(upstream_id, tool)
            case "POST", ["tools", "pins", *target, "approve"] if len(target) <= 2 and principal is not None:
                by, credential = principal.id, str(principal.credential)
                upstream_id, tool = (target + [None, None])[:2]
                expected = body.get("sha256")
                if expected is not None and not isinstance(expected, str):
                    raise BadRequest("'sha256' must be a string")
                return 200, await self.pins.approve(
                    by, credential, upstream_id=upstream_id, tool=tool, expected=expected
                )
            case _, []:
                raise BadRequest("see docs/admin-api.md for the routes")
        raise NotFound(f"no route {method} /admin/api/{'/'.join(parts)}")
