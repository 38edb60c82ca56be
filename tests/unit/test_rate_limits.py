"""Rate limits and quotas (policy/rate_limits.py, docs/rate-limits.md), in process with a driven clock: the
token bucket refuses with a retry hint and lets calls through again once refilled; whose calls share a
bucket (`per`); which calls a rule selects (`who`, `what`); nothing is taken when one rule refuses; memory
stays bounded; `manifold check` reports a bad rule with file, field and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import anyio
import pytest

from manifold.admin.ops import Conflict
from manifold.admin.rate_limits import RateLimitAdmin
from manifold.catalog.view import Target
from manifold.config.loader import load_config
from manifold.config.models import RateLimitConfig, parse_rate
from manifold.config.problems import ConfigError
from manifold.policy.evaluation import ItemKind
from manifold.policy.rate_limit_store import RateLimitRepository, SharedBuckets, StoredRule
from manifold.policy.rate_limits import NoCatalog, RateLimits
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind
from manifold.protocol import COMPLETION_COMPLETE, PROMPTS_GET, RATE_LIMITED, RESOURCES_READ, RESOURCES_SUBSCRIBE
from manifold.relay.call import Call
from manifold.relay.hub import Listener
from manifold.relay.jsonrpc import RpcError
from manifold.store.db import connect, open_database
from tests.unit.test_relay_handlers import StandInPool, call_on, gateway_for, replying
from tests.unit.test_relay_tasks import setup, start
from tests.waiting import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def user(name: str, *teams: str) -> Principal:
    return Principal(PrincipalKind.USER, name, Credential(CredentialKind.API_KEY, name), teams=frozenset(teams))


ANN, BOB = user("ann@example.com", "eng"), user("bob@example.com")
ECHO = Target("kitchen", "kitchen", "echo")
ADD = Target("kitchen", "kitchen", "add")
GREET = Target("kitchen", "kitchen", "greet")  # a prompt
README = Target("kitchen", "kitchen", "kitchen://readme")  # a resource
PROMPT, RESOURCE = ItemKind.PROMPTS, ItemKind.RESOURCES


def limits(*rules: dict[str, object], clock: Clock, **kwargs: object) -> RateLimits:
    configs = [RateLimitConfig.model_validate(r) for r in rules]
    return RateLimits(configs, clock=clock, **kwargs)  # pyright: ignore[reportArgumentType]


def test_a_bucket_refuses_with_a_retry_hint_and_refills_over_time() -> None:
    clock = Clock()
    rl = limits({"id": "slow", "rate": "2/min"}, clock=clock)
    assert rl.take(ANN, "kitchen", ECHO) is None
    assert rl.take(ANN, "kitchen", ECHO) is None
    refused = rl.take(ANN, "kitchen", ECHO)
    assert refused is not None
    assert refused.data() == {"retryAfter": 30, "limit": "slow"}  # one token every 30 s
    assert "slow" in refused.message and "2/min" in refused.message
    clock.now += 29.0
    assert rl.take(ANN, "kitchen", ECHO) is not None  # not yet
    clock.now += 1.0
    assert rl.take(ANN, "kitchen", ECHO) is None  # refilled: one call passes
    assert rl.take(ANN, "kitchen", ECHO) is not None


def test_burst_and_quota_units() -> None:
    assert parse_rate("10/s") == (10, 1.0)
    assert parse_rate("600/min") == (600, 60.0)
    assert parse_rate("5000/day") == (5000, 86400.0)
    clock = Clock()
    rl = limits({"rate": "1/s", "burst": 3}, clock=clock)
    assert [rl.take(ANN, "kitchen", ECHO) is None for _ in range(4)] == [True, True, True, False]


def test_one_principal_over_its_limit_does_not_affect_another() -> None:
    clock = Clock()
    rl = limits({"rate": "1/hour"}, clock=clock)
    assert rl.take(ANN, "kitchen", ECHO) is None
    assert rl.take(ANN, "kitchen", ECHO) is not None
    assert rl.take(BOB, "kitchen", ECHO) is None  # his own bucket


def test_per_decides_whose_calls_share_a_bucket() -> None:
    clock = Clock()
    shared = limits({"rate": "1/hour", "per": []}, clock=clock)  # one bucket for everyone selected
    assert shared.take(ANN, "kitchen", ECHO) is None
    assert shared.take(BOB, "kitchen", ADD) is not None
    per_tool = limits({"rate": "1/hour", "per": ["principal", "tool"]}, clock=clock)
    assert per_tool.take(ANN, "kitchen", ECHO) is None
    assert per_tool.take(ANN, "kitchen", ADD) is None  # another tool: another bucket
    assert per_tool.take(ANN, "kitchen", ECHO) is not None


def test_who_and_what_select_the_calls_a_rule_counts() -> None:
    clock = Clock()
    rl = limits({"who": "team:eng", "what": "tool:kitchen/ec*", "rate": "1/hour"}, clock=clock)
    for _ in range(3):
        assert rl.take(BOB, "kitchen", ECHO) is None  # not in the team
        assert rl.take(ANN, "kitchen", ADD) is None  # another tool
    assert rl.take(ANN, "kitchen", ECHO) is None
    assert rl.take(ANN, "kitchen", ECHO) is not None
    vserver = limits(
        {"what": "vserver:eng", "rate": "1/hour"},
        clock=clock,
        catalog=lambda: NoCatalog(virtual_servers=frozenset({"eng"})),
    )
    assert vserver.take(ANN, "kitchen", ECHO) is None and vserver.take(ANN, "kitchen", ECHO) is None  # not via eng
    assert vserver.take(ANN, "eng", ECHO) is None
    assert vserver.take(ANN, "eng", ECHO) is not None


def test_a_rule_scoped_to_a_tool_counts_that_tool_and_a_wider_rule_every_request_of_its_scope() -> None:
    clock = Clock()
    tool = limits({"what": "tool:kitchen/*", "rate": "1/hour"}, clock=clock)
    for _ in range(3):  # prompts and resources are never a tool's, whatever their name
        assert tool.take(ANN, "kitchen", GREET, PROMPT) is None
        assert tool.take(ANN, "kitchen", README, RESOURCE) is None
    assert tool.take(ANN, "kitchen", ECHO) is None
    assert tool.take(ANN, "kitchen", ECHO) is not None
    for what in (None, "server:kitchen", "vserver:eng"):  # a principal's, a server's: one bucket for everything
        rl = limits({"what": what, "rate": "3/hour"}, clock=clock, catalog=lambda: NoCatalog(virtual_servers={"eng"}))
        server = "eng" if what == "vserver:eng" else "kitchen"
        assert rl.take(ANN, server, GREET, PROMPT) is None
        assert rl.take(ANN, server, README, RESOURCE) is None
        assert rl.take(ANN, server, ECHO) is None
        for item, kind in ((GREET, PROMPT), (README, RESOURCE), (ADD, ItemKind.TOOLS)):
            refused = rl.take(ANN, server, item, kind)
            assert refused is not None and refused.data() == {"retryAfter": 1200, "limit": "rate_limits[0]"}
        assert rl.take(BOB, server, README, RESOURCE) is None  # his own bucket
    other = limits({"what": "server:github", "rate": "1/hour"}, clock=clock)
    assert other.take(ANN, "kitchen", README, RESOURCE) is None and other.take(ANN, "kitchen", README, RESOURCE) is None


def test_per_tool_gives_each_prompt_and_resource_a_bucket_apart_from_a_tool_of_the_same_name() -> None:
    clock = Clock()
    rl = limits({"rate": "1/hour", "per": ["principal", "tool"]}, clock=clock)
    named_alike = Target("kitchen", "kitchen", "echo")
    assert rl.take(ANN, "kitchen", ECHO) is None
    assert rl.take(ANN, "kitchen", named_alike, PROMPT) is None  # the prompt `echo`: not the tool's bucket
    assert rl.take(ANN, "kitchen", named_alike, RESOURCE) is None
    assert rl.take(ANN, "kitchen", README, RESOURCE) is None
    for kind in (ItemKind.TOOLS, PROMPT, RESOURCE):
        assert rl.take(ANN, "kitchen", named_alike, kind) is not None


def test_an_idp_rule_counts_a_person_only_when_that_idp_signed_them_in() -> None:
    clock = Clock()
    rl = limits({"who": "idp:corp", "rate": "1/hour"}, clock=clock)
    by_key = ANN
    by_corp = Principal(
        PrincipalKind.USER, ANN.name, Credential(CredentialKind.IDP_JWT, "corp"), teams=ANN.teams, idp="corp"
    )
    for _ in range(3):
        assert rl.take(by_key, "kitchen", ECHO) is None  # with an API key: not selected
    assert rl.take(by_corp, "kitchen", ECHO) is None
    assert rl.take(by_corp, "kitchen", ECHO) is not None


def test_a_refused_call_takes_no_token_from_the_other_rules() -> None:
    clock = Clock()
    rl = limits(
        {"id": "wide", "rate": "2/hour"}, {"id": "echo", "what": "tool:kitchen/echo", "rate": "1/hour"}, clock=clock
    )
    assert rl.take(ANN, "kitchen", ECHO) is None  # wide 1 left, echo 0
    refused = rl.take(ANN, "kitchen", ECHO)
    assert refused is not None and refused.rule.id == "echo"
    assert rl.take(ANN, "kitchen", ADD) is None  # wide still had its token: the refused call took none
    assert rl.take(ANN, "kitchen", ADD) is not None


def test_no_rules_is_inactive_and_changed_rules_apply_at_once() -> None:
    clock = Clock()
    rl = limits(clock=clock)
    assert not rl.active
    rl.set_rules([StoredRule("api-1", RateLimitConfig(rate="1/hour"), "api")])
    assert rl.active
    assert rl.take(ANN, "kitchen", ECHO) is None
    assert rl.take(ANN, "kitchen", ECHO) is not None
    rl.set_rules([StoredRule("api-1", RateLimitConfig(rate="5/hour"), "api")])  # a changed rule: fresh buckets
    assert rl.take(ANN, "kitchen", ECHO) is None
    rl.set_rules([])
    assert not rl.active and rl.bucket_count == 0


def test_memory_is_bounded_without_refusing_anyone() -> None:
    clock = Clock()
    rl = limits({"rate": "1/hour"}, clock=clock, max_buckets=50)
    for i in range(1000):
        assert rl.take(user(f"u{i}@example.com"), "kitchen", ECHO) is None
        assert rl.bucket_count <= 50


def _problems(tmp_path: Path, rules: str) -> set[tuple[str, int | None, str]]:
    head = 'upstreams:\n  kitchen: {transport: http, url: "http://127.0.0.1:1/mcp"}\nrate_limits:\n'
    (tmp_path / "manifold.yaml").write_text(head + textwrap.dedent(rules))
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "manifold.yaml")
    return {(p.field_path, p.line, p.reason) for p in info.value.problems}


def test_check_reports_a_bad_rule_with_file_field_and_line(tmp_path: Path) -> None:
    found = _problems(tmp_path, "- rate: 10/fortnight\n- rate: 1/s\n  per: [principal, planet]\n")
    assert {(field, line) for field, line, _ in found} == {("rate_limits[0].rate", 4), ("rate_limits[1].per[1]", 6)}
    assert any("fortnight" in reason for _, _, reason in found)
    found = _problems(
        tmp_path,
        """\
        - who: team
          rate: 1/s
        - what: tool:kitchen
          rate: 1/s
        - {id: twice, rate: 1/s}
        - {id: twice, rate: 2/s}
        """,
    )
    assert {(field, line) for field, line, _ in found} == {
        ("rate_limits[0].who", 4),
        ("rate_limits[1].what", 6),
        ("rate_limits[3].id", 9),
    }


# ---- in the relay ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_call_run_as_a_task_takes_one_token_when_asked_for_not_again_when_it_runs() -> None:
    gateway, view, _ = await setup(replying({"content": [{"type": "text", "text": "done"}]}))
    gateway.rate_limits = RateLimits([RateLimitConfig(id="one", rate="1/hour")])
    task_id = await start(gateway, view)
    await wait_for(lambda: gateway.tasks._tasks[task_id].status != "working", what="the task finishes")
    assert gateway.tasks._tasks[task_id].status == "completed"  # its run was not refused
    with pytest.raises(RpcError) as over:
        await start(gateway, view)
    assert over.value.code == RATE_LIMITED and over.value.data == {"retryAfter": 3600, "limit": "one"}


@pytest.mark.anyio
async def test_shared_buckets_let_calls_pass_with_a_warning_while_the_database_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = connect("postgresql://manifold@127.0.0.1:1/nowhere")  # nothing listens on port 1
    try:
        rl = RateLimits([RateLimitConfig(rate="1/hour")], shared=SharedBuckets(engine))
        assert await rl.take_shared(ANN, "kitchen", ECHO) is None
        assert await rl.take_shared(ANN, "kitchen", ECHO) is None
    finally:
        await engine.dispose()
    warnings = [r for r in caplog.records if "rate limits not applied" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None  # once, and no traceback


@pytest.mark.anyio
async def test_concurrent_posts_of_one_new_rule_id_give_one_rule_and_409s_never_a_500(tmp_path: Path) -> None:
    """Admins (or scripts) adding the same rule at once: the check before the insert cannot see a rule stored a
    moment ago by the other request; the database's key can, and that is a 409 like a plain duplicate."""
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'manifold.db'}")
    try:
        repository = RateLimitRepository(engine)
        admin = RateLimitAdmin(RateLimits([], repository), repository)
        outcomes: list[int] = []

        async def post() -> None:
            try:
                status, _ = await admin.route("POST", [], {"id": "same", "what": "tool:kitchen/add", "rate": "5/s"})
                outcomes.append(status)
            except Conflict:
                outcomes.append(409)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                for _ in range(8):
                    group.start_soon(post)
        assert sorted(outcomes) == [201] + [409] * 7
        assert [r.id for r in await repository.list()] == ["same"]
    finally:
        await engine.dispose()


class Recorded:
    """An `Auditor` that keeps the rows."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str | None]] = []

    def call(
        self,
        call: object,
        method: str,
        label: str,
        target: object,
        outcome: str,
        started: float,
        detail: str | None,
        *_: object,
    ) -> None:
        self.rows.append((method, label, outcome, detail))

    def refusal(self, *args: object) -> None:
        return None


@pytest.mark.anyio
async def test_prompts_resources_and_completions_over_a_limit_are_refused_audited_and_not_sent() -> None:
    pool = StandInPool(
        {"kitchen": {"prompts": [{"name": "greet"}], "resources": []}},
        answers={
            ("kitchen", PROMPTS_GET): replying({"messages": []}),
            ("kitchen", RESOURCES_READ): replying({"contents": []}),
            ("kitchen", COMPLETION_COMPLETE): replying({"completion": {"values": []}}),
        },
    )
    gateway, view = gateway_for(pool, {"upstream": "kitchen"})
    audit = Recorded()
    gateway.audit = audit
    gateway.rate_limits = RateLimits([RateLimitConfig(id="three", rate="3/hour")])
    call = call_on(view)
    uri, prompt = "test+kitchen://readme", "kitchen__greet"
    requests = [
        (RESOURCES_READ, {"uri": uri}, uri),
        (PROMPTS_GET, {"name": prompt}, prompt),
        (
            COMPLETION_COMPLETE,
            {"ref": {"type": "ref/prompt", "name": prompt}, "argument": {"name": "n", "value": ""}},
            prompt,
        ),
    ]
    for method, params, _ in requests:
        assert "result" in await gateway.handle(call, method, params)
    assert len(pool.sent) == 3
    subscribing = Call(view=view, era=call.era, client_capabilities={}, listener=Listener(view, {"resources"}))
    for method, params, label in [*requests, (RESOURCES_SUBSCRIBE, {"uri": uri}, uri)]:
        with pytest.raises(RpcError) as over:
            await gateway.handle(subscribing if method == RESOURCES_SUBSCRIBE else call, method, params)
        assert (over.value.code, over.value.data) == (RATE_LIMITED, {"retryAfter": 1200, "limit": "three"})
        assert audit.rows[-1][:3] == (method, label, "rate_limited") and "three" in str(audit.rows[-1][3])
    assert len(pool.sent) == 3  # nothing more reached the upstream


@pytest.mark.anyio
async def test_lists_are_not_counted() -> None:
    pool = StandInPool({"kitchen": {"prompts": [{"name": "greet"}], "tools": [], "resources": []}})
    gateway, view = gateway_for(pool, {"upstream": "kitchen"})
    gateway.rate_limits = RateLimits([RateLimitConfig(rate="1/hour")])
    for _ in range(3):
        for method in ("tools/list", "prompts/list", "resources/list", "resources/templates/list"):
            assert "result" in await gateway.handle(call_on(view), method, {})
