"""The human approval gate's rules (docs/approvals.md): which calls wait for an approver, who may approve,
and the decisions, each audited.

A grant may say `require_approval: [tool:github/delete_*]` with `approvers: team:sre`: a call by someone that
grant applies to, of a tool those selectors cover (the grant grammar of config/selectors.py, `tool:` usually),
is held until an approver approves it in the browser. When several applicable grants ask for approval of one
tool, the first (in grant order) decides who approves. Requests live in the database (approval_store.py).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from manifold.audit import AuditEvent, Outcome
from manifold.audit.redaction import redact
from manifold.config.selectors import WhatKind, parse_who
from manifold.policy.approval_store import Approval, ApprovalStore, NewApproval, Status
from manifold.policy.evaluation import Policy, covers
from manifold.policy.grants import ApprovalRule, who_selects
from manifold.principal import Principal

JSON = dict[str, Any]
METHOD = "approval"  # the audit rows' method for approval requests and decisions
WAITING_LISTED = 200  # the approvers' list looks at this many of the newest waiting requests


def rule_for(policy: Policy, principal: Principal, server_id: str, upstream_id: str, tool: str) -> ApprovalRule | None:
    """The approval rule a call of `tool` (the upstream's name) by this principal is held by, or None."""
    virtual = policy.is_virtual(server_id)
    for grant in policy.view(principal).grants:
        rule = grant.approval
        if rule is None:
            continue
        for what in rule.tools:
            members = policy.groups.get(what.target, frozenset()) if what.kind is WhatKind.GROUP else None
            if covers(what, members, server_id, upstream_id, "tools", tool, virtual):
                return rule
    return None


def arguments_hash(arguments: object) -> str:
    """What an approval approves: these exact arguments (keys sorted, so their order does not matter)."""
    try:
        data = orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        data = repr(arguments).encode()
    return hashlib.sha256(data).hexdigest()


def may_approve(approval: Approval, approver: Principal) -> bool:
    """An approver is selected by the request's `approvers`; the caller only with `self_approval`. Never with a
    key restricted to some servers: an agent's key decides no human gate (review)."""
    if approver.servers is not None:
        return False
    try:
        who = parse_who(approval.approvers, "approvers")
    except ValueError:
        return False
    if approver.id == approval.principal and not approval.self_approval:
        return False
    return who_selects(who, approver)


class Approvals:
    """Approval requests: made when a call is held, decided in the browser, used by the caller's retry. Each
    request and decision is an audit row (method `approval`)."""

    def __init__(
        self, store: ApprovalStore, audit: Callable[[AuditEvent], None] | None = None, *, max_pending: int = 20
    ) -> None:
        self.store = store
        self.max_pending = max_pending  # limits.approvals_pending_per_principal
        self.audit = audit  # the audit log's `record`
        # Told of each decision made here (relay/approval_gate.py tells a waiting 2025-11-25 client).
        self.on_decided: list[Callable[[Approval], None]] = []

    async def request(
        self,
        rule: ApprovalRule,
        principal: Principal,
        *,
        server: str,
        member: str,
        upstream: str,
        tool: str,
        arguments: Mapping[str, Any] | None,
        args_hash: str,
    ) -> Approval | None:
        """A new request; None when the caller already has `max_pending` waiting (nothing is stored)."""
        if await self.store.pending(principal.id) >= self.max_pending:
            return None
        shown = redact(dict(arguments or {}))
        approval = await self.store.create(
            NewApproval(
                principal=principal.id,
                server=server,
                member=member,
                upstream=upstream,
                tool=tool,
                arguments=shown if isinstance(shown, dict) else {},
                arguments_hash=args_hash,
                grant_label=rule.grant_label,
                approvers=rule.approvers.text,
                self_approval=rule.self_approval,
                valid_seconds=rule.valid_seconds,
                timeout_seconds=rule.timeout_seconds,
            )
        )
        detail = f"request {approval.id[:8]}: waits for {rule.approvers.text} ({rule.grant_label})"
        self._audit(principal.id, str(principal.credential), approval, Outcome.APPROVAL_REQUIRED, detail)
        return approval

    async def get(self, approval_id: str) -> Approval | None:
        return await self.store.get(approval_id)

    async def waiting_for(self, approver: Principal) -> list[Approval]:
        """The requests this person may decide now, newest first (among the newest WAITING_LISTED of all)."""
        return [a for a in await self.store.waiting(WAITING_LISTED) if may_approve(a, approver)]

    async def latest(self, principal: Principal, server: str, tool: str, args_hash: str) -> Approval | None:
        return await self.store.latest(principal.id, server, tool, args_hash)

    async def decide(self, approval: Approval, approver: Principal, approve: bool) -> Approval | None:
        """Approve or deny; None when the request is no longer pending (decided elsewhere, or expired)."""
        decided = await self.store.decide(approval.id, approver.id, approve)
        if decided is not None:
            outcome = Outcome.APPROVED if approve else Outcome.DENIED
            verb = "approved" if approve else "denied"
            detail = f"request {approval.id[:8]} by {approval.principal}: {verb} by {approver.id}"
            self._audit(approver.id, str(approver.credential), decided, outcome, detail)
            for listener in self.on_decided:
                listener(decided)
        return decided

    async def use(self, approval: Approval) -> bool:
        return await self.store.use(approval)

    async def close(self, approval: Approval) -> bool:
        return await self.store.close(approval)

    def _audit(self, principal_id: str, credential: str, approval: Approval, outcome: Outcome, detail: str) -> None:
        if self.audit is None:
            return
        self.audit(
            AuditEvent(
                at=time.time(),
                request_id=None,
                principal=principal_id,
                credential=credential,
                server=approval.server,
                member=approval.member,
                upstream=approval.upstream,
                method=METHOD,
                target=approval.tool,
                outcome=outcome,
                detail=detail,
                latency_ms=None,
                arguments=approval.arguments,
            )
        )


__all__ = ["ApprovalRule", "Approvals", "Approval", "Status", "arguments_hash", "may_approve", "rule_for"]
