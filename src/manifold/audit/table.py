"""Audit events printed for `manifold audit`: a table for people, or JSON lines for programs.

Tool names and details are chosen by clients, so control characters are escaped: they must not drive the
admin's terminal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

import orjson

from manifold.audit.model import AuditEvent, event_to_json

# Control characters (C0, DEL, C1).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_COLUMNS = ("TIME", "PRINCIPAL", "CREDENTIAL", "SERVER", "UPSTREAM", "METHOD", "TARGET", "OUTCOME", "MS",
            "REQUEST", "DETAIL")  # fmt: skip
_DETAIL_WIDTH = 80


def format_events(events: Sequence[AuditEvent], *, as_json: bool) -> str:
    """A table for people (local time, long details cut, control characters escaped) or JSON lines."""
    if as_json:
        return "\n".join(orjson.dumps(event_to_json(e), default=str).decode() for e in events)
    if not events:
        return ""
    rows = [_COLUMNS, *(_row(e) for e in events)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _row(e: AuditEvent) -> tuple[str, ...]:
    detail = _cell(e.detail)
    if len(detail) > _DETAIL_WIDTH:
        detail = detail[: _DETAIL_WIDTH - 3] + "..."
    return (
        datetime.fromtimestamp(e.at).strftime("%Y-%m-%d %H:%M:%S"),
        _cell(e.principal),
        _cell(e.credential),
        _cell(e.server),
        _cell(e.upstream),
        _cell(e.method),
        _cell(e.target),
        _cell(e.outcome.value),
        "-" if e.latency_ms is None else f"{e.latency_ms:.1f}",
        _cell(e.request_id),
        detail,
    )


def _cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))
