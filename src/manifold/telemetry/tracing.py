"""OpenTelemetry traces (`telemetry.tracing`, off unless an OTLP endpoint is configured).

One trace per MCP request: the server span continues the client's W3C `traceparent` (the HTTP header, or a
2026-07-28 request's `_meta.traceparent`), with child spans for authentication, the server-level policy
decision, the per-tool policy decision, credential resolution and each upstream request. The upstream request
carries the upstream span's `traceparent` in its HTTP header and in `_meta.traceparent`, so the upstream's
own spans join the same trace.

Cost. The OpenTelemetry SDK's own spans cost ~70 µs each here (sampler, attribute cleaning, locks, the batch
processor) and its OTLP encoding ~80 µs more; five spans per call made a relayed call ~20% slower. So a
traced request is one `RequestSpan` (current in a context variable, `context.py`) into which its hooks store
a few numbers — the policy decision, each upstream request — and which is queued whole once the request is
answered. A background thread makes the spans of queued requests in bulk (ids from `random.getrandbits`,
names and attributes built once per upstream/server/user), encodes them as OTLP protobuf (`otlp.py`, ~a tenth
of the SDK's cost) and sends them through the SDK's OTLP/HTTP client (retries, back-off, compression, headers)
in batches. Why so little on the request's own path: measured inside the gateway, each hook cost several times
what it costs in a loop (docs/telemetry.md, "Cost"). The queue is bounded in spans (`max_queued_spans`);
when the collector cannot keep up the oldest are dropped and counted, never the call slowed.

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
from manifold.telemetry.context import CURRENT, Current, SpanRef
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


# One upstream request's span while it runs: its parent (the current span then), span id, start, upstream id,
# method. Only sampled requests get one (an unsampled trace still carries its traceparent upstream).
UpstreamSpan = tuple[Current, int, int, str, str]


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
        # Entries waiting for export: a traced request (`RequestSpan`, all its spans) or one finished span. Bounded
        # in spans by the counts below: each is written by one thread only (finished and dropped by the event
        # loop's, taken by the export thread), so no lock; past `max_queued_spans` the oldest entries go.
        self._queue: deque[RequestSpan | Finished] = deque()
        self._append = self._queue.append
        self._max_queued = settings.max_queued_spans
        self._finished = 0  # spans finished
        self._dropped = 0  # spans dropped because the queue was full
        self._taken = 0  # spans the export thread took from the queue
        # Names and attributes the export thread builds once: per (upstream, method), per (server, user), per
        # credential kind. The same few on every call; the encoder only reads them.
        self._shapes: dict[tuple[str, str, int], tuple[str, Attributes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._export_loop, name="manifold-otlp-export", daemon=True)
        self._thread.start()

    # ---- the client's trace ----------------------------------------------------------------------

    def request(
        self,
        name: str,
        parent: SpanRef | None,
        start: int,
        server_id: str,
        user_id: str,
        auth_end: int = 0,
        credential: str = "",
    ) -> RequestSpan:
        """The server span of one request, to be made current while the request is handled (`with`, or
        `CURRENT.set` and `end`). `auth_end`: the request was authenticated (with a `credential` of that kind)
        from `start` until then, its "authenticate" child span."""
        if parent is None:
            trace_id, parent_id, sampled = _bits(128) or 1, 0, random.random() < self._ratio
        else:
            trace_id, parent_id, sampled = parent
        return RequestSpan(self, trace_id, parent_id, sampled, name, start, server_id, user_id, auth_end, credential)

    def traced(
        self,
        name: str,
        headers: Mapping[str, str],
        body: bytes,
        start: int,
        server_id: str,
        user_id: str,
        auth_end: int,
        credential: str,
    ) -> RequestSpan:
        """`request` continuing the client's trace (the `traceparent` header, else a 2026-07-28 request's
        `_meta.traceparent`, looked for only when the body names it), in one call: every traced request
        makes it."""
        value = headers.get(TRACEPARENT)
        if value is None and b'"traceparent"' in body:
            value = _meta_traceparent(body)
        parent = parse_traceparent(value) if value is not None else None
        if parent is None:
            trace_id, parent_id, sampled = _bits(128) or 1, 0, random.random() < self._ratio
        else:
            trace_id, parent_id, sampled = parent
        return RequestSpan(self, trace_id, parent_id, sampled, name, start, server_id, user_id, auth_end, credential)

    def end(self, span: RequestSpan) -> None:
        """The request is answered: its spans are queued for export (built there, off the event loop)."""
        if span.sampled:
            span.end = now()
            self._queued(span, span.spans())

    def record(self, name: str, start: int, end: int, attributes: Attributes | None = None) -> None:
        """A finished child span of the current span."""
        current = CURRENT.get()
        if current is None or not current.sampled:
            return
        if type(current) is RequestSpan and not current.end:
            current.children.append((0, name, INTERNAL, start, end, attributes, None))
        else:
            self._queued(
                (current.trace_id, _bits(64) or 1, current.span_id, name, INTERNAL, start, end, attributes, None), 1
            )

    def policy(self, began: int, tool: str, *, allowed: bool) -> None:
        """The per-tool policy decision (name resolved, grants checked), measured from `began`."""
        current = CURRENT.get()
        if type(current) is RequestSpan and current.sampled and not current.end:
            current.children.append((0, _POLICY, _POLICY_KIND, began, now(), (tool[:200], allowed), None))
        elif current is not None and current.sampled:
            attributes = {"mcp.tool": tool[:200], "manifold.allowed": allowed}
            self._queued(
                (current.trace_id, _bits(64) or 1, current.span_id, _POLICY, INTERNAL, began, now(), attributes, None),
                1,
            )

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
        span_id = _bits(64) or 1
        sampled = current.sampled
        traceparent = f"00-{current.trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"
        params = dict(params) if params else {}
        meta = params.get("_meta")
        params["_meta"] = {**meta, TRACEPARENT: traceparent} if isinstance(meta, dict) else {TRACEPARENT: traceparent}
        span = (current, span_id, now(), upstream_id, method) if sampled else None
        return span, params, {TRACEPARENT: traceparent}

    def end_upstream(self, span: UpstreamSpan, reply: JSON | None, error: BaseException | None) -> None:
        parent, span_id, start, upstream_id, method = span
        failure = (
            type(error).__name__ if error is not None else ("JSON-RPC error" if reply and "error" in reply else None)
        )
        if type(parent) is RequestSpan and not parent.end:
            parent.children.append((span_id, None, CLIENT, start, now(), (upstream_id, method), failure))
        else:
            name, attributes = self._shape(upstream_id, method, CLIENT)
            self._queued((parent.trace_id, span_id, parent.span_id, name, CLIENT, start, now(), attributes, failure), 1)

    # ---- export ------------------------------------------------------------------------------------

    def _queued(self, entry: RequestSpan | Finished, spans: int) -> None:
        self._finished += spans
        self._append(entry)
        if self._finished - self._taken - self._dropped > self._max_queued:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        """The collector does not keep up: the oldest entries go until the queue is within its bound."""
        queue = self._queue
        while self._finished - self._taken - self._dropped > self._max_queued:
            try:
                entry = queue.popleft()  # the export thread may have taken it first: then nothing is left to drop
            except IndexError:
                return
            self._dropped += entry.spans() if type(entry) is RequestSpan else 1

    @property
    def dropped(self) -> int:
        """Spans dropped because the queue was full."""
        return self._dropped

    def _shape(self, a: str, b: str, kind: int) -> tuple[str, Attributes]:
        """A span's name and attributes by what it is about, built once: (upstream, method) for an upstream
        request, (server, user) for a request, (credential kind, "") for authentication."""
        shape = self._shapes.get((a, b, kind))
        if shape is None:
            if len(self._shapes) >= _MAX_SHAPES:
                self._shapes.clear()
            if kind == CLIENT:
                shape = (f"upstream {b}", {"mcp.method": b, "manifold.upstream": a})
            elif kind == SERVER:
                shape = ("", {"manifold.server": a, "enduser.id": b})
            else:
                shape = ("authenticate", {"manifold.credential": a})
            self._shapes[(a, b, kind)] = shape
        return shape

    def _spans_of(self, entries: list[RequestSpan | Finished]) -> list[Finished]:
        """The finished spans of the queued entries (a traced request becomes its server span and children)."""
        spans: list[Finished] = []
        add = spans.append
        shape = self._shape
        for entry in entries:
            if type(entry) is not RequestSpan:
                add(entry)  # pyright: ignore[reportArgumentType] — a Finished tuple
                continue
            trace_id, span_id, start = entry.trace_id, entry.span_id, entry.start
            attributes = shape(entry.server_id, entry.user_id, SERVER)[1]
            add((trace_id, span_id, entry.parent_id, entry.name, SERVER, start, entry.end, attributes, None))
            if entry.auth_end:
                attributes = shape(entry.credential, "", INTERNAL)[1]
                add(
                    (
                        trace_id,
                        _bits(64) or 1,
                        span_id,
                        "authenticate",
                        INTERNAL,
                        start,
                        entry.auth_end,
                        attributes,
                        None,
                    )
                )
            for child_id, name, kind, began, ended, attributes, error in entry.children:
                if kind == CLIENT:  # an upstream request: (upstream, method)
                    name, attributes = shape(attributes[0], attributes[1], CLIENT)  # pyright: ignore[reportIndexIssue]
                elif kind == _POLICY_KIND:  # (tool, allowed)
                    kind = INTERNAL
                    attributes = {"mcp.tool": attributes[0], "manifold.allowed": attributes[1]}
                add((trace_id, child_id or _bits(64) or 1, span_id, name, kind, began, ended, attributes, error))  # pyright: ignore[reportArgumentType]
        return spans

    def _export_loop(self) -> None:
        while not self._stop.wait(self._delay):
            self._export_all()
        self._export_all()

    def _export_all(self) -> None:
        queue = self._queue
        while queue:
            entries = []
            count = 0
            while queue and count < _SPANS_PER_EXPORT:
                try:
                    entry = queue.popleft()
                except IndexError:  # the event loop dropped the rest meanwhile
                    break
                entries.append(entry)
                count += entry.spans() if type(entry) is RequestSpan else 1
            self._taken += count
            batch = self._spans_of(entries)
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


# Context managers as classes: a generator-based `contextlib.contextmanager` costs ~2 µs per `with` here.
_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()

# A child span recorded into its request: span id (0: made at export), name, kind, start, end, attributes (or
# what the export thread makes them of: (upstream, method) for CLIENT, (tool, allowed) for the policy), error.
Child = tuple[int, str | None, int, int, int, Any, str | None]


class RequestSpan:
    """The server span of one traced request, current (`CURRENT`) while the request is handled, and the child
    spans recorded meanwhile. The request's own path only stores numbers here: the spans are made by the
    export thread, in bulk, from the raw values (measured in the gateway, each hook on a request's path cost
    several times what it costs in a loop, so the less it does the better). A child ending after the request
    was answered (in a task the request started) is queued on its own: once `end` is set the export thread
    may be reading `children`."""

    __slots__ = (
        "tracing",
        "trace_id",
        "span_id",
        "parent_id",
        "sampled",
        "name",
        "start",
        "end",
        "server_id",
        "user_id",
        "auth_end",
        "credential",
        "children",
        "_token",
    )

    def __init__(
        self,
        tracing: Tracing,
        trace_id: int,
        parent_id: int,
        sampled: bool,
        name: str,
        start: int,
        server_id: str,
        user_id: str,
        auth_end: int,
        credential: str,
    ) -> None:
        self.tracing = tracing
        self.trace_id = trace_id
        self.span_id = _bits(64) or 1
        self.parent_id = parent_id
        self.sampled = sampled
        self.name = name
        self.start = start
        self.end = 0
        self.server_id = server_id
        self.user_id = user_id
        self.auth_end = auth_end
        self.credential = credential
        self.children: list[Child] = []

    def spans(self) -> int:
        return (2 if self.auth_end else 1) + len(self.children)

    def __enter__(self) -> RequestSpan:
        self._token = CURRENT.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        CURRENT.reset(self._token)
        self.tracing.end(self)


class _ChildSpan:
    __slots__ = ("_tracing", "_ref", "_parent", "_name", "_attributes", "_start", "_token")

    def __init__(self, tracing: Tracing, current: Current, name: str, attributes: Attributes | None) -> None:
        self._tracing = tracing
        self._ref = _ref(SpanRef, (current.trace_id, _bits(64) or 1, True))
        self._parent = current
        self._name = name
        self._attributes = attributes

    def __enter__(self) -> None:
        self._start = now()
        self._token = CURRENT.set(self._ref)

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        CURRENT.reset(self._token)
        ref = self._ref
        error = kind.__name__ if kind is not None else None
        parent = self._parent
        if type(parent) is RequestSpan and not parent.end:
            parent.children.append((ref.span_id, self._name, INTERNAL, self._start, now(), self._attributes, error))
            return
        self._tracing._queued(  # pyright: ignore[reportPrivateUsage] — the span's own tracer
            (
                ref.trace_id,
                ref.span_id,
                parent.span_id,
                self._name,
                INTERNAL,
                self._start,
                now(),
                self._attributes,
                error,
            ),
            1,
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
_POLICY_KIND = -1  # a policy child in its request: attributes (tool, allowed); an INTERNAL span once exported
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
