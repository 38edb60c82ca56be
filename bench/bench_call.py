"""tools/call overhead: the same trivial `noop` call direct to an upstream and through the real gateway.

    .venv/bin/python -m bench.bench_call [--calls 300] [--warmup 30] [--rounds 2] [--burst-rounds 6]
                                         [--sessions 16]
                                         [--concurrent-calls 100] [--upstream fast|fastmcp|kitchen]
                                         [--no-raw] [--no-relay]
                                         [--json FILE]

Per client era (2025-11-25 via `mode="legacy"`, and `mode="2026-07-28"`):
- sequential: per round, one client session on each path side by side, `--warmup` calls each, then
  `--calls` timed calls per path, alternating direct and gateway call by call so drift hits both alike.
  p50/p99 pool the rounds' samples. Gateway CPU per call = the gateway process's utime+stime over the
  timed calls, divided by the gateway's calls.
- concurrent: `--sessions` client sessions opened first, then all of them make `--concurrent-calls`
  calls at once; calls/s over the whole burst, direct and gateway alternating per round (`--burst-rounds`,
  each round starting with the other path; the median rate of each path). The CPU each
  process spent per call in the burst (client, gateway, upstream) shows where a slower path's time goes:
  a gateway that frames its answers differently can make the client or the upstream work harder.
The burst also runs (unless --no-relay) through bench/byte_relay.py, a relay that parses nothing and spends
the CPU per call the gateway just spent in its burst: the throughput any hop of the gateway's cost reaches
on this machine, to read the gateway's ratio against (on two cores the client and the upstream fill, the
hop's CPU is taken from them whatever the hop does).
Then (unless --no-raw) a "2026-07-28 raw" row: the same call as fixed bytes POSTed by a lean aiohttp
client, sequential calls only (alternating direct and gateway call by call, as above), which shows the
servers' cost with less of the SDK client's own in it.
The client runs in this process; the upstream and the gateway each in their own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field

import anyio

from bench.common import (
    BYTE_RELAY,
    ERA_LABEL,
    ERAS,
    UPSTREAM_KINDS,
    CpuMeter,
    OwnCpuMeter,
    fmt,
    gateway_headers,
    listening_process,
    mcp_client,
    modern_request,
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
# Issue 10's targets, for both eras in one run: what the gateway may add to a tools/call.
TARGET_ADDED_MS = 0.3
TARGET_CPU_MS = 0.4
TARGET_CONCURRENT_RATIO = 0.95


@dataclass
class PathResult:
    latencies: list[float] = field(default_factory=list)  # seconds, all rounds pooled
    gateway_cpu: float = 0.0  # seconds over the timed sequential calls
    concurrent_rates: list[float] = field(default_factory=list)  # calls/s, one per round
    concurrent_cpu: float = 0.0  # the gateway's, over the bursts
    concurrent_upstream_cpu: float = 0.0
    concurrent_client_cpu: float = 0.0
    concurrent_calls: int = 0


@dataclass
class EraResult:
    era: str
    direct: PathResult
    gateway: PathResult
    relay: PathResult = field(default_factory=PathResult)  # bench/byte_relay.py at the gateway's CPU per call
    relay_cpu_ms: float = float("nan")  # what the relay was told to spend per call

    def summary(self) -> dict[str, float]:
        d50, g50 = p50(self.direct.latencies), p50(self.gateway.latencies)
        d99, g99 = percentile(self.direct.latencies, 99), percentile(self.gateway.latencies, 99)
        calls = len(self.gateway.latencies)
        d_rate, g_rate = p50(self.direct.concurrent_rates), p50(self.gateway.concurrent_rates)
        return {
            "direct_p50_ms": ms(d50), "direct_p99_ms": ms(d99),
            "gateway_p50_ms": ms(g50), "gateway_p99_ms": ms(g99),
            "ratio_p50": g50 / d50, "ratio_p99": g99 / d99, "added_p50_ms": ms(g50 - d50),
            "gateway_cpu_ms_per_call": ms(self.gateway.gateway_cpu / calls) if calls else float("nan"),
            "direct_calls_per_s": d_rate, "gateway_calls_per_s": g_rate,
            "concurrent_ratio": g_rate / d_rate if d_rate else float("nan"),
            "relay_calls_per_s": p50(self.relay.concurrent_rates),
            "relay_ratio": p50(self.relay.concurrent_rates) / d_rate if d_rate else float("nan"),
            "relay_cpu_ms_per_call": self.relay_cpu_ms,
            "gateway_cpu_ms_per_concurrent_call": _per_call(self.gateway.concurrent_cpu, self.gateway),
            "direct_upstream_cpu_ms_per_concurrent_call": _per_call(self.direct.concurrent_upstream_cpu, self.direct),
            "gateway_upstream_cpu_ms_per_concurrent_call": _per_call(self.gateway.concurrent_upstream_cpu,
                                                                     self.gateway),
            "direct_client_cpu_ms_per_concurrent_call": _per_call(self.direct.concurrent_client_cpu, self.direct),
            "gateway_client_cpu_ms_per_concurrent_call": _per_call(self.gateway.concurrent_client_cpu, self.gateway),
        }


def _per_call(seconds: float, path: PathResult) -> float:
    return ms(seconds / path.concurrent_calls) if path.concurrent_calls else float("nan")


async def sequential_round(url: str, mode: str, headers: dict[str, str], warmup: int, calls: int,
                           meter: CpuMeter) -> list[float]:
    async with mcp_client(url, mode, headers) as client:
        await client.list_tools()  # a 2026-07-28 client must have listed a tool before calling it
        for _ in range(warmup):
            await client.call_tool(TOOL, {})
        samples = []
        meter.start()
        for _ in range(calls):
            begin = time.perf_counter()
            result = await client.call_tool(TOOL, {})
            samples.append(time.perf_counter() - begin)
            if result.is_error:
                raise RuntimeError(f"{TOOL} failed: {result.content}")
        meter.stop()
        return samples


async def paired_round(direct_url: str, gateway_url: str, headers: dict[str, str], mode: str, warmup: int,
                       calls: int, meter: CpuMeter) -> tuple[list[float], list[float], float]:
    """One client session on each path, open side by side; the timed calls alternate direct, gateway,
    gateway, direct, ... so both paths see the same moment's conditions (whole rounds one after the other
    let a drift of ±10% between rounds into the ratio). Returns both paths' samples and the gateway CPU."""
    async with mcp_client(direct_url, mode) as direct, mcp_client(gateway_url, mode, headers) as through:
        for client in (direct, through):
            await client.list_tools()  # a 2026-07-28 client must have listed a tool before calling it
            for _ in range(warmup):
                await client.call_tool(TOOL, {})
        samples: dict[int, list[float]] = {0: [], 1: []}
        meter.start()
        for i in range(calls):
            for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                begin = time.perf_counter()
                result = await (direct, through)[which].call_tool(TOOL, {})
                samples[which].append(time.perf_counter() - begin)
                if result.is_error:
                    raise RuntimeError(f"{TOOL} failed: {result.content}")
        meter.stop()
        return samples[0], samples[1], meter.spent


async def paired_raw_round(direct_url: str, gateway_url: str, gateway_headers: dict[str, str],
                           direct_headers: dict[str, str], body: bytes, warmup: int, calls: int,
                           meter: CpuMeter) -> tuple[list[float], list[float], float]:
    """`paired_round` for the lean aiohttp client: one keep-alive connection per path, calls alternating."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), headers=direct_headers) as direct, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), headers=gateway_headers) as through:
        targets = ((direct, direct_url), (through, gateway_url))

        async def once(which: int) -> float:
            http, url = targets[which]
            begin = time.perf_counter()
            async with http.post(url, data=body) as response:
                payload = await response.read()
            if response.status != 200 or b'"result"' not in payload:
                raise RuntimeError(f"{url} answered {response.status}: {payload[:300]!r}")
            return time.perf_counter() - begin

        for _ in range(warmup):
            await once(0)
            await once(1)
        samples: dict[int, list[float]] = {0: [], 1: []}
        meter.start()
        for i in range(calls):
            for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                samples[which].append(await once(which))
        meter.stop()
        return samples[0], samples[1], meter.spent


async def concurrent_round(url: str, mode: str, headers: dict[str, str], sessions: int, calls: int,
                           meters: list[CpuMeter | OwnCpuMeter]) -> float:
    """Open `sessions` sessions, warm each, then release them all at once; calls/s over the burst."""
    go = anyio.Event()
    ready = 0
    all_ready = anyio.Event()
    finished: list[float] = []

    async def one_session() -> None:
        nonlocal ready
        async with mcp_client(url, mode, headers) as client:
            await client.list_tools()
            for _ in range(3):
                await client.call_tool(TOOL, {})
            ready += 1
            if ready == sessions:
                all_ready.set()
            await go.wait()
            for _ in range(calls):
                await client.call_tool(TOOL, {})
            finished.append(time.perf_counter())

    async with anyio.create_task_group() as group:
        for _ in range(sessions):
            group.start_soon(one_session)
        with anyio.fail_after(120):
            await all_ready.wait()
        for meter in meters:
            meter.start()
        begin = time.perf_counter()
        go.set()
    for meter in meters:
        meter.stop()
    return sessions * calls / (max(finished) - begin)


@asynccontextmanager
async def byte_relay(target_url: str, cpu_ms: float) -> AsyncIterator[tuple[str, CpuMeter]]:
    """bench/byte_relay.py in front of `target_url`, spending `cpu_ms` per call: its URL and CPU meter."""
    target_port = int(target_url.rsplit(":", 1)[1].split("/")[0])
    port = free_port()
    command = [sys.executable, BYTE_RELAY, "--port", str(port), "--target", str(target_port), "--cpu-ms",
               f"{cpu_ms:.4f}"]  # fmt: skip
    async with listening_process(command, port) as (process, _):
        yield target_url.replace(f":{target_port}/", f":{port}/", 1), CpuMeter(process.pid)


async def relay_rounds(era: EraResult, upstream_url: str, mode: str, args: argparse.Namespace,
                       upstream_meter: CpuMeter, client_meter: OwnCpuMeter) -> None:
    """The burst through the byte relay at the CPU per call the gateway spent in its burst. The relay's spin
    is calibrated first: short bursts measure what it really spends (forwarding costs more or less per call
    with the machine's load), and the spin is corrected twice towards the gateway's figure."""
    target = era.gateway.concurrent_cpu / era.gateway.concurrent_calls
    short = max(10, args.concurrent_calls // 4)
    spin = 0.0
    for _ in range(3):
        async with byte_relay(upstream_url, ms(spin)) as (url, meter):
            await concurrent_round(url, mode, {}, args.sessions, short, [meter])
        spin = max(0.0, spin + target - meter.spent / (args.sessions * short))
    async with byte_relay(upstream_url, ms(spin)) as (url, meter):
        for _ in range(args.burst_rounds):
            rate = await concurrent_round(url, mode, {}, args.sessions, args.concurrent_calls,
                                          [meter, upstream_meter, client_meter])
            era.relay.concurrent_rates.append(rate)
            era.relay.concurrent_cpu += meter.spent
            era.relay.concurrent_upstream_cpu += upstream_meter.spent
            era.relay.concurrent_client_cpu += client_meter.spent
            era.relay.concurrent_calls += args.sessions * args.concurrent_calls
    era.relay_cpu_ms = _per_call(era.relay.concurrent_cpu, era.relay)


async def run(args: argparse.Namespace) -> list[EraResult]:
    results = []
    async with run_upstreams(args.upstream, 1, 17 if args.upstream == "kitchen" else 1) as upstreams:
        upstream_url = upstreams[0].url
        upstream_meter, client_meter = CpuMeter(upstreams[0].process.pid), OwnCpuMeter()
        async with run_gateway({"bench": {"transport": "http", "url": upstream_url}}) as gateway:
            headers = gateway_headers(gateway)
            paths = {"direct": (upstream_url, {}, CpuMeter(None)),
                     "gateway": (gateway.url("bench"), headers, CpuMeter(gateway.process.pid))}
            for mode in ERAS:
                era = EraResult(ERA_LABEL[mode], PathResult(), PathResult())
                for _ in range(args.rounds):
                    direct, through, cpu = await paired_round(
                        upstream_url, gateway.url("bench"), headers, mode, args.warmup, args.calls,
                        paths["gateway"][2],
                    )
                    era.direct.latencies += direct
                    era.gateway.latencies += through
                    era.gateway.gateway_cpu += cpu
                for burst in range(args.burst_rounds):
                    # Each round starts with the other path: whichever goes second finds the machine warmer
                    # (or busier) than the first did.
                    order = list(paths.items()) if burst % 2 == 0 else list(reversed(paths.items()))
                    for name, (url, hdrs, meter) in order:
                        target = getattr(era, name)
                        rate = await concurrent_round(url, mode, hdrs, args.sessions, args.concurrent_calls,
                                                      [meter, upstream_meter, client_meter])
                        target.concurrent_rates.append(rate)
                        target.concurrent_cpu += meter.spent
                        target.concurrent_upstream_cpu += upstream_meter.spent
                        target.concurrent_client_cpu += client_meter.spent
                        target.concurrent_calls += args.sessions * args.concurrent_calls
                if args.relay:
                    await relay_rounds(era, upstream_url, mode, args, upstream_meter, client_meter)
                results.append(era)
                print(f"  done: {era.era}", flush=True)
            if args.raw:
                # The same 2026-07-28 call replayed by a lean aiohttp client (less client noise), paired call by
                # call like the SDK rows: whole rounds one after the other let the machine's drift between
                # rounds into the figure (a FastMCP run read +0.10 ms that way, +0.44 ms paired).
                era = EraResult("2026-07-28 raw", PathResult(), PathResult())
                method_headers, body = modern_request("tools/call", {"name": TOOL, "arguments": {}}, name=TOOL)
                for _ in range(args.rounds):
                    direct, through, cpu = await paired_raw_round(
                        upstream_url, gateway.url("bench"), {**headers, **method_headers}, method_headers, body,
                        args.warmup, args.calls, paths["gateway"][2],
                    )
                    era.direct.latencies += direct
                    era.gateway.latencies += through
                    era.gateway.gateway_cpu += cpu
                results.append(era)
                print(f"  done: {era.era}", flush=True)
    return results


def report(results: list[EraResult], args: argparse.Namespace) -> str:
    rows, burst, relay = [], [], []
    for era in results:
        s = era.summary()
        ok = s["added_p50_ms"] <= TARGET_ADDED_MS and s["gateway_cpu_ms_per_call"] <= TARGET_CPU_MS
        verdict = "(info)" if era.era.endswith("raw") else "yes" if ok else "NO"
        rows.append([era.era, fmt(s["direct_p50_ms"]), fmt(s["direct_p99_ms"]), fmt(s["gateway_p50_ms"]),
                     fmt(s["gateway_p99_ms"]), fmt(s["ratio_p50"]), fmt(s["ratio_p99"]), signed(s["added_p50_ms"]),
                     fmt(s["gateway_cpu_ms_per_call"]), verdict])
        if not era.direct.concurrent_rates:
            continue
        burst.append([era.era, fmt(s["direct_calls_per_s"], 0), fmt(s["gateway_calls_per_s"], 0),
                      fmt(s["concurrent_ratio"]), "yes" if s["concurrent_ratio"] >= TARGET_CONCURRENT_RATIO else "NO",
                      fmt(s["gateway_cpu_ms_per_concurrent_call"]),
                      f'{fmt(s["direct_upstream_cpu_ms_per_concurrent_call"])} / '
                      f'{fmt(s["gateway_upstream_cpu_ms_per_concurrent_call"])}',
                      f'{fmt(s["direct_client_cpu_ms_per_concurrent_call"])} / '
                      f'{fmt(s["gateway_client_cpu_ms_per_concurrent_call"])}'])
        if era.relay.concurrent_rates:
            relay.append([era.era, fmt(s["relay_cpu_ms_per_call"]), fmt(s["relay_calls_per_s"], 0),
                          fmt(s["relay_ratio"]), fmt(s["concurrent_ratio"]),
                          f'{fmt(_per_call(era.relay.concurrent_upstream_cpu, era.relay))} / '
                          f'{fmt(_per_call(era.relay.concurrent_client_cpu, era.relay))}'])
    n = args.calls * args.rounds
    return "\n".join([
        f"tools/call `{TOOL}`, {args.upstream} upstream: {args.rounds} rounds x {args.calls} sequential calls "
        f"(after {args.warmup} warm-up) per path, one session per round; pooled p50/p99 over {n} calls",
        table(["client era", "direct p50", "p99", "gateway p50", "p99", "ratio p50", "ratio p99", "added ms",
               "gw CPU ms/call", f"<= +{TARGET_ADDED_MS} ms & <= {TARGET_CPU_MS} ms"], rows),
        "",
        f"{args.sessions} sessions x {args.concurrent_calls} calls at once (median of {args.burst_rounds} rounds, "
        f"each starting with the other path)",
        table(["client era", "direct calls/s", "gateway calls/s", "gateway/direct", f">= {TARGET_CONCURRENT_RATIO}x",
               "gw CPU ms/call", "upstream CPU ms/call direct / via gw", "client CPU ms/call direct / via gw"],
              burst),
        *([
            "",
            "The same burst through bench/byte_relay.py, a relay that parses nothing and spends the gateway's CPU per "
            "call: what any hop of that cost reaches here",
            table(["client era", "relay CPU ms/call", "relay calls/s", "relay/direct", "gateway/direct",
                   "upstream / client CPU ms/call via relay"], relay),
        ] if relay else []),
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="tools/call latency and CPU: gateway vs direct")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--burst-rounds", type=int, default=6,
                        help="rounds of the burst per path (each ~1 s; its rate swings ~±5%% from one round to the "
                             "next here, so its median needs more rounds than the sequential rows)")
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--concurrent-calls", type=int, default=100)
    parser.add_argument("--upstream", choices=UPSTREAM_KINDS, default="fast")
    parser.add_argument("--no-raw", dest="raw", action="store_false",
                        help="skip the extra 2026-07-28 rows measured with a lean aiohttp client")
    parser.add_argument("--no-relay", dest="relay", action="store_false",
                        help="skip the burst through bench/byte_relay.py at the gateway's CPU per call")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with quiet_sdk_warnings():
        results = anyio.run(run, args)
    print(report(results, args))
    figures = {era.era: era.summary() for era in results}
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "figures": figures,
                       "samples": {era.era: asdict(era) for era in results}}, out, indent=1)
    return figures


if __name__ == "__main__":
    main()
