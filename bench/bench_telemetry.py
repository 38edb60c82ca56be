"""What telemetry costs: the same tools/call through two gateway processes, one with metrics and tracing on
(spans exported to a local OTLP sink), one with both off, in one run.

    .venv/bin/python -m bench.bench_telemetry [--calls 300] [--warmup 30] [--rounds 6] [--pairs 3]
                                              [--upstream fast|fast-untraced] [--json FILE]

Metrics and tracing are process configuration, so each setting is its own gateway process, both in front of
the same fast upstream process. The sink is a tiny HTTP server in this process answering POST /v1/traces
with 200 (it counts the exports, so the report shows spans really left the gateway). The paths alternate call
by call (bench/common.interleaved), with the mcp SDK client in 2025-11-25 mode and a lean raw 2026-07-28
client. Target: p50 with metrics and tracing on ≤ 1.05 × p50 with both off (issue 15).

Two processes differ by more than their setting: two gateways configured alike, measured this way, read
anywhere from 0.94× to 1.00× of each other on this 2-core VM (where the scheduler puts each, their hash seeds
and memory layout), as large as the 5% to be judged. So the comparison is made with `--pairs` fresh pairs of
processes, started in alternating order, the rounds shared among them; the p50s pool every pair's samples,
and each pair's own ratio is printed too.

The upstream is the mcp SDK's low-level server, which joins the trace it is sent: its OpenTelemetryMiddleware
extracts `_meta.traceparent` and opens a span of its own, a cost the upstream pays only when tracing is on.
`--upstream fast-untraced` runs it without that middleware, which leaves the gateway's own cost.
"""

from __future__ import annotations

import argparse
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.bench_call import TOOL
from bench.common import gateway_headers, interleaved, paired_figures, paired_main, paired_report, run_upstreams
from tests.e2e.harness import run_gateway

TARGET_RATIO = 1.05
NAMES = ("telemetry off", "metrics + tracing")
PAIRS = "ratio of each pair (sdk, raw)"


class Sink:
    """A local OTLP/HTTP endpoint that accepts every export and counts them."""

    def __init__(self) -> None:
        self.exports = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps the exporter's connection open, as a collector does

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                sink.exports += 1
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def run(args: argparse.Namespace) -> dict:
    sink = Sink()
    try:
        async with run_upstreams(args.upstream, 1, 1) as upstreams:
            entries = {"bench": {"transport": "http", "url": upstreams[0].url}}
            on = {"telemetry": {"tracing": {"endpoint": sink.url}}}  # metrics are on by default
            off = {"telemetry": {"metrics": {"enabled": False}}}
            samples: dict[str, dict[str, list[float]]] = {name: {"sdk": [], "raw": []} for name in NAMES}
            per_pair = []
            calls = max(1, args.calls * args.rounds // args.pairs)
            for pair in range(args.pairs):
                first, second = (on, off) if pair % 2 == 0 else (off, on)
                async with run_gateway(entries, extra=first) as one, run_gateway(entries, extra=second) as two:
                    traced, plain = (one, two) if first is on else (two, one)
                    paths = {
                        "telemetry off": (plain.url("bench"), gateway_headers(plain)),
                        "metrics + tracing": (traced.url("bench"), gateway_headers(traced)),
                    }
                    pair_samples = await interleaved(paths, tool=TOOL, calls=calls, warmup=args.warmup)
                pair_figures = paired_figures(pair_samples, "telemetry off")["metrics + tracing"]
                per_pair.append([pair_figures["sdk_ratio"], pair_figures["raw_ratio"]])
                for name in NAMES:
                    for client in ("sdk", "raw"):
                        samples[name][client] += pair_samples[name][client]
    finally:
        sink.close()
    figures = paired_figures(samples, "telemetry off")
    figures["metrics + tracing"]["otlp_exports"] = float(sink.exports)
    figures["metrics + tracing"]["untraced_upstream"] = float(args.upstream == "fast-untraced")
    return {**figures, PAIRS: per_pair}


def report(results: dict) -> str:
    traced = results["metrics + tracing"]
    exports = traced.get("otlp_exports", 0)
    shown = {name: results[name] for name in NAMES}
    pairs = ", ".join(f"{sdk:.3f} / {raw:.3f}" for sdk, raw in results.get(PAIRS, []))
    return (
        paired_report(shown, label="tools/call", baseline="telemetry off", target=f"≤ {TARGET_RATIO}× off")
        + f"\neach pair of processes (sdk / raw): {pairs}"
        + f"\nOTLP exports received by the sink: {int(exports)}; upstream: "
        + ("without OpenTelemetry (fast-untraced)" if results["metrics + tracing"].get("untraced_upstream") else "fast")
    )


def main(argv: list[str] | None = None) -> dict:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--upstream", choices=("fast", "fast-untraced"), default="fast")
        parser.add_argument("--pairs", type=int, default=3, help="fresh pairs of gateway processes (rounds shared)")

    return paired_main(__doc__, run, report, argv, options)


if __name__ == "__main__":
    main()
