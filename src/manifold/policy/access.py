"""Grants applied to the MCP surface: the `relay.access.Access` the handlers decide through.

A filtered list is cached per (server, kind, the set of grants that apply to the caller) for as long as the
built list it came from is current, so callers who share grants (a team) share one filtered list, and a
warm `tools/list` costs a dict lookup.
"""

from __future__ import annotations

import logging
from typing import Any

from manifold.catalog.view import Built, Target, VirtualServerView
from manifold.config.loaded import LoadedConfig
from manifold.policy.evaluation import Decision, Policy
from manifold.policy.grants import Grant, GrantSource, parse_grant
from manifold.policy.store import StoredGrant
from manifold.principal import Principal

log = logging.getLogger(__name__)
JSON = dict[str, Any]
NAMED_KINDS = ("tools", "prompts")  # items with a name a `tool:` grant can select; resources have none
MAX_CACHED_LISTS = 4096


def to_grant(stored: StoredGrant) -> Grant:
    c = stored.config
    source = GrantSource.FILE if stored.source == "manifold.yaml" else GrantSource.API
    return parse_grant(
        c.who, c.what, c.claims, grant_id=stored.id, description=c.description, source=source, approval=c
    )


class PolicyAccess:
    def __init__(self, config: LoadedConfig) -> None:
        self.config = config
        self.policy = Policy(())
        self._visible: dict[tuple[str, str, tuple[str, ...]], tuple[Built, list[JSON]]] = {}

    def set_catalog(self, config: LoadedConfig) -> None:
        """The groups, upstreams and virtual servers grants refer to changed (admin API, CLI): the next
        `load` compiles the grants against these."""
        self.config = config

    def load(self, stored: list[StoredGrant], *, virtual_servers: list[str] | None = None) -> None:
        grants: list[Grant] = []
        for g in stored:
            try:
                grants.append(to_grant(g))
            except ValueError as exc:  # a file grant was checked at load; a stored one may predate a rule
                log.error("grant %s is not valid and is ignored: %s", g.id, exc)
        self.policy = Policy(
            grants,
            groups=self.config.gateway.groups,
            virtual_servers=virtual_servers if virtual_servers is not None else list(self.config.virtual_servers),
            upstreams=list(self.config.upstreams),
        )
        self._visible = {}

    def decide_server(self, principal: Principal, view: VirtualServerView) -> Decision:
        members = [(m.member_id, m.upstream) for m in view.members]
        return self.policy.view(principal).server_access(view.id, members)

    def server_allowed(self, principal: Principal, view: VirtualServerView) -> bool:
        return principal.may_use_server(view.id) and self.decide_server(principal, view).allowed

    def visible(self, principal: Principal, view: VirtualServerView, kind: str, built: Built) -> list[JSON]:
        if not principal.may_use_server(view.id):
            return []
        pv = self.policy.view(principal)
        key = (view.id, kind, tuple(g.id for g in pv.grants))
        hit = self._visible.get(key)
        if hit is not None and hit[0] is built:
            return hit[1]
        named = kind in NAMED_KINDS
        flags = pv.filter_items(view.id, kind, [(t.upstream_id, t.name if named else None) for t in built.item_targets])
        items = [item for item, ok in zip(built.items, flags, strict=True) if ok]
        if len(self._visible) >= MAX_CACHED_LISTS:
            self._visible.clear()
        self._visible[key] = (built, items)
        return items

    def decide(self, principal: Principal, view: VirtualServerView, kind: str, target: Target) -> Decision:
        name = target.name if kind in NAMED_KINDS else None
        return self.policy.view(principal).allows(view.id, target.upstream_id, kind, name)

    def allows(self, principal: Principal, view: VirtualServerView, kind: str, target: Target) -> bool:
        return principal.may_use_server(view.id) and self.decide(principal, view, kind, target).allowed

    def member_visible(self, principal: Principal, view: VirtualServerView, member_id: str) -> bool:
        member = view.by_member.get(member_id)
        if member is None or not principal.may_use_server(view.id):
            return False
        return self.policy.view(principal).server_access(view.id, [(member.member_id, member.upstream)]).allowed
