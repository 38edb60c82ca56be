"""What a client sends, checked in one place for both transports (`/mcp/{server}`, `/sse/{server}`) and both
eras, before anything acts on it: the content type, the `MCP-Protocol-Version` header, the JSON itself,
the JSON-RPC envelope, the id, the params and how deep the message nests; and (`ParamHeaders`) a 2026-07-28
`tools/call`'s `Mcp-Param-*` headers against its arguments.

Every failure is a `Refusal`: a JSON-RPC error with the HTTP status it is answered with (4xx, never a 500),
and the request's id when the id itself was acceptable. The transports only decide where it goes (the
POST's body; on `/sse/...` the connection's stream when there is an id to answer).

An id is a string of at most `limits.id_length` characters or an integer (not a boolean) within ±2^53;
anything else cannot be matched back reliably (arrays and objects are not hashable, and an integer beyond
2^53 is not one every client holds exactly: JavaScript's numbers are doubles), so it is refused as an invalid
request with id null.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from mcp.shared.inbound import X_MCP_HEADER_KEY, find_invalid_x_mcp_header, validate_mcp_param_headers

from manifold import jsoncodec
from manifold.catalog.view import Built
from manifold.protocol import (
    CANCELLED,
    HANDSHAKE_VERSIONS,
    HEADER_MISMATCH,
    INVALID_PARAMS,
    INVALID_REQUEST,
    META_PROTOCOL_VERSION,
    MODERN_VERSIONS,
    PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
    Era,
)
from manifold.relay.jsonrpc import error_bytes

JSON = dict[str, Any]

MAX_SAFE_INTEGER = 2**53
JSON_MEDIA_TYPE = "application/json"
SUPPORTED_VERSIONS = (*MODERN_VERSIONS, *HANDSHAKE_VERSIONS)


class Refusal(Exception):
    """A message the gateway will not act on, answered with `status` and a JSON-RPC error. `request_id` is
    the message's id when that id was acceptable (so the error can be matched to the request), else None."""

    def __init__(self, code: int, message: str, *, request_id: Any = None, data: Any = None, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.data = data
        self.status = status

    def body(self) -> bytes:
        return error_bytes(self.request_id, self.code, self.message, self.data)


class Inbound(NamedTuple):
    """One accepted client message. `method` is None for a client's reply to a server→client request;
    `request_id` is None for a notification (and `is_request` False). A tuple: the cheapest record to make
    once per call."""

    message: JSON
    method: str | None
    request_id: Any
    is_request: bool
    params: JSON


class InboundCheck:
    """The one validator of client messages (`limits.id_length`, `limits.json_depth`), built by the
    composition root and shared by both transports."""

    __slots__ = ("id_length", "json_depth")

    def __init__(self, *, id_length: int, json_depth: int) -> None:
        self.id_length = id_length
        self.json_depth = json_depth

    # ---- HTTP headers ---------------------------------------------------------------------------

    def content_type(self, headers: dict[str, str]) -> None:
        """A POSTed message is JSON. A request without a Content-Type is taken as JSON (lenient, as before);
        one that names another media type is refused. Parameters (`; charset=utf-8`) are allowed."""
        value = headers.get("content-type")
        if value is None or value == JSON_MEDIA_TYPE:
            return
        media = value.split(";", 1)[0].strip().lower()
        if media != JSON_MEDIA_TYPE:
            raise Refusal(
                INVALID_REQUEST,
                f"Invalid Request: Content-Type must be {JSON_MEDIA_TYPE}, not '{_shown(media)}'",
            )

    def era(self, headers: dict[str, str], inbound: Inbound) -> Era:
        """Which era a POST to `/mcp/{server}` speaks. The `MCP-Protocol-Version` header decides; without
        it a 2026-07-28 envelope in `params._meta` does, else the handshake era (the spec: a request with no
        version header is taken as 2025-03-26). An unknown header value is refused with the versions served."""
        version = headers.get("mcp-protocol-version")
        if version is None:
            envelope = _envelope_version(inbound.params)
            if envelope is None or envelope in HANDSHAKE_VERSIONS:
                return Era.HANDSHAKE
            return Era.MODERN  # the envelope's version (supported or not) is checked on the modern path
        if version in MODERN_VERSIONS:
            return Era.MODERN
        if version in HANDSHAKE_VERSIONS:
            return Era.HANDSHAKE
        # A request carrying the 2026-07-28 envelope is told the versions `server/discover` lists (a client
        # picks from those); one without is a handshake-era client, told every version served.
        supported = MODERN_VERSIONS if _envelope_version(inbound.params) is not None else SUPPORTED_VERSIONS
        raise Refusal(
            UNSUPPORTED_PROTOCOL_VERSION,
            f"Unsupported protocol version in the MCP-Protocol-Version header: '{_shown(version)}' "
            f"(supported: {', '.join(supported)})",
            request_id=inbound.request_id,
            data={"supported": list(supported), "requested": version if len(version) <= 128 else _shown(version)},
        )

    # ---- the message ----------------------------------------------------------------------------

    def parse(self, body: bytes) -> Inbound:
        """The message in `body`, or a Refusal saying what is wrong with it."""
        try:
            message = jsoncodec.loads(body)
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc) or "recursion" in str(exc):  # orjson stops at 1,024 levels
                raise self._too_deep(None) from None
            raise Refusal(PARSE_ERROR, "Parse error: body is not JSON") from None
        if isinstance(message, list):
            raise Refusal(INVALID_REQUEST, "Invalid Request: JSON-RPC batches are not supported")
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise Refusal(INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message")
        is_request = "id" in message
        request_id = message.get("id")
        if is_request and not self.valid_id(request_id):
            raise Refusal(INVALID_REQUEST, self._id_rule("Invalid Request: id"))
        method = message.get("method")
        if method is None:
            if not is_request or ("result" not in message and "error" not in message):
                raise Refusal(INVALID_REQUEST, "Invalid Request: neither a request, a notification nor a reply")
        elif not isinstance(method, str):
            raise Refusal(INVALID_REQUEST, "Invalid Request: method must be a string", request_id=request_id)
        params = message.get("params") if method is not None else None  # a reply has no params to check
        if params is None:
            params = {}
        elif not isinstance(params, dict):
            raise Refusal(INVALID_PARAMS, "Invalid params: params must be an object", request_id=request_id)
        # Nesting past the limit needs more than 2 × limit bytes and more brackets than the limit: a length
        # test and two C-speed counts keep ordinary calls from paying for the walk.
        if (
            len(body) > 2 * self.json_depth
            and body.count(b"{") + body.count(b"[") > self.json_depth
            and _deeper_than(message, self.json_depth)
        ):
            raise self._too_deep(request_id)
        if method == CANCELLED and "requestId" in params and not self.valid_id(params["requestId"]):
            raise Refusal(INVALID_PARAMS, self._id_rule(f"Invalid params: {CANCELLED} requestId"))
        return Inbound(message, method, request_id if is_request else None, is_request, params)

    def valid_id(self, value: Any) -> bool:
        """A JSON-RPC id the gateway can match back: a short string, or an integer within ±2^53."""
        if isinstance(value, str):
            return len(value) <= self.id_length
        return type(value) is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER

    def _id_rule(self, what: str) -> str:
        return (
            f"{what} must be a string of at most {self.id_length} characters "
            f"or an integer within ±2^53 (limits.id_length)"
        )

    def _too_deep(self, request_id: Any) -> Refusal:
        return Refusal(
            INVALID_PARAMS,
            f"Invalid params: the request nests deeper than {self.json_depth} levels of objects and arrays "
            f"(limits.json_depth)",
            request_id=request_id,
        )


class ParamHeaders:
    """The `Mcp-Param-*` headers of a 2026-07-28 `tools/call` (SEP-2243), checked against its arguments for a
    tool whose input schema asks for them (`x-mcp-header`): present together and equal after Base64-sentinel
    decoding, or absent together; anything else is refused with HeaderMismatch (-32020, HTTP 400) before the
    call goes anywhere. Which tools ask is worked out once per built tool list (one short JSON scan of each
    schema), so a call to a tool without annotations pays one dict lookup."""

    __slots__ = ()

    @staticmethod
    def schema(name: str, built: Built | None) -> JSON | None:
        """The input schema of tool `name` when it asks for `Mcp-Param-*` headers, from `built`, the caller's
        tool list (view.py `current`); None for any other tool (and before a list is built)."""
        if built is None:
            return None
        annotated = built.derived.get(_PARAM_SCHEMAS)
        if annotated is None:
            annotated = built.derived[_PARAM_SCHEMAS] = _annotated_schemas(built.items)
        return annotated.get(name)

    @staticmethod
    def check(schema: JSON, params: JSON, headers: dict[str, str], request_id: Any) -> None:
        arguments = params.get("arguments")
        rejection = validate_mcp_param_headers(schema, arguments if isinstance(arguments, dict) else {}, headers)
        if rejection is not None:
            raise Refusal(HEADER_MISMATCH, rejection.message, request_id=request_id)


_PARAM_SCHEMAS = "param_schemas"  # Built.derived: exposed tool name -> input schema that asks for Mcp-Param headers


def _annotated_schemas(tools: list[JSON]) -> dict[str, JSON]:
    annotated: dict[str, JSON] = {}
    marker = X_MCP_HEADER_KEY.encode()
    for tool in tools:
        schema = tool.get("inputSchema")
        name = tool.get("name")
        if (
            isinstance(schema, dict)
            and isinstance(name, str)
            and marker in jsoncodec.dumps(schema)
            and find_invalid_x_mcp_header(schema) is None  # an invalid annotation asks for nothing
        ):
            annotated[name] = schema
    return annotated


def as_object(value: Any) -> JSON:
    """A client-supplied member that should be an object (capabilities, clientInfo): itself, or {} when it is
    missing or not an object, so nothing later trips over a list or a string."""
    return value if isinstance(value, dict) else {}


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests more than `limit` objects/arrays deep: one level at a time (no recursion limit
    to hit), looking only at containers, and stopping at the first level past the limit."""
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > limit:
            return True
        below: list[Any] = []
        for node in level:
            for child in node.values() if type(node) is dict else node:
                kind = type(child)
                if kind is dict or kind is list:
                    below.append(child)
        level = below
        depth += 1
    return False


def _envelope_version(params: JSON) -> Any:
    meta = params.get("_meta")
    if isinstance(meta, dict):
        return meta.get(META_PROTOCOL_VERSION)
    return None


def _shown(value: str) -> str:
    """A client-supplied value as it may appear in an error message: short, printable."""
    cut = value[:64]
    return "".join(c if c.isprintable() else "?" for c in cut) + ("…" if len(value) > 64 else "")
