"""Telemetry end to end (docs/telemetry.md): a real gateway process with metrics and tracing on, a real
upstream (tests/upstreams/upstream_min.py, whose `trace` tool tells what trace context it received) and a
local OTLP/HTTP sink standing in for a collector. One gateway for the module: the tests only add calls."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import Gateway, run_gateway
from tests.upstreams.launch import run_http_upstream
from tests.waiting import wait_for

pytestmark = pytest.mark.anyio

UPSTREAM_MIN = str(Path(__file__).resolve().parents[1] / "upstreams" / "upstream_min.py")
METRICS_TOKEN = "metrics-" + secrets.token_hex(16)


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str


@dataclass
class Sink:
    """What the OTLP sink received."""

    url: str
    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    """A tiny OTLP/HTTP collector: POST /v1/traces with an ExportTraceServiceRequest (protobuf)."""
    received = Sink(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with received.lock:
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        for s in scope.spans:
                            received.spans.append(
                                Span(s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name)
                            )
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
async def gateway(sink: Sink) -> AsyncIterator[Gateway]:
    async with run_http_upstream(UPSTREAM_MIN) as url:
        tracing = {"endpoint": sink.url, "batch_delay_seconds": 0.1}  # exported often: the test waits less
        telemetry = {"metrics": {"token": METRICS_TOKEN}, "tracing": tracing, "logs": "json"}
        upstreams = {
            "min": {"transport": "http", "url": url},
            "down": {"transport": "http", "url": "http://127.0.0.1:9/mcp", "required": False},  # nothing listens
        }
        async with run_gateway(
            upstreams,
            extra={"telemetry": telemetry},
        ) as gw:
            yield gw
            assert "Traceback" not in gw.log(), gw.log()[-4000:]


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def new_traceparent() -> tuple[str, str, str]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent}-01", trace_id, parent


async def scrape(gw: Gateway, token: str | None = METRICS_TOKEN) -> httpx2.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.get(f"{gw.base}/metrics", headers=headers)


def assert_one_trace(spans: list[Span], client_parent: str) -> None:
    """The tools/call's server span continues the client's span, with the gateway's steps as its children.
    (A client sends its traceparent on every request of a session: initialize too has a server span.)"""
    upstream = next(s for s in spans if s.name == "upstream tools/call")
    server = next(s for s in spans if s.span_id == upstream.parent_id)
    assert server.name == "POST /mcp/{server}"
    assert server.parent_id == client_parent  # the client's span is the gateway's parent
    children = {s.name for s in spans if s.parent_id == server.span_id}
    assert {"authenticate", "policy tools/call", "upstream tools/call"} <= children


async def test_the_clients_traceparent_header_reaches_the_upstream_and_the_collector(
    gateway: Gateway, sink: Sink
) -> None:
    traceparent, trace_id, parent = new_traceparent()
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {gateway.key}", "traceparent": traceparent}, timeout=60
    )
    async with Client(streamable_http_client(gateway.url("min"), http_client=http), mode="legacy") as client:
        result = await client.call_tool("trace", {})
    seen = json.loads(text_of(result))
    # The upstream got the same trace, as a child of the gateway's upstream span: in the header and in _meta.
    assert seen["header"] is not None and seen["header"].split("-")[1] == trace_id
    assert seen["meta"] == seen["header"]
    upstream_parent = seen["header"].split("-")[2]
    assert upstream_parent != parent

    await wait_for(lambda: any(s.name == "upstream tools/call" for s in sink.of(trace_id)), what="spans exported")
    spans = sink.of(trace_id)
    assert_one_trace(spans, parent)
    assert next(s for s in spans if s.name == "upstream tools/call").span_id == upstream_parent


async def test_a_2026_client_meta_traceparent_is_continued(gateway: Gateway, sink: Sink) -> None:
    traceparent, trace_id, parent = new_traceparent()
    async with gateway.client("min", mode="2026-07-28") as client:
        result = await client.call_tool("trace", {}, meta={"traceparent": traceparent})
    seen = json.loads(text_of(result))
    assert seen["header"].split("-")[1] == trace_id
    assert seen["meta"] == seen["header"]
    await wait_for(lambda: any(s.name == "upstream tools/call" for s in sink.of(trace_id)), what="spans exported")
    assert_one_trace(sink.of(trace_id), parent)


async def test_a_scrape_after_calls_has_the_series_and_unknown_names_make_none(gateway: Gateway) -> None:
    async with gateway.client("min") as client:
        for _ in range(3):
            assert not (await client.call_tool("echo", {"text": "hi"})).is_error
        for i in range(20):  # names nobody configured: counted, never a series of their own
            with pytest.raises(Exception, match="Unknown tool"):
                await client.call_tool(f"nope_{i}_{secrets.token_hex(4)}", {})
    reply = await scrape(gateway)
    assert reply.status_code == 200
    samples = [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    ]

    def value(name: str, **labels: str) -> float:
        return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))

    assert value("manifold_tool_calls_total", server="min", member="min", tool="echo", outcome="ok") >= 3
    assert value("manifold_tool_call_duration_seconds_count", server="min", member="min", tool="echo") >= 3
    assert value("manifold_tool_calls_total", server="min", tool="other", outcome="unknown") >= 20
    assert not [lab for _, lab, _ in samples if lab.get("tool", "").startswith("nope_")]
    assert value("manifold_upstream_up", upstream="min", state="connected") == 1
    assert value("manifold_upstream_sessions", upstream="min") >= 1
    assert any(n == "manifold_client_sessions" for n, _, _ in samples)
    assert any(n == "manifold_audit_queue_depth" for n, _, _ in samples)
    assert any(n == "manifold_stream_queued_bytes" for n, _, _ in samples)
    assert any(n == "manifold_notification_streams" for n, _, _ in samples)


async def test_metrics_without_the_token_are_refused(gateway: Gateway) -> None:
    anonymous = await scrape(gateway, None)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="manifold"'
    wrong = await scrape(gateway, "metrics-wrong")
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert "manifold_tool_calls" not in wrong.text
    assert (await scrape(gateway, gateway.key)).status_code == 200  # the development key is an admin's


async def test_json_log_lines_carry_request_and_trace_ids(gateway: Gateway) -> None:
    traceparent, trace_id, _ = new_traceparent()
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {gateway.key}", "traceparent": traceparent, "x-request-id": "req-42"},
        timeout=60,
    )
    async with Client(streamable_http_client(gateway.url("down"), http_client=http), mode="legacy") as client:
        await client.list_tools()  # the member's list cannot be fetched: logged, inside the request

    def lines() -> list[dict[str, object]]:
        return [json.loads(line) for line in gateway.log().splitlines() if line.startswith('{"time"')]

    await wait_for(lambda: any(entry.get("request_id") == "req-42" for entry in lines()), what="a logged line")
    entry = next(e for e in lines() if e.get("request_id") == "req-42")
    assert entry["trace_id"] == trace_id
    assert {"time", "level", "logger", "message"} <= entry.keys()
    assert all("level" in e and "message" in e for e in lines())
