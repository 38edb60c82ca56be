"""Structured logs (`telemetry.logs: json`): one JSON object per line, with the request id and, when
tracing is on, the trace and span ids of the request the line was written for.

The request id is the client's `X-Request-Id` when it is a short token, else one the gateway makes; it is
set per MCP request (app.py) only when JSON logs are on.
"""

from __future__ import annotations

import logging
import re
import secrets
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

from manifold.telemetry.context import CURRENT

REQUEST_ID: ContextVar[str | None] = ContextVar("manifold_request_id", default=None)
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id(header: str | None) -> str:
    """The id of one request in the log: the client's X-Request-Id when it is a plain short token."""
    if header is not None and _CLIENT_ID.match(header):
        return header
    return secrets.token_hex(8)


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "request_id"?, "trace_id"?, "span_id"?, "exception"?}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            entry["request_id"] = rid
        span = CURRENT.get()
        if span is not None:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            # The exception's type and message only: a traceback in the log is a defect here.
            exc = record.exc_info[1]
            entry["exception"] = f"{type(exc).__name__}: {exc}" if exc is not None else None
        return orjson.dumps(entry).decode()
