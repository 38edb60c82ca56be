"""Who may administer the gateway (`/admin/api`, admin CLI commands): admin-ness is a policy decision.

`identity.admins` lists principal selectors with the grammar of grants (`user:`, `team:`, `sa:`, `idp:`...;
config/selectors.py). The development key of the embedded default is always an admin: it is the key
`make run` prints.
"""

from __future__ import annotations

from functools import lru_cache

from manifold.config.selectors import Who, parse_who
from manifold.identity.api_keys import DEV_KEY_ID
from manifold.policy.grants import who_selects
from manifold.principal import CredentialKind, Principal


@lru_cache(maxsize=64)
def _selectors(admins: tuple[str, ...]) -> tuple[Who, ...]:
    return tuple(parse_who(a) for a in admins)  # checked when the config loaded


def is_admin(principal: Principal, admins: list[str]) -> bool:
    """Whether `principal` may administer the gateway. Never with a key restricted to some servers: that is a
    credential for those servers' MCP endpoints (an agent's key), and as an admin one it could mint itself an
    unrestricted key or add a stdio upstream (found by a security probe)."""
    if principal.servers is not None:
        return False
    if principal.credential.kind is CredentialKind.API_KEY and principal.credential.ref == DEV_KEY_ID:
        return True
    return any(who_selects(who, principal) for who in _selectors(tuple(admins)))
