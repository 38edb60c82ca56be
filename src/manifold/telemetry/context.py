"""The trace a request belongs to, as a context variable: what tracing.py sets and the log formatter reads.
Kept apart from tracing.py so that reading it imports nothing of the OpenTelemetry SDK."""

from __future__ import annotations

from contextvars import ContextVar
from typing import NamedTuple, Protocol


class SpanRef(NamedTuple):
    trace_id: int  # 128 bits
    span_id: int  # 64 bits
    sampled: bool


class Current(Protocol):
    """The current span: a `SpanRef`, or a traced request's own span (tracing.RequestSpan)."""

    @property
    def trace_id(self) -> int: ...
    @property
    def span_id(self) -> int: ...
    @property
    def sampled(self) -> bool: ...


CURRENT: ContextVar[Current | None] = ContextVar("manifold_span", default=None)
