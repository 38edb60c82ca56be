"""Telemetry wired into the composed gateway (docs/telemetry.md): the `Metrics` and `Tracing` objects made
from `telemetry:` in manifold.yaml, the gauges read at scrape time from the services' own state, and the two
seams that count without touching the hot path's code: an `Auditor` that observes every audited call before
recording it, and an `UnauthorizedAudit` that counts every refused credential."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from manifold.audit import AuditLog
from manifold.audit.unauthorized import UnauthorizedAudit
from manifold.catalog.view import Target
from manifold.config.loader import LoadedConfig
from manifold.identity.authenticator import Authenticator, Unauthenticated
from manifold.policy.admins import is_admin
from manifold.principal import Principal
from manifold.protocol import TOOLS_CALL
from manifold.relay.access import AuditedCall, Auditor
from manifold.relay.hub import Hub
from manifold.relay.sessions import SessionStore
from manifold.security.secret_store import SecretStore, UnknownSecret
from manifold.telemetry.endpoint import AdminCheck, MetricsEndpoint, Verdict
from manifold.telemetry.metrics import Metrics
from manifold.upstream.pool import UpstreamPool

if TYPE_CHECKING:
    from manifold.telemetry.tracing import Tracing

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Telemetry:
    """What `telemetry:` turned on. None: off, and nothing of it runs."""

    metrics: Metrics | None
    tracing: Tracing | None
    json_logs: bool

    async def aclose(self) -> None:
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # the last spans are exported


def make_telemetry(config: LoadedConfig) -> Telemetry:
    settings = config.gateway.telemetry
    metrics = Metrics(max_tool_series=settings.metrics.max_tool_series) if settings.metrics.enabled else None
    tracing = None
    if settings.tracing.endpoint is not None:
        from manifold.telemetry.tracing import Tracing  # the OpenTelemetry SDK only when tracing is on

        tracing = Tracing(settings.tracing)
    return Telemetry(metrics=metrics, tracing=tracing, json_logs=settings.logs == "json")


class ObservedAuditor:
    """The relay's `Auditor` that also counts: every tools/call, prompts/get and resources/read is audited
    once when it ends (relay/handlers.py), which is exactly where a metric is observed."""

    def __init__(self, inner: Auditor, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def call(
        self,
        call: AuditedCall,
        method: str,
        label: str,
        target: Target | None,
        outcome: str,
        started: float,
        detail: str | None,
        arguments: Any = None,
    ) -> None:
        if method == TOOLS_CALL:
            # A tool label only for a name the catalog resolved: an unknown name counts as "other".
            if target is None:
                self._metrics.tool_call(call.view.id, None, None, outcome, started)
            else:
                self._metrics.tool_call(call.view.id, target.member_id, target.name, outcome, started)
        else:
            self._metrics.request(call.view.id, method, outcome)
        self._inner.call(call, method, label, target, outcome, started, detail, arguments)

    def refusal(self, principal: Principal, server_id: str) -> None:
        self._inner.refusal(principal, server_id)


class CountingUnauthorized(UnauthorizedAudit):
    """Refused credentials, audited as before and counted by reason (a fixed set of labels)."""

    def __init__(self, log: AuditLog, metrics: Metrics) -> None:
        super().__init__(log)
        self._metrics = metrics

    def refused(
        self,
        *,
        authorization: str | None,
        missing: bool,
        reason: str,
        client: str | None,
        server: str,
        method: str,
    ) -> None:
        self._metrics.auth_failure(reason, missing=missing)
        super().refused(
            authorization=authorization, missing=missing, reason=reason, client=client, server=server, method=method
        )


def register_gauges(
    metrics: Metrics, pool: UpstreamPool, sessions: SessionStore, hub: Hub, audit_log: AuditLog
) -> None:
    """The series read at scrape time: nothing of these is updated per call."""

    def streams() -> Iterable[tuple[Sequence[str], float]]:
        # A 2026-07-28 subscriptions/listen stream carries its subscription id; the others are 2025-11-25's.
        modern = handshake = 0
        for listener in hub.listeners():
            if listener.subscription_id is not None:
                modern += 1
            else:
                handshake += 1
        return [(("handshake",), float(handshake)), (("modern",), float(modern))]

    def queued_bytes() -> Iterable[tuple[Sequence[str], float]]:
        return [((), float(sum(listener.queue.queued_bytes for listener in hub.listeners())))]

    def upstream_up() -> Iterable[tuple[Sequence[str], float]]:
        for upstream_id, health in pool.health().items():
            yield (upstream_id, str(health.get("state", "unknown"))), 1.0 if health.get("state") == "connected" else 0.0

    def pool_sizes() -> Iterable[tuple[Sequence[str], float]]:
        return [((upstream_id,), float(n)) for upstream_id, n in pool.sizes().items()]

    metrics.add_gauge(
        "manifold_upstream_up",
        "1 while the upstream's shared session is connected, else 0 (state: its health state)",
        ("upstream", "state"),
        upstream_up,
    )
    metrics.add_gauge("manifold_upstream_sessions", "live upstream sessions per upstream", ("upstream",), pool_sizes)
    metrics.add_gauge(
        "manifold_client_sessions",
        "client sessions held, by era (2026-07-28 is sessionless: always 0)",
        ("era",),
        lambda: [(("handshake",), float(len(sessions))), (("modern",), 0.0)],
    )
    metrics.add_gauge("manifold_notification_streams", "open notification streams by era", ("era",), streams)
    metrics.add_gauge(
        "manifold_stream_queued_bytes", "bytes waiting to be written to client streams, all together", (), queued_bytes
    )
    metrics.add_gauge(
        "manifold_audit_queue_depth",
        "audit events not yet written to the database",
        (),
        lambda: [((), audit_log.queued)],
    )


def admin_check(authenticator: Authenticator, admins: list[str], unauthorized: UnauthorizedAudit) -> AdminCheck:
    """/metrics for an admin's credential, refused credentials counted and audited like the admin API's."""

    async def check(authorization: str | None) -> Verdict:
        try:
            principal = await authenticator.authenticate(authorization)
        except Unauthenticated as exc:
            unauthorized.refused(
                authorization=authorization,
                missing=exc.missing,
                reason=exc.reason,
                client=None,
                server="metrics",
                method="metrics GET",
            )
            return "missing" if exc.missing else "invalid"
        return "admin" if is_admin(principal, admins) else "forbidden"

    return check


def metrics_endpoint(
    config: LoadedConfig, metrics: Metrics, secrets: SecretStore, admin: AdminCheck
) -> MetricsEndpoint:
    configured = config.gateway.telemetry.metrics.token

    def token() -> str | None:
        if configured is None or not configured.startswith("secret:"):
            return configured
        try:
            return secrets.lookup(configured[len("secret:") :])
        except UnknownSecret:
            log.warning("telemetry.metrics.token names %s, which is not in the secret store", configured)
            return None

    return MetricsEndpoint(metrics, token=token, admin=admin)
