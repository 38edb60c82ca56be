"""`manifold tools list|diff|approve`: tool pins (docs/pinning.md), from the gateway's database.

    manifold tools list [--upstream docs] [--changed] [--json]
    manifold tools diff [upstream] [tool] [--json]      the waiting definitions against the approved ones
    manifold tools approve docs search                  one tool
    manifold tools approve docs --all                   every waiting definition of one upstream
    manifold tools approve --all                        every waiting definition

An approval is recorded with the operating-system user who ran it (`cli:<user>`) and audited; running
gateways serve the approved definitions on their next request.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import shlex
import sys
from collections.abc import Callable
from typing import Any

from manifold.admin.ops import OpError
from manifold.admin.pins import PinOperations
from manifold.catalog.pin_store import PinStore
from manifold.config.loaded import LoadedConfig
from manifold.config.state import unusable_state
from manifold.store.db import open_database


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "tools", help="tool pins: changed tool definitions held until approved (list, diff, approve)"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    lst = actions.add_parser("list", help="pinned tools and whether a changed definition waits")
    lst.add_argument("--upstream", help="only this upstream")
    lst.add_argument("--changed", action="store_true", help="only tools whose changed definition waits")
    lst.add_argument("--json", action="store_true", help="print JSON")
    diff = actions.add_parser("diff", help="what changed: a unified diff of the approved and the seen definition")
    diff.add_argument("upstream", nargs="?", help="only this upstream")
    diff.add_argument("tool", nargs="?", help="only this tool (as the upstream names it)")
    diff.add_argument("--json", action="store_true", help="print JSON")
    approve = actions.add_parser("approve", help="approve a changed definition: it is served again")
    approve.add_argument("upstream", nargs="?", help="the upstream")
    approve.add_argument("tool", nargs="?", help="the tool (as the upstream names it)")
    approve.add_argument("--all", action="store_true", help="every waiting definition (of the upstream, if named)")
    approve.add_argument("--sha256", help="one tool: approve only the definition with this fingerprint (from diff)")
    approve.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, load_config: Callable[[], LoadedConfig]) -> int:
    config = load_config()
    try:
        return asyncio.run(_main(args, config))
    except OpError as exc:
        print(f"manifold tools {args.action}: {exc.message}", file=sys.stderr)
        return 1


async def _main(args: argparse.Namespace, config: LoadedConfig) -> int:
    if args.action == "approve":
        if args.tool is None and not args.all:
            raise OpError("name an upstream and a tool, or use --all (with or without an upstream)")
        if args.tool is not None and args.all:
            raise OpError("--all approves every tool; name a tool or use --all, not both")
    if (unusable := unusable_state(config)) is not None:
        raise OpError(unusable)
    try:
        engine = await open_database(config.database_url)
    except Exception as exc:  # noqa: BLE001 — a clear line, not a driver traceback (which may hold a URL)
        raise OpError(f"cannot open the gateway database: {type(exc).__name__}") from None
    try:
        pins = PinOperations(PinStore(engine, audit=config.gateway.audit.enabled))
        match args.action:
            case "list":
                rows = await pins.list(args.upstream, changed_only=args.changed)
                _print_list(rows, args.json)
            case "diff":
                found = await pins.diffs(args.upstream, args.tool)
                _print_diffs(found, args.json)
            case "approve":
                by = f"cli:{getpass.getuser()}"
                result = await pins.approve(by, "cli", upstream_id=args.upstream, tool=args.tool, expected=args.sha256)
                if args.json:
                    print(json.dumps(result, indent=2))
                elif not result["approved"]:
                    print("Nothing waits for approval.")
                else:
                    for item in result["approved"]:
                        print(f"Approved {item['upstream']}/{item['tool']} (sha256 {item['sha256'][:12]}).")
            case _:
                raise OpError(f"unknown command tools {args.action}")
    finally:
        await engine.dispose()
    return 0


def _print_list(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("No pinned tools.")
        return
    width = max(len(f"{r['upstream']}/{r['tool']}") for r in rows)
    for r in rows:
        name = f"{r['upstream']}/{r['tool']}"
        note = (
            f"changed: waiting for approval (sha256 {r['pending_hash'][:12]})"
            if r["status"] == "changed"
            else "approved"
        )
        print(f"{name:<{width}}  {note}  (approved by {r['approved_by']})")


def _print_diffs(found: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(found, indent=2))
        return
    waiting = [d for d in found if d["status"] == "changed"]
    if not waiting:
        print("No changed tool definition waits for approval.")
        return
    for d in waiting:
        print(d["diff"])
        # Quoted for the shell: `#instructions` (catalog/pinning.py) would otherwise start a comment (review).
        command = f"manifold tools approve {shlex.quote(d['upstream'])} {shlex.quote(d['tool'])}"
        print(f"# approve: {command} --sha256 {d['pending_hash']}")
