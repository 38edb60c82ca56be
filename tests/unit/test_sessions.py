"""Client sessions and streams are limited per principal and in total (relay/sessions.py, issue 9 defect 4):
reaching a limit refuses the newcomer; nobody's session is evicted; idle sessions still expire."""

from __future__ import annotations

import pytest

from manifold.config.models import LimitsSettings
from manifold.relay.access import AllowAll
from manifold.relay.hub import Hub, Listener
from manifold.relay.sessions import LimitReached, SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store(clock: Clock, **limits: int) -> SessionStore:
    hub = Hub(None, AllowAll())  # type: ignore[arg-type]  # the list cache is never consulted here
    return SessionStore(hub, LimitsSettings(**limits), idle_seconds=60, clock=clock)


def open_session(sessions: SessionStore, principal_id: str):
    return sessions.create(
        server_id="web",
        principal_id=principal_id,
        protocol_version="2025-11-25",
        client_capabilities={},
        client_info={},
        listener=Listener(view=None, kinds=set()),  # type: ignore[arg-type]
    )


def test_a_principal_at_its_limit_is_refused_and_nobody_is_evicted() -> None:
    sessions = store(Clock(), sessions_per_principal=2, sessions_total=4)
    bob = open_session(sessions, "user:bob")
    alices = [open_session(sessions, "user:alice") for _ in range(2)]
    with pytest.raises(LimitReached, match="limit"):
        open_session(sessions, "user:alice")
    open_session(sessions, "user:bob")  # total is now 4
    with pytest.raises(LimitReached):
        open_session(sessions, "user:carol")
    assert sessions.get(bob.id, "user:bob") is bob
    assert all(sessions.get(s.id, "user:alice") is s for s in alices)
    sessions.close(alices[0].id)
    open_session(sessions, "user:carol")  # a closed session frees its place


def test_idle_sessions_expire_and_free_their_place_but_not_one_with_an_open_stream() -> None:
    clock = Clock()
    sessions = store(clock, sessions_per_principal=2)
    idle = open_session(sessions, "user:alice")
    streaming = open_session(sessions, "user:alice")
    streaming.listener.attach()
    clock.now += 61
    fresh = open_session(sessions, "user:alice")  # the idle one expired
    assert sessions.get(idle.id, "user:alice") is None
    assert sessions.get(streaming.id, "user:alice") is streaming
    assert sessions.get(fresh.id, "user:alice") is fresh


def test_streams_are_limited_per_principal() -> None:
    sessions = store(Clock(), streams_per_principal=2)
    sessions.open_stream("user:alice")
    sessions.open_stream("user:alice")
    with pytest.raises(LimitReached):
        sessions.open_stream("user:alice")
    sessions.open_stream("user:bob")
    sessions.stream_closed("user:alice")
    sessions.open_stream("user:alice")
