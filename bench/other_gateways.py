"""tools/call through Manifold and through another Python MCP gateway (FastMCP 4.1.2's proxy), side by side.

    .venv/bin/python -m bench.other_gateways [--calls 300] [--warmup 30] [--rounds 2] [--sessions 16]
                                             [--concurrent-calls 100] [--upstream fast|fastmcp]
                                             [--no-shared] [--json FILE]

Paths to one upstream process, each hop its own process: **direct**; through **Manifold** (`manifold serve`
started by tests/e2e/harness.py's `run_gateway`, the upstream behind `/mcp/bench`, as bench_call); through
**FastMCP's proxy** (bench/fastmcp_proxy.py: `fastmcp.server.create_proxy(<upstream url>)` with its defaults, a
fresh backend client per request, its own `http_app()` under uvicorn); and (unless --no-shared) the same proxy
with **one shared backend session** (`fastmcp_proxy.py --shared-session`, FastMCP's other documented strategy).
Per client era (mcp 2.3.0 `Client(mode="legacy")`, i.e.
2025-11-25, and `mode="2026-07-28"`):

- a probe first: one session per path lists the tools and calls `noop`; a path that fails it is reported as
  not doing that era (with the error) and left out of that era's measurements;
- sequential: per round one session per path, open side by side, `--warmup` calls each, then `--calls` timed
  calls per path alternating call by call in a rotating order (A B C, B C A, C A B, ...), so drift hits all
  paths alike; p50/p99 pool the rounds. "added ms" = the path's p50 - direct p50. "CPU ms/call" = the
  gateway's (or proxy's) process utime+stime over the timed loop / its calls (±0.02 ms at 600 calls);
- burst: `--sessions` sessions opened and warmed, then all make `--concurrent-calls` calls at once; calls/s
  over the burst, median of `--rounds` rounds, the paths' order rotating per round; the gateway's and the
  upstream's CPU per call in the burst.

A path that fails in the middle of a measurement is reported with its error; the others go on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

from bench.bench_call import concurrent_round
from bench.common import (
    BENCH,
    ERA_LABEL,
    ERAS,
    CpuMeter,
    OwnCpuMeter,
    fmt,
    gateway_headers,
    listening_process,
    mcp_client,
    ms,
    p50,
    percentile,
    quiet_sdk_warnings,
    run_upstreams,
    signed,
    table,
)
from tests.e2e.harness import run_gateway
from tests.upstreams.launch import free_port

TOOL = "noop"
FASTMCP_PROXY = str(BENCH / "fastmcp_proxy.py")
PATH_LABEL = {"direct": "direct", "manifold": "Manifold", "fastmcp": "FastMCP proxy",
              "fastmcp-shared": "FastMCP proxy, shared"}


@dataclass
class Route:
    url: str
    headers: dict[str, str]
    meter: CpuMeter  # the gateway's / proxy's process (pid None for direct)


@dataclass
class PathResult:
    error: str = ""  # why this path did not do (or finish) this era
    latencies: list[float] = field(default_factory=list)  # seconds, all rounds pooled
    cpu: float = 0.0  # the gateway's / proxy's CPU seconds over the timed sequential calls
    rates: list[float] = field(default_factory=list)  # burst calls/s, one per round
    burst_cpu: float = 0.0
    burst_upstream_cpu: float = 0.0
    burst_client_cpu: float = 0.0
    burst_calls: int = 0

    def summary(self, direct: PathResult) -> dict[str, float | str]:
        d50 = p50(direct.latencies)
        mine = p50(self.latencies)
        calls = len(self.latencies)
        rate, d_rate = p50(self.rates), p50(direct.rates)

        def per_burst_call(seconds: float) -> float:
            return ms(seconds / self.burst_calls) if self.burst_calls else float("nan")

        return {
            "error": self.error,
            "p50_ms": ms(mine), "p99_ms": ms(percentile(self.latencies, 99)),
            "added_p50_ms": ms(mine - d50), "ratio_p50": mine / d50 if d50 == d50 else float("nan"),
            "cpu_ms_per_call": ms(self.cpu / calls) if calls else float("nan"),
            "calls_per_s": rate, "burst_ratio": rate / d_rate if d_rate == d_rate and d_rate else float("nan"),
            "burst_cpu_ms_per_call": per_burst_call(self.burst_cpu),
            "burst_upstream_cpu_ms_per_call": per_burst_call(self.burst_upstream_cpu),
            "burst_client_cpu_ms_per_call": per_burst_call(self.burst_client_cpu),
        }


class PathFailed(Exception):
    def __init__(self, path: str, error: BaseException) -> None:
        super().__init__(f"{path}: {describe(error)}")
        self.path = path
        self.error = error


def describe(error: BaseException) -> str:
    """One line for a table cell: the innermost exception of an exception group, its type and message."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text[:160]}"


def failed_path(error: BaseException) -> PathFailed | None:
    if isinstance(error, PathFailed):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            if (found := failed_path(inner)) is not None:
                return found
    return None


async def guarded(path: str, action: Callable[[], Awaitable[Any]]) -> Any:
    """Run `action`, naming `path` in whatever it raises (so one path's failure is told from another's)."""
    try:
        return await action()
    except Exception as error:
        raise PathFailed(path, error) from error


# ---- the FastMCP proxy process ---------------------------------------------------------------------


@asynccontextmanager
async def fastmcp_proxy(target_url: str, *options: str) -> AsyncIterator[tuple[str, subprocess.Popen[bytes], Any]]:
    """bench/fastmcp_proxy.py in front of `target_url`: its URL, its process and its stderr file."""
    port = free_port()
    command = [sys.executable, FASTMCP_PROXY, "--port", str(port), "--target", target_url, *options]
    async with listening_process(command, port) as (process, stderr):
        yield f"http://127.0.0.1:{port}/mcp", process, stderr


# ---- measurements ----------------------------------------------------------------------------------


async def probe(name: str, path: Route, mode: str) -> str:
    """'' if one session of this era lists the tools and calls `noop` through `path`, else the error."""
    async def attempt() -> None:
        async with mcp_client(path.url, mode, path.headers) as client:
            await client.list_tools()
            result = await client.call_tool(TOOL, {})
            if result.is_error:
                raise RuntimeError(f"{TOOL} answered an error: {result.content}")

    try:
        with anyio.fail_after(60):
            await attempt()
    except Exception as error:
        return describe(error)
    return ""


async def sequential_round(paths: dict[str, Route], mode: str, warmup: int, calls: int,
                           results: dict[str, PathResult]) -> None:
    """One session per path, side by side; the timed calls alternate the paths call by call, the order
    rotating (A B C, B C A, C A B, ...). Adds each path's samples and its process's CPU to `results`."""
    names = list(paths)
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for name in names:
            clients[name] = await guarded(name, lambda name=name: stack.enter_async_context(
                mcp_client(paths[name].url, mode, paths[name].headers)))

        async def call(name: str) -> None:
            result = await guarded(name, lambda: clients[name].call_tool(TOOL, {}))
            if result.is_error:
                raise PathFailed(name, RuntimeError(f"{TOOL} answered an error: {result.content}"))

        for name in names:
            await guarded(name, clients[name].list_tools)  # a 2026-07-28 client must list before calling
            for _ in range(warmup):
                await call(name)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for name in names:
            paths[name].meter.start()
        for i in range(calls):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                begin = time.perf_counter()
                await call(name)
                samples[name].append(time.perf_counter() - begin)
        for name in names:
            results[name].latencies += samples[name]
            results[name].cpu += paths[name].meter.stop()


async def measure_era(paths: dict[str, Route], mode: str, args: argparse.Namespace, upstream_meter: CpuMeter
                      ) -> dict[str, PathResult]:
    results = {name: PathResult() for name in paths}
    for name, path in paths.items():
        results[name].error = await probe(name, path, mode)
    if results["direct"].error:  # nothing to compare with
        return results

    def working() -> dict[str, Route]:
        return {name: path for name, path in paths.items() if not results[name].error}

    for _ in range(args.rounds):
        while True:
            active = working()
            try:
                await sequential_round(active, mode, args.warmup, args.calls, results)
                break
            except Exception as error:
                failed = failed_path(error)
                if failed is None or failed.path == "direct":
                    raise
                # Drop the failing path and measure this round again without it (a round's samples are kept only
                # once it has finished: those of the broken one were taken with that path in the rotation).
                results[failed.path].error = f"failed during sequential calls: {describe(failed.error)}"
    client_meter = OwnCpuMeter()
    for round_index in range(args.rounds):
        names = list(working())
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            path, result = paths[name], results[name]
            if result.error:
                continue
            try:
                rate = await concurrent_round(path.url, mode, path.headers, args.sessions, args.concurrent_calls,
                                              [path.meter, upstream_meter, client_meter])
            except Exception as error:
                if name == "direct":
                    raise
                result.error = f"failed in the burst: {describe(error)}"
                continue
            result.rates.append(rate)
            result.burst_cpu += path.meter.spent
            result.burst_upstream_cpu += upstream_meter.spent
            result.burst_client_cpu += client_meter.spent
            result.burst_calls += args.sessions * args.concurrent_calls
    return results


async def run(args: argparse.Namespace) -> dict[str, dict[str, PathResult]]:
    results: dict[str, dict[str, PathResult]] = {}
    async with run_upstreams(args.upstream, 1, 1) as upstreams:
        upstream = upstreams[0]
        upstream_meter = CpuMeter(upstream.process.pid)
        async with contextlib.AsyncExitStack() as stack:
            gateway = await stack.enter_async_context(
                run_gateway({"bench": {"transport": "http", "url": upstream.url}}))
            paths = {
                "direct": Route(upstream.url, {}, CpuMeter(None)),
                "manifold": Route(gateway.url("bench"), gateway_headers(gateway), CpuMeter(gateway.process.pid)),
            }
            proxies = {"fastmcp": ()} if args.no_shared else {"fastmcp": (), "fastmcp-shared": ("--shared-session",)}
            stderrs = {}
            for name, options in proxies.items():
                url, process, stderrs[name] = await stack.enter_async_context(fastmcp_proxy(upstream.url, *options))
                paths[name] = Route(url, {}, CpuMeter(process.pid))
            for mode in ERAS:
                era = ERA_LABEL[mode]
                results[era] = await measure_era(paths, mode, args, upstream_meter)
                print(f"  done: {era}", flush=True)
            for name, stderr in stderrs.items():
                stderr.seek(0)
                if "Traceback" in (logged := stderr.read().decode(errors="replace")):
                    print(f"{PATH_LABEL[name]} logged:\n{logged[-3000:]}", file=sys.stderr)
    return results


# ---- the report ------------------------------------------------------------------------------------


def report(results: dict[str, dict[str, PathResult]], args: argparse.Namespace) -> str:
    rows = []
    notes = []
    for era, paths in results.items():
        direct = paths["direct"]
        for name, result in paths.items():
            s = result.summary(direct)
            label = PATH_LABEL[name]
            if result.error and not result.latencies:
                rows.append([era, label, *(["-"] * 9), "not measured: see note"])
                notes.append(f"{era}, {label}: {result.error}")
                continue
            own = name != "direct"
            note = ""
            if result.error:
                note = "failed part-way (note)"
                notes.append(f"{era}, {label}: {result.error}")
            rows.append([
                era, label, fmt(s["p50_ms"]), fmt(s["p99_ms"]),
                signed(s["added_p50_ms"]) if own else "", fmt(s["ratio_p50"]) if own else "",
                fmt(s["cpu_ms_per_call"]) if own else "",
                fmt(s["calls_per_s"], 0) if result.rates else "-",
                fmt(s["burst_ratio"]) if own and result.rates else "",
                fmt(s["burst_cpu_ms_per_call"]) if own and result.rates else "",
                fmt(s["burst_upstream_cpu_ms_per_call"]) if result.rates else "",
                note,
            ])
    n = args.calls * args.rounds
    lines = [
        f"tools/call `{TOOL}`, {args.upstream} upstream; sequential: {args.rounds} rounds x {args.calls} calls per "
        f"path (after {args.warmup} warm-up), paths alternating call by call, p50/p99 over {n} calls; burst: "
        f"{args.sessions} sessions x {args.concurrent_calls} calls at once, median of {args.rounds} rounds",
        table(["client era", "path", "p50 ms", "p99 ms", "added ms", "÷ direct", "hop CPU ms/call",
               "burst calls/s", "÷ direct", "burst hop CPU ms/call", "burst upstream CPU ms/call", ""], rows),
        "hop CPU = the gateway's or the proxy's own process (utime+stime) per call: over the sequential calls, "
        "then over the burst",
    ]
    if notes:
        lines += ["", *(f"note: {note}" for note in notes)]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="tools/call: direct vs Manifold vs FastMCP's proxy")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--concurrent-calls", type=int, default=100)
    parser.add_argument("--upstream", choices=("fast", "fastmcp"), default="fast")
    parser.add_argument("--no-shared", action="store_true",
                        help="leave out the FastMCP proxy with one shared backend session (its default only)")
    parser.add_argument("--json", help="also write the figures (and the raw samples) to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with quiet_sdk_warnings():
        results = anyio.run(run, args)
    print(report(results, args))
    figures = {era: {name: result.summary(paths["direct"]) for name, result in paths.items()}
               for era, paths in results.items()}
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "figures": figures,
                       "samples": {era: {name: asdict(r) for name, r in paths.items()}
                                   for era, paths in results.items()}}, out, indent=1)
    return figures


if __name__ == "__main__":
    main()
