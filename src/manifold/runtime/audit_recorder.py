"""The relay's `Auditor` seam (relay/access.py) over the audit log: turns a handler's view of a request into
an `AuditEvent`. The audit log keeps arguments only when `audit.include_arguments` is on, redacted."""

from __future__ import annotations

import time
from typing import Any

from manifold.audit import AuditEvent, AuditLog, Outcome
from manifold.catalog.view import Target
from manifold.principal import Principal
from manifold.relay.access import AuditedCall


class AuditRecorder:
    def __init__(self, log: AuditLog) -> None:
        self._log = log

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
        principal = call.principal
        self._log.record(
            AuditEvent(
                at=time.time(),
                request_id=None if call.request_id is None else str(call.request_id),
                principal=principal.id,
                credential=str(principal.credential),
                server=call.view.id,
                member=target.member_id if target is not None else None,
                upstream=target.upstream_id if target is not None else None,
                method=method,
                target=label,
                outcome=Outcome(outcome),
                detail=detail,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                arguments=arguments if isinstance(arguments, dict) else None,
            )
        )

    def refusal(self, principal: Principal, server_id: str) -> None:
        self._log.record(
            AuditEvent(
                at=time.time(),
                request_id=None,
                principal=principal.id,
                credential=str(principal.credential),
                server=server_id,
                member=None,
                upstream=None,
                method="connect",
                target=None,
                outcome=Outcome.DENIED,
                detail="may not use this server",
                latency_ms=None,
                arguments=None,
            )
        )
