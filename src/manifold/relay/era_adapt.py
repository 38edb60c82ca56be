"""The touch-ups a relayed result gets for the client's era; everything else passes through unchanged.

- 2026-07-28 clients: every result carries `resultType` (an upstream of the older era sends none), a
  `serverInfo` in `_meta` names the gateway's server, not the upstream behind it, and a relayed
  resources/read result carries `ttlMs` (the upstream's, else 0) and `cacheScope: "private"`.
- 2025-11-25 clients: the fields only 2026-07-28 has are dropped, whoever added them (a 2026-07-28
  upstream, a dual-era SDK): `resultType`, `ttlMs`, `cacheScope`, and an upstream's `serverInfo` in `_meta`.
"""

from __future__ import annotations

from typing import Any, assert_never

from manifold.naming import unwrap_uri
from manifold.protocol import META_SERVER_INFO, MODERN_RESULT_FIELDS, RESULT_COMPLETE, Era

CACHE_PRIVATE = "private"

JSON = dict[str, Any]


def adapt_to_era(reply: JSON, era: Era, server_info: JSON, *, cacheable: bool = False) -> JSON:
    """The reply as this era's client should see it; the same dict when nothing needs changing (the
    common case allocates nothing). `cacheable`: a relayed result 2026-07-28 gives caching hints
    (resources/read; the gateway's own lists carry theirs already)."""
    result = reply.get("result")
    if not isinstance(result, dict):
        return reply
    meta = result.get("_meta")
    match era:
        case Era.MODERN:
            private = not cacheable or (result.get("cacheScope") == CACHE_PRIVATE and "ttlMs" in result)
            if "resultType" not in result or not private or (isinstance(meta, dict) and META_SERVER_INFO in meta):
                result = dict(result)
                result.setdefault("resultType", RESULT_COMPLETE)
                if not private:
                    # What a caller may read depends on its grants: never "public", whatever the upstream
                    # said (a shared cache in front could serve it to someone not granted it).
                    result.setdefault("ttlMs", 0)
                    result["cacheScope"] = CACHE_PRIVATE
                if isinstance(meta, dict) and META_SERVER_INFO in meta:
                    result["_meta"] = {**meta, META_SERVER_INFO: server_info}
                return {"result": result}
        case Era.HANDSHAKE:
            info_meta: JSON | None = meta if isinstance(meta, dict) and META_SERVER_INFO in meta else None
            if info_meta is not None or not MODERN_RESULT_FIELDS.isdisjoint(result):
                result = {k: v for k, v in result.items() if k not in MODERN_RESULT_FIELDS}
                if info_meta is not None:
                    rest = {k: v for k, v in info_meta.items() if k != META_SERVER_INFO}
                    if rest:
                        result["_meta"] = rest
                    else:
                        del result["_meta"]
                return {"result": result}
        case _:
            assert_never(era)
    return reply


def uri_in_error(reply: JSON, params: JSON) -> JSON:
    """A resources/read error names the URI the client asked for in `data.uri` (SEP-2164), also when the
    upstream's own error has no data. An upstream's `data.uri` that is not the client's (its own form of a
    namespaced URI) becomes the client's, in the message too (real-clients probe: the client was told of
    `kitchen://nope` for the `kitchen+alpha://nope` it asked for); other data is left as it is."""
    error = reply.get("error")
    uri = params.get("uri")
    if not isinstance(error, dict) or not isinstance(uri, str):
        return reply
    data = error.get("data")
    if data is None:
        return {"error": {**error, "data": {"uri": uri}}}
    theirs = data.get("uri") if isinstance(data, dict) else None
    unwrapped = unwrap_uri(uri)
    # Only the upstream's form of this very URI (review: any `data.uri` was replaced throughout the message,
    # and an upstream naming "x" in a 1 MB message of x's made the gateway build a 2 GB string); once.
    if not isinstance(theirs, str) or unwrapped is None or theirs != unwrapped[1]:
        return reply
    fixed = {**error, "data": {**data, "uri": uri}}
    message = error.get("message")
    if isinstance(message, str):
        fixed["message"] = message.replace(theirs, uri, 1)
    return {"error": fixed}
