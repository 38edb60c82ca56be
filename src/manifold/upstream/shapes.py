"""What an upstream's answers must look like for clients to parse them, and what is done when they do not.

Relayed as they came, a malformed item made a client's SDK reject the whole answer without a word of whose fault
it was (a virtual server's whole tools/list, every other member's tools with it). So a listed item that breaks
its shape is left out with a warning naming the upstream; a result a client could not parse (tools/call,
prompts/get, resources/read) is a protocol error naming the upstream; and a null where a field may be absent is
dropped, since the TypeScript SDK refuses it. Used by upstream/session.py on every answer of these methods
(tools/call is the hot path: a dict lookup and a few type tests per content item).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from manifold.protocol import (
    PROMPTS_GET,
    PROMPTS_LIST,
    RESOURCES_LIST,
    RESOURCES_READ,
    RESOURCES_TEMPLATES_LIST,
    TOOLS_CALL,
    TOOLS_LIST,
)
from manifold.upstream.base import JSON, ErrorKind, UpstreamError

logger = logging.getLogger(__name__)


# What each list method's items must look like (the fields clients parse strictly): (the result's key, the fields
# every item must have, the fields an item may have), each field with its JSON type. An item that breaks this is
# left out with a warning naming the upstream: relayed, it made the client reject the whole list, and with it
# every other upstream's tools on a virtual server (one SDK validation error fails `tools/list`).
ITEM_SHAPES: dict[str, tuple[str, dict[str, type], dict[str, type]]] = {
    TOOLS_LIST: (
        "tools",
        {"name": str, "inputSchema": dict},
        {"title": str, "description": str, "annotations": dict, "outputSchema": dict, "icons": list, "_meta": dict},
    ),
    PROMPTS_LIST: ("prompts", {"name": str}, {"title": str, "description": str, "arguments": list, "icons": list}),
    RESOURCES_LIST: (
        "resources",
        {"uri": str, "name": str},
        {"title": str, "description": str, "mimeType": str, "size": int, "annotations": dict, "icons": list},
    ),
    RESOURCES_TEMPLATES_LIST: (
        "resourceTemplates",
        {"uriTemplate": str, "name": str},
        {"title": str, "description": str, "mimeType": str, "annotations": dict, "icons": list},
    ),
}


# What a tools/call result's content items must look like, as for the list items above: one of the five types
# both protocol versions define (a client's SDK rejects the whole result for an item of any other type).
_MEDIA: tuple[dict[str, type], dict[str, type]] = ({"data": str, "mimeType": str}, {"annotations": dict, "_meta": dict})
_CONTENT_SHAPES: dict[str, tuple[dict[str, type], dict[str, type]]] = {
    "text": ({"text": str}, {"annotations": dict, "_meta": dict}),
    "image": _MEDIA,
    "audio": _MEDIA,
    "resource_link": ({"uri": str, "name": str}, ITEM_SHAPES[RESOURCES_LIST][2]),
    "resource": ({"resource": dict}, {"annotations": dict, "_meta": dict}),
}


def _without_nulls(item: JSON) -> JSON:
    """`item` (a listed tool, prompt, resource; a content item; resource contents) without its fields that are
    null, nor its annotations', embedded resource's, prompt arguments' or icons': clients take null as absent,
    but the TypeScript SDK rejects it, and with it the whole list or result. Never inside schemas or _meta
    (null is a value there). The same object when there is nothing to drop (the common case: a few C-level
    scans)."""
    nested = [key for key in _NULLABLE_INSIDE if _holds_null(item.get(key))]
    if None not in item.values() and not nested:
        return item
    kept = {k: v for k, v in item.items() if v is not None}
    for key in nested:
        value = kept[key]
        if type(value) is dict:
            kept[key] = {k: v for k, v in value.items() if v is not None}
        else:
            kept[key] = [{k: v for k, v in e.items() if v is not None} if type(e) is dict else e for e in value]
    return kept


_NULLABLE_INSIDE = ("annotations", "resource", "arguments", "icons")  # objects, or lists of them, cleaned too


def _holds_null(value: Any) -> bool:
    if type(value) is dict:
        return None in value.values()
    if type(value) is list:
        return any(type(e) is dict and None in e.values() for e in value)
    return False


def _result_without_nulls(result: JSON, items_key: str) -> JSON:
    """A result (and its content items, messages or contents under `items_key`) without null fields, as
    `_without_nulls`; the same object when it has none."""
    items = result.get(items_key)
    cleaned_items = items
    if type(items) is list:
        cleaned = [_without_nulls(item) if type(item) is dict else item for item in items]
        if any(a is not b for a, b in zip(cleaned, items, strict=True)):
            cleaned_items = cleaned
    if cleaned_items is items and None not in result.values():
        return result
    out = {k: v for k, v in result.items() if v is not None}
    if cleaned_items is not items:
        out[items_key] = cleaned_items
    return out


def _result_problem(result: JSON) -> str | None:
    """What is malformed in a tools/call result, or None. Relayed, any of it made the client reject the whole
    answer with a validation error that named nobody; here it fails the call naming the upstream. A few type
    tests per content item (the hot path)."""
    content = result.get("content", ())
    if type(content) not in (list, tuple):
        return "content that is not a list"
    for index, item in enumerate(content):
        if (problem := _content_problem(item, f"content item {index}")) is not None:
            return problem
    structured = result.get("structuredContent")
    if structured is not None and type(structured) is not dict:
        return "structuredContent that is not an object"
    return None


def _content_problem(item: Any, where: str) -> str | None:
    kind = item.get("type") if type(item) is dict else None
    if type(kind) is not str:
        return f"{where} that is not an object with a type"
    shape = _CONTENT_SHAPES.get(kind)
    if shape is None:
        return f"{where} of a type MCP does not define ({kind[:40]!r})"
    if not _well_formed(item, *shape) or (kind == "resource" and _resource_problem(item["resource"])):
        return f"{where}, a malformed {kind} item"
    return None


def _resource_problem(contents: Any) -> bool:
    """Whether resource contents (of resources/read, or embedded) are malformed: a uri, and text or a blob."""
    return (
        type(contents) is not dict
        or type(contents.get("uri")) is not str
        or (type(contents.get("text")) is not str and type(contents.get("blob")) is not str)
    )


def _prompt_problem(result: JSON) -> str | None:
    """What is malformed in a prompts/get result (its messages), or None."""
    messages = result.get("messages", ())  # absent: another kind of result (2026-07-28 input_required)
    if type(messages) not in (list, tuple):
        return "messages that are not a list"
    for index, message in enumerate(messages):
        if type(message) is not dict or message.get("role") not in ("user", "assistant"):
            return f"message {index} without a role of user or assistant"
        if (problem := _content_problem(message.get("content"), f"the content of message {index}")) is not None:
            return problem
    return None


def _read_problem(result: JSON) -> str | None:
    """What is malformed in a resources/read result (its contents), or None."""
    contents = result.get("contents", ())  # absent: another kind of result (2026-07-28 input_required)
    if type(contents) not in (list, tuple):
        return "contents that are not a list"
    for index, item in enumerate(contents):
        if _resource_problem(item):
            return f"contents item {index} without a uri and text or a blob"
    return None


def _without_nulls_in(method: str, result: JSON) -> JSON:
    """A prompts/get or resources/read result without null fields (see `_without_nulls`)."""
    if method == RESOURCES_READ:
        return _result_without_nulls(result, "contents")
    cleaned = _result_without_nulls(result, "messages")
    messages = cleaned.get("messages")
    if type(messages) is not list:
        return cleaned
    contents = [m.get("content") for m in messages]
    fixed = [_without_nulls(c) if type(c) is dict else c for c in contents]
    if all(a is b for a, b in zip(fixed, contents, strict=True)):
        return cleaned
    return {**cleaned, "messages": [{**m, "content": c} for m, c in zip(messages, fixed, strict=True)]}


def _well_formed(item: Any, required: dict[str, type], optional: dict[str, type]) -> bool:
    if type(item) is not dict:
        return False
    for name, kind in required.items():
        if type(item.get(name)) is not kind:
            return False
    for name, kind in optional.items():
        value = item.get(name)
        if value is not None and type(value) is not kind:  # null for an optional field: clients take it as absent
            return False
    return True


# The results a client parses strictly: what is malformed in one (None: nothing).
RESULT_CHECKS: dict[str, Callable[[JSON], str | None]] = {
    TOOLS_CALL: _result_problem,
    PROMPTS_GET: _prompt_problem,
    RESOURCES_READ: _read_problem,
}


def checked_result(upstream_id: str, method: str, reply: JSON) -> JSON:
    """`reply` to one of RESULT_CHECKS' methods without the nulls clients refuse; UpstreamError naming the
    upstream when its result is malformed."""
    result = reply.get("result")
    if result is None:
        return reply
    if (problem := RESULT_CHECKS[method](result)) is not None:
        raise UpstreamError(
            upstream_id, f"answered {method} with {problem} (a protocol error of the upstream)", kind=ErrorKind.PROTOCOL
        )
    cleaned = _result_without_nulls(result, "content") if method == TOOLS_CALL else _without_nulls_in(method, result)
    return reply if cleaned is result else {**reply, "result": cleaned}


def only_well_formed(upstream_id: str, method: str, reply: JSON) -> JSON:
    """The list reply without the items a client could not parse (see ITEM_SHAPES)."""
    result = reply.get("result")
    if result is None:
        return reply
    key, required, optional = ITEM_SHAPES[method]
    items = result.get(key)
    if items is None:
        return reply
    if type(items) is list:
        kept = [_without_nulls(item) for item in items if _well_formed(item, required, optional)]
        left_out = len(items) - len(kept)
        if not left_out:
            if all(a is b for a, b in zip(kept, items, strict=True)):
                return reply
            return {**reply, "result": {**result, key: kept}}  # nulls dropped, nothing left out
    else:
        kept, left_out = [], 1
    logger.warning(
        "upstream %s: %s: left out %d item(s) with a missing field or one of the wrong type",
        upstream_id,
        method,
        left_out,
    )
    return {**reply, "result": {**result, key: kept}}
