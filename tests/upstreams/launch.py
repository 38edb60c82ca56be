"""Start a real upstream MCP server process on a free loopback port, for tests.

    from tests.upstreams.launch import KITCHEN, run_http_upstream

    async with run_http_upstream(KITCHEN, "--name", "alpha") as url:      # streamable HTTP
        async with mcp.Client(url) as client: ...
    async with run_http_upstream(KITCHEN, "--transport", "sse") as url:   # .../sse
        ...
    async with run_http_upstream("manifold.demo.toolbox") as url: ...     # a module: python -m
    async with run_ts_fixture() as url: ...                              # ts_fixture.mjs under Node 22
    async with run_everything_http() as url: ...                         # server-everything, loopback only

`script` is a file path (run as `python script`) or, when no such file exists, a module name
(run as `python -m script`). The helper appends `--port N` (a port it found free by binding
port 0) and, unless `args` already choose one, `--transport http`; so the server must accept
those flags, as kitchen.py, legacy_server.py and manifold.demo.toolbox do.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from tests import zygote

UPSTREAMS = Path(__file__).resolve().parent
REPO = UPSTREAMS.parent.parent
KITCHEN = str(UPSTREAMS / "kitchen.py")
LEGACY_SERVER = str(UPSTREAMS / "legacy_server.py")
LEGACY_PYTHON = str(REPO / ".venv-legacy" / "bin" / "python")
NODE_MODULES = REPO / "tests" / "node" / "node_modules"
NODE = str(NODE_MODULES / ".bin" / "node")
TS_FIXTURE = str(UPSTREAMS / "ts_fixture.mjs")
EVERYTHING = str(NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js")
LOOPBACK_ONLY = str(UPSTREAMS / "loopback_only.cjs")

HOST = "127.0.0.1"
STARTUP_DEADLINE_S = 20.0
STOP_DEADLINE_S = 5.0


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it when binding port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _transport_of(args: tuple[str, ...]) -> str | None:
    for index, arg in enumerate(args):
        if arg == "--transport" and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--transport="):
            return arg.split("=", 1)[1]
    return None


def _command(script: str, python: str) -> list[str]:
    return [python, script] if os.path.exists(script) else [python, "-m", script]


@asynccontextmanager
async def run_http_upstream(
    script: str,
    *args: str,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
    startup_deadline_s: float = STARTUP_DEADLINE_S,
) -> AsyncIterator[str]:
    """Run `script` on a free 127.0.0.1 port; yield its MCP URL (/mcp, or /sse for sse).

    Waits until the port accepts TCP connections (polling, up to `startup_deadline_s`);
    fails early, with the server's stderr, if the process exits first. Kills it afterwards.
    """
    transport = _transport_of(args)
    extra = () if transport else ("--transport", "http")
    port = free_port()
    command = [*_command(script, python), *args, *extra, "--port", str(port)]
    path = "/sse" if transport == "sse" else "/mcp"
    process_env = {**os.environ, **(env or {})}
    # stderr goes to a file, not a pipe: nobody reads it while the server runs, and a full
    # pipe would block the server.
    with tempfile.TemporaryFile() as stderr:
        process = zygote.spawn(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=process_env, cwd=REPO
        )
        try:
            await _wait_until_listening(process, port, startup_deadline_s, stderr)
            yield f"http://{HOST}:{port}{path}"
        finally:
            await stop_process(process)


@asynccontextmanager
async def run_ts_fixture(startup_deadline_s: float = STARTUP_DEADLINE_S) -> AsyncIterator[str]:
    """Run tests/upstreams/ts_fixture.mjs (the TypeScript-SDK conformance fixture) under tests/node's
    Node 22 on a free 127.0.0.1 port; yield its URL, http://127.0.0.1:PORT/mcp. Stops it afterwards."""
    port = free_port()
    async with _run_node(port, [TS_FIXTURE, "--port", str(port)], {}, startup_deadline_s):
        yield f"http://{HOST}:{port}/mcp"


@asynccontextmanager
async def run_everything_http(startup_deadline_s: float = STARTUP_DEADLINE_S) -> AsyncIterator[str]:
    """Run @modelcontextprotocol/server-everything in streamableHttp mode on a free port, kept on
    127.0.0.1 by the loopback_only.cjs preload (it has no host setting); yield http://127.0.0.1:PORT/mcp."""
    port = free_port()
    args = ["--require", LOOPBACK_ONLY, EVERYTHING, "streamableHttp"]
    async with _run_node(port, args, {"PORT": str(port)}, startup_deadline_s):
        yield f"http://{HOST}:{port}/mcp"


@asynccontextmanager
async def _run_node(port: int, args: list[str], env: dict[str, str], startup_deadline_s: float) -> AsyncIterator[None]:
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [NODE, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, **env},
            cwd=REPO,
        )
        try:
            await _wait_until_listening(process, port, startup_deadline_s, stderr)
            yield
        finally:
            await stop_process(process)


async def _wait_until_listening(
    process: subprocess.Popen | zygote.ZygoteProcess, port: int, deadline_s: float, stderr
) -> None:
    deadline = time.monotonic() + deadline_s
    while not await anyio.to_thread.run_sync(_accepts_connections, port):
        if process.poll() is not None:
            stderr.seek(0)
            raise RuntimeError(
                f"upstream {process.args!r} exited with {process.returncode} before listening:\n"
                + stderr.read().decode(errors="replace")[-4000:]
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"upstream {process.args!r} did not listen on port {port} within {deadline_s}s")
        await anyio.sleep(0.05)


async def stop_process(process: subprocess.Popen | zygote.ZygoteProcess) -> None:
    """Terminate a test process, and kill it if it does not end in time."""
    if process.poll() is None:
        process.terminate()
    deadline = time.monotonic() + STOP_DEADLINE_S
    while process.poll() is None and time.monotonic() < deadline:
        await anyio.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait()
