"""What telemetry costs: the same tools/call through two gateway processes, one with metrics and tracing on
(spans exported to a local OTLP sink), one with both off, in one run.

    .venv/bin/python -m bench.bench_telemetry [--calls 300] [--warmup 30] [--rounds 6] [--json FILE]
                                              [--upstream fast|fast-untraced]

Metrics and tracing are process configuration, so each setting is its own gateway process, both in front of
the same fast upstream process. The sink is a tiny HTTP server in this process answering POST /v1/traces
with 200 (it counts the exports, so the report shows spans really left the gateway). The paths alternate call
by call (bench/common.interleaved), with the mcp SDK client in 2025-11-25 mode and a lean raw 2026-07-28
client. Target: p50 with metrics and tracing on ≤ 1.05 × p50 with both off (issue 15).

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
            async with run_gateway(entries, extra=on) as traced, run_gateway(entries, extra=off) as plain:
                paths = {
                    "telemetry off": (plain.url("bench"), gateway_headers(plain)),
                    "metrics + tracing": (traced.url("bench"), gateway_headers(traced)),
                }
                samples = await interleaved(paths, tool=TOOL, calls=args.calls * args.rounds, warmup=args.warmup)
    finally:
        sink.close()
    figures = paired_figures(samples, "telemetry off")
    figures["metrics + tracing"]["otlp_exports"] = float(sink.exports)
    figures["metrics + tracing"]["untraced_upstream"] = float(args.upstream == "fast-untraced")
    return figures


def report(results: dict) -> str:
    exports = results["metrics + tracing"].get("otlp_exports", 0)
    return (
        paired_report(results, label="tools/call", baseline="telemetry off", target=f"≤ {TARGET_RATIO}× off")
        + f"\nOTLP exports received by the sink: {int(exports)}; upstream: "
        + ("without OpenTelemetry (fast-untraced)" if results["metrics + tracing"].get("untraced_upstream") else "fast")
    )


def main(argv: list[str] | None = None) -> dict:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--upstream", choices=("fast", "fast-untraced"), default="fast")

    return paired_main(__doc__, run, report, argv, options)


if __name__ == "__main__":
    main()
