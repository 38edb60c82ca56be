"""The trace a request belongs to, as a context variable: what tracing.py sets and the log formatter reads.
Kept apart from tracing.py so that reading it imports nothing of the OpenTelemetry SDK."""

from __future__ import annotations

from contextvars import ContextVar
from typing import NamedTuple


class SpanRef(NamedTuple):
    trace_id: int  # 128 bits
    span_id: int  # 64 bits
    sampled: bool


CURRENT: ContextVar[SpanRef | None] = ContextVar("manifold_span", default=None)
