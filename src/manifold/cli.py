"""`manifold` command line: `serve`, `check`, and the admin commands (keys, users, teams, sa, grants,
upstreams, groups, vservers, explain, secrets, connections, audit) that work on the gateway's database.

Every command is added the same way: a module's `register(subparsers)` adds its parsers, each naming its
handler with `set_defaults(func=...)`. A handler is a `Command`: it takes the parsed arguments and a function
that loads the configuration (so `check`, which reports problems its own way, need not call it) and returns
the exit status. A parser may also set `log_level`, how much the command logs (default: info)."""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from manifold.admin import cli as admin_cli
from manifold.admin import explain as explain_cli
from manifold.admin import export as export_cli
from manifold.admin import tools_cli
from manifold.audit import cli as audit_cli
from manifold.authserver import cli as authserver_cli
from manifold.config import init_cli
from manifold.config.loaded import LoadedConfig
from manifold.config.loader import load_config
from manifold.config.problems import ConfigError
from manifold.config.state import state_problems
from manifold.outbound import connections_cli, secrets_cli
from manifold.store import cli as db_cli

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# One format for every log line, Manifold's and uvicorn's alike.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

Command = Callable[[argparse.Namespace, Callable[[], LoadedConfig]], int]


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


def nothing_served_lines(config: LoadedConfig, base: str, *, signed_in_with_key: bool) -> list[str]:
    """The banner of a gateway serving no server yet: how to add one (served at once, no restart)."""
    manifold = "manifold" if config.path == Path.cwd() / "manifold.yaml" else f"manifold --config {config.path}"
    console = f"  or in the admin console: {base}/admin/upstreams/new"
    return [
        f"Manifold is serving 0 servers on {base}: add one, and it is served at once (no restart).",
        f"An upstream MCP server, then served alone at {base}/mcp/<its id>: under `upstreams:` in {config.path},",
        f"  or from a YAML file (id, transport, url or command): {manifold} upstreams create --file server.yaml",
        console + (" (sign in with the development key below)" if signed_in_with_key else ""),
        f"A virtual server mixing several: one *.yaml file in {config.virtual_servers_dir},",
        f"  or {manifold} vservers create --file eng.yaml",
        "Every field: docs/configuration.md in Manifold's repository; a commented example: manifold init DIR",
    ]


def log_config(level: str, *, json_lines: bool = False) -> dict[str, object]:
    """uvicorn's logging, in Manifold's format: one handler on the root logger, uvicorn's loggers propagate
    to it (uvicorn's own config would give them handlers and formats of their own). `json_lines`
    (`telemetry.logs: json`): one JSON object per line, with request and trace ids (telemetry/logs.py)."""
    formatter: dict[str, object] = (
        {"()": "manifold.telemetry.logs.JsonFormatter"} if json_lines else {"format": LOG_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"manifold": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "manifold", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def _listen_on_any_port(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, 0))
    except OSError:
        listener.close()
        raise
    return listener


def cmd_serve(args: argparse.Namespace, load_config: Callable[[], LoadedConfig]) -> int:
    # Imported here, not at the top: every admin command (`manifold keys list`, ...) starts through this
    # module, and the server stack (uvicorn, the whole gateway) would double their start-up time.
    import uvicorn

    from manifold.asgi import write_combining_http
    from manifold.identity import dev_key
    from manifold.runtime.compose import build_app, compose
    from manifold.runtime.server import GatewayServer

    config = load_config()
    # The state folder and an SQLite database file, made and opened before anything uses them: a problem is a
    # line naming the file, field and line, not a traceback from the start-up (outside probe).
    if problems := state_problems(config, make=True):
        print("manifold: configuration has problems:\n" + "\n".join(map(str, problems)), file=sys.stderr)
        return 2
    if config.gateway.telemetry.logs == "json":  # from the first line on (composing logs too)
        logging.config.dictConfig(log_config(args.log_level, json_lines=True))
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
    listening: list[socket.socket] | None = None
    if port == 0:
        # The port the system picks, known before the runtime is composed: its URLs (OAuth metadata, connect
        # links) and the banner name the real one, not ":0".
        try:
            listening = [_listen_on_any_port(host)]
        except OSError as exc:
            print(f"manifold: cannot listen on {host}: {exc.strerror or exc}", file=sys.stderr)
            return 3
        port = listening[0].getsockname()[1]
    key = None if settings.allow_unauthenticated else dev_key.load_or_create(config.state_dir)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host  # an IPv6 literal
    base = settings.public_url or f"http://{shown_host}:{port}"
    runtime = compose(config, dev_key=key, public_base=base)
    app = build_app(runtime)

    def banner() -> None:
        # After the runtime has started: the served set then holds every server, the files' and those
        # created through the admin API or the CLI.
        servers = runtime.served.ids()
        if not servers:
            # Nothing to connect a client to: how to add a server, not snippets for one that does not exist.
            lines = nothing_served_lines(config, base, signed_in_with_key=key is not None)
        else:
            count = f"{len(servers)} server{'' if len(servers) == 1 else 's'}"
            lines = [f"Manifold is serving {count} on {base} (MCP: /mcp/<id>, legacy SSE: /sse/<id>)"]
            width = max(len(f"{base}/mcp/{sid}") for sid in servers)
            lines += [f"  {f'{base}/mcp/{sid}'.ljust(width)}  {base}/sse/{sid}" for sid in servers]
        if key:
            where = (
                "from MANIFOLD_DEV_KEY"
                if os.environ.get("MANIFOLD_DEV_KEY")
                else f"kept in {config.state_dir / 'dev-key'}"
            )
            lines += [f"\nDevelopment key, an admin key for user 'dev' ({where}):\n  {key}\n"]
        if key and servers:
            url = f"{base}/mcp/{next(iter(config.virtual_servers), servers[0])}"
            if config.gateway.identity.authorization_server.enabled:
                # The IDE finds the sign-in from the 401 (docs/gateway-oauth.md): no key in its config.
                lines += [
                    f"Sign in from your IDE, no key in its config: point it at {url}",
                    "(it opens the browser; sign in there with the key above). Your servers and their snippets:",
                    f"  {base}/servers\n",
                    "Claude Code:",
                    f"  claude mcp add --transport http manifold {url}\n",
                    "Or with the key as a bearer token (scripts, clients without OAuth;",
                    'VS Code\'s .vscode/mcp.json uses "servers" instead of "mcpServers"):',
                ]
            else:
                lines += ['Client config (VS Code .vscode/mcp.json uses "servers" instead of "mcpServers"):']
            lines += [
                client_snippet(url, key),
                "\nClaude Code with the key:\n"
                f'  claude mcp add --transport http manifold {url} --header "Authorization: Bearer {key}"\n',
            ]
        print("\n".join(lines), flush=True)

    limits = config.gateway.gateway.limits
    server = GatewayServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=args.log_level,
            log_config=log_config(args.log_level, json_lines=config.gateway.telemetry.logs == "json"),
            loop="uvloop",
            # httptools; asgi.py
            http=write_combining_http(
                limits.request_head_bytes,
                limits.request_head_seconds,
                limits.request_body_seconds,
                limits.connections,
            ),
            lifespan="on",
            access_log=False,
            proxy_headers=False,  # X-Forwarded-* from any client would be trusted otherwise; public_url says the origin
            server_header=False,  # "server: uvicorn" on every answer told any scanner what to try
            # Served as https (TLS at a proxy in front): browsers are told to use nothing else for a year.
            headers=[("strict-transport-security", "max-age=31536000")] if base.startswith("https://") else [],
            timeout_graceful_shutdown=config.gateway.gateway.shutdown_grace_seconds,  # type: ignore[arg-type]
        ),
        on_started=banner,
        on_stopping=app.end_streams,
    )
    try:
        server.run(sockets=listening)
    except KeyboardInterrupt:
        # Ctrl-C: uvicorn, once stopped (as on SIGTERM), raises the SIGINT again so the process ends by it; Python
        # turned it into a KeyboardInterrupt and printed two tracebacks on the way out. Ended with a shell's
        # status for Ctrl-C instead (uvicorn's own command line swallows it), exit handlers run as usual.
        return 130
    if not server.started:
        return 3  # uvicorn's start-up failure status; the reason (a port in use, a failed start) is in the log
    return 0


def cmd_check(args: argparse.Namespace, load_config: Callable[[], LoadedConfig]) -> int:
    from manifold.config.check import run_check  # `check` loads the files itself, reporting every problem
    from manifold.upstream.openapi_spec import check_documents

    return run_check(
        Path(args.config), lister=explain_cli.live_tool_names if args.live else None, documents=check_documents
    )


def _port(text: str) -> int:
    """A TCP port: out of range, it was bound modulo 65536 while the banner printed the number given (ops probe)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0–65535)")
    return port


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The gateway's own commands: `serve` and `check`."""
    serve = subparsers.add_parser("serve", help="run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=_port, help="TCP port, 0–65535 (0: any free one)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)
    check = subparsers.add_parser("check", help="validate manifold.yaml and virtual_servers/*.yaml")
    check.add_argument(
        "--live", action="store_true", help="also list the upstreams' tools and warn for names that match none"
    )
    check.set_defaults(func=cmd_check)


# In the order `manifold --help` lists them.
REGISTRARS = (
    register,
    init_cli.register,
    admin_cli.register,
    explain_cli.register,
    export_cli.register,
    tools_cli.register,
    secrets_cli.register,
    connections_cli.register,
    authserver_cli.register,
    audit_cli.register,
    db_cli.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="manifold", description="Manifold MCP gateway")
    parser.add_argument("--config", "-c", default="manifold.yaml", help="path to manifold.yaml")
    parser.set_defaults(log_level="info")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for register_commands in REGISTRARS:
        register_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format=LOG_FORMAT,
    )
    command: Command = args.func
    return command(args, lambda: _load(Path(args.config)))


if __name__ == "__main__":
    sys.exit(main())
