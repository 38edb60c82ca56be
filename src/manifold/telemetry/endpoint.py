"""`GET /metrics`: the Prometheus text format, for a bearer of the metrics token (`telemetry.metrics.token`)
or an admin's credential (API key or IdP token of an admin, as for /admin/api). Nobody else: a request without
a credential gets 401 with `WWW-Authenticate: Bearer realm="manifold"`, a refused one 401 with
`error="invalid_token"`, a valid credential that is not an admin's 403."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Literal

import orjson

from manifold.asgi import JSON_HEADERS, Receive, Scope, Send, send_body
from manifold.telemetry.metrics import CONTENT_TYPE, Metrics

# What the admin check says of an Authorization header: an admin's, someone else's, none, or refused.
Verdict = Literal["admin", "forbidden", "missing", "invalid"]
AdminCheck = Callable[[str | None], Awaitable[Verdict]]


class MetricsEndpoint:
    def __init__(self, metrics: Metrics, *, token: Callable[[], str | None], admin: AdminCheck) -> None:
        self.metrics = metrics
        self._token = token  # the configured token's value (a `secret:NAME` is read when asked), or None
        self._admin = admin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await send_body(send, 405, b'{"error":"GET only"}', [*JSON_HEADERS, (b"allow", b"GET, HEAD")])
            return
        authorization: str | None = scope["_headers"].get("authorization")
        if not self._token_matches(authorization):
            verdict = await self._admin(authorization)
            if verdict == "missing" or verdict == "invalid":
                challenge = b'Bearer realm="manifold"'
                if verdict == "invalid":
                    challenge += b', error="invalid_token"'
                body = {
                    "error": "unauthorized" if verdict == "missing" else "invalid_token",
                    "error_description": "the metrics token or an admin's credential is required",
                }
                await send_body(send, 401, orjson.dumps(body), [*JSON_HEADERS, (b"www-authenticate", challenge)])
                return
            if verdict == "forbidden":
                await send_body(send, 403, b'{"error":"the metrics token or an admin\'s credential is required"}')
                return
        body = self.metrics.exposition() if scope["method"] == "GET" else b""
        await send_body(send, 200, body, [(b"content-type", CONTENT_TYPE.encode()), (b"cache-control", b"no-store")])

    def _token_matches(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        token = self._token()
        return token is not None and hmac.compare_digest(presented.strip().encode(), token.encode())
