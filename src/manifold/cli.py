"""`manifold` command line: `serve`, `check`, and the admin commands (keys, users, teams, sa, grants,
upstreams, groups, vservers, explain, audit) that work on the gateway's database."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from manifold.admin.cli import add_commands, run_admin
from manifold.audit import add_cli as add_audit_cli
from manifold.audit import run_audit_cli
from manifold.config.loaded import LoadedConfig
from manifold.config.loader import load_config
from manifold.config.problems import ConfigError
from manifold.outbound import connections_cli, secrets_cli

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


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from manifold.app import ManifoldApp, build_services
    from manifold.identity import dev_key

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
    key = None if settings.allow_unauthenticated else dev_key.load_or_create(config.state_dir)
    base = settings.public_url or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    app = ManifoldApp(build_services(config, dev_key=key, public_base=base))

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
        print(f"\nDevelopment key, an admin key for user 'dev' ({where}):\n  {key}\n")
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
        proxy_headers=False,  # X-Forwarded-* from any client would be trusted otherwise; public_url says the origin
        timeout_graceful_shutdown=3,
    )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from manifold.admin.explain import run_explain

    return run_explain(args, _load(Path(args.config)))


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
    add_commands(sub)
    explain = sub.add_parser("explain", help="may this principal use this tool? and which grant decides")
    explain.add_argument("--as", dest="principal", required=True, help="alice@corp.com, sa:<id>, team:<id>")
    explain.add_argument("--server", required=True, help="virtual server or upstream id")
    explain.add_argument("--tool", help="exposed tool name (default: explain access to the server)")
    explain.add_argument("--team", action="append", help="extra teams, e.g. from an IdP's groups claim")
    explain.set_defaults(func=cmd_explain)
    secrets_cli.add_commands(sub).set_defaults(func=lambda a: secrets_cli.run(a, _load(Path(a.config))))
    connections_cli.add_commands(sub).set_defaults(func=lambda a: connections_cli.run(a, _load(Path(a.config))))
    audit = add_audit_cli(sub)
    audit.set_defaults(func=lambda a: run_audit_cli(a, _load(Path(a.config))))
    args = parser.parse_args(argv)
    if getattr(args, "admin", False):
        return run_admin(args, _load(Path(args.config)))
    logging.basicConfig(
        level=getattr(logging, getattr(args, "log_level", "info").upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
