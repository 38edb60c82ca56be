"""relay/approval_gate.py in-process, over a real database: the 2026-07-28 continuation (`requestState`) while
a request is pending, approved, spent; a state is bound to its caller and its call. The browser and real
clients of both eras: tests/browser/test_approvals.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from manifold.catalog.view import Target, VirtualServerView
from manifold.config.models import GrantConfig
from manifold.policy.approval_store import ApprovalStore
from manifold.policy.approvals import Approvals
from manifold.policy.evaluation import Policy
from manifold.policy.grants import grant_from_config
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind
from manifold.protocol import INVALID_PARAMS, RESULT_INPUT_REQUIRED, Era
from manifold.relay.approval_gate import ApprovalGate, Held, Passed
from manifold.relay.auth_required import RequestStates
from manifold.relay.call import Call
from manifold.relay.jsonrpc import RpcError
from manifold.store.db import open_database

pytestmark = pytest.mark.anyio
URL_ELICITATION = {"elicitation": {"url": {}}}
TARGET = Target("github", "github", "delete_repo")


def user(name: str, *teams: str) -> Principal:
    return Principal(
        kind=PrincipalKind.USER,
        name=f"{name}@corp.com",
        credential=Credential(CredentialKind.API_KEY, "k1"),
        email=f"{name}@corp.com",
        teams=frozenset(teams),
    )


ALICE, BOB, SAM = user("alice", "eng"), user("bob", "eng"), user("sam", "sre")


@dataclass
class StubView:
    id: str = "github"


@pytest.fixture
async def gate(tmp_path: Path) -> AsyncIterator[ApprovalGate]:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'manifold.db'}")
    grant = GrantConfig(
        who="team:eng", what=["server:github"], require_approval=["tool:github/delete_*"], approvers="team:sre"
    )
    policy = Policy([grant_from_config(grant, 0)], upstreams=["github"])
    approvals = Approvals(ApprovalStore(engine), max_pending=2)
    yield ApprovalGate(approvals, lambda: policy, RequestStates(), lambda: "https://gw.test")
    await engine.dispose()


def modern(principal: Principal) -> Call:
    view = cast(VirtualServerView, StubView())
    return Call(view=view, era=Era.MODERN, client_capabilities=URL_ELICITATION, principal=principal)


async def passed(gate: ApprovalGate, call: Call, **params: Any) -> Held | Passed:
    rule = gate.rule(call, TARGET)
    assert rule is not None
    return await gate.hold(call, TARGET, "delete_repo", {"name": "delete_repo", **params}, rule)


async def hold(gate: ApprovalGate, call: Call, **params: Any) -> Held | None:
    """The reply holding the call, or None when it may proceed."""
    result = await passed(gate, call, **params)
    return result if isinstance(result, Held) else None


def asked(held: Held | None) -> tuple[str, str]:
    """The URL and the requestState of an input_required reply."""
    assert held is not None
    result = held.reply["result"]
    assert result["resultType"] == RESULT_INPUT_REQUIRED
    return result["inputRequests"]["approval"]["params"]["url"], result["requestState"]


async def test_the_continuation_is_held_while_pending_and_runs_once_approved(gate: ApprovalGate) -> None:
    call = modern(ALICE)
    url, state = asked(await hold(gate, call, arguments={"repo": "x"}))
    assert url.startswith("https://gw.test/approvals/")
    again_url, again_state = asked(await hold(gate, call, arguments={"repo": "x"}, requestState=state))
    assert again_url == url  # the same request, still pending

    approval = await gate.approvals.get(url.rsplit("/", 1)[1])
    assert approval is not None and await gate.approvals.decide(approval, SAM, approve=True) is not None
    assert await hold(gate, call, arguments={"repo": "x"}, requestState=again_state, inputResponses={}) is None
    next_url, _ = asked(await hold(gate, call, arguments={"repo": "x"}, requestState=again_state))
    assert next_url != url  # one approval, one call: the next call is a new request


async def test_the_answer_to_a_question_the_approved_call_asked_finishes_it_without_a_new_approval(
    gate: ApprovalGate,
) -> None:
    """Was (found by a security probe): a one-call approval was spent when the call started, so when the upstream
    then asked the client something (`input_required`), the client's answer was held for a new approval, and
    the call could never finish. The question's state now goes out wrapped in one of ours naming the approval."""
    call = modern(ALICE)
    url, state = asked(await hold(gate, call, arguments={"repo": "x"}))
    approval = await gate.approvals.get(url.rsplit("/", 1)[1])
    assert approval is not None and await gate.approvals.decide(approval, SAM, approve=True) is not None
    ran = await passed(gate, call, arguments={"repo": "x"}, requestState=state, inputResponses={})
    assert isinstance(ran, Passed) and "requestState" not in ran.params  # ours: not sent upstream
    question = {"result": {"resultType": RESULT_INPUT_REQUIRED, "inputRequests": {}, "requestState": "upstream-s1"}}
    rule = gate.rule(call, TARGET)
    assert rule is not None
    wrapped = gate.continued(call, ran, question, rule)["result"]["requestState"]
    assert wrapped != "upstream-s1"
    answer = await passed(gate, call, arguments={"repo": "x"}, requestState=wrapped, inputResponses={"q": 1})
    assert isinstance(answer, Passed)
    assert answer.params["requestState"] == "upstream-s1" and answer.params["inputResponses"] == {"q": 1}
    with pytest.raises(RpcError, match="already answered"):  # once: a replay would run the call again
        await passed(gate, call, arguments={"repo": "x"}, requestState=wrapped, inputResponses={"q": 1})
    # Bound like every state of ours: to its caller, and to its call's arguments.
    second = gate.continued(call, ran, question, rule)["result"]["requestState"]
    assert second != wrapped  # the same question asked again is answered again (review: one state, refused)
    with pytest.raises(RpcError):
        await passed(gate, modern(BOB), arguments={"repo": "x"}, requestState=second)
    other_url, _ = asked(await hold(gate, call, arguments={"repo": "prod"}, requestState=second))
    assert other_url != url
    done = {"result": {"resultType": "complete", "content": []}}
    assert gate.continued(call, ran, done, rule) is done  # a finished call's reply goes out as it is


async def test_a_state_is_bound_to_its_caller_and_to_its_call(gate: ApprovalGate) -> None:
    url, state = asked(await hold(gate, modern(ALICE), arguments={"repo": "x"}))
    with pytest.raises(RpcError) as raised:
        await hold(gate, modern(BOB), arguments={"repo": "x"}, requestState=state)
    assert raised.value.code == INVALID_PARAMS

    approval = await gate.approvals.get(url.rsplit("/", 1)[1])
    assert approval is not None and await gate.approvals.decide(approval, SAM, approve=True) is not None
    # Alice's approved state, sent with other arguments, approves nothing: a new request for these.
    other_url, _ = asked(await hold(gate, modern(ALICE), arguments={"repo": "prod"}, requestState=state))
    assert other_url != url


async def test_a_denied_call_fails_once_and_then_asks_again(gate: ApprovalGate) -> None:
    call = modern(ALICE)
    url, state = asked(await hold(gate, call, arguments={}))
    approval = await gate.approvals.get(url.rsplit("/", 1)[1])
    assert approval is not None and await gate.approvals.decide(approval, SAM, approve=False) is not None
    denied = await hold(gate, call, arguments={}, requestState=state)
    assert denied is not None and denied.outcome == "denied"
    assert denied.reply["result"]["isError"]
    assert "denied by user:sam@corp.com" in denied.reply["result"]["content"][0]["text"]
    asked(await hold(gate, call, arguments={}))  # told once; the next call is a new request


async def test_calls_no_gate_covers_are_not_held(gate: ApprovalGate) -> None:
    assert gate.rule(modern(ALICE), Target("github", "github", "create_issue")) is None
    assert gate.rule(modern(SAM), TARGET) is None  # the gating grant does not apply to sam


async def test_a_caller_with_too_many_requests_waiting_is_refused_and_nobody_else_is(gate: ApprovalGate) -> None:
    first, _ = asked(await hold(gate, modern(ALICE), arguments={"repo": "a"}))
    asked(await hold(gate, modern(ALICE), arguments={"repo": "b"}))
    assert asked(await hold(gate, modern(ALICE), arguments={"repo": "a"}))[0] == first  # the same call: no new one
    refused = await hold(gate, modern(ALICE), arguments={"repo": "c"})
    assert refused is not None and refused.outcome == "denied"
    assert "2 approval requests waiting" in refused.reply["result"]["content"][0]["text"]
    asked(await hold(gate, modern(BOB), arguments={"repo": "c"}))  # another caller is not affected


async def test_held_on_one_replica_decided_on_another_and_run_on_a_third(tmp_path: Path) -> None:
    # Three gateway processes over one database, their request states signed with keys from one secret key.
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    engines = [await open_database(url) for _ in range(3)]
    keys = [b"k" * 32]
    try:
        grant = GrantConfig(
            who="team:eng", what=["server:github"], require_approval=["tool:github/delete_*"], approvers="team:sre"
        )
        policy = Policy([grant_from_config(grant, 0)], upstreams=["github"])
        a, b, c = (
            ApprovalGate(Approvals(ApprovalStore(e)), lambda: policy, RequestStates(keys), lambda: "https://gw.test")
            for e in engines
        )
        link, state = asked(await hold(a, modern(ALICE), arguments={"repo": "x"}))
        approval = await b.approvals.get(link.rsplit("/", 1)[1])  # the approver's browser reached replica b
        assert approval is not None and await b.approvals.decide(approval, SAM, approve=True) is not None
        assert await hold(c, modern(ALICE), arguments={"repo": "x"}, requestState=state) is None  # runs on c
        assert await hold(a, modern(ALICE), arguments={"repo": "x"}, requestState=state) is not None  # once only
    finally:
        for e in engines:
            await e.dispose()
