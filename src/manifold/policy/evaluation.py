"""Evaluation: which items a set of grants gives a principal, and why. Deny by default.

A `Policy` is built once from parsed grants (grants.py) plus the catalog facts it needs (groups, which server
ids are virtual) and is then immutable; rebuild it when grants, groups or virtual servers change.

Speed: `allows` runs for every item of a filtered `tools/list` and on every call. Globs were compiled when
the selectors were parsed; the grants that apply to a principal, and per-upstream results, are cached in a
`PrincipalView`.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, assert_never

from manifold.config.selectors import Matcher, What, WhatKind
from manifold.identity.claims import MISSING, claim_value
from manifold.policy.grants import Grant
from manifold.principal import Principal


class ItemKind(str, enum.Enum):
    """What a catalog item is; values are the list kinds the catalog uses."""

    TOOLS = "tools"
    PROMPTS = "prompts"
    RESOURCES = "resources"
    RESOURCE_TEMPLATES = "resource_templates"


def _freeze(value: Any) -> Hashable:
    """A hashable stand-in for a claim value; the type is kept so `True` and `1` stay distinct."""
    if isinstance(value, list | tuple):
        return ("list", tuple(_freeze(v) for v in value))
    if isinstance(value, Mapping):
        return ("object", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    if value is MISSING:
        return ("missing",)
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return (type(value).__name__, value)


# ---- decisions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    allowed: bool
    grant: Grant | None  # the grant that allows (None on deny)
    selector: What | None  # which of its resource selectors
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


_KIND_NOUN = {
    ItemKind.TOOLS: "tool",
    ItemKind.PROMPTS: "prompt",
    ItemKind.RESOURCES: "resource",
    ItemKind.RESOURCE_TEMPLATES: "resource template",
}


def describe_item(kind: ItemKind | str, upstream_id: str, name: str | None) -> str:
    """`tool create_issue of upstream github`, `resources of upstream github`."""
    kind = ItemKind(kind)
    if name is None:
        return f"{_KIND_NOUN[kind]}s of upstream {upstream_id}"
    return f"{_KIND_NOUN[kind]} {name} of upstream {upstream_id}"


def _allow(grant: Grant, what: What) -> Decision:
    return Decision(True, grant, what, f"by {grant.label}: {grant.render()}")


def _restricted(principal: Principal, server_id: str) -> Decision:
    allowed = ", ".join(sorted(principal.servers or ())) or "none"
    return Decision(False, None, None, f"the credential is restricted to servers ({allowed}), not {server_id}")


# ---- evaluation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    """A grant ready for evaluation: groups expanded, one allow `Decision` per selector made once."""

    grant: Grant
    scopes: tuple[tuple[What, frozenset[str] | None, Decision], ...]  # (selector, group members, decision)


_Hit = tuple[Grant, What, Decision]


class PrincipalView:
    """One principal's grants, with per-upstream results cached. Get it from `Policy.view`; hold it for a
    whole list filter or call (it is as immutable as the policy it came from)."""

    def __init__(self, policy: Policy, principal: Principal, compiled: tuple[_Compiled, ...]) -> None:
        self.policy = policy
        self.principal = principal
        self._compiled = compiled
        self.grants = tuple(c.grant for c in compiled)
        self._whole: dict[tuple[str, str], _Hit | None] = {}
        self._tools: dict[str, tuple[tuple[Matcher, _Hit], ...]] = {}

    def _whole_hit(self, server_id: str, upstream_id: str) -> _Hit | None:
        """The first grant giving all of `upstream_id`'s items on `server_id` (server:, group:, vserver:)."""
        key = (server_id, upstream_id)
        try:
            return self._whole[key]
        except KeyError:
            pass
        virtual = server_id in self.policy.virtual_servers
        hit: _Hit | None = None
        for c in self._compiled:
            for what, members, decision in c.scopes:
                if _covers_whole(what, members, server_id, upstream_id, virtual):
                    hit = (c.grant, what, decision)
                    break
            if hit is not None:
                break
        self._whole[key] = hit
        return hit

    def _tool_scopes(self, upstream_id: str) -> tuple[tuple[Matcher, _Hit], ...]:
        try:
            return self._tools[upstream_id]
        except KeyError:
            pass
        scopes = tuple(
            (what.tool_matches, (c.grant, what, decision))
            for c in self._compiled
            for what, _, decision in c.scopes
            if what.kind is WhatKind.TOOL and what.target_matches(upstream_id)
        )
        self._tools[upstream_id] = scopes
        return scopes

    def _hit(self, server_id: str, upstream_id: str, kind: ItemKind | str, name: str | None) -> _Hit | None:
        hit = self._whole_hit(server_id, upstream_id)
        if hit is not None or kind != ItemKind.TOOLS or name is None:
            return hit
        for tool_matches, tool_hit in self._tool_scopes(upstream_id):
            if tool_matches(name):
                return tool_hit
        return None

    def allows(self, server_id: str, upstream_id: str, kind: ItemKind | str, name: str | None) -> Decision:
        """May this principal use `name` (the upstream's own tool/prompt name; resources: the URI or None)
        of `upstream_id`, reached through `server_id`?"""
        if kind not in _KINDS:
            raise ValueError(f"unknown item kind {kind!r}; expected one of {sorted(k.value for k in ItemKind)}")
        if not self.principal.may_use_server(server_id):
            return _restricted(self.principal, server_id)
        hit = self._hit(server_id, upstream_id, kind, name)
        if hit is not None:
            return hit[2]
        return Decision(
            False,
            None,
            None,
            f"no grant gives {self.principal.id} {describe_item(kind, upstream_id, name)} on server {server_id}",
        )

    def filter_items(self, server_id: str, kind: ItemKind | str, items: Iterable[tuple[str, str | None]]) -> list[bool]:
        """`allows(...).allowed` for each (upstream id, name), in order, without building decisions."""
        if kind not in _KINDS:
            raise ValueError(f"unknown item kind {kind!r}; expected one of {sorted(k.value for k in ItemKind)}")
        if not self.principal.may_use_server(server_id):
            return [False for _ in items]
        return [self._hit(server_id, upstream_id, kind, name) is not None for upstream_id, name in items]

    def server_access(self, server_id: str, members: Iterable[tuple[str, str]]) -> Decision:
        """May this principal open `server_id` at all? Yes if some grant gives anything in it.
        `members`: the server's (member id, upstream id) pairs (a one-member server: [(id, id)])."""
        if not self.principal.may_use_server(server_id):
            return _restricted(self.principal, server_id)
        upstreams = [upstream_id for _, upstream_id in members]
        for upstream_id in upstreams:
            hit = self._whole_hit(server_id, upstream_id)
            if hit is None:
                scopes = self._tool_scopes(upstream_id)
                hit = scopes[0][1] if scopes else None
            if hit is not None:
                return hit[2]
        listed = ", ".join(upstreams) or "none"
        return Decision(
            False,
            None,
            None,
            f"no grant gives {self.principal.id} anything on server {server_id} (upstreams: {listed})",
        )


_KINDS = frozenset(ItemKind) | frozenset(k.value for k in ItemKind)


def _covers_whole(what: What, members: frozenset[str] | None, server_id: str, upstream_id: str, virtual: bool) -> bool:
    match what.kind:
        case WhatKind.SERVER:
            return bool(what.target_matches(upstream_id))
        case WhatKind.GROUP:
            return members is not None and upstream_id in members
        case WhatKind.VSERVER:
            return virtual and bool(what.target_matches(server_id))
        case WhatKind.TOOL:
            return False
        case _:
            assert_never(what.kind)


def covers(
    what: What,
    members: frozenset[str] | None,
    server_id: str,
    upstream_id: str,
    kind: ItemKind | str,
    name: str | None,
    virtual: bool,
) -> bool:
    """Whether one resource selector gives this item (group `members` already expanded)."""
    if what.kind is WhatKind.TOOL:
        return (
            kind == ItemKind.TOOLS
            and name is not None
            and bool(what.target_matches(upstream_id))
            and bool(what.tool_matches(name))
        )
    return _covers_whole(what, members, server_id, upstream_id, virtual)


class Policy:
    """The grants in force, compiled. Immutable: build a new one when grants, groups, virtual servers (or,
    for `warnings`, upstreams) change; per-principal caches go with the old one."""

    def __init__(
        self,
        grants: Sequence[Grant],
        *,
        groups: Mapping[str, Sequence[str]] | None = None,
        virtual_servers: Iterable[str] = (),
        upstreams: Iterable[str] | None = None,
        cache_size: int = 4096,
    ) -> None:
        self.grants = tuple(grants)
        self.groups = {g: frozenset(members) for g, members in (groups or {}).items()}
        self.virtual_servers = frozenset(virtual_servers)
        self._compiled = tuple(
            _Compiled(
                g,
                tuple(
                    (w, self.groups.get(w.target, frozenset()) if w.kind is WhatKind.GROUP else None, _allow(g, w))
                    for w in g.what
                ),
            )
            for g in self.grants
        )
        # Only claims some grant looks at take part in the cache key: two tokens of one principal that differ
        # in an unrelated claim share a view, and two that differ in a relevant one never do.
        self._claim_keys = tuple(sorted({key for g in self.grants for key, _ in g.claims}))
        self._views: dict[tuple[Principal, tuple[Hashable, ...]], PrincipalView] = {}
        self._cache_size = cache_size
        self.warnings = tuple(self._find_warnings(None if upstreams is None else frozenset(upstreams)))

    def is_virtual(self, server_id: str) -> bool:
        return server_id in self.virtual_servers

    def view(self, principal: Principal) -> PrincipalView:
        key = (principal, tuple(_freeze(claim_value(principal.claims, k)) for k in self._claim_keys))
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= self._cache_size:
                self._views.clear()  # crude but bounded; a policy lives until the next grant change anyway
            view = PrincipalView(self, principal, tuple(c for c in self._compiled if c.grant.applies_to(principal)))
            self._views[key] = view
        return view

    def applicable(self, principal: Principal) -> tuple[Grant, ...]:
        """The grants whose `who` (and claims) select this principal, in order."""
        return self.view(principal).grants

    def allows(
        self, principal: Principal, server_id: str, upstream_id: str, kind: ItemKind | str, name: str | None
    ) -> Decision:
        return self.view(principal).allows(server_id, upstream_id, kind, name)

    def filter_items(
        self, principal: Principal, server_id: str, kind: ItemKind | str, items: Iterable[tuple[str, str | None]]
    ) -> list[bool]:
        return self.view(principal).filter_items(server_id, kind, items)

    def server_access(self, principal: Principal, server_id: str, members: Iterable[tuple[str, str]]) -> Decision:
        return self.view(principal).server_access(server_id, members)

    def covering(
        self, server_id: str, upstream_id: str, kind: ItemKind | str, name: str | None
    ) -> tuple[tuple[Grant, What], ...]:
        """Every (grant, selector) giving this item to *someone*, whoever they are (for `explain`)."""
        virtual = server_id in self.virtual_servers
        return tuple(
            (c.grant, what)
            for c in self._compiled
            for what, members, _ in c.scopes
            if covers(what, members, server_id, upstream_id, kind, name, virtual)
        )

    def touching(self, server_id: str, upstream_id: str) -> tuple[tuple[Grant, What], ...]:
        """Every (grant, selector) that gives anything of `upstream_id` on `server_id`, whoever to."""
        virtual = server_id in self.virtual_servers
        return tuple(
            (c.grant, what)
            for c in self._compiled
            for what, members, _ in c.scopes
            if _covers_whole(what, members, server_id, upstream_id, virtual)
            or (what.kind is WhatKind.TOOL and what.target_matches(upstream_id))
        )

    def _find_warnings(self, upstreams: frozenset[str] | None) -> Iterable[str]:
        """Selectors that give nothing with the current catalog: likely typos, worth logging at load."""
        for g in self.grants:
            for w in g.what:
                match w.kind:
                    case WhatKind.GROUP:
                        if w.target not in self.groups:
                            yield f"{g.label}: {w.text} names no group"
                    case WhatKind.VSERVER:
                        if not any(w.target_matches(v) for v in self.virtual_servers):
                            hint = ""
                            if upstreams is not None and w.target in upstreams:
                                hint = f"; '{w.target}' is an upstream, which server:{w.target} covers"
                            yield f"{g.label}: {w.text} matches no virtual server{hint}"
                    case WhatKind.SERVER | WhatKind.TOOL:
                        if upstreams is not None and not any(w.target_matches(u) for u in upstreams):
                            yield f"{g.label}: {w.text} matches no upstream"
                    case _:
                        assert_never(w.kind)
