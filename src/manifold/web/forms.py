"""What a page reads from a request: the body (bounded by `max_body_bytes`), the form fields and the query.

Forms are parsed here with `urllib.parse` rather than Starlette's `request.form()`: every form of these pages
is `application/x-www-form-urlencoded` with a handful of short fields, and `request.form()` needs
python-multipart, which is not one of the gateway's declared dependencies. A few bounds keep a hostile
request from becoming work: at most `MAX_FIELDS` fields (in a form or a query), each value cut to
`MAX_FIELD_CHARS`. Bytes that are not UTF-8 become U+FFFD: a malformed value is a wrong value, not an error.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.datastructures import QueryParams
from starlette.requests import Request

MAX_FIELDS = 20
MAX_FIELD_CHARS = 8192
FORM_TYPE = "application/x-www-form-urlencoded"


class BodyTooLarge(Exception):
    """The request body is over the gateway's `max_body_bytes`."""


class TooManyFields(Exception):
    """A form (or a query) with more fields than any page of ours has."""


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused as soon as it is known to exceed `limit` (the declared length, or what
    arrived): a client cannot make the gateway buffer more. Raises `starlette.requests.ClientDisconnect`
    when the client goes away."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def form_fields(content_type: str | None, body: bytes, max_fields: int = MAX_FIELDS) -> dict[str, str]:
    """The fields of a URL-encoded form (the first value of each); nothing for any other kind of body."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind != FORM_TYPE:
        return {}
    try:
        pairs = parse_qsl(body.decode("utf-8", errors="replace"), max_num_fields=max_fields)
    except ValueError:  # more than MAX_FIELDS
        raise TooManyFields from None
    return _first(pairs)


def query_fields(query: QueryParams) -> dict[str, str]:
    """The query's parameters (the first value of each, blank ones left out like absent ones). Raises
    TooManyFields past `MAX_FIELDS` parameters, repeated ones included."""
    pairs = query.multi_items()
    if len(pairs) > MAX_FIELDS:
        raise TooManyFields
    return _first(pairs)


def _first(pairs: list[tuple[str, str]]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in pairs:
        if value and name not in fields:
            fields[name] = value[:MAX_FIELD_CHARS]
    return fields
