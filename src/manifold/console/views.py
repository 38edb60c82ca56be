"""What the console's pages show, computed from the gateway's state: plain values, no markup."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]
HINTS = ("readOnlyHint", "destructiveHint", "openWorldHint")


@dataclass(frozen=True)
class UpstreamRow:
    id: str
    transport: str
    auth: str
    state: str  # up | degraded | down | idle (not connected yet: upstreams connect on first use)
    last_error: str | None
    tools: int | None  # None: the tool list was never fetched
    source: str  # the file that declares it, or "api"


def state_of(health: Mapping[str, object], list_failed: bool) -> str:
    """up: connected and listing; degraded: connected (or connecting) but its last list or connect failed;
    down: the last thing known of it is a failure (upstream/health.py `down`); idle: never used yet."""
    if health.get("down"):
        return "down"
    if health.get("state") == "connected":
        return "degraded" if list_failed else "up"
    if health.get("last_error") or list_failed:
        return "degraded"
    return "idle"


def upstream_row(entry: JSON, health: Mapping[str, object], tools: int | None, list_error: str | None) -> UpstreamRow:
    """One row from the catalog's public entry (admin/catalog.py `Entry.public`) and the pool's health."""
    body = entry.get("body") or {}
    auth = body.get("auth") or {}
    last = health.get("last_error")
    error = list_error or (last if isinstance(last, str) else None)
    return UpstreamRow(
        id=str(entry.get("id")),
        transport=str(body.get("transport", "?")),
        auth=str(auth.get("mode", "none")) if isinstance(auth, dict) else "none",
        state=state_of(health, list_error is not None),
        last_error=error,
        tools=tools,
        source=str(entry.get("source", "")),
    )


@dataclass(frozen=True)
class ToolRow:
    name: str
    title: str | None
    description: str
    schema: str  # the input schema, pretty-printed JSON
    hints: list[tuple[str, bool]]  # the annotation hints that are set, in HINTS order


def tool_row(tool: JSON) -> ToolRow:
    annotations = tool.get("annotations")
    hints: list[tuple[str, bool]] = []
    if isinstance(annotations, dict):
        hints = [(h, bool(annotations[h])) for h in HINTS if isinstance(annotations.get(h), bool)]
    title = tool.get("title")
    description = tool.get("description")
    return ToolRow(
        name=str(tool.get("name", "")),
        title=title if isinstance(title, str) else None,
        description=description if isinstance(description, str) else "",
        schema=json.dumps(tool.get("inputSchema") or {}, indent=2, sort_keys=True),
        hints=hints,
    )


def matching(tools: Sequence[JSON], query: str, only_read_only: bool = False) -> list[ToolRow]:
    """The tools whose name, title or description contains `query` (case-insensitive), sorted by name."""
    needle = query.strip().lower()
    rows: list[ToolRow] = []
    for tool in tools:
        row = tool_row(tool)
        if needle and needle not in f"{row.name}\n{row.title or ''}\n{row.description}".lower():
            continue
        if only_read_only and ("readOnlyHint", True) not in row.hints:
            continue
        rows.append(row)
    return sorted(rows, key=lambda r: r.name)
