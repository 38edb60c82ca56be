"""A virtual server's merged catalog (catalog/view.py) over the shared list cache (catalog/lists.py), in
process: the upstreams are a fake pool that answers list requests from a table and counts them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from manifold.catalog.lists import UpstreamLists
from manifold.catalog.view import Target, VirtualServerView
from manifold.config.models import MemberConfig, VirtualServerConfig
from manifold.upstream.base import UpstreamError
from manifold.upstream.credential import SHARED, Outbound, in_handshake_era

pytestmark = pytest.mark.anyio

JSON = dict[str, Any]
LIST_KEYS = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}


@dataclass
class FakeSession:
    capabilities: JSON
    instructions: str | None = None


@dataclass
class FakePool:
    """What UpstreamLists needs of the pool: `session()` for the capabilities and `request()` for the lists."""

    lists: dict[str, dict[str, list[JSON]]] = field(default_factory=dict)  # upstream -> list key -> items
    down: dict[str, str] = field(default_factory=dict)  # upstream -> why it cannot be reached
    refusing: dict[str, str] = field(default_factory=dict)  # upstream -> its JSON-RPC error message for lists
    asked: list[tuple[str, str]] = field(default_factory=list)  # (upstream, method) in order

    async def session(self, upstream_id: str, outbound: Outbound = SHARED) -> FakeSession:
        if upstream_id in self.down:
            raise UpstreamError(upstream_id, self.down[upstream_id])
        return FakeSession({"tools": {}, "prompts": {}, "resources": {}})

    async def request(
        self,
        upstream_id: str,
        method: str,
        params: JSON | None = None,
        *,
        sink: Any = None,
        outbound: Outbound = SHARED,
    ) -> JSON:
        self.asked.append((upstream_id, method))
        if upstream_id in self.refusing:
            return {"error": {"code": -32603, "message": self.refusing[upstream_id]}}
        key = LIST_KEYS[method]
        return {"result": {key: self.lists.get(upstream_id, {}).get(key, [])}}

    def list_requests(self, method: str = "tools/list") -> int:
        return sum(1 for _, m in self.asked if m == method)


def tools(*names: str) -> list[JSON]:
    return [{"name": n, "description": f"upstream {n}", "inputSchema": {"type": "object"}} for n in names]


def view_of(
    pool: FakePool,
    *members: JSON,
    namespace: bool = True,
    separator: str | None = None,
    lists: UpstreamLists | None = None,
) -> VirtualServerView:
    config = VirtualServerConfig(
        namespace=namespace, separator=separator, members=[MemberConfig.model_validate(m) for m in members]
    )
    return VirtualServerView("vs", config, lists or UpstreamLists(pool, ttl_seconds=3600), "__")


async def names(view: VirtualServerView, kind: str = "tools") -> list[str]:
    key = {"tools": "name", "prompts": "name", "resources": "uri", "resource_templates": "uriTemplate"}[kind]
    return [item[key] for item in (await view.get(kind)).items]


# ---- names ----------------------------------------------------------------------------------------------------


async def test_tools_are_namespaced_by_member_id_in_member_then_upstream_order() -> None:
    pool = FakePool({"alpha": {"tools": tools("echo", "add")}, "beta": {"tools": tools("echo")}})
    view = view_of(pool, {"upstream": "beta", "id": "b"}, {"upstream": "alpha"})
    assert await names(view) == ["b__echo", "alpha__echo", "alpha__add"]


async def test_the_order_does_not_depend_on_which_upstream_answers_first() -> None:
    pool = FakePool({"alpha": {"tools": tools("z", "a")}, "beta": {"tools": tools("m")}})
    first = await names(view_of(pool, {"upstream": "alpha"}, {"upstream": "beta"}))
    again = await names(view_of(pool, {"upstream": "alpha"}, {"upstream": "beta"}))
    assert first == again == ["alpha__z", "alpha__a", "beta__m"]


async def test_a_virtual_server_separator_replaces_the_gateway_default() -> None:
    pool = FakePool({"alpha": {"tools": tools("echo")}})
    assert await names(view_of(pool, {"upstream": "alpha"}, separator="_")) == ["alpha_echo"]


async def test_without_namespacing_names_stay_as_the_upstream_gave_them() -> None:
    pool = FakePool({"alpha": {"tools": tools("echo")}, "beta": {"tools": tools("whoami")}})
    view = view_of(pool, {"upstream": "alpha"}, {"upstream": "beta"}, namespace=False)
    assert await names(view) == ["echo", "whoami"]
    assert await view.resolve("tools", "whoami") == Target("beta", "beta", "whoami")


async def test_globs_select_and_hide_removes_after_selection() -> None:
    pool = FakePool({"alpha": {"tools": tools("whoami", "whois", "who_slow", "echo")}})
    view = view_of(pool, {"upstream": "alpha", "tools": ["who*"], "hide": ["*_slow"]})
    assert await names(view) == ["alpha__whoami", "alpha__whois"]


async def test_an_alias_replaces_the_name_before_the_prefix() -> None:
    pool = FakePool({"alpha": {"tools": tools("add", "echo")}})
    view = view_of(pool, {"upstream": "alpha", "aliases": {"add": "plus"}})
    assert await names(view) == ["alpha__plus", "alpha__echo"]
    assert await view.resolve("tools", "alpha__plus") == Target("alpha", "alpha", "add")
    assert await view.resolve("tools", "alpha__add") is None


async def test_a_description_override_changes_only_the_description() -> None:
    pool = FakePool({"alpha": {"tools": tools("echo", "add")}})
    view = view_of(pool, {"upstream": "alpha", "descriptions": {"echo": "Echo, via the gateway"}})
    items = {item["name"]: item for item in (await view.get("tools")).items}
    assert items["alpha__echo"]["description"] == "Echo, via the gateway"
    assert items["alpha__echo"]["inputSchema"] == {"type": "object"}
    assert items["alpha__add"]["description"] == "upstream add"
    assert pool.lists["alpha"]["tools"][0]["description"] == "upstream echo"  # the shared list is untouched


async def test_a_name_too_long_or_with_odd_characters_is_shortened_and_still_resolves() -> None:
    long_name = "x" * 70
    pool = FakePool({"alpha": {"tools": tools(long_name, "has.dot")}})
    view = view_of(pool, {"upstream": "alpha"})
    exposed = await names(view)
    assert all(len(n) <= 64 and "." not in n for n in exposed)
    resolved = [await view.resolve("tools", n) for n in exposed]
    assert resolved == [Target("alpha", "alpha", long_name), Target("alpha", "alpha", "has.dot")]


async def test_two_members_exposing_the_same_name_are_both_left_out_and_reported() -> None:
    pool = FakePool({"alpha": {"tools": tools("echo", "add")}, "beta": {"tools": tools("echo")}})
    view = view_of(pool, {"upstream": "alpha"}, {"upstream": "beta"}, namespace=False)
    assert await names(view) == ["add"]
    assert await view.resolve("tools", "echo") is None
    [collision] = view.collisions["tools"]
    assert "member 'alpha'" in collision and "member 'beta'" in collision


# ---- resolving ------------------------------------------------------------------------------------------------


async def test_resolve_maps_an_exposed_name_back_to_member_upstream_and_original_name() -> None:
    pool = FakePool({"kitchen": {"tools": tools("echo"), "prompts": [{"name": "greet"}]}})
    view = view_of(pool, {"upstream": "kitchen", "id": "k"})
    assert await view.resolve("tools", "k__echo") == Target("k", "kitchen", "echo")
    assert await view.resolve("prompts", "k__greet") == Target("k", "kitchen", "greet")
    assert await view.resolve("tools", "k__nope") is None


async def test_resolving_a_known_name_uses_the_built_list_without_asking_the_upstream() -> None:
    pool = FakePool({"alpha": {"tools": tools("echo")}})
    view = view_of(pool, {"upstream": "alpha"})
    await view.get("tools")
    for _ in range(3):
        assert await view.resolve("tools", "alpha__echo") == Target("alpha", "alpha", "echo")
    assert pool.list_requests() == 1


async def test_after_list_changed_a_known_name_does_not_wait_and_a_new_name_is_found() -> None:
    pool = FakePool({"alpha": {"tools": tools("echo")}})
    lists = UpstreamLists(pool, ttl_seconds=3600)
    view = view_of(pool, {"upstream": "alpha"}, lists=lists)
    await view.get("tools")
    pool.lists["alpha"]["tools"] = tools("echo", "brand_new")
    lists.invalidate("alpha", "tools")  # what the upstream's list_changed does
    assert await view.resolve("tools", "alpha__echo") == Target("alpha", "alpha", "echo")
    assert pool.list_requests() == 1  # a known name resolves against the last built list
    assert await view.resolve("tools", "alpha__brand_new") == Target("alpha", "alpha", "brand_new")
    assert pool.list_requests() == 2


# ---- resources ------------------------------------------------------------------------------------------------


async def test_resource_uris_carry_the_member_in_their_scheme_and_unwrap_back() -> None:
    pool = FakePool(
        {
            "alpha": {
                "resources": [{"uri": "kitchen://readme", "name": "readme"}],
                "resourceTemplates": [{"uriTemplate": "kitchen://items/{id}", "name": "item"}],
            },
            "beta": {"resources": [{"uri": "kitchen://readme", "name": "readme"}]},
        }
    )
    view = view_of(pool, {"upstream": "alpha"}, {"upstream": "beta", "id": "b"})
    assert await names(view, "resources") == ["kitchen+alpha://readme", "kitchen+b://readme"]
    assert await names(view, "resource_templates") == ["kitchen+alpha://items/{id}"]
    assert view.resolve_uri("kitchen+b://readme") == Target("b", "beta", "kitchen://readme")
    assert view.resolve_uri("kitchen+alpha://items/7") == Target("alpha", "alpha", "kitchen://items/7")
    assert view.expose_uri("b", "kitchen://items/7") == "kitchen+b://items/7"
    assert view.resolve_uri("kitchen+nobody://readme") is None
    assert view.resolve_uri("kitchen://readme") is None  # not a URI this server exposes


async def test_a_member_without_resources_neither_lists_nor_resolves_them() -> None:
    pool = FakePool({"alpha": {"resources": [{"uri": "kitchen://readme", "name": "readme"}]}})
    view = view_of(pool, {"upstream": "alpha", "resources": False})
    assert await names(view, "resources") == []
    assert view.resolve_uri("kitchen+alpha://readme") is None
    assert pool.list_requests("resources/list") == 0


# ---- failures -------------------------------------------------------------------------------------------------


async def test_a_member_whose_list_cannot_be_fetched_is_left_out_and_reported() -> None:
    pool = FakePool({"alpha": {"tools": tools("echo")}}, down={"gh": "refused the connection"})
    view = view_of(pool, {"upstream": "alpha"}, {"upstream": "gh"})
    built = await view.get("tools")
    assert [item["name"] for item in built.items] == ["alpha__echo"]
    assert built.failures == {"gh": "refused the connection"}
    assert view.failed_member_for("tools", "gh__create_issue") == ("gh", "refused the connection")
    assert view.failed_member_for("tools", "alpha__nope") is None  # alpha answered: unknown, not down
    error = view.failure_error("tools", "gh")
    assert isinstance(error, UpstreamError) and error.upstream_id == "gh"
    assert view.failure_error("tools", "alpha") is None
    assert await view.resolve("tools", "gh__create_issue") is None


async def test_a_member_that_answers_its_list_with_an_error_is_left_out_naming_the_error() -> None:
    pool = FakePool({"alpha": {"tools": tools("echo")}}, refusing={"jira": "backend down"})
    view = view_of(pool, {"upstream": "alpha"}, {"upstream": "jira"})
    assert await names(view) == ["alpha__echo"]
    assert view.failed_member_for("tools", "jira__search") == ("jira", "tools/list failed: backend down")


async def test_a_member_that_comes_back_is_listed_again() -> None:
    pool = FakePool({"gh": {"tools": tools("create_issue")}}, down={"gh": "refused the connection"})
    view = view_of(pool, {"upstream": "gh"})
    assert await names(view) == []
    del pool.down["gh"]
    assert await names(view) == ["gh__create_issue"]
    assert view.failed_member_for("tools", "gh__create_issue") is None


# ---- rebuilding -----------------------------------------------------------------------------------------------


async def test_the_merged_list_is_rebuilt_only_when_a_member_list_version_changes() -> None:
    pool = FakePool({"alpha": {"tools": tools("echo")}, "beta": {"tools": tools("add")}})
    lists = UpstreamLists(pool, ttl_seconds=3600)
    view = view_of(pool, {"upstream": "alpha"}, {"upstream": "beta"}, lists=lists)
    first = await view.get("tools")
    assert await view.get("tools") is first  # nothing changed: the same built list, no upstream asked
    assert pool.list_requests() == 2

    pool.lists["beta"]["tools"] = tools("add", "sub")
    lists.invalidate("beta", "tools")  # what a list_changed from beta does
    second = await view.get("tools")
    assert second is not first
    assert [item["name"] for item in second.items] == ["alpha__echo", "beta__add", "beta__sub"]
    assert pool.asked[2:] == [("beta", "tools/list")]  # only the member that changed was asked again
    assert await view.get("tools") is second


async def test_a_tool_list_the_gateways_database_cannot_pin_is_said_to_be_the_databases_failure() -> None:
    """Was (resilience review): with the database unwritable, a healthy upstream's member was left out with the
    reason "OperationalError", as if the upstream had failed."""
    from sqlalchemy.exc import OperationalError

    from manifold.catalog.lists import ListError

    class BrokenPins:
        async def review(self, upstream_id: str, tools: list[JSON], instructions: str | None = None) -> list[JSON]:
            raise OperationalError("INSERT INTO tool_pins ...", {}, Exception("database or disk is full"))

    lists = UpstreamLists(FakePool({"b": {"tools": tools("x1")}}), 60, BrokenPins())
    with pytest.raises(ListError) as caught:
        await lists.get("b", "tools")
    assert caught.value.reason == (
        "its tools could not be checked against their pins: the gateway's database failed (OperationalError)"
    )


async def test_a_shared_lists_failure_is_the_servers_whichever_era_listed_it() -> None:
    """A 2025-11-25 caller's credential names its own handshake-era session, but lists go through the upstream's
    own-era session, shared: the failure is everyone's and /healthz shows it (it was hidden when such a caller
    happened to list last: review)."""
    pool = FakePool(refusing={"a": "broken for everyone"})
    view = view_of(pool, {"upstream": "a"})

    async def handshake_era(member: MemberConfig) -> Outbound:
        return in_handshake_era(SHARED, "caller|caller:alice")

    await view.get("tools", credential=handshake_era)
    assert view.last_failures == {"a": "tools/list failed: broken for everyone"}
