"""Run the real gateway (`manifold serve`, its own process) against a config written by the test, and
connect real MCP clients to it."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import yaml
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests import postgres, zygote
from tests.upstreams.launch import free_port

REPO = Path(__file__).resolve().parents[2]
KEY = "mfd_test-key-0123456789abcdefghijklmnop"
STARTUP_DEADLINE_S = 30.0


@dataclass
class Gateway:
    base: str
    key: str
    process: subprocess.Popen[bytes] | zygote.ZygoteProcess
    log_path: Path
    config_dir: Path

    def url(self, server: str) -> str:
        return f"{self.base}/mcp/{server}"

    def sse_url(self, server: str) -> str:
        return f"{self.base}/sse/{server}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def database_url(self) -> str:
        """The database this gateway uses (SQLite under its state dir, or PostgreSQL: tests/postgres.py)."""
        config = yaml.safe_load((self.config_dir / "manifold.yaml").read_text())
        gateway = config.get("gateway") or {}
        return gateway.get("database_url") or f"sqlite+aiosqlite:///{Path(gateway['state_dir']) / 'manifold.db'}"

    def http(self, **kwargs: Any) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(headers={"Authorization": f"Bearer {self.key}"}, timeout=30, **kwargs)

    @asynccontextmanager
    async def client(
        self, server: str, *, mode: str = "legacy", transport: str = "http", key: str | None = None, **kwargs: Any
    ) -> AsyncIterator[Client]:
        """An mcp 2.3.0 client. mode: "legacy" (2025-11-25 handshake) or "2026-07-28" / "auto"."""
        headers = {"Authorization": f"Bearer {key or self.key}"}
        if transport == "sse":
            target = sse_client(self.sse_url(server), headers=headers)
        else:
            target = streamable_http_client(
                self.url(server), http_client=httpx2.AsyncClient(headers=headers, timeout=60)
            )
        async with Client(target, mode=mode, **kwargs) as client:
            yield client


def write_config(
    directory: Path,
    upstreams: dict[str, Any],
    virtual_servers: dict[str, Any] | None = None,
    gateway: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    *,
    migrated: bool = False,
) -> Path:
    """`extra`: more top-level sections (identity, users, teams, grants, audit...). Without `grants`, one
    grant lets every caller use everything, so tests of the relay need not state access rules. `migrated`: an
    SQLite database under the state dir starts as a copy of an already migrated, empty one (as PostgreSQL's
    always does here): the migrations from nothing take ~0.12 s per gateway, and tests/unit/test_schema.py
    runs them."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "virtual_servers").mkdir(exist_ok=True)
    config = {"gateway": {"state_dir": str(directory / "state"), **(gateway or {})}, "upstreams": upstreams}
    if "database_url" not in config["gateway"] and (url := database_url(directory)) is not None:
        config["gateway"]["database_url"] = url
    if migrated and "database_url" not in config["gateway"]:
        _copy_of_migrated_sqlite(Path(config["gateway"]["state_dir"]) / "manifold.db")
    config.update(extra or {})
    config.setdefault("grants", [{"who": "anyone", "what": ["server:*", "vserver:*"]}])
    path = directory / "manifold.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    for sid, body in (virtual_servers or {}).items():
        (directory / "virtual_servers" / f"{sid}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return path


_migrated_sqlite: list[Path] = []  # this test process's migrated, empty SQLite database, made on first use


def _copy_of_migrated_sqlite(target: Path) -> None:
    """`target` (unless it exists: a gateway started again on its directory) becomes a copy of an SQLite
    database holding the schema's tables and nothing else."""
    if target.exists():
        return
    if not _migrated_sqlite:
        made = Path(tempfile.mkdtemp(prefix="manifold-migrated-")) / "manifold.db"
        atexit.register(shutil.rmtree, made.parent, True)

        async def upgrade() -> None:
            from manifold.store import schema
            from manifold.store.db import connect

            engine = connect(f"sqlite+aiosqlite:///{made}")
            try:
                await schema.upgrade(engine)
            finally:
                await engine.dispose()

        # The caller may be inside a running event loop (run_gateway): migrate on a thread of its own.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, upgrade()).result()
        _migrated_sqlite.append(made)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copyfile(_migrated_sqlite[0], target)


def database_url(directory: Path) -> str | None:
    """The `database_url` for a gateway configured in `directory`: None (SQLite under its state dir) unless
    MANIFOLD_TEST_DATABASE=postgresql, then a fresh PostgreSQL database in the test cluster (tests/postgres.py;
    a copy of an already migrated, empty one), the same one each time the same directory is configured again
    (a restarted gateway finds its rows). run_gateway drops it with its temporary directory."""
    if not postgres.wanted():
        return None
    marker = directory / "database_url"
    if marker.exists():
        return marker.read_text().strip()
    url = postgres.cluster().new_database(migrated=True)
    marker.write_text(url)
    return url


def stdio_upstream(script: str, *args: str, **extra: Any) -> dict[str, Any]:
    return {"transport": "stdio", "command": sys.executable, "args": [script, *args], **extra}


@asynccontextmanager
async def run_gateway(
    upstreams: dict[str, Any],
    virtual_servers: dict[str, Any] | None = None,
    gateway: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    directory: Path | None = None,
) -> AsyncIterator[Gateway]:
    """`directory`: run in this folder (config, state, log) instead of a fresh temporary one, and leave it
    there, so a gateway started again on it finds the first one's database."""
    throwaway = directory is None
    place = (
        contextlib.nullcontext(str(directory))
        if directory is not None
        else tempfile.TemporaryDirectory(prefix="manifold-test-")
    )
    with place as tmp, _dropped_after(Path(tmp) / "database_url", throwaway):
        directory = Path(tmp)
        config = write_config(directory, upstreams, virtual_servers, gateway, extra, migrated=True)
        port = free_port()
        log_path = directory / "gateway.log"
        process_env = {**os.environ, "MANIFOLD_DEV_KEY": KEY, **(env or {})}
        with open(log_path, "ab") as log_file:
            process = zygote.spawn(
                [sys.executable, "-m", "manifold.cli", "--config", str(config), "serve", "--port", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=process_env,
                cwd=REPO,
            )
        gw = Gateway(base=f"http://127.0.0.1:{port}", key=KEY, process=process, log_path=log_path, config_dir=directory)
        try:
            await _wait_ready(gw)
            yield gw
        finally:
            if process.poll() is None:
                process.terminate()
                deadline = time.monotonic() + 5
                while process.poll() is None and time.monotonic() < deadline:
                    await anyio.sleep(0.01)
                if process.poll() is None:
                    process.kill()
                    process.wait()
        # Every test that ends well also checks this: whatever it did, from start to stop, the gateway logged
        # no traceback (rule 5: clear messages, never a stack).
        log = gw.log()
        if "Traceback (most recent call last)" in log:
            at = log.index("Traceback (most recent call last)")
            raise AssertionError(f"the gateway logged a traceback:\n{log[max(0, at - 1500) : at + 3000]}")


@contextlib.contextmanager
def _dropped_after(marker: Path, throwaway: bool) -> Iterator[None]:
    """Drop the gateway's PostgreSQL database (named in `marker`) when its temporary directory goes too."""
    try:
        yield
    finally:
        if throwaway and marker.exists():
            postgres.cluster().drop_database(marker.read_text().strip())


async def _wait_ready(gw: Gateway) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    async with httpx2.AsyncClient(timeout=1) as http:
        while True:
            if gw.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {gw.process.returncode}:\n{gw.log()[-4000:]}")
            try:
                if (await http.get(f"{gw.base}/healthz")).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway did not become ready:\n{gw.log()[-4000:]}")
            await anyio.sleep(0.01)


async def manifold_cli(
    gw: Gateway, *args: str, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run `manifold --config <the gateway's config> ARGS...` in its own process, against the database the
    running gateway uses (as an operator would, e.g. `keys create`, `keys revoke`, `audit`, `explain`).
    `input` is written to its stdin."""
    command = [sys.executable, "-m", "manifold.cli", "--config", str(gw.config_dir / "manifold.yaml"), *args]
    done = await zygote.run(command, input=input, cwd=REPO)
    if check and done.returncode != 0:
        raise AssertionError(
            f"manifold {' '.join(args)} exited with {done.returncode}:\n{done.stderr.decode(errors='replace')}"
        )
    return done
