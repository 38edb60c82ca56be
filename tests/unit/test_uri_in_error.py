"""resources/read errors name the URI the client asked for (SEP-2164 `data.uri`), relay/era_adapt.py."""

from __future__ import annotations

from manifold.relay.era_adapt import uri_in_error

ASKED = {"uri": "kitchen+alpha://nope"}


def test_an_error_without_data_gets_the_clients_uri() -> None:
    reply = uri_in_error({"error": {"code": -32602, "message": "Unknown resource"}}, ASKED)
    assert reply["error"]["data"] == {"uri": "kitchen+alpha://nope"}


def test_the_upstreams_own_form_of_a_namespaced_uri_becomes_the_clients() -> None:
    """Was (real-clients probe): the message and data.uri named `kitchen://nope`, a URI the client cannot use."""
    upstream = {
        "error": {"code": -32602, "message": "Unknown resource: kitchen://nope", "data": {"uri": "kitchen://nope"}}
    }
    reply = uri_in_error(upstream, ASKED)
    assert reply["error"] == {
        "code": -32602,
        "message": "Unknown resource: kitchen+alpha://nope",
        "data": {"uri": "kitchen+alpha://nope"},
    }


def test_other_data_is_left_alone() -> None:
    upstream = {"error": {"code": -32002, "message": "gone", "data": {"reason": "deleted"}}}
    assert uri_in_error(upstream, ASKED) == upstream
    assert uri_in_error({"result": {"contents": []}}, ASKED) == {"result": {"contents": []}}


def test_a_hostile_upstreams_data_uri_cannot_amplify_the_message() -> None:
    """Review: `data.uri` "x" in a message of a million x's became a 2 GB message. Only the upstream's own form of
    the requested URI is replaced, once; anything else is left as the upstream said it."""
    huge = {"error": {"code": -32602, "message": "x" * 1_000_000, "data": {"uri": "x"}}}
    assert uri_in_error(huge, ASKED) is huge
    other = {"error": {"code": -32602, "message": "kitchen://a and kitchen://a", "data": {"uri": "kitchen://a"}}}
    assert uri_in_error(other, ASKED) is other  # another resource: the upstream's words
    twice = {"error": {"code": -32602, "message": "kitchen://nope, kitchen://nope", "data": {"uri": "kitchen://nope"}}}
    assert uri_in_error(twice, ASKED)["error"]["message"] == "kitchen+alpha://nope, kitchen://nope"
