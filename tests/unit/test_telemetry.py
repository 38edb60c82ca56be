"""Telemetry in process: the Metrics object's bounds, and /metrics on the composed gateway (who may read it,
what it says). The e2e tests (tests/e2e/test_telemetry.py) drive real calls and traces through processes."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from manifold.config.loader import load_config
from manifold.runtime.compose import Runtime, build_app, compose
from manifold.telemetry.logs import REQUEST_ID, JsonFormatter
from manifold.telemetry.metrics import Metrics, auth_reason

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8470"
DEV_KEY = "mfd_" + "b" * 43
TOKEN = "scrape-" + "c" * 30


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_tool_series_are_bounded_and_unknown_names_count_as_other() -> None:
    metrics = Metrics(max_tool_series=3)
    started = time.perf_counter()
    metrics.tool_call("eng", "gh", "create_issue", "ok", started)
    metrics.tool_call("eng", None, None, "unknown", started)  # a name the catalog does not know
    for i in range(50):  # an upstream that keeps inventing tool names
        metrics.tool_call("eng", "gh", f"tool_{i}", "ok", started)
    scraped = samples(metrics.exposition().decode())
    tools = {labels["tool"] for labels, _ in scraped["manifold_tool_calls_total"]}
    assert tools == {"create_issue", "other", "tool_0"}
    counts = {labels["tool"]: v for labels, v in scraped["manifold_tool_calls_total"] if labels["member"] == "gh"}
    assert counts["other"] == 49  # past the bound, counted, never a new series
    assert len(metrics._tool_children) <= 4


def test_a_tool_calls_latency_is_a_cumulative_histogram_with_its_sum_and_count() -> None:
    metrics = Metrics()
    now = time.perf_counter()
    for ago in (0.0005, 0.0005, 0.004, 0.2, 100.0):  # seconds each call took
        metrics.tool_call("eng", "gh", "create_issue", "ok", now - ago)
    metrics.tool_call("eng", "gh", "create_issue", "tool_error", now - 0.02)
    scraped = samples(metrics.exposition().decode())
    buckets = {labels["le"]: v for labels, v in scraped["manifold_tool_call_duration_seconds_bucket"]}
    assert (buckets["0.001"], buckets["0.005"], buckets["0.025"], buckets["0.25"]) == (2, 3, 4, 5)
    assert (buckets["60.0"], buckets["+Inf"]) == (5, 6)
    assert scraped["manifold_tool_call_duration_seconds_count"] == [
        ({"server": "eng", "member": "gh", "tool": "create_issue"}, 6)
    ]
    [(_, total)] = scraped["manifold_tool_call_duration_seconds_sum"]
    assert 100.2 < total < 100.3
    outcomes = {labels["outcome"]: v for labels, v in scraped["manifold_tool_calls_total"]}
    assert outcomes == {"ok": 5, "tool_error": 1}


def test_auth_failure_reasons_are_a_fixed_set() -> None:
    assert auth_reason("missing bearer token", missing=True) == "missing"
    assert auth_reason("malformed token", missing=False) == "malformed"
    assert auth_reason("token expired", missing=False) == "expired"
    assert auth_reason("the token was issued for another server", missing=False) == "wrong_audience"
    assert auth_reason("anything a client or an IdP library says " * 3, missing=False) == "invalid"


def test_json_log_lines_carry_the_request_id() -> None:
    record = logging.LogRecord("manifold.x", logging.WARNING, __file__, 1, "hello %s", ("there",), None)
    token = REQUEST_ID.set("req-1")
    try:
        line = orjson.loads(JsonFormatter().format(record))
    finally:
        REQUEST_ID.reset(token)
    assert line["message"] == "hello there"
    assert line["level"] == "WARNING"
    assert line["request_id"] == "req-1"
    assert "trace_id" not in line  # no span: no trace id


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Runtime, httpx2.AsyncClient]]:
    (tmp_path / "manifold.yaml").write_text(
        f"gateway:\n  state_dir: {tmp_path / 'state'}\n  port: 8470\n"
        "upstreams:\n  up:\n    transport: http\n    url: http://127.0.0.1:9/mcp\n"
        f"telemetry:\n  metrics:\n    token: {TOKEN}\n"
    )
    runtime = compose(load_config(tmp_path / "manifold.yaml"), dev_key=DEV_KEY, public_base=BASE)
    await runtime.start()
    try:
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=build_app(runtime)), base_url=BASE) as http:
            yield runtime, http
    finally:
        await runtime.aclose()


async def test_metrics_need_the_token_or_an_admin(gateway) -> None:
    runtime, http = gateway
    anonymous = await http.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="manifold"'
    wrong = await http.get("/metrics", headers={"authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert TOKEN not in wrong.text
    # A person with a key who is not an admin: 403.
    admin = {"authorization": f"Bearer {DEV_KEY}"}
    made = await http.post("/admin/api/keys", json={"user": "alice@corp.com", "name": "laptop"}, headers=admin)
    alice = await http.get("/metrics", headers={"authorization": f"Bearer {made.json()['token']}"})
    assert alice.status_code == 403
    for headers in ({"authorization": f"Bearer {TOKEN}"}, admin):
        reply = await http.get("/metrics", headers=headers)
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    scraped = samples(reply.text)
    assert (({"upstream": "up"}, 0.0)) in scraped["manifold_upstream_sessions"]
    assert ({"era": "handshake"}, 0.0) in scraped["manifold_client_sessions"]
    assert "manifold_audit_queue_depth" in scraped
    assert scraped["manifold_tools_held"] == [({}, 0.0)]
    assert scraped["manifold_stream_queued_bytes"] == [({}, 0.0)]
    assert ({"era": "modern"}, 0.0) in scraped["manifold_notification_streams"]
    reasons = {labels["reason"]: v for labels, v in scraped["manifold_auth_failures_total"]}
    assert reasons["missing"] == 1 and reasons["invalid"] == 1


async def test_metrics_are_off_when_disabled(tmp_path: Path) -> None:
    (tmp_path / "manifold.yaml").write_text(
        f"gateway:\n  state_dir: {tmp_path / 'state'}\ntelemetry:\n  metrics:\n    enabled: false\n"
    )
    runtime = compose(load_config(tmp_path / "manifold.yaml"), dev_key=DEV_KEY, public_base=BASE)
    assert runtime.telemetry.metrics is None and runtime.telemetry.tracing is None
    app = build_app(runtime)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE) as http:
        reply = await http.get("/metrics", headers={"authorization": f"Bearer {DEV_KEY}"})
    assert reply.status_code == 404


def test_spans_are_encoded_as_otlp_protobuf_and_the_queue_is_bounded() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from manifold.config.models import TracingSettings
    from manifold.telemetry.tracing import Tracing, now, parse_traceparent

    sent: list[bytes] = []
    settings = TracingSettings(endpoint="http://127.0.0.1:9", batch_delay_seconds=60, max_queued_spans=10)
    tracing = Tracing(settings, send=lambda data: sent.append(data) is None)
    client = parse_traceparent("00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
    assert client is not None
    began = now()
    with tracing.request("POST /mcp/{server}", client, began, "eng", "alice", now(), "api_key"):
        with pytest.raises(LookupError), tracing.span("credentials", {"manifold.upstream": "gh"}):
            raise LookupError("no token")
        tracing.policy(now(), "x", allowed=False)
        span, params, headers = tracing.start_upstream("gh", "tools/call", {"name": "x", "_meta": {"k": 1}})
        assert span is not None
        tracing.end_upstream(span, {"error": {"code": -1}}, None)
    assert params["_meta"] == {"k": 1, "traceparent": headers["traceparent"]}
    assert headers["traceparent"].split("-")[1] == "ab" * 16
    # The request's five spans wait as one entry: the export thread makes them.
    assert len(tracing._queue) == 1 and tracing._finished == 5

    # A client's unsampled trace (flags 00) is still carried upstream, as unsampled, and records no span.
    unsampled = parse_traceparent("00-" + "12" * 16 + "-" + "34" * 8 + "-00")
    with tracing.request("POST /mcp/{server}", unsampled, now(), "eng", "alice", now(), "api_key"):
        tracing.policy(now(), "x", allowed=True)
        span, params, headers = tracing.start_upstream("gh", "tools/call", None)
    assert span is None and len(tracing._queue) == 1 and tracing._finished == 5
    assert headers["traceparent"].startswith("00-" + "12" * 16 + "-") and headers["traceparent"].endswith("-00")
    assert params == {"_meta": {"traceparent": headers["traceparent"]}}
    tracing.shutdown()
    request = ExportTraceServiceRequest()
    request.ParseFromString(b"".join(sent))
    spans = {s.name: s for r in request.resource_spans for ss in r.scope_spans for s in ss.spans}
    assert set(spans) == {
        "POST /mcp/{server}",
        "authenticate",
        "credentials",
        "policy tools/call",
        "upstream tools/call",
    }
    server = spans["POST /mcp/{server}"]

    def attributes(span: Any) -> dict[str, Any]:
        return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}

    assert attributes(server) == {"manifold.server": "eng", "enduser.id": "alice"}
    assert attributes(spans["authenticate"]) == {"manifold.credential": "api_key"}
    assert attributes(spans["policy tools/call"]) == {"mcp.tool": "x", "manifold.allowed": False}
    assert attributes(spans["upstream tools/call"]) == {"mcp.method": "tools/call", "manifold.upstream": "gh"}
    assert len({s.span_id for s in spans.values()}) == 5  # ids made at export are ids like the others
    assert all(s.parent_span_id == server.span_id for name, s in spans.items() if s is not server)
    credentials = spans["credentials"]
    assert credentials.parent_span_id == server.span_id and credentials.trace_id == server.trace_id
    assert (credentials.status.code, credentials.status.message) == (2, "LookupError")
    assert credentials.start_time_unix_nano <= credentials.end_time_unix_nano
    assert server.trace_id.hex() == "ab" * 16 and server.parent_span_id.hex() == "cd" * 8
    assert spans["upstream tools/call"].parent_span_id == server.span_id
    assert spans["upstream tools/call"].status.code == 2  # an error reply
    resource = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "manifold"

    # An upstream request that ends after its request was answered (a task the request started) is a span of
    # its own, still the request's child: the request's entry may be in the export thread's hands by then.
    late_sent: list[bytes] = []
    late = Tracing(settings, send=lambda data: late_sent.append(data) is None)
    with late.request("POST /mcp/{server}", None, now(), "eng", "alice") as answered:
        span, _, _ = late.start_upstream("gh", "tools/call", {})
    assert span is not None and answered.end
    late.end_upstream(span, {"result": {}}, None)
    assert len(late._queue) == 2 and late._finished == 2
    late.shutdown()
    request = ExportTraceServiceRequest()
    request.ParseFromString(b"".join(late_sent))
    late_spans = {s.name: s for r in request.resource_spans for ss in r.scope_spans for s in ss.spans}
    assert late_spans["upstream tools/call"].parent_span_id == late_spans["POST /mcp/{server}"].span_id

    # Past max_queued_spans the oldest are dropped, never the caller slowed or memory grown.
    crowded = Tracing(settings.model_copy(update={"max_queued_spans": 3}), send=lambda data: True)
    for _ in range(5):  # two spans each: the request and its authentication
        with crowded.request("r", None, now(), "eng", "alice", now(), "api_key"):
            pass
    assert len(crowded._queue) == 1 and crowded.dropped == 8
    crowded._export_all()  # what was queued is taken: none of it counts as dropped
    assert crowded.dropped == 8 and crowded._taken == 2
    crowded.shutdown()


def test_a_bad_telemetry_value_is_reported_with_field_and_line(tmp_path: Path) -> None:
    from manifold.config.problems import ConfigError

    (tmp_path / "manifold.yaml").write_text(
        "telemetry:\n  metrics:\n    max_tool_series: 0\n  tracing:\n    endpoint: collector:4318\n  logs: xml\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "manifold.yaml")
    got = {(p.field_path, p.line) for p in info.value.problems}
    assert {
        ("telemetry.metrics.max_tool_series", 3),
        ("telemetry.tracing.endpoint", 5),
        ("telemetry.logs", 6),
    } <= got


def test_a_collector_that_is_down_neither_fails_calls_nor_holds_shutdown() -> None:
    from manifold.config.models import TracingSettings
    from manifold.telemetry.tracing import Tracing, now

    settings = TracingSettings(endpoint="http://127.0.0.1:9", batch_delay_seconds=0.05, timeout_seconds=0.5)
    tracing = Tracing(settings)  # nothing listens on port 9
    with tracing.request("r", None, now(), "eng", "alice"):
        tracing.record("s", now(), now())
    began = time.monotonic()
    tracing.shutdown()
    assert time.monotonic() - began < 5


def test_a_failing_gauge_reader_leaves_the_scrape_whole(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()

    def broken() -> list[tuple[tuple[str, ...], float]]:
        raise RuntimeError("the pool is gone")

    metrics.add_gauge("manifold_broken", "a reader that fails", (), broken)
    metrics.add_gauge("manifold_fine", "a reader that works", (), lambda: [((), 1.0)])
    scraped = samples(metrics.exposition().decode())
    assert scraped["manifold_fine"] == [({}, 1.0)]
    assert "manifold_broken" not in scraped
    assert "reading manifold_broken failed (RuntimeError)" in caplog.text


async def test_the_metrics_token_can_be_a_stored_secret(tmp_path: Path) -> None:
    (tmp_path / "manifold.yaml").write_text(
        f"gateway:\n  state_dir: {tmp_path / 'state'}\ntelemetry:\n  metrics:\n    token: secret:scrape\n"
    )
    runtime = compose(load_config(tmp_path / "manifold.yaml"), dev_key=DEV_KEY, public_base=BASE)
    await runtime.start()
    try:
        await runtime.secrets.set("scrape", TOKEN)
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=build_app(runtime)), base_url=BASE) as http:
            assert (await http.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})).status_code == 200
            assert (await http.get("/metrics", headers={"authorization": "Bearer secret:scrape"})).status_code == 401
    finally:
        await runtime.aclose()
