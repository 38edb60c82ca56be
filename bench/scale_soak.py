"""A fixed-rate soak: a mix of requests at a steady rate for minutes, counting errors and watching the
gateway's memory.

    .venv/bin/python -m bench.scale_soak [--seconds 600] [--rate 50] [--sample 10] [--inflight 64] [--json FILE]

One real gateway (`manifold serve`) in front of bench/fast_upstream.py, on loopback. Requests start on a fixed
schedule (`--rate` per second, open loop: a slow answer does not slow the schedule), at most `--inflight`
at once (bounded: a request due while that many are unanswered is not sent and is counted as "skipped").
Out of every ten:

- 6 tools/call `noop` as 2026-07-28 requests (sessionless);
- 2 tools/call `noop` on one long-lived 2025-11-25 session;
- 1 tools/list (2026-07-28);
- 1 short-lived 2025-11-25 session: initialize, initialized, one tools/call, DELETE (sessions come and go,
  so what a session leaves behind would show up as growth).

An error is any answer that is not HTTP 200 with a JSON-RPC result (202 for `initialized`, 200 for DELETE),
and any exception. The gateway's RSS (VmRSS) is sampled every `--sample` seconds; the report gives the
first, last and largest sample and the least-squares slope, over the whole run and over its second half
(after warm-up: caches, the audit writer's batches, the allocator's arenas).

Targets (issue 14): 0 errors; flat memory — judged here as a second-half slope of at most 0.5 MB per minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson

from bench.common import fmt, modern_request, ms, p50, percentile, run_upstreams, table
from bench.scale_common import (
    POST_HEADERS,
    delete_session,
    judged,
    log_problems,
    open_session,
    rss_bytes,
    session_headers,
)
from tests.e2e.harness import run_gateway

SERVER = "bench"
TARGET_SLOPE_MB_PER_MIN = 0.5
KINDS = ("modern call", "modern call", "modern call", "modern call", "modern call", "modern call",
         "session call", "session call", "modern list", "session churn")


@dataclass
class Figures:
    seconds: float
    rate: float
    sent: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)
    skipped: int = 0
    latency: dict[str, list[float]] = field(default_factory=dict)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)
    elapsed: float = 0.0

    def error(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(f"{kind}: {message[:300]}")

    def summary(self) -> dict[str, float]:
        samples = self.rss
        half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
        return {
            "seconds": self.elapsed, "rate": self.rate, "sent": sum(self.sent.values()),
            "achieved_rate": sum(self.sent.values()) / self.elapsed if self.elapsed else float("nan"),
            "errors": sum(self.errors.values()), "skipped": self.skipped,
            "rss_first_mb": samples[0][1] / 1e6 if samples else float("nan"),
            "rss_last_mb": samples[-1][1] / 1e6 if samples else float("nan"),
            "rss_max_mb": max(s[1] for s in samples) / 1e6 if samples else float("nan"),
            "slope_mb_per_min": slope(samples) * 60 / 1e6,
            "second_half_slope_mb_per_min": slope(half) * 60 / 1e6,
            **{f"{kind.replace(' ', '_')}_p50_ms": ms(p50(values)) for kind, values in self.latency.items()},
            **{f"{kind.replace(' ', '_')}_p99_ms": ms(percentile(values, 99)) for kind, values in self.latency.items()},
        }


def slope(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of bytes over seconds; NaN with fewer than two samples."""
    if len(samples) < 2:
        return float("nan")
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_b = sum(b for _, b in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    return sum((t - mean_t) * (b - mean_b) for t, b in samples) / spread if spread else float("nan")


async def run(args: argparse.Namespace) -> Figures:
    figures = Figures(args.seconds, args.rate)
    async with run_upstreams("fast", 1, 5) as upstreams:
        config = {SERVER: {"transport": "http", "url": upstreams[0].url}}
        async with run_gateway(config) as gateway:
            url = gateway.url(SERVER)
            pid = gateway.process.pid
            auth = {"Authorization": f"Bearer {gateway.key}"}
            call_headers, call_body = modern_request("tools/call", {"name": "noop", "arguments": {}}, name="noop")
            list_headers, list_body = modern_request("tools/list")
            connector = aiohttp.TCPConnector(limit=args.inflight)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
                long_sid = await open_session(http, url, gateway.key, "soak-long")
                long_headers = {**POST_HEADERS, **session_headers(gateway.key, long_sid)}
                counter = 0

                async def post(headers: dict[str, str], body: bytes) -> None:
                    async with http.post(url, data=body, headers=headers) as response:
                        payload = await response.read()
                    if response.status != 200 or b'"result"' not in payload:
                        raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")

                async def one(kind: str) -> None:
                    nonlocal counter
                    counter += 1
                    begin = time.perf_counter()
                    try:
                        match kind:
                            case "modern call":
                                await post({**auth, **call_headers}, call_body)
                            case "modern list":
                                await post({**auth, **list_headers}, list_body)
                            case "session call":
                                await post(long_headers, orjson.dumps(
                                    {"jsonrpc": "2.0", "id": counter, "method": "tools/call",
                                     "params": {"name": "noop", "arguments": {}}}))
                            case _:  # session churn
                                sid = await open_session(http, url, gateway.key, "soak-short")
                                await post({**POST_HEADERS, **session_headers(gateway.key, sid)}, orjson.dumps(
                                    {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                     "params": {"name": "noop", "arguments": {}}}))
                                await delete_session(http, url, gateway.key, sid)
                    except Exception as exc:  # noqa: BLE001 - every failure is counted, none ends the soak
                        figures.error(kind, f"{type(exc).__name__}: {exc}")
                        return
                    figures.latency.setdefault(kind, []).append(time.perf_counter() - begin)

                loop = asyncio.get_running_loop()
                start = loop.time()
                stop = asyncio.Event()

                async def sample_rss() -> None:
                    while not stop.is_set():
                        figures.rss.append((loop.time() - start, rss_bytes(pid)))
                        try:
                            await asyncio.wait_for(stop.wait(), args.sample)
                        except TimeoutError:
                            pass
                    figures.rss.append((loop.time() - start, rss_bytes(pid)))

                sampler = asyncio.create_task(sample_rss())
                inflight: set[asyncio.Task[None]] = set()
                index = 0
                next_report = start + 60
                while (now := loop.time()) < start + args.seconds:
                    due = start + index / args.rate
                    if due > now:
                        await asyncio.sleep(due - now)  # pacing the fixed schedule, not synchronisation
                    kind = KINDS[index % len(KINDS)]
                    index += 1
                    if len(inflight) >= args.inflight:
                        figures.skipped += 1
                        continue
                    figures.sent[kind] += 1
                    task = asyncio.create_task(one(kind))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                    if loop.time() >= next_report:
                        next_report += 60
                        print(f"  {loop.time() - start:.0f} s: {sum(figures.sent.values())} sent, "
                              f"{sum(figures.errors.values())} errors, gateway RSS {rss_bytes(pid) / 1e6:.1f} MB",
                              flush=True)
                if inflight:
                    await asyncio.wait(inflight)
                figures.elapsed = loop.time() - start
                stop.set()
                await sampler
                await delete_session(http, url, gateway.key, long_sid)
            for problem in log_problems(gateway):
                figures.error("gateway log", problem)
    return figures


def report(figures: Figures) -> tuple[str, bool]:
    s = figures.summary()
    rows = [[kind, figures.sent[kind], figures.errors[kind], fmt(ms(p50(figures.latency.get(kind, []))), 2),
             fmt(ms(percentile(figures.latency.get(kind, []), 99)), 2)] for kind in sorted(figures.sent)]
    errors_line, errors_ok = judged("errors", s["errors"], 0, "", digits=0)
    slope_line, slope_ok = judged("RSS slope over the second half", s["second_half_slope_mb_per_min"],
                                  TARGET_SLOPE_MB_PER_MIN, "MB/min", digits=3)
    samples = " ".join(f"{b / 1e6:.1f}" for _, b in figures.rss)
    lines = [
        f"soak: {fmt(s['seconds'], 0)} s at {fmt(figures.rate, 0)} requests/s "
        f"(achieved {fmt(s['achieved_rate'], 1)}/s), "
        f"{s['sent']} requests, {figures.skipped} skipped (more than the in-flight bound unanswered)",
        table(["request", "sent", "errors", "p50 ms", "p99 ms"], rows),
        f"gateway RSS (MB): first {fmt(s['rss_first_mb'], 1)}, last {fmt(s['rss_last_mb'], 1)}, "
        f"max {fmt(s['rss_max_mb'], 1)}; slope {fmt(s['slope_mb_per_min'], 3)} MB/min over the run",
        f"samples every {figures.rss[1][0] - figures.rss[0][0]:.0f} s: {samples}" if len(figures.rss) > 1 else "",
        errors_line,
        slope_line,
    ] + [f"  first errors: {e}" for e in figures.first_errors]
    return "\n".join(line for line in lines if line), errors_ok and slope_ok and figures.skipped == 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=50.0, help="requests started per second")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--inflight", type=int, default=64, help="at most this many requests unanswered")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> tuple[str, bool, dict]:
    """Run it: the report, whether every target was met, the figures (also written to --json)."""
    figures = asyncio.run(run(args))
    text, ok = report(figures)
    summary = figures.summary()
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "figures": summary, "report": text, "rss": figures.rss,
                       "first_errors": figures.first_errors}, out, indent=1)
    return text, ok, summary


def main(argv: list[str] | None = None) -> dict:
    text, _, summary = measure(parse_args(argv))
    print(text)
    return summary


if __name__ == "__main__":
    main()
