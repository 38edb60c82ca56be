"""Checks no single model can see: references between upstreams, groups and virtual servers, virtual-server
ids, the names aliases produce, and grant and admin selectors (their grammar is config/selectors.py).

Each check records its problems on the file (`SourceFile.add`) and goes on, so one pass reports them all.
The admin API runs the same checks on a request body.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from typing import Any

from manifold.config.models import (
    SLUG,
    SLUG_RE,
    TOOL_SEARCH_NAMES,
    GatewayConfig,
    MemberConfig,
    VirtualServerConfig,
)
from manifold.config.problems import Loc
from manifold.config.selectors import GrantError, parse_approval_selectors, parse_grant_selectors, parse_who
from manifold.config.sources import SourceFile
from manifold.naming import NameTable, candidate_name, expose_name, is_valid_name

_GLOB_CHARS = re.compile(r"[*?\[]")


def check_groups(f: SourceFile, raw_groups: Any, upstream_ids: list[str]) -> None:
    """Group members must be upstreams. Works on the raw data so it runs even when validation failed;
    entries of the wrong type are left to the validator's report."""
    if not isinstance(raw_groups, dict):
        return
    for group_id, members in raw_groups.items():
        if not isinstance(members, list):
            continue
        seen: set[str] = set()
        for i, upstream_id in enumerate(members):
            if not isinstance(upstream_id, str):
                continue
            if upstream_id not in upstream_ids:
                f.add(("groups", str(group_id), i), unknown_upstream_reason(upstream_id, upstream_ids))
            elif upstream_id in seen:
                f.add(("groups", group_id, i), f"upstream '{upstream_id}' is listed twice")
            seen.add(upstream_id)


def _field_loc(field_path: str) -> Loc:
    """`what[1]` → ("what", 1); `claims.groups` → ("claims", "groups")."""
    loc: list[str | int] = []
    for part in re.split(r"\.", field_path):
        m = re.fullmatch(r"([^\[]*)((?:\[\d+\])*)", part)
        if m is None:
            loc.append(part)
            continue
        if m.group(1):
            loc.append(m.group(1))
        loc.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return tuple(loc)


def check_identity(f: SourceFile, gateway: GatewayConfig) -> None:
    """Grants and admin selectors parse (config/selectors.py is the grammar); no two IdPs share an issuer
    (a token could not be routed to one of them)."""
    for i, grant in enumerate(gateway.grants):
        try:
            parse_grant_selectors(grant.who, grant.what, grant.claims)
            parse_approval_selectors(grant.require_approval, grant.approvers)
        except GrantError as exc:
            f.add(("grants", i, *_field_loc(exc.field)), exc.problem)
    for i, selector in enumerate(gateway.identity.admins):
        try:
            parse_who(selector)
        except GrantError as exc:
            f.add(("identity", "admins", i), exc.problem)
    issuers: dict[str, str] = {}
    for idp_id, idp in gateway.identity.idps.items():
        issuer = idp.issuer.rstrip("/")
        if issuer in issuers:
            f.add(("identity", "idps", idp_id, "issuer"), f"same issuer as IdP '{issuers[issuer]}'")
        issuers.setdefault(issuer, idp_id)


def unknown_upstream_reason(upstream_id: str, known: list[str]) -> str:
    close = difflib.get_close_matches(upstream_id, known, n=1)
    if close:
        return f"unknown upstream '{upstream_id}'; did you mean '{close[0]}'?"
    return f"unknown upstream '{upstream_id}' (known: {', '.join(known) or 'none'})"


def check_server_id(
    f: SourceFile, stem: str, server: VirtualServerConfig, upstream_ids: list[str] | None
) -> str | None:
    """The server's id (the file name without extension), or None after reporting why it cannot be used."""
    loc: Loc = ("id",) if server.id is not None else ()
    if server.id is not None and server.id != stem:
        f.add(loc, f"id '{server.id}' does not match the file name '{stem}'; rename the file or remove 'id'")
        return None
    origin = "" if server.id is not None else " (the file name)"
    if not SLUG_RE.match(stem):
        f.add(loc, f"virtual server id '{stem}'{origin} must match {SLUG} (lowercase letters, digits, '-')")
        return None
    if upstream_ids is not None and stem in upstream_ids:
        f.add(
            loc,
            f"virtual server id '{stem}'{origin} is also an upstream id; every upstream is served alone under "
            "its own id, so choose another name",
        )
        return None
    return stem


def check_members(f: SourceFile, server: VirtualServerConfig, upstream_ids: list[str] | None, sep: str) -> None:
    """Upstream references (None: manifold.yaml could not be read, so not checked), and every exposed name the
    file alone determines: aliases and exact tool names."""
    table = NameTable("tool")
    for i, member in enumerate(server.members):
        if upstream_ids is not None and member.upstream not in upstream_ids:
            f.add(("members", i, "upstream"), unknown_upstream_reason(member.upstream, upstream_ids))
        dead = _check_overrides(f, i, member, "aliases")
        _check_overrides(f, i, member, "descriptions")
        for name, alias in member.aliases.items():
            loc: Loc = ("members", i, "aliases", name)
            if name in dead:
                continue
            if not is_valid_name(alias):
                f.add(loc, f"alias '{alias}' is not a valid tool name (1-64 characters of A-Z a-z 0-9 _ -)")
                continue
            candidate = candidate_name(member.member_id, name, sep=sep, namespace=server.namespace, alias=alias)
            if not is_valid_name(candidate):
                f.add(loc, f"alias '{alias}' gives the tool name '{candidate}', longer than 64 characters")
                continue
            collision = table.try_add(member.member_id, name, candidate)
            if collision is not None:
                f.add(loc, str(collision))
            elif server.tool_search is not None and candidate in TOOL_SEARCH_NAMES:
                f.add(loc, _reserved(candidate))
        for j, name in enumerate(member.tools):
            if _GLOB_CHARS.search(name) or name in member.aliases or _matches(name, member.hide):
                continue
            exposed = expose_name(member.member_id, name, sep=sep, namespace=server.namespace)
            collision = table.try_add(member.member_id, name, exposed)
            if collision is not None:
                f.add(("members", i, "tools", j), str(collision))
            elif server.tool_search is not None and exposed in TOOL_SEARCH_NAMES:
                f.add(("members", i, "tools", j), _reserved(exposed))


def _reserved(name: str) -> str:
    return (
        f"tool name '{name}' is the tool search's own (tool_search is on); give the tool an alias or turn "
        "namespacing on"
    )


def check_raw_upstream_refs(f: SourceFile, raw_members: Any, upstream_ids: list[str] | None) -> None:
    """The upstream references of a file that failed validation, so one pass shows those problems too."""
    if not isinstance(raw_members, list) or upstream_ids is None:
        return
    for i, m in enumerate(raw_members):
        if isinstance(m, dict) and isinstance(m.get("upstream"), str) and m["upstream"] not in upstream_ids:
            f.add(("members", i, "upstream"), unknown_upstream_reason(m["upstream"], upstream_ids))


def _check_overrides(f: SourceFile, i: int, member: MemberConfig, key: str) -> set[str]:
    """An alias or description for a tool the member does not expose is a mistake that would do nothing.
    Returns those tool names."""
    overrides: dict[str, str] = getattr(member, key)
    what = "alias" if key == "aliases" else "description"
    dead: set[str] = set()
    for name in overrides:
        loc: Loc = ("members", i, key, name)
        if not _matches(name, member.tools):
            f.add(loc, f"tool '{name}' is not selected by 'tools', so this {what} does nothing")
            dead.add(name)
        elif _matches(name, member.hide):
            f.add(loc, f"tool '{name}' is removed by 'hide', so this {what} does nothing")
            dead.add(name)
    return dead


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
