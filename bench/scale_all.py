"""Run the four scale benchmarks one after the other and end with one summary of issue 14's targets.

    .venv/bin/python -m bench.scale_all [--quick] [--only sessions,tools,soak,replicas] [--json-dir DIR]
                                        [--database-url URL | --postgres]
    make bench-scale                        # the full sizes: ~15 minutes (10,000 sessions, 10-minute soak)
    make bench-scale SCALE_ARGS=--quick     # reduced sizes, ~2 minutes: checks that they work, not a measurement

A bench is not a test: a missed target is printed (MISSED) and the exit status stays 0; it is non-zero only
when a benchmark could not run (a crash, a gateway that did not start, haproxy missing).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench import scale_replicas, scale_sessions, scale_soak, scale_tools

QUICK = {
    "sessions": ["--sessions", "1000", "--principals", "20", "--calls", "300"],
    "tools": ["--upstreams", "10", "--tools", "100", "--lists", "100", "--rounds", "2", "--changes", "5"],
    "soak": ["--seconds", "30", "--sample", "5"],
    "replicas": ["--calls", "300", "--warmup", "30"],
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (a smoke run, not a measurement)")
    parser.add_argument("--only", default="sessions,tools,soak,replicas")
    parser.add_argument("--json-dir", help="write each benchmark's figures as DIR/scale_<name>.json")
    parser.add_argument("--database-url", help="for the replicas benchmark (default: one SQLite file)")
    parser.add_argument("--postgres", action="store_true", help="the replicas on a throw-away PostgreSQL cluster")
    args = parser.parse_args(argv)
    modules = {"sessions": scale_sessions, "tools": scale_tools, "soak": scale_soak, "replicas": scale_replicas}
    summary: list[str] = []
    for name in args.only.split(","):
        if name not in modules:
            raise SystemExit(f"unknown benchmark {name!r} (one of {', '.join(modules)})")
        extra = list(QUICK[name]) if args.quick else []
        if name == "replicas" and args.database_url:
            extra += ["--database-url", args.database_url]
        if name == "replicas" and args.postgres:
            extra += ["--postgres"]
        if args.json_dir:
            Path(args.json_dir).mkdir(parents=True, exist_ok=True)
            extra += ["--json", str(Path(args.json_dir) / f"scale_{name}.json")]
        print(f"\n=== scale_{name} {' '.join(extra)}", flush=True)
        begin = time.monotonic()
        text, ok, _ = modules[name].measure(modules[name].parse_args(extra))
        print(text, flush=True)
        summary.append(f"scale_{name} ({time.monotonic() - begin:.0f} s){'' if ok else ': a target MISSED'}")
        summary += [f"  {line}" for line in text.splitlines() if line.endswith((": yes", ": MISSED"))
                    or line.startswith(("haproxy hop", "MISSED"))]
    print("\n=== summary" + (" (--quick: reduced sizes, not a measurement)" if args.quick else ""))
    print("\n".join(summary))


if __name__ == "__main__":
    main()
