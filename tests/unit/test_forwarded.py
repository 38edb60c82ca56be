"""`forwarded` mode: what a client may put in `x-mcp-headers`, and what of it goes to which upstream.

Every refusal must name the problem (the header, the member) and never the value, which is a credential."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from manifold.config.models import ForwardedAuth, UpstreamConfig
from manifold.outbound.forwarded import MAX_HEADER_BYTES, MAX_VALUE_BYTES, ForwardedError, parse, select
from manifold.outbound.resolver import CallContext, CredentialResolver, OutboundRefused
from manifold.principal import ANONYMOUS
from manifold.upstream.credential import SHARED

SECRET = "s3cr3t-forwarded-value"
TWO = ["github", "jira"]


def refused(raw: str, members: list[str]) -> str:
    with pytest.raises(ForwardedError) as caught:
        parse(raw, members)
    message = str(caught.value)
    assert SECRET not in message
    return message


# ---- parse --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, ""])
def test_absent_header_forwards_nothing(raw: str | None) -> None:
    assert parse(raw, TWO) == {}


def test_object_keyed_by_member_id() -> None:
    raw = json.dumps({"github": {"X-GitHub-Token": SECRET}, "jira": {"X-Jira-Token": "j", "X-Tenant": "t"}})
    assert parse(raw, TWO) == {"github": {"X-GitHub-Token": SECRET}, "jira": {"X-Jira-Token": "j", "X-Tenant": "t"}}


def test_a_member_may_be_left_out() -> None:
    assert parse(json.dumps({"jira": {"X-Jira-Token": "j"}}), TWO) == {"jira": {"X-Jira-Token": "j"}}


def test_flat_object_belongs_to_the_only_member() -> None:
    assert parse(json.dumps({"X-Api-Key": SECRET}), ["github"]) == {"github": {"X-Api-Key": SECRET}}


def test_keyed_object_works_on_a_one_member_server_too() -> None:
    assert parse(json.dumps({"github": {"X-Api-Key": SECRET}}), ["github"]) == {"github": {"X-Api-Key": SECRET}}


def test_empty_object_forwards_nothing() -> None:
    assert parse("{}", ["github"]) == {}
    assert parse(json.dumps({"github": {}}), TWO) == {"github": {}}


def test_flat_object_on_a_server_with_several_members_is_refused() -> None:
    message = refused(json.dumps({"X-Api-Key": SECRET}), TWO)
    assert "keyed by member id" in message and "github, jira" in message


@pytest.mark.parametrize("raw", ["{not json", "{'a': 'b'}", '{"a": "b"', "\x00"])
def test_malformed_json_is_refused(raw: str) -> None:
    assert refused(raw, ["github"]) == "x-mcp-headers is not valid JSON"


@pytest.mark.parametrize("raw", ['["X-Api-Key"]', '"X-Api-Key"', "42", "null", "true"])
def test_json_that_is_not_an_object_is_refused(raw: str) -> None:
    assert refused(raw, ["github"]) == "x-mcp-headers must be a JSON object"


def test_unknown_member_is_refused_and_named_briefly() -> None:
    message = refused(json.dumps({"gitlab": {"X-Api-Key": SECRET}}), TWO)
    assert "'gitlab' is not a member of this server" in message
    long_name = "m" * 500
    message = refused(json.dumps({long_name: {"X-Api-Key": SECRET}}), TWO)
    assert "m" * 64 in message and "m" * 65 not in message


def test_mixing_flat_and_keyed_entries_is_refused() -> None:
    # Not all values are strings, so it is read as keyed by member, and the header name is no member.
    message = refused(json.dumps({"X-Api-Key": SECRET, "github": {"X-Other": "x"}}), ["github"])
    assert "'X-Api-Key' is not a member" in message


@pytest.mark.parametrize("entry", [5, "text-but-keyed", ["X-Api-Key"], None])
def test_a_member_entry_must_be_an_object(entry: object) -> None:
    raw = json.dumps({"github": entry, "jira": {"X-Jira-Token": "j"}})
    assert "the entry for 'github' must be an object" in refused(raw, TWO)


@pytest.mark.parametrize("name", ["", "X Api Key", "X-Api-Key:", "Bad\r\nName", "Naïve", "(paren)", "a/b"])
def test_invalid_header_names_are_refused(name: str) -> None:
    message = refused(json.dumps({"github": {name: SECRET}}), ["github"])
    assert "is not a valid header name" in message and "'github'" in message


@pytest.mark.parametrize("value", [42, None, True, ["v"], {"v": 1}])
def test_a_value_must_be_a_string(value: object) -> None:
    message = refused(json.dumps({"github": {"X-Api-Key": value}}), TWO)
    assert message == "x-mcp-headers: the value of 'X-Api-Key' for 'github' must be a string"


def test_value_size_limit_is_in_bytes_and_inclusive() -> None:
    assert parse(json.dumps({"X-Api-Key": "v" * MAX_VALUE_BYTES}), ["g"]) == {"g": {"X-Api-Key": "v" * MAX_VALUE_BYTES}}
    message = refused(json.dumps({"X-Api-Key": SECRET + "v" * MAX_VALUE_BYTES}), ["g"])
    assert message == f"x-mcp-headers: the value of 'X-Api-Key' for 'g' is over {MAX_VALUE_BYTES} bytes"
    # 2-byte UTF-8 characters: fewer characters than the limit, more bytes.
    wide = "é" * (MAX_VALUE_BYTES // 2 + 1)
    assert "is over" in refused(json.dumps({"X-Api-Key": wide}, ensure_ascii=False), ["g"])


def test_the_whole_header_has_a_size_limit() -> None:
    many = {f"X-H{i}": "v" * 1000 for i in range(MAX_HEADER_BYTES // 1000 + 1)}
    assert refused(json.dumps({"g": many}), ["g"]) == f"x-mcp-headers is over {MAX_HEADER_BYTES} bytes"




@pytest.mark.parametrize(
    "value",
    [
        pytest.param(f"{SECRET}{bad}{tail}", id=f"{bad!r}{'-end' if not tail else ''}", marks=marks)
        for bad in ["\r", "\n", "\r\n", "\x00", "\x7f", "\x1b", "\x0b"]
        for tail, marks in [("Injected: yes", ()), ("", ())]
    ]
    + [pytest.param(f"\r\n{SECRET}", id="leading-crlf")],
)
def test_control_characters_in_a_value_are_refused(value: str) -> None:
    message = refused(json.dumps({"X-Api-Key": value}), ["g"])
    assert message == "x-mcp-headers: the value of 'X-Api-Key' for 'g' holds control characters"


def test_a_value_outside_latin1_is_refused() -> None:
    # Header values are bytes on the wire; a character that has no single byte cannot be sent as is.
    with pytest.raises(ForwardedError):
        parse(json.dumps({"X-Api-Key": "price-€"}, ensure_ascii=False), ["g"])


def test_tabs_spaces_and_printable_text_pass() -> None:
    value = "Token\tabc def !#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    assert parse(json.dumps({"X-Api-Key": value}), ["g"]) == {"g": {"X-Api-Key": value}}


# ---- select -------------------------------------------------------------------------------------------------


def test_select_keeps_allowed_names_spelled_as_configured() -> None:
    sent = {"x-api-key": SECRET, "X-TENANT": "acme"}
    assert select(sent, ["X-Api-Key", "X-Tenant"], "crm") == {"X-Api-Key": SECRET, "X-Tenant": "acme"}


def test_select_of_nothing_is_nothing() -> None:
    assert select({}, ["X-Api-Key"], "crm") == {}


def test_a_name_not_on_the_allow_list_is_refused_not_dropped() -> None:
    with pytest.raises(ForwardedError) as caught:
        select({"X-Api-Key": SECRET, "X-Admin": SECRET}, ["X-Api-Key"], "crm")
    message = str(caught.value)
    assert message == "header 'X-Admin' may not be forwarded to upstream 'crm' (allowed: X-Api-Key)"
    assert SECRET not in message


@pytest.mark.parametrize(
    "name",
    ["Host", "cookie", "Set-Cookie", "Content-Length", "Connection", "Transfer-Encoding", "TE", "Upgrade",
     "Proxy-Authorization", "Mcp-Session-Id", "MCP-Protocol-Version", "Keep-Alive", "Expect"],
)  # fmt: skip
def test_never_forwarded_names_are_refused_even_if_listed(name: str) -> None:
    with pytest.raises(ForwardedError) as caught:
        select({name: SECRET}, [name], "crm")
    assert f"header '{name}' may not be forwarded to upstream 'crm'" in str(caught.value)


@pytest.mark.parametrize("name", ["Host", "Cookie", "Content-Length", "Connection", "Transfer-Encoding", "bad name"])
def test_config_refuses_never_forwarded_or_invalid_names(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ForwardedAuth(mode="forwarded", allow=["X-Api-Key", name])
    assert name in str(caught.value)


def test_config_needs_at_least_one_name() -> None:
    with pytest.raises(ValidationError, match="at least one header name"):
        ForwardedAuth(mode="forwarded", allow=[])


# ---- through the resolver: the session identity -----------------------------------------------------------------


def upstream(*allow: str) -> UpstreamConfig:
    return UpstreamConfig(transport="http", url="http://127.0.0.1:1/mcp", auth={"mode": "forwarded", "allow": allow})


async def resolve(raw: str | None, members: tuple[str, ...] = ("github",), member: str = "github"):
    ctx = CallContext(principal=ANONYMOUS, member_id=member, server_id="s", forwarded_raw=raw, member_ids=members)
    return await CredentialResolver().resolve("crm", upstream("X-Api-Key", "X-Tenant"), ctx)


@pytest.mark.anyio
async def test_same_values_share_a_session_different_values_do_not() -> None:
    a1 = await resolve(json.dumps({"X-Api-Key": "a"}))
    a2 = await resolve(json.dumps({"x-api-key": "a"}))
    b = await resolve(json.dumps({"X-Api-Key": "b"}))
    assert a1.headers == a2.headers == {"X-Api-Key": "a"}
    assert a1.identity == a2.identity
    assert b.identity != a1.identity
    secret = await resolve(json.dumps({"X-Api-Key": SECRET}))
    assert secret.identity is not None and secret.identity.startswith("forwarded:")
    assert SECRET not in secret.identity  # a digest of the values, not the values (it may reach logs)


@pytest.mark.anyio
async def test_nothing_forwarded_means_the_shared_session() -> None:
    assert await resolve(None) is SHARED
    assert await resolve(json.dumps({"jira": {"X-Api-Key": "a"}}), ("github", "jira")) is SHARED


@pytest.mark.anyio
async def test_refusals_become_outbound_refused_naming_the_upstream() -> None:
    with pytest.raises(OutboundRefused) as caught:
        await resolve(json.dumps({"Cookie": SECRET}))
    assert caught.value.upstream_id == "crm"
    assert "header 'Cookie' may not be forwarded" in caught.value.reason
    assert SECRET not in str(caught.value)
