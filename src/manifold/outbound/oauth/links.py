"""The connect link a user gets when an OAuth upstream needs their account: `/connect/{upstream}?t=…` on the
gateway's own origin, never the third party's authorization URL.

The `t` token is Fernet-encrypted (with a key derived from the gateway's secret key, not the key itself):
it binds the link to one principal and one upstream and expires after ~10 minutes, and since it is
encrypted the URL shows no principal id or email (the MCP spec forbids PII in elicitation URLs). It proves
nothing about who opens it: the connect page must still sign the browser user in and check that they are
the principal the link names (`verify` returns it), so a link forwarded to someone else connects nothing.
A link makes one connection: it is spent (`spend`) when the tokens it led to are stored, and a spent link is
refused. An attempt that fails before that (the authorization server unreachable, the user declined there,
the token exchange failed) leaves the link usable until it expires; each attempt has its own single-use OAuth
`state` (callback.py), and the link remembers nothing of it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from urllib.parse import quote

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.outbound.oauth.tables import spent_links
from manifold.security.crypto import Cipher

LINK_TTL_SECONDS = 600
_PURPOSE = b"manifold connect-link v1"


class InvalidLink(Exception):
    """The link cannot be used; the message is fit for the person who opened it."""


class ConnectLinks:
    def __init__(self, keys: list[bytes], *, ttl_seconds: int = LINK_TTL_SECONDS) -> None:
        if not keys:
            raise ValueError("connect links need at least one key")
        self._fernet = MultiFernet([Fernet(base64.urlsafe_b64encode(k)) for k in keys])
        self._ttl = ttl_seconds

    @classmethod
    def from_cipher(cls, cipher: Cipher, *, ttl_seconds: int = LINK_TTL_SECONDS) -> ConnectLinks:
        """Keys derived from the gateway's secret keys: every replica mints and accepts the same links, and
        a rotated key keeps accepting links minted just before."""
        return cls(cipher.derive(_PURPOSE), ttl_seconds=ttl_seconds)

    def mint(self, principal_id: str, upstream_id: str, base_url: str) -> str:
        token = self._fernet.encrypt(json.dumps({"p": principal_id, "u": upstream_id}).encode()).decode("ascii")
        return f"{base_url.rstrip('/')}/connect/{quote(upstream_id, safe='')}?t={token}"

    def verify(self, t: str, upstream_id: str) -> str:
        """The principal id the link was minted for. Raises InvalidLink (expired, altered, other upstream)."""
        try:
            raw = self._fernet.decrypt(t.encode("ascii"), ttl=self._ttl)
        except InvalidToken:
            # Fernet cannot tell "expired" from "forged" without decrypting; try without the age limit.
            try:
                self._fernet.decrypt(t.encode("ascii"))
            except (InvalidToken, UnicodeEncodeError):
                raise InvalidLink("this connect link is not valid") from None
            raise InvalidLink("this connect link has expired: run the tool again to get a new one") from None
        except UnicodeEncodeError:
            raise InvalidLink("this connect link is not valid") from None
        data = json.loads(raw)
        if data.get("u") != upstream_id:
            raise InvalidLink("this connect link is for another upstream")
        principal = data.get("p")
        if not isinstance(principal, str) or not principal:
            raise InvalidLink("this connect link is not valid")
        return principal


def link_digest(t: str) -> str:
    """What is remembered of a link (its token's SHA-256): by an attempt in flight, and once it is spent."""
    return hashlib.sha256(t.encode("utf-8", "replace")).hexdigest()


async def is_spent(engine: AsyncEngine, t: str) -> bool:
    async with engine.connect() as conn:
        row = (await conn.execute(select(spent_links.c.digest).where(spent_links.c.digest == link_digest(t)))).first()
    return row is not None


async def spend(engine: AsyncEngine, digest: str, ttl_seconds: float = LINK_TTL_SECONDS) -> bool:
    """Mark the link with this `link_digest` used; False when it already was (a link makes one connection).
    The row outlives the link itself (spent at most `ttl_seconds` after it was minted)."""
    now = time.time()
    try:
        async with engine.begin() as conn:
            await conn.execute(delete(spent_links).where(spent_links.c.expires_at < now))
            await conn.execute(insert(spent_links).values(digest=digest, expires_at=now + ttl_seconds + 60))
    except IntegrityError:
        return False
    return True
