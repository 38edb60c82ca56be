"""Many tools: a 1,000-tool virtual server on a gateway holding 10,000 tools of 50 upstreams — warm tools/list,
and how soon one upstream's `list_changed` is served.

    .venv/bin/python -m bench.scale_tools [--upstreams 50] [--tools 200] [--server-upstreams 5]
                                          [--lists 400] [--rounds 4] [--changes 10] [--json FILE]

Upstreams: `--upstreams` MCP servers listing `--tools` tools each, all served by ONE process
(bench/many_tools_upstream.py: mcp 2.3.0's low-level `Server`, JSON replies, one port per upstream), so the
machine is not running fifty Python processes. The gateway configures all of them; the virtual server `k`
has the first `--server-upstreams` of them (5 x 200 = 1,000 tools, namespaced), the virtual server `all`
every one (10,000 tools, info).

- cold: the first tools/list of `k`, then of `all`, after the gateway started (info);
- warm: tools/list of `k` replayed as fixed 2026-07-28 bytes by a lean aiohttp client (bytes read, not parsed),
  `--lists` in `--rounds` rounds alternating with a direct list of one upstream process listing the same
  number of tools (the same-size reference). **Gateway time** = the gateway process's CPU per list (utime +
  stime from /proc around the timed loop): the time the gateway works on one list. Also shown: the gateway's
  p50 minus the same-size direct p50, the latency the extra hop adds on this machine;
- list_changed: a 2025-11-25 client holds its GET stream on `k`; the bench calls `add_tool` on upstream
  u01 directly, which adds a tool and announces `notifications/tools/list_changed` (the upstream answers with
  the CLOCK_MONOTONIC instant it announced, one clock for all processes here). Timed from that instant:
  until the gateway's list_changed reaches the client, and until the new tool is in the list the gateway
  serves (the client lists `k` again and again until it is). `--changes` times, p50 and max.

Targets (issue 14): warm tools/list of the 1,000-tool virtual server <= 5 ms gateway time; catalog rebuild after
one upstream's list_changed <= 50 ms (judged on "new list served").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from bench.common import CpuMeter, fmt, modern_request, ms, p50, percentile, raw_round, signed, table
from bench.scale_common import (
    judged,
    log_problems,
    many_tools_upstreams,
    open_get_stream,
    open_session,
    parse_reply,
    post_rpc,
    session_headers,
)
from tests.e2e.harness import run_gateway

TARGET_GATEWAY_MS = 5.0
TARGET_REBUILD_MS = 50.0
CHANGE_DEADLINE_S = 10.0


@dataclass
class Figures:
    upstreams: int
    tools: int
    server_tools: int
    cold_k_s: float = float("nan")
    cold_all_s: float = float("nan")
    all_tools: int = 0
    direct: list[float] = field(default_factory=list)  # the SDK upstream listing as many tools
    static: list[float] = field(default_factory=list)  # the same answer as fixed bytes
    one_upstream: list[float] = field(default_factory=list)  # u01's own tools/list (SDK, --tools tools)
    gateway: list[float] = field(default_factory=list)
    gateway_cpu: float = 0.0
    answer_bytes: int = 0
    notified: list[float] = field(default_factory=list)
    served: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            "upstreams": self.upstreams, "tools_total": self.upstreams * self.tools,
            "server_tools": self.server_tools, "answer_kb": self.answer_bytes / 1000,
            "cold_k_ms": ms(self.cold_k_s), "cold_all_ms": ms(self.cold_all_s), "all_tools": self.all_tools,
            "direct_p50_ms": ms(p50(self.direct)), "direct_p99_ms": ms(percentile(self.direct, 99)),
            "gateway_p50_ms": ms(p50(self.gateway)), "gateway_p99_ms": ms(percentile(self.gateway, 99)),
            "static_p50_ms": ms(p50(self.static)), "static_p99_ms": ms(percentile(self.static, 99)),
            "added_p50_ms": ms(p50(self.gateway) - p50(self.static)),
            "one_upstream_list_p50_ms": ms(p50(self.one_upstream)),
            "gateway_cpu_ms_per_list": ms(self.gateway_cpu / len(self.gateway)) if self.gateway else float("nan"),
            "notified_p50_ms": ms(p50(self.notified)), "notified_max_ms": ms(max(self.notified, default=float("nan"))),
            "served_p50_ms": ms(p50(self.served)), "served_max_ms": ms(max(self.served, default=float("nan"))),
        }


async def modern_list(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[float, int, int]:
    """One 2026-07-28 tools/list: seconds, number of tools, bytes of the answer."""
    method_headers, body = modern_request("tools/list")
    begin = time.perf_counter()
    async with http.post(url, data=body, headers={**headers, **method_headers}) as response:
        payload = await response.read()
    elapsed = time.perf_counter() - begin
    if response.status != 200:
        raise RuntimeError(f"{url} answered {response.status}: {payload[:300]!r}")
    result = orjson.loads(payload)["result"]
    if result.get("nextCursor"):
        raise RuntimeError(f"{url} paginated its tools/list; the bench expects one page")
    return elapsed, len(result["tools"]), len(payload)


async def session_tool_names(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> set[str]:
    message = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    status, reply_headers, body = await post_rpc(http, url, headers, message)
    if status != 200:
        raise RuntimeError(f"tools/list on the session answered {status}: {body[:300]!r}")
    reply = parse_reply(reply_headers.get("Content-Type", ""), body)
    return {tool["name"] for tool in reply["result"]["tools"]}


async def add_tool(http: aiohttp.ClientSession, upstream_url: str) -> tuple[str, float]:
    """Call u01's add_tool directly: the new tool's name and when the upstream announced list_changed."""
    method_headers, body = modern_request("tools/call", {"name": "add_tool", "arguments": {}}, name="add_tool")
    async with http.post(upstream_url, data=body, headers=method_headers) as response:
        payload = await response.read()
    if response.status != 200:
        raise RuntimeError(f"add_tool answered {response.status}: {payload[:300]!r}")
    answer = json.loads(orjson.loads(payload)["result"]["content"][0]["text"])
    return answer["name"], answer["announced_at"]


async def run(args: argparse.Namespace) -> Figures:
    server_tools = args.server_upstreams * args.tools
    figures = Figures(args.upstreams, args.tools, server_tools)
    async with many_tools_upstreams(args.upstreams, args.tools) as urls, \
            many_tools_upstreams(1, server_tools) as same_size:
        config = {f"u{i + 1:02d}": {"transport": "http", "url": url} for i, url in enumerate(urls)}
        ids = list(config)
        servers = {
            "k": {"description": f"{server_tools} tools",
                  "members": [{"upstream": u} for u in ids[: args.server_upstreams]]},
            "all": {"description": "every upstream", "members": [{"upstream": u} for u in ids]},
        }
        async with run_gateway(config, servers) as gateway, aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {gateway.key}"}
            figures.cold_k_s, count, figures.answer_bytes = await modern_list(http, gateway.url("k"), auth)
            if count != server_tools:
                raise RuntimeError(f"virtual server k lists {count} tools, expected {server_tools}\n"
                                   f"{gateway.log()[-3000:]}")
            figures.cold_all_s, figures.all_tools, _ = await modern_list(http, gateway.url("all"), auth)
            print(f"  cold: k {fmt(ms(figures.cold_k_s), 1)} ms, all ({figures.all_tools} tools) "
                  f"{fmt(ms(figures.cold_all_s), 1)} ms", flush=True)

            method_headers, body = modern_request("tools/list")
            meter, no_meter = CpuMeter(gateway.process.pid), CpuMeter(None)
            per_round = max(1, args.lists // args.rounds)
            static = same_size[0].removesuffix("/mcp") + "/static-list"
            for _ in range(args.rounds):
                figures.direct += await raw_round(same_size[0], method_headers, body, 5, per_round, no_meter)
                figures.static += await raw_round(static, method_headers, body, 5, per_round, no_meter)
                figures.gateway += await raw_round(gateway.url("k"), {**auth, **method_headers}, body, 5,
                                                   per_round, meter)
                figures.gateway_cpu += meter.spent
            figures.one_upstream = await raw_round(urls[0], method_headers, body, 3, 20, no_meter)
            print(f"  warm: gateway p50 {fmt(ms(p50(figures.gateway)), 3)} ms, "
                  f"same answer as fixed bytes {fmt(ms(p50(figures.static)), 3)} ms", flush=True)

            # list_changed: one 2025-11-25 client holds its GET stream on k.
            url = gateway.url("k")
            sid = await open_session(http, url, gateway.key, "list-changed-probe")
            headers = session_headers(gateway.key, sid)
            stream = await open_get_stream(url, gateway.key, sid)
            try:
                prefix = f"{ids[0]}__"  # the member id and the default namespace separator
                for _ in range(args.changes):
                    name, announced_at = await add_tool(http, urls[0])
                    with_prefix = prefix + name
                    async with asyncio.timeout(CHANGE_DEADLINE_S):
                        while (await stream.next_event()).get("method") != "notifications/tools/list_changed":
                            pass
                        figures.notified.append(time.monotonic() - announced_at)
                        while with_prefix not in await session_tool_names(http, url, headers):
                            pass
                        figures.served.append(time.monotonic() - announced_at)
            except TimeoutError:
                raise RuntimeError(f"no list_changed / new tool within {CHANGE_DEADLINE_S}s of add_tool "
                                   f"(after {len(figures.served)} changes)\n{gateway.log()[-3000:]}") from None
            finally:
                await stream.close()
            if problems := log_problems(gateway):
                raise RuntimeError(f"{len(problems)} errors in the gateway's log; the first: {problems[0]}")
    return figures


def report(figures: Figures) -> tuple[str, bool]:
    s = figures.summary()
    gateway_line, gateway_ok = judged(f"warm tools/list of {figures.server_tools} tools, gateway CPU per list",
                                      s["gateway_cpu_ms_per_list"], TARGET_GATEWAY_MS, "ms", digits=3)
    rebuild_line, rebuild_ok = judged("list_changed -> new list served, max", s["served_max_ms"],
                                      TARGET_REBUILD_MS, "ms", digits=1)
    lines = [
        f"{figures.upstreams} upstreams x {figures.tools} tools ({figures.upstreams * figures.tools} tools, one "
        f"upstream process); virtual server k = {figures.server_tools} tools ({fmt(s['answer_kb'], 0)} kB answer)",
        f"cold (info): first list of k {fmt(s['cold_k_ms'], 1)} ms; of all ({figures.all_tools} tools) "
        f"{fmt(s['cold_all_ms'], 1)} ms",
        table(["warm tools/list, 2026-07-28 raw", "p50 ms", "p99 ms"], [
            [f"direct: SDK upstream listing {figures.server_tools} (info)", fmt(s["direct_p50_ms"], 3),
             fmt(s["direct_p99_ms"], 3)],
            [f"direct: the same {figures.server_tools} as fixed bytes", fmt(s["static_p50_ms"], 3),
             fmt(s["static_p99_ms"], 3)],
            [f"gateway: k ({figures.server_tools} tools of {figures.upstreams * figures.tools})",
             fmt(s["gateway_p50_ms"], 3), fmt(s["gateway_p99_ms"], 3)],
        ]),
        f"gateway p50 minus the fixed-bytes answer: {signed(s['added_p50_ms'], 3)} ms; gateway CPU "
        f"{fmt(s['gateway_cpu_ms_per_list'], 3)} ms per list",
        table(["after upstream list_changed (ms)", "p50", "max"], [
            ["client's list_changed received", fmt(s["notified_p50_ms"], 1), fmt(s["notified_max_ms"], 1)],
            ["new tool in the served list", fmt(s["served_p50_ms"], 1), fmt(s["served_max_ms"], 1)],
        ]) + f"\n({len(figures.served)} changes to u01, each timed from the upstream's announcement; u01's own "
        f"tools/list of {figures.tools} tools takes {fmt(s['one_upstream_list_p50_ms'], 1)} ms (p50) of that)",
        gateway_line,
        rebuild_line,
    ]
    return "\n".join(lines), gateway_ok and rebuild_ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--upstreams", type=int, default=50)
    parser.add_argument("--tools", type=int, default=200, help="tools per upstream")
    parser.add_argument("--server-upstreams", type=int, default=5, help="upstreams in the virtual server k")
    parser.add_argument("--lists", type=int, default=400, help="timed lists per path")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--changes", type=int, default=10, help="list_changed round trips to time")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> tuple[str, bool, dict]:
    """Run it: the report, whether every target was met, the figures (also written to --json)."""
    figures = asyncio.run(run(args))
    text, ok = report(figures)
    summary = figures.summary()
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "figures": summary, "report": text}, out, indent=1)
    return text, ok, summary


def main(argv: list[str] | None = None) -> dict:
    text, _, summary = measure(parse_args(argv))
    print(text)
    return summary


if __name__ == "__main__":
    main()
