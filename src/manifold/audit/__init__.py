"""The audit trail: who called which tool, resource or prompt, through which server, with what outcome.

    model.py      `AuditEvent`, the closed set of `Outcome`s, the JSON form of an event
    writer.py     `AuditLog`: `record` on the request path, a batched background writer, retention, the
                  JSON-lines mirror
    journal.py    every row on disk before the answer leaves: an append-only file, replayed at start after
                  a run that died, so an answered call always has its row
    redaction.py  what of the tool arguments may be kept (`audit.include_arguments`)
    query.py      reading the table back: filters and time expressions
    table.py      printing events for people (a table) or programs (JSON lines)
    cli.py        `manifold audit` (import it as `manifold.audit.cli`; the gateway itself never needs it)

What is never stored: tokens (the event holds the principal id and the credential's *reference*, a key id
or IdP id), and tool arguments unless `audit.include_arguments` is on; even then values under keys that
look like secrets are replaced by `REDACTED`, at any depth.
"""

from manifold.audit.model import AuditEvent, Outcome, event_to_json
from manifold.audit.query import parse_since, principal_filter, query
from manifold.audit.redaction import REDACTED, redact
from manifold.audit.table import format_events
from manifold.audit.writer import AuditLog

__all__ = [
    "REDACTED",
    "AuditEvent",
    "AuditLog",
    "Outcome",
    "event_to_json",
    "format_events",
    "parse_since",
    "principal_filter",
    "query",
    "redact",
]
