"""Config as code, the way back: the objects made through the admin API, the console or the CLI (rows of the
database) written out in the config files' format, to commit next to `manifold.yaml`.

- upstreams  → `upstreams.yaml`: an `upstreams:` mapping, entries as `manifold.yaml` has them (paste them
  under its `upstreams:`); groups go in the same file under `groups:`.
- virtual servers → `virtual_servers/<id>.yaml`, one file each, loadable as they are.
- grants → `grants.yaml`: a `grants:` list as in `manifold.yaml`.

No stored secret is ever written in clear: a credential (an upstream's `headers` and `env` values, a static
`bearer`, a `client_secret`) that is not already a reference (`${NAME}`, `secret:NAME`) becomes a `${NAME}`
placeholder — `<UPSTREAM>_<FIELD PATH>` in capitals, e.g. `${CRM_HEADERS_AUTHORIZATION}` — and the file
starts with a comment listing the variables to set. Objects declared in files are not exported (they are
in files already).

`manifold export [--kind upstreams|virtual_servers|grants] [--out DIR]` prints the files (each after a
`# file: <name>` line) or writes them under DIR; the console's `/admin/export` offers the same files.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import sys
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import yaml

from manifold.admin.catalog import API_SOURCE, HIDDEN, CatalogOperations, Kind
from manifold.admin.ops import Operations, OpError
from manifold.config.loaded import LoadedConfig
from manifold.config.state import unusable_state
from manifold.store.db import open_database

JSON = dict[str, Any]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

KINDS = ("upstreams", "virtual_servers", "grants")
UPSTREAMS_FILE = "upstreams.yaml"
GRANTS_FILE = "grants.yaml"


@dataclass(frozen=True)
class ExportFile:
    name: str  # relative to the config folder: "upstreams.yaml", "virtual_servers/eng.yaml", "grants.yaml"
    text: str


@dataclass(frozen=True)
class Exportable:
    """What the export reads: the API's public entries (credentials already hidden) and grants."""

    upstreams: list[JSON]
    groups: list[JSON]
    virtual_servers: list[JSON]
    grants: list[JSON]


def env_name(*parts: str) -> str:
    """`crm`, `headers`, `Authorization` → `CRM_HEADERS_AUTHORIZATION` (a valid environment variable name)."""
    name = re.sub(r"[^A-Z0-9]+", "_", "_".join(parts).upper()).strip("_")
    return name if name and not name[0].isdigit() else f"X_{name}"


def with_placeholders(upstream_id: str, body: Any, path: tuple[str, ...] = ()) -> tuple[Any, list[tuple[str, str]]]:
    """`body` with every hidden credential replaced by `${NAME}`; the (NAME, field path) pairs used."""
    if isinstance(body, dict):
        out: JSON = {}
        used: list[tuple[str, str]] = []
        for key, value in body.items():
            out[key], more = with_placeholders(upstream_id, value, (*path, str(key)))
            used += more
        return out, used
    if isinstance(body, list):
        items: list[Any] = []
        used = []
        for i, value in enumerate(body):
            item, more = with_placeholders(upstream_id, value, (*path, str(i)))
            items.append(item)
            used += more
        return items, used
    if body == HIDDEN:
        name = env_name(upstream_id, *path)
        return f"${{{name}}}", [(name, ".".join(path))]
    return body, []


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _api(entries: Iterable[JSON]) -> list[JSON]:
    return [e for e in entries if e.get("source") == API_SOURCE]


def _header(what: str, problems: list[str], variables: list[tuple[str, str, str]]) -> str:
    lines = [f"# {what}, exported from the gateway's database (`manifold export`)."]
    if variables:
        lines.append("# Credentials are not exported; set these environment variables where this file is loaded:")
        lines += [f"#   {name}  ({field} of upstream {uid})" for name, field, uid in variables]
    lines += [f"# Not in force when exported: {p}" for p in problems]
    return "\n".join(lines) + "\n"


def upstreams_file(upstreams: list[JSON], groups: list[JSON]) -> ExportFile | None:
    """`upstreams.yaml`: the API-made upstreams (and groups) as `manifold.yaml` entries."""
    entries: JSON = {}
    variables: list[tuple[str, str, str]] = []
    problems: list[str] = []
    for entry in _api(upstreams):
        uid = str(entry["id"])
        body, used = with_placeholders(uid, entry.get("body") or {})
        entries[uid] = body
        variables += [(name, field, uid) for name, field in used]
        if entry.get("problem"):
            problems.append(f"upstream '{uid}': {entry['problem']}")
    group_entries = {str(g["id"]): list((g.get("body") or {}).get("upstreams", [])) for g in _api(groups)}
    if not entries and not group_entries:
        return None
    data: JSON = {}
    if entries:
        data["upstreams"] = entries
    if group_entries:
        data["groups"] = group_entries
    what = "Upstreams (paste under `upstreams:` of manifold.yaml)"
    return ExportFile(UPSTREAMS_FILE, _header(what, problems, variables) + _dump(data))


def upstream_file(entry: JSON) -> ExportFile:
    """One upstream as a `manifold.yaml` entry (the console's "YAML" link)."""
    uid = str(entry["id"])
    body, used = with_placeholders(uid, entry.get("body") or {})
    problems = [f"upstream '{uid}': {entry['problem']}"] if entry.get("problem") else []
    header = _header(
        f"Upstream {uid} (paste under `upstreams:` of manifold.yaml)", problems, [(n, f, uid) for n, f in used]
    )
    return ExportFile(f"upstream-{uid}.yaml", header + _dump({"upstreams": {uid: body}}))


def virtual_server_file(entry: JSON) -> ExportFile:
    """`virtual_servers/<id>.yaml`, loadable as it is."""
    sid = str(entry["id"])
    body = {"id": sid, **{k: v for k, v in (entry.get("body") or {}).items() if k != "id"}}
    problems = [f"virtual server '{sid}': {entry['problem']}"] if entry.get("problem") else []
    return ExportFile(f"virtual_servers/{sid}.yaml", _header(f"Virtual server {sid}", problems, []) + _dump(body))


# A grant's approval gate settings (docs/approvals.md): written only for a grant that has a gate.
_GATE_KEYS = ("require_approval", "approvers", "approval_timeout_seconds", "approval_valid_seconds", "self_approval")


def _not_exported(grant: JSON) -> tuple[str, ...]:
    return ("id", "source") if grant.get("require_approval") else ("id", "source", *_GATE_KEYS)


def grants_file(grants: list[JSON]) -> ExportFile | None:
    """`grants.yaml`: the API-made grants as `manifold.yaml`'s `grants:` list."""
    items = [{k: v for k, v in g.items() if k not in _not_exported(g) and v not in ({}, None)} for g in _api(grants)]
    if not items:
        return None
    what = "Grants (paste under `grants:` of manifold.yaml)"
    return ExportFile(GRANTS_FILE, _header(what, [], []) + _dump({"grants": items}))


def export_files(data: Exportable, kinds: Iterable[str] = KINDS) -> list[ExportFile]:
    wanted = set(kinds)
    files: list[ExportFile] = []
    if "upstreams" in wanted and (f := upstreams_file(data.upstreams, data.groups)) is not None:
        files.append(f)
    if "virtual_servers" in wanted:
        files += [virtual_server_file(e) for e in _api(data.virtual_servers)]
    if "grants" in wanted and (f := grants_file(data.grants)) is not None:
        files.append(f)
    return files


def zip_bytes(files: list[ExportFile]) -> bytes:
    """Every file in one zip, laid out as in a config folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for f in files:
            archive.writestr(f.name, f.text)
    return buffer.getvalue()


async def read_exportable(catalog_ops: CatalogOperations, ops: Operations) -> Exportable:
    return Exportable(
        upstreams=await catalog_ops.list(Kind.UPSTREAM),
        groups=await catalog_ops.list(Kind.GROUP),
        virtual_servers=await catalog_ops.list(Kind.VSERVER),
        grants=await ops.list_grants(),
    )


# ---- `manifold export` ----------------------------------------------------------------------------


def _read(config: LoadedConfig) -> Exportable:
    async def main() -> Exportable:
        if (unusable := unusable_state(config)) is not None:
            raise OpError(unusable)
        try:
            engine = await open_database(config.database_url)
        except Exception as exc:  # noqa: BLE001 — a clear line, not a driver traceback (which may hold a URL)
            raise OpError(f"cannot open the gateway database: {type(exc).__name__}") from None
        try:
            return await read_exportable(CatalogOperations(engine, config), Operations(engine, config))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def run(args: argparse.Namespace, load_config: Callable[[], LoadedConfig]) -> int:
    config = load_config()
    try:
        files = export_files(_read(config), [args.kind] if args.kind else KINDS)
    except OpError as exc:
        print(f"manifold: {exc.message}", file=sys.stderr)
        return 1
    if args.out is None:
        for f in files:
            print(f"# file: {f.name}\n{f.text}")
        if not files:
            print("# Nothing to export: no object was made through the admin API, the console or the CLI.")
        return 0
    out = Path(args.out)
    for f in files:
        target = out / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.text, encoding="utf-8")
        print(f"wrote {target}")
    if not files:
        print("Nothing to export: no object was made through the admin API, the console or the CLI.")
    return 0


def register(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "export",
        help="write the objects made at run time (API, console, CLI) as YAML in the config files' format",
        description=(
            "Upstreams and groups go to upstreams.yaml (manifold.yaml entries), each virtual server to "
            "virtual_servers/<id>.yaml, grants to grants.yaml. Stored credentials become ${NAME} placeholders."
        ),
    )
    parser.add_argument("--kind", choices=KINDS, help="only this kind (default: all)")
    parser.add_argument("--out", help="write the files under this folder (default: print them)")
    parser.set_defaults(func=run, log_level="warning")
