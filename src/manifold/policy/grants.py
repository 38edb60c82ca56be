"""Grants: who may use which upstream tools, prompts and resources. Deny by default.

A grant maps one principal selector (`who`, optionally narrowed by token `claims`) to resource selectors
(`what`). Grants come from `manifold.yaml` and from the database (admin API); both are parsed here into
`Grant`s, with a `GrantError` (a `ValueError` naming the field) for anything malformed, so the loader and
the API can point at the exact file and field. Parsing and evaluation are separate: a `Policy` is built
once from parsed grants plus the catalog facts it needs (groups, which server ids are virtual) and is then
immutable; rebuild it when grants, groups or virtual servers change.

Principal selectors (`who`)
    `user:<email|subject>`  a user; the value may be a glob (`user:*@corp.com`). A value containing `@` is an
                            email pattern, matched case-insensitively against the user's name and email;
                            otherwise it is a subject, matched exactly (case-sensitive).
    `team:<id>`             any principal (user, service account, external identity) in that team.
    `sa:<id>`               that service account.
    `idp:<id>`              any principal whose token that IdP issued; `claims` may narrow it further.
    `ext:<idp>:<identity>`  callers admitted by that IdP's external-identity matcher.
    `authenticated`         every principal except the anonymous one.
    `anyone`                every principal, including the anonymous one (`allow_unauthenticated`).

Claims (only with `idp:`)
    Every listed claim must match. An expected list means "any of these"; a claim whose value is a list
    matches if any element does. Scalars compare as their JSON text (`true`, `42`), so YAML `"true"` matches
    a boolean claim. A key absent from the token as written may be a dotted path into nested claims
    (`realm_access.roles`).

Resource selectors (`what`)
    `server:<upstream glob>`        all tools, prompts and resources of those upstreams, wherever they are
                                    served: their own one-member server and every virtual server holding them.
    `group:<id>`                    the same for every upstream in the group.
    `vserver:<virtual server glob>` everything exposed through those virtual servers, and only there.
                                    One-member upstream servers are never virtual: `server:` covers them.
    `tool:<upstream glob>/<tool glob>`  only those tools (not prompts or resources), wherever served.

Speed: `allows` runs for every item of a filtered `tools/list` and on every call. Globs are compiled once;
the grants that apply to a principal, and per-upstream results, are cached in a `PrincipalView`.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from manifold.config.models import SLUG_RE
from manifold.identity.claims import MISSING, claim_matches, claim_value  # noqa: F401 — re-exported for explain
from manifold.principal import Principal, PrincipalKind

if TYPE_CHECKING:
    from manifold.config.models import GrantConfig


class GrantSource(str, enum.Enum):
    FILE = "manifold.yaml"
    API = "api"


class ItemKind(str, enum.Enum):
    """What a catalog item is; values are the list kinds the catalog uses."""

    TOOLS = "tools"
    PROMPTS = "prompts"
    RESOURCES = "resources"
    RESOURCE_TEMPLATES = "resource_templates"


class WhoKind(str, enum.Enum):
    USER = "user"
    TEAM = "team"
    SA = "sa"
    IDP = "idp"
    EXT = "ext"
    AUTHENTICATED = "authenticated"
    ANYONE = "anyone"


class WhatKind(str, enum.Enum):
    SERVER = "server"
    GROUP = "group"
    VSERVER = "vserver"
    TOOL = "tool"


class GrantError(ValueError):
    """A malformed grant. `field` is the grant's field (`who`, `claims.groups`, `what[1]`) so the caller can
    prefix its own location (`manifold.yaml: grants[3].what[1]`)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# ---- parsed selectors -----------------------------------------------------------------------------

Matcher = Callable[[str], Any]  # truthy when the string matches
_GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(pattern)


def compile_glob(pattern: str, *, ignore_case: bool = False) -> Matcher:
    """A matcher for a shell-style glob (`*`, `?`, `[...]`); exact patterns become a plain comparison."""
    if not is_glob(pattern):
        if ignore_case:
            folded = pattern.casefold()
            return lambda s: s.casefold() == folded
        return pattern.__eq__
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE if ignore_case else 0).match


@dataclass(frozen=True)
class Who:
    kind: WhoKind
    text: str  # as written, for messages
    value: str | None = None  # user glob, team, sa id, idp id, or the ext selector's idp
    identity: str | None = None  # ext: the external identity's name
    user_matches: Matcher = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # An email pattern is case-insensitive (IdPs and people vary the case); a subject is opaque and exact.
        value = self.value or ""
        object.__setattr__(self, "user_matches", compile_glob(value, ignore_case="@" in value))

    def matches(self, principal: Principal) -> bool:
        """Whether the principal is selected, claims aside (see `Grant.applies_to`)."""
        match self.kind:
            case WhoKind.USER:
                if principal.kind is not PrincipalKind.USER:
                    return False
                return bool(self.user_matches(principal.name)) or (
                    principal.email is not None and bool(self.user_matches(principal.email))
                )
            case WhoKind.TEAM:
                return self.value in principal.teams
            case WhoKind.SA:
                return principal.kind is PrincipalKind.SERVICE_ACCOUNT and principal.name == self.value
            case WhoKind.IDP:
                return principal.idp == self.value
            case WhoKind.EXT:
                return (
                    principal.kind is PrincipalKind.EXTERNAL
                    and principal.idp == self.value
                    and principal.external_identity == self.identity
                )
            case WhoKind.AUTHENTICATED:
                return principal.kind is not PrincipalKind.ANONYMOUS
            case WhoKind.ANYONE:
                return True


def _never(_: str) -> bool:
    return False


@dataclass(frozen=True)
class What:
    kind: WhatKind
    text: str  # as written
    target: str  # upstream glob, group id or virtual-server glob
    tool: str | None = None  # tool: the tool glob
    target_matches: Matcher = field(init=False, compare=False, repr=False)
    tool_matches: Matcher = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_matches", compile_glob(self.target))
        object.__setattr__(self, "tool_matches", _never if self.tool is None else compile_glob(self.tool))


# A grant's claims, normalised and hashable: ((claim, (accepted values...)), ...), sorted by claim.
Claims = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Grant:
    id: str
    who: Who
    what: tuple[What, ...]
    claims: Claims = ()
    description: str | None = None
    source: GrantSource = GrantSource.API

    @property
    def label(self) -> str:
        """Where the grant comes from, for an operator: `manifold.yaml grants[2]`, `grant 7 (api)`."""
        match self.source:
            case GrantSource.FILE:
                return f"{self.source.value} {self.id}"
            case GrantSource.API:
                return f"grant {self.id} ({self.source.value})"

    def render(self) -> str:
        """`team:eng → tool:github/create_*`, with claims when there are any."""
        who = self.who.text
        if self.claims:
            who += " " + render_claims(self.claims)
        return f"{who} → {', '.join(w.text for w in self.what)}"

    def applies_to(self, principal: Principal) -> bool:
        return self.who.matches(principal) and claims_match(self.claims, principal.claims)


def render_claims(claims: Claims) -> str:
    parts = [f"{k}={v[0]}" if len(v) == 1 else f"{k} in [{', '.join(v)}]" for k, v in claims]
    return "{" + ", ".join(parts) + "}"


# ---- parsing --------------------------------------------------------------------------------------

_WHO_FORMS = "user:<email|subject>, team:<id>, sa:<id>, idp:<id>, ext:<idp>:<identity>, authenticated or anyone"
_WHAT_FORMS = "server:<upstream>, group:<id>, vserver:<virtual server>, tool:<upstream>/<tool>"
_ID_GLOB_RE = re.compile(r"^[a-z0-9*?\[\]!-]+$")  # a slug, or a glob over slugs


def _slug(field_name: str, text: str, value: str, what: str, *, globs_hint: str) -> str:
    if not value:
        raise GrantError(field_name, f"'{text}' names no {what}")
    if is_glob(value):
        raise GrantError(field_name, f"'{text}': {what} ids are exact; {globs_hint}")
    if not SLUG_RE.match(value):
        raise GrantError(field_name, f"'{text}': '{value}' is not a {what} id (lowercase letters, digits, '-')")
    return value


def _id_glob(field_name: str, text: str, value: str, what: str) -> str:
    if not value:
        raise GrantError(field_name, f"'{text}' names no {what}")
    if not _ID_GLOB_RE.match(value):
        raise GrantError(
            field_name, f"'{text}': '{value}' is not a {what} id or glob (lowercase letters, digits, '-', * ? [ ])"
        )
    return value


def parse_who(text: str, field_name: str = "who") -> Who:
    if not isinstance(text, str) or not text:
        raise GrantError(field_name, f"expected a principal selector: {_WHO_FORMS}")
    if text != text.strip():
        raise GrantError(field_name, f"'{text}' has leading or trailing spaces")
    if text == WhoKind.AUTHENTICATED.value:
        return Who(WhoKind.AUTHENTICATED, text)
    if text == WhoKind.ANYONE.value:
        return Who(WhoKind.ANYONE, text)
    prefix, colon, value = text.partition(":")
    if not colon:
        raise GrantError(field_name, f"'{text}' is not a principal selector; expected {_WHO_FORMS}")
    globs_hint = "globs are allowed only in user: selectors"
    match prefix:
        case "user":
            if not value or value.isspace():
                raise GrantError(field_name, f"'{text}' names no user; expected user:<email|subject>")
            if any(c.isspace() for c in value):
                raise GrantError(field_name, f"'{text}': a user's email or subject has no spaces")
            return Who(WhoKind.USER, text, value)
        case "team":
            # Teams may come from an IdP's groups claim, so they are not necessarily slugs: exact text.
            if not value:
                raise GrantError(field_name, f"'{text}' names no team")
            if value != value.strip():
                raise GrantError(field_name, f"'{text}': the team name has leading or trailing spaces")
            if is_glob(value):
                raise GrantError(field_name, f"'{text}': team names are exact; {globs_hint}")
            return Who(WhoKind.TEAM, text, value)
        case "sa":
            return Who(WhoKind.SA, text, _slug(field_name, text, value, "service account", globs_hint=globs_hint))
        case "idp":
            return Who(WhoKind.IDP, text, _slug(field_name, text, value, "IdP", globs_hint=globs_hint))
        case "ext":
            idp, sep, identity = value.partition(":")
            if not sep or not idp or not identity:
                raise GrantError(
                    field_name, f"'{text}' must name an IdP and an external identity: ext:<idp>:<identity>"
                )
            _slug(field_name, text, idp, "IdP", globs_hint=globs_hint)
            _slug(field_name, text, identity, "external identity", globs_hint=globs_hint)
            return Who(WhoKind.EXT, text, idp, identity)
        case _:
            raise GrantError(field_name, f"unknown principal selector '{prefix}:' in '{text}'; expected {_WHO_FORMS}")


def parse_what(text: str, field_name: str = "what") -> What:
    if not isinstance(text, str) or not text:
        raise GrantError(field_name, f"expected a resource selector: {_WHAT_FORMS}")
    if text != text.strip():
        raise GrantError(field_name, f"'{text}' has leading or trailing spaces")
    prefix, colon, value = text.partition(":")
    if not colon:
        raise GrantError(field_name, f"'{text}' is not a resource selector; expected {_WHAT_FORMS}")
    match prefix:
        case "server":
            _id_glob(field_name, text, value, "upstream")
            return What(WhatKind.SERVER, text, value)
        case "group":
            _slug(field_name, text, value, "group", globs_hint="list the group's id")
            return What(WhatKind.GROUP, text, value)
        case "vserver":
            _id_glob(field_name, text, value, "virtual server")
            return What(WhatKind.VSERVER, text, value)
        case "tool":
            upstream, slash, tool = value.partition("/")
            if not slash:
                raise GrantError(
                    field_name,
                    f"'{text}' must name an upstream and a tool: tool:<upstream>/<tool>, e.g. tool:github/create_*",
                )
            _id_glob(field_name, text, upstream, "upstream")
            if not tool:
                raise GrantError(field_name, f"'{text}' names no tool after '/' (use tool:{upstream}/* for all tools)")
            if any(c.isspace() for c in tool):
                raise GrantError(field_name, f"'{text}': tool names have no spaces")
            return What(WhatKind.TOOL, text, upstream, tool)
        case _:
            raise GrantError(field_name, f"unknown resource selector '{prefix}:' in '{text}'; expected {_WHAT_FORMS}")


def parse_claims(who: Who, claims: Mapping[str, Any] | None) -> Claims:
    if not claims:
        return ()
    if not isinstance(claims, Mapping):
        raise GrantError("claims", "expected a mapping of claim name to a value or a list of values")
    if who.kind is not WhoKind.IDP:
        raise GrantError("claims", f"claims narrow an idp: grant, and '{who.text}' is not one (use who: idp:<id>)")
    out: list[tuple[str, tuple[str, ...]]] = []
    for key, expected in claims.items():
        if not isinstance(key, str) or not key.strip():
            raise GrantError("claims", f"claim name {key!r} is empty or not a string")
        where = f"claims.{key}"
        values = [expected] if isinstance(expected, str) else expected
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise GrantError(where, "expected a string or a list of strings")
        if not values:
            raise GrantError(where, "an empty list matches no token; list at least one value")
        out.append((key, tuple(values)))
    return tuple(sorted(out))


def parse_grant(
    who: str,
    what: Sequence[str],
    claims: Mapping[str, Any] | None = None,
    *,
    grant_id: str,
    description: str | None = None,
    source: GrantSource = GrantSource.API,
) -> Grant:
    """Parse one grant; raises `GrantError` (a `ValueError`) naming the bad field and what is wrong."""
    parsed_who = parse_who(who)
    parsed_claims = parse_claims(parsed_who, claims)
    if isinstance(what, str) or not isinstance(what, Sequence):
        raise GrantError("what", f"expected a list of resource selectors ({_WHAT_FORMS})")
    if not what:
        raise GrantError("what", f"lists nothing; a grant gives at least one of {_WHAT_FORMS}")
    parsed_what = tuple(parse_what(w, f"what[{i}]") for i, w in enumerate(what))
    return Grant(grant_id, parsed_who, parsed_what, parsed_claims, description, source)


def grant_from_config(config: GrantConfig, index: int) -> Grant:
    """The `index`-th entry of `manifold.yaml`'s `grants:`; its id is `grants[<index>]`."""
    return parse_grant(
        config.who,
        config.what,
        config.claims,
        grant_id=f"grants[{index}]",
        description=config.description,
        source=GrantSource.FILE,
    )


# ---- claims ---------------------------------------------------------------------------------------


def claims_match(expected: Claims, claims: Mapping[str, Any]) -> bool:
    return all(claim_matches(accepted, claim_value(claims, key)) for key, accepted in expected)


def _freeze(value: Any) -> Any:
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
        self._views: dict[tuple[Principal, tuple[Any, ...]], PrincipalView] = {}
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
