"""tools/list cost: a virtual server over many upstreams, through the real gateway, vs one upstream direct.

    .venv/bin/python -m bench.bench_list [--upstreams 10] [--tools 50] [--lists 200] [--rounds 2]
                                         [--upstream fast|kitchen] [--no-raw] [--json FILE]

`--upstreams` upstream processes, each listing `--tools` tools, behind one virtual server (namespaced,
so `--upstreams` x `--tools` tools). Per client era, with a freshly started gateway:
- cold: the first tools/list after the gateway started (it connects to every upstream then);
- warm: `--lists` lists in total, `--rounds` alternating rounds of direct (ONE upstream, `--tools`
  tools), direct to a same-size upstream (one process listing `--upstreams` x `--tools` tools) and
  gateway (the whole virtual server), one client session per round; p50 over all.
The figure that matters is warm gateway p50 minus direct p50. The SDK client validates every listed
tool, so it spends more on a 500-tool answer than on a 50-tool one whatever the gateway does; the
"2026-07-28 raw" row (unless --no-raw) replays the list with a lean aiohttp client that only reads the
bytes, which shows the servers' own difference.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field

import anyio

from bench.common import (
    ERA_LABEL,
    ERAS,
    CpuMeter,
    fmt,
    gateway_headers,
    mcp_client,
    modern_request,
    ms,
    p50,
    percentile,
    quiet_sdk_warnings,
    raw_round,
    run_upstreams,
    signed,
    table,
)
from tests.e2e.harness import run_gateway

SERVER = "all"
TARGET_ADDED_MS = 2.0


@dataclass
class ListResult:
    era: str
    cold_s: float = float("nan")
    gateway_tools: int = 0
    direct_tools: int = 0
    direct: list[float] = field(default_factory=list)
    same_size: list[float] = field(default_factory=list)  # one upstream listing as many tools as the gateway
    gateway: list[float] = field(default_factory=list)
    gateway_cpu: float = 0.0

    def summary(self) -> dict[str, float]:
        d50, g50 = p50(self.direct), p50(self.gateway)
        return {
            "cold_ms": ms(self.cold_s), "gateway_tools": self.gateway_tools, "direct_tools": self.direct_tools,
            "direct_p50_ms": ms(d50), "direct_p99_ms": ms(percentile(self.direct, 99)),
            "gateway_p50_ms": ms(g50), "gateway_p99_ms": ms(percentile(self.gateway, 99)),
            "same_size_p50_ms": ms(p50(self.same_size)),
            "added_p50_ms": ms(g50 - d50),
            "added_vs_same_size_p50_ms": ms(g50 - p50(self.same_size)),
            "gateway_cpu_ms_per_list": ms(self.gateway_cpu / len(self.gateway)) if self.gateway else float("nan"),
        }


async def timed_lists(url: str, mode: str, headers: dict[str, str], count: int, meter: CpuMeter,
                      expect: int) -> list[float]:
    async with mcp_client(url, mode, headers) as client:
        for _ in range(5):  # warm the connection and the session, not the gateway's cache (already warm)
            await client.list_tools()
        samples = []
        meter.start()
        for _ in range(count):
            begin = time.perf_counter()
            listing = await client.list_tools()
            samples.append(time.perf_counter() - begin)
            if len(listing.tools) != expect or listing.next_cursor is not None:
                raise RuntimeError(f"{url} listed {len(listing.tools)} tools (cursor {listing.next_cursor!r}), "
                                   f"expected {expect} on one page")
        meter.stop()
        return samples


async def cold_list(url: str, mode: str, headers: dict[str, str]) -> tuple[float, int]:
    async with mcp_client(url, mode, headers) as client:
        begin = time.perf_counter()
        listing = await client.list_tools()
        return time.perf_counter() - begin, len(listing.tools)


async def run(args: argparse.Namespace) -> list[ListResult]:
    per_round = max(1, args.lists // args.rounds)
    results = []
    async with (run_upstreams(args.upstream, args.upstreams, args.tools) as upstreams,
                run_upstreams(args.upstream, 1, args.upstreams * args.tools) as big):
        config = {f"up{i + 1:02d}": {"transport": "http", "url": u.url} for i, u in enumerate(upstreams)}
        members = {SERVER: {"description": "benchmark: every upstream",
                            "members": [{"upstream": uid} for uid in config]}}
        direct_url, same_size_url = upstreams[0].url, big[0].url
        expect_gateway = args.upstreams * args.tools
        async with mcp_client(direct_url, "legacy") as probe:
            expect_direct = len((await probe.list_tools()).tools)
        modes = [(mode, ERA_LABEL[mode]) for mode in ERAS] + ([("raw", "2026-07-28 raw")] if args.raw else [])
        for mode, label in modes:
            # A fresh gateway per era, so each one's first list is really cold.
            async with run_gateway(config, members) as gateway:
                headers = gateway_headers(gateway)
                result = ListResult(label, direct_tools=expect_direct)
                era_mode = "2026-07-28" if mode == "raw" else mode
                result.cold_s, result.gateway_tools = await cold_list(gateway.url(SERVER), era_mode, headers)
                if result.gateway_tools != expect_gateway:
                    raise RuntimeError(f"the gateway listed {result.gateway_tools} tools, expected {expect_gateway}"
                                       f"\n{gateway.log()[-3000:]}")
                direct_meter, gateway_meter = CpuMeter(None), CpuMeter(gateway.process.pid)
                for _ in range(args.rounds):
                    if mode == "raw":
                        method_headers, body = modern_request("tools/list")
                        result.direct += await raw_round(direct_url, method_headers, body, 5, per_round, direct_meter)
                        result.same_size += await raw_round(same_size_url, method_headers, body, 5, per_round,
                                                            direct_meter)
                        result.gateway += await raw_round(gateway.url(SERVER), {**headers, **method_headers}, body,
                                                          5, per_round, gateway_meter)
                    else:
                        result.direct += await timed_lists(direct_url, mode, {}, per_round, direct_meter,
                                                           expect_direct)
                        result.same_size += await timed_lists(same_size_url, mode, {}, per_round, direct_meter,
                                                              expect_gateway)
                        result.gateway += await timed_lists(gateway.url(SERVER), mode, headers, per_round,
                                                            gateway_meter, expect_gateway)
                    result.gateway_cpu += gateway_meter.spent
                results.append(result)
                print(f"  done: {label}", flush=True)
    return results


def report(results: list[ListResult], args: argparse.Namespace) -> str:
    rows = []
    for r in results:
        s = r.summary()
        verdict = "(info)" if r.era.endswith("raw") else "yes" if s["added_p50_ms"] <= TARGET_ADDED_MS else "NO"
        rows.append([r.era, f"{fmt(s['cold_ms'], 1)}", fmt(s["direct_p50_ms"]), fmt(s["direct_p99_ms"]),
                     fmt(s["same_size_p50_ms"]), fmt(s["gateway_p50_ms"]), fmt(s["gateway_p99_ms"]),
                     signed(s["added_p50_ms"]), signed(s["added_vs_same_size_p50_ms"]),
                     fmt(s["gateway_cpu_ms_per_list"]), verdict])
    return "\n".join([
        f"tools/list: gateway virtual server of {args.upstreams} {args.upstream} upstreams x {args.tools} tools "
        f"({args.upstreams * args.tools} tools) vs ONE upstream direct ({args.tools} tools); "
        f"warm p50/p99 over {args.lists} lists per path in {args.rounds} alternating rounds (ms)",
        table(["client era", "gw cold", "direct p50", "p99", f"direct {args.upstreams * args.tools} p50",
               "gateway p50", "p99", "added p50", f"vs direct {args.upstreams * args.tools}", "gw CPU ms/list",
               f"added <= {TARGET_ADDED_MS} ms"], rows),
        f"(direct {args.upstreams * args.tools}: one upstream listing as many tools as the virtual server, "
        "the same-size reference for the client's own parsing cost)",
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="tools/list latency: gateway virtual server vs one upstream")
    parser.add_argument("--upstreams", type=int, default=10)
    parser.add_argument("--tools", type=int, default=50)
    parser.add_argument("--lists", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--upstream", choices=["fast", "kitchen"], default="fast")
    parser.add_argument("--no-raw", dest="raw", action="store_false",
                        help="skip the extra 2026-07-28 row measured with a lean aiohttp client")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with quiet_sdk_warnings():
        results = anyio.run(run, args)
    print(report(results, args))
    figures = {r.era: r.summary() for r in results}
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "figures": figures}, out, indent=1)
    return figures


if __name__ == "__main__":
    main()
