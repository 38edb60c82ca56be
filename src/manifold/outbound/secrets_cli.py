"""`manifold secrets …`: the encrypted secret store, and the key that encrypts it.

    manifold secrets set NAME        the value comes from stdin (never from the command line, where it
                                     would sit in shell history and `ps`); used as `secret:NAME`
    manifold secrets list            names and dates, never values
    manifold secrets delete NAME
    manifold secrets rotate-key      a new primary key; every stored secret, OAuth token and client secret is
                                     re-encrypted with it; the old key stays listed second

`register(subparsers)` adds the command to the CLI (cli.py); it runs `run(args, load_config)`.

The crypto and database imports are inside the commands: `manifold` imports every command module to
register it, and `manifold --help` or `manifold keys list` should not pay for them.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.config.loaded import LoadedConfig
from manifold.config.state import unusable_state

if TYPE_CHECKING:
    from manifold.security.crypto import Cipher


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "secrets",
        help="the encrypted secret store (secret:NAME values) and its key",
        description="Manage secrets stored encrypted in the gateway's database; refer to them as secret:NAME.",
    )
    sub = parser.add_subparsers(dest="secrets_command", required=True)
    put = sub.add_parser("set", help="store a secret; the value is read from stdin")
    put.add_argument("name")
    listing = sub.add_parser("list", help="list stored secrets (names only)")
    listing.add_argument("--json", dest="as_json", action="store_true", help="one JSON object per line")
    remove = sub.add_parser("delete", help="delete a stored secret")
    remove.add_argument("name")
    sub.add_parser(
        "rotate-key",
        help="re-encrypt everything with a new key (the old key stays valid as the second key)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, load_config: Callable[[], LoadedConfig]) -> int:
    from manifold.security.crypto import KeyProblem, WrongKey
    from manifold.security.secret_store import InvalidSecretName

    config = load_config()
    value = None
    if args.secrets_command == "set":
        value = _read_value(args.name)
        if value is None:
            return 2
    try:
        return asyncio.run(_run(args, config, value))
    except (WrongKey, KeyProblem, InvalidSecretName) as exc:
        print(f"manifold secrets: {exc}", file=sys.stderr)
        return 1


def _read_value(name: str) -> str | None:
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of secret '{name}' (input hidden): ")
    else:
        value = sys.stdin.read()
        # `echo value | manifold secrets set X` adds one newline that is not part of the secret.
        if value.endswith("\r\n"):
            value = value[:-2]
        elif value.endswith("\n"):
            value = value[:-1]
    if not value:
        print(f"manifold secrets: no value for '{name}' on stdin; nothing stored", file=sys.stderr)
        return None
    return value


async def _run(args: argparse.Namespace, config: LoadedConfig, value: str | None) -> int:
    from manifold.outbound.oauth import tables  # noqa: F401 — the tables must exist before create_all
    from manifold.security.crypto import Cipher
    from manifold.security.secret_store import SecretStore
    from manifold.store.db import open_database

    if (unusable := unusable_state(config)) is not None:
        print(f"manifold secrets: {unusable}", file=sys.stderr)
        return 1
    try:
        engine = await open_database(config.database_url)
    except Exception as exc:  # noqa: BLE001 — a clear line, not a driver traceback (which may hold a URL)
        print(f"manifold secrets: cannot open the gateway database: {type(exc).__name__}", file=sys.stderr)
        return 1
    try:
        cipher = Cipher.load(config.state_dir)
        await cipher.check(engine)
        store = SecretStore(engine, cipher)
        match args.secrets_command:
            case "set":
                assert value is not None
                await store.set(args.name, value)
                print(f"stored secret '{args.name}': use it as secret:{args.name}")
                return 0
            case "list":
                for info in await store.list():
                    updated = datetime.fromtimestamp(info.updated_at, UTC).isoformat(timespec="seconds")
                    if args.as_json:
                        print(json.dumps({"name": info.name, "updated_at": updated}))
                    else:
                        print(f"{info.name}\t{updated}")
                return 0
            case "delete":
                if await store.delete(args.name):
                    print(f"deleted secret '{args.name}'")
                    return 0
                print(f"manifold secrets: no secret named '{args.name}'", file=sys.stderr)
                return 1
            case "rotate-key":
                return await _rotate(engine, cipher)
            case other:
                raise AssertionError(f"unknown secrets command {other}")
    finally:
        await engine.dispose()


async def _rotate(engine: AsyncEngine, cipher: Cipher) -> int:
    from manifold.outbound.oauth.tables import ENCRYPTED_COLUMNS
    from manifold.security.crypto import ENV_VAR, Cipher, generate_key, write_key_file

    keys = [generate_key(), *[k for k in cipher.keys]]
    keys = list(dict.fromkeys(keys))
    rotated = Cipher(keys, source="the new key")
    key_file = cipher.key_file
    if key_file is not None:
        # The file first: if re-encrypting fails half-way, the old key (second in the file) still reads
        # every row, and a running gateway re-reads the file when it meets a row it cannot decrypt.
        write_key_file(key_file, keys)
    count = 0
    async with engine.begin() as conn:
        for table, key_columns, column in ENCRYPTED_COLUMNS:
            columns = [table.c[name] for name in key_columns]
            rows = (await conn.execute(select(*columns, table.c[column]))).all()
            for row in rows:
                token = getattr(row, column)
                if token is None:
                    continue
                where = [c == getattr(row, c.name) for c in columns]
                await conn.execute(update(table).where(*where).values({column: rotated.rotate(token)}))
                count += 1
    print(f"re-encrypted {count} stored values with a new key")
    if key_file is not None:
        print(f"wrote the new key to {key_file} (the previous key stays listed second, so nothing becomes unreadable)")
    else:
        print(f"\nSet {ENV_VAR} to this value before the gateway next starts (new key first, previous second):")
        print(f"{ENV_VAR}={','.join(keys)}")
    return 0
