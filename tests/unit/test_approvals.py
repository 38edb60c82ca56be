"""The approval gate's rules and store in-process (docs/approvals.md): the config check, which calls a grant
holds, who may approve, and the request's life in the database (decided once, a one-call approval used once,
expiry, a window). The browser and both client eras: tests/browser/test_approvals.py."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.audit import AuditEvent, Outcome
from manifold.config.loader import load_config
from manifold.config.models import GrantConfig
from manifold.config.problems import ConfigError
from manifold.policy.approval_store import ApprovalStore, NewApproval, Status
from manifold.policy.approvals import Approvals, arguments_hash, may_approve, rule_for
from manifold.policy.evaluation import Policy
from manifold.policy.explain import Item, explain
from manifold.policy.grants import grant_from_config
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind
from manifold.store.db import open_database

pytestmark = pytest.mark.anyio


def user(name: str, *teams: str) -> Principal:
    return Principal(
        kind=PrincipalKind.USER,
        name=f"{name}@corp.com",
        credential=Credential(CredentialKind.API_KEY, "k1"),
        email=f"{name}@corp.com",
        teams=frozenset(teams),
    )


ALICE = user("alice", "eng")
SAM = user("sam", "sre")


def test_a_gate_without_approvers_is_reported_with_file_field_and_line(tmp_path: Path) -> None:
    (tmp_path / "manifold.yaml").write_text(
        textwrap.dedent(
            """
            upstreams:
              github: {transport: http, url: "http://127.0.0.1:1/mcp"}
            grants:
              - who: team:eng
                what: ["server:github"]
                require_approval: ["tool:github/delete_*"]
              - who: team:eng
                what: ["server:github"]
                require_approval: ["nope:x"]
                approvers: team:sre
              - who: team:eng
                what: ["server:github"]
                approvers: team:sre
            """
        )
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "manifold.yaml", env={})
    by_path = {p.field_path: p for p in info.value.problems}
    assert "require_approval needs approvers" in by_path["grants[0].approvers"].reason
    assert by_path["grants[0].approvers"].line is not None
    assert "unknown resource selector 'nope:'" in by_path["grants[1].require_approval[0]"].reason
    assert "lists nothing to approve" in by_path["grants[2].approvers"].reason
    assert all(p.file.endswith("manifold.yaml") for p in info.value.problems)


def test_a_timeout_of_zero_is_reported(tmp_path: Path) -> None:
    (tmp_path / "manifold.yaml").write_text(
        textwrap.dedent(
            """
            upstreams:
              github: {transport: http, url: "http://127.0.0.1:1/mcp"}
            grants:
              - who: team:eng
                what: ["server:github"]
                require_approval: ["tool:github/*"]
                approvers: team:sre
                approval_timeout_seconds: 0
            """
        )
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "manifold.yaml", env={})
    (problem,) = info.value.problems
    assert problem.field_path == "grants[0].approval_timeout_seconds" and problem.line == 9


def policy(*grants: GrantConfig) -> Policy:
    return Policy([grant_from_config(g, i) for i, g in enumerate(grants)], upstreams=["github", "docs"])


def test_only_the_gated_tools_of_the_callers_the_grant_applies_to_are_held() -> None:
    p = policy(
        GrantConfig(who="authenticated", what=["server:*"]),
        GrantConfig(
            who="team:eng",
            what=["server:github"],
            require_approval=["tool:github/delete_*"],
            approvers="team:sre",
            approval_timeout_seconds=60,
        ),
    )
    rule = rule_for(p, ALICE, "github", "github", "delete_repo")
    assert rule is not None and rule.approvers.text == "team:sre" and rule.timeout_seconds == 60
    assert rule.grant_label == "manifold.yaml grants[1]"
    assert rule_for(p, ALICE, "github", "github", "create_issue") is None  # not gated
    assert rule_for(p, SAM, "github", "github", "delete_repo") is None  # the grant does not apply to sam
    assert rule_for(p, ALICE, "docs", "docs", "delete_repo") is None  # another upstream


def test_arguments_hash_ignores_key_order_but_not_values() -> None:
    assert arguments_hash({"a": 1, "b": 2}) == arguments_hash({"b": 2, "a": 1})
    assert arguments_hash({"a": 1}) != arguments_hash({"a": 2})


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'manifold.db'}")
    yield engine
    await engine.dispose()


def new(*, valid: float = 0.0, timeout: float = 900.0, self_approval: bool = False) -> NewApproval:
    return NewApproval(
        principal=ALICE.id,
        server="github",
        member="github",
        upstream="github",
        tool="delete_repo",
        arguments={"repo": "x", "token": "[redacted]"},
        arguments_hash=arguments_hash({"repo": "x"}),
        grant_label="manifold.yaml grants[1]",
        approvers="team:sre",
        self_approval=self_approval,
        valid_seconds=valid,
        timeout_seconds=timeout,
    )


async def test_a_request_is_decided_once_and_a_one_call_approval_is_used_once(engine: AsyncEngine) -> None:
    audited: list[AuditEvent] = []
    approvals = Approvals(ApprovalStore(engine), audited.append)
    store = approvals.store
    made = await store.create(new())
    assert may_approve(made, SAM) and not may_approve(made, ALICE)  # alice: her own request
    decided = await approvals.decide(made, SAM, approve=True)
    assert decided is not None and decided.status is Status.APPROVED and decided.decided_by == SAM.id
    assert await approvals.decide(made, SAM, approve=False) is None  # decided already: nothing changes
    assert [(e.outcome, e.principal) for e in audited] == [(Outcome.APPROVED, SAM.id)]

    found = await store.latest(ALICE.id, "github", "delete_repo", made.arguments_hash)
    assert found is not None and found.id == made.id
    wins = await asyncio.gather(store.use(found), store.use(found))  # two replicas, one approval
    assert sorted(wins) == [False, True]
    assert await store.latest(ALICE.id, "github", "delete_repo", made.arguments_hash) is None  # spent


async def test_self_approval_only_when_configured(engine: AsyncEngine) -> None:
    store = ApprovalStore(engine)
    own = await store.create(new(self_approval=True))
    assert may_approve(own, user("alice", "sre"))  # an approver approving their own: allowed here
    assert not may_approve(await store.create(new()), user("alice", "sre"))


async def test_a_pending_request_expires_and_can_no_longer_be_approved(engine: AsyncEngine) -> None:
    store = ApprovalStore(engine)
    made = await store.create(new(timeout=10), now=1000.0)
    assert made.current_status(1009.0) is Status.PENDING
    assert made.current_status(1010.0) is Status.EXPIRED
    assert await store.decide(made.id, SAM.id, True, now=1011.0) is None


async def test_a_window_lets_the_same_call_through_until_it_ends(engine: AsyncEngine) -> None:
    store = ApprovalStore(engine)
    made = await store.create(new(valid=300))
    decided = await store.decide(made.id, SAM.id, True)
    assert decided is not None and decided.valid_until is not None
    assert await store.use(decided) and await store.use(decided)  # not spent
    assert not await store.use(decided, now=decided.valid_until + 1)


def test_explain_says_which_calls_wait_for_an_approver() -> None:
    p = policy(
        GrantConfig(
            who="team:eng", what=["server:github"], require_approval=["tool:github/delete_*"], approvers="team:sre"
        )
    )
    members = [("github", "github")]
    gated = explain(p, ALICE, "github", members, Item("delete_repo", "github", "github", "delete_repo"))
    assert gated[0].startswith("ALLOW")
    assert "  calls wait for approval by team:sre (manifold.yaml grants[0])" in gated
    plain = explain(p, ALICE, "github", members, Item("create_issue", "github", "github", "create_issue"))
    assert not any("approval" in line for line in plain)
