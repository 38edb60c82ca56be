"""The approval gate on tools/call (docs/approvals.md): a call a grant says needs approval is held until an
approver approves it in the browser (web/approvals.py).

The caller is told to open the request's page in exactly the forms of "connect your account"
(relay/auth_required.py `ask_to_open`): −32042 for a 2025-11-25 client that declared URL elicitation,
`input_required` (with a signed `requestState` naming the request) for a 2026-07-28 one, else a tool error
whose text holds the absolute URL. The call is then made again — the client's retry, the `input_required`
continuation — and finds the request by its state, or by (caller, server, tool, arguments): approved, it
proceeds (a one-call approval is spent by it); denied or expired, it fails saying so; still pending, the caller
is told again. An approval approves those exact arguments, nothing else.

A 2025-11-25 client that was sent −32042 on a session with a notification stream also gets
`notifications/elicitation/complete` naming the elicitation when an approver decides on this replica (on
another replica it learns by calling again).

Only calls of tools some grant gates pay anything: `rule` is one identity check when no grant has a gate.
"""

from __future__ import annotations

import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard, assert_never

from manifold.catalog.view import Target
from manifold.outbound.oauth.links import link_digest, spend
from manifold.policy.approval_store import Approval
from manifold.policy.approvals import ApprovalRule, Approvals, Status, arguments_hash, rule_for
from manifold.policy.evaluation import Policy
from manifold.protocol import ELICITATION_COMPLETE, INVALID_PARAMS, RESULT_INPUT_REQUIRED, Era
from manifold.relay.auth_required import RequestStates, ask_to_open, supports_url_elicitation
from manifold.relay.call import Call
from manifold.relay.hub import Listener
from manifold.relay.jsonrpc import RpcError, tool_error_result
from manifold.relay.tasks import TaskRun

JSON = dict[str, Any]
STATE_PREFIX = "manifold-approval."
MAX_WAITING = 10_000  # clients remembered for notifications/elicitation/complete; the oldest go first


def is_ours(state: object) -> TypeGuard[str]:
    return isinstance(state, str) and state.startswith(STATE_PREFIX)


def without_state(params: JSON) -> JSON:
    """The params to send upstream: our `requestState` (and the client's answer to our elicitation) removed."""
    if not is_ours(params.get("requestState")):
        return params
    return {k: v for k, v in params.items() if k not in ("requestState", "inputResponses")}


@dataclass(frozen=True)
class Held:
    """A call the gate did not let through: the reply, and the audit row's outcome and detail."""

    reply: JSON
    outcome: str
    detail: str


@dataclass(frozen=True)
class Passed:
    """A call the gate lets through: the approval it runs on, and the params to send on (our state removed, or
    for the continuation of an approved call the state of the question it answers put back)."""

    approval: Approval
    params: JSON


class ApprovalGate:
    def __init__(
        self,
        approvals: Approvals,
        policy: Callable[[], Policy],
        states: RequestStates,
        base_url: Callable[[], str],
    ) -> None:
        self.approvals = approvals
        self._policy = policy
        self.states = states
        self._base_url = base_url
        self._seen: Policy | None = None
        self._any = False
        # approval id -> (the session's listener, the elicitation id it was sent)
        self._waiting: dict[str, tuple[weakref.ref[Listener], str]] = {}
        approvals.on_decided.append(self._decided)

    def url(self, approval_id: str) -> str:
        return f"{self._base_url().rstrip('/')}/approvals/{approval_id}"

    def rule(self, call: Call, target: Target) -> ApprovalRule | None:
        """The rule holding this call, or None (the usual case: no grant has an approval gate)."""
        policy = self._policy()
        if policy is not self._seen:  # grants changed: is there any gate at all?
            self._any = any(g.approval is not None for g in policy.grants)
            self._seen = policy
        if not self._any or isinstance(call.request_id, TaskRun):  # a task's run was gated when it started
            return None
        return rule_for(policy, call.principal, call.view.id, target.upstream_id, target.name)

    async def hold(self, call: Call, target: Target, name: str, params: JSON, rule: ApprovalRule) -> Held | Passed:
        """`Passed`: approved, the call proceeds. `Held`: the reply that holds or fails it."""
        arguments = params.get("arguments")
        digest = arguments_hash(arguments if arguments is not None else {})
        approval: Approval | None = None
        state = params.get("requestState")
        if is_ours(state):
            data = self.states.unseal(STATE_PREFIX, state, call.principal.id)  # RpcError when not ours to use
            approval = await self.approvals.get(str(data.get("a", "")))
            if approval is not None and (
                approval.server != call.view.id or approval.tool != name or approval.arguments_hash != digest
            ):
                approval = None  # the state of another call: this one is asked for afresh
            elif approval is not None and isinstance(data.get("c"), str):
                # The answer to a question the approved call asked (see `continued`): it was approved when it
                # started, and goes on with the state of that question, once (replaying the answer would run an
                # upstream that keeps no state of its own again).
                lasts = max(1.0, float(data.get("exp", 0)) - time.time())  # as long as the state itself (review)
                if not await spend(self.approvals.store.engine, link_digest(state), lasts):
                    raise RpcError(INVALID_PARAMS, "this requestState was already answered")
                return Passed(approval, {**params, "requestState": data["c"]})
        if approval is None:
            approval = await self.approvals.latest(call.principal, call.view.id, name, digest)
        if approval is not None:
            status = approval.current_status(time.time())
            match status:
                case Status.APPROVED:
                    if await self.approvals.use(approval):
                        return Passed(approval, without_state(params))
                    await self.approvals.close(approval)  # a window that ended, or spent by a concurrent call
                case Status.PENDING:
                    return self._ask(call, approval, rule, "still waiting")
                case Status.DENIED:
                    await self.approvals.close(approval)
                    text = (
                        f"The call of '{name}' was denied by {approval.decided_by}, an approver "
                        f"({approval.approvers}). It was not run."
                    )
                    return Held(tool_error_result(text), "denied", f"approval denied by {approval.decided_by}")
                case Status.EXPIRED:
                    await self.approvals.close(approval)
                    text = (
                        f"The approval request for '{name}' expired before an approver ({approval.approvers}) "
                        "decided. The call was not run; call the tool again to ask again."
                    )
                    return Held(tool_error_result(text), "error", "approval request expired")
                case Status.USED | Status.CLOSED:
                    pass
                case _:
                    assert_never(status)
        approval = await self.approvals.request(
            rule,
            call.principal,
            server=call.view.id,
            member=target.member_id,
            upstream=target.upstream_id,
            tool=name,
            arguments=arguments if isinstance(arguments, dict) else None,
            args_hash=digest,
        )
        if approval is None:
            text = (
                f"Calling '{name}' needs approval, and you have {self.approvals.max_pending} approval requests "
                "waiting already. Wait until they are decided or expire, then call again."
            )
            return Held(tool_error_result(text), "denied", "too many approval requests waiting")
        return self._ask(call, approval, rule, "approval requested")

    def continued(self, call: Call, passed: Passed, reply: JSON, rule: ApprovalRule) -> JSON:
        """The reply of an approved call. When it asks the client for input (a 2026-07-28 `input_required`,
        whose answer comes back as a new tools/call), its `requestState` is wrapped in one of ours naming the
        approval, so the answer finishes this approved call instead of asking for a new approval (found by a
        security probe: the approval was spent by the call's start)."""
        result = reply.get("result")
        if not (isinstance(result, dict) and result.get("resultType") == RESULT_INPUT_REQUIRED):
            return reply
        inner = result.get("requestState")
        if not isinstance(inner, str):
            return reply
        # A nonce: an upstream asking twice with one state within a second would otherwise get the same state
        # of ours twice, and the second answer be refused as spent (review).
        data = {"p": call.principal.id, "a": passed.approval.id, "c": inner, "n": secrets.token_urlsafe(8)}
        state = self.states.seal(STATE_PREFIX, data, rule.timeout_seconds)
        return {**reply, "result": {**result, "requestState": state}}

    def _decided(self, approval: Approval) -> None:
        waiting = self._waiting.pop(approval.id, None)
        listener = waiting[0]() if waiting is not None else None
        if waiting is not None and listener is not None and not listener.ended:
            listener.push({"jsonrpc": "2.0", "method": ELICITATION_COMPLETE, "params": {"elicitationId": waiting[1]}})

    def _ask(self, call: Call, approval: Approval, rule: ApprovalRule, detail: str) -> Held:
        url = self.url(approval.id)
        elicitation_id = f"approval-{approval.id[:12]}"
        if (
            call.era is Era.HANDSHAKE
            and call.listener is not None
            and supports_url_elicitation(call.client_capabilities)
            and approval.id not in self._waiting
        ):
            if len(self._waiting) >= MAX_WAITING:
                del self._waiting[next(iter(self._waiting))]
            self._waiting[approval.id] = (weakref.ref(call.listener), elicitation_id)
        minutes = max(1, round((approval.expires_at - time.time()) / 60))
        text = (
            f"Calling '{approval.tool}' needs approval by {approval.approvers}. Open {url} in your browser to see "
            f"the request (send it to an approver); once it is approved, call the tool again. The request expires "
            f"in about {minutes} minute{'s' if minutes != 1 else ''}."
        )
        reply = ask_to_open(
            text,
            url,
            elicitation_id=elicitation_id,
            key="approval",
            era=call.era,
            client_capabilities=call.client_capabilities,
            request_state=lambda: self.states.seal(
                STATE_PREFIX, {"p": call.principal.id, "a": approval.id}, rule.timeout_seconds
            ),
        )
        return Held(reply, "approval_required", f"{detail}: {approval.approvers} ({approval.id[:8]})")
