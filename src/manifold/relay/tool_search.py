"""Tool search for large catalogs (a virtual server's `tool_search`, docs/tool-search.md).

tools/list shows two tools instead of the members' tools: `search_tools` (a query → the best matching tools
among those the caller may use, filtered by the same grants as tools/list) and `call_tool` (a tool's name and
arguments → that tool's result, as if called directly). Every allowed tool also stays callable by its own name
with tools/call, checked on every call as always. In a 2025-11-25 session, found tools also join that session's
list (`reveal_max`), and `notifications/tools/list_changed` tells the client. The ranking is catalog/search.py's,
one index per built list.
relay/handlers.py routes the two names here; this module only reads and answers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from manifold import jsoncodec
from manifold.catalog.view import Built, VirtualServerView
from manifold.config.models import CALL_TOOL, SEARCH_TOOLS, TOOL_SEARCH_NAMES, ToolSearchConfig
from manifold.protocol import TOOLS_LIST_CHANGED

JSON = dict[str, Any]

LIST_CHANGED: JSON = {"jsonrpc": "2.0", "method": TOOLS_LIST_CHANGED, "params": {}}
MAX_QUERY = 1000  # characters of a query that are read; more words do not find better tools


@functools.lru_cache(maxsize=64)
def meta_tools(max_results: int) -> tuple[JSON, ...]:
    """The two tools a server with tool search lists (the same dicts every time: never mutate them)."""
    search = {
        "name": SEARCH_TOOLS,
        "title": "Search tools",
        "description": (
            "Find the tools of this server that fit a task. Give a few words about what you want to do "
            f"(for example 'create issue'); you get up to {max_results} tools, best first, each with its name, "
            f"description and input schema. Call a found tool by its name, or with {CALL_TOOL}."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "words describing the task or the tool"},
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": max_results,
                    "description": f"how many tools at most (default and maximum {max_results})",
                },
            },
            "required": ["query"],
        },
        "outputSchema": {
            "type": "object",
            "properties": {"tools": {"type": "array", "items": {"type": "object"}}},
            "required": ["tools"],
        },
        "annotations": {"readOnlyHint": True, "openWorldHint": False},
    }
    call = {
        "name": CALL_TOOL,
        "title": "Call a tool",
        "description": (
            f"Call a tool found with {SEARCH_TOOLS} by its name, with its arguments. The same as calling the "
            "tool directly; for clients that only call listed tools."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": f"the tool's name, as {SEARCH_TOOLS} gave it"},
                "arguments": {"type": "object", "description": "the tool's arguments, by its input schema"},
            },
            "required": ["name"],
        },
    }
    return (search, call)


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    limit: int


def parse_query(arguments: object, config: ToolSearchConfig) -> Query | str:
    """The search a `search_tools` call asks for, or what is wrong with its arguments (a tool error, so the
    model can correct itself)."""
    if not isinstance(arguments, dict):
        return f'{SEARCH_TOOLS} needs arguments: {{"query": "words describing the task"}}'
    text = arguments.get("query")
    if not isinstance(text, str) or not text.strip():
        return f"{SEARCH_TOOLS} needs a non-empty string 'query'"
    limit = arguments.get("limit", config.max_results)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        return f"{SEARCH_TOOLS}: 'limit' must be a positive integer"
    return Query(text[:MAX_QUERY], min(limit, config.max_results))


async def search(view: VirtualServerView, built: Built, visible: list[JSON], query: Query) -> list[JSON]:
    """The best tools for `query` among `visible` (what tools/list would show this caller: the access
    seam's filtering of `built.items`, whose dicts it returns as they are)."""
    index = await view.index(built)
    positions = index.search(query.text, query.limit, index.mask(visible))
    return [built.items[i] for i in positions]


def reveal(revealed: dict[str, None], found: list[JSON], most: int) -> bool:
    """Add the found tools' names to a 2025-11-25 session's revealed ones (at most `most`, the oldest found
    leaving first); whether its list changed."""
    changed = False
    for tool in found:
        name = tool["name"]
        if name in revealed:
            continue
        revealed[name] = None
        changed = True
        while len(revealed) > most:
            del revealed[next(iter(revealed))]
    return changed and most > 0


def listed(visible: list[JSON], revealed: dict[str, None], max_results: int) -> list[JSON]:
    """A tools/list with tool search: the two tools, then the revealed ones the caller may still see."""
    tools = list(meta_tools(max_results))
    if revealed:
        tools += [t for t in visible if t["name"] in revealed]
    return tools


def search_result(found: list[JSON]) -> JSON:
    """A `search_tools` result: the tools as structured content, and the same JSON as text."""
    structured = {"tools": found}
    text = jsoncodec.dumps(structured).decode()
    return {"result": {"content": [{"type": "text", "text": text}], "structuredContent": structured}}


def inner_call(params: JSON) -> JSON | str:
    """The tools/call params a `call_tool` call stands for, or what is wrong with its arguments."""
    arguments = params.get("arguments")
    if not isinstance(arguments, dict):
        return f'{CALL_TOOL} needs arguments: {{"name": "a tool\'s name", "arguments": {{...}}}}'
    name = arguments.get("name")
    if not isinstance(name, str) or not name:
        return f"{CALL_TOOL} needs a string 'name': the tool to call"
    if name in TOOL_SEARCH_NAMES:
        return f"{CALL_TOOL} calls the server's tools; call {name} directly"
    inner_arguments = arguments.get("arguments", {})
    if not isinstance(inner_arguments, dict):
        return f"{CALL_TOOL}: 'arguments' must be an object (the tool's arguments)"
    return {**params, "name": name, "arguments": inner_arguments}
