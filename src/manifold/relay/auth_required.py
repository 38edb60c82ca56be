"""Telling a client that the user must connect an account first (or open any other page of the gateway's, as
the approval gate does: `ask_to_open`), in the best form the client understands.

- 2026-07-28 clients that declared `elicitation.url`: an `input_required` result holding a URL-mode
  `elicitation/create`, with a `requestState` the gateway signs (HMAC, with a key derived from the secret key,
  so any replica accepts it): the client opens the URL, then retries the call with the state, and the gateway
  accepts only states it minted, for this user, not expired.
- 2025-11-25 clients that declared `elicitation.url`: JSON-RPC error -32042 (URLElicitationRequired).
- Any other client, of either era: a tool result with `isError: true` whose text gives the absolute URL and
  what to do (a client without URL elicitation could not show the URL any other way).

The URL is always the gateway's own one-time connect URL (outbound/oauth), never the third party's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeGuard, assert_never

import orjson

from manifold.outbound.resolver import AuthRequired
from manifold.protocol import ELICITATION_CREATE, INVALID_PARAMS, RESULT_INPUT_REQUIRED, URL_ELICITATION_REQUIRED, Era
from manifold.relay.jsonrpc import RpcError, tool_error_result
from manifold.security.crypto import Cipher

JSON = dict[str, Any]
STATE_PREFIX = "manifold-auth."
STATE_TTL_SECONDS = 900
_PURPOSE = b"manifold request-state v1"


class RequestStates:
    """Seals the `requestState` a client hands back (HMAC-SHA256 over the data and an expiry). The keys are
    derived from the gateway's secret keys (`from_cipher`), so every replica accepts what any replica sealed;
    the first key signs, every key verifies (a rotated key keeps states signed just before valid). Without
    keys (tests), one random key for this process."""

    def __init__(self, keys: list[bytes] | None = None) -> None:
        self._keys = list(keys) if keys else [secrets.token_bytes(32)]

    @classmethod
    def from_cipher(cls, cipher: Cipher) -> RequestStates:
        return cls(cipher.derive(_PURPOSE))

    @staticmethod
    def _sign(key: bytes, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(key, payload, hashlib.sha256).digest()).decode().rstrip("=")

    def seal(self, prefix: str, data: JSON, ttl_seconds: float) -> str:
        """An opaque state a client hands back: `data` plus an expiry, signed. `data["p"]` is the principal it
        is bound to (checked by `unseal`)."""
        body = base64.urlsafe_b64encode(orjson.dumps({**data, "exp": int(time.time() + ttl_seconds)})).decode()
        return f"{prefix}{body}.{self._sign(self._keys[0], body.encode())}"

    def unseal(self, prefix: str, state: str, principal_id: str) -> JSON:
        """The data of a state `seal` made with this prefix for this principal, not expired; else RpcError."""
        try:
            if not state.startswith(prefix):
                raise ValueError
            body, signature = state[len(prefix) :].rsplit(".", 1)
            if not any(hmac.compare_digest(signature, self._sign(key, body.encode())) for key in self._keys):
                raise ValueError
            data = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            if not isinstance(data, dict) or data.get("p") != principal_id or int(data.get("exp", 0)) < time.time():
                raise ValueError
            return data
        except (ValueError, TypeError, orjson.JSONDecodeError):
            raise RpcError(
                INVALID_PARAMS, "requestState is not valid (expired, altered or minted for someone else)"
            ) from None

    def mint(self, principal_id: str, upstream_id: str) -> str:
        return self.seal(STATE_PREFIX, {"p": principal_id, "u": upstream_id}, STATE_TTL_SECONDS)

    def check(self, state: str, principal_id: str) -> None:
        """Raise RpcError unless the state is one we minted for this principal and it has not expired."""
        self.unseal(STATE_PREFIX, state, principal_id)


def is_ours(state: object) -> TypeGuard[str]:
    return isinstance(state, str) and state.startswith(STATE_PREFIX)


def message_for(exc: AuthRequired, member_id: str) -> str:
    return (
        f"Member '{member_id}' needs you to connect your account ({exc.reason}). "
        f"Open {exc.connect_url} in your browser, sign in and approve; then call the tool again."
    )


def supports_url_elicitation(client_capabilities: JSON) -> bool:
    elicit = client_capabilities.get("elicitation")
    return isinstance(elicit, dict) and "url" in elicit


def render(
    exc: AuthRequired,
    *,
    member_id: str,
    principal_id: str,
    era: Era,
    client_capabilities: JSON,
    states: RequestStates,
) -> JSON:
    """The reply to a call that needs the user to connect `exc.upstream_id` first."""
    return ask_to_open(
        message_for(exc, member_id),
        exc.connect_url,
        elicitation_id=f"connect-{exc.upstream_id}-{secrets.token_hex(4)}",
        key="connect",
        era=era,
        client_capabilities=client_capabilities,
        request_state=lambda: states.mint(principal_id, exc.upstream_id),
    )


def ask_to_open(
    text: str,
    url: str,
    *,
    elicitation_id: str,
    key: str,
    era: Era,
    client_capabilities: JSON,
    request_state: Callable[[], str],
) -> JSON:
    """The reply that asks the person to open `url` (the gateway's own page) and then call again, in the form
    this client understands (the module's docstring): `text` says what and why, with the absolute URL.
    `key` names the input request of a 2026-07-28 `input_required`; `request_state` makes its state.
    Used for "connect your account" and for the approval gate (relay/approval_gate.py)."""
    elicitation = {"mode": "url", "message": text, "url": url, "elicitationId": elicitation_id}
    if not supports_url_elicitation(client_capabilities):
        return tool_error_result(text)
    match era:
        case Era.MODERN:
            return {
                "result": {
                    "resultType": RESULT_INPUT_REQUIRED,
                    "inputRequests": {key: {"method": ELICITATION_CREATE, "params": elicitation}},
                    "requestState": request_state(),
                }
            }
        case Era.HANDSHAKE:
            return {
                "error": {
                    "code": URL_ELICITATION_REQUIRED,
                    "message": "URL elicitation required",
                    "data": {"elicitations": [elicitation]},
                }
            }
        case _:
            assert_never(era)
