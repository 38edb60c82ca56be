"""Who is calling: the principal every request is decided for.

A principal is built once per credential (and cached with it), so everything here is immutable and cheap
to compare. `id` is the form grants and audit rows use: `user:<email|subject>`, `sa:<id>`,
`ext:<idp>:<identity>:<subject>`, or `anonymous` when serving without authentication.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, assert_never


class PrincipalKind(str, enum.Enum):
    USER = "user"
    SERVICE_ACCOUNT = "sa"
    EXTERNAL = "ext"  # admitted by an IdP's external-identity matcher; no account on the gateway
    ANONYMOUS = "anonymous"  # gateway.allow_unauthenticated (loopback only)


class CredentialKind(str, enum.Enum):
    API_KEY = "api_key"
    SA_TOKEN = "sa_token"
    IDP_JWT = "idp"
    GATEWAY_OAUTH = "gateway-oauth"  # an access token the gateway issued itself (authserver/); ref: client id
    NONE = "none"


@dataclass(frozen=True)
class Credential:
    """Where the principal's credential came from (audited; `ref` is a key id or an IdP id, never a secret)."""

    kind: CredentialKind
    ref: str | None = None

    def __str__(self) -> str:
        return self.text

    @cached_property
    def text(self) -> str:
        return self.kind.value if self.ref is None else f"{self.kind.value}:{self.ref}"


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    name: str  # email/subject for users, the id for service accounts, the subject for external identities
    credential: Credential
    email: str | None = None
    teams: frozenset[str] = frozenset()
    idp: str | None = None  # the IdP that issued the token, for `idp:` grants
    external_identity: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    # An API key restricted to some servers: only these (None: whatever the grants allow).
    servers: frozenset[str] | None = None
    # The bearer the caller presented, for outbound modes that use it (passthrough, exchange). Never logged.
    token: str | None = field(default=None, compare=False, hash=False, repr=False)

    @cached_property  # read on every call (grants, audit); a frozen dataclass still has a __dict__ for it
    def id(self) -> str:
        match self.kind:
            case PrincipalKind.USER:
                return f"user:{self.name}"
            case PrincipalKind.SERVICE_ACCOUNT:
                return f"sa:{self.name}"
            case PrincipalKind.EXTERNAL:
                return f"ext:{self.idp}:{self.external_identity}:{self.name}"
            case PrincipalKind.ANONYMOUS:
                return "anonymous"
            case _:
                assert_never(self.kind)

    def may_use_server(self, server_id: str) -> bool:
        """The key's own restriction (grants are checked separately)."""
        return self.servers is None or server_id in self.servers


ANONYMOUS = Principal(kind=PrincipalKind.ANONYMOUS, name="anonymous", credential=Credential(CredentialKind.NONE))
