"""JSON for the messages the gateway relays: orjson, with integers of any size kept exact.

orjson reads an integer beyond 64 bits as a float (beyond a double's range, not at all) and refuses to write
one, where Python's json (and so the MCP SDK, a client or an upstream connected directly) keeps it. `loads` is
orjson's, read again with the json module only when the bytes hold a run of digits long enough for such an
integer; `dumps` is orjson's, written with the json module only when orjson refuses an integer. An ordinary
message costs a pass or two over its bytes more (under 1 ns a byte) and is read and written as orjson alone would.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

# orjson reads exactly the integers in [-2**63, 2**64 - 1]: at most 20 digits, 19 after a minus sign. A run of
# 20 digits, or 19 after a minus, may be a bigger integer; inside a string or a float it is not, and reading it
# again changes nothing. Found with every digit made a 0 (bytes.translate) and a substring search, C loops over
# the bytes ~5 times faster than a regex search (`\d{20}|-\d{19}`); a message without 19 digits in a row (almost
# every one) needs no second search.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19
_TWENTY_DIGITS = b"0" * 20
_MINUS_NINETEEN_DIGITS = b"-" + b"0" * 19


def _refusal(make: Any) -> str | None:
    try:
        make()
    except orjson.JSONDecodeError as exc:
        return exc.msg  # "number is infinity when parsed as double"
    except TypeError as exc:
        return str(exc)  # "Integer exceeds 64-bit range"
    return None


_BEYOND_DOUBLE = _refusal(lambda: orjson.loads(b"1" + b"0" * 400))
_BIG_INTEGER_REFUSED = _refusal(lambda: orjson.dumps(2**64))


def loads(data: bytes) -> Any:
    """The JSON value in `data`, integers of any size exact. Raises orjson.JSONDecodeError as orjson.loads does
    (the json module reads no more than orjson does, but for integers beyond a double's range)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if exc.msg != _BEYOND_DOUBLE:
            raise
        try:  # an integer of 310 digits or more, or a float out of range (still refused)
            value = json.loads(data.decode(), parse_float=_finite, parse_constant=_no_constant)
            dumps(value)  # what orjson holds no string for (a lone surrogate escaped) is refused too
        except (ValueError, TypeError, RecursionError):  # also over the interpreter's 4,300 digits
            raise exc from None
        return value
    digits = data.translate(_DIGITS_TO_ZERO)
    if _NINETEEN_DIGITS not in digits or (_TWENTY_DIGITS not in digits and _MINUS_NINETEEN_DIGITS not in digits):
        return value
    try:
        return json.loads(data)  # valid JSON (orjson read it): only its big integers come out differently
    except (ValueError, RecursionError):  # deeper than the interpreter's stack allows: orjson's reading
        return value


def dumps(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON, integers of any size included. Raises TypeError as orjson.dumps does."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        if str(exc) != _BIG_INTEGER_REFUSED:
            raise
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError):  # what orjson would refuse anyway (after the integer)
            raise exc from None


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError("number is infinity when parsed as double")
    return number


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")
