"""Grants: who may use which upstream tools, prompts and resources. Deny by default.

A grant maps one principal selector (`who`, optionally narrowed by token `claims`) to resource selectors
(`what`). Grants come from `manifold.yaml` and from the database (admin API); both are parsed by the one
grammar in config/selectors.py into `Grant`s, with a `GrantError` (a `ValueError` naming the field) for
anything malformed, so the loader and the API can point at the exact file and field. Which items a set of
grants gives is decided in evaluation.py (`Policy`); this module says whom one grant selects.

Claims (only with `idp:`): every listed claim must match. An expected list means "any of these"; a claim
whose value is a list matches if any element does. Scalars compare as their JSON text (`true`, `42`), so
YAML `"true"` matches a boolean claim. A key absent from the token as written may be a dotted path into
nested claims (`realm_access.roles`). identity/claims.py holds these rules, shared with IdP external
identities.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import assert_never

from manifold.config.models import GrantConfig
from manifold.config.selectors import (
    Claims,
    What,
    Who,
    WhoKind,
    parse_approval_selectors,
    parse_grant_selectors,
    render_claims,
)
from manifold.identity.claims import token_has_claims
from manifold.principal import Principal, PrincipalKind


class GrantSource(str, enum.Enum):
    FILE = "manifold.yaml"
    API = "api"


def who_selects(who: Who, principal: Principal) -> bool:
    """Whether the principal selector picks this principal, claims aside (see `Grant.applies_to`)."""
    match who.kind:
        case WhoKind.USER:
            if principal.kind is not PrincipalKind.USER:
                return False
            return bool(who.user_matches(principal.name)) or (
                principal.email is not None and bool(who.user_matches(principal.email))
            )
        case WhoKind.TEAM:
            return who.value in principal.teams
        case WhoKind.SA:
            return principal.kind is PrincipalKind.SERVICE_ACCOUNT and principal.name == who.value
        case WhoKind.IDP:
            return principal.idp == who.value
        case WhoKind.EXT:
            return (
                principal.kind is PrincipalKind.EXTERNAL
                and principal.idp == who.value
                and principal.external_identity == who.identity
            )
        case WhoKind.AUTHENTICATED:
            return principal.kind is not PrincipalKind.ANONYMOUS
        case WhoKind.ANYONE:
            return True
        case _:
            assert_never(who.kind)


@dataclass(frozen=True)
class ApprovalRule:
    """A grant's approval gate (policy/approvals.py, docs/approvals.md): calls of the tools these selectors
    cover wait until one of `approvers` approves them."""

    tools: tuple[What, ...]
    approvers: Who
    timeout_seconds: float = 900.0
    valid_seconds: float = 0.0  # 0: one approval, one call
    self_approval: bool = False
    grant_label: str = ""


@dataclass(frozen=True)
class Grant:
    id: str
    who: Who
    what: tuple[What, ...]
    claims: Claims = ()
    description: str | None = None
    source: GrantSource = GrantSource.API
    approval: ApprovalRule | None = None

    @property
    def label(self) -> str:
        """Where the grant comes from, for an operator: `manifold.yaml grants[2]`, `grant 7 (api)`."""
        match self.source:
            case GrantSource.FILE:
                return f"{self.source.value} {self.id}"
            case GrantSource.API:
                return f"grant {self.id} ({self.source.value})"
            case _:
                assert_never(self.source)

    def render(self) -> str:
        """`team:eng → tool:github/create_*`, with claims when there are any."""
        who = self.who.text
        if self.claims:
            who += " " + render_claims(self.claims)
        return f"{who} → {', '.join(w.text for w in self.what)}"

    def applies_to(self, principal: Principal) -> bool:
        return who_selects(self.who, principal) and token_has_claims(principal.claims, self.claims)


def parse_grant(
    who: str,
    what: Sequence[str],
    claims: Mapping[str, object] | None = None,
    *,
    grant_id: str,
    description: str | None = None,
    source: GrantSource = GrantSource.API,
    approval: GrantConfig | None = None,
) -> Grant:
    """Parse one grant; raises `GrantError` (a `ValueError`) naming the bad field and what is wrong.
    `approval`: the grant's config, whose approval gate fields (`require_approval`, ...) are read."""
    parsed = parse_grant_selectors(who, what, claims)
    rule = None
    if approval is not None:
        gate = parse_approval_selectors(approval.require_approval, approval.approvers)
        if gate is not None:
            rule = ApprovalRule(
                gate.tools,
                gate.approvers,
                approval.approval_timeout_seconds,
                approval.approval_valid_seconds,
                approval.self_approval,
                "",
            )
    grant = Grant(grant_id, parsed.who, parsed.what, parsed.claims, description, source)
    return grant if rule is None else replace(grant, approval=replace(rule, grant_label=grant.label))


def grant_from_config(config: GrantConfig, index: int) -> Grant:
    """The `index`-th entry of `manifold.yaml`'s `grants:`; its id is `grants[<index>]`."""
    return parse_grant(
        config.who,
        config.what,
        config.claims,
        grant_id=f"grants[{index}]",
        description=config.description,
        source=GrantSource.FILE,
        approval=config,
    )
