"""The two touch-ups a relayed result gets for the client's era; everything else passes through unchanged.

- 2026-07-28 clients: every result carries `resultType` (an upstream of the older era sends none), and a
  `serverInfo` in `_meta` names the gateway's server, not the upstream behind it.
- 2025-11-25 clients: an upstream's own `serverInfo` in `_meta` is dropped (that era has none there).
"""

from __future__ import annotations

from typing import Any, assert_never

from manifold.protocol import META_SERVER_INFO, RESULT_COMPLETE, Era

JSON = dict[str, Any]


def adapt_to_era(reply: JSON, era: Era, server_info: JSON) -> JSON:
    """The reply as this era's client should see it; the same dict when nothing needs changing (the
    common case allocates nothing)."""
    result = reply.get("result")
    if not isinstance(result, dict):
        return reply
    meta = result.get("_meta")
    match era:
        case Era.MODERN:
            if "resultType" not in result or (isinstance(meta, dict) and META_SERVER_INFO in meta):
                result = dict(result)
                result.setdefault("resultType", RESULT_COMPLETE)
                if isinstance(meta, dict) and META_SERVER_INFO in meta:
                    result["_meta"] = {**meta, META_SERVER_INFO: server_info}
                return {"result": result}
        case Era.HANDSHAKE:
            if isinstance(meta, dict) and META_SERVER_INFO in meta:
                result = dict(result)
                rest = {k: v for k, v in meta.items() if k != META_SERVER_INFO}
                if rest:
                    result["_meta"] = rest
                else:
                    del result["_meta"]
                return {"result": result}
        case _:
            assert_never(era)
    return reply
