"""Idle 2025-11-25 sessions at scale: the gateway's memory per session, and a call's latency while they are held.

    .venv/bin/python -m bench.scale_sessions [--sessions 10000] [--principals 100] [--calls 1000]
                                             [--concurrency 32] [--json FILE] [--tracemalloc [FRAMES]]

One real gateway (`manifold serve`) in front of bench/fast_upstream.py. `--principals` API keys are made
through the admin API (one user each). Then:

A second gateway process, started the same way, stays idle: a probe session on each times `--calls`
tools/call of `noop`, alternating call by call between the two, so the comparison is made under the same
conditions of a shared machine rather than minutes apart.

1. before: the probes' calls; the gateway's RSS (VmRSS);
2. hold: `--sessions` 2025-11-25 sessions are opened, spread round-robin over the principals (RSS again), then
   each opens its GET notification stream and keeps it open (the client reads the response head and nothing
   more; RSS again): memory per held session = RSS growth / sessions, split into the session and its stream;
   the probes' calls while all are held;
3. release: every stream is closed and every session DELETEd; RSS and the probes' calls once more (info).

Targets (issue 14): memory per held session <= 10 kB; the call's p50 during the hold within 1 ms of the idle
gateway's.

`--tracemalloc`: where the memory goes. The measured gateway runs with bench/tracemalloc_site on its
PYTHONPATH, starts tracemalloc when the sessions are about to be opened and takes a snapshot after the
initializes and another after the GETs; the Python allocations still alive in each step are printed per
session, by file and by line (FRAMES: traceback depth, default 1; tracing slows the gateway, so the latency
figures of such a run mean nothing).

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
import os
import signal
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.common import fmt, ms, p50, percentile, run_upstreams, signed, table
from bench.scale_common import (
    GetStream,
    create_keys,
    delete_session,
    judged,
    log_problems,
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
CLIENT_KEEPALIVE_S = 2.0  # below the gateway's keep-alive timeout


@dataclass
class Figures:
    sessions: int
    principals: int
    fd_note: str = ""
    limits: dict[str, int] = field(default_factory=dict)
    rss_before: int = 0
    rss_sessions: int = 0  # the sessions initialized, no stream open yet
    rss_held: int = 0  # and every GET stream open
    rss_held_after_calls: int = 0
    rss_released: int = 0
    open_seconds: float = float("nan")
    # probe calls, paired call by call: the gateway that holds the sessions, and an idle one
    before: dict[str, list[float]] = field(default_factory=lambda: {"held": [], "idle": []})
    during: dict[str, list[float]] = field(default_factory=lambda: {"held": [], "idle": []})
    after: dict[str, list[float]] = field(default_factory=lambda: {"held": [], "idle": []})
    streams_alive: int = 0
    release_failures: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)
    traced: str = ""  # --tracemalloc: where the memory went

    def summary(self) -> dict[str, float]:
        figures: dict[str, float] = {
            "sessions": self.sessions, "principals": self.principals,
            "rss_before_mb": self.rss_before / 1e6, "rss_sessions_mb": self.rss_sessions / 1e6,
            "rss_held_mb": self.rss_held / 1e6, "rss_held_after_calls_mb": self.rss_held_after_calls / 1e6,
            "rss_released_mb": self.rss_released / 1e6,
            "bytes_per_session": (self.rss_held - self.rss_before) / self.sessions,
            "bytes_per_session_without_stream": (self.rss_sessions - self.rss_before) / self.sessions,
            "bytes_per_stream": (self.rss_held - self.rss_sessions) / self.sessions,
            "open_per_second": self.sessions / self.open_seconds,
            "streams_alive": self.streams_alive,
        }
        for phase, samples in (("before", self.before), ("during", self.during), ("after", self.after)):
            for side in ("held", "idle"):
                figures[f"{phase}_{side}_p50_ms"] = ms(p50(samples[side]))
                figures[f"{phase}_{side}_p99_ms"] = ms(percentile(samples[side], 99))
            figures[f"{phase}_added_p50_ms"] = ms(p50(samples["held"]) - p50(samples["idle"]))
        return figures


def limits_for(sessions: int, principals: int) -> dict[str, int]:
    per_principal = math.ceil(sessions / principals) + 8
    return {"sessions_per_principal": max(200, per_principal), "streams_per_principal": max(64, per_principal),
            "sessions_total": max(20_000, sessions + 100)}


@dataclass
class Probe:
    http: aiohttp.ClientSession
    url: str
    headers: dict[str, str]


async def paired_calls(probes: dict[str, Probe], count: int, into: dict[str, list[float]]) -> None:
    """`count` tools/call noop on each probe, alternating call by call (and which goes first), so both
    gateways are timed under the same conditions of a shared machine."""
    names = list(probes)
    for n in range(count):
        for name in names if n % 2 == 0 else names[::-1]:
            probe = probes[name]
            into[name] += await timed_calls(probe.http, probe.url, probe.headers, "noop", 1)


class Tracer:
    """--tracemalloc: signals the measured gateway (bench/tracemalloc_site/sitecustomize.py) and reads its
    snapshots."""

    def __init__(self, frames: int) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="manifold-tracemalloc-"))
        self.frames = frames
        self.pid = 0
        self.taken = 0

    def env(self) -> dict[str, str]:
        site = str(Path(__file__).resolve().parent / "tracemalloc_site")
        path = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH", "")) if p)
        return {"PYTHONPATH": path, "MANIFOLD_BENCH_TRACEMALLOC": str(self.folder),
                "MANIFOLD_BENCH_TRACEMALLOC_FRAMES": str(self.frames)}

    async def _signal_and_wait(self, name: str) -> Path:
        os.kill(self.pid, signal.SIGUSR1)
        path = self.folder / name
        deadline = time.monotonic() + 600
        while not path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway wrote no {name}")
            await asyncio.sleep(0.1)
        return path

    async def start(self) -> None:
        await self._signal_and_wait("started")

    async def snapshot(self) -> tracemalloc.Snapshot:
        self.taken += 1
        return tracemalloc.Snapshot.load(str(await self._signal_and_wait(f"snapshot-{self.taken}.tm")))


def traced_report(title: str, new: tracemalloc.Snapshot, old: tracemalloc.Snapshot | None, per: int,
                  top: int = 25) -> str:
    """The allocations alive in `new` and not in `old`, per session: by file, then by line (or traceback)."""
    lines = []
    for key in ("filename", "lineno" if new.traceback_limit <= 1 else "traceback"):
        stats = new.compare_to(old, key) if old is not None else [
            tracemalloc.StatisticDiff(s.traceback, s.size, s.size, s.count, s.count) for s in new.statistics(key)]
        stats.sort(key=lambda s: -s.size_diff)
        total = sum(s.size_diff for s in stats)
        lines.append(f"{title}, by {key}: {total / per:.0f} B per session traced")
        for s in stats[:top]:
            if key == "traceback":
                where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in s.traceback)
            else:
                frame = s.traceback[0]
                where = frame.filename if key == "filename" else f"{frame.filename}:{frame.lineno}"
            lines.append(f"  {s.size_diff / per:8.0f} B {s.count_diff / per:6.2f} blocks  {where}")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> Figures:
    figures = Figures(args.sessions, args.principals)
    tracer = Tracer(args.tracemalloc) if args.tracemalloc else None
    figures.fd_note = raise_fd_limit(args.sessions + 1024)
    figures.limits = limits_for(args.sessions, args.principals)
    print(figures.fd_note, flush=True)
    print(f"gateway limits for this run: {figures.limits}", flush=True)
    async with run_upstreams("fast", 1, 1) as upstreams:
        config = {SERVER: {"transport": "http", "url": upstreams[0].url}}
        gateway_settings = {"limits": figures.limits}
        async with run_gateway(config, gateway=gateway_settings, env=tracer.env() if tracer else None) as gateway, \
                run_gateway(config, gateway=gateway_settings) as idle_gateway:
            url = gateway.url(SERVER)
            pid = gateway.process.pid
            if tracer is not None:
                tracer.pid = pid
            tokens = await create_keys(gateway, args.principals)
            # Idle connections are dropped here after 2 s, before the gateway's keep-alive timeout (uvicorn's 5 s)
            # closes them: a request sent on a connection the server is closing at that moment fails
            # ("Cannot write to closing transport"), as one of 10,000 initializes did once.
            connector = aiohttp.TCPConnector(limit=args.concurrency, keepalive_timeout=CLIENT_KEEPALIVE_S)
            async with aiohttp.ClientSession(connector=connector) as http, \
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                        limit=1, keepalive_timeout=CLIENT_KEEPALIVE_S)) as held_http, \
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                        limit=1, keepalive_timeout=CLIENT_KEEPALIVE_S)) as idle_http:
                probes = {}
                for name, gw, probe_http in (("held", gateway, held_http), ("idle", idle_gateway, idle_http)):
                    sid = await open_session(probe_http, gw.url(SERVER), gw.key, f"probe-{name}")
                    probes[name] = Probe(probe_http, gw.url(SERVER), session_headers(gw.key, sid))
                # Warm-up: every principal authenticates and opens (then closes) one session with its stream,
                # so the figure below is per held session, not first-use caches and code paths.
                for token in tokens:
                    sid = await open_session(http, url, token)
                    stream = await open_get_stream(url, token, sid)
                    await stream.close()
                    await delete_session(http, url, token, sid)
                await paired_calls(probes, 150, {"held": [], "idle": []})  # warm-up
                await paired_calls(probes, args.calls, figures.before)
                figures.rss_before = rss_bytes(pid)
                print(f"  before: p50 {fmt(ms(p50(figures.before['held'])), 3)} ms (idle gateway "
                      f"{fmt(ms(p50(figures.before['idle'])), 3)} ms); gateway RSS {figures.rss_before / 1e6:.1f} MB; "
                      f"opening {args.sessions} sessions...", flush=True)

                opened: list[tuple[str, str]] = []
                held: list[tuple[str, str, GetStream]] = []
                semaphore = asyncio.Semaphore(args.concurrency)

                async def open_one(index: int) -> None:
                    token = tokens[index % len(tokens)]
                    async with semaphore:
                        opened.append((token, await open_session(http, url, token)))

                async def stream_one(token: str, sid: str) -> None:
                    async with semaphore:
                        held.append((token, sid, await open_get_stream(url, token, sid)))

                if tracer is not None:
                    await tracer.start()
                begin = time.perf_counter()
                try:
                    await gather_all(open_one(i) for i in range(args.sessions))
                    figures.rss_sessions = rss_bytes(pid)
                    sessions_snapshot = await tracer.snapshot() if tracer is not None else None
                    await gather_all(stream_one(token, sid) for token, sid in opened)
                    figures.open_seconds = time.perf_counter() - begin
                    figures.rss_held = rss_bytes(pid)
                    if tracer is not None and sessions_snapshot is not None:
                        held_snapshot = await tracer.snapshot()
                        figures.traced = "\n".join((
                            traced_report("the session (initialize)", sessions_snapshot, None, args.sessions),
                            traced_report("its GET stream", held_snapshot, sessions_snapshot, args.sessions)))
                    print(f"  held {len(held)} sessions in {figures.open_seconds:.1f} s; gateway RSS "
                          f"{figures.rss_sessions / 1e6:.1f} MB without streams, {figures.rss_held / 1e6:.1f} MB "
                          "with them", flush=True)
                    await paired_calls(probes, args.calls, figures.during)
                    figures.rss_held_after_calls = rss_bytes(pid)
                    figures.streams_alive = sum(1 for _, _, s in held if not s.reader.at_eof())
                finally:
                    streaming = {sid for _, sid, _ in held}

                    async def release(token: str, sid: str, stream: GetStream | None) -> None:
                        async with semaphore:
                            if stream is not None:
                                await stream.close()
                            await delete_session(http, url, token, sid)

                    figures.release_failures = await gather_counting(
                        [release(*entry) for entry in held]
                        + [release(token, sid, None) for token, sid in opened if sid not in streaming])
                figures.rss_released = rss_bytes(pid)
                await paired_calls(probes, args.calls, figures.after)
            figures.log_problems = log_problems(gateway) + log_problems(idle_gateway)
    return figures


async def gather_counting(coroutines: list) -> list[str]:
    """Run them all; what each failure said (the run goes on: a failed release is a figure, not a crash)."""
    results = await asyncio.gather(*coroutines, return_exceptions=True)
    return [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]


async def gather_all(coroutines) -> None:  # noqa: ANN001 - an iterable of coroutines
    """Run them all; the first failure is raised after the others finished (nothing is left half-open)."""
    results = await asyncio.gather(*coroutines, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(results)} failed; the first: {failures[0]!r}") from failures[0]


def report(figures: Figures) -> tuple[str, bool]:
    s = figures.summary()
    rows = [
        ["before", fmt(s["rss_before_mb"], 1), fmt(s["before_held_p50_ms"], 3), fmt(s["before_held_p99_ms"], 3),
         fmt(s["before_idle_p50_ms"], 3), signed(s["before_added_p50_ms"], 3)],
        [f"{figures.sessions} sessions held", fmt(s["rss_held_mb"], 1), fmt(s["during_held_p50_ms"], 3),
         fmt(s["during_held_p99_ms"], 3), fmt(s["during_idle_p50_ms"], 3), signed(s["during_added_p50_ms"], 3)],
        ["all released (info)", fmt(s["rss_released_mb"], 1), fmt(s["after_held_p50_ms"], 3),
         fmt(s["after_held_p99_ms"], 3), fmt(s["after_idle_p50_ms"], 3), signed(s["after_added_p50_ms"], 3)],
    ]
    memory, memory_ok = judged("memory per held session", s["bytes_per_session"] / 1000,
                               TARGET_BYTES_PER_SESSION / 1000, "kB")
    latency, latency_ok = judged("tools/call p50 during the hold minus the idle gateway's", s["during_added_p50_ms"],
                                 TARGET_ADDED_P50_MS, "ms", digits=3)
    lines = [
        f"idle 2025-11-25 sessions: {figures.sessions} sessions over {figures.principals} API keys, each holding its "
        "GET stream open; probe: tools/call noop on a session of its own, alternating call by call with the same "
        "call to a second, idle gateway",
        table(["state", "gateway RSS MB", "call p50 ms", "p99 ms", "idle gateway p50 ms", "added p50 ms"], rows),
        f"per held session: {fmt(s['bytes_per_session_without_stream'] / 1000, 2)} kB for the session, "
        f"{fmt(s['bytes_per_stream'] / 1000, 2)} kB for its open GET stream; opened "
        f"{fmt(s['open_per_second'], 0)} sessions/s (initialize + initialized, then GET); streams still open after "
        f"the probe: {figures.streams_alive} of {figures.sessions}; RSS after the probe during the hold: "
        f"{fmt(s['rss_held_after_calls_mb'], 1)} MB",
        memory,
        latency,
        f"{figures.fd_note}; gateway limits for the run: {figures.limits}",
    ]
    if figures.traced:
        lines.append(figures.traced)
    ok = memory_ok and latency_ok and figures.streams_alive == figures.sessions
    if figures.streams_alive != figures.sessions:
        lines.append(f"MISSED: {figures.sessions - figures.streams_alive} streams were ended by the gateway")
    if figures.release_failures:
        ok = False
        lines.append(f"MISSED: {len(figures.release_failures)} sessions could not be released; the first: "
                     f"{figures.release_failures[0][:300]}")
    if figures.log_problems:
        ok = False
        lines.append(f"MISSED: {len(figures.log_problems)} errors in the gateways' logs; the first: "
                     f"{figures.log_problems[0]}")
    return "\n".join(lines), ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--principals", type=int, default=100, help="API keys the sessions are spread over")
    parser.add_argument("--calls", type=int, default=1000, help="timed probe calls per gateway and state")
    parser.add_argument("--concurrency", type=int, default=32, help="sessions being opened at once")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--tracemalloc", type=int, nargs="?", const=1, default=0, metavar="FRAMES",
                        help="trace the measured gateway's Python allocations per held session (see above)")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> tuple[str, bool, dict]:
    """Run it: the report, whether every target was met, the figures (also written to --json)."""
    figures = asyncio.run(run(args))
    text, ok = report(figures)
    summary = figures.summary()
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "figures": summary, "report": text, "limits": figures.limits}, out, indent=1)
    return text, ok, summary


def main(argv: list[str] | None = None) -> dict:
    text, _, summary = measure(parse_args(argv))
    print(text)
    return summary


if __name__ == "__main__":
    main()
