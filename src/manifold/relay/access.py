"""The two seams the MCP handlers decide through: who may see and use what (`Access`), and the audit
trail (`Auditor`). The handlers know nothing of grants or tables; `policy.access` and `audit` implement
these. `AllowAll`/`NoAudit` serve unit tests and benchmarks of the relay alone.
"""

from __future__ import annotations

from typing import Any, Protocol

from manifold.catalog.view import Built, Target, VirtualServerView
from manifold.principal import Principal

JSON = dict[str, Any]


class Access(Protocol):
    def server_allowed(self, principal: Principal, view: VirtualServerView) -> bool:
        """May the caller use this server at all (else HTTP 403)?"""
        ...

    def visible(self, principal: Principal, view: VirtualServerView, kind: str, built: Built) -> list[JSON]:
        """The items of a built list this caller may see (tools/list, prompts/list, ...)."""
        ...

    def allows(self, principal: Principal, view: VirtualServerView, kind: str, target: Target) -> bool:
        """May the caller use this one item (checked again on every call)?"""
        ...

    def member_visible(self, principal: Principal, view: VirtualServerView, member_id: str) -> bool:
        """May the caller see anything of this member (so it may learn the member is down)?"""
        ...


class AuditedCall(Protocol):
    """What an audit row needs of a request (relay/call.py `Call` has it)."""

    view: VirtualServerView
    principal: Principal
    request_id: Any


class Auditor(Protocol):
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
        """Record one tools/call, prompts/get or resources/read; must not block."""
        ...

    def refusal(self, principal: Principal, server_id: str) -> None:
        """Record that the caller was refused the whole server (HTTP 403)."""
        ...


class AllowAll:
    def server_allowed(self, principal: Principal, view: VirtualServerView) -> bool:
        return True

    def visible(self, principal: Principal, view: VirtualServerView, kind: str, built: Built) -> list[JSON]:
        return built.items

    def allows(self, principal: Principal, view: VirtualServerView, kind: str, target: Target) -> bool:
        return True

    def member_visible(self, principal: Principal, view: VirtualServerView, member_id: str) -> bool:
        return True


class NoAudit:
    def call(self, *args: Any, **kwargs: Any) -> None:
        return None

    def refusal(self, principal: Principal, server_id: str) -> None:
        return None
