"""Idle 2025-11-25 sessions at scale: the gateway's memory per session, and a call's latency while they are held.

    .venv/bin/python -m bench.scale_sessions [--sessions 10000] [--principals 100] [--calls 1000]
                                             [--concurrency 32] [--json FILE]

One real gateway (`manifold serve`) in front of bench/fast_upstream.py. `--principals` API keys are made
through the admin API (one user each). Then:

1. idle: a probe session (the development key) times `--calls` tools/call of `noop`, one after the other;
2. hold: `--sessions` 2025-11-25 sessions are opened, spread round-robin over the principals, and each opens
   its GET notification stream and keeps it open (the client reads the response head and nothing more);
   the gateway's RSS (VmRSS) before and after gives the memory per held session; the probe times its calls
   again while they are all held;
3. release: every stream is closed and every session DELETEd; RSS and the probe's calls once more (info).

Targets (issue 14): memory per held session <= 10 kB; the call's p50 during the hold within 1 ms of idle.

The gateway's limits are raised for the run (its config, written by the bench): sessions_per_principal and
streams_per_principal to sessions/principals + 8, sessions_total to sessions + 100 (at least its default).
The open-file limit is raised to sessions + 1,024 for this process and the gateway it starts (both hold one
socket per session), within the hard limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from dataclasses import dataclass, field

import aiohttp

from bench.common import fmt, ms, p50, percentile, run_upstreams, signed, table
from bench.scale_common import (
    GetStream,
    create_keys,
    delete_session,
    judged,
    open_get_stream,
    open_session,
    raise_fd_limit,
    rss_bytes,
    session_headers,
    timed_calls,
)
from tests.e2e.harness import run_gateway

SERVER = "bench"
TARGET_BYTES_PER_SESSION = 10 * 1000  # "10 kB"
TARGET_ADDED_P50_MS = 1.0


@dataclass
class Figures:
    sessions: int
    principals: int
    fd_note: str = ""
    limits: dict[str, int] = field(default_factory=dict)
    rss_before: int = 0
    rss_held: int = 0
    rss_held_after_calls: int = 0
    rss_released: int = 0
    open_seconds: float = float("nan")
    idle: list[float] = field(default_factory=list)
    held: list[float] = field(default_factory=list)
    released: list[float] = field(default_factory=list)
    streams_alive: int = 0

    def summary(self) -> dict[str, float]:
        return {
            "sessions": self.sessions, "principals": self.principals,
            "rss_before_mb": self.rss_before / 1e6, "rss_held_mb": self.rss_held / 1e6,
            "rss_held_after_calls_mb": self.rss_held_after_calls / 1e6, "rss_released_mb": self.rss_released / 1e6,
            "bytes_per_session": (self.rss_held - self.rss_before) / self.sessions,
            "open_per_second": self.sessions / self.open_seconds,
            "idle_p50_ms": ms(p50(self.idle)), "idle_p99_ms": ms(percentile(self.idle, 99)),
            "held_p50_ms": ms(p50(self.held)), "held_p99_ms": ms(percentile(self.held, 99)),
            "released_p50_ms": ms(p50(self.released)),
            "added_p50_ms": ms(p50(self.held) - p50(self.idle)),
            "streams_alive": self.streams_alive,
        }


def limits_for(sessions: int, principals: int) -> dict[str, int]:
    per_principal = math.ceil(sessions / principals) + 8
    return {"sessions_per_principal": max(200, per_principal), "streams_per_principal": max(64, per_principal),
            "sessions_total": max(20_000, sessions + 100)}


async def run(args: argparse.Namespace) -> Figures:
    figures = Figures(args.sessions, args.principals)
    figures.fd_note = raise_fd_limit(args.sessions + 1024)
    figures.limits = limits_for(args.sessions, args.principals)
    print(figures.fd_note, flush=True)
    print(f"gateway limits for this run: {figures.limits}", flush=True)
    async with run_upstreams("fast", 1, 1) as upstreams:
        config = {SERVER: {"transport": "http", "url": upstreams[0].url}}
        async with run_gateway(config, gateway={"limits": figures.limits}) as gateway:
            url = gateway.url(SERVER)
            pid = gateway.process.pid
            tokens = await create_keys(gateway, args.principals)
            connector = aiohttp.TCPConnector(limit=args.concurrency)
            async with aiohttp.ClientSession(connector=connector) as http, \
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as probe_http:
                probe_sid = await open_session(probe_http, url, gateway.key, "probe")
                probe = session_headers(gateway.key, probe_sid)
                # Warm-up: every principal authenticates and opens (then closes) one session with its stream,
                # so the figure below is per held session, not first-use caches and code paths.
                for token in tokens:
                    sid = await open_session(http, url, token)
                    stream = await open_get_stream(url, token, sid)
                    await stream.close()
                    await delete_session(http, url, token, sid)
                await timed_calls(probe_http, url, probe, "noop", 300)  # warm-up
                figures.idle = await timed_calls(probe_http, url, probe, "noop", args.calls)
                figures.rss_before = rss_bytes(pid)
                print(f"  idle: p50 {fmt(ms(p50(figures.idle)), 3)} ms; gateway RSS "
                      f"{figures.rss_before / 1e6:.1f} MB; opening {args.sessions} sessions...", flush=True)

                held: list[tuple[str, str, GetStream]] = []
                semaphore = asyncio.Semaphore(args.concurrency)

                async def hold_one(index: int) -> None:
                    token = tokens[index % len(tokens)]
                    async with semaphore:
                        sid = await open_session(http, url, token)
                        held.append((token, sid, await open_get_stream(url, token, sid)))

                begin = time.perf_counter()
                try:
                    await gather_all(hold_one(i) for i in range(args.sessions))
                    figures.open_seconds = time.perf_counter() - begin
                    figures.rss_held = rss_bytes(pid)
                    print(f"  held {len(held)} sessions in {figures.open_seconds:.1f} s; gateway RSS "
                          f"{figures.rss_held / 1e6:.1f} MB", flush=True)
                    figures.held = await timed_calls(probe_http, url, probe, "noop", args.calls)
                    figures.rss_held_after_calls = rss_bytes(pid)
                    figures.streams_alive = sum(1 for _, _, s in held if not s.reader.at_eof())
                finally:
                    async def release(token: str, sid: str, stream: GetStream) -> None:
                        async with semaphore:
                            await stream.close()
                            await delete_session(http, url, token, sid)

                    await gather_all(release(*entry) for entry in held)
                figures.rss_released = rss_bytes(pid)
                figures.released = await timed_calls(probe_http, url, probe, "noop", args.calls)
            if "Traceback" in gateway.log():
                raise RuntimeError(f"the gateway logged a traceback:\n{gateway.log()[-3000:]}")
    return figures


async def gather_all(coroutines) -> None:  # noqa: ANN001 - an iterable of coroutines
    """Run them all; the first failure is raised after the others finished (nothing is left half-open)."""
    results = await asyncio.gather(*coroutines, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(results)} failed; the first: {failures[0]!r}") from failures[0]


def report(figures: Figures) -> tuple[str, bool]:
    s = figures.summary()
    rows = [
        ["idle gateway", fmt(s["rss_before_mb"], 1), fmt(s["idle_p50_ms"], 3), fmt(s["idle_p99_ms"], 3)],
        [f"{figures.sessions} sessions held", fmt(s["rss_held_mb"], 1), fmt(s["held_p50_ms"], 3),
         fmt(s["held_p99_ms"], 3)],
        ["all released (info)", fmt(s["rss_released_mb"], 1), fmt(s["released_p50_ms"], 3), ""],
    ]
    memory, memory_ok = judged("memory per held session", s["bytes_per_session"] / 1000,
                               TARGET_BYTES_PER_SESSION / 1000, "kB")
    latency, latency_ok = judged("tools/call p50 during the hold minus idle", s["added_p50_ms"],
                                 TARGET_ADDED_P50_MS, "ms", digits=3)
    lines = [
        f"idle 2025-11-25 sessions: {figures.sessions} sessions over {figures.principals} API keys, each holding its "
        f"GET stream open; probe: tools/call noop on its own session (2025-11-25), one at a time",
        table(["state", "gateway RSS MB", "call p50 ms", "p99 ms"], rows),
        f"opened {fmt(s['open_per_second'], 0)} sessions/s (initialize + initialized + GET); "
        f"streams still open after the probe: {figures.streams_alive} of {figures.sessions}; "
        f"RSS after the probe during the hold: {fmt(s['rss_held_after_calls_mb'], 1)} MB",
        memory,
        latency.replace(": yes", f" ({signed(s['added_p50_ms'], 3)}): yes"),
        f"{figures.fd_note}; gateway limits for the run: {figures.limits}",
    ]
    ok = memory_ok and latency_ok and figures.streams_alive == figures.sessions
    if figures.streams_alive != figures.sessions:
        lines.append(f"MISSED: {figures.sessions - figures.streams_alive} streams were ended by the gateway")
    return "\n".join(lines), ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--principals", type=int, default=100, help="API keys the sessions are spread over")
    parser.add_argument("--calls", type=int, default=1000, help="timed probe calls per state")
    parser.add_argument("--concurrency", type=int, default=32, help="sessions being opened at once")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    figures = asyncio.run(run(args))
    text, _ = report(figures)
    print(text)
    summary = figures.summary()
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "figures": summary, "limits": figures.limits}, out, indent=1)
    return summary


if __name__ == "__main__":
    main()
