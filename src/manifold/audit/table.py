"""Audit events printed for `manifold audit`: a table for people, or JSON lines for programs.

The table fits 100 columns: the time without its year (without its date when every row is from today), the
method folded into TARGET (a tools/call shows the tool alone), no UPSTREAM (the member prefix of the tool
name says it) and no REQUEST id (`--json` has every field). Why a row failed (its detail: the error's
message, the reason of a denial) goes on a line of its own under the row, cut at 100 columns. When the cells
are still too wide, the column with the most to spare gives way first: a name loses its middle
("user:…example.com"; the end, which tells tools apart, keeps two thirds).

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
_COLUMNS = ("TIME", "PRINCIPAL", "CREDENTIAL", "SERVER", "TARGET", "OUTCOME", "MS")
# How narrow each column may become when the table is too wide (0: never shortened).
_MINIMUM = (0, 12, 21, 6, 14, 0, 0)  # a key id (sa_token:<12>) is kept whole
_SEPARATOR = "  "
_DETAIL_PREFIX = "  ↳ "
TABLE_WIDTH = 100
_TOOLS_CALL = "tools/call"


def format_events(events: Sequence[AuditEvent], *, as_json: bool) -> str:
    """A table for people (local time, at most 100 columns, control characters escaped) or JSON lines."""
    if as_json:
        return "\n".join(orjson.dumps(event_to_json(e), default=str).decode() for e in events)
    if not events:
        return ""
    today = datetime.now().date()
    time_format = "%H:%M:%S" if all(datetime.fromtimestamp(e.at).date() == today for e in events) else "%m-%d %H:%M:%S"
    rows = [(_COLUMNS, None), *(_row(e, time_format) for e in events)]
    widths = _fit([max(len(r[i]) for r, _ in rows) for i in range(len(_COLUMNS))])
    lines: list[str] = []
    for cells, detail in rows:
        lines.append(_SEPARATOR.join(_shorten(c, w).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if detail is not None:
            lines.append(_DETAIL_PREFIX + _shorten_end(detail, TABLE_WIDTH - len(_DETAIL_PREFIX)))
    return "\n".join(lines)


def _fit(widths: list[int]) -> list[int]:
    """Narrow the column with the most to spare above its minimum, a character at a time, until the table fits."""
    widths = [max(w, len(c)) for w, c in zip(widths, _COLUMNS, strict=True)]
    excess = sum(widths) + len(_SEPARATOR) * (len(widths) - 1) - TABLE_WIDTH
    shortenable = [i for i, m in enumerate(_MINIMUM) if m]
    while excess > 0:
        widest = max(shortenable, key=lambda i: widths[i] - _MINIMUM[i])
        if widths[widest] <= _MINIMUM[widest]:
            break
        widths[widest] -= 1
        excess -= 1
    return widths


def _shorten_end(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _shorten(cell: str, width: int) -> str:
    if len(cell) <= width:
        return cell
    head = (width - 1) // 3  # the end tells names apart: it keeps two thirds
    return cell[:head] + "…" + cell[len(cell) - (width - 1 - head) :]


def _row(e: AuditEvent, time_format: str) -> tuple[tuple[str, ...], str | None]:
    target = _cell(e.target)
    if e.method != _TOOLS_CALL:
        target = _cell(e.method) if e.target is None else f"{_cell(e.method)} {target}"
    cells = (
        datetime.fromtimestamp(e.at).strftime(time_format),
        _cell(e.principal),
        _cell(e.credential),
        _cell(e.server),
        target,
        _cell(e.outcome.value),
        "-" if e.latency_ms is None else f"{e.latency_ms:.0f}" if e.latency_ms >= 100 else f"{e.latency_ms:.1f}",
    )
    return cells, None if not e.detail else _cell(e.detail)


def _cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))
