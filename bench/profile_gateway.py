"""Where the gateway spends its CPU on the tools/call hot path: py-spy on the real gateway process.

    .venv/bin/pip install py-spy                 # not a project dependency; any py-spy on PATH works
    .venv/bin/python -m bench.profile_gateway [--mode legacy|2026-07-28] [--calls 3000] [--top 25]
                                              [--kind call|list] [--upstream fast|fastmcp|kitchen] [--native]
                                              [--py-spy PATH] [--flame FILE.svg] [--raw FILE]

Starts the fast upstream (or the FastMCP one, or kitchen.py) and the gateway as in bench_call, warms up,
then samples the gateway with `py-spy record` while one client session makes `--calls` sequential calls
(or lists, with --kind list on a 10 x 50 virtual server). Prints the functions with the most samples:
"self" (the frame on top of the stack) and "inclusive" (anywhere on the stack), as % of the samples py-spy
took while the gateway was busy (idle time in the event loop's poll is not sampled).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import anyio

from bench.common import gateway_headers, mcp_client, quiet_sdk_warnings, run_upstreams
from tests.e2e.harness import run_gateway


def find_py_spy(explicit: str | None) -> str:
    candidates = [explicit, shutil.which("py-spy"), str(Path(sys.executable).parent / "py-spy")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("py-spy not found: `.venv/bin/pip install py-spy`, or pass --py-spy PATH")


def short(frame: str) -> str:
    """'handle (manifold/relay/handlers.py:120)' -> 'handle (manifold/relay/handlers.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name


def summarize(raw_path: Path, top: int) -> str:
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        leaf_file = frames[-1].partition(" (")[2].rstrip(")")
        by_file[leaf_file.split("/")[0] if "/" in leaf_file else leaf_file] += count
    if not total:
        return "py-spy recorded no samples"

    def block(title: str, counter: Counter[str]) -> list[str]:
        lines = [title]
        lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in counter.most_common(top)]
        return lines

    lines = [f"{total} samples"]
    lines += block("self time by package/module (top of stack):", by_file)
    lines += block("self time by function:", self_counts)
    lines += block("inclusive time by function:", inclusive)
    return "\n".join(lines)


async def drive(args: argparse.Namespace, py_spy: str, raw_path: Path) -> None:
    upstream_count, tools = (10, 50) if args.kind == "list" else (1, 1)
    async with run_upstreams(args.upstream, upstream_count, tools) as upstreams:
        config = {f"up{i + 1:02d}": {"transport": "http", "url": u.url} for i, u in enumerate(upstreams)}
        servers = {"all": {"members": [{"upstream": uid} for uid in config]}}
        async with run_gateway(config, servers) as gateway:
            server = "all" if args.kind == "list" else "up01"
            async with mcp_client(gateway.url(server), args.mode, gateway_headers(gateway)) as client:
                await client.list_tools()
                tool = "up01__noop" if args.kind == "list" else "noop"

                async def once() -> None:
                    if args.kind == "list":
                        await client.list_tools()
                    else:
                        await client.call_tool(tool, {})

                for _ in range(100):
                    await once()
                command = [py_spy, "record", "--pid", str(gateway.process.pid), "--rate", str(args.rate),
                           "--format", "raw", "--output", str(raw_path)]
                # py-spy pauses the process for each sample by default (and must, for --native): a sample taken
                # without pausing (--nonblocking) often reads a stack being changed and keeps only its bottom
                # frames, which put ~75% of the time in `Runner.run`. --gil: only the thread running Python.
                command.append("--native" if args.native else "--gil")
                if args.nonblocking:
                    command.append("--nonblocking")
                spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                await anyio.sleep(1.0)  # py-spy attaches asynchronously; let it start sampling first
                begin = time.perf_counter()
                for _ in range(args.calls):
                    await once()
                elapsed = time.perf_counter() - begin
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                _, err = spy.communicate(timeout=30)
                if not raw_path.exists():
                    raise SystemExit(f"py-spy wrote nothing: {err.decode(errors='replace')[-2000:]}")
                if args.flame:
                    flame = [py_spy, "record", "--pid", str(gateway.process.pid), "--rate", str(args.rate),
                             "--format", "flamegraph", "--output", args.flame, "--nonblocking", "--duration", "5"]
                    flame_spy = subprocess.Popen(flame, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    deadline = time.monotonic() + 6
                    while time.monotonic() < deadline:
                        await once()
                    flame_spy.wait(timeout=30)
                print(f"{args.calls} sequential {args.kind}s ({args.mode}) in {elapsed:.2f} s "
                      f"({1000 * elapsed / args.calls:.2f} ms each, client included)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="2026-07-28", choices=["legacy", "2026-07-28"])
    parser.add_argument("--kind", default="call", choices=["call", "list"])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--upstream", choices=["fast", "fastmcp", "kitchen"], default="fast")
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--py-spy", dest="py_spy")
    parser.add_argument("--native", action="store_true",
                        help="include C frames (uvloop, httptools, aiohttp's speedups, syscalls)")
    parser.add_argument("--flame", help="also write a 5 s flame graph (SVG) here")
    parser.add_argument("--nonblocking", action="store_true",
                        help="sample without pausing the gateway (less overhead, truncated stacks)")
    parser.add_argument("--raw", help="also keep py-spy's raw stacks (one line per stack) in this file")
    args = parser.parse_args(argv)
    py_spy = find_py_spy(args.py_spy)
    with tempfile.TemporaryDirectory(prefix="manifold-profile-") as tmp:
        raw_path = Path(tmp) / "gateway.txt"
        with quiet_sdk_warnings():
            anyio.run(drive, args, py_spy, raw_path)
        print(summarize(raw_path, args.top))
        if args.raw:
            shutil.copyfile(raw_path, args.raw)


if __name__ == "__main__":
    main()
