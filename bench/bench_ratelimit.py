"""What a rate limit costs: the same tools/call through one gateway to two upstream entries of one upstream
process, `limited` (a rule with a limit so high it is never reached) and `free` (no rule), in one run.

    .venv/bin/python -m bench.bench_ratelimit [--calls 300] [--warmup 30] [--rounds 6] [--json FILE]

Both entries point at the same fast upstream, so only the rate limit differs: a call to `limited` finds its
rule (cached per principal, server and tool) and takes a token from its in-memory bucket (SQLite: one
process; docs/rate-limits.md); a call to `free` finds none. The paths alternate call by call
(bench/common.interleaved), with the mcp SDK client in 2025-11-25 mode and a lean raw 2026-07-28 client.
Target: p50 with a rate limit ≤ 1.02 × p50 without (issue 15).
"""

from __future__ import annotations

import argparse

from bench.bench_call import TOOL
from bench.common import gateway_headers, interleaved, paired_figures, paired_main, paired_report, run_upstreams
from tests.e2e.harness import run_gateway

TARGET_RATIO = 1.02
RULES = [{"id": "bench", "what": "server:limited", "rate": "1000000/s"}]  # never reached


async def run(args: argparse.Namespace) -> dict:
    async with run_upstreams("fast", 1, 1) as upstreams:
        url = upstreams[0].url
        entries = {"limited": {"transport": "http", "url": url}, "free": {"transport": "http", "url": url}}
        async with run_gateway(entries, extra={"rate_limits": RULES}) as gw:
            headers = gateway_headers(gw)
            paths = {"no limit": (gw.url("free"), headers), "rate limit": (gw.url("limited"), headers)}
            samples = await interleaved(paths, tool=TOOL, calls=args.calls * args.rounds, warmup=args.warmup)
    return paired_figures(samples, "no limit")


def report(results: dict) -> str:
    return paired_report(results, label="tools/call", baseline="no limit", target=f"≤ {TARGET_RATIO}× no limit")


def main(argv: list[str] | None = None) -> dict:
    return paired_main(__doc__ or "", run, report, argv)


if __name__ == "__main__":
    main()
