"""The grant selector grammar: what `who`, `what` and `claims` may say, parsed into immutable values.

It lives with the configuration because the loader must refuse a malformed grant or admin selector with the
file and field; what a parsed selector *allows* is decided in `policy/` (grants.py, evaluation.py). Grants
from `manifold.yaml` and from the admin API go through the same parser, so the two never disagree.

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
    Every listed claim must match; an expected list means "any of these" (identity/claims.py compares).

Resource selectors (`what`)
    `server:<upstream glob>`        all tools, prompts and resources of those upstreams, wherever they are
                                    served: their own one-member server and every virtual server holding them.
    `group:<id>`                    the same for every upstream in the group.
    `vserver:<virtual server glob>` everything exposed through those virtual servers, and only there.
                                    One-member upstream servers are never virtual: `server:` covers them.
    `tool:<upstream glob>/<tool glob>`  only those tools (not prompts or resources), wherever served.

Globs are compiled once, when a selector is parsed: evaluation runs for every item of a filtered list.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from manifold.config.models import SLUG_RE


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


# ---- globs ----------------------------------------------------------------------------------------

Matcher = Callable[[str], object]  # truthy when the string matches (a bool, or a re.Match / None)
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


def _never(_: str) -> bool:
    return False


# ---- parsed selectors -----------------------------------------------------------------------------


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


def render_claims(claims: Claims) -> str:
    parts = [f"{k}={v[0]}" if len(v) == 1 else f"{k} in [{', '.join(v)}]" for k, v in claims]
    return "{" + ", ".join(parts) + "}"


# ---- parsing --------------------------------------------------------------------------------------

_WHO_FORMS = "user:<email|subject>, team:<id>, sa:<id>, idp:<id>, ext:<idp>:<identity>, authenticated or anyone"
WHAT_FORMS = "server:<upstream>, group:<id>, vserver:<virtual server>, tool:<upstream>/<tool>"
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


def parse_who(text: object, field_name: str = "who") -> Who:
    """A principal selector (a grant's `who`, an entry of `identity.admins`)."""
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


def parse_what(text: object, field_name: str = "what") -> What:
    """One resource selector (an entry of a grant's `what`)."""
    if not isinstance(text, str) or not text:
        raise GrantError(field_name, f"expected a resource selector: {WHAT_FORMS}")
    if text != text.strip():
        raise GrantError(field_name, f"'{text}' has leading or trailing spaces")
    prefix, colon, value = text.partition(":")
    if not colon:
        raise GrantError(field_name, f"'{text}' is not a resource selector; expected {WHAT_FORMS}")
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
            raise GrantError(field_name, f"unknown resource selector '{prefix}:' in '{text}'; expected {WHAT_FORMS}")


def parse_claims(who: Who, claims: object) -> Claims:
    """A grant's `claims`: a mapping of claim name to a value or a list of values, only with `idp:`."""
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
        values: object = [expected] if isinstance(expected, str) else expected
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise GrantError(where, "expected a string or a list of strings")
        if not values:
            raise GrantError(where, "an empty list matches no token; list at least one value")
        out.append((key, tuple(str(v) for v in values)))
    return tuple(sorted(out))


@dataclass(frozen=True)
class GrantSelectors:
    """A grant's three fields, parsed."""

    who: Who
    what: tuple[What, ...]
    claims: Claims


def parse_grant_selectors(who: object, what: object, claims: object = None) -> GrantSelectors:
    """Parse a grant's `who`, `what` and `claims`; raises `GrantError` naming the bad field and what is wrong."""
    parsed_who = parse_who(who)
    parsed_claims = parse_claims(parsed_who, claims)
    if isinstance(what, str) or not isinstance(what, Sequence):
        raise GrantError("what", f"expected a list of resource selectors ({WHAT_FORMS})")
    if not what:
        raise GrantError("what", f"lists nothing; a grant gives at least one of {WHAT_FORMS}")
    parsed_what = tuple(parse_what(w, f"what[{i}]") for i, w in enumerate(what))
    return GrantSelectors(parsed_who, parsed_what, parsed_claims)


@dataclass(frozen=True)
class ApprovalSelectors:
    """A grant's approval gate, parsed: which items need approval, and who approves (docs/approvals.md)."""

    tools: tuple[What, ...]
    approvers: Who


def parse_approval_selectors(require_approval: object, approvers: object) -> ApprovalSelectors | None:
    """A grant's `require_approval` and `approvers`; None when the grant requires no approval. Raises
    `GrantError` naming the field: approvers without anything to approve, or the other way round."""
    if isinstance(require_approval, str) or not isinstance(require_approval, Sequence):
        raise GrantError("require_approval", f"expected a list of resource selectors ({WHAT_FORMS})")
    if not require_approval:
        if approvers is not None:
            raise GrantError("approvers", "names approvers, but require_approval lists nothing to approve")
        return None
    tools = tuple(parse_what(w, f"require_approval[{i}]") for i, w in enumerate(require_approval))
    if approvers is None:
        raise GrantError("approvers", "require_approval needs approvers: who may approve (e.g. team:sre)")
    return ApprovalSelectors(tools, parse_who(approvers, "approvers"))
