"""The principal a signed-in web session acts as: the person, narrowed as the key they signed in with is.

A session opened with an API key is only as good as that key: revoked or expired, it is no one; restricted to
some servers (`manifold keys create --servers`), the principal carries that restriction, which the servers page
honours and which makes it neither an administrator (policy/admins.py) nor an approver (policy/approvals.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from manifold.identity.api_keys import KeyRepository
from manifold.identity.directory import Snapshot
from manifold.identity.gateway_tokens import principal_for
from manifold.principal import Credential, Principal
from manifold.web.session import WebSession


async def session_principal(
    session: WebSession, directory: Callable[[], Snapshot], keys: KeyRepository, credential: Credential
) -> Principal | None:
    principal = principal_for(session.principal_id, directory(), credential)
    kind, _, ref = session.method.partition(":")
    if principal is None or kind != "api_key":
        return principal
    record = await keys.get(ref)
    if record is None or record.usable(time.time()) is not None:
        return None
    if record.servers is None:
        return principal
    return replace(principal, servers=frozenset(record.servers))
