"""The session keys of upstream/credential.py: a 2025-11-25 client's session of an upstream that speaks both eras
(`in_handshake_era`), the session it falls back to (`own_era`), and the pool's key for each."""

from __future__ import annotations

from manifold.upstream.credential import SHARED, Outbound, in_handshake_era, own_era
from manifold.upstream.pool import UpstreamKey


def test_a_handshake_era_key_keeps_the_credential_and_the_session_it_falls_back_to() -> None:
    alice_shared = in_handshake_era(SHARED, "caller|caller:alice")
    alice = in_handshake_era(Outbound({"Authorization": "Bearer a"}, "oauth:alice"), "oauth:alice|caller:alice")
    assert alice_shared.identity == "caller|caller:alice" and alice_shared.handshake  # the caller's own
    assert alice.headers == {"Authorization": "Bearer a"}
    assert own_era(alice_shared) == SHARED  # falls back to the shared session of its 2026-07-28 clients
    assert own_era(alice) == Outbound({"Authorization": "Bearer a"}, "oauth:alice")
    assert own_era(SHARED) is SHARED


def test_the_era_is_part_of_the_key_not_of_the_identity_string() -> None:
    # A principal whose id ends like a handshake-era mark once shared another user's session (isolation probe).
    bob_handshake = in_handshake_era(SHARED, "caller|caller:bob")
    impostor = Outbound({}, "caller|caller:bob|handshake-era")
    assert UpstreamKey.of("up", bob_handshake) != UpstreamKey.of("up", impostor)
    assert UpstreamKey.of("up", bob_handshake) != UpstreamKey.of("up", Outbound({}, "caller|caller:bob"))
