"""The keys the gateway signs its own OAuth access tokens with (RFC 9068 JWTs, authserver/), as its
authorization server for its MCP endpoints.

The keys are not stored anywhere: each is an EC P-256 key derived from one of the gateway's secret keys
(security/crypto.py, `Cipher.derive`), so there is one secret to keep and back up, every replica signs and
verifies alike, and rotating the secret key (`manifold secrets rotate-key`) rotates the signing key: the
newest secret key signs, the older ones stay in the JWKS and still verify until they are dropped. The key id
is the RFC 7638 thumbprint of the public key, prefixed `mfg-` so a token of ours is told from an IdP's by
its header alone.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey, KeySet

from manifold.security.crypto import Cipher

_PURPOSE = b"manifold gateway-oauth signing v1"
KID_PREFIX = "mfg-"
ALGORITHM = "ES256"
# The order of the P-256 group: a derived scalar is reduced into [1, n-1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _derive_key(secret: bytes) -> ECKey:
    scalar = int.from_bytes(hashlib.sha512(secret).digest(), "big") % (_P256_ORDER - 1) + 1
    private = ec.derive_private_key(scalar, ec.SECP256R1())
    key = ECKey.import_key(private)
    kid = KID_PREFIX + key.thumbprint()
    return ECKey.import_key(private, {"kid": kid, "alg": ALGORITHM, "use": "sig"})


class SigningKeys:
    """The signing key (newest) and every key that still verifies, recomputed only when the secret keys change."""

    def __init__(self, cipher: Cipher) -> None:
        self._cipher = cipher
        self._secrets: list[bytes] = []
        self._keys: list[ECKey] = []

    def _current(self) -> list[ECKey]:
        secrets = self._cipher.derive(_PURPOSE)
        if secrets != self._secrets:
            self._keys = [_derive_key(secret) for secret in secrets]
            self._secrets = secrets
        return self._keys

    def secrets(self, purpose: bytes) -> list[bytes]:
        """32-byte secrets for another use of the gateway's own OAuth (HMAC), one per configured secret key,
        the newest first (a replica may not have the newest yet)."""
        return self._cipher.derive(purpose)

    def signing_key(self) -> ECKey:
        return self._current()[0]

    def verification_keys(self) -> KeySet:
        return KeySet(list(self._current()))

    def kids(self) -> frozenset[str]:
        return frozenset(str(key.kid) for key in self._current())

    def jwks(self) -> dict[str, list[dict[str, object]]]:
        """The public keys, for `/.well-known/jwks.json`."""
        return {"keys": [dict(key.as_dict(private=False)) for key in self._current()]}
