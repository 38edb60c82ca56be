"""The `openapi` upstream: a REST API described by an OpenAPI 3 document, spoken to as if it were an MCP server.

`OpenApiTransport` is a `MessageTransport` (base.py) that answers the session's JSON-RPC messages itself,
so the session (session.py), the pool, the catalog, policy, audit and naming treat it like any other
upstream: `server/discover` and `initialize` describe a tools-only server, `tools/list` lists the
document's operations (openapi_spec.py), and `tools/call` makes the REST request.

A call sends the path parameters substituted (each percent-escaped whole, so a value cannot add path
segments), the query parameters, the header parameters and the JSON body, plus the upstream's `headers` and
its credential headers (the pool merges the outbound layer's `Outbound.headers` into `config.headers`, as for
an MCP upstream: `static`, `forwarded`, `passthrough`, `oauth` apply unchanged). Nothing else of the caller's
request reaches the REST API. The answer is the response body as text content, and as `structuredContent`
when it is a JSON object; an HTTP error status is a tool result with `isError` naming the upstream and the
status. Redirects are not followed (credentials never travel to another host); the body read is bounded by
`max_response_bytes` and the request by `call_timeout`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import aiohttp
import orjson
from yarl import URL

from manifold import jsoncodec, protocol
from manifold.config.models import AuthMode, UpstreamConfig
from manifold.protocol import LATEST_HANDSHAKE, META_SERVER_INFO, METHOD_NOT_FOUND, MODERN_VERSION
from manifold.upstream.base import JSON, Deliver, ErrorKind, OnClosed, UpstreamError, UpstreamTimeout
from manifold.upstream.openapi_spec import RestApi, RestOperation, first_problems, load_spec_file, parse_spec_text
from manifold.upstream.session import CLIENT_INFO

logger = logging.getLogger(__name__)

CAPABILITIES: JSON = {"tools": {}}
# How much of an error response's body the tool result shows.
ERROR_BODY_CHARS = 2000
# Credential values this long or longer are taken out of an error body that echoes them.
MIN_REDACTED = 6


class _Documents:
    """The last few documents read, by (file, mtime and size) or (URL, content hash): read-only values shared
    by the sessions of one upstream, so per-caller sessions do not each hold their own parse."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str], RestApi] = OrderedDict()

    def get(self, key: tuple[str, str]) -> RestApi | None:
        api = self._entries.get(key)
        if api is not None:
            self._entries.move_to_end(key)
        return api

    def put(self, key: tuple[str, str], api: RestApi) -> None:
        self._entries[key] = api
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


_DOCUMENTS = _Documents(16)


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


class OpenApiTransport:
    """A `MessageTransport` whose far end is this object: it answers every request from the document and
    the REST API."""

    kind = "openapi"

    def __init__(self, upstream_id: str, config: UpstreamConfig) -> None:
        assert config.spec is not None  # the config model requires it for transport: openapi
        self.upstream_id = upstream_id
        self.config = config
        self._spec = config.spec
        self._deliver: Deliver | None = None
        self._http: aiohttp.ClientSession | None = None
        self._api: RestApi | None = None
        self._base = ""

    # ---- MessageTransport ----------------------------------------------------------------------------

    async def connect(self, deliver: Deliver, on_closed: OnClosed) -> None:
        self._deliver = deliver
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": f"manifold/{CLIENT_INFO['version']}"},
        )
        api = await self._load()
        base = self.config.url or api.server_url or ""
        if base and not base.startswith(("http://", "https://")) and is_url(self._spec):
            base = urljoin(self._spec, base)  # a relative servers[0].url is relative to the document
        if not base.startswith(("http://", "https://")):
            raise UpstreamError(
                self.upstream_id,
                "needs 'url': its OpenAPI document names no absolute server URL",
                kind=ErrorKind.PROTOCOL,
            )
        for note in api.notes:
            logger.info("upstream %s: operation left out: %s", self.upstream_id, note)
        self._api = api
        self._base = base.rstrip("/")

    async def request(self, request_id: int, body: bytes, headers: dict[str, str]) -> None:
        message = jsoncodec.loads(body)
        method = message.get("method")
        params = message.get("params") or {}
        reply: JSON
        match method:
            case protocol.TOOLS_CALL:
                reply = {"result": await self._call(params)}
            case protocol.TOOLS_LIST:
                reply = {"result": {"tools": orjson.loads(api.tools_json) if (api := self._api) else []}}
            case protocol.SERVER_DISCOVER:
                reply = {"result": self._discover()}
            case protocol.INITIALIZE:
                reply = {"result": self._initialize()}
            case protocol.PING:
                reply = {"result": {}}
            case _:
                reply = {"error": {"code": METHOD_NOT_FOUND, "message": f"Method not found: {method}"}}
        assert self._deliver is not None
        await self._deliver({"jsonrpc": "2.0", "id": request_id, **reply}, request_id)

    async def send(self, body: bytes, headers: dict[str, str]) -> None:
        """Notifications (initialized, cancelled) need no answer: a cancelled call's REST request was
        already aborted with the awaiting task."""

    async def open_change_channel(self, deliver: Deliver, ready: asyncio.Event) -> None:
        ready.set()  # the document does not change under a live session

    def set_negotiated(self, protocol_version: str) -> None:
        pass

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    # ---- the document ----------------------------------------------------------------------------------

    async def _load(self) -> RestApi:
        """The document, read and checked; shared with every other session reading the same one (the
        per-caller sessions of a forwarded/oauth/passthrough upstream: up to 256 of them)."""
        if is_url(self._spec):
            data = await self._fetch_spec()
            key = (self._spec, hashlib.sha256(data).hexdigest())
            if (api := _DOCUMENTS.get(key)) is not None:
                return api
            api, problems = parse_spec_text(data.decode("utf-8", errors="replace"), self._spec)
        else:
            path = Path(self._spec)
            try:
                stat = await asyncio.to_thread(path.stat)
            except OSError:
                raise UpstreamError(
                    self.upstream_id, f"OpenAPI document '{self._spec}' cannot be read", kind=ErrorKind.PROTOCOL
                ) from None
            key = (str(path), f"{stat.st_mtime_ns}:{stat.st_size}")
            if (api := _DOCUMENTS.get(key)) is not None:
                return api
            api, problems = await asyncio.to_thread(load_spec_file, path, self._spec)
        if api is None:
            raise UpstreamError(
                self.upstream_id,
                f"has an unusable OpenAPI document: {first_problems(problems)}",
                kind=ErrorKind.PROTOCOL,
            )
        _DOCUMENTS.put(key, api)
        return api

    async def _fetch_spec(self) -> bytes:
        assert self._http is not None
        try:
            async with self._http.get(self._spec, headers=self._document_headers(), allow_redirects=False) as response:
                if response.status != 200:
                    raise UpstreamError(
                        self.upstream_id,
                        f"answered HTTP {response.status} for its OpenAPI document",
                        kind=ErrorKind.AUTH if response.status in (401, 403) else ErrorKind.UNAVAILABLE,
                    )
                data = await self._read_bounded(response)
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                self.upstream_id, f"OpenAPI document could not be fetched ({type(exc).__name__})"
            ) from None
        if data is None:
            raise UpstreamError(
                self.upstream_id,
                f"OpenAPI document is larger than {self.config.max_response_bytes} bytes",
                kind=ErrorKind.PROTOCOL,
            )
        return data

    def _document_headers(self) -> dict[str, str]:
        """The credential goes along for the document only to the REST API's own origin (`url`): a document
        kept elsewhere (a repository, a CDN) never sees it."""
        url = self.config.url
        if url is not None and _origin(url) == _origin(self._spec):
            return self._outbound_headers()
        return {}

    def _discover(self) -> JSON:
        result: JSON = {
            "supportedVersions": [MODERN_VERSION],
            "capabilities": CAPABILITIES,
            "_meta": {META_SERVER_INFO: self._server_info()},
        }
        if self._api is not None and self._api.description:
            result["instructions"] = self._api.description
        return result

    def _initialize(self) -> JSON:
        result: JSON = {
            "protocolVersion": LATEST_HANDSHAKE,
            "capabilities": CAPABILITIES,
            "serverInfo": self._server_info(),
        }
        if self._api is not None and self._api.description:
            result["instructions"] = self._api.description
        return result

    def _server_info(self) -> JSON:
        api = self._api
        return {"name": api.title, "version": api.version} if api is not None else {"name": self.upstream_id}

    # ---- one REST call -------------------------------------------------------------------------------

    def _outbound_headers(self) -> dict[str, str]:
        """The upstream's static headers with the credential's merged in (see the pool)."""
        return dict(self.config.headers)

    async def _call(self, params: JSON) -> JSON:
        api, http = self._api, self._http
        assert api is not None and http is not None
        name = params.get("name")
        operation = api.operations.get(name) if isinstance(name, str) else None
        if operation is None:
            return _error_result(f"upstream '{self.upstream_id}' has no operation '{name}'")
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            return _error_result("'arguments' must be an object")
        built = _request_parts(operation, arguments)
        if isinstance(built, str):
            return _error_result(built)
        path, query, headers, body = built
        headers.update(self._outbound_headers())  # the credential wins over a same-named header parameter
        headers.setdefault("Accept", "application/json")
        data: bytes | None = None
        if operation.body_argument is not None and operation.body_argument in arguments:
            data = jsoncodec.dumps(body)
            headers["Content-Type"] = "application/json"
        url = URL(self._base + path, encoded=True)  # as built: no re-quoting, no dot-segment folding
        try:
            async with http.request(
                operation.method,
                url,
                params=query,
                data=data,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.config.call_timeout, sock_connect=self.config.connect_timeout),
            ) as response:
                raw = await self._read_bounded(response)
                status, reason = response.status, response.reason or ""
                content_type = response.headers.get("Content-Type", "")
        except TimeoutError:
            raise UpstreamTimeout(self.upstream_id, self.config.call_timeout) from None
        except aiohttp.ClientConnectorError as exc:
            cause = "refused the connection" if isinstance(exc.os_error, ConnectionRefusedError) else "is unreachable"
            raise UpstreamError(self.upstream_id, cause) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(self.upstream_id, f"REST call failed ({type(exc).__name__})") from None
        if raw is None:
            return _error_result(
                f"upstream '{self.upstream_id}' answered more than {self.config.max_response_bytes} bytes "
                f"({operation.method} {operation.path})"
            )
        text = raw.decode("utf-8", errors="replace")
        if status == 401 and self.config.auth.mode is AuthMode.OAUTH:
            # A per-user token refused (revoked, rotated): the relay renews it and calls once more, or asks the
            # user to connect again, as for an MCP upstream. Nothing was done, so repeating the call is safe.
            raise UpstreamError(self.upstream_id, "refused the credential (HTTP 401)", kind=ErrorKind.AUTH)
        if status >= 400:
            shown = _redacted(text, self._outbound_headers())
            shown = shown[:ERROR_BODY_CHARS] + ("…" if len(shown) > ERROR_BODY_CHARS else "")
            summary = f"upstream '{self.upstream_id}' answered HTTP {status} {reason}".rstrip()
            return _error_result(f"{summary}: {shown}" if shown else summary)
        result: JSON = {"content": [{"type": "text", "text": text or f"HTTP {status} {reason}".rstrip()}]}
        if _is_json(content_type) and raw:
            try:
                decoded = jsoncodec.loads(raw)
            except orjson.JSONDecodeError:
                decoded = None
            if isinstance(decoded, dict):
                result["structuredContent"] = decoded
        return result

    async def _read_bounded(self, response: aiohttp.ClientResponse) -> bytes | None:
        """The body, or None when it is larger than `max_response_bytes` (reading stops there)."""
        limit = self.config.max_response_bytes
        if response.content_length is not None and response.content_length > limit:
            return None
        data = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            data += chunk
            if len(data) > limit:
                return None
        return bytes(data)


def _request_parts(
    operation: RestOperation, arguments: Mapping[str, Any]
) -> tuple[str, list[tuple[str, str]], dict[str, str], Any] | str:
    """(path, query, headers, body) for one call, or why the arguments cannot make one."""
    path = operation.path
    query: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    for p in operation.parameters:
        if p.argument not in arguments or arguments[p.argument] is None:
            if p.required:
                return f"missing required argument '{p.argument}'"
            continue
        value = arguments[p.argument]
        match p.location:
            case "path":
                path = path.replace("{" + p.name + "}", _segment(_scalar(value)))
            case "query":
                values = value if isinstance(value, list) else [value]
                query.extend((p.name, _scalar(v)) for v in values)
            case "header":
                text = _scalar(value)
                if "\r" in text or "\n" in text:
                    return f"argument '{p.argument}' may not contain a line break"
                headers[p.name] = text
    body = None
    if operation.body_argument is not None:
        body = arguments.get(operation.body_argument)
        if body is None and operation.body_required:
            return f"missing required argument '{operation.body_argument}'"
    return path, query, headers, body


def _segment(value: str) -> str:
    """A path parameter's value as one path segment: every reserved character escaped, and a value of only
    dots (`.`, `..`) escaped too, so no value can climb to another path."""
    escaped = quote(value, safe="")
    return escaped.replace(".", "%2E") if escaped.strip(".") == "" else escaped


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return jsoncodec.dumps(value).decode()


def _redacted(text: str, headers: Mapping[str, str]) -> str:
    """An error body as the caller may see it: a REST API that echoes the request's credential (a header
    value, or the token of `Bearer <token>`) has it replaced."""
    for value in headers.values():
        for secret in (value, value.partition(" ")[2]):
            if len(secret) >= MIN_REDACTED and secret in text:
                text = text.replace(secret, "[redacted]")
    return text


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = URL(url)
    return parsed.scheme, parsed.host or "", parsed.port


def _is_json(content_type: str) -> bool:
    base = content_type.split(";", 1)[0].strip().lower()
    return base == "application/json" or base.endswith("+json")


def _error_result(text: str) -> JSON:
    return {"content": [{"type": "text", "text": text}], "isError": True}
