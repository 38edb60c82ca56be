"""`manifold init [DIR]`: a starter configuration for a new installation.

Writes `DIR/manifold.yaml` (one upstream: the demo notebook that ships with Manifold, run over stdio by the
Python that runs `init`; the development key's user as admin, granted everything) and
`DIR/virtual_servers/starter.yaml` (one virtual server over it), every line commented, then prints the next
steps. Nothing is overwritten: when either file exists, `init` writes nothing and exits 1. What it writes
passes `manifold check` (tests/packaging/test_init.py, and the wheel test runs it from an installed wheel).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from manifold.config.loaded import LoadedConfig

SERVER_ID = "starter"
DEFAULT_PORT = 8470


def _quoted(value: str) -> str:
    """A YAML scalar for `value` (JSON strings are valid YAML)."""
    return json.dumps(value)


def manifold_yaml(*, python: str, state_dir: str, port: int) -> str:
    return f"""\
# Manifold configuration, written by `manifold init`. Every key and its default: docs/configuration.md in
# Manifold's source repository (the docs are not installed with the package).
# Relative paths are relative to this file's folder. `manifold check` validates this file and
# virtual_servers/*.yaml; `manifold serve` (run in this folder, or with --config) serves them.

gateway:
  # Loopback only. Inside a container, serve with `--host 0.0.0.0` (the image's command does): the
  # container's own loopback is unreachable from outside it, and its published port is the boundary.
  host: 127.0.0.1
  port: {port}
  state_dir: {_quoted(state_dir)}   # database, secret key (secret.key), development key: back it up
  virtual_servers_dir: virtual_servers   # one virtual server per *.yaml file
  # The origin clients reach the gateway at, when it is behind a proxy or load balancer:
  # public_url: https://mcp.example.com
  # allowed_hosts: [mcp.example.com]     # DNS-rebinding protection: names other than loopback
  # PostgreSQL instead of the SQLite file in state_dir (needed for two or more replicas):
  # database_url: ${{DATABASE_URL}}        # postgresql+asyncpg://user:password@host:5432/manifold

upstreams:
  # A stdio upstream: the gateway starts it as a child process. This one is the demo notebook that ships
  # with Manifold (tools add_note, list_notes, search_notes); replace it with your own servers.
  notes:
    transport: stdio
    command: {_quoted(python)}
    args: ["-m", "manifold.demo.notes"]
    description: A small notebook kept in memory (add, list and search notes).

  # A remote MCP server over streamable HTTP. Secrets are environment references (or `secret:NAME`,
  # `manifold secrets set NAME`), never written here:
  # tickets:
  #   transport: http
  #   url: https://tickets.example.com/mcp
  #   headers:
  #     Authorization: "Bearer ${{TICKETS_TOKEN}}"

# Who may use what: nothing is allowed unless a grant says so. `manifold explain` shows which grant decides.
identity:
  admins: ["user:dev"]   # the development key `manifold serve` prints belongs to user `dev`

grants:
  - who: user:dev
    what: ["server:*", "vserver:*"]
    description: the development key may use every server
"""


def starter_server_yaml() -> str:
    return f"""\
# A virtual server, served at /mcp/{SERVER_ID} (the file name is its id). It picks tools from one or more
# upstreams and shows them behind one URL, named {{member}}__{{tool}}: notes__add_note, notes__list_notes.
description: The starter server, over the demo notebook.
members:
  - upstream: notes
    tools: ["*"]           # globs over the upstream's tool names
    # hide: [search_notes]   # ...minus these
    # aliases:               # exposed as notes__write
    #   add_note: write
    # descriptions:
    #   add_note: Save a short note for the team.
"""


def next_steps(folder: Path, port: int) -> str:
    url = f"http://127.0.0.1:{port}/mcp/{SERVER_ID}"
    snippet = json.dumps(
        {
            "mcpServers": {
                "manifold": {
                    "type": "http",
                    "url": url,
                    "headers": {"Authorization": "Bearer <the development key manifold serve prints>"},
                }
            }
        },
        indent=2,
    )
    return "\n".join(
        [
            "Next:",
            f"  cd {folder}",
            "  manifold check     # validates manifold.yaml and virtual_servers/",
            "  manifold serve     # prints the development key and the servers' URLs",
            "",
            'Then paste this into your MCP client (VS Code\'s .vscode/mcp.json says "servers" instead of',
            '"mcpServers"), with the key `manifold serve` printed:',
            snippet,
        ]
    )


def run_init(folder: Path, *, state_dir: str = ".manifold", port: int = DEFAULT_PORT, python: str | None = None) -> int:
    folder = folder.absolute()
    config = folder / "manifold.yaml"
    server = folder / "virtual_servers" / f"{SERVER_ID}.yaml"
    existing = [p for p in (config, server) if p.exists() or p.is_symlink()]
    if existing:
        names = ", ".join(str(p) for p in existing)
        print(
            f"manifold init: {names} already exist{'s' if len(existing) == 1 else ''}; nothing was written "
            "(move it away or choose another folder)",
            file=sys.stderr,
        )
        return 1
    try:
        server.parent.mkdir(parents=True, exist_ok=True)
        # "x": never overwrite, even a file that appeared since the check above.
        with config.open("x", encoding="utf-8") as f:
            f.write(manifold_yaml(python=python or sys.executable, state_dir=state_dir, port=port))
        with server.open("x", encoding="utf-8") as f:
            f.write(starter_server_yaml())
    except OSError as exc:
        print(f"manifold init: cannot write to {folder}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"Wrote {config}\n      {server}\n")
    print(next_steps(folder, port))
    return 0


def cmd_init(args: argparse.Namespace, load_config: Callable[[], LoadedConfig]) -> int:
    return run_init(Path(args.dir), state_dir=args.state_dir, port=args.port)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = subparsers.add_parser(
        "init", help="write a starter manifold.yaml and virtual_servers/ for a new installation"
    )
    init.add_argument("dir", nargs="?", default=".", help="the folder to write them to (default: this one)")
    init.add_argument(
        "--state-dir",
        default=".manifold",
        help="gateway.state_dir: where the database and keys go, relative to DIR or absolute (default: .manifold)",
    )
    init.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"gateway.port (default: {DEFAULT_PORT})")
    init.set_defaults(func=cmd_init)
