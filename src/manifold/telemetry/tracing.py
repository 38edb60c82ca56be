"""OpenTelemetry traces (`telemetry.tracing`, off unless an OTLP endpoint is configured).

One trace per MCP request: the server span continues the client's W3C `traceparent` (the HTTP header, or a
2026-07-28 request's `_meta.traceparent`), with child spans for authentication, the server-level policy
decision, the per-tool policy decision, credential resolution and each upstream request. The upstream request
carries the upstream span's `traceparent` in its HTTP header and in `_meta.traceparent`, so the upstream's
own spans join the same trace.

When tracing is off nothing here exists: the composition root hands `None` to everyone, and every hook is a
single `is not None` check.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from manifold.config.models import TracingSettings

JSON = dict[str, Any]
TRACEPARENT = "traceparent"
# W3C Trace Context: version-traceid-parentid-flags, lower-case hex (what the propagator accepts too).
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def now() -> int:
    """A span timestamp (ns since the epoch)."""
    return time.time_ns()


class Tracing:
    """The gateway's tracer and exporter (its own provider, not the process-global one)."""

    def __init__(self, settings: TracingSettings, *, provider: TracerProvider | None = None) -> None:
        if provider is None:
            provider = TracerProvider(
                resource=Resource.create({"service.name": settings.service_name}),
                sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
            )
            exporter = OTLPSpanExporter(endpoint=f"{settings.endpoint}/v1/traces", headers=dict(settings.headers))
            provider.add_span_processor(BatchSpanProcessor(exporter))
        self.provider = provider
        self.tracer = provider.get_tracer("manifold")
        self._propagator = TraceContextTextMapPropagator()

    # ---- the client's trace ----------------------------------------------------------------------

    def client_context(self, headers: Mapping[str, str], body: bytes | None) -> Context | None:
        """The client's trace to continue: the `traceparent` header, else a 2026-07-28 request's
        `_meta.traceparent` (looked for only when the body names it). None: start a new trace."""
        carrier: dict[str, str] = {}
        value = headers.get(TRACEPARENT)
        if value is None and body and b'"traceparent"' in body:
            value = _meta_traceparent(body)
        if value is None or not _TRACEPARENT.match(value):
            return None
        carrier[TRACEPARENT] = value
        if (state := headers.get("tracestate")) is not None:
            carrier["tracestate"] = state
        return self._propagator.extract(carrier)

    @contextlib.contextmanager
    def request(
        self, name: str, parent: Context | None, start: int, attributes: Mapping[str, str | int]
    ) -> Iterator[Span]:
        """The server span of one request, current while the request is handled."""
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, start_time=start)
        span.set_attributes(dict(attributes))
        with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            yield span

    def record(self, name: str, start: int, end: int, attributes: Mapping[str, str | bool] | None = None) -> None:
        """A finished child span of the current span (e.g. authentication, measured before the server span
        could know its parent)."""
        span = self.tracer.start_span(name, start_time=start, attributes=dict(attributes) if attributes else None)
        span.end(end_time=end)

    def policy(self, began: int, tool: str, *, allowed: bool) -> None:
        """The per-tool policy decision (name resolved, grants checked), measured from `began`."""
        self.record("policy tools/call", began, now(), {"mcp.tool": tool[:200], "manifold.allowed": allowed})

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, str] | None = None) -> Iterator[Span]:
        """A child span of the current span around a block (credential resolution)."""
        with self.tracer.start_as_current_span(name, attributes=dict(attributes) if attributes else None) as span:
            yield span

    # ---- upstream ----------------------------------------------------------------------------------

    def start_upstream(self, upstream_id: str, method: str, params: JSON | None) -> tuple[Span, JSON, dict[str, str]]:
        """The span of one upstream request, and what carries it upstream: the params with
        `_meta.traceparent` (a copy; the caller's dict is not changed) and the HTTP headers."""
        span = self.tracer.start_span(
            f"upstream {method}",
            kind=SpanKind.CLIENT,
            attributes={"mcp.method": method, "manifold.upstream": upstream_id},
        )
        headers: dict[str, str] = {}
        self._propagator.inject(headers, context=trace.set_span_in_context(span))
        params = dict(params) if params else {}
        meta = params.get("_meta")
        params["_meta"] = (
            {**meta, TRACEPARENT: headers[TRACEPARENT]}
            if isinstance(meta, dict)
            else {TRACEPARENT: headers[TRACEPARENT]}
        )
        return span, params, headers

    @staticmethod
    def end_upstream(span: Span, reply: JSON | None, error: BaseException | None) -> None:
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        elif reply is not None and "error" in reply:
            span.set_status(Status(StatusCode.ERROR, "JSON-RPC error"))
        span.end()

    def shutdown(self) -> None:
        """Export what is buffered and stop (blocking: run it off the event loop)."""
        self.provider.shutdown()


def _meta_traceparent(body: bytes) -> str | None:
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    params = message.get("params") if isinstance(message, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    value = meta.get(TRACEPARENT) if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None
