"""`make bench`: run bench_call, bench_list, bench_auth and bench_outbound, then one summary against the targets.

    .venv/bin/python -m bench.run_all [--quick] [--json-dir DIR] [--strict]

--quick shrinks every count (a smoke run, not a measurement); --strict exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench import bench_auth, bench_call, bench_list, bench_outbound, bench_ratelimit, bench_telemetry
from bench.common import fmt, table

QUICK_CALL = ["--calls", "60", "--warmup", "10", "--rounds", "1", "--burst-rounds", "1", "--sessions", "4",
              "--concurrent-calls", "20"]
QUICK_LIST = ["--lists", "40", "--rounds", "1"]
QUICK_AUTH = ["--calls", "60", "--warmup", "10", "--rounds", "1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json-dir", help="write call.json and list.json (figures and raw samples) here")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    extra_call, extra_list = (QUICK_CALL, QUICK_LIST) if args.quick else ([], [])
    extra_auth = QUICK_AUTH if args.quick else []
    extra_outbound = QUICK_AUTH if args.quick else []
    if args.json_dir:
        Path(args.json_dir).mkdir(parents=True, exist_ok=True)
        extra_list = [*extra_list, "--json", str(Path(args.json_dir) / "list.json")]
        extra_auth = [*extra_auth, "--json", str(Path(args.json_dir) / "auth.json")]
        extra_outbound = [*extra_outbound, "--json", str(Path(args.json_dir) / "outbound.json")]
    extra_ratelimit = list(QUICK_AUTH) if args.quick else []
    extra_telemetry = list(QUICK_AUTH) if args.quick else []
    if args.json_dir:
        extra_telemetry = [*extra_telemetry, "--json", str(Path(args.json_dir) / "telemetry.json")]
    if args.json_dir:
        extra_ratelimit = [*extra_ratelimit, "--json", str(Path(args.json_dir) / "ratelimit.json")]

    began = time.monotonic()
    calls_by_upstream: dict[str, dict] = {}
    for upstream in ("fast", "fastmcp"):
        print(f"== bench_call: tools/call, gateway vs direct, {upstream} upstream ==", flush=True)
        call_args = [*extra_call, "--upstream", upstream]
        if args.json_dir:
            call_args = [*call_args, "--json", str(Path(args.json_dir) / f"call-{upstream}.json")]
        calls_by_upstream[upstream] = bench_call.main(call_args)
    calls = calls_by_upstream["fast"]
    print("\n== bench_list: tools/list, virtual server vs one upstream ==", flush=True)
    lists = bench_list.main(extra_list)
    print("\n== bench_auth: tools/call with API key / IdP JWT vs auth off ==", flush=True)
    auth = bench_auth.main(extra_auth)
    print("\n== bench_outbound: tools/call to an oauth upstream (valid stored token) vs a static one ==", flush=True)
    outbound = bench_outbound.main(extra_outbound)
    print("\n== bench_ratelimit: tools/call under a rate limit (never reached) vs none ==", flush=True)
    ratelimit = bench_ratelimit.main(extra_ratelimit)
    print("\n== bench_telemetry: tools/call with metrics and tracing on vs off (two gateways) ==", flush=True)
    telemetry = bench_telemetry.main(extra_telemetry)

    rows: list[list[str]] = []
    missed = 0

    def target(metric: str, value: float, limit: float | None, unit: str, better: str = "low") -> None:
        nonlocal missed
        if limit is None:
            rows.append([metric, f"{fmt(value)} {unit}", "-", "-"])
            return
        ok = value <= limit if better == "low" else value >= limit
        missed += not ok
        bound = "<=" if better == "low" else ">="
        rows.append([metric, f"{fmt(value)} {unit}", f"{bound} {limit:g} {unit}", "yes" if ok else "MISSED"])

    for upstream, by_era in calls_by_upstream.items():
        for era in ("2025-11-25", "2026-07-28"):
            c = by_era[era]
            target(f"tools/call p50 added, {upstream} upstream ({era})", c["added_p50_ms"],
                   bench_call.TARGET_ADDED_MS, "ms")
            target(f"tools/call p50 gateway/direct, {upstream} upstream ({era})", c["ratio_p50"], None, "x")
            target(f"gateway CPU per call, {upstream} upstream ({era})", c["gateway_cpu_ms_per_call"],
                   bench_call.TARGET_CPU_MS, "ms")
            target(f"16 sessions calls/s gateway/direct, {upstream} upstream ({era})", c["concurrent_ratio"],
                   bench_call.TARGET_CONCURRENT_RATIO, "x", better="high")
    if "2026-07-28 raw" in calls:
        target("tools/call p50 added, lean client (2026-07-28)", calls["2026-07-28 raw"]["added_p50_ms"], None, "ms")
    # The tools/list target is judged with the lean client: the SDK client's own parsing of 500 tools instead
    # of 50 costs it more than the 2 ms budget on this machine whatever answers (a direct 500-tool upstream
    # is slower still: the "vs same-size upstream" rows), so its rows say what a user of that client sees.
    if "2026-07-28 raw" in lists:
        target("warm tools/list p50 above one upstream, lean client", lists["2026-07-28 raw"]["added_p50_ms"],
               bench_list.TARGET_ADDED_MS, "ms")
    for era in ("2025-11-25", "2026-07-28"):
        s = lists[era]
        target(f"warm tools/list p50 above one upstream, SDK client ({era})", s["added_p50_ms"], None, "ms")
        target(f"warm tools/list p50 vs same-size upstream, SDK client ({era})", s["added_vs_same_size_p50_ms"],
               None, "ms")
        target(f"cold tools/list, first after start ({era})", s["cold_ms"], None, "ms")

    for name, r in auth.items():
        if name != "auth off":
            target(f"tools/call p50 {name} / auth off (2025-11-25)", r["sdk_ratio"], bench_auth.TARGET_RATIO, "x")
            target(f"tools/call p50 {name} / auth off (2026-07-28 raw)", r["raw_ratio"], bench_auth.TARGET_RATIO, "x")

    r = outbound["oauth"]
    target("tools/call p50 oauth / static upstream (2025-11-25)", r["sdk_ratio"], bench_outbound.TARGET_RATIO, "x")
    target("tools/call p50 oauth / static upstream (2026-07-28 raw)", r["raw_ratio"], bench_outbound.TARGET_RATIO, "x")
    r = ratelimit["rate limit"]
    target("tools/call p50 rate limit / none (2025-11-25)", r["sdk_ratio"], bench_ratelimit.TARGET_RATIO, "x")
    target("tools/call p50 rate limit / none (2026-07-28 raw)", r["raw_ratio"], bench_ratelimit.TARGET_RATIO, "x")
    r = telemetry["metrics + tracing"]
    target("tools/call p50 telemetry on / off (2025-11-25)", r["sdk_ratio"], bench_telemetry.TARGET_RATIO, "x")
    target("tools/call p50 telemetry on / off (2026-07-28 raw)", r["raw_ratio"], bench_telemetry.TARGET_RATIO, "x")

    print(f"\n== summary ({time.monotonic() - began:.0f} s{', QUICK: not a measurement' if args.quick else ''}) ==")
    print(table(["figure", "measured", "target", "met"], rows))
    if missed:
        print(f"\n{missed} target(s) missed; bench/README.md says how to read and profile them.")
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
