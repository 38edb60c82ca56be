"""Sessions ended by signing out, on every replica.

A session cookie is signed, not stored: clearing it in the browser that signed out leaves every copy of it
(another tab's saved request, a shared computer's profile, a cookie that leaked) good until it expires, up
to `SESSION_SECONDS`. So signing out also records the session's random id, and every page, the console and
the authorization server refuse a recorded one: a row `w-{sid}` in `spent_links` (the table of spent
one-time tokens, shared by the replicas; no schema change), kept until the session would have expired anyway.
Reading it is one primary-key lookup per page; pages are not the MCP hot path.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.outbound.oauth.tables import spent_links
from manifold.web.session import WebSession

_PREFIX = "w-"


class SignedOut:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def end(self, session: WebSession) -> None:
        """Record that `session` has ended (again is fine); expired rows are pruned on the way."""
        now = time.time()
        try:
            async with self.engine.begin() as conn:
                await conn.execute(delete(spent_links).where(spent_links.c.expires_at < now))
                await conn.execute(
                    insert(spent_links).values(digest=_PREFIX + session.sid, expires_at=session.expires_at + 60)
                )
        except IntegrityError:
            return  # ended already (signed out twice, or from two tabs)

    async def ended(self, session: WebSession) -> bool:
        query = select(spent_links.c.digest).where(spent_links.c.digest == _PREFIX + session.sid)
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).first() is not None
