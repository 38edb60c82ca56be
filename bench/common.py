"""Shared pieces of the benchmarks: upstream and gateway processes, clients, statistics, CPU accounting.

The gateway runs as its real process (`manifold serve`, started by tests/e2e/harness.py's `run_gateway`)
and the upstreams as their own processes, so client, gateway and upstream never share a CPU-time budget
or an event loop: what the gateway adds shows up both in latency and in its own /proc CPU counters.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.harness import Gateway
from tests.upstreams.launch import KITCHEN, free_port

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
FAST_UPSTREAM = str(BENCH / "fast_upstream.py")
FASTMCP_UPSTREAM = str(BENCH / "fastmcp_upstream.py")
BYTE_RELAY = str(BENCH / "byte_relay.py")
UPSTREAM_KINDS = ("fast", "fast-untraced", "fastmcp", "kitchen")
ERAS = ("legacy", "2026-07-28")
ERA_LABEL = {"legacy": "2025-11-25", "2026-07-28": "2026-07-28"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STARTUP_DEADLINE_S = 30.0


# ---- statistics -----------------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on sorted samples: no interpolation surprises at p99."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def p50(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def ms(seconds: float) -> float:
    return seconds * 1000.0


# ---- CPU accounting --------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), from /proc/<pid>/stat, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        raw = stat.read().decode()
    # The command name (field 2) may contain spaces and parentheses: split after its closing ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5), counted from 1
    return (utime + stime) / CLOCK_TICKS


@dataclass
class CpuMeter:
    """CPU seconds a process spent between `start()` and `stop()`; resolution is one clock tick (10 ms)."""

    pid: int | None
    spent: float = 0.0
    _begin: float = 0.0

    def start(self) -> None:
        if self.pid is not None:
            self._begin = process_cpu_seconds(self.pid)

    def stop(self) -> float:
        if self.pid is not None:
            self.spent = process_cpu_seconds(self.pid) - self._begin
        return self.spent


@dataclass
class OwnCpuMeter:
    """The same as CpuMeter for this (the client's) process: `time.process_time`, all threads."""

    spent: float = 0.0
    _begin: float = 0.0

    def start(self) -> None:
        self._begin = time.process_time()

    def stop(self) -> float:
        self.spent = time.process_time() - self._begin
        return self.spent


# ---- upstream processes ----------------------------------------------------------------------------


@dataclass
class Upstream:
    url: str
    process: subprocess.Popen


def upstream_command(kind: str, name: str, tools: int, port: int) -> list[str]:
    """The command line of one upstream: the fast low-level one, the FastMCP one, or kitchen.py padded to
    `tools` tools."""
    if kind in ("fast", "fast-untraced", "fastmcp"):
        script = FASTMCP_UPSTREAM if kind == "fastmcp" else FAST_UPSTREAM
        command = [sys.executable, script, "--name", name, "--tools", str(tools), "--port", str(port)]
        return command + (["--no-otel"] if kind == "fast-untraced" else [])
    if kind == "kitchen":
        # kitchen has 17 tools of its own; pad with trivial ones to reach `tools`.
        extra = ",".join(f"pad_{i:02d}" for i in range(max(0, tools - 17)))
        command = [sys.executable, KITCHEN, "--transport", "http", "--name", name, "--port", str(port)]
        return command + (["--extra-tools", extra] if extra else [])
    raise ValueError(f"unknown upstream kind {kind!r} (one of {', '.join(UPSTREAM_KINDS)})")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@asynccontextmanager
async def listening_process(command: list[str], port: int) -> AsyncIterator[tuple[subprocess.Popen[bytes], Any]]:
    """Run `command`, a server told to listen on 127.0.0.1:`port`, until it listens: the process and its stderr
    (a temporary file, quoted if it exits first). Stopped afterwards (SIGTERM, SIGKILL after 5 s)."""
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                   cwd=REPO)  # fmt: skip
        try:
            with anyio.fail_after(STARTUP_DEADLINE_S):
                while not _listening(port):
                    if process.poll() is not None:
                        stderr.seek(0)
                        raise RuntimeError(f"{command[1]} exited with {process.returncode}:\n"
                                           + stderr.read().decode(errors="replace")[-3000:])  # fmt: skip
                    await anyio.sleep(0.05)
            yield process, stderr
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@asynccontextmanager
async def run_upstreams(kind: str, count: int, tools: int) -> AsyncIterator[list[Upstream]]:
    """Start `count` upstream processes at once (not one after another: each spends ~1 s importing the
    SDK) and wait until every one listens. Stops them all afterwards."""
    started: list[Upstream] = []
    with tempfile.TemporaryFile() as stderr:
        try:
            for index in range(count):
                port = free_port()
                command = upstream_command(kind, f"up{index + 1:02d}", tools, port)
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=stderr, cwd=REPO)
                started.append(Upstream(f"http://127.0.0.1:{port}/mcp", process))
            deadline = time.monotonic() + STARTUP_DEADLINE_S
            for upstream in started:
                port = int(upstream.url.rsplit(":", 1)[1].split("/")[0])
                while not _listening(port):
                    if upstream.process.poll() is not None:
                        stderr.seek(0)
                        raise RuntimeError(f"upstream {upstream.process.args!r} exited:\n"
                                           + stderr.read().decode(errors="replace")[-3000:])
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"upstream on port {port} did not listen in {STARTUP_DEADLINE_S}s")
                    await anyio.sleep(0.05)
            yield started
        finally:
            for upstream in started:
                if upstream.process.poll() is None:
                    upstream.process.terminate()
            for upstream in started:
                try:
                    upstream.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    upstream.process.kill()
                    upstream.process.wait()


# ---- clients ---------------------------------------------------------------------------------------


@asynccontextmanager
async def mcp_client(url: str, mode: str, headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    """One mcp 2.3.0 client session. Client-side response caching is off (`cache=None`): with it, a
    2026-07-28 tools/list could be answered from the client's own memory and measure nothing."""
    async with httpx2.AsyncClient(headers=headers or {}, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, cache=None) as client:
            yield client


def gateway_headers(gateway: Gateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway.key}"}


@contextmanager
def quiet_sdk_warnings() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"  # NaN check without math


def signed(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:+.{digits}f}"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain fixed-width text table (right-aligned numbers, left-aligned first column)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(parts))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---- a lean raw-HTTP client (2026-07-28 is sessionless, so one fixed request can be replayed) -----

MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "manifold-bench", "version": "0.1.0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def modern_request(method: str, params: dict[str, Any] | None = None, name: str | None = None
                   ) -> tuple[dict[str, str], bytes]:
    """Headers and body of one 2026-07-28 request, as mcp 2.3.0's client writes it (captured on the wire)."""
    import orjson

    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**(params or {}), "_meta": MODERN_META}}
    return headers, orjson.dumps(body)


async def raw_round(url: str, headers: dict[str, str], body: bytes, warmup: int, count: int,
                    meter: CpuMeter) -> list[float]:
    """Time `count` POSTs of one request over one keep-alive aiohttp connection, reading each reply whole.

    aiohttp costs far less client CPU per request than the SDK client (~0.6 ms against ~2.9 ms for httpx,
    measured before the relay was written), so these samples are closer to what the servers themselves add.
    A reply that is not a JSON-RPC result fails.
    """
    import aiohttp

    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        async def once() -> None:
            async with http.post(url, data=body) as response:
                payload = await response.read()
                if response.status != 200 or b'"result"' not in payload:
                    raise RuntimeError(f"{url} answered {response.status}: {payload[:300]!r}")

        for _ in range(warmup):
            await once()
        samples = []
        meter.start()
        for _ in range(count):
            begin = time.perf_counter()
            await once()
            samples.append(time.perf_counter() - begin)
        meter.stop()
        return samples


# ---- paired comparisons: several paths through one gateway, call by call --------------------------


async def interleaved(
    paths: dict[str, tuple[str, dict[str, str]]], *, tool: str, calls: int, warmup: int
) -> dict[str, dict[str, list[float]]]:
    """Time the same tools/call on every path, alternating call by call (A B C, B C A, C A B, ...), with one
    SDK client (2025-11-25) and one lean raw client (2026-07-28) per path held open throughout.

    For comparisons inside one gateway process (auth off vs API key, static vs oauth upstream): alternating
    per call pairs the samples, so drift and other load on a 2-core machine hit every path alike, which
    alternating whole rounds does not (a round-level swing of ±10% hides a 5% target)."""
    import contextlib

    import aiohttp

    names = list(paths)
    samples: dict[str, dict[str, list[float]]] = {n: {"sdk": [], "raw": []} for n in names}
    method_headers, body = modern_request("tools/call", {"name": tool, "arguments": {}}, name=tool)
    async with contextlib.AsyncExitStack() as stack:
        sdk = {}
        raw = {}
        for name, (url, headers) in paths.items():
            sdk[name] = await stack.enter_async_context(mcp_client(url, "legacy", headers))
            await sdk[name].list_tools()
            raw[name] = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=1), headers={**headers, **method_headers}
                )
            )

        async def raw_call(name: str) -> None:
            async with raw[name].post(paths[name][0], data=body) as response:
                payload = await response.read()
                if response.status != 200 or b'"result"' not in payload:
                    raise RuntimeError(f"{name} answered {response.status}: {payload[:300]!r}")

        async def sdk_call(name: str) -> None:
            result = await sdk[name].call_tool(tool, {})
            if result.is_error:
                raise RuntimeError(f"{name}: {tool} failed: {result.content}")

        for kind, call in (("sdk", sdk_call), ("raw", raw_call)):
            for _ in range(warmup):
                for name in names:
                    await call(name)
            for i in range(calls):
                shift = i % len(names)
                for name in names[shift:] + names[:shift]:
                    begin = time.perf_counter()
                    await call(name)
                    samples[name][kind].append(time.perf_counter() - begin)
    return samples


def paired_figures(samples: dict[str, dict[str, list[float]]], baseline: str) -> dict[str, dict[str, float]]:
    """p50 per path and client, and each path's ratio to `baseline` (from `interleaved`)."""
    base = samples[baseline]
    return {
        name: {
            "sdk_p50_ms": ms(p50(s["sdk"])),
            "raw_p50_ms": ms(p50(s["raw"])),
            "sdk_ratio": p50(s["sdk"]) / p50(base["sdk"]),
            "raw_ratio": p50(s["raw"]) / p50(base["raw"]),
        }
        for name, s in samples.items()
    }


def paired_report(figures: dict[str, dict[str, float]], *, label: str, baseline: str, target: str) -> str:
    rows = [
        [name, fmt(r["sdk_p50_ms"], 3), fmt(r["sdk_ratio"], 3), fmt(r["raw_p50_ms"], 3), fmt(r["raw_ratio"], 3)]
        for name, r in figures.items()
    ]
    head = [label, "p50 ms (sdk, 2025-11-25)", f"÷ {baseline}", "p50 ms (raw, 2026-07-28)", f"÷ {baseline}"]
    return table(head, rows) + f"\ntarget: {target}"


def paired_main(doc: str, run: Any, report: Any, argv: list[str] | None, options: Any = None) -> dict:
    """The command line shared by the paired benchmarks (bench_auth, bench_outbound); `options(parser)` adds
    a benchmark's own."""
    import argparse
    import json

    import anyio

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json")
    if options is not None:
        options(parser)
    args = parser.parse_args(argv)
    results = anyio.run(run, args)
    print(report(results), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results
