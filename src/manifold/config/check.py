"""`manifold check`: load the whole configuration and say either that it is fine or everything that is not."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from manifold.config.loader import load_config
from manifold.config.problems import ConfigError


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def run_check(config_path: Path, out: TextIO = sys.stdout) -> int:
    """Print a summary and return 0, or print every problem (one per line) and return 1."""
    try:
        config = load_config(Path(config_path))
    except ConfigError as e:
        for problem in e.problems:
            print(str(problem), file=out)
        print(f"{_count(len(e.problems), 'problem')} in {config_path}", file=out)
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
    return 0
