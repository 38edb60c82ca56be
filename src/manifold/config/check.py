"""`manifold check`: load the whole configuration and say either that it is fine or everything that is not.

`check --live` also asks the upstreams for their tools (the CLI hands in a `ToolLister` that connects as the
gateway does) and warns for every glob or exact name in a virtual server file that matches none of them
(`tools`, `hide`, `aliases`, `descriptions`), and for every listed tool a server with `tool_search` would expose
as `search_tools` or `call_tool`, by file, field and line like every other problem. Without it,
`check` touches nothing outside the files.
"""

from __future__ import annotations

import difflib
import fnmatch
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from manifold.config.loaded import LoadedConfig
from manifold.config.loader import load_config
from manifold.config.models import TOOL_SEARCH_NAMES
from manifold.config.problems import ConfigError, Problem
from manifold.config.selectors import WhatKind, is_glob, parse_what
from manifold.config.sources import SourceFile, read_yaml
from manifold.config.state import state_problems
from manifold.naming import expose_name

# Upstream id -> its tool names, or why they could not be listed.
ToolNames = Mapping[str, Sequence[str] | str]
ToolLister = Callable[[LoadedConfig], ToolNames]
# Problems in documents the configuration points to (openapi upstreams' specs: upstream/openapi_spec.py).
DocumentChecker = Callable[[LoadedConfig], list[Problem]]


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _display(base: Path, p: Path) -> str:
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return str(p)


def unmatched_target(text: str, config: LoadedConfig, where: str = "") -> str | None:
    """Why a grant's `what` (or `require_approval`) selector `text` matches nothing `config` declares (an
    upstream, group or virtual server), with the nearest id when it looks like a typo; None when it matches
    (or does not parse: that is an error of its own)."""
    try:
        what = parse_what(text)
    except ValueError:
        return None
    noun, ids = {
        WhatKind.SERVER: ("upstream", list(config.upstreams)),
        WhatKind.TOOL: ("upstream", list(config.upstreams)),
        WhatKind.GROUP: ("group", list(config.gateway.groups)),
        WhatKind.VSERVER: ("virtual server", list(config.virtual_servers)),
    }[what.kind]
    if any(what.target_matches(x) for x in ids):
        return None
    close = [] if is_glob(what.target) else difflib.get_close_matches(what.target, ids, n=1)
    return f"'{text}' matches no {noun}{where}" + (f"; did you mean '{close[0]}'?" if close else "")


def grant_targets_matching_nothing(config: LoadedConfig) -> list[Problem]:
    """One problem per `what` (or `require_approval`) selector of a grant in the files that names no upstream,
    group or virtual server of the files: most often a typo, which would otherwise show only as a 403 later.
    Warnings, not errors: it may name one made through the admin API or the CLI (kept in the database)."""
    problems: list[Problem] = []
    main = SourceFile(config.path, config.path.name, problems)
    read_yaml(main)
    for i, grant in enumerate(config.gateway.grants):
        for key, texts in (("what", grant.what), ("require_approval", grant.require_approval)):
            for j, text in enumerate(texts):
                reason = unmatched_target(text, config, " in the files")
                if reason is not None:
                    main.add(("grants", i, key, j), reason)
    return problems


def unmatched_names(config: LoadedConfig, names: ToolNames) -> list[Problem]:
    """One problem per pattern or name in a virtual server file that matches no tool its upstream lists,
    and one per upstream whose tools could not be listed."""
    problems: list[Problem] = []
    main = SourceFile(config.path, config.path.name, problems)
    read_yaml(main)
    for uid, got in names.items():
        if isinstance(got, str):
            main.add(("upstreams", uid), f"could not list its tools ({got}); its globs are not checked")
    for server_id, server in config.virtual_servers.items():
        path = config.virtual_server_files.get(server_id)
        if path is None:
            continue
        f = SourceFile(path, _display(config.base_dir, path), problems)
        read_yaml(f)
        for i, m in enumerate(server.members):
            got = names.get(m.upstream)
            if got is None or isinstance(got, str):
                continue
            up = m.upstream

            def none_match(pattern: str, tools: Sequence[str] = got) -> bool:
                return not any(fnmatch.fnmatchcase(t, pattern) for t in tools)

            for j, pattern in enumerate(m.tools):
                if none_match(pattern):
                    f.add(("members", i, "tools", j), f"'{pattern}' matches no tool of upstream '{up}'")
            for j, pattern in enumerate(m.hide):
                if none_match(pattern):
                    f.add(("members", i, "hide", j), f"'{pattern}' matches no tool of upstream '{up}'")
            for field in ("aliases", "descriptions"):
                keys: Mapping[str, str] = m.aliases if field == "aliases" else m.descriptions
                for name in keys:
                    if name not in got:
                        f.add(("members", i, field, name), f"'{name}' is no tool of upstream '{up}'")
            if server.tool_search is not None:
                sep = config.separator_for(server)
                for name in got:
                    if not any(fnmatch.fnmatchcase(name, p) for p in m.tools) or any(
                        fnmatch.fnmatchcase(name, p) for p in m.hide
                    ):
                        continue
                    exposed = expose_name(
                        m.member_id, name, sep=sep, namespace=server.namespace, alias=m.aliases.get(name)
                    )
                    if exposed in TOOL_SEARCH_NAMES:
                        f.add(
                            ("members", i),
                            f"upstream '{up}' tool '{name}' would be '{exposed}', the tool search's own name "
                            "(tool_search is on): it is left out; give it an alias or hide it",
                        )
    return problems


def run_check(
    config_path: Path,
    out: TextIO = sys.stdout,
    lister: ToolLister | None = None,
    documents: DocumentChecker | None = None,
) -> int:
    """Print a summary and return 0, or print every problem (one per line) and return 1.
    With `lister` (`check --live`), also print a warning per name that matches no listed tool (still 0).
    With `documents`, the documents the configuration points to are checked too."""
    try:
        config = load_config(Path(config_path))
        if documents is not None and (found := documents(config)):
            raise ConfigError(found)
    except ConfigError as e:
        for problem in e.problems:
            print(str(problem), file=out)
        if not Path(config_path).exists():
            print(
                f"(looked for {Path(config_path).absolute()}: name the configuration file with --config PATH, "
                "or make one with `manifold init`)",
                file=out,
            )
        files = list(dict.fromkeys(problem.file for problem in e.problems))  # in the order they were listed
        print(f"{_count(len(e.problems), 'problem')} in {', '.join(files) or config_path}", file=out)
        return 1
    print(
        f"ok: {_count(len(config.upstreams), 'upstream')}, {_count(len(config.virtual_servers), 'virtual server')}",
        file=out,
    )
    # What will be served, so the user can copy a URL-path and see what is behind it.
    for server_id, server in config.served_servers().items():
        members = ", ".join(
            m.upstream if m.member_id == m.upstream else f"{m.member_id}={m.upstream}" for m in server.members
        )
        print(f"  /mcp/{server_id}  ({members})", file=out)
    unmatched = grant_targets_matching_nothing(config)
    for problem in unmatched:
        print(f"warning: {problem}", file=out)
    if unmatched:
        print("  (a grant may name an upstream or virtual server made through the admin API or the CLI)", file=out)
    # The state folder and an SQLite file, as they are on this machine (`manifold serve` refuses to start).
    for problem in state_problems(config, make=False):
        print(f"warning: {problem}", file=out)
    if lister is not None:
        warnings = unmatched_names(config, lister(config))
        for problem in warnings:
            print(f"warning: {problem}", file=out)
        listed = "every name matches a listed tool" if not warnings else _count(len(warnings), "warning")
        print(f"live: {listed}", file=out)
    return 0
