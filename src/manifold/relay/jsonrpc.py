"""Tiny JSON-RPC helpers shared by the front transports: the handler error, response bytes, SSE framing.
(The protocol's own words, versions and codes are in manifold/protocol.py.)

Messages are plain dicts (manifold/jsoncodec.py in and out: orjson, integers of any size kept): the gateway
never re-validates an upstream's result through SDK models, so whatever the upstream said reaches the client
unchanged.
"""

from __future__ import annotations

from typing import Any

from manifold import jsoncodec
from manifold.protocol import MISSING_CLIENT_CAPABILITY

JSON = dict[str, Any]


class RpcError(Exception):
    """Raised by a handler to answer with a JSON-RPC error. The message is shown to the client."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_reply(self) -> JSON:
        err: JSON = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return {"error": err}


def missing_capability(*capabilities: str) -> RpcError:
    """A 2026-07-28 request that needs client capabilities the client did not declare: MissingRequired-
    ClientCapabilityError (-32021), `data.requiredCapabilities` a ClientCapabilities object naming them (as the
    schema has it: `{"sampling": {}}`, not a list). Streamable HTTP answers it with 400."""
    names = ", ".join(capabilities)
    return RpcError(
        MISSING_CLIENT_CAPABILITY,
        f"Missing required client capability: {names}",
        {"requiredCapabilities": {name: {} for name in capabilities}},
    )


def response_bytes(request_id: Any, reply: JSON) -> bytes:
    """A JSON-RPC response from a reply dict ({"result": ...} or {"error": ...})."""
    if "error" in reply:
        return jsoncodec.dumps({"jsonrpc": "2.0", "id": request_id, "error": reply["error"]})
    return jsoncodec.dumps({"jsonrpc": "2.0", "id": request_id, "result": reply.get("result", {})})


def error_bytes(request_id: Any, code: int, message: str, data: Any = None) -> bytes:
    return response_bytes(request_id, RpcError(code, message, data).to_reply())


def sse_event(payload: bytes, event_id: str | None = None) -> bytes:
    head = b"event: message\n"
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    return head + b"data: " + payload + b"\n\n"


def tool_error_result(text: str) -> JSON:
    """A tool result that tells the model what went wrong (isError), e.g. a member that is down."""
    return {"result": {"content": [{"type": "text", "text": text}], "isError": True}}
