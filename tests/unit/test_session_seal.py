"""Sealed session ids and request states (relay/sessions.py, relay/auth_required.py): what one replica seals,
another with the same secret key opens; anything altered, too old, or sealed with another key is nobody's."""

from __future__ import annotations

import base64
import os

import pytest

from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind
from manifold.relay.access import AllowAll
from manifold.relay.auth_required import RequestStates
from manifold.relay.hub import Hub, Listener
from manifold.relay.jsonrpc import RpcError
from manifold.relay.sessions import Sealed, SessionSeal, SessionStore

KEY = os.urandom(32)
SEALED = Sealed("ab" * 16, "web", "user:alice", "2025-11-25", {"sampling": {}}, {"name": "ide", "version": "1"})


class View:
    id = "web"


def user(name: str) -> Principal:
    return Principal(PrincipalKind.USER, name, Credential(CredentialKind.API_KEY))


def test_a_seal_opens_on_another_replica_with_the_same_key_only() -> None:
    sid = SessionSeal([KEY]).seal(SEALED)
    assert sid.startswith(SEALED.handle + ".")
    assert "alice" not in sid  # encrypted: the id shows nothing of the caller
    assert SessionSeal([KEY]).open(sid) == SEALED
    assert SessionSeal([os.urandom(32), KEY]).open(sid) == SEALED  # a rotated key still opens it
    assert SessionSeal([os.urandom(32)]).open(sid) is None
    assert SessionSeal([KEY]).open(sid[:-4] + ("AAAA" if not sid.endswith("AAAA") else "BBBB")) is None
    assert SessionSeal([KEY]).open("cd" * 16 + sid[32:]) is None  # another handle on this seal
    assert SessionSeal([KEY]).open("not-a-session") is None


def test_a_clients_icons_and_other_extras_stay_out_of_the_id() -> None:
    """The id comes back as a header on every request: a 24 kB icon in clientInfo made it too long for a
    balancer (haproxy answered 502). It carries the client's name, version and title, and its capabilities."""
    icon = "data:image/png;base64," + base64.b64encode(os.urandom(18_000)).decode()
    info = {"name": "ide", "version": "1", "title": "The IDE", "icons": [{"src": icon}], "websiteUrl": "https://x"}
    caps = {"sampling": {}, "elicitation": {"form": {}}, "experimental": {"blob": "y" * 5000}}
    big = Sealed(SEALED.handle, "web", "user:alice", "2025-11-25", caps, info)
    sid = SessionSeal([KEY]).seal(big)
    assert len(sid) < 600
    opened = SessionSeal([KEY]).open(sid)
    assert opened is not None
    assert opened.client_info == {"name": "ide", "version": "1", "title": "The IDE"}
    assert opened.client_capabilities == {"sampling": {}, "elicitation": {"form": {}}}  # what the relay asks for


@pytest.mark.anyio
async def test_another_store_adopts_a_sealed_session_for_its_principal_and_server_only() -> None:
    def store() -> SessionStore:
        return SessionStore(Hub(None, AllowAll()), seal=SessionSeal([KEY]))  # type: ignore[arg-type]

    first, second = store(), store()
    alice = user("alice")
    session = first.create(
        server_id="web",
        principal_id=alice.id,
        protocol_version="2025-11-25",
        client_capabilities={"elicitation": {}},
        client_info={"name": "ide"},
        listener=Listener(view=View(), kinds=set()),  # type: ignore[arg-type]
    )
    assert second.get(session.id, alice.id) is None
    bob = user("bob")
    assert await second.adopt(session.id, bob, View()) is None  # type: ignore[arg-type]
    adopted = await second.adopt(session.id, alice, View())  # type: ignore[arg-type]
    assert adopted is not None
    assert (adopted.protocol_version, adopted.client_capabilities) == ("2025-11-25", {"elicitation": {}})
    assert second.get(session.id, alice.id) is adopted  # from now on a dict lookup


def test_request_states_verify_with_the_same_keys_only() -> None:
    state = RequestStates([KEY]).mint("user:alice", "gh")
    RequestStates([KEY]).check(state, "user:alice")
    with pytest.raises(RpcError):
        RequestStates([KEY]).check(state, "user:bob")
    with pytest.raises(RpcError):
        RequestStates([os.urandom(32)]).check(state, "user:alice")
