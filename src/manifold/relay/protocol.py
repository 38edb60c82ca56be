"""MCP wire constants and tiny JSON-RPC helpers shared by the front transports.

Messages are plain dicts (orjson in, orjson out): the gateway never re-validates an upstream's result
through SDK models, so whatever the upstream said reaches the client unchanged.
"""

from __future__ import annotations

from typing import Any

import orjson

JSON = dict[str, Any]

MODERN_VERSION = "2026-07-28"
MODERN_VERSIONS = (MODERN_VERSION,)
# Handshake-era versions we accept in `initialize`, newest first.
HANDSHAKE_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_HANDSHAKE = HANDSHAKE_VERSIONS[0]

META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"

# JSON-RPC / MCP error codes
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REQUEST_CANCELLED = -32800
HEADER_MISMATCH = -32020
MISSING_CLIENT_CAPABILITY = -32021
UNSUPPORTED_PROTOCOL_VERSION = -32022
URL_ELICITATION_REQUIRED = -32042
RESOURCE_NOT_FOUND = -32002

LIST_CHANGED = {
    "notifications/tools/list_changed": "tools",
    "notifications/prompts/list_changed": "prompts",
    "notifications/resources/list_changed": "resources",
}


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


def response_bytes(request_id: Any, reply: JSON) -> bytes:
    """A JSON-RPC response from a reply dict ({"result": ...} or {"error": ...})."""
    if "error" in reply:
        return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "error": reply["error"]})
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "result": reply.get("result", {})})


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
