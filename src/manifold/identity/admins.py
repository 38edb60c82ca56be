"""Who may administer the gateway (`/admin/api`, and the admin CLI commands when they go through it).

`identity.admins` lists principal selectors (`user:`, `team:`, `sa:`; `user:` may be a glob). The
development key of the embedded default is always an admin: it is the key `make run` prints.
"""

from __future__ import annotations

import fnmatch

from manifold.identity.api_keys import DEV_KEY_ID
from manifold.identity.principal import CredentialKind, Principal, PrincipalKind


def is_admin(principal: Principal, admins: list[str]) -> bool:
    if principal.credential.kind is CredentialKind.API_KEY and principal.credential.ref == DEV_KEY_ID:
        return True
    for selector in admins:
        kind, _, value = selector.partition(":")
        if kind == "user" and principal.kind is PrincipalKind.USER:
            if fnmatch.fnmatchcase(principal.name, value) or (
                principal.email is not None and fnmatch.fnmatchcase(principal.email, value)
            ):
                return True
        elif kind == "team" and value in principal.teams:
            return True
        elif kind == "sa" and principal.kind is PrincipalKind.SERVICE_ACCOUNT and principal.name == value:
            return True
    return False
