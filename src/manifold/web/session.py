"""Signed browser sessions for the gateway's web pages (connect, consent, connections).

The cookie holds a small JSON payload — who signed in, how, when it ends, and a random session id that CSRF
tokens are bound to — base64url-encoded and authenticated with HMAC-SHA256. Nothing secret is inside (no
token, no key): the payload is readable by its holder, only unforgeable. The signing key is derived from
the gateway's secret key (MANIFOLD_SECRET_KEY or `<state_dir>/secret.key`), so sessions survive a restart
and every replica accepts them.

Cookie attributes follow the MCP security best practices' confused-deputy advice: `HttpOnly`, `SameSite=Lax` (a
cross-site POST carries no session, so no consent can be forged from another site), `Path=/`, and on an
https public URL `Secure` plus the `__Host-` name prefix (the browser then refuses the cookie from any
subdomain or plain-http page).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from manifold.security.crypto import Cipher

_PURPOSE = b"manifold web-session v1"
SESSION_SECONDS = 8 * 3600  # a browser sign-in lasts a working day at most
PRE_LOGIN_SECONDS = 15 * 60  # the sign-in form's own cookie (login CSRF), while the form is filled in
MAX_COOKIE_CHARS = 4096


@dataclass(frozen=True)
class WebSession:
    """Who is signed in to the web pages.

    `method` is how they proved it: `api_key:<key id>` (checked again on every request, so revoking the key
    ends the session) or `idp:<idp id>`. `sid` is random per sign-in; CSRF tokens are derived from it."""

    principal_id: str
    display: str
    method: str
    sid: str
    issued_at: float
    expires_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "p": self.principal_id,
            "d": self.display,
            "m": self.method,
            "s": self.sid,
            "iat": int(self.issued_at),
            "exp": int(self.expires_at),
        }

    @classmethod
    def from_json(cls, data: Any) -> WebSession | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                principal_id=str(data["p"]),
                display=str(data["d"]),
                method=str(data["m"]),
                sid=str(data["s"]),
                issued_at=float(data["iat"]),
                expires_at=float(data["exp"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


def session_keys(cipher: Cipher) -> list[bytes]:
    """The signing keys, derived from the gateway's secret keys (security/crypto.py), newest first: one
    key to keep and rotate, every replica accepts the others' cookies, and a cookie signed just before a key
    rotation still verifies."""
    return cipher.derive(_PURPOSE)


MAC_CHARS = 43  # HMAC-SHA256, base64url without padding
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def well_formed_mac(value: str) -> bool:
    """Whether `value` has the shape of a MAC of ours (43 base64url characters); says nothing of its worth."""
    return len(value) == MAC_CHARS and _B64URL.fullmatch(value) is not None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """HMAC-SHA256 over a purpose label and a payload: a value signed for one purpose (the session cookie)
    never verifies as another (the pre-login cookie, a CSRF token)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("a signer needs at least one key")
        self._keys = list(keys)

    def mac(self, purpose: str, payload: bytes, key: bytes | None = None) -> str:
        digest = hmac.new(key or self._keys[0], purpose.encode() + b"\0" + payload, hashlib.sha256).digest()
        return _b64(digest)

    def verify(self, purpose: str, payload: bytes, mac: str) -> bool:
        """Whether `mac` was made by any of the keys (the newest signs; older ones still verify). Anything
        not shaped like one of our MACs (another length, non-ASCII, odd characters: what a browser or an
        attacker may send) is simply not valid."""
        if not well_formed_mac(mac):
            return False
        sent = mac.encode("ascii")
        return any(hmac.compare_digest(sent, self.mac(purpose, payload, key).encode("ascii")) for key in self._keys)

    def seal(self, purpose: str, data: dict[str, Any]) -> str:
        body = _b64(orjson.dumps(data))
        return f"{body}.{self.mac(purpose, body.encode())}"

    def unseal(self, purpose: str, value: str) -> dict[str, Any] | None:
        """The data, or None when the value was not sealed by us for this purpose (whatever it holds)."""
        if len(value) > MAX_COOKIE_CHARS or value.count(".") != 1 or not _B64URL.fullmatch(value.replace(".", "")):
            return None
        body, mac = value.split(".")
        if not self.verify(purpose, body.encode("ascii"), mac):
            return None
        try:
            data = orjson.loads(_unb64(body))
        except (ValueError, orjson.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None


class SessionCookies:
    """Reading and writing the session and pre-login cookies."""

    def __init__(self, keys: list[bytes], *, secure: bool) -> None:
        self.signer = Signer(keys)
        self.secure = secure
        prefix = "__Host-" if secure else ""
        self.session_name = f"{prefix}manifold-session"
        self.pre_login_name = f"{prefix}manifold-login"
        self.oidc_name = f"{prefix}manifold-oidc"  # an IdP sign-in in progress (web/oidc_login.py)

    # ---- reading (the request's cookies, as Starlette parsed them) ----

    def session(self, cookies: dict[str, str], now: float | None = None) -> WebSession | None:
        raw = cookies.get(self.session_name)
        if not raw:
            return None
        session = WebSession.from_json(self.signer.unseal("session", raw))
        if session is None or session.expires_at <= (now if now is not None else time.time()):
            return None
        return session

    def pre_login(self, cookies: dict[str, str]) -> str | None:
        """The nonce of the sign-in form this browser was shown (login CSRF), if still fresh."""
        raw = cookies.get(self.pre_login_name)
        data = self.signer.unseal("pre-login", raw) if raw else None
        if not data or not isinstance(data.get("n"), str) or float(data.get("exp", 0)) <= time.time():
            return None
        return data["n"]

    def oidc_pending(self, cookies: dict[str, str]) -> dict[str, Any] | None:
        raw = cookies.get(self.oidc_name)
        return self.signer.unseal("oidc", raw) if raw else None

    # ---- writing (values for a Set-Cookie header) ----

    def new_session(self, principal_id: str, display: str, method: str, *, lifetime: float = SESSION_SECONDS) -> str:
        now = time.time()
        session = WebSession(principal_id, display, method, secrets.token_urlsafe(16), now, now + lifetime)
        return self._cookie(self.session_name, self.signer.seal("session", session.to_json()), int(lifetime))

    def new_pre_login(self) -> tuple[str, str]:
        """(nonce, Set-Cookie value) for a sign-in form."""
        nonce = secrets.token_urlsafe(16)
        sealed = self.signer.seal("pre-login", {"n": nonce, "exp": int(time.time()) + PRE_LOGIN_SECONDS})
        return nonce, self._cookie(self.pre_login_name, sealed, PRE_LOGIN_SECONDS)

    def new_oidc_pending(self, data: dict[str, Any], max_age: int) -> str:
        return self._cookie(self.oidc_name, self.signer.seal("oidc", data), max_age)

    def clear_oidc_pending(self) -> str:
        return self._cookie(self.oidc_name, "", 0)

    def clear_session(self) -> str:
        return self._cookie(self.session_name, "", 0)

    def clear_pre_login(self) -> str:
        return self._cookie(self.pre_login_name, "", 0)

    def _cookie(self, name: str, value: str, max_age: int) -> str:
        parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)
