"""`exchange` mode: RFC 8693 token exchange of the caller's IdP token for one issued to the upstream.

    POST {token_endpoint}
    grant_type=urn:ietf:params:oauth:grant-type:token-exchange
    subject_token=<the caller's validated token>&subject_token_type=...:access_token
    audience=<upstream audience>[&resource=...][&scope=...]

The gateway authenticates as its own client (HTTP Basic with client_id/client_secret, or client_id in the
form for a public client). The issued token is cached per (principal, upstream) until shortly before it
expires, and concurrent callers waiting for the same token share one request, so a burst of calls costs
one round trip to the token service. Failures become `OutboundRefused` with a reason fit for the caller:
it names what went wrong (the token service's error code, an unreachable endpoint...) and never a token
or the client secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import jwt
import orjson

from manifold.config.models import ExchangeAuth
from manifold.outbound.resolver import OutboundRefused
from manifold.principal import CredentialKind, Principal

log = logging.getLogger(__name__)

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
USABLE_ISSUED_TYPES = frozenset({ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE})

TIMEOUT_SECONDS = 10.0
# Renew this long before the issued token expires (at most half its lifetime), so a token never expires
# between being handed out and reaching the upstream.
EXPIRY_MARGIN_SECONDS = 30.0
# A token whose lifetime the token service does not say (no expires_in, not a JWT with exp) is reused
# only this long.
UNKNOWN_LIFETIME_SECONDS = 60.0
MAX_CACHED = 10_000
MAX_DESCRIPTION_CHARS = 200
MAX_RESPONSE_BYTES = 64 * 1024  # a token response is a few KiB; a larger one is not read into memory


@dataclass(frozen=True)
class _Issued:
    token: str
    renew_at: float  # time.monotonic()


class TokenExchanger:
    """`resolver.TokenExchange` over HTTP (aiohttp). One per gateway process; `aclose()` at shutdown."""

    def __init__(
        self,
        *,
        secret: Callable[[str], str] | None = None,
        timeout_seconds: float = TIMEOUT_SECONDS,
        expiry_margin_seconds: float = EXPIRY_MARGIN_SECONDS,
    ) -> None:
        self._secret = secret  # `secret:NAME` → value (the encrypted store), as in CredentialResolver
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._margin = expiry_margin_seconds
        self._http: aiohttp.ClientSession | None = None
        self._cache: dict[tuple[str, str, str], _Issued] = {}
        self._inflight: dict[tuple[str, str, str], asyncio.Future[_Issued]] = {}

    async def exchange(self, principal: Principal, upstream_id: str, config: ExchangeAuth) -> str:
        """A token for `config.audience` in exchange for the caller's; raises OutboundRefused."""
        subject_token = _subject_token(principal, upstream_id)
        # The configuration is part of the key: an upstream reconfigured at run time (another audience,
        # another token service) must not be handed a token issued under the old settings.
        settings = hashlib.sha256(config.model_dump_json().encode()).hexdigest()
        key = (principal.id, upstream_id, settings)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() < cached.renew_at:
            return cached.token
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._request(subject_token, principal, upstream_id, config))
            self._inflight[key] = future
            future.add_done_callback(lambda done: self._settle(key, done))
        # Shielded: a caller that gives up (cancelled) must not cancel the exchange others are waiting for.
        issued = await asyncio.shield(future)
        return issued.token

    def forget(self, user: str, upstream: str) -> None:
        """The upstream refused a token issued here (401): drop it, so the retry exchanges again."""
        for key in [k for k in self._cache if k[0] == user and k[1] == upstream]:
            del self._cache[key]

    def _settle(self, key: tuple[str, str, str], done: asyncio.Future[_Issued]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]
        if done.cancelled() or done.exception() is not None:  # a failure is never cached: the next call retries
            return
        if len(self._cache) >= MAX_CACHED:
            now = time.monotonic()
            self._cache = {k: v for k, v in self._cache.items() if v.renew_at > now}
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
        self._cache[key] = done.result()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # ---- one exchange ----------------------------------------------------------------------------------

    async def _request(
        self, subject_token: str, principal: Principal, upstream_id: str, config: ExchangeAuth
    ) -> _Issued:
        endpoint = _checked_endpoint(upstream_id, config)
        form = {
            "grant_type": GRANT_TYPE,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
            "audience": config.audience,
        }
        if config.resource:
            form["resource"] = config.resource
        if config.scopes:
            form["scope"] = " ".join(config.scopes)
        headers = {"Accept": "application/json"}
        client_secret = self._client_secret(upstream_id, config)
        if client_secret is not None:
            # RFC 6749 §2.3.1: id and secret are form-encoded before they are joined and base64-encoded.
            headers["Authorization"] = aiohttp.encode_basic_auth(
                quote(config.client_id, safe=""), quote(client_secret, safe="")
            )
        else:
            form["client_id"] = config.client_id
        secrets = (subject_token, client_secret)
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        started = time.monotonic()
        try:
            # No redirects: following one would send the caller's token to wherever the redirect points.
            async with self._http.post(endpoint, data=form, headers=headers, allow_redirects=False) as response:
                status = response.status
                body = await _read_limited(response)
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = f"the token service could not be reached ({_describe_transport_error(exc)})"
            raise _failed(upstream_id, principal, endpoint, reason) from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise _failed(
                upstream_id, principal, endpoint, f"the token service's answer is over {MAX_RESPONSE_BYTES} bytes"
            )
        payload = _json_object(body)
        if status != 200:
            raise _failed(upstream_id, principal, endpoint, _error_reason(status, payload, secrets))
        if payload is None:
            raise _failed(upstream_id, principal, endpoint, "the token service's answer is not a JSON object")
        issued = _issued(payload, started, self._margin)
        if not isinstance(issued, _Issued):
            raise _failed(upstream_id, principal, endpoint, issued)
        return issued

    def _client_secret(self, upstream_id: str, config: ExchangeAuth) -> str | None:
        value = config.client_secret
        if value is None or not value.startswith("secret:"):
            return value
        if self._secret is None:
            raise OutboundRefused(upstream_id, "the secret store is not available for the token exchange's client")
        try:
            return self._secret(value[len("secret:") :])
        except KeyError:
            raise OutboundRefused(
                upstream_id, f"the token exchange's client secret '{value}' is not in the secret store"
            ) from None


def _failed(upstream_id: str, principal: Principal, endpoint: str, reason: str) -> OutboundRefused:
    """The refusal for the caller; the operator's log line also says whose exchange failed and where."""
    log.warning(
        "upstream '%s': token exchange for %s at %s failed: %s", upstream_id, principal.id, _origin(endpoint), reason
    )
    return OutboundRefused(upstream_id, f"token exchange failed: {reason}")


def _subject_token(principal: Principal, upstream_id: str) -> str:
    """Only a token this gateway validated against an IdP is exchanged: an API key means nothing to the
    token service, and exchanging it would hand the gateway's own credential out."""
    if principal.credential.kind is not CredentialKind.IDP_JWT or not principal.token:
        raise OutboundRefused(
            upstream_id,
            "exchanges the caller's token for one issued to the upstream, and only a caller signed in with an "
            f"identity provider's token can be exchanged (this call used: {principal.credential.kind.value})",
        )
    return principal.token


def _checked_endpoint(upstream_id: str, config: ExchangeAuth) -> str:
    parts = urlsplit(config.token_endpoint)
    allowed = ("https", "http") if config.allow_insecure else ("https",)
    if parts.scheme not in allowed or not parts.hostname:
        if parts.scheme == "http":
            reason = "its token_endpoint must be an https:// URL (allow_insecure permits http for development)"
        else:
            reason = "its token_endpoint is not an absolute https:// URL"
        raise OutboundRefused(upstream_id, f"token exchange is misconfigured: {reason}")
    return config.token_endpoint


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    """The body, or its first MAX_RESPONSE_BYTES + 1 bytes when it is longer (which is then refused)."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            break
    return bytes(body)


def _describe_transport_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection failed"
    return type(exc).__name__


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _error_reason(status: int, payload: dict[str, Any] | None, secrets: tuple[str | None, ...]) -> str:
    """RFC 6749 §5.2: {"error": code, "error_description": text}. The description comes from a third party:
    it is shortened, stripped of control characters, and dropped if it echoes a credential."""
    if 300 <= status < 400:
        return f"the token service answered with a redirect (HTTP {status}), which is not followed"
    code = payload.get("error") if payload else None
    if not isinstance(code, str) or not code:
        return f"the token service answered HTTP {status}"
    reason = f"the token service refused it ({_printable(code)[:64]}"
    description = payload.get("error_description") if payload else None
    if isinstance(description, str) and description:
        text = _printable(description)[:MAX_DESCRIPTION_CHARS]
        if not any(s and (s in description or s[:16] in description) for s in secrets):
            reason += f": {text}"
    return reason + ")"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)


def _issued(payload: dict[str, Any], started: float, margin: float) -> _Issued | str:
    """The issued token and when to renew it, or why it cannot be used."""
    token = payload.get("access_token")
    if not isinstance(token, str) or not token:
        return "the token service's answer has no access_token"
    token_type = payload.get("token_type")
    if isinstance(token_type, str) and token_type.lower() != "bearer":
        return f"the token service issued a '{_printable(token_type)[:32]}' token, not a bearer token"
    issued_type = payload.get("issued_token_type")
    if issued_type is not None and issued_type not in USABLE_ISSUED_TYPES:
        return f"the token service issued a token of type '{_printable(str(issued_type))[:100]}', not an access token"
    lifetime = _lifetime(payload, token)
    return _Issued(token, started + max(0.0, lifetime - min(margin, lifetime / 2)))


def _lifetime(payload: dict[str, Any], token: str) -> float:
    expires_in = payload.get("expires_in")
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0:
        return float(expires_in)
    try:
        # Only to learn when to renew: the upstream, not the gateway, is the audience that verifies it.
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        exp = None
    if isinstance(exp, (int, float)) and not isinstance(exp, bool):
        return max(0.0, float(exp) - time.time())
    return UNKNOWN_LIFETIME_SECONDS
