"""The virtual server editor's model, without I/O: the draft a form describes, the body it becomes (the file
format, exactly what the admin API takes), the tool picker's rows, the live preview of the exposed names,
and where each problem of a refused body belongs on the form.

The preview is built by the gateway's own code (catalog/view.py `VirtualServerView.preview`: the same naming,
shortening and collision rule as `tools/list`), never by a copy of it.

The form (console/templates/server_edit.html), one member per upstream:
    id, description, namespace (checkbox), separator          the server
    tool_search (checkbox), search_max, search_kept           tool search (docs/tool-search.md), its max results,
                                                              its other stored keys (hidden, JSON)
    q, in, ann                                                the picker's filter (text, upstream, annotation)
    u                                                         one per upstream block, in member order
    mid.<u>, globs.<u>, hide.<u>, res.<u>, pro.<u>            a member: id, patterns, hidden, resources, prompts
    pick = <u>/<tool>                                         a tool picked by clicking
    alias.<u>/<tool>, desc.<u>/<tool>                         a rename, a description override
    action                                                    preview (the default), filter, select, clear, save
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from manifold.catalog.lists import UpstreamLists
from manifold.catalog.view import VirtualServerView
from manifold.config.models import MemberConfig, VirtualServerConfig
from manifold.config.problems import Problem
from manifold.naming import candidate_name

JSON = dict[str, Any]
GLOB_CHARS = re.compile(r"[*?\[]")
MAX_SHOWN = 200  # picker rows on one page; the rest are found by narrowing the filter
MAX_PICKS = 2000  # tools picked one by one (form fields); more are selected with a pattern
MAX_PREVIEW_ROWS = 300  # preview rows with their rename and description fields; the rest are counted
ANNOTATIONS = {"": "Any annotation", "ro": "Read-only only", "nd": "No destructive"}
FORM_LEVEL = ""  # where a problem with no field of its own is shown


# ---- the draft ---------------------------------------------------------------------------------------------


@dataclass
class MemberDraft:
    upstream: str
    member_id: str = ""  # "" = the upstream id
    picks: list[str] = field(default_factory=list)  # exact names picked in the list
    globs: list[str] = field(default_factory=list)  # patterns (and names typed), one a line
    hide: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # upstream name -> new name
    descriptions: dict[str, str] = field(default_factory=dict)
    resources: bool = True
    prompts: bool = True

    @property
    def used(self) -> bool:
        return bool(self.picks or self.globs)

    @property
    def effective_id(self) -> str:
        return self.member_id or self.upstream

    def selects(self, name: str) -> bool:
        """The member's `tools`/`hide` rule (config: exact names or fnmatch patterns, `hide` after)."""
        tools = [*self.picks, *self.globs]
        return any(fnmatch.fnmatchcase(name, p) for p in tools) and not any(
            fnmatch.fnmatchcase(name, p) for p in self.hide
        )


@dataclass
class Draft:
    server_id: str = ""
    description: str = ""
    namespace: bool = True
    separator: str = ""
    members: dict[str, MemberDraft] = field(default_factory=dict)  # by upstream id, in member order
    tool_search: bool = False
    search_max: str = ""  # as typed: empty is the default; the check says what is wrong with the rest
    search_kept: dict[str, Any] = field(default_factory=dict)  # the stored tool_search's keys the form lacks

    @property
    def search_kept_json(self) -> str:
        """`search_kept` for the form's hidden field, so a save keeps what the form does not show."""
        return json.dumps(self.search_kept) if self.search_kept else ""

    def member(self, upstream: str) -> MemberDraft:
        m = self.members.get(upstream)
        if m is None:
            m = self.members[upstream] = MemberDraft(upstream)
        return m


@dataclass(frozen=True)
class Filters:
    q: str = ""
    upstream: str = ""  # "" = every upstream
    ann: str = ""  # "" | "ro" (readOnlyHint) | "nd" (not destructive)

    @property
    def active(self) -> bool:
        return bool(self.q or self.upstream or self.ann)


class Unsupported(Exception):
    """A server the editor cannot show faithfully (one upstream in two members): edit it as YAML."""


def _lines(text: str) -> list[str]:
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line and line not in out:
            out.append(line)
    return out


def _split_key(key: str) -> tuple[str, str] | None:
    upstream, slash, tool = key.partition("/")
    return (upstream, tool) if slash and upstream and tool else None


def parse_form(fields: Mapping[str, list[str]], upstreams: Sequence[str]) -> tuple[Draft, Filters, str]:
    """(draft, filters, action) from the posted form (`Frame.form_lists`). Unknown upstreams are dropped:
    the form only names those it was given."""

    def one(name: str) -> str:
        values = fields.get(name)
        return values[0] if values else ""

    known = set(upstreams)
    draft = Draft(
        server_id=one("id").strip(),
        description=one("description").strip(),
        namespace=one("namespace") == "1",
        separator=one("separator").strip(),
        tool_search=one("tool_search") == "1",
        search_max=one("search_max").strip(),
        search_kept=_json_object(one("search_kept")),
    )
    for u in fields.get("u", []):
        if u not in known or u in draft.members:
            continue
        m = draft.member(u)
        m.member_id = one(f"mid.{u}").strip()
        m.globs = _lines(one(f"globs.{u}"))
        m.hide = _lines(one(f"hide.{u}"))
        m.resources = one(f"res.{u}") == "1"
        m.prompts = one(f"pro.{u}") == "1"
    for key in fields.get("pick", []):
        split = _split_key(key)
        if split is None or split[0] not in draft.members:
            continue
        m = draft.members[split[0]]
        if split[1] not in m.picks:
            m.picks.append(split[1])
    for name, values in fields.items():
        kind, dot, key = name.partition(".")
        if not dot or kind not in ("alias", "desc"):
            continue
        split = _split_key(key)
        value = values[0].strip() if values else ""
        if split is None or split[0] not in draft.members or not value:
            continue
        target = draft.members[split[0]].aliases if kind == "alias" else draft.members[split[0]].descriptions
        target[split[1]] = value
    filters = Filters(
        q=one("q").strip()[:200],
        upstream=one("in") if one("in") in known else "",
        ann=one("ann") if one("ann") in ANNOTATIONS else "",
    )
    return draft, filters, one("action") or "preview"


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def new_draft(upstreams: Sequence[str]) -> Draft:
    draft = Draft()
    for u in upstreams:
        draft.member(u)
    return draft


def draft_of(body: JSON, upstreams: Sequence[str], tool_names: Mapping[str, set[str]]) -> Draft:
    """The draft of a saved server's body (its file format). A name in `tools` that the upstream lists is a
    pick; anything else (patterns, names not listed now) stays as written in the patterns box."""
    search = body.get("tool_search")
    draft = Draft(
        server_id=str(body.get("id") or ""),
        description=str(body.get("description") or ""),
        namespace=body.get("namespace", True) is not False,
        separator=str(body.get("separator") or ""),
        tool_search=search not in (None, False),
        search_max=str(search.get("max_results", "")) if isinstance(search, dict) else "",
        search_kept={k: v for k, v in search.items() if k != "max_results"} if isinstance(search, dict) else {},
    )
    for raw in body.get("members") or []:
        member = MemberConfig.model_validate(raw)
        if member.upstream in draft.members:
            raise Unsupported(f"upstream '{member.upstream}' is in two members")
        m = draft.member(member.upstream)
        m.member_id = member.id or ""
        names = tool_names.get(member.upstream, set())
        for t in member.tools:
            (m.picks if t in names and not GLOB_CHARS.search(t) else m.globs).append(t)
        m.hide = list(member.hide)
        m.aliases = dict(member.aliases)
        m.descriptions = dict(member.descriptions)
        m.resources = member.resources
        m.prompts = member.prompts
    for u in upstreams:
        draft.member(u)
    return draft


def body_of(draft: Draft) -> JSON:
    """The body the admin API takes (the `virtual_servers/<id>.yaml` format as JSON): the members in use,
    each with only what differs from the defaults; renames and descriptions of tools it does not select are
    dropped (they would do nothing, and the check refuses them)."""
    body: JSON = {"id": draft.server_id}
    if draft.description:
        body["description"] = draft.description
    if not draft.namespace:
        body["namespace"] = False
    if draft.separator:
        body["separator"] = draft.separator
    if draft.tool_search:
        limit = int(draft.search_max) if draft.search_max.isdigit() else draft.search_max
        search = {**draft.search_kept, **({"max_results": limit} if draft.search_max else {})}
        body["tool_search"] = search or True
    members: list[JSON] = []
    for m in draft.members.values():
        if not m.used:
            continue
        entry: JSON = {"upstream": m.upstream}
        if m.member_id and m.member_id != m.upstream:
            entry["id"] = m.member_id
        entry["tools"] = [*m.picks, *[g for g in m.globs if g not in m.picks]]
        if m.hide:
            entry["hide"] = list(m.hide)
        aliases = {k: v for k, v in m.aliases.items() if v != k and m.selects(k)}
        if aliases:
            entry["aliases"] = aliases
        descriptions = {k: v for k, v in m.descriptions.items() if m.selects(k)}
        if descriptions:
            entry["descriptions"] = descriptions
        if not m.resources:
            entry["resources"] = False
        if not m.prompts:
            entry["prompts"] = False
        members.append(entry)
    body["members"] = members
    return body


# ---- the picker ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """One upstream's tools as the list cache has them, or why it could not list."""

    upstream: str
    tools: list[JSON]
    error: str | None = None


@dataclass(frozen=True)
class PickRow:
    upstream: str
    name: str
    key: str  # <upstream>/<name>: the pick's value
    html_id: str
    title: str
    description: str
    hints: list[tuple[str, bool]]
    picked: bool


def html_id(prefix: str, key: str) -> str:
    """A stable element id for a key of any characters (labels and htmx's focus keeping need ids)."""
    return f"{prefix}-{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def _hints(tool: JSON) -> list[tuple[str, bool]]:
    annotations = tool.get("annotations")
    if not isinstance(annotations, dict):
        return []
    return [
        (h, annotations[h])
        for h in ("readOnlyHint", "destructiveHint", "openWorldHint")
        if isinstance(annotations.get(h), bool)
    ]


def _text(tool: JSON, key: str) -> str:
    value = tool.get(key)
    return value if isinstance(value, str) else ""


def matches(tool: JSON, filters: Filters, needle: str) -> bool:
    """The filter: text in name, title or description (any case); "ro" wants readOnlyHint true; "nd" wants a
    tool that does not destroy (readOnlyHint true, or destructiveHint false: the spec's default is true)."""
    if needle and needle not in f"{_text(tool, 'name')}\n{_text(tool, 'title')}\n{_text(tool, 'description')}".lower():
        return False
    if not filters.ann:
        return True
    annotations = tool.get("annotations")
    annotations = annotations if isinstance(annotations, dict) else {}
    read_only = annotations.get("readOnlyHint") is True
    if filters.ann == "ro":
        return read_only
    return read_only or annotations.get("destructiveHint") is False


def matching(listed: Sequence[Listed], filters: Filters) -> list[tuple[str, JSON]]:
    """Every (upstream, tool) the filter lets through, in upstream order then the upstream's order."""
    needle = filters.q.lower()
    out: list[tuple[str, JSON]] = []
    for entry in listed:
        if filters.upstream and entry.upstream != filters.upstream:
            continue
        for tool in entry.tools:
            if isinstance(tool.get("name"), str) and matches(tool, filters, needle):
                out.append((entry.upstream, tool))
    return out


def pick_rows(found: Sequence[tuple[str, JSON]], draft: Draft, limit: int = MAX_SHOWN) -> list[PickRow]:
    rows: list[PickRow] = []
    for upstream, tool in found[:limit]:
        name = str(tool["name"])
        key = f"{upstream}/{name}"
        member = draft.members.get(upstream)
        rows.append(
            PickRow(
                upstream=upstream,
                name=name,
                key=key,
                html_id=html_id("pick", key),
                title=_text(tool, "title"),
                description=_text(tool, "description")[:300],
                hints=_hints(tool),
                picked=member is not None and name in member.picks,
            )
        )
    return rows


def select(draft: Draft, found: Sequence[tuple[str, JSON]], on: bool, limit: int = MAX_PICKS) -> int:
    """Select all matching (or clear them): every tool the filter lets through, picked or unpicked. At most
    `limit` picks in all (each is a form field; a pattern selects any number): returns how many were not
    picked for that reason."""
    total = sum(len(m.picks) for m in draft.members.values())
    left_out = 0
    for upstream, tool in found:
        m = draft.member(upstream)
        name = str(tool["name"])
        if on and name not in m.picks:
            if total >= limit:
                left_out += 1
                continue
            m.picks.append(name)
            total += 1
        elif not on and name in m.picks:
            m.picks.remove(name)
    return left_out


# ---- the preview ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewRow:
    exposed: str
    member_id: str
    upstream: str
    name: str  # the upstream's own name
    alias_key: str  # <upstream>/<name>: the rename and description fields' key
    alias: str
    description: str  # what clients see (the override, else the upstream's)
    override: str
    shortened_from: str | None  # the candidate name, when it had to be shortened
    collides: bool


@dataclass
class Preview:
    rows: list[PreviewRow]
    collisions: list[str]  # the gateway's own words for each
    failures: dict[str, str]  # member id -> why its upstream's list is missing
    exposed: int  # how many names clients will see
    more: int = 0  # rows not shown (past MAX_PREVIEW_ROWS; collisions come first, so none of those)


def preview(
    server_id: str,
    config: VirtualServerConfig,
    listed: Mapping[str, Listed],
    lists: UpstreamLists,
    separator: str,
) -> Preview:
    """The tool names clients will see, from the gateway's own view code, with every source of a collision
    marked (the gateway leaves both out)."""
    view = VirtualServerView(server_id or "preview", config, lists, separator)
    entries: list[tuple[MemberConfig, list[JSON]]] = []
    failures: dict[str, str] = {}
    for member in config.members:
        got = listed.get(member.upstream)
        if got is None or got.error is not None:
            failures[member.member_id] = got.error if got is not None and got.error else "not listed"
            continue
        entries.append((member, got.tools))
    built = view.preview("tools", entries)
    by_member = {m.member_id: m for m in config.members}
    originals: dict[tuple[str, str], JSON] = {}  # only wanted for the sources of a collision
    wanted = {(t.member_id, t.name) for sources in built.collided.values() for t in sources}
    for member, tools in entries if wanted else ():
        for tool in tools:
            key = (member.member_id, tool.get("name"))
            if key in wanted:
                originals.setdefault((member.member_id, str(key[1])), tool)

    def row(exposed: str, member_id: str, upstream: str, name: str, shown: JSON, collides: bool) -> PreviewRow:
        member = by_member[member_id]
        alias = member.aliases.get(name)
        candidate = candidate_name(member_id, name, sep=view.sep, namespace=view.namespace, alias=alias)
        return PreviewRow(
            exposed=exposed,
            member_id=member_id,
            upstream=upstream,
            name=name,
            alias_key=f"{upstream}/{name}",
            alias=alias or "",
            description=_text(shown, "description"),
            override=member.descriptions.get(name, ""),
            shortened_from=candidate if candidate != exposed else None,
            collides=collides,
        )

    rows = [
        row(str(item["name"]), t.member_id, t.upstream_id, t.name, item, False)
        for item, t in zip(built.items, built.item_targets, strict=True)
    ]
    for exposed, sources in built.collided.items():
        for t in sources:
            member = by_member[t.member_id]
            original = originals.get((t.member_id, t.name), {"name": t.name})
            shown = dict(original)
            if t.name in member.descriptions:
                shown["description"] = member.descriptions[t.name]
            rows.append(row(exposed, t.member_id, t.upstream_id, t.name, shown, True))
    rows.sort(key=lambda r: (not r.collides, r.exposed, r.member_id))
    return Preview(
        rows=rows[:MAX_PREVIEW_ROWS],
        collisions=built.collisions,
        failures=failures,
        exposed=len(built.items),
        more=max(0, len(rows) - MAX_PREVIEW_ROWS),
    )


# ---- problems on the form ------------------------------------------------------------------------------------

_MEMBER_PATH = re.compile(r"^members\[(\d+)\](.*)$")
_INDEXED = re.compile(r"^\.(tools|hide)\[(\d+)\]$")
_TWICE = re.compile(r"member id '([^']*)' appears twice")


def _mapping_key(rest: str, prefix: str) -> str | None:
    tail = rest[len(prefix) :]
    if tail.startswith("."):
        return tail[1:]
    if tail.startswith('["') and tail.endswith('"]'):
        return tail[2:-2]
    return None


def place(problem: Problem, body: JSON) -> str:
    """The form field a problem of `body` belongs next to (`FORM_LEVEL` when none fits)."""
    path = problem.field_path
    if path in ("id", "description", "separator", "namespace"):
        return path
    if path.split(".")[0] == "tool_search":
        return "tool_search"
    members = body.get("members") or []
    if path == "members":
        twice = _TWICE.search(problem.reason)
        if twice:
            for m in reversed(members):
                if (m.get("id") or m.get("upstream")) == twice.group(1):
                    return f"mid.{m.get('upstream')}"
        return FORM_LEVEL
    m = _MEMBER_PATH.match(path)
    if m is None or int(m.group(1)) >= len(members):
        return FORM_LEVEL
    member = members[int(m.group(1))]
    upstream = str(member.get("upstream"))
    rest = m.group(2)
    if rest == ".id":
        return f"mid.{upstream}"
    indexed = _INDEXED.match(rest)
    if indexed:
        return f"{'globs' if indexed.group(1) == 'tools' else 'hide'}.{upstream}"
    for prefix, kind in ((".aliases", "alias"), (".descriptions", "desc")):
        if rest.startswith(prefix):
            name = _mapping_key(rest, prefix)
            return f"{kind}.{upstream}/{name}" if name else f"member.{upstream}"
    return f"member.{upstream}"


def label_of(key: str) -> str:
    """How the form names the field a problem was placed at (`place`), for the preview's list of problems."""
    kind, dot, rest = key.partition(".")
    if not dot:
        labels = {"id": "Id", "description": "Description", "separator": "Separator", "namespace": "Prefix"}
        return {**labels, "tool_search": "Tool search"}.get(key, "")
    upstream, _, tool = rest.partition("/")
    words = {
        "mid": f"Member id of {upstream}",
        "globs": f"Tools of {upstream}",
        "hide": f"Hidden tools of {upstream}",
        "member": f"Member {upstream}",
        "alias": f"Rename of {tool} ({upstream})",
        "desc": f"Description of {tool} ({upstream})",
    }
    return words.get(kind, "")


def placed(problems: Sequence[Problem], body: JSON) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in problems:
        out.setdefault(place(p, body), []).append(p.reason)
    return out


# ---- after saving -------------------------------------------------------------------------------------------


def python_snippet(url: str) -> str:
    """The Python SDK (mcp) with an API key from the environment; the other clients' snippets are the
    /servers page's (web/servers_page.py `snippets`)."""
    return (
        "import asyncio, os\n\n"
        "import httpx2\n"
        "from mcp import Client\n"
        "from mcp.client.streamable_http import streamable_http_client\n\n\n"
        "async def main() -> None:\n"
        '    key = os.environ["MANIFOLD_API_KEY"]\n'
        '    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"})\n'
        f"    async with Client(streamable_http_client({json.dumps(url)}, http_client=http)) as client:\n"
        "        tools = await client.list_tools()\n"
        "        print([tool.name for tool in tools.tools])\n\n\n"
        "asyncio.run(main())\n"
    )
