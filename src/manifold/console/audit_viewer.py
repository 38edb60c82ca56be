"""The console's audit viewer: the audit table, filtered and paged, and one row in full.

GET /admin/audit?user=&server=&tool=&outcome=&since=&until=&before=<at>:<id>   newest first, `PAGE_SIZE` a page
GET /admin/audit/{event_id}                                                   every column of one row

Reads through audit/query.py, the code `manifold audit` reads with (same filters, same time expressions:
`15m`, `2h`, `7d` or an ISO-8601 date/time). Paging is by keyset, (at, id) of the last row shown, so a page
far back costs what the first one does. The console's and the admin API's own changes are rows too (server
`admin`, method `console POST` / `admin DELETE` ...). Arguments are shown as stored: redacted when written,
and only when `audit.include_arguments` is on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from manifold.audit.model import AuditEvent, Outcome
from manifold.audit.query import one, page, parse_since
from manifold.console.access_views import when
from manifold.console.frame import METHODS, PREFIX, Frame, problem, render
from manifold.principal import Principal
from manifold.web.session import WebSession

PAGE_SIZE = 50
FILTERS = ("user", "server", "tool", "outcome", "since", "until")
MAX_FILTER = 400


@dataclass(frozen=True)
class EventRow:
    id: int
    time: str
    principal: str
    server: str
    method: str
    target: str
    outcome: str
    latency: str
    detail: str


def event_row(event_id: int, e: AuditEvent) -> EventRow:
    return EventRow(
        id=event_id,
        time=when(e.at),
        principal=e.principal,
        server=e.server,
        method=e.method,
        target=e.target or "",
        outcome=Outcome(e.outcome).value,
        latency="" if e.latency_ms is None else f"{e.latency_ms:.1f}",
        detail=e.detail or "",
    )


def parse_before(text: str) -> tuple[float, int] | None:
    """`<at>:<id>` of the last row of the previous page; None when absent or not that."""
    at, _, row_id = text.partition(":")
    try:
        return float(at), int(row_id)
    except ValueError:
        return None


class AuditPages:
    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.services = frame.services

    def routes(self) -> list[BaseRoute]:
        page_of = self.frame.page
        return [
            Route(PREFIX + "/audit", page_of(self.audit), methods=METHODS),
            Route(PREFIX + "/audit/{event_id}", page_of(self.event), methods=METHODS),
        ]

    async def audit(self, request: Request, principal: Principal, session: WebSession) -> Response:
        values = {k: request.query_params.get(k, "").strip()[:MAX_FILTER] for k in FILTERS}
        errors: list[str] = []
        now = time.time()
        times: dict[str, float | None] = {"since": None, "until": None}
        for name in ("since", "until"):
            if values[name]:
                try:
                    times[name] = parse_since(values[name], now)
                except ValueError as exc:
                    errors.append(f"{name.capitalize()}: {exc}")
        outcome: Outcome | None = None
        if values["outcome"]:
            try:
                outcome = Outcome(values["outcome"])
            except ValueError:
                errors.append(f"Outcome: '{values['outcome']}' is not one of {', '.join(o.value for o in Outcome)}.")
        before_text = request.query_params.get("before", "")[:100]
        before = parse_before(before_text) if before_text else None
        rows: list[EventRow] = []
        more = False
        if not errors:
            found = await page(
                self.services.engine,
                user=values["user"] or None,
                since=times["since"],
                until=times["until"],
                server=values["server"] or None,
                outcome=outcome,
                tool=values["tool"] or None,
                before=before,
                limit=PAGE_SIZE + 1,  # one more tells whether there is a next page
            )
            more = len(found) > PAGE_SIZE
            found = found[:PAGE_SIZE]
            rows = [event_row(i, e) for i, e in found]
            last = found[-1] if found else None
            next_query = (
                urlencode({**{k: v for k, v in values.items() if v}, "before": f"{last[1].at!r}:{last[0]}"})
                if more and last is not None
                else ""
            )
        else:
            next_query = ""
        first_query = urlencode({k: v for k, v in values.items() if v})
        return render(
            "audit.html",
            400 if errors else 200,
            viewer=self.frame.who(session),
            values=values,
            outcomes=[o.value for o in Outcome],
            errors=errors,
            rows=rows,
            paged=before is not None,
            next_url=f"{PREFIX}/audit?{next_query}" if next_query else "",
            first_url=f"{PREFIX}/audit" + (f"?{first_query}" if first_query else ""),
        )

    async def event(self, request: Request, principal: Principal, session: WebSession) -> Response:
        text = request.path_params["event_id"]
        event = await one(self.services.engine, int(text)) if text.isdigit() and len(text) < 19 else None
        if event is None:
            return problem(404, "Not found", f"There is no audit row '{text[:40]}'.", self.frame.who(session))
        columns: list[tuple[str, Any]] = [
            ("Time", when(event.at)),
            ("Unix time", repr(event.at)),
            ("Request id", event.request_id),
            ("Principal", event.principal),
            ("Credential", event.credential),
            ("Server", event.server),
            ("Member", event.member),
            ("Upstream", event.upstream),
            ("Method", event.method),
            ("Target", event.target),
            ("Outcome", Outcome(event.outcome).value),
            ("Detail", event.detail),
            ("Latency (ms)", None if event.latency_ms is None else f"{event.latency_ms:.3f}"),
        ]
        arguments = (
            None
            if event.arguments is None
            else orjson.dumps(event.arguments, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
        )
        return render(
            "audit_event.html",
            viewer=self.frame.who(session),
            event_id=int(text),
            columns=columns,
            arguments=arguments,
        )
