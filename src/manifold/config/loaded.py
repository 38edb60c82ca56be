"""`LoadedConfig`: the whole configuration, checked, with paths resolved; what the rest of the gateway reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from manifold.config.models import GatewayConfig, GatewaySettings, MemberConfig, UpstreamConfig, VirtualServerConfig


@dataclass(frozen=True)
class LoadedConfig:
    path: Path  # the config file, absolute
    base_dir: Path  # its folder: relative paths in the config are relative to it
    gateway: GatewayConfig
    state_dir: Path  # absolute
    virtual_servers_dir: Path  # absolute
    virtual_servers: dict[str, VirtualServerConfig]  # from files, by id, sorted by id
    virtual_server_files: dict[str, Path] = field(default_factory=dict)  # id -> file
    # (file as shown in problems, dotted field path) of every value that came from ${...}: treat as secret.
    env_sourced: frozenset[tuple[str, str]] = frozenset()

    @property
    def settings(self) -> GatewaySettings:
        return self.gateway.gateway

    @property
    def upstreams(self) -> dict[str, UpstreamConfig]:
        return self.gateway.upstreams

    @property
    def database_url(self) -> str:
        return self.settings.database_url or f"sqlite+aiosqlite:///{self.state_dir / 'manifold.db'}"

    def separator_for(self, server: VirtualServerConfig) -> str:
        return server.separator or self.settings.namespace_separator

    def stdio_cwd(self, upstream_id: str) -> Path:
        """Where a stdio upstream runs: its `cwd` (relative to the config file's folder), else that folder.
        A relative `command` such as `.venv/bin/python` is therefore found relative to the same folder."""
        cwd = self.upstreams[upstream_id].cwd
        return self.base_dir if cwd is None else resolve_dir(self.base_dir, cwd)

    def openapi_spec(self, spec: str) -> str:
        """An openapi upstream's `spec` as the gateway reads it: a URL as is, a file relative to the config
        file's folder."""
        if spec.startswith(("http://", "https://")):
            return spec
        return str(resolve_dir(self.base_dir, Path(spec)))

    def is_env_sourced(self, file: str, field_path: str) -> bool:
        return (file, field_path) in self.env_sourced

    def upstream_as_virtual_server(self, upstream_id: str) -> VirtualServerConfig:
        if upstream_id not in self.upstreams:
            raise KeyError(upstream_id)
        return upstream_as_virtual_server(upstream_id, description=self.upstreams[upstream_id].description)

    def served_servers(self) -> dict[str, VirtualServerConfig]:
        return served_servers(self)


def upstream_as_virtual_server(upstream_id: str, *, description: str | None = None) -> VirtualServerConfig:
    """The one-member virtual server under which every upstream is also served: all its tools, resources
    and prompts, under their own names (namespace off)."""
    return VirtualServerConfig(
        id=upstream_id,
        description=description,
        namespace=False,
        members=[MemberConfig(upstream=upstream_id)],
    )


def served_servers(config: LoadedConfig) -> dict[str, VirtualServerConfig]:
    """Every server the gateway serves at /mcp/{id}: the virtual servers from files (sorted by id), then
    one per upstream in config order. Ids never clash: the loader refuses a file id equal to an upstream id."""
    served = dict(config.virtual_servers)
    for upstream_id in config.upstreams:
        served[upstream_id] = config.upstream_as_virtual_server(upstream_id)
    return served


def resolve_dir(base: Path, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else base / p
