"""The connect tool of a member the caller has not connected (catalog/view.py), and the list_changed a user's
own streams hear when they connect or revoke (relay/hub.py `connection_changed`). In process; the e2e tests in
tests/e2e/test_connect_flow.py run the same through the real gateway, OAuth server and upstream."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from manifold.catalog.lists import UpstreamLists
from manifold.catalog.view import VirtualServerView
from manifold.config.models import MemberConfig, VirtualServerConfig
from manifold.outbound.resolver import AuthRequired
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind
from manifold.relay.access import AllowAll
from manifold.relay.hub import Hub, Listener
from manifold.upstream.credential import SHARED, Outbound
from tests.unit.test_view import FakePool, tools

pytestmark = pytest.mark.anyio
JSON = dict[str, Any]


def view_of(pool: FakePool, *members: JSON, namespace: bool = True) -> VirtualServerView:
    config = VirtualServerConfig(namespace=namespace, members=[MemberConfig.model_validate(m) for m in members])
    return VirtualServerView("vs", config, UpstreamLists(pool, ttl_seconds=3600), "__")


def not_connected(*upstreams: str):  # the caller's credential: no connection to these upstreams
    async def credential(member: MemberConfig) -> Outbound:
        if member.upstream in upstreams:
            raise AuthRequired(member.upstream, f"https://gw.example/connect/{member.upstream}?t=x")
        return SHARED

    return credential


async def test_an_unconnected_member_is_one_connect_tool_and_calling_it_finds_the_member() -> None:
    pool = FakePool({"gh": {"tools": tools("create_issue")}, "notes": {"tools": tools("add")}})
    view = view_of(pool, {"upstream": "gh"}, {"upstream": "notes"})
    built = await view.get("tools", credential=not_connected("gh"))
    assert [i["name"] for i in built.items] == ["notes__add"]
    assert [(m, t["name"]) for m, t in built.connect_tools] == [("gh", "gh__connect_account")]
    (_, tool) = built.connect_tools[0]
    assert tool["description"].startswith("gh is not connected for you yet. Call this tool to get a link")
    assert tool["inputSchema"] == {"type": "object", "properties": {}}
    assert await view.resolve("tools", "gh__connect_account", not_connected("gh")) is None
    assert view.failed_member_for("tools", "gh__connect_account") == ("gh", "not connected")
    assert isinstance(view.failure_error("tools", "gh"), AuthRequired)

    connected = await view.get("tools", credential=not_connected())
    assert [i["name"] for i in connected.items] == ["gh__create_issue", "notes__add"] and not connected.connect_tools
    assert view.connect_tool_member("gh__connect_account") == "gh"  # called after connecting: it says so
    assert view.connect_tool_member("notes__connect_account") is None  # never needed connecting


async def test_without_namespacing_the_connect_tool_still_names_its_member() -> None:
    pool = FakePool({"gh": {"tools": tools("create_issue")}, "jira": {"tools": tools("search")}})
    view = view_of(pool, {"upstream": "gh"}, {"upstream": "jira"}, namespace=False)
    built = await view.get("tools", credential=not_connected("gh", "jira"))
    names = [t["name"] for _, t in built.connect_tools]
    assert names == ["gh__connect_account", "jira__connect_account"]
    assert view.failed_member_for("tools", "jira__connect_account") == ("jira", "not connected")


async def test_a_real_tool_of_the_same_name_keeps_it_and_the_connect_tool_is_renamed() -> None:
    # Without namespacing, another member's tool could be called exactly like the connect tool.
    pool = FakePool({"gh": {"tools": tools("x")}, "odd": {"tools": tools("gh__connect_account")}})
    view = view_of(pool, {"upstream": "gh"}, {"upstream": "odd"}, namespace=False)
    built = await view.get("tools", credential=not_connected("gh"))
    assert [i["name"] for i in built.items] == ["gh__connect_account"]
    ((member, tool),) = built.connect_tools
    assert member == "gh" and tool["name"] != "gh__connect_account"
    assert tool["name"].startswith("gh__connect_account_") and len(tool["name"]) <= 64
    assert view.failed_member_for("tools", tool["name"]) == ("gh", "not connected")


def principal(name: str) -> Principal:
    return Principal(kind=PrincipalKind.USER, name=name, credential=Credential(CredentialKind.API_KEY))


def heard(listener: Listener) -> list[str]:
    queue = listener.queue
    return [orjson.loads(queue._items[i])["method"] for i in range(len(queue))]


async def test_connecting_tells_only_that_users_streams_on_servers_holding_the_upstream() -> None:
    pool = FakePool({"gh": {"tools": tools("x")}, "notes": {"tools": tools("add")}})
    lists = UpstreamLists(pool, ttl_seconds=3600)
    with_gh = VirtualServerView(
        "eng", VirtualServerConfig(members=[MemberConfig(upstream="gh"), MemberConfig(upstream="notes")]), lists, "__"
    )
    without = VirtualServerView("notes", VirtualServerConfig(members=[MemberConfig(upstream="notes")]), lists, "__")
    hub = Hub(lists, AllowAll())
    alice = Listener(view=with_gh, kinds={"tools", "prompts", "resources"}, principal=principal("alice@corp.com"))
    alice_elsewhere = Listener(view=without, kinds={"tools"}, principal=principal("alice@corp.com"))
    alice_no_tools = Listener(view=with_gh, kinds={"resources"}, principal=principal("alice@corp.com"))
    bob = Listener(view=with_gh, kinds={"tools"}, principal=principal("bob@corp.com"))
    for listener in (alice, alice_elsewhere, alice_no_tools, bob):
        hub.add(listener)

    hub.connection_changed(principal("alice@corp.com").id, "gh")
    assert heard(alice) == ["notifications/tools/list_changed"]
    assert heard(alice_elsewhere) == heard(alice_no_tools) == heard(bob) == []
