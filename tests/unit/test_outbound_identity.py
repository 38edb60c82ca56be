"""The session keys of upstream/credential.py: a 2025-11-25 client's session of an upstream that speaks both eras
(`in_handshake_era`), whose it is (`base_identity`: None for a shared one), and back (`own_era`)."""

from __future__ import annotations

from manifold.upstream.credential import SHARED, Outbound, base_identity, in_handshake_era, own_era


def test_a_handshake_era_key_keeps_the_credential_and_says_whose_session_it_is() -> None:
    shared = in_handshake_era(SHARED)
    alice = in_handshake_era(Outbound({"Authorization": "Bearer a"}, "oauth:alice"))
    assert shared.identity is not None and shared.identity != SHARED.identity  # a session of its own
    assert base_identity(shared.identity) is None  # ... shared by every client of that era: told nobody's roots
    assert alice.headers == {"Authorization": "Bearer a"} and base_identity(alice.identity) == "oauth:alice"
    assert own_era(shared) == SHARED and own_era(alice) == Outbound({"Authorization": "Bearer a"}, "oauth:alice")
    assert own_era(SHARED) is SHARED and base_identity(None) is None and base_identity("oauth:bob") == "oauth:bob"
