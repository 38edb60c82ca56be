"""Rate limits and quotas on the requests relayed to upstreams: token buckets per principal, server and tool
(docs/rate-limits.md).

A rule (`rate_limits:` in manifold.yaml, or the admin API) selects requests with a grant's `who` and `what`
(config/selectors.py) and gives them a bucket of `burst` tokens refilled at `rate`; `per` says which values
of a request get their own bucket (`principal`, `server` = upstream, `tool` = the item it names); an empty
`per` is one bucket for everyone the rule selects. A request takes one token from the bucket of every rule
that selects it, or none when one of them is empty: then it is refused with how long until it would pass. A
quota is the same thing with a long unit: `5000/day` holds 5000 calls, refilled continuously over a day.

The requests counted (relay/handlers.py): tools/call of the tool (kind `tools`), prompts/get and completions
of a prompt (`prompts`), resources/read, resources/subscribe and completions of a resource (`resources`). A
`tool:` selector covers only tools, as in a grant; a rule without `what`, or with `server:`, `group:` or
`vserver:`, covers every kind. Lists come from the gateway's cache and are not counted.

Speed: which rules select a request is worked out once per (principal, server, upstream, item, kind) and
cached; a request then costs a tuple, a dict lookup and a little arithmetic per matching rule (no await) with
the in-memory buckets (SQLite: one process). On PostgreSQL the buckets are rows every replica shares
(rate_limit_store.py `SharedBuckets`): one transaction per limited request.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

from manifold.catalog.view import Target
from manifold.config.models import RateLimitConfig, parse_rate
from manifold.config.selectors import What, WhatKind, Who, parse_what, parse_who
from manifold.policy.evaluation import ItemKind, covers
from manifold.policy.grants import who_selects
from manifold.policy.rate_limit_store import RateLimitRepository, SharedBuckets, StoredRule, file_rules, retry_seconds
from manifold.principal import Principal

log = logging.getLogger(__name__)
JSON = dict[str, Any]
MAX_PLANS = 16_384  # cached (principal, server, upstream, item, kind) → rules; cleared whole when full
# What a `per: [tool]` bucket is named by, for an item other than a tool: a prompt and a tool of one name (or a
# resource URI that looks like one) do not share a bucket. A tool's is `upstream/tool`, as it always was.
_ITEM_PREFIX = {ItemKind.PROMPTS: "prompt:", ItemKind.RESOURCES: "resource:"}


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    source: str  # "manifold.yaml" | "api"
    config: RateLimitConfig
    who: Who
    what: What | None
    burst: float
    refill: float  # tokens per second
    per: tuple[str, ...]
    key: str  # what a bucket belongs to: a changed rule (rate, burst, per, selectors) starts with full buckets

    def public(self) -> JSON:
        return {"id": self.id, "source": self.source, **self.config.model_dump(exclude_none=True, exclude={"id"})}


def make_rule(stored: StoredRule) -> Rule:
    """A rule ready for evaluation; raises `ValueError` (a `GrantError` naming the field) when it is not valid."""
    c = stored.config
    count, window = parse_rate(c.rate)
    who = parse_who(c.who)
    what = None if c.what is None else parse_what(c.what)
    per = tuple(dict.fromkeys(c.per))  # in the written order, once each
    burst = float(c.burst if c.burst is not None else count)
    key = f"{stored.id}|{c.who}|{c.what}|{c.rate}|{burst:g}|{','.join(per)}"
    return Rule(stored.id, stored.source, c, who, what, burst, count / window, per, key)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A call over a limit: which rule, and the seconds until the call would pass."""

    rule: Rule
    wait: float

    @property
    def retry_after(self) -> int:
        return retry_seconds(self.wait)

    @property
    def message(self) -> str:
        return f"Rate limit '{self.rule.id}' ({self.rule.config.rate}) reached; retry in {self.retry_after} s"

    def data(self) -> JSON:
        return {"retryAfter": self.retry_after, "limit": self.rule.id}


# The buckets one call draws from: (rule, in-memory key, shared key).
_Plan = tuple[tuple[Rule, tuple[str, ...], str], ...]


class CatalogFacts(Protocol):
    """What `what` selectors need to know of the catalog: the groups and which servers are virtual. The
    policy's (policy/evaluation.py `Policy`, kept current by the catalog swap) is passed in."""

    @property
    def groups(self) -> Mapping[str, frozenset[str]]: ...

    @property
    def virtual_servers(self) -> frozenset[str]: ...


@dataclass(frozen=True)
class NoCatalog:
    """No groups, no virtual servers (unit tests)."""

    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    virtual_servers: frozenset[str] = frozenset()


_NO_CATALOG = NoCatalog()


class RateLimits:
    """The rules in force and their buckets. `active` is False while there are no rules: the relay then
    does nothing more than read that attribute."""

    def __init__(
        self,
        file_configs: list[RateLimitConfig] | None = None,
        repository: RateLimitRepository | None = None,
        *,
        catalog: Callable[[], CatalogFacts] | None = None,
        shared: SharedBuckets | None = None,
        max_buckets: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._file = file_rules(file_configs or [])
        self._repository = repository
        self._catalog = catalog or (lambda: _NO_CATALOG)
        self._facts: CatalogFacts | None = None
        self.shared_buckets = shared
        self.shared = shared is not None
        self._max_buckets = max_buckets
        self._clock = clock
        self.rules: tuple[Rule, ...] = ()
        self.active = False
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        self._buckets: dict[tuple[str, ...], list[float]] = {}  # key → [tokens, at]
        self.set_rules(self._file)

    # ---- rules ----------------------------------------------------------------------------------

    def set_rules(self, stored: Iterable[StoredRule]) -> None:
        rules: list[Rule] = []
        for s in stored:
            try:
                rules.append(make_rule(s))
            except ValueError as exc:  # a file rule was checked at load; a stored one may predate a check
                log.error("rate limit %s is not valid and is ignored: %s", s.id, exc)
        self.rules = tuple(rules)
        self.active = bool(rules)
        self._plans = {}
        keys = {r.key for r in rules}
        self._buckets = {k: v for k, v in self._buckets.items() if k[0] in keys}

    async def stored(self) -> list[StoredRule]:
        """Every rule: manifold.yaml's, then the admin API's."""
        return self._file + (await self._repository.list() if self._repository is not None else [])

    async def reload(self) -> None:
        """Read the rules again (at start, after an admin API change, when another replica changed them)."""
        self.set_rules(await self.stored())

    def file_rule(self, rule_id: str) -> StoredRule | None:
        return next((r for r in self._file if r.id == rule_id), None)

    # ---- which rules select a call ----------------------------------------------------------------

    def _plan(self, principal: Principal, server_id: str, target: Target, kind: ItemKind) -> _Plan:
        facts = self._catalog()
        if facts is not self._facts:  # groups or virtual servers changed: selectors may cover other things
            self._facts = facts
            self._plans = {}
        key = (principal.id, principal.teams, principal.idp, server_id, target.upstream_id, target.name, kind)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        virtual = server_id in facts.virtual_servers
        entries: list[tuple[Rule, tuple[str, ...], str]] = []
        for rule in self.rules:
            if not who_selects(rule.who, principal):
                continue
            what = rule.what
            if what is not None:
                members = facts.groups.get(what.target, frozenset()) if what.kind is WhatKind.GROUP else None
                if not covers(what, members, server_id, target.upstream_id, kind, target.name, virtual):
                    continue
            tool = f"{_ITEM_PREFIX.get(kind, '')}{target.upstream_id}/{target.name}"
            values = {"principal": principal.id, "server": target.upstream_id, "tool": tool}
            bucket = (rule.key, *(values[p] for p in rule.per))
            entries.append((rule, bucket, hashlib.sha256("\x00".join(bucket).encode()).hexdigest()))
        plan = tuple(entries)
        if len(self._plans) >= MAX_PLANS:
            self._plans = {}
        self._plans[key] = plan
        return plan

    # ---- taking tokens ------------------------------------------------------------------------------

    def take(
        self, principal: Principal, server_id: str, target: Target, kind: ItemKind = ItemKind.TOOLS
    ) -> Refusal | None:
        """Take a token from every bucket this request draws from (in memory), or refuse it taking none. `kind`:
        what `target` is (a tools/call's tool; a prompt or a resource for the other requests)."""
        plan = self._plan(principal, server_id, target, kind)
        if not plan:
            return None
        now = self._clock()
        buckets = self._buckets
        if len(plan) == 1:  # the common case, without the lists of the general one
            rule, key, _ = plan[0]
            state = buckets.get(key)
            if state is None:
                if len(buckets) >= self._max_buckets:
                    self._make_room(now)
                buckets[key] = [rule.burst - 1.0, now]
                return None
            tokens = state[0] + (now - state[1]) * rule.refill
            if tokens > rule.burst:
                tokens = rule.burst
            if tokens < 1.0:
                return Refusal(rule, (1.0 - tokens) / rule.refill)
            state[0] = tokens - 1.0
            state[1] = now
            return None
        levels: list[float] = []
        refusal: Refusal | None = None
        for rule, key, _ in plan:
            state = buckets.get(key)
            tokens = rule.burst if state is None else min(rule.burst, state[0] + (now - state[1]) * rule.refill)
            if tokens < 1.0:
                wait = (1.0 - tokens) / rule.refill
                if refusal is None or wait > refusal.wait:
                    refusal = Refusal(rule, wait)
            levels.append(tokens)
        if refusal is not None:
            return refusal
        for (_, key, _), tokens in zip(plan, levels, strict=True):
            state = buckets.get(key)
            if state is None:
                if len(buckets) >= self._max_buckets:
                    self._make_room(now)
                buckets[key] = [tokens - 1.0, now]
            else:
                state[0] = tokens - 1.0
                state[1] = now
        return None

    async def take_shared(
        self, principal: Principal, server_id: str, target: Target, kind: ItemKind = ItemKind.TOOLS
    ) -> Refusal | None:
        """`take` on the buckets every replica shares (PostgreSQL)."""
        plan = self._plan(principal, server_id, target, kind)
        if not plan or self.shared_buckets is None:
            return None
        refused = await self.shared_buckets.take(tuple((shared, rule.burst, rule.refill) for rule, _, shared in plan))
        if refused is None:
            return None
        index, wait = refused
        return Refusal(plan[index][0], wait)

    def _make_room(self, now: float) -> None:
        """Full buckets are the same as none: drop those; if that is not enough, the oldest quarter (their
        owners get a full bucket: lenient, never refusing anyone for want of memory)."""
        rules = {r.key: r for r in self.rules}
        buckets = self._buckets
        full = [
            k
            for k, (tokens, at) in buckets.items()
            if (rule := rules.get(k[0])) is None or tokens + (now - at) * rule.refill >= rule.burst
        ]
        for k in full:
            del buckets[k]
        if len(buckets) >= self._max_buckets:
            for k in list(islice(buckets, max(1, len(buckets) // 4))):
                del buckets[k]

    @property
    def bucket_count(self) -> int:
        return len(self._buckets)
