"""The OTLP protobuf encoding of finished spans (`ExportTraceServiceRequest`), written directly.

Why not the SDK's encoder: building `ReadableSpan`s and encoding them through
`opentelemetry.exporter.otlp.proto.common` costs ~80 µs of CPU per span here, and even the protobuf classes
themselves ~55 µs: with five spans per relayed call that is more CPU than the call. The few fields a gateway
span has are written here as protobuf wire format (~a tenth of that); tests decode the result with the
official `opentelemetry-proto` classes (tests/unit/test_telemetry.py, tests/e2e/test_telemetry.py).

Field numbers: opentelemetry/proto/trace/v1/trace.proto, common/v1/common.proto, resource/v1/resource.proto,
collector/trace/v1/trace_service.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

# A finished span: trace id, span id, parent span id (0: none), name, kind (1 internal, 2 server,
# 3 client), start ns, end ns, attributes, error description (None: not an error).
Finished = tuple[int, int, int, str, int, int, int, Mapping[str, str | bool | int] | None, str | None]

INTERNAL, SERVER, CLIENT = 1, 2, 3
_FIXED64 = struct.Struct("<Q")
_KINDS = {kind: b"\x30" + bytes((kind,)) for kind in (INTERNAL, SERVER, CLIENT)}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (`tag` already holds number << 3 | 2)."""
    n = len(payload)
    if n < 0x80:
        return bytes((tag, n)) + payload
    return bytes((tag,)) + _varint(n) + payload


def _string(tag: int, value: str) -> bytes:
    return _field(tag, value.encode("utf-8", "replace"))


_ATTRIBUTES: dict[tuple[str, str | bool | int], bytes] = {}
_MAX_CACHED = 4096


def attribute(key: str, value: str | bool | int) -> bytes:
    """An attribute as a span's field 9, cached: the same few (key, value) pairs recur on every call."""
    cached = _ATTRIBUTES.get((key, value))
    if cached is None:
        if len(_ATTRIBUTES) >= _MAX_CACHED:
            _ATTRIBUTES.clear()
        cached = _ATTRIBUTES[(key, value)] = _field(0x4A, key_value(key, value))
    return cached


def key_value(key: str, value: str | bool | int) -> bytes:
    """A KeyValue: key (1), value (2) as AnyValue: string_value (1), bool_value (2), int_value (3)."""
    if isinstance(value, bool):
        any_value = b"\x10" + (b"\x01" if value else b"\x00")
    elif isinstance(value, int):
        any_value = b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    else:
        any_value = _string(0x0A, str(value))
    return _string(0x0A, key) + _field(0x12, any_value)


_NAMES: dict[str, bytes] = {}


def _name(name: str) -> bytes:
    """A span's name field (5), cached: a gateway has a handful of span names."""
    cached = _NAMES.get(name)
    if cached is None:
        if len(_NAMES) >= _MAX_CACHED:
            _NAMES.clear()
        cached = _NAMES[name] = _string(0x2A, name)
    return cached


def span(f: Finished) -> bytes:
    """One Span: trace_id (1), span_id (2), parent_span_id (4), name (5), kind (6), start (7, fixed64),
    end (8, fixed64), attributes (9), status (15: message 2, code 3 = ERROR 2)."""
    trace_id, span_id, parent_id, name, kind, start, end, attributes, error = f
    head = b"\x0a\x10" + trace_id.to_bytes(16, "big") + b"\x12\x08" + span_id.to_bytes(8, "big")
    if parent_id:
        head += b"\x22\x08" + parent_id.to_bytes(8, "big")
    body = head + _name(name) + _KINDS[kind] + b"\x39" + _FIXED64.pack(start) + b"\x41" + _FIXED64.pack(end)
    if attributes:
        body += b"".join([attribute(k, v) for k, v in attributes.items()])
    if error is not None:
        body += _field(0x7A, _string(0x12, error) + b"\x18\x02")
    return body


def resource(attributes: Mapping[str, str]) -> bytes:
    """A Resource: attributes (1)."""
    return b"".join(_field(0x0A, key_value(k, v)) for k, v in attributes.items())


def spans_field(spans: Iterable[Finished]) -> bytes:
    """The spans as ScopeSpans' repeated field 2 (concatenations of these are that field too)."""
    return b"".join(_field(0x12, span(f)) for f in spans)


def export_request(resource_bytes: bytes, scope_name: str, spans: Iterable[Finished]) -> bytes:
    return export_request_of(resource_bytes, scope_name, spans_field(spans))


def export_request_of(resource_bytes: bytes, scope_name: str, encoded_spans: bytes) -> bytes:
    """ExportTraceServiceRequest: resource_spans (1) = ResourceSpans: resource (1), scope_spans (2) =
    ScopeSpans: scope (1) = InstrumentationScope: name (1); spans (2) (`spans_field`)."""
    scope_spans = _field(0x0A, _string(0x0A, scope_name)) + encoded_spans
    resource_spans = _field(0x0A, resource_bytes) + _field(0x12, scope_spans)
    return _field(0x0A, resource_spans)
