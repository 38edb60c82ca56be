"""`manifold` command line: `serve`, `check`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from manifold.config.loader import ConfigError, LoadedConfig, load_config

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _load(path: Path) -> LoadedConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"manifold: configuration has problems:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except FileNotFoundError:
        print(f"manifold: no configuration file at {path}", file=sys.stderr)
        raise SystemExit(2) from None


def client_snippet(url: str, key: str) -> str:
    return json.dumps(
        {"mcpServers": {"manifold": {"type": "http", "url": url, "headers": {"Authorization": f"Bearer {key}"}}}},
        indent=2,
    )


async def _prepare(config: LoadedConfig):  # type: ignore[no-untyped-def]
    from manifold.identity import dev_key
    from manifold.store.db import open_database

    settings = config.settings
    config.state_dir.mkdir(parents=True, exist_ok=True)
    engine = await open_database(config.database_url)
    if settings.allow_unauthenticated:
        key = None
    else:
        key = dev_key.load_or_create(config.state_dir)
        await dev_key.register(engine, key)
    await engine.dispose()
    return key


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from manifold.app import ManifoldApp, build_services
    from manifold.identity.dev_key import DevKeyAuth, hash_key

    config = _load(Path(args.config))
    settings = config.settings
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    if settings.allow_unauthenticated and host not in LOOPBACK_HOSTS:
        print(
            "manifold: refusing to serve without authentication on a non-loopback address "
            f"({host}); remove gateway.allow_unauthenticated or bind to 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    key = asyncio.run(_prepare(config))
    app = ManifoldApp(build_services(config, DevKeyAuth(hash_key(key) if key else None)))

    base = settings.public_url or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    servers = sorted(app.s.views)
    first = next(iter(config.virtual_servers), servers[0] if servers else "demo")
    url = f"{base}/mcp/{first}"
    print(f"Manifold is serving {len(servers)} servers on {base}")
    for sid in servers:
        print(f"  {base}/mcp/{sid}")
    if key:
        where = (
            "from MANIFOLD_DEV_KEY" if os.environ.get("MANIFOLD_DEV_KEY") else f"kept in {config.state_dir / 'dev-key'}"
        )
        print(f"\nDevelopment key ({where}):\n  {key}\n")
        print('Client config (VS Code .vscode/mcp.json uses "servers" instead of "mcpServers"):')
        print(client_snippet(url, key))
        print(
            f'\nClaude Code:\n  claude mcp add --transport http manifold {url} --header "Authorization: Bearer {key}"\n'
        )
    sys.stdout.flush()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=args.log_level,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=3,
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from manifold.config.check import run_check

    return run_check(Path(args.config))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="manifold", description="Manifold MCP gateway")
    parser.add_argument("--config", "-c", default="manifold.yaml", help="path to manifold.yaml")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)
    check = sub.add_parser("check", help="validate manifold.yaml and virtual_servers/*.yaml")
    check.set_defaults(func=cmd_check)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, getattr(args, "log_level", "info").upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
