"""Naming a database error without repeating event content (used by the writer's warnings and the CLI)."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError


def describe_error(exc: BaseException) -> str:
    """An error, without event content: SQLAlchemy's message quotes the statement's parameters, so only the
    driver's own first line (e.g. "no such table: audit_events", "database is locked") is kept."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        first_line = str(exc.orig).splitlines()[0] if str(exc.orig) else ""
        return f"{type(exc.orig).__name__}: {first_line[:200]}" if first_line else type(exc.orig).__name__
    return type(exc).__name__
