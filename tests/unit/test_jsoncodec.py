"""manifold.jsoncodec: orjson's reading and writing, integers of any size exact."""

from __future__ import annotations

import json
import math

import orjson
import pytest

from manifold import jsoncodec
from manifold.audit.redaction import redact

BIG = 2**70 + 1


def test_big_integers_are_read_exactly() -> None:
    raw = b'{"a":123456789012345678901234567890,"b":-1180591620717411303425,"c":[18446744073709551616]}'
    value = jsoncodec.loads(raw)
    assert value == {"a": 123456789012345678901234567890, "b": -BIG, "c": [2**64]}
    assert all(type(v) is int for v in (value["a"], value["b"], value["c"][0]))
    assert isinstance(orjson.loads(raw)["a"], float)  # what the codec is for


@pytest.mark.parametrize(
    ("number", "exact"),
    [
        (b"18446744073709551615", 2**64 - 1),  # orjson's largest (20 digits)
        (b"18446744073709551616", 2**64),
        (b"-9223372036854775808", -(2**63)),  # orjson's smallest (19 digits)
        (b"-9223372036854775809", -(2**63) - 1),  # orjson: a float
        (b"99999999999999999999999999999999999999", 10**38 - 1),
    ],
)
def test_integers_at_the_64_bit_edges(number: bytes, exact: int) -> None:
    value = jsoncodec.loads(b"[" + number + b"]")[0]
    assert type(value) is int and value == exact
    assert jsoncodec.dumps([value]) == b"[" + number + b"]"


def test_long_digit_runs_in_strings_and_floats_stay_what_they_are() -> None:
    raw = b'{"s":"12345678901234567890123","f":0.12345678901234567890123,"e":1.5e300,"g":-12345678901234567890.5}'
    value = jsoncodec.loads(raw)
    assert value == orjson.loads(raw)
    assert value["s"] == "12345678901234567890123"
    assert type(value["f"]) is float and type(value["e"]) is float and type(value["g"]) is float


def test_ordinary_messages_read_and_write_as_orjson_does() -> None:
    raw = (
        b'{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"h\\u00e9llo \\"x\\" \\n"}],'
        b'"structuredContent":{"n":9223372036854775807,"m":-9223372036854775808,"f":1e-7,"t":true,"z":null}}}'
    )
    value = jsoncodec.loads(raw)
    assert value == orjson.loads(raw)
    assert jsoncodec.dumps(value) == orjson.dumps(value)


def test_big_integers_are_written_exactly_and_compactly() -> None:
    value = {"id": 1, "result": {"structuredContent": {"n": BIG, "neg": -BIG, "f": 1.5, "s": "é", "l": [True, None]}}}
    written = jsoncodec.dumps(value)
    assert (
        written
        == b'{"id":1,"result":{"structuredContent":{"n":%d,"neg":%d,"f":1.5,"s":"\xc3\xa9","l":[true,null]}}}'
        % (
            BIG,
            -BIG,
        )
    )
    assert json.loads(written) == value
    assert jsoncodec.loads(written) == value


def test_what_orjson_refuses_for_another_reason_is_still_refused() -> None:
    with pytest.raises(TypeError):
        jsoncodec.dumps({1: "a key that is no string"})
    with pytest.raises(TypeError):
        jsoncodec.dumps({"n": BIG, "x": object()})  # the big integer is fine, the object is not
    with pytest.raises(TypeError):
        jsoncodec.dumps({"n": BIG, "s": "\ud800"})  # no lone surrogate in UTF-8
    assert jsoncodec.dumps({"n": math.nan}) == b'{"n":null}'  # as orjson: no big integer, no change


def test_invalid_json_fails_as_orjson_does() -> None:
    for raw in (b"{", b'{"a":NaN,"b":123456789012345678901234567890}', b"[1e400]", b"\xff"):
        with pytest.raises(orjson.JSONDecodeError):
            jsoncodec.loads(raw)


def test_integers_beyond_a_doubles_range_are_read_too() -> None:
    huge = 7 * 10**400 + 1  # orjson: "number is infinity when parsed as double"
    raw = b'{"n":%d,"m":-%d}' % (huge, huge)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)
    assert jsoncodec.loads(raw) == {"n": huge, "m": -huge}
    assert jsoncodec.dumps(jsoncodec.loads(raw)) == raw
    for refused in (
        b'{"n":%d,"f":1e400}' % huge,  # a float out of range stays refused
        b'{"n":%d,"f":NaN}' % huge,  # so do what json reads and JSON has not
        b'{"n":%d,"s":"\\ud800"}' % huge,  # and what orjson cannot hold
        b"[" + b"9" * 5000 + b"]",  # over the interpreter's 4,300 digits
        b"[" * 1100 + b"9" * 400 + b"]" * 1100,  # deeper than orjson reads
    ):
        with pytest.raises(orjson.JSONDecodeError):
            jsoncodec.loads(refused)


def test_what_pythons_json_cannot_read_keeps_orjsons_reading() -> None:
    deep = b"[" * 1020 + b"12345678901234567890123" + b"]" * 1020  # orjson reads 1,024 levels; json recurses
    value = jsoncodec.loads(deep)
    for _ in range(1020):
        value = value[0]
    assert value == 12345678901234567890123.0  # orjson's float: json gave up


def test_the_audit_keeps_big_integers_as_their_digits() -> None:
    """Audit rows are written with orjson: an argument beyond 64 bits is kept as its digits, the rest as is."""
    kept = redact({"n": BIG, "neg": -BIG, "small": 2**64 - 1, "min": -(2**63), "flag": True, "l": [2**64]})
    assert kept == {
        "n": str(BIG),
        "neg": str(-BIG),
        "small": 2**64 - 1,
        "min": -(2**63),
        "flag": True,
        "l": [str(2**64)],
    }
    orjson.dumps(kept)
