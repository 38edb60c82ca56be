"""The admin commands of the `manifold` CLI: the same operations as `/admin/api` (admin/ops.py,
admin/catalog.py), run directly against the gateway's database. A running gateway applies them on its next
request.

`register(subparsers)` adds keys, users, teams, sa, grants, upstreams, groups and vservers; each runs `run`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeAlias

from manifold.admin.catalog import CatalogOperations, InvalidBody, Kind, read_rows
from manifold.admin.catalog_secrets import CatalogSecrets
from manifold.admin.ops import Operations, OpError
from manifold.config.check import unmatched_target
from manifold.config.loaded import LoadedConfig
from manifold.config.state import unusable_state
from manifold.security.crypto import Cipher, KeyProblem, WrongKey
from manifold.security.secret_store import SecretStore
from manifold.store.db import open_database

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _run(config: LoadedConfig, action: Callable[[Operations], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        if (unusable := unusable_state(config)) is not None:  # the state folder, an SQLite file's folder
            raise OpError(unusable)
        try:
            engine = await open_database(config.database_url)
        except Exception as exc:  # noqa: BLE001 — a clear line, not a driver traceback (which may hold a URL)
            raise OpError(f"cannot open the gateway database: {type(exc).__name__}") from None
        try:
            return await action(Operations(engine, config))
        finally:
            await engine.dispose()

    return asyncio.run(main())


# `${NAME}` in a string (`$${` is a literal `${`), as config/sources.py reads it.
_ENV_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URL_STAND_IN = "https://gateway-environment.invalid"


def env_references(value: Any) -> dict[str, str]:
    """The `${NAME}` references in a body (or a list of bodies), each with a value to check it with: one that
    begins a `url` (`url: ${URL}`, `${BASE}/mcp`) a URL, any other `1` (a string, a number, a host, a port)."""
    found: dict[str, str] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str):
            for m in _ENV_REFERENCE.finditer(node):
                if m.group(1) is None:  # `$${`
                    continue
                if key == "url" and m.start() == 0:
                    found[m.group(1)] = _URL_STAND_IN
                else:
                    found.setdefault(m.group(1), "1")

    walk(value, "")
    return found


class GatewayEnvironment(Mapping[str, str]):
    """The environment the CLI checks catalog objects in: not its own. A running gateway resolves `${NAME}` in
    its environment when it applies the object (admin/catalog.py), so the CLI neither refuses a body because
    NAME is unset here nor accepts one because it is set here (outside probe: `env: {TOKEN: "${VAR}"}` was
    created with VAR set in the shell, then left out by the gateway, "VAR is not set"). Every name is "set",
    to a stand-in that passes where such a value goes; the body is stored with its references as written."""

    def __init__(self, bodies: list[Any]) -> None:
        self._stand_ins = env_references(bodies)

    def __getitem__(self, name: str) -> str:
        return self._stand_ins.get(name, "1")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str)

    def __iter__(self) -> Iterator[str]:
        return iter(self._stand_ins)

    def __len__(self) -> int:
        return len(self._stand_ins)


def _references_note(kind: Kind, object_id: str, body: dict[str, Any]) -> None:
    names = list(env_references(body))
    if not names:
        return
    refs = ", ".join(f"${{{n}}}" for n in names)
    print(
        f"note: {refs} {'is' if len(names) == 1 else 'are'} resolved in the gateway's environment, not this "
        f"command's: set {'it' if len(names) == 1 else 'them'} where the gateway runs. Unset there, the gateway "
        f"leaves {kind.label} '{object_id}' out and logs why.",
        file=sys.stderr,
    )


def _run_catalog(
    config: LoadedConfig, action: Callable[[CatalogOperations], Awaitable[Any]], body: dict[str, Any] | None = None
) -> Any:
    async def with_secrets(ops: Operations) -> Any:
        # A credential typed into an upstream goes to the encrypted store, as through the API.
        try:
            cipher = Cipher.load(config.state_dir)
            await cipher.check(ops.engine)
        except (KeyProblem, WrongKey) as exc:
            raise OpError(str(exc)) from None
        secrets = CatalogSecrets(SecretStore(ops.engine, cipher))
        async with ops.engine.connect() as conn:  # the stored objects are checked with the same stand-ins
            stored = [b for _, _, b in await read_rows(conn)]
        env = GatewayEnvironment([body, *stored])
        return await action(CatalogOperations(ops.engine, config, env=env, secrets=secrets))

    return _run(config, with_secrets)


def _warn_unmatched(config: LoadedConfig, whats: list[str]) -> None:
    """A grant naming no upstream, group or virtual server the gateway has (files and database): most often a
    typo, which would otherwise show only as a 403 later. Said on stderr; the grant stays (it may name one made
    later)."""
    catalog = _run(config, lambda ops: CatalogOperations(ops.engine, config).current())
    effective = catalog.effective_config(config)
    for text in whats:
        reason = unmatched_target(text, effective, " yet")
        if reason is not None:
            print(f"warning: {reason}", file=sys.stderr)


CATALOG_COMMANDS = {"upstreams": Kind.UPSTREAM, "groups": Kind.GROUP, "vservers": Kind.VSERVER}
CATALOG_COLUMNS = {
    Kind.UPSTREAM: ["id", "transport", "target", "source", "problem"],
    Kind.GROUP: ["id", "upstreams", "source", "problem"],
    Kind.VSERVER: ["id", "members", "source", "problem"],
}


def _catalog_row(entry: dict[str, Any]) -> dict[str, Any]:
    """One line of `manifold upstreams|groups|vservers list`."""
    body = entry["body"]
    row = {"id": entry["id"], "source": entry["source"], "problem": entry.get("problem")}
    match body:
        case {"transport": "stdio", "command": command}:
            row["transport"], row["target"] = "stdio", " ".join([command, *body.get("args", [])])
        case {"transport": transport}:
            row["transport"], row["target"] = transport, body.get("url")
        case {"members": members}:
            row["members"] = [m.get("id") or m.get("upstream") for m in members]
        case {"upstreams": upstreams}:
            row["upstreams"] = upstreams
    return row


def _read_body(path: str | None, object_id: str | None) -> dict[str, Any]:
    """The object from a YAML or JSON file (JSON is YAML), or from stdin when no file (or `-`) is given."""
    import yaml

    where = "stdin" if path in (None, "-") else path
    if path is None and sys.stdin.isatty():
        raise OpError("give the object with --file FILE, or pipe it (YAML or JSON) into stdin")
    try:
        if path in (None, "-"):
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        data = yaml.safe_load(text)
    except OSError as exc:
        raise OpError(f"cannot read {where}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise OpError(f"{where} is not valid YAML or JSON{at}") from None
    if not isinstance(data, dict):
        raise OpError(f"{where} must hold one object (a mapping of fields, with its 'id')")
    if object_id is not None and data.setdefault("id", object_id) != object_id:
        raise OpError(f"--id {object_id} differs from the id '{data['id']}' in {where}")
    return data


def _catalog(args: argparse.Namespace, config: LoadedConfig, kind: Kind, as_json: bool) -> None:
    match args.action:
        case "list":
            entries = _run_catalog(config, lambda ops: ops.list(kind))
            _print(entries if as_json else [_catalog_row(e) for e in entries], as_json, CATALOG_COLUMNS[kind])
        case "get":
            entry = _run_catalog(config, lambda ops: ops.get(kind, args.id))
            if as_json:
                _print(entry, True)
            else:
                _print_entry(kind, entry)
        case "create":
            body = _read_body(args.file, args.id)
            try:
                created = _run_catalog(config, lambda ops: ops.create(kind, body), body)
            except InvalidBody as exc:
                problems = "\n".join(f"  {p['field'] or '(object)'}: {p['reason']}" for p in exc.details())
                raise OpError(f"{exc.title}:\n{problems}") from None
            if as_json:
                _print(created, True)
            else:
                print(f"Created {kind.label} '{created['id']}'. A running gateway serves it from its next request.")
            _references_note(kind, created["id"], body)
        case "update":
            body = _read_body(args.file, args.id)
            try:
                updated = _run_catalog(config, lambda ops: ops.update(kind, str(body["id"]), body), body)
            except InvalidBody as exc:
                problems = "\n".join(f"  {p['field'] or '(object)'}: {p['reason']}" for p in exc.details())
                raise OpError(f"{exc.title}:\n{problems}") from None
            if as_json:
                _print(updated, True)
            else:
                print(f"Updated {kind.label} '{updated['id']}'. A running gateway applies it from its next request.")
            _references_note(kind, updated["id"], body)
        case "delete":
            done = _run_catalog(config, lambda ops: ops.delete(kind, args.id))
            _done(
                done, as_json, f"Deleted {kind.label} '{done['id']}'. A running gateway drops it at its next request."
            )
        case _:
            raise OpError(f"unknown command {args.command} {args.action}")


def _print(data: Any, as_json: bool, columns: list[str] | None = None) -> None:
    if as_json or columns is None or not isinstance(data, list):
        print(json.dumps(data, indent=2, default=str))
        return
    rows = [[_cell(item.get(c)) for c in columns] for item in data]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    if not rows:
        print("(none)")


def _done(result: Any, as_json: bool, sentence: str) -> None:
    """A change: the JSON the API answers with `--json` (scripts parse it), one sentence for people."""
    if as_json:
        _print(result, True)
    else:
        print(sentence)


def _teams(principal: dict[str, Any]) -> str:
    return f" in {_cell(principal['teams'])}" if principal.get("teams") else ""


def _revoked(done: dict[str, Any]) -> str:
    n = done.get("keys_revoked") or 0
    return f" and revoked {n} key{'s' if n != 1 else ''}" if n else ""


def _print_entry(kind: Kind, entry: dict[str, Any]) -> None:
    """One catalog object for people: where it comes from, then its body as YAML (the files' format)."""
    import yaml

    print(f"{kind.label} '{entry['id']}' ({entry['source']})")
    if entry.get("problem"):
        print(f"problem: {entry['problem']}")
    print(yaml.safe_dump(entry["body"], sort_keys=False, default_flow_style=False).rstrip())


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v > 1e9:
        import datetime

        return datetime.datetime.fromtimestamp(v, datetime.UTC).strftime("%Y-%m-%d %H:%M")
    if isinstance(v, list):
        return ",".join(map(str, v)) or "-"
    return str(v)


def run(args: argparse.Namespace, load_config: Callable[[], LoadedConfig]) -> int:
    config = load_config()
    try:
        return _dispatch(args, config)
    except OpError as exc:
        print(f"manifold: {exc.message}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace, config: LoadedConfig) -> int:  # noqa: C901 — a flat table of commands
    j = getattr(args, "json", False)
    if args.command in CATALOG_COMMANDS:
        _catalog(args, config, CATALOG_COMMANDS[args.command], j)
        return 0
    match (args.command, args.action):
        case ("keys", "create"):
            body = {"name": args.name, "expires": args.expires, "servers": args.servers}
            body["sa" if args.sa else "user"] = args.sa or args.user
            key = _run(config, lambda ops: ops.create_key({k: v for k, v in body.items() if v is not None}))
            if j:
                _print(key, True)
            else:
                print(f"Created key {key['id']} ({key['name']}) for {key['owner']}.")
                if key["expires_at"]:
                    print(f"Expires: {_cell(key['expires_at'])} UTC")
                print("\nThe key (shown once; only its hash is stored):\n")
                print(f"  {key['token']}\n")
        case ("keys", "list"):
            keys = _run(config, lambda ops: ops.list_keys(args.owner, include_revoked=args.all))
            _print(keys, j, ["id", "name", "owner", "state", "servers", "created_at", "expires_at", "last_used_at"])
        case ("keys", "revoke"):
            done = _run(config, lambda ops: ops.revoke_key(args.id))
            _done(done, j, f"Revoked key {done['id']}: refused from the very next request.")
        case ("users", "list"):
            _print(_run(config, lambda ops: ops.list_users()), j, ["id", "email", "teams", "source"])
        case ("users", "create"):
            body = {"id": args.id, "email": args.email, "teams": args.team or None}
            user = _run(config, lambda ops: ops.create_user({k: v for k, v in body.items() if v is not None}))
            _done(user, j, f"Created user {user['id']}{_teams(user)}.")
        case ("users", "set-teams"):
            user = _run(config, lambda ops: ops.set_user_teams(args.id, {"teams": args.team or []}))
            _done(user, j, f"User {user['id']} is now in {_cell(user['teams']) if user['teams'] else 'no team'}.")
        case ("users", "delete"):
            done = _run(config, lambda ops: ops.delete_user(args.id))
            _done(done, j, f"Deleted user {done['id']}{_revoked(done)}.")
        case ("teams", "list"):
            _print(_run(config, lambda ops: ops.list_teams()), j, ["id", "description", "source"])
        case ("teams", "create"):
            body = {"id": args.id, "description": args.description}
            team = _run(config, lambda ops: ops.create_team({k: v for k, v in body.items() if v is not None}))
            _done(team, j, f"Created team {team['id']}.")
        case ("teams", "delete"):
            done = _run(config, lambda ops: ops.delete_team(args.id))
            _done(done, j, f"Deleted team {done['id']}.")
        case ("sa", "list"):
            _print(_run(config, lambda ops: ops.list_service_accounts()), j, ["id", "description", "teams", "source"])
        case ("sa", "create"):
            body = {"id": args.id, "description": args.description, "teams": args.team or None}
            account = _run(
                config, lambda ops: ops.create_service_account({k: v for k, v in body.items() if v is not None})
            )
            _done(
                account,
                j,
                f"Created service account {account['id']}{_teams(account)}. "
                f"Give it a token with: manifold keys create --sa {account['id']} --name NAME",
            )
        case ("sa", "delete"):
            done = _run(config, lambda ops: ops.delete_service_account(args.id))
            _done(done, j, f"Deleted service account {done['id']}{_revoked(done)}.")
        case ("grants", "list"):
            listed = _run(config, lambda ops: ops.list_grants())
            _print(listed, j, ["id", "who", "claims", "what", "require_approval", "approvers", "source"])
        case ("grants", "add"):
            body = _grant_fields(args)
            grant = _run(config, lambda ops: ops.add_grant(body))
            _done(grant, j, f"Added grant {grant['id']}: {_grant_sentence(grant)}.")
            _warn_unmatched(config, [*grant.get("what", []), *(grant.get("require_approval") or [])])
        case ("grants", "update"):
            body = _grant_fields(args)
            if args.no_approval:
                body |= dict.fromkeys(_GATE_FIELDS)  # null: back to the default, no gate
            if not body:
                raise OpError("nothing to change: give at least one of the options (see --help)")
            grant = _run(config, lambda ops: ops.update_grant(args.id, body))
            _done(grant, j, f"Updated grant {grant['id']}: {_grant_sentence(grant)}.")
        case ("grants", "remove"):
            done = _run(config, lambda ops: ops.remove_grant(args.id))
            _done(done, j, f"Removed grant {done['id']}.")
        case _:
            raise OpError(f"unknown command {args.command} {args.action}")
    return 0


def register(sub: Subparsers) -> None:
    keys = sub.add_parser("keys", help="gateway API keys and service-account tokens")
    ka = keys.add_subparsers(dest="action", required=True)
    create = ka.add_parser("create", help="create a key (shown once)")
    owner = create.add_mutually_exclusive_group(required=True)
    owner.add_argument("--user", help="the user it belongs to (email or subject)")
    owner.add_argument("--sa", help="the service account it belongs to")
    create.add_argument("--name", required=True, help="what the key is for, e.g. laptop")
    create.add_argument("--expires", help="lifetime, e.g. 90d, 12h (default: never)")
    create.add_argument("--servers", nargs="+", help="only these servers (default: whatever grants allow)")
    lst = ka.add_parser("list", help="list keys (never the secrets)")
    lst.add_argument("--owner", help="user email/subject, or sa:<id>")
    lst.add_argument("--all", action="store_true", help="include revoked keys")
    revoke = ka.add_parser("revoke", help="revoke a key (effective on the very next request)")
    revoke.add_argument("id")

    users = sub.add_parser("users", help="users known to the gateway")
    ua = users.add_subparsers(dest="action", required=True)
    ua.add_parser("list", help="every user, with teams and where each is declared")
    uc = ua.add_parser("create", help="add a user (an API key of theirs: manifold keys create --user)")
    uc.add_argument("id", help="email or IdP subject")
    uc.add_argument("--email")
    uc.add_argument("--team", action="append")
    ut = ua.add_parser("set-teams", help="replace a user's teams (none: no --team)")
    ut.add_argument("id")
    ut.add_argument("--team", action="append")
    ua.add_parser("delete", help="remove a user (their keys stop at once)").add_argument("id")

    teams = sub.add_parser("teams", help="teams")
    ta = teams.add_subparsers(dest="action", required=True)
    ta.add_parser("list", help="every team")
    tc = ta.add_parser("create", help="add a team")
    tc.add_argument("id")
    tc.add_argument("--description")
    ta.add_parser("delete", help="remove a team").add_argument("id")

    sa = sub.add_parser("sa", help="service accounts (non-human principals with their own tokens)")
    sa_actions = sa.add_subparsers(dest="action", required=True)
    sa_actions.add_parser("list", help="every service account")
    sc = sa_actions.add_parser(
        "create", help="add a service account (its token: manifold keys create --sa ID --name NAME)"
    )
    sc.add_argument("id")
    sc.add_argument("--description")
    sc.add_argument("--team", action="append")
    sa_actions.add_parser("delete", help="remove a service account (its tokens stop at once)").add_argument("id")

    grants = sub.add_parser("grants", help="who may use what")
    ga = grants.add_subparsers(dest="action", required=True)
    ga.add_parser("list", help="every grant, from the files and the database")
    _grant_options(ga.add_parser("add", help="let someone use servers or tools (applies at once)"), new=True)
    gupdate = ga.add_parser("update", help="change an API- or CLI-made grant: only the options given change")
    gupdate.add_argument("id")
    _grant_options(gupdate, new=False)
    gupdate.add_argument("--no-approval", action="store_true", help="remove the approval gate")
    ga.add_parser("remove", help="remove an API- or CLI-made grant (applies at once)").add_argument("id")

    catalog_actions = [_add_catalog_commands(sub, name, kind) for name, kind in CATALOG_COMMANDS.items()]

    for actions in (ka, ua, ta, sa_actions, ga, *catalog_actions):
        for action in actions.choices.values():
            # The database's own log lines (an object created, deleted) are not for the terminal: warnings only.
            action.set_defaults(func=run, log_level="warning")
            action.add_argument("--json", action="store_true", help="print JSON")


def _add_catalog_commands(sub: Subparsers, name: str, kind: Kind) -> Subparsers:
    example = {
        Kind.UPSTREAM: "id: github\ntransport: http\nurl: https://example.com/mcp",
        Kind.GROUP: "id: dev-tools\nupstreams: [github, jira]",
        Kind.VSERVER: "id: eng\nmembers:\n  - upstream: github",
    }[kind]
    parser = sub.add_parser(
        name,
        help=f"{kind.label}s created at run time (and, read-only, those declared in files)",
        description=f"Objects use the config files' format, plus 'id'. For example:\n\n{example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True)
    one = f"{'an' if kind.label[0] in 'aeiou' else 'a'} {kind.label}"  # an upstream, a group
    actions.add_parser("list", help=f"every {kind.label}, with where it is declared")
    actions.add_parser("get", help=f"one {kind.label}").add_argument("id")
    create = actions.add_parser("create", help=f"create {one} (a running gateway serves it at once)")
    create.add_argument("--file", "-f", help="a YAML or JSON file (default, or '-': read stdin)")
    create.add_argument("--id", help="the id, when the file does not give one")
    kept = " (a credential given as (hidden) is kept)" if kind is Kind.UPSTREAM else ""
    update = actions.add_parser("update", help=f"replace {one} created at run time{kept}")
    update.add_argument("--file", "-f", help="a YAML or JSON file (default, or '-': read stdin)")
    update.add_argument("--id", help="the id, when the file does not give one")
    actions.add_parser("delete", help=f"delete {one} created at run time").add_argument("id")
    return actions


_GATE_FIELDS = ("require_approval", "approvers", "approval_timeout_seconds", "approval_valid_seconds", "self_approval")


def _grant_options(parser: argparse.ArgumentParser, *, new: bool) -> None:
    """The options of `grants add` (`new`: who and what required) and `grants update` (each replaces the field)."""
    parser.add_argument(
        "--who",
        required=new,
        help="user:<email|subject>, team:<id>, sa:<id>, idp:<id>, ext:<idp>:<identity>, authenticated or anyone",
    )
    parser.add_argument("--what", required=new, action="append", help="server:, group:, vserver:, tool:<up>/<glob>")
    parser.add_argument("--claim", action="append", help="claim=value (with idp:)")
    parser.add_argument("--description")
    parser.add_argument("--require-approval", action="append", help="calls of these tools wait for approval (tool:...)")
    parser.add_argument("--approvers", help="who may approve (a who selector, e.g. team:sre)")
    parser.add_argument("--approval-timeout", type=float, help="seconds a request waits (default 900)")
    parser.add_argument("--approval-valid", type=float, help="seconds an approval lets the same call run (default 0)")
    parser.add_argument("--self-approval", action="store_true", help="an approver may approve their own call")


def _grant_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The grant fields the `grants add`/`update` options give (those not given are left out)."""
    body: dict[str, Any] = {
        "who": args.who,
        "what": args.what,
        "claims": dict(c.split("=", 1) for c in args.claim) if args.claim else None,
        "description": args.description,
        "require_approval": args.require_approval,
        "approvers": args.approvers,
        "approval_timeout_seconds": args.approval_timeout,
        "approval_valid_seconds": args.approval_valid,
        "self_approval": args.self_approval or None,
    }
    return {k: v for k, v in body.items() if v is not None}


def _grant_sentence(grant: dict[str, Any]) -> str:
    gate = f"; calls of {_cell(g)} wait for {grant['approvers']}" if (g := grant["require_approval"]) else ""
    return f"{grant['who']} may use {_cell(grant['what'])}{gate}"
