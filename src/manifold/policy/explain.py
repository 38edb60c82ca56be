"""`manifold explain`: why a principal may or may not use a server or one of its items, for an operator.

Text only, no I/O: the CLI builds the principal and resolves the exposed name; this module renders the
decision, the grant that made it, and on a deny what *would* have allowed it: the grants that apply to the
principal (and what they give instead), and the grants that give the item to someone else, each with the
reason it does not select this principal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import assert_never

from manifold.config.selectors import What, WhatKind, WhoKind
from manifold.identity.claims import MISSING, claim_accepted, claim_value
from manifold.policy.approvals import rule_for
from manifold.policy.evaluation import Decision, ItemKind, Policy, describe_item
from manifold.policy.grants import Grant, who_selects
from manifold.principal import Principal, PrincipalKind

_NOUN = {
    ItemKind.TOOLS: "tool",
    ItemKind.PROMPTS: "prompt",
    ItemKind.RESOURCES: "resource",
    ItemKind.RESOURCE_TEMPLATES: "resource template",
}


@dataclass(frozen=True)
class Item:
    """The item asked about: as the client names it (`exposed`) and where it resolved to."""

    exposed: str
    member: str
    upstream: str
    name: str | None  # the upstream's own tool/prompt name, or the resource URI
    kind: ItemKind = ItemKind.TOOLS


def describe_principal(principal: Principal) -> str:
    """`user:alice@corp.com (teams: eng, ops; IdP corp)`."""
    if principal.kind is PrincipalKind.ANONYMOUS:
        return "anonymous (no credential)"
    details = [f"teams: {', '.join(sorted(principal.teams))}" if principal.teams else "no teams"]
    if principal.idp is not None:
        details.append(f"IdP {principal.idp}")
    if principal.servers is not None:
        details.append(f"credential restricted to servers: {', '.join(sorted(principal.servers)) or 'none'}")
    return f"{principal.id} ({'; '.join(details)})"


def why_not(grant: Grant, principal: Principal) -> str | None:
    """Why `grant` does not select `principal` (None when it does)."""
    if grant.applies_to(principal):
        return None
    who = grant.who
    if not who_selects(who, principal):
        match who.kind:
            case WhoKind.USER:
                if principal.kind is not PrincipalKind.USER:
                    return f"{principal.id} is not a user"
                names = " or ".join(dict.fromkeys(n for n in (principal.name, principal.email) if n))
                return f"{who.value} does not match {names}"
            case WhoKind.TEAM:
                return f"not in team {who.value}"
            case WhoKind.SA:
                return f"not service account {who.value}"
            case WhoKind.IDP:
                source = f"IdP {principal.idp}" if principal.idp else "no IdP token"
                return f"not signed in through IdP {who.value} ({source})"
            case WhoKind.EXT:
                return f"not external identity {who.identity} of IdP {who.value}"
            case WhoKind.AUTHENTICATED:
                return "the caller is anonymous"
            case WhoKind.ANYONE:
                return None  # unreachable: `anyone` matches every principal
            case _:
                assert_never(who.kind)
    for key, accepted in grant.claims:
        value = claim_value(principal.claims, key)
        if not claim_accepted(value, accepted):
            wanted = accepted[0] if len(accepted) == 1 else f"any of {', '.join(accepted)}"
            if value is MISSING:
                return f"claim {key} is absent (wanted {wanted})"
            return f"claim {key} is {value!r} (wanted {wanted})"
    return None


def _grant_line(grant: Grant) -> str:
    line = f"{grant.label}: {grant.render()}"
    return f"{line}  ({grant.description})" if grant.description else line


def _gives(what: What) -> str:
    match what.kind:
        case WhatKind.TOOL:
            return f"tools matching {what.tool}"
        case WhatKind.SERVER | WhatKind.GROUP | WhatKind.VSERVER:
            return "all tools, prompts and resources"
        case _:
            assert_never(what.kind)


def _item_text(server_id: str, item: Item) -> str:
    what = f"{_NOUN[ItemKind(item.kind)]} {item.name}" if item.name is not None else _NOUN[ItemKind(item.kind)]
    return f"{server_id} / {item.exposed} (member {item.member}, upstream {item.upstream}, {what})"


def explain(
    policy: Policy,
    principal: Principal,
    server_id: str,
    members: Sequence[tuple[str, str]],
    item: Item | None = None,
) -> list[str]:
    """Lines explaining the decision for `item` on `server_id` (or for opening the server when no item).

    `members`: the server's (member id, upstream id) pairs, as for `Policy.server_access`.
    """
    view = policy.view(principal)
    who = describe_principal(principal)
    if item is None:
        decision = view.server_access(server_id, members)
        head = f"server {server_id}"
    else:
        decision = view.allows(server_id, item.upstream, item.kind, item.name)
        head = _item_text(server_id, item)
    lines = [f"{'ALLOW' if decision.allowed else 'DENY '}  {who} → {head}"]
    applicable = view.grants

    if not principal.may_use_server(server_id):
        lines.append(f"  {decision.reason}")
        return lines

    if item is None:
        lines.extend(_server_detail(policy, principal, server_id, members, applicable))
    elif decision.allowed:
        lines.extend(_allowed_by(policy, server_id, item, applicable, decision))
        gate = None
        if item.kind == ItemKind.TOOLS and item.name is not None:
            gate = rule_for(policy, principal, server_id, item.upstream, item.name)
        if gate is not None:  # docs/approvals.md
            lines.append(f"  calls wait for approval by {gate.approvers.text} ({gate.grant_label})")
    else:
        lines.append(f"  {decision.reason}")
    if decision.allowed:
        return lines

    lines.extend(_applicable_section(principal, applicable))
    covering = _covering(policy, server_id, members, item)
    others = [(g, w) for g, w in covering if g not in applicable]
    if others:
        lines.append("  grants that would give it, but do not select this principal:")
        for grant, what in others:
            lines.append(f"    {_grant_line(grant)}  [{what.text}: {why_not(grant, principal)}]")
    else:
        target = describe_item(item.kind, item.upstream, item.name) if item is not None else f"server {server_id}"
        lines.append(f"  no grant gives {target} to anyone on server {server_id}")
    if not policy.is_virtual(server_id) and any(w.kind is WhatKind.VSERVER for g in applicable for w in g.what):
        lines.append(
            f"  note: {server_id} is an upstream's own server; vserver: grants reach only virtual servers, "
            f"so give it with server:, group: or tool: selectors"
        )
    lines.extend(f"  warning: {w}" for w in policy.warnings if any(w.startswith(g.label + ":") for g in applicable))
    return lines


def _allowed_by(
    policy: Policy, server_id: str, item: Item, applicable: tuple[Grant, ...], decision: Decision
) -> list[str]:
    assert decision.grant is not None
    lines = [f"  by {_grant_line(decision.grant)}"]
    for grant, what in policy.covering(server_id, item.upstream, item.kind, item.name):
        if grant in applicable and (grant, what) != (decision.grant, decision.selector):
            lines.append(f"  also by {grant.label}: {what.text}")
    return lines


def _server_detail(
    policy: Policy,
    principal: Principal,
    server_id: str,
    members: Sequence[tuple[str, str]],
    applicable: tuple[Grant, ...],
) -> list[str]:
    """One line per member: what this principal gets of it, and by which grant."""
    lines = []
    for member_id, upstream_id in members:
        gives = [(g, w) for g, w in policy.touching(server_id, upstream_id) if g in applicable]
        whole = [(g, w) for g, w in gives if w.kind is not WhatKind.TOOL]
        chosen = whole[:1] or [(g, w) for g, w in gives if w.kind is WhatKind.TOOL]
        label = f"member {member_id} (upstream {upstream_id})"
        if not chosen:
            lines.append(f"  {label}: nothing")
        for grant, what in chosen:
            lines.append(f"  {label}: {_gives(what)}, by {grant.label}: {what.text}")
    return lines


def _applicable_section(principal: Principal, applicable: tuple[Grant, ...]) -> list[str]:
    if not applicable:
        return [f"  no grant applies to {principal.id}"]
    return [f"  grants that apply to {principal.id}:", *(f"    {_grant_line(g)}" for g in applicable)]


def _covering(
    policy: Policy, server_id: str, members: Sequence[tuple[str, str]], item: Item | None
) -> list[tuple[Grant, What]]:
    if item is not None:
        return list(policy.covering(server_id, item.upstream, item.kind, item.name))
    seen: list[tuple[Grant, What]] = []
    for _, upstream_id in members:
        seen.extend(pair for pair in policy.touching(server_id, upstream_id) if pair not in seen)
    return seen
