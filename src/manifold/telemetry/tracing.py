"""OpenTelemetry traces (`telemetry.tracing`, off unless an OTLP endpoint is configured).

One trace per MCP request: the server span continues the client's W3C `traceparent` (the HTTP header, or a
2026-07-28 request's `_meta.traceparent`), with child spans for authentication, the server-level policy
decision, the per-tool policy decision, credential resolution and each upstream request. The upstream request
carries the upstream span's `traceparent` in its HTTP header and in `_meta.traceparent`, so the upstream's
own spans join the same trace.

Cost. The OpenTelemetry SDK's own spans cost ~70 µs each here (sampler, attribute cleaning, locks, the batch
processor) and its OTLP encoding ~80 µs more; five spans per call made a relayed call ~20% slower. So a
request's spans are recorded as plain tuples (ids from `random.getrandbits`, the current span in a context
variable, `context.py`), and a background thread encodes them as OTLP protobuf (`otlp.py`, ~a tenth of the
SDK's cost) and sends them through the SDK's OTLP/HTTP client (retries, back-off, compression, headers) in
batches. Finished spans wait in a bounded queue (`max_queued_spans`); when the collector cannot keep up the
oldest are dropped and counted, never the call slowed.

When tracing is off nothing here exists: the composition root hands `None` to everyone, and every hook is a
single `is not None` check.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource

from manifold.config.models import TracingSettings
from manifold.telemetry import otlp
from manifold.telemetry.context import CURRENT, SpanRef
from manifold.telemetry.otlp import CLIENT, INTERNAL, SERVER, Finished

log = logging.getLogger(__name__)
JSON = dict[str, Any]
Attributes = Mapping[str, str | bool | int]
TRACEPARENT = "traceparent"
# W3C Trace Context: version-traceid-parentid-flags, lower-case hex; all-zero ids are invalid.
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# Sends one encoded ExportTraceServiceRequest; True when the collector took it.
Send = Callable[[bytes], bool]


now = time.time_ns  # a span timestamp (ns since the epoch)
_bits = random.getrandbits
_ref = tuple.__new__  # `_ref(SpanRef, (trace, span, sampled))`: a NamedTuple's own __new__ is a Python frame


def parse_traceparent(value: str) -> SpanRef | None:
    m = _TRACEPARENT.match(value)
    if m is None or m.group(1) == "ff":
        return None
    trace_id, span_id = int(m.group(2), 16), int(m.group(3), 16)
    if not trace_id or not span_id:
        return None
    return _ref(SpanRef, (trace_id, span_id, bool(int(m.group(4), 16) & 1)))


def format_traceparent(ref: SpanRef) -> str:
    return f"00-{ref.trace_id:032x}-{ref.span_id:016x}-{'01' if ref.sampled else '00'}"


# One upstream request's span while it runs: trace id, span id, parent span id, start, upstream id, method.
# Only sampled requests get one (an unsampled trace still carries its traceparent upstream).
UpstreamSpan = tuple[int, int, int, int, str, str]


class Tracing:
    """The gateway's spans and their export (one per gateway)."""

    def __init__(self, settings: TracingSettings, *, send: Send | None = None) -> None:
        self._exporter: OTLPSpanExporter | None = None
        if send is None:
            self._exporter = OTLPSpanExporter(
                endpoint=f"{settings.endpoint}/v1/traces",
                headers=dict(settings.headers),
                timeout=settings.timeout_seconds,
            )
            client = self._exporter._client  # pyright: ignore[reportPrivateUsage] — its HTTP client, given bytes
            send = lambda data: client.export(data).success  # noqa: E731
        self._send = send
        resource = Resource.create({"service.name": settings.service_name}).attributes
        self._resource = otlp.resource({k: str(v) for k, v in resource.items()})
        self._ratio = settings.sample_ratio
        self._delay = settings.batch_delay_seconds
        # Bounded by the deque itself (past `max_queued_spans` appending drops the oldest), so finishing a span is
        # two C calls; what was dropped is worked out from the counts (`dropped`).
        self._queue: deque[Finished] = deque(maxlen=settings.max_queued_spans)
        self._append = self._queue.append
        self._finished = 0  # spans finished (on the event loop's thread)
        # An upstream span's name and attributes per (upstream, method): the same few pairs on every call, and
        # the encoder only reads them.
        self._upstream_shapes: dict[tuple[str, str], tuple[str, Attributes]] = {}
        self._taken = 0  # spans the export thread took from the queue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._export_loop, name="manifold-otlp-export", daemon=True)
        self._thread.start()

    # ---- the client's trace ----------------------------------------------------------------------

    def client_context(self, headers: Mapping[str, str], body: bytes | None) -> SpanRef | None:
        """The client's span to continue: the `traceparent` header, else a 2026-07-28 request's
        `_meta.traceparent` (looked for only when the body names it). None: start a new trace."""
        value = headers.get(TRACEPARENT)
        if value is None and body and b'"traceparent"' in body:
            value = _meta_traceparent(body)
        return parse_traceparent(value) if value is not None else None

    def request(
        self,
        name: str,
        parent: SpanRef | None,
        start: int,
        attributes: Attributes,
        *,
        auth_end: int = 0,
        auth_attributes: Attributes | None = None,
    ) -> _ServerSpan:
        """The server span of one request, current while the request is handled (a `with` block). `auth_end`:
        the request was authenticated from `start` until then, recorded as the "authenticate" child span
        when the server span ends (one call instead of two on every traced request)."""
        if parent is None:
            ref = _ref(SpanRef, (_bits(128) or 1, _bits(64) or 1, random.random() < self._ratio))
        else:
            ref = _ref(SpanRef, (parent.trace_id, _bits(64) or 1, parent.sampled))
        span = _ServerSpan(ref, parent.span_id if parent is not None else 0, name, start, attributes)
        span._tracing = self
        span._auth_end = auth_end
        span._auth_attributes = auth_attributes
        return span

    def record(self, name: str, start: int, end: int, attributes: Attributes | None = None) -> None:
        """A finished child span of the current span (e.g. authentication, measured before the server span
        could know its parent)."""
        current = CURRENT.get()
        if current is not None and current[2]:
            self._finished += 1
            self._append((current[0], _bits(64) or 1, current[1], name, INTERNAL, start, end, attributes, None))

    def policy(self, began: int, tool: str, *, allowed: bool) -> None:
        """The per-tool policy decision (name resolved, grants checked), measured from `began`."""
        current = CURRENT.get()
        if current is not None and current[2]:
            self._finished += 1
            attributes = {"mcp.tool": tool[:200], "manifold.allowed": allowed}
            self._append((current[0], _bits(64) or 1, current[1], _POLICY, INTERNAL, began, now(), attributes, None))

    def span(self, name: str, attributes: Attributes | None = None) -> _ChildSpan | contextlib.nullcontext[None]:
        """A child span of the current span around a block (credential resolution)."""
        current = CURRENT.get()
        if current is None or not current.sampled:
            return _NOTHING
        return _ChildSpan(self, current, name, attributes)

    # ---- upstream ----------------------------------------------------------------------------------

    def start_upstream(
        self, upstream_id: str, method: str, params: JSON | None
    ) -> tuple[UpstreamSpan | None, JSON, dict[str, str]]:
        """The span of one upstream request (None when its trace is not sampled), and what carries the trace
        upstream: the params with `_meta.traceparent` (a copy; the caller's dict is not changed) and the HTTP
        headers."""
        current = CURRENT.get()
        if current is None:  # a request of the gateway's own (a list refresh): a trace of its own
            current = _ref(SpanRef, (_bits(128) or 1, 0, random.random() < self._ratio))
        trace_id, parent_id, sampled = current
        span_id = _bits(64) or 1
        traceparent = f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"
        params = dict(params) if params else {}
        meta = params.get("_meta")
        params["_meta"] = {**meta, TRACEPARENT: traceparent} if isinstance(meta, dict) else {TRACEPARENT: traceparent}
        span = (trace_id, span_id, parent_id, now(), upstream_id, method) if sampled else None
        return span, params, {TRACEPARENT: traceparent}

    def end_upstream(self, span: UpstreamSpan, reply: JSON | None, error: BaseException | None) -> None:
        trace_id, span_id, parent_id, start, upstream_id, method = span
        failure = (
            type(error).__name__ if error is not None else ("JSON-RPC error" if reply and "error" in reply else None)
        )
        shape = self._upstream_shapes.get((upstream_id, method))
        if shape is None:
            if len(self._upstream_shapes) >= _MAX_SHAPES:
                self._upstream_shapes.clear()
            attributes = {"mcp.method": method, "manifold.upstream": upstream_id}
            shape = self._upstream_shapes[(upstream_id, method)] = (f"upstream {method}", attributes)
        self._finished += 1
        self._append((trace_id, span_id, parent_id, shape[0], CLIENT, start, now(), shape[1], failure))

    # ---- export ------------------------------------------------------------------------------------

    def _finish(self, finished: Finished) -> None:
        self._finished += 1
        self._append(finished)

    @property
    def dropped(self) -> int:
        """Spans dropped because the queue was full: finished − taken for export − still queued."""
        return max(0, self._finished - self._taken - len(self._queue))

    def _export_loop(self) -> None:
        while not self._stop.wait(self._delay):
            self._export_all()
        self._export_all()

    def _export_all(self) -> None:
        queue = self._queue
        while queue:
            batch = [queue.popleft() for _ in range(min(len(queue), _SPANS_PER_EXPORT))]
            self._taken += len(batch)
            try:
                sent = self._send(otlp.export_request_of(self._resource, "manifold", _encode_yielding(batch)))
            except Exception as exc:  # noqa: BLE001 — a collector's trouble must not end the thread
                log.warning("tracing: exporting %d spans failed (%s)", len(batch), type(exc).__name__)
                continue
            if not sent:
                log.warning("tracing: the collector refused %d spans", len(batch))

    def shutdown(self) -> None:
        """Export what is queued and stop (blocking: run it off the event loop)."""
        self._stop.set()
        self._thread.join(timeout=10)
        if self._exporter is not None:
            self._exporter.shutdown()
        if self.dropped:
            log.warning("tracing: %d spans were dropped because the collector did not keep up", self.dropped)


# Context managers as classes: a generator-based `contextlib.contextmanager` costs ~2 µs per `with` here, and a
# traced call enters two of these.
_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()


class _ServerSpan:
    __slots__ = (
        "_tracing",
        "ref",
        "_parent_id",
        "_name",
        "_start",
        "_attributes",
        "_token",
        "_auth_end",
        "_auth_attributes",
    )
    _tracing: Tracing
    _auth_end: int
    _auth_attributes: Attributes | None

    def __init__(self, ref: SpanRef, parent_id: int, name: str, start: int, attributes: Attributes) -> None:
        self.ref = ref
        self._parent_id = parent_id
        self._name = name
        self._start = start
        self._attributes = attributes

    def __enter__(self) -> SpanRef:
        self._token = CURRENT.set(self.ref)
        return self.ref

    def __exit__(self, *exc: object) -> None:
        CURRENT.reset(self._token)
        trace_id, span_id, sampled = self.ref
        if sampled:
            tracing = self._tracing
            append = tracing._append  # pyright: ignore[reportPrivateUsage] — the span's own tracer
            start = self._start
            if self._auth_end:
                tracing._finished += 1  # pyright: ignore[reportPrivateUsage]
                append(
                    (
                        trace_id,
                        _bits(64) or 1,
                        span_id,
                        "authenticate",
                        INTERNAL,
                        start,
                        self._auth_end,
                        self._auth_attributes,
                        None,
                    )
                )
            tracing._finished += 1  # pyright: ignore[reportPrivateUsage]
            append((trace_id, span_id, self._parent_id, self._name, SERVER, start, now(), self._attributes, None))


class _ChildSpan:
    __slots__ = ("_tracing", "_ref", "_parent_id", "_name", "_attributes", "_start", "_token")

    def __init__(self, tracing: Tracing, current: SpanRef, name: str, attributes: Attributes | None) -> None:
        self._tracing = tracing
        self._ref = _ref(SpanRef, (current.trace_id, _bits(64) or 1, True))
        self._parent_id = current.span_id
        self._name = name
        self._attributes = attributes

    def __enter__(self) -> None:
        self._start = now()
        self._token = CURRENT.set(self._ref)

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        CURRENT.reset(self._token)
        ref = self._ref
        error = kind.__name__ if kind is not None else None
        self._tracing._finish(  # pyright: ignore[reportPrivateUsage] — the span's own tracer
            (
                ref.trace_id,
                ref.span_id,
                self._parent_id,
                self._name,
                INTERNAL,
                self._start,
                now(),
                self._attributes,
                error,
            )
        )


def _encode_yielding(batch: list[Finished]) -> bytes:
    """The batch's spans encoded 32 at a time, letting go of the GIL in between: encoding a batch at once held it
    for ~1 ms, which every call arriving meanwhile waited out on the event loop."""
    parts = []
    for start in range(0, len(batch), _SPANS_PER_SLICE):
        parts.append(otlp.spans_field(batch[start : start + _SPANS_PER_SLICE]))
        time.sleep(0)  # the event loop's thread takes the GIL if it wants it
    return b"".join(parts)


_SPANS_PER_SLICE = 32
_POLICY = "policy tools/call"
_MAX_SHAPES = 1024
# Spans per OTLP request (~120 bytes each: ~250 kB, well under collectors' limits). Each request costs the
# export thread ~1 ms of Python in the HTTP client, so at a thousand traced calls a second (five spans each)
# 512 per request meant ten of them a second.
_SPANS_PER_EXPORT = 2048


def _meta_traceparent(body: bytes) -> str | None:
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    params = message.get("params") if isinstance(message, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    value = meta.get(TRACEPARENT) if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None
