"""Per-caller lists (catalog/lists.py, `lists: per_caller`): an upstream whose list depends on who asks is listed
with each caller's credential, and each caller is shown (and resolves names in) their own list only; shared ones
are listed once for everyone. In process: a fake pool answers each credential identity with its own tools."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from manifold.catalog import lists as lists_module
from manifold.catalog import view as view_module
from manifold.catalog.lists import UpstreamLists
from manifold.catalog.view import VirtualServerView
from manifold.config.loader import load_config
from manifold.config.models import MemberConfig, UpstreamConfig, VirtualServerConfig, per_caller_lists
from manifold.outbound.resolver import AuthRequired
from manifold.runtime.compose import compose
from manifold.upstream.credential import SHARED, Outbound, in_handshake_era
from manifold.upstream.pool import UpstreamPool

pytestmark = pytest.mark.anyio
JSON = dict[str, Any]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Session:
    capabilities: JSON = field(default_factory=lambda: {"tools": {}, "prompts": {}})
    instructions: str | None = None


@dataclass
class Pool:
    """tools/list answers `common` and `own_<identity>` (`own_shared` for no identity); counts what it is asked
    per (upstream, identity)."""

    asked: list[tuple[str, str | None]] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def session(self, upstream_id: str, outbound: Outbound = SHARED) -> Session:
        return Session()

    async def request(
        self, upstream_id: str, method: str, params: JSON | None = None, *, outbound: Outbound = SHARED, **_: Any
    ) -> JSON:
        self.asked.append((upstream_id, outbound.identity))
        if self.gate is not None:
            await self.gate.wait()
        key = "tools" if method == "tools/list" else "prompts"
        own = f"own_{outbound.identity or 'shared'}"
        return {"result": {key: [{"name": "common", "inputSchema": {}}, {"name": own, "inputSchema": {}}]}}


def lists_of(pool: Pool, *per_caller: str) -> UpstreamLists:
    return UpstreamLists(pool, ttl_seconds=3600, per_caller=lambda uid: uid in per_caller)


def names(items: list[JSON]) -> set[str]:
    return {t["name"] for t in items}


def who(identity: str | None) -> Outbound:
    return Outbound({"Authorization": f"Bearer {identity}"} if identity else {}, identity)


# ---- the cache ------------------------------------------------------------------------------------------------


async def test_a_per_caller_upstream_is_listed_with_each_callers_credential_and_shown_to_them_only() -> None:
    pool = Pool()
    lists = lists_of(pool, "zap")
    alice = await lists.get("zap", "tools", outbound=who("alice"))
    bob = await lists.get("zap", "tools", outbound=who("bob"))
    assert names(alice.items) == {"common", "own_alice"} and names(bob.items) == {"common", "own_bob"}
    assert alice.version != bob.version  # unique: a view never takes one caller's list for another's
    assert await lists.get("zap", "tools", outbound=who("alice")) is alice  # cached per caller
    # The handshake-era session's credential is the same caller's: the same list.
    assert await lists.get("zap", "tools", outbound=in_handshake_era(who("alice"), "alice|hs")) is alice
    assert sorted(pool.asked) == [("zap", "alice"), ("zap", "bob")]


async def test_a_shared_upstream_is_listed_once_for_everyone() -> None:
    pool = Pool()
    lists = lists_of(pool, "zap")
    first = await lists.get("fixed", "tools", outbound=who("alice"))
    assert await lists.get("fixed", "tools", outbound=who("bob")) is first
    assert names(first.items) == {"common", "own_alice"}  # the first caller's, shown to all (lists: shared)
    assert pool.asked == [("fixed", "alice")]


async def test_concurrent_readers_of_one_callers_list_share_one_fetch_and_others_get_their_own() -> None:
    pool = Pool(gate=asyncio.Event())
    lists = lists_of(pool, "zap")
    jobs = [asyncio.ensure_future(lists.get("zap", "tools", outbound=who(u))) for u in ("a", "a", "a", "b", "b")]
    await asyncio.sleep(0.01)
    pool.gate.set()
    got = await asyncio.gather(*jobs)
    assert sorted(pool.asked) == [("zap", "a"), ("zap", "b")]
    assert got[0] is got[1] is got[2] and got[3] is got[4] and got[0] is not got[3]


async def test_a_list_changed_refreshes_every_callers_list_of_the_upstream() -> None:
    pool = Pool()
    lists = lists_of(pool, "zap")
    for u in ("alice", "bob"):
        await lists.get("zap", "tools", outbound=who(u))
    lists.invalidate("zap", "tools")
    assert lists.announce("zap", "tools") and not lists.announce("zap", "tools")
    for u in ("alice", "bob"):
        await lists.get("zap", "tools", outbound=who(u))
    assert sorted(pool.asked) == [("zap", "alice"), ("zap", "alice"), ("zap", "bob"), ("zap", "bob")]
    assert lists.announce("zap", "tools")  # someone listed since: news again


async def test_per_caller_lists_are_bounded_least_recently_read_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lists_module, "CALLER_LISTS", 3)
    pool = Pool()
    lists = lists_of(pool, "zap")
    for u in ("a", "b", "c"):
        await lists.get("zap", "tools", outbound=who(u))
    await lists.get("zap", "tools", outbound=who("a"))  # read again: now the most recent
    await lists.get("zap", "tools", outbound=who("d"))  # one too many: b goes
    kept = {identity for (_, _, identity) in lists._entries}
    assert kept == {"a", "c", "d"}
    await lists.get("zap", "tools", outbound=who("b"))  # fetched again when b lists next
    assert pool.asked.count(("zap", "b")) == 2


async def test_per_caller_lists_unread_for_long_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = Pool()
    lists = lists_of(pool, "zap")
    await lists.get("zap", "tools", outbound=who("old"))
    lists.entry("zap", "tools", "old").used_at -= lists_module.CALLER_LIST_IDLE + 1
    await lists.get("zap", "tools", outbound=who("new"))
    assert {identity for (_, _, identity) in lists._entries} == {"new"}


async def test_reconfigured_drops_the_lists_of_the_other_sharing() -> None:
    pool = Pool()
    per_caller = {"zap"}
    lists = UpstreamLists(pool, ttl_seconds=3600, per_caller=lambda uid: uid in per_caller)
    await lists.get("zap", "tools", outbound=who("alice"))
    per_caller.clear()  # the admin set `lists: shared`
    lists.reconfigured("zap")
    assert not lists._entries
    shared = await lists.get("zap", "tools", outbound=who("bob"))
    assert await lists.get("zap", "tools", outbound=who("alice")) is shared


# ---- views ----------------------------------------------------------------------------------------------------


def view_of(lists: UpstreamLists, *members: JSON) -> VirtualServerView:
    config = VirtualServerConfig(members=[MemberConfig.model_validate(m) for m in members])
    return VirtualServerView("vs", config, lists, "__")


def credential_of(identity: str | None, refused: frozenset[str] = frozenset()) -> Any:
    async def credential(m: MemberConfig) -> Outbound:
        if m.upstream in refused:
            raise AuthRequired(m.upstream, "https://gw.test/connect")
        return who(identity) if m.upstream == "zap" else SHARED

    return credential


async def test_a_view_builds_and_resolves_each_callers_own_list() -> None:
    pool = Pool()
    view = view_of(lists_of(pool, "zap"), {"upstream": "zap"}, {"upstream": "fixed"})
    alice, bob = credential_of("alice"), credential_of("bob")
    built_a = await view.get("tools", credential=alice)
    built_b = await view.get("tools", credential=bob)
    assert names(built_a.items) == {"zap__common", "zap__own_alice", "fixed__common", "fixed__own_shared"}
    assert names(built_b.items) == {"zap__common", "zap__own_bob", "fixed__common", "fixed__own_shared"}
    assert await view.get("tools", credential=alice) is built_a  # each caller's kept
    target = await view.resolve("tools", "zap__own_alice", alice)
    assert target is not None and target.name == "own_alice"
    assert await view.resolve("tools", "zap__own_alice", bob) is None  # not bob's tool
    target, listed = await view.lookup("tools", "zap__own_bob", bob)
    assert target is not None and listed is built_b
    assert pool.asked.count(("fixed", None)) == 1


async def test_a_view_of_shared_members_works_out_no_credential_to_resolve() -> None:
    pool = Pool()
    view = view_of(lists_of(pool), {"upstream": "fixed"})
    asked: list[str] = []

    async def credential(m: MemberConfig) -> Outbound:
        asked.append(m.member_id)
        return SHARED

    await view.get("tools", credential=credential)
    asked.clear()
    assert await view.resolve("tools", "fixed__common", credential) is not None
    assert asked == []  # a dict lookup, as before


async def test_callers_without_a_credential_get_the_failure_not_another_callers_list() -> None:
    pool = Pool()
    view = view_of(lists_of(pool, "zap"), {"upstream": "zap"})
    await view.get("tools", credential=credential_of("alice"))
    carol = credential_of("carol", refused=frozenset({"zap"}))
    built = await view.get("tools", credential=carol)
    assert built.items == [] and isinstance(built.errors.get("zap"), AuthRequired)
    target, listed = await view.lookup("tools", "zap__own_alice", carol)
    assert target is None
    assert view.failed_member_for("tools", "zap__own_alice", listed) == ("zap", "not connected")


async def test_a_call_resolves_each_members_credential_once_even_when_it_fails() -> None:
    """Whose list it is, then the list itself: one credential each (a refused token exchange is one request)."""
    pool = Pool()
    view = view_of(lists_of(pool, "zap"), {"upstream": "zap"})
    asked: list[str] = []

    async def refused(m: MemberConfig) -> Outbound:
        asked.append(m.member_id)
        raise AuthRequired(m.upstream, "https://gw.test/connect")

    target, listed = await view.lookup("tools", "zap__own_carol", refused)
    assert target is None and listed is not None and "zap" in listed.errors
    assert asked == ["zap"]


async def test_a_view_follows_an_upstream_switched_to_shared_lists() -> None:
    pool = Pool()
    per_caller = {"zap"}
    view = view_of(UpstreamLists(pool, 3600, per_caller=lambda uid: uid in per_caller), {"upstream": "zap"})
    assert names((await view.get("tools", credential=credential_of("alice"))).items) == {
        "zap__common",
        "zap__own_alice",
    }
    per_caller.clear()
    view._lists.reconfigured("zap")
    bob = await view.get("tools", credential=credential_of("bob"))
    assert await view.get("tools", credential=credential_of("alice")) is bob  # one list for everyone now
    assert names(bob.items) == {"zap__common", "zap__own_bob"}


def test_lists_default_to_per_caller_for_the_auth_modes_that_give_each_caller_a_credential() -> None:
    def upstream(auth: JSON, **extra: Any) -> UpstreamConfig:
        return UpstreamConfig.model_validate({"transport": "http", "url": "http://u.test/mcp", "auth": auth, **extra})

    exchange = {"mode": "exchange", "token_endpoint": "https://idp.test/token", "audience": "u", "client_id": "gw"}
    per_caller = [
        {"mode": "oauth"},
        {"mode": "passthrough", "audience": "u"},
        {"mode": "forwarded", "allow": ["X-Tenant"]},
        exchange,
    ]
    shared = [{"mode": "none"}, {"mode": "static", "bearer": "t"}]
    assert all(per_caller_lists(upstream(a)) for a in per_caller)
    assert not any(per_caller_lists(upstream(a)) for a in shared)
    assert not per_caller_lists(upstream({"mode": "static", "bearer": "t"}, sessions="per_user"))
    assert not per_caller_lists(upstream({"mode": "oauth"}, lists="shared"))
    assert per_caller_lists(upstream({"mode": "static", "bearer": "t"}, lists="per_caller"))


@dataclass
class ResourcePool(Pool):
    """resources/list answers `file:///<identity>/notes` (and `file:///common` for everyone)."""

    async def session(self, upstream_id: str, outbound: Outbound = SHARED) -> Session:
        return Session(capabilities={"resources": {}})

    async def request(
        self, upstream_id: str, method: str, params: JSON | None = None, *, outbound: Outbound = SHARED, **_: Any
    ) -> JSON:
        self.asked.append((upstream_id, outbound.identity))
        if method == "resources/templates/list":
            return {"result": {"resourceTemplates": []}}
        own = f"file:///{outbound.identity or 'shared'}/notes"
        return {"result": {"resources": [{"uri": "file:///common", "name": "c"}, {"uri": own, "name": "o"}]}}


async def test_without_namespacing_a_uri_resolves_in_the_callers_own_resource_lists() -> None:
    """Two members, names unchanged: a URI belongs to the member that listed it, in the caller's own lists. The
    lists built last were another caller's (bob's), where alice's URI is not: it resolved to nothing for her."""
    pool = ResourcePool()
    view = view_of(lists_of(pool, "zap"), {"upstream": "zap", "resources": True}, {"upstream": "fixed"})
    view.namespace = False
    alice, bob = credential_of("alice"), credential_of("bob")
    await view.get("resources", credential=alice)
    await view.get("resources", credential=bob)  # built last
    target = await view.resolve_uri_for("file:///alice/notes", alice)
    assert target is not None and (target.member_id, target.name) == ("zap", "file:///alice/notes")
    assert await view.resolve_uri_for("file:///alice/notes", bob) is None  # not bob's resource
    assert await view.resolve_uri_for("file:///bob/notes", bob) is not None
    # A caller who never listed: their own lists are built for them first.
    carol = credential_of("carol")
    target = await view.resolve_uri_for("file:///carol/notes", carol)
    assert target is not None and target.member_id == "zap"
    # Shared members only: the lists built last, no credential worked out (as before).
    shared = view_of(lists_of(ResourcePool()), {"upstream": "fixed"})
    shared.namespace = False
    await shared.get("resources")
    target = await shared.resolve_uri_for("file:///shared/notes", alice)
    assert target is not None and target.member_id == "fixed"


async def test_callers_lists_share_the_shared_members_items_not_a_copy_each() -> None:
    """A view with a per-caller member builds a list per caller (up to MAX_BUILT): each held its own copy of every
    shared member's exposed items (5,000 shared tools: ~90 MB over 256 callers before any search index, and a
    10 ms build each). The shared member's items are made once per list its upstream sent."""
    pool = Pool()
    view = view_of(lists_of(pool, "zap"), {"upstream": "zap"}, {"upstream": "fixed"})
    built_a = await view.get("tools", credential=credential_of("alice"))
    built_b = await view.get("tools", credential=credential_of("bob"))
    fixed_a = [(i, t) for i, t in zip(built_a.items, built_a.item_targets, strict=True) if t.member_id == "fixed"]
    fixed_b = [(i, t) for i, t in zip(built_b.items, built_b.item_targets, strict=True) if t.member_id == "fixed"]
    assert len(fixed_a) == 2 and all(a[0] is b[0] and a[1] is b[1] for a, b in zip(fixed_a, fixed_b, strict=True))
    # Not the per-caller member's (each caller's own), and a new list of the shared member is exposed anew.
    assert built_a.targets["zap__common"] is not built_b.targets["zap__common"]
    view._lists.invalidate("fixed")
    built_c = await view.get("tools", credential=credential_of("carol"))
    assert built_c.targets["fixed__common"] is not built_a.targets["fixed__common"]
    assert names(built_c.items) == {"zap__common", "zap__own_carol", "fixed__common", "fixed__own_shared"}


async def test_search_indexes_are_kept_for_the_lists_searched_last_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tool search makes an index per built list, so one per caller with a per-caller member: a few MB each for
    thousands of tools, and up to MAX_BUILT lists kept (5,000 tools, 256 callers: ~650 MB). At most MAX_INDEXES
    are kept; a list searched again after its index was dropped gets a new one."""
    monkeypatch.setattr(view_module, "MAX_INDEXES", 2, raising=False)
    pool = Pool()
    view = view_of(lists_of(pool, "zap"), {"upstream": "zap"}, {"upstream": "fixed"})
    built = {u: await view.get("tools", credential=credential_of(u)) for u in ("a", "b", "c")}
    for u in ("a", "b", "a", "c"):
        assert (await view.index(built[u])).size == 4
    assert built["b"].index is None and built["a"].index is not None and built["c"].index is not None
    assert (await view.index(built["b"])).size == 4 and built["a"].index is None


async def test_a_user_who_connects_another_account_is_listed_again() -> None:
    """The list identity of an `oauth` credential is the user (`oauth:<user>`), whichever account they connect:
    a user who revoked one account and connected another was shown (and resolved calls in) the first account's
    list until the TTL ran out (for good with `tool_list_ttl_seconds: 0`). Connecting or revoking makes that
    user's lists of the upstream stale, nobody else's."""
    pool = Pool()
    lists = lists_of(pool, "zap")
    alice, own_alice, bob = who("oauth:alice"), who("oauth:alice|caller:alice"), who("oauth:bob")
    for outbound in (alice, own_alice, bob):
        await lists.get("zap", "tools", outbound=outbound)
    pool.asked.clear()
    lists.connection_changed("alice", "zap")
    lists.connection_changed("alice", "other")  # another upstream: nothing of zap's
    for outbound in (alice, own_alice, bob):
        await lists.get("zap", "tools", outbound=outbound)
    assert sorted(pool.asked) == [("zap", "oauth:alice"), ("zap", "oauth:alice|caller:alice")]


def test_the_gateway_refreshes_a_users_lists_when_they_connect_or_revoke(tmp_path: Path) -> None:
    """Wired in compose: what OAuthFlows tells when a connection is stored or removed reaches the lists."""
    (tmp_path / "manifold.yaml").write_text(
        f"gateway:\n  state_dir: {tmp_path / 'state'}\n"
        "upstreams:\n  zap:\n    transport: http\n    url: http://127.0.0.1:9/mcp\n    auth:\n      mode: oauth\n"
    )
    runtime = compose(
        load_config(tmp_path / "manifold.yaml"), dev_key="dev-key-for-tests-0123456789", public_base="http://gw.test"
    )
    entry = runtime.lists.entry("zap", "tools", "oauth:alice")
    entry.stale = False
    runtime.flows.changed("alice", "zap")
    assert entry.stale


async def test_views_follow_an_upstreams_new_sharing_from_the_moment_its_configuration_changes() -> None:
    """The pool takes an upstream's new configuration, then closes its sessions (a stdio process may take seconds
    to end); the catalog swap said `reconfigured` only after. Meanwhile a view kept the old per-caller members
    while `lists.identity` followed the new configuration: an upstream made per caller (static to oauth) had one
    caller's own list built under the key everyone shares, where another caller's tools/call resolved in it."""
    url = "http://127.0.0.1:9/mcp"
    static = UpstreamConfig.model_validate({"transport": "http", "url": url, "auth": {"mode": "static", "bearer": "t"}})
    oauth = UpstreamConfig.model_validate({"transport": "http", "url": url, "auth": {"mode": "oauth"}})
    pool = UpstreamPool({"zap": static})
    lists = UpstreamLists(
        pool, 3600, per_caller=lambda uid: (u := pool.config(uid)) is not None and per_caller_lists(u)
    )
    pool.on_reconfigured = lists.reconfigured  # as compose wires it
    view = view_of(lists, {"upstream": "zap"})
    assert view._per_caller("tools") == []
    closing = asyncio.Event()

    async def slow_close(upstream_id: str) -> None:
        await closing.wait()

    pool._close_sessions_of = slow_close  # type: ignore[method-assign]
    replacing = asyncio.ensure_future(pool.put_upstream("zap", oauth))
    await asyncio.sleep(0.01)
    assert not replacing.done()
    assert [m.member_id for m in view._per_caller("tools")] == ["zap"]  # while its old sessions close
    closing.set()
    assert await replacing
    assert await pool.remove_upstream("zap")
    assert view._per_caller("tools") == []
    await pool.aclose()


def test_a_list_changed_walks_only_its_upstreams_lists() -> None:
    """Every caller's lists of every per-caller upstream are entries of one cache (50 upstreams at the bound:
    51,200): each list_changed walked them all, ~0.9 ms, so an upstream sending a thousand at once held the event
    loop for about a second. It walks its own upstream's entries only; the others are left as they were."""
    lists = lists_of(Pool(), *(f"u{n}" for n in range(50)))
    for n in range(50):
        for i in range(64):
            for kind in ("tools", "prompts"):
                lists.entry(f"u{n}", kind, f"id{i}").stale = False

    class Counting(dict):  # the cache's entries, counting how many are walked
        walked = 0

        def items(self):  # type: ignore[override]
            for item in super().items():
                Counting.walked += 1
                yield item

        def __iter__(self):  # type: ignore[override]
            for key in super().__iter__():
                Counting.walked += 1
                yield key

    lists._entries = Counting(lists._entries)  # type: ignore[assignment]
    lists.invalidate("u0", "tools")
    assert Counting.walked <= 128
    assert all(e.stale == (k[0] == "u0" and k[1] == "tools") for k, e in dict.items(lists._entries))
    lists.connection_changed("id1", "u1")
    lists.reconfigured("u2")
    assert Counting.walked <= 3 * 128


async def test_a_uri_of_a_shared_list_resolves_for_a_caller_when_the_lists_built_last_left_its_member_out() -> None:
    """`lists: shared` on an oauth upstream, names unchanged: the resource lists built last were those of a
    caller who has not connected it (the member left out), and a connected caller's resources/read of its URI
    answered 'Resource not found'. Such a list is built for the caller asking."""
    pool = ResourcePool()
    view = view_of(lists_of(pool), {"upstream": "zap", "resources": True}, {"upstream": "fixed", "resources": True})
    view.namespace = False
    alice, carol = credential_of("alice"), credential_of("carol", refused=frozenset({"zap"}))
    await view.get("resources", credential=alice)
    await view.get("resources", credential=carol)  # built last, without zap
    target = await view.resolve_uri_for("file:///alice/notes", alice)  # zap's shared list, fetched with alice's
    assert target is not None and target.member_id == "zap"
    # (carol resolves it now too, in everyone's list: her read goes with her credential, which asks her to connect)
