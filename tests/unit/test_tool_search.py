"""Tool search (a virtual server's `tool_search`; relay/tool_search.py, catalog/search.py), in process: the
relay's handlers over a real `VirtualServerView`, a stand-in pool (tests/unit/test_relay_handlers.py), and the
configuration checks. The e2e test with real processes and a real MCP client is tests/e2e/test_tool_search.py."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from manifold.admin.catalog import Kind
from manifold.catalog.lists import UpstreamLists
from manifold.catalog.search import ToolIndex, words
from manifold.catalog.view import VirtualServerView
from manifold.config.check import unmatched_names
from manifold.config.loader import load_config
from manifold.config.models import VirtualServerConfig
from manifold.outbound.resolver import CredentialResolver
from manifold.protocol import INVALID_PARAMS, TOOLS_CALL, TOOLS_LIST, Era
from manifold.relay.access import AllowAll, NoAudit
from manifold.relay.call import Call
from manifold.relay.handlers import Gateway
from manifold.relay.hub import Hub, Listener
from manifold.relay.jsonrpc import RpcError
from manifold.relay.sessions import ClientSession
from tests.unit.test_config import MAIN, problems, write
from tests.unit.test_connect_tools import not_connected
from tests.unit.test_console_servers import Editor, editor  # noqa: F401, F811 (the editor fixture)
from tests.unit.test_relay_handlers import DenyNames, StandInPool, call_on, replying

JSON = dict[str, Any]

GITHUB = [
    {"name": "create_issue", "description": "Open a new issue in a repository.", "inputSchema": {"type": "object"}},
    {"name": "list_pulls", "description": "List the pull requests of a repository.", "inputSchema": {"type": "object"}},
    {"name": "delete_repo", "description": "Delete a repository for good.", "inputSchema": {"type": "object"}},
]
NOTES = [
    {
        "name": "add_note",
        "description": "Write a note into the notebook.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
    },
    {"name": "weather", "description": "Today's forecast: temperature and rain.", "inputSchema": {"type": "object"}},
]


def searching(
    pool: StandInPool, *members: JSON, access: AllowAll | None = None, **search: Any
) -> tuple[Gateway, VirtualServerView]:
    lists = UpstreamLists(pool, ttl_seconds=3600)
    config = VirtualServerConfig.model_validate({"members": list(members), "tool_search": search or True})
    view = VirtualServerView("vs", config, lists, "__")
    seam = access or AllowAll()
    return Gateway(pool, Hub(lists, seam), seam, NoAudit(), CredentialResolver()), view


def pool() -> StandInPool:
    return StandInPool({"github": {"tools": GITHUB}, "notes": {"tools": NOTES}})


async def search(
    gateway: Gateway, view: VirtualServerView, query: str, era: Era = Era.HANDSHAKE, **more: Any
) -> list[str]:
    reply = await gateway.handle(
        call_on(view, era), TOOLS_CALL, {"name": "search_tools", "arguments": {"query": query, **more}}
    )
    result = reply["result"]
    assert not result.get("isError"), result
    names = [t["name"] for t in result["structuredContent"]["tools"]]
    assert orjson.loads(result["content"][0]["text"]) == result["structuredContent"]  # the same, as text
    return names


pytestmark = pytest.mark.anyio


# ---- tools/list and tools/call ----------------------------------------------------------------------------


async def test_tools_list_shows_only_the_search_tools() -> None:
    gateway, view = searching(pool(), {"upstream": "github"}, {"upstream": "notes"})
    for era in Era:
        reply = await gateway.handle(call_on(view, era), TOOLS_LIST, {})
        assert [t["name"] for t in reply["result"]["tools"]] == ["search_tools", "call_tool"]


async def test_a_search_finds_a_tool_by_a_word_of_its_description_with_its_schema() -> None:
    gateway, view = searching(pool(), {"upstream": "github"}, {"upstream": "notes"})
    assert (await search(gateway, view, "forecast"))[0] == "notes__weather"
    reply = await gateway.handle(
        call_on(view), TOOLS_CALL, {"name": "search_tools", "arguments": {"query": "notebook"}}
    )
    found = reply["result"]["structuredContent"]["tools"][0]
    assert found == {**NOTES[0], "name": "notes__add_note"}  # name, description, input schema as listed


async def test_words_of_the_name_count_and_plurals_match() -> None:
    gateway, view = searching(pool(), {"upstream": "github"}, {"upstream": "notes"})
    assert (await search(gateway, view, "issues"))[0] == "github__create_issue"
    assert (await search(gateway, view, "pull requests repository"))[0] == "github__list_pulls"
    assert await search(gateway, view, "xylophone") == []


async def test_max_results_and_limit_bound_the_answer() -> None:
    gateway, view = searching(pool(), {"upstream": "github"}, max_results=2)
    assert len(await search(gateway, view, "repository")) == 2
    assert len(await search(gateway, view, "repository", limit=1)) == 1
    assert len(await search(gateway, view, "repository", limit=50)) == 2


async def test_a_found_tool_is_callable_by_its_name_and_through_call_tool() -> None:
    stand_in = pool()
    stand_in.answers[("github", TOOLS_CALL)] = replying({"content": [{"type": "text", "text": "opened"}]})
    gateway, view = searching(stand_in, {"upstream": "github"})
    direct = await gateway.handle(call_on(view), TOOLS_CALL, {"name": "github__create_issue", "arguments": {"t": 1}})
    meta = await gateway.handle(
        call_on(view, Era.MODERN),
        TOOLS_CALL,
        {"name": "call_tool", "arguments": {"name": "github__create_issue", "arguments": {"t": 2}}},
    )
    assert direct["result"]["content"][0]["text"] == meta["result"]["content"][0]["text"] == "opened"
    assert [(u, p["name"], p["arguments"]) for u, _, p in stand_in.sent] == [
        ("github", "create_issue", {"t": 1}),
        ("github", "create_issue", {"t": 2}),
    ]


async def test_a_tool_the_caller_is_not_granted_is_never_found_nor_callable() -> None:
    stand_in = pool()
    gateway, view = searching(stand_in, {"upstream": "github"}, access=DenyNames("delete_repo"))
    assert "github__delete_repo" not in await search(gateway, view, "delete repository")
    assert await search(gateway, view, "delete") == []
    for params in (
        {"name": "github__delete_repo", "arguments": {}},
        {"name": "call_tool", "arguments": {"name": "github__delete_repo"}},
    ):
        with pytest.raises(RpcError) as info:
            await gateway.handle(call_on(view), TOOLS_CALL, params)
        assert (info.value.code, info.value.message) == (INVALID_PARAMS, "Unknown tool: github__delete_repo")
    assert stand_in.sent == []


async def test_wrong_arguments_are_tool_errors_the_model_can_correct() -> None:
    gateway, view = searching(pool(), {"upstream": "github"})
    for name, arguments in (
        ("search_tools", {}),
        ("search_tools", {"query": "  "}),
        ("search_tools", {"query": "x", "limit": 0}),
        ("call_tool", {}),
        ("call_tool", {"name": "search_tools"}),
        ("call_tool", {"name": "github__create_issue", "arguments": [1]}),
    ):
        reply = await gateway.handle(call_on(view), TOOLS_CALL, {"name": name, "arguments": arguments})
        assert reply["result"]["isError"] is True, (name, arguments)


async def test_without_tool_search_the_names_are_ordinary_tools() -> None:
    stand_in = StandInPool({"notes": {"tools": [{"name": "search_tools", "inputSchema": {"type": "object"}}]}})
    stand_in.answers[("notes", TOOLS_CALL)] = replying({"content": []})
    lists = UpstreamLists(stand_in, ttl_seconds=3600)
    config = VirtualServerConfig.model_validate({"namespace": False, "members": [{"upstream": "notes"}]})
    view = VirtualServerView("vs", config, lists, "__")
    gateway = Gateway(stand_in, Hub(lists, AllowAll()), AllowAll(), NoAudit(), CredentialResolver())
    await gateway.handle(call_on(view), TOOLS_CALL, {"name": "search_tools", "arguments": {}})
    assert stand_in.sent[0][:2] == ("notes", TOOLS_CALL)


async def test_a_member_tool_under_a_reserved_name_is_left_out_and_said(caplog: pytest.LogCaptureFixture) -> None:
    stand_in = StandInPool(
        {"notes": {"tools": [*NOTES, {"name": "search_tools", "description": "notebook", "inputSchema": {}}]}}
    )
    lists = UpstreamLists(stand_in, ttl_seconds=3600)
    config = VirtualServerConfig.model_validate(
        {"namespace": False, "tool_search": True, "members": [{"upstream": "notes"}]}
    )
    view = VirtualServerView("vs", config, lists, "__")
    gateway = Gateway(stand_in, Hub(lists, AllowAll()), AllowAll(), NoAudit(), CredentialResolver())
    with caplog.at_level(logging.ERROR):
        assert await search(gateway, view, "notebook") == ["add_note"]
    assert "collides with the tool search's own tool" in caplog.text
    assert any("search_tools" in c for c in view.collisions["tools"])


# ---- the ranking ------------------------------------------------------------------------------------------


def test_words_split_names_and_drop_plurals_and_stop_words() -> None:
    assert words("createIssue list_PRs of the Repositories HTTPServer ec2 v 2") == [
        "create", "issue", "list", "pr", "repositorie", "http", "server", "ec2", "v", "2"
    ]  # fmt: skip


def test_the_index_ranks_by_bm25_and_scores_only_what_the_caller_sees() -> None:
    tools = [{"name": f"t{i}", "description": "alpha " * (i + 1) + "beta"} for i in range(5)]
    tools.append({"name": "gamma_alpha", "description": "nothing else"})  # in the name: counts twice
    index = ToolIndex(tools)
    best = index.search("alpha", 10)
    assert best == [4, 3, 2, 1, 5, 0]  # more often, in a document of about the same length: better
    assert index.search("alpha", 3, index.mask([tools[i] for i in (0, 3, 5)])) == [3, 5, 0]
    assert index.mask(tools) is None  # everything visible: nothing to filter
    assert index.search("", 10) == [] and index.search("the of", 10) == []  # stop words find nothing


def test_a_word_most_tools_share_is_added_to_the_best_candidates() -> None:
    # "rare" in every 7th tool, "usual" in three of four: the rare word finds the candidates, the usual one
    # (read only for them) puts those that have both first.
    tools = [
        {"name": f"t{i}", "description": f"{'rare' if i % 7 == 0 else 'other'} {'usual' if i % 4 else 'odd'}"}
        for i in range(12_000)
    ]
    index = ToolIndex(tools)
    best = index.search("rare usual", 20)
    assert len(best) == 20 and all(i % 7 == 0 and i % 4 for i in best)
    # A query of common words alone: their best 500 postings (all of them for a caller who sees only some)
    assert len(index.scores("usual")) == 500
    seen = [t for i, t in enumerate(tools) if i % 2]
    assert len(index.scores("usual", index.mask(seen))) == 6_000  # every odd one has it


# ---- configuration ----------------------------------------------------------------------------------------


def test_tool_search_config_forms() -> None:
    for value, expected in (("true", 10), ("{max_results: 3}", 3), ("{mode: search}", 10)):
        config = VirtualServerConfig.model_validate(
            {"members": [{"upstream": "notes"}], "tool_search": yaml.safe_load(value)}
        )
        assert config.tool_search is not None and config.tool_search.max_results == expected
    assert (
        VirtualServerConfig.model_validate({"members": [{"upstream": "n"}], "tool_search": False}).tool_search is None
    )


def test_a_bad_tool_search_value_is_reported_with_file_field_and_line(tmp_path: Path) -> None:
    vs = "members:\n  - upstream: notes\ntool_search:\n  max_results: 500\n"
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/v.yaml": vs})
    assert [(p.file, p.field_path, p.line) for p in ps] == [("virtual_servers/v.yaml", "tool_search.max_results", 4)]
    vs = "members:\n  - upstream: notes\ntool_search:\n  mode: find\n"
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/v.yaml": vs})
    assert [(p.field_path, p.line) for p in ps] == [("tool_search.mode", 4)]


def test_a_name_that_collides_with_the_search_tools_is_reported(tmp_path: Path) -> None:
    vs = """
    tool_search: true
    namespace: false
    members:
      - upstream: notes
        aliases:
          list_notes: search_tools
      - upstream: github
        tools: [call_tool, "get_*"]
    """
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/v.yaml": vs})
    assert [(p.field_path, p.line) for p in ps] == [("members[0].aliases.list_notes", 6), ("members[1].tools[0]", 8)]
    assert "'search_tools' is the tool search's own" in ps[0].reason


# ---- the console's virtual server editor ------------------------------------------------------------------


async def test_the_console_editor_sets_tool_search_and_keeps_it_when_editing(editor: Editor) -> None:  # noqa: F811
    fields = await editor.form("/admin/servers/new")
    assert "tool_search" not in fields  # off unless ticked
    fields |= {"id": ["big"], "pick": ["notes/search"], "tool_search": ["1"], "search_max": ["x"], "action": ["save"]}
    refused = await editor.post("/admin/servers/new", fields)
    assert refused.status_code == 400
    at_field = re.search(
        r'name="search_max" value="x"[^>]*aria-invalid="true"[^>]*>\s*<p class="field-error"', refused.text
    )
    assert at_field is not None and "valid integer" in refused.text, refused.text
    done = await editor.post("/admin/servers/new", fields | {"search_max": ["5"]})
    assert done.status_code == 303, done.text
    assert (await editor.catalog_ops.get(Kind.VSERVER, "big"))["body"]["tool_search"] == {"max_results": 5}
    again = await editor.form("/admin/servers/big")
    assert (again["tool_search"], again["search_max"]) == (["1"], ["5"])
    done = await editor.post("/admin/servers/big", again | {"search_max": [""], "action": ["save"]})
    assert done.status_code == 303, done.text
    assert (await editor.catalog_ops.get(Kind.VSERVER, "big"))["body"]["tool_search"] is True
    done = await editor.post(
        "/admin/servers/big", {k: v for k, v in again.items() if k != "tool_search"} | {"action": ["save"]}
    )
    assert "tool_search" not in (await editor.catalog_ops.get(Kind.VSERVER, "big"))["body"]


def test_check_live_warns_for_an_upstream_tool_listed_under_a_reserved_name(tmp_path: Path) -> None:
    vs = "tool_search: true\nnamespace: false\nmembers:\n  - upstream: notes\n  - upstream: github\n"
    vs += "    hide: [call_tool]\n"
    config = load_config(write(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/v.yaml": vs}), env={})
    names = {"notes": ["add_note", "search_tools"], "github": ["call_tool", "get_issue"]}
    assert [str(p) for p in unmatched_names(config, names)] == [
        "virtual_servers/v.yaml: members[0]: upstream 'notes' tool 'search_tools' would be 'search_tools', the tool "
        "search's own name (tool_search is on): it is left out; give it an alias or hide it (line 4)"
    ]


async def test_a_member_to_connect_first_keeps_its_connect_tool_next_to_the_search_tools() -> None:
    gateway, view = searching(pool(), {"upstream": "github"}, {"upstream": "notes"})
    gateway.credential_for = lambda call: not_connected("github")  # the caller has not connected github
    reply = await gateway.handle(call_on(view), TOOLS_LIST, {})
    assert [t["name"] for t in reply["result"]["tools"]] == ["search_tools", "call_tool", "github__connect_account"]
    assert await search(gateway, view, "repository") == []  # github's tools are not known for this caller yet


# ---- 2025-11-25 sessions: found tools join the session's list ---------------------------------------------


def session_call(view: VirtualServerView) -> Call:
    listener = Listener(view=view, kinds={"tools"})
    session = ClientSession("s1", "vs", "p", "2025-11-25", {}, {}, listener)
    return Call(view=view, era=Era.HANDSHAKE, client_capabilities={}, listener=listener, session=session)


async def test_in_a_session_found_tools_join_its_list_and_list_changed_is_sent() -> None:
    gateway, view = searching(pool(), {"upstream": "github"}, {"upstream": "notes"}, reveal_max=3)
    call = session_call(view)
    assert call.session is not None and call.listener is not None
    reply = await gateway.handle(call, TOOLS_CALL, {"name": "search_tools", "arguments": {"query": "notebook"}})
    assert reply["result"]["structuredContent"]["tools"][0]["name"] == "notes__add_note"
    assert orjson.loads(call.listener.queue.pop() or b"") == {
        "jsonrpc": "2.0",
        "method": "notifications/tools/list_changed",
        "params": {},
    }
    listed = await gateway.handle(call, TOOLS_LIST, {})
    assert [t["name"] for t in listed["result"]["tools"]] == ["search_tools", "call_tool", "notes__add_note"]
    # The same search again changes nothing; more found than reveal_max: the oldest found leave first.
    await gateway.handle(call, TOOLS_CALL, {"name": "search_tools", "arguments": {"query": "notebook"}})
    assert call.listener.queue.pop() is None
    await gateway.handle(call, TOOLS_CALL, {"name": "search_tools", "arguments": {"query": "repository"}})
    assert set(call.session.revealed) == {"github__create_issue", "github__list_pulls", "github__delete_repo"}
    # Another caller's list (no session, or another session) is not changed.
    other = await gateway.handle(session_call(view), TOOLS_LIST, {})
    assert [t["name"] for t in other["result"]["tools"]] == ["search_tools", "call_tool"]


async def test_a_revealed_tool_the_caller_may_no_longer_use_leaves_the_list() -> None:
    access = DenyNames()
    gateway, view = searching(pool(), {"upstream": "github"}, access=access)
    call = session_call(view)
    await gateway.handle(call, TOOLS_CALL, {"name": "search_tools", "arguments": {"query": "delete repository"}})
    access.denied.add("delete_repo")  # a grant revoked
    listed = await gateway.handle(call, TOOLS_LIST, {})
    assert "github__delete_repo" not in [t["name"] for t in listed["result"]["tools"]]


async def test_reveal_max_0_keeps_the_list_to_the_two_tools() -> None:
    gateway, view = searching(pool(), {"upstream": "github"}, reveal_max=0)
    call = session_call(view)
    await gateway.handle(call, TOOLS_CALL, {"name": "search_tools", "arguments": {"query": "repository"}})
    assert call.listener is not None and call.listener.queue.pop() is None
    listed = await gateway.handle(call, TOOLS_LIST, {})
    assert [t["name"] for t in listed["result"]["tools"]] == ["search_tools", "call_tool"]


async def test_the_console_editor_keeps_the_tool_search_keys_it_does_not_show(editor: Editor) -> None:  # noqa: F811
    body = {"id": "api", "members": [{"upstream": "notes"}], "tool_search": {"max_results": 4, "reveal_max": 0}}
    await editor.catalog_ops.create(Kind.VSERVER, body)
    fields = await editor.form("/admin/servers/api")
    assert (fields["tool_search"], fields["search_max"]) == (["1"], ["4"])
    done = await editor.post("/admin/servers/api", fields | {"search_max": ["6"], "action": ["save"]})
    assert done.status_code == 303, done.text
    stored = (await editor.catalog_ops.get(Kind.VSERVER, "api"))["body"]["tool_search"]
    assert stored == {"max_results": 6, "reveal_max": 0}
