"""Naming rules: exposed tool/prompt names, shortening, reversible resource URIs, collision table."""

from __future__ import annotations

import hashlib

import pytest

from manifold.naming import (
    NameCollision,
    NameTable,
    expose_name,
    is_valid_name,
    shorten,
    unwrap_uri,
    wrap_uri,
)


@pytest.mark.parametrize(
    ("member", "name", "kwargs", "expected"),
    [
        ("server-1", "echo", {}, "server-1__echo"),
        ("server-1", "get-tiny-image", {}, "server-1__get-tiny-image"),
        ("server-1", "echo", {"sep": "_"}, "server-1_echo"),
        ("server-1", "echo", {"namespace": False}, "echo"),
        ("toolbox", "word_count", {"alias": "count_words"}, "toolbox__count_words"),
        ("toolbox", "word_count", {"alias": "count_words", "namespace": False}, "count_words"),
    ],
)
def test_expose_name(member: str, name: str, kwargs: dict, expected: str) -> None:
    assert expose_name(member, name, **kwargs) == expected


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("a", True),
        ("getUser", True),
        ("DATA_EXPORT_v2", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("admin.tools.list", False),  # the MCP spec allows '.', LLM APIs do not
        ("has space", False),
        ("a,b", False),
        ("naïve", False),
    ],
)
def test_is_valid_name(name: str, valid: bool) -> None:
    assert is_valid_name(name) is valid


def _h(candidate: str) -> str:
    return hashlib.sha256(candidate.encode()).hexdigest()[:8]


def test_valid_candidate_is_unchanged_up_to_64() -> None:
    name = "m__" + "x" * 61
    assert len(name) == 64
    assert expose_name("m", "x" * 61) == name


def test_long_candidate_is_cut_to_55_plus_hash() -> None:
    name = "t" * 70
    candidate = f"server-1__{name}"
    exposed = expose_name("server-1", name)
    assert exposed == candidate[:55] + "_" + _h(candidate)
    assert len(exposed) == 64 and is_valid_name(exposed)
    assert expose_name("server-1", name) == exposed  # deterministic


def test_long_names_sharing_a_prefix_do_not_meet() -> None:
    a = expose_name("m", "p" * 80 + "a")
    b = expose_name("m", "p" * 80 + "b")
    assert a != b and a[:55] == b[:55]


def test_invalid_characters_are_replaced_and_hashed() -> None:
    exposed = expose_name("m", "admin.tools.list")
    assert exposed == "m__admin_tools_list_" + _h("m__admin.tools.list")
    # '.' -> '_' alone would make it meet the honest name 'admin_tools_list'; the hash keeps them apart.
    assert exposed != expose_name("m", "admin_tools_list")
    assert is_valid_name(expose_name("m", "naïve name"))


def test_empty_name_becomes_a_valid_name() -> None:
    exposed = expose_name("m", "", namespace=False)
    assert exposed == "_" + _h("") and is_valid_name(exposed)


def test_shorten_is_identity_on_valid_names() -> None:
    assert shorten("ok_name-1") == "ok_name-1"


# ---- URIs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "uri", "wrapped"),
    [
        ("server-1", "test://static-text", "test+server-1://static-text"),
        ("a", "svn+ssh://x", "svn+ssh+a://x"),
        ("a", "readme", "manifold+a:readme"),
        ("a", "file:///x", "file+a:///x"),
        ("a", "urn:a:b", "urn+a:a:b"),
        ("a", "HTTPS://Example.com/P?q=1#f", "HTTPS+a://Example.com/P?q=1#f"),
        ("a", "x-y.z+w://h", "x-y.z+w+a://h"),
        ("a", "test://template/{id}/data", "test+a://template/{id}/data"),
        ("a", "{scheme}://x/{path}", "manifold+a:{scheme}://x/{path}"),
        ("a", "{+path}", "manifold+a:{+path}"),
        ("a", "", "manifold+a:"),
        ("a", ":x", "manifold+a::x"),
        ("a", "1abc:x", "manifold+a:1abc:x"),  # a scheme starts with a letter
        ("a", "my file:x", "manifold+a:my file:x"),
        # A literal 'manifold' scheme is wrapped whole, so it cannot be mistaken for "no scheme".
        ("a", "manifold:x", "manifold+a:manifold:x"),
        # Nested gateways: the inner gateway's wrapping survives the outer one.
        ("outer", "manifold+inner:readme", "manifold+inner+outer:readme"),
        ("outer", "test+inner://x", "test+inner+outer://x"),
    ],
)
def test_wrap_and_unwrap_round_trip(member: str, uri: str, wrapped: str) -> None:
    assert wrap_uri(member, uri) == wrapped
    assert unwrap_uri(wrapped) == (member, uri)


@pytest.mark.parametrize(
    "uri",
    [
        "test://x",  # no member in the scheme
        "readme",  # no scheme at all
        "+a:x",  # empty base scheme
        "test+:x",  # empty member
        "test+A:x",  # member ids are lowercase slugs
        "test+-a:x",
        "{x}+a:y",
    ],
)
def test_unwrap_rejects_uris_it_did_not_make(uri: str) -> None:
    assert unwrap_uri(uri) is None


# ---- NameTable ----------------------------------------------------------------------------------


def test_name_table_resolves() -> None:
    table = NameTable()
    table.add("a", "x", "a__x")
    table.add("b", "x", "b__x")
    assert table.resolve("a__x") == ("a", "x")
    assert table.resolve("b__x") == ("b", "x")
    assert table.resolve("c__x") is None
    assert "a__x" in table and len(table) == 2


def test_name_table_same_source_twice_is_fine() -> None:
    table = NameTable()
    table.add("a", "x", "a__x")
    table.add("a", "x", "a__x")
    assert len(table) == 1


def test_name_table_collision_names_both_sources() -> None:
    # The trap from the field notes: with '_' as separator, 'p' + 'x_y' and 'p_x' + 'y' meet.
    table = NameTable()
    table.add("p", "x_y", expose_name("p", "x_y", sep="_"))
    with pytest.raises(NameCollision) as info:
        table.add("p_x", "y", expose_name("p_x", "y", sep="_"))
    msg = str(info.value)
    assert msg == "'p_x_y' from member 'p_x' tool 'y' collides with member 'p' tool 'x_y'"
    assert table.resolve("p_x_y") == ("p", "x_y")  # the first entry is kept


def test_name_table_try_add_records_instead_of_raising() -> None:
    table = NameTable("prompt")
    assert table.try_add("a", "greet", "greet") is None
    collision = table.try_add("b", "greet", "greet")
    assert isinstance(collision, NameCollision)
    assert "member 'b' prompt 'greet'" in str(collision) and "member 'a' prompt 'greet'" in str(collision)
    assert table.resolve("greet") == ("a", "greet")
