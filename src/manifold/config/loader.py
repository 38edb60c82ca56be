"""Load `manifold.yaml` and `virtual_servers/*.yaml` into a `LoadedConfig`, or explain every problem.

Order of work, per file: parse YAML keeping each node's line and resolve `${ENV_NAME}` references
(sources.py), validate with the pydantic models (models.py; their errors rewritten by problems.py), then
check what no single model can see (cross_references.py). Problems from all files are collected and raised
together as one `ConfigError`, so a user fixes everything in one pass.

Secrets: `${...}` values are never put into a `Problem`. Each Problem is built from the file, the field path
and a reason written here or by a validator; as a last guard any resolved value (4+ characters) that
still appears in a reason is replaced by its `${NAME}` reference. `LoadedConfig.env_sourced` records which
fields came from the environment, so later code can treat them as secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from manifold.config.cross_references import (
    check_groups,
    check_identity,
    check_members,
    check_raw_upstream_refs,
    check_server_id,
)
from manifold.config.loaded import LoadedConfig, resolve_dir
from manifold.config.models import GatewayConfig, GatewaySettings, VirtualServerConfig
from manifold.config.problems import ConfigError, Problem, in_file_order, redact_secrets, report_validation
from manifold.config.rate_limit_rules import check_rate_limits
from manifold.config.sources import SourceFile, read_yaml, resolve_env

# Top-level sections that may be present with everything under them commented out (YAML null).
NULLABLE_SECTIONS = (
    *("gateway", "upstreams", "groups", "identity", "users", "teams", "service_accounts", "grants"),
    "rate_limits",
)


def load_config(path: Path, *, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Load and check the whole configuration; raise `ConfigError` listing every problem found."""
    env = os.environ if env is None else env
    path = Path(path).expanduser().absolute()
    base = path.parent
    problems: list[Problem] = []
    used: dict[str, str] = {}
    env_sourced: set[tuple[str, str]] = set()

    main = SourceFile(path, path.name, problems)
    raw = read_yaml(main)
    gateway: GatewayConfig | None = None
    settings = GatewaySettings()
    raw_settings: Any = {}
    upstream_ids: list[str] = []
    if raw is not None:
        # `groups:` with everything under it commented out is YAML null: read it as "none".
        raw = {k: v for k, v in raw.items() if not (k in NULLABLE_SECTIONS and v is None)}
        raw = resolve_env(main, raw, (), env, used)
        try:
            gateway = GatewayConfig.model_validate(raw)
        except ValidationError as e:
            report_validation(main, GatewayConfig, e)
        settings, raw_settings, upstream_ids = _best_effort(raw, gateway)
        check_groups(main, raw.get("groups"), upstream_ids)
        if gateway is not None:
            check_identity(main, gateway)
            check_rate_limits(main, gateway)
    env_sourced |= {(main.display, p) for p in main.env_sourced}

    state_dir = resolve_dir(base, settings.state_dir)
    vs_dir = resolve_dir(base, settings.virtual_servers_dir)
    servers: dict[str, VirtualServerConfig] = {}
    files: dict[str, Path] = {}
    if vs_dir.is_dir():
        # manifold.yaml unreadable (its YAML problem is listed): which upstreams exist is unknown, so the
        # virtual servers' references to them are not checked rather than each reported as unknown.
        known = upstream_ids if raw is not None else None
        servers, files = _load_virtual_servers(base, vs_dir, settings, known, env, used, problems, env_sourced)
    elif isinstance(raw_settings, dict) and "virtual_servers_dir" in raw_settings:
        # The default folder may be absent (no virtual servers); a folder someone named must exist.
        main.add(("gateway", "virtual_servers_dir"), f"folder '{_display(base, vs_dir)}' does not exist")

    if problems or gateway is None:
        raise ConfigError(redact_secrets(in_file_order(problems), used))
    return LoadedConfig(
        path=path,
        base_dir=base,
        gateway=gateway,
        state_dir=state_dir,
        virtual_servers_dir=vs_dir,
        virtual_servers=dict(sorted(servers.items())),
        virtual_server_files=files,
        env_sourced=frozenset(env_sourced),
    )


def _best_effort(raw: dict, gateway: GatewayConfig | None) -> tuple[GatewaySettings, Any, list[str]]:
    """Settings and upstream ids to check the virtual servers against, even when manifold.yaml has
    problems (those are already reported): the valid gateway settings or defaults, and the upstream keys."""
    raw_settings = raw.get("gateway", {})
    if gateway is not None:
        return gateway.gateway, raw_settings, list(gateway.upstreams)
    usable: dict[str, Any] = {}
    if isinstance(raw_settings, dict):
        for key in ("state_dir", "virtual_servers_dir", "namespace_separator"):
            if key in raw_settings:
                try:
                    GatewaySettings.model_validate({key: raw_settings[key]})
                    usable[key] = raw_settings[key]
                except ValidationError:
                    pass
    settings = GatewaySettings.model_validate(usable)
    raw_upstreams = raw.get("upstreams")
    ids = [str(k) for k in raw_upstreams] if isinstance(raw_upstreams, dict) else []
    return settings, raw_settings, ids


def _load_virtual_servers(
    base: Path,
    vs_dir: Path,
    settings: GatewaySettings,
    upstream_ids: list[str] | None,
    env: Mapping[str, str],
    used: dict[str, str],
    problems: list[Problem],
    env_sourced: set[tuple[str, str]],
) -> tuple[dict[str, VirtualServerConfig], dict[str, Path]]:
    servers: dict[str, VirtualServerConfig] = {}
    files: dict[str, Path] = {}
    paths = sorted(
        p for p in vs_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file() and not p.name.startswith(".")
    )
    for p in paths:
        f = SourceFile(p, _display(base, p), problems)
        raw = read_yaml(f)
        if raw is None:
            continue
        raw = resolve_env(f, raw, (), env, used)
        env_sourced |= {(f.display, x) for x in f.env_sourced}
        try:
            server = VirtualServerConfig.model_validate(raw)
        except ValidationError as e:
            report_validation(f, VirtualServerConfig, e)
            check_raw_upstream_refs(f, raw.get("members"), upstream_ids)
            continue
        server_id = check_server_id(f, p.stem, server, upstream_ids)
        if server_id is None:
            continue
        if server_id in files:
            f.add(
                ("id",) if server.id else (),
                f"virtual server id '{server_id}' is also defined in {_display(base, files[server_id])}",
            )
            continue
        check_members(f, server, upstream_ids, server.separator or settings.namespace_separator)
        if server.id is None:
            server = server.model_copy(update={"id": server_id})
        servers[server_id] = server
        files[server_id] = p
    return servers, files


def _display(base: Path, p: Path) -> str:
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return str(p)
