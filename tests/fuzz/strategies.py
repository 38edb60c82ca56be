"""Hypothesis strategies for what an outsider can send the gateway: JSON-RPC messages (valid, odd and broken),
the headers the MCP endpoint reads, bearer tokens (API-key-shaped, JWT-shaped garbage), web form fields and
admin API requests.

Messages are built as Python values and written with `encode`, a small JSON writer that also understands
`Deep` (a value nested thousands of levels, written iteratively, since json.dumps would hit Python's recursion
limit first) and `Big` (a long string, written without being built twice), and writes integers of any size
(orjson stops at 64 bits).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from manifold import protocol

# The servers the fuzzed gateway serves (tests/fuzz/conftest.py `world`).
SERVERS = ("kitchen", "web", "fwd", "pair")

# A header value the HTTP client will send (no CR, LF or NUL).
HEADER_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n\x00"), max_size=60)

# ---- JSON values ------------------------------------------------------------------------------------------

# Text without surrogates (they cannot be written as UTF-8) and without NUL, so it can go anywhere.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
UNICODE_SAMPLES = st.sampled_from(
    ["", "é", "日本語", "🙂", "\u202e", "\ufeff", "\u0000", "\\u0000", "a\nb", "\t", "𝕏" * 20, "\u00a0", "ﬃ"]
)
STRINGS = st.one_of(TEXT, UNICODE_SAMPLES)

INTEGERS = st.one_of(
    st.integers(-(2**31), 2**31),
    st.sampled_from([0, -1, 2**53, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), 2**64, 2**64 + 1, -(2**64), 10**30]),
    st.integers(min_value=-(10**40), max_value=10**40),
)
FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.5, 1e308, -1e308, 5e-324, 1.0, 2.0**64]),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTEGERS, FLOATS, STRINGS)


@dataclass(frozen=True)
class Deep:
    """A value nested `depth` levels: `[[[...]]]` or `{"a":{"a":...}}` around `leaf`."""

    depth: int
    kind: str = "list"
    leaf: Any = 1


@dataclass(frozen=True)
class Big:
    """A string of `size` copies of `char`."""

    size: int
    char: str = "x"


DEPTHS = st.sampled_from([32, 64, 128, 255, 256, 257, 512, 1000, 1023, 1024, 1025, 5000, 20000])
DEEP = st.builds(Deep, depth=DEPTHS, kind=st.sampled_from(["list", "dict"]), leaf=SCALARS)
BIG = st.builds(Big, size=st.sampled_from([4096, 65536, 300_000]), char=st.sampled_from(["x", "é", "🙂", '"']))

JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(STRINGS, children, max_size=4)),
    max_leaves=12,
)
# Any JSON value, sometimes very deep or very big.
HOSTILE_VALUES = st.one_of(JSON_VALUES, JSON_VALUES, JSON_VALUES, DEEP, BIG)


def encode(value: Any) -> str:
    """`value` as JSON text (Deep and Big included)."""
    out: list[str] = []
    _write(value, out)
    return "".join(out)


def _write(value: Any, out: list[str]) -> None:
    if isinstance(value, Deep):
        opener, closer = ("[", "]") if value.kind == "list" else ('{"a":', "}")
        out.append(opener * value.depth)
        _write(value.leaf, out)
        out.append(closer * value.depth)
    elif isinstance(value, Big):
        out.append(json.dumps(value.char * value.size, ensure_ascii=False))
    elif isinstance(value, dict):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                out.append(",")
            out.append(json.dumps(str(key), ensure_ascii=False))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        out.append(json.dumps(value, ensure_ascii=False))


# ---- JSON-RPC ---------------------------------------------------------------------------------------------

MISSING = object()  # "leave this member out of the message"

# The ids the issue names first (an array, an object, beyond 2^64), then every JSON type and size.
NASTY_IDS = st.sampled_from(
    [
        [1],
        {"a": 1},
        [],
        {},
        [[1]],
        2**64,
        2**64 + 1,
        -(2**63) - 1,
        2**53 + 1,
        1.5,
        -0.0,
        1e300,
        True,
        None,
        "",
        "\u0000",
    ]
)
IDS = st.one_of(
    NASTY_IDS,
    NASTY_IDS,
    st.integers(0, 1000),
    INTEGERS,
    STRINGS,
    st.none(),
    st.booleans(),
    FLOATS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(STRINGS, SCALARS, max_size=3),
    st.builds(Big, size=st.sampled_from([1000, 100_000])),
    DEEP,
)
KNOWN_METHODS = [
    protocol.INITIALIZE,
    protocol.PING,
    protocol.SERVER_DISCOVER,
    protocol.SUBSCRIPTIONS_LISTEN,
    protocol.TOOLS_LIST,
    protocol.TOOLS_CALL,
    protocol.PROMPTS_LIST,
    protocol.PROMPTS_GET,
    protocol.RESOURCES_LIST,
    protocol.RESOURCES_TEMPLATES_LIST,
    protocol.RESOURCES_READ,
    protocol.RESOURCES_SUBSCRIBE,
    protocol.RESOURCES_UNSUBSCRIBE,
    protocol.COMPLETION_COMPLETE,
    protocol.LOGGING_SET_LEVEL,
    protocol.INITIALIZED,
    protocol.CANCELLED,
    protocol.PROGRESS,
    protocol.ROOTS_LIST,
    protocol.SAMPLING_CREATE_MESSAGE,
]
# Methods whose fuzzed calls return at once (no server→client request the fuzzer would have to answer, no
# stream that stays open): subscriptions/listen is fuzzed by its own test.
QUICK_METHODS = [m for m in KNOWN_METHODS if m != protocol.SUBSCRIPTIONS_LISTEN]
METHODS = st.one_of(
    st.sampled_from(QUICK_METHODS),
    st.sampled_from(QUICK_METHODS),
    STRINGS,
    st.sampled_from(["rpc.discover", "tools/", "/tools/list", "TOOLS/LIST", "notifications/", "tools/call\x00"]),
)

# Tools of tests/upstreams/kitchen.py that answer at once and change nothing, and names that are not tools.
TOOL_NAMES = st.one_of(
    st.sampled_from(["echo", "add", "noop", "fail", "whoami", "headers", "image", "mixed", "embedded"]),
    st.sampled_from(["kitchen__echo", "fwd__echo", "web__add", "__", "a" * 300]),
    STRINGS,
)
URIS = st.one_of(
    st.sampled_from(["kitchen://readme", "file:///etc/passwd", "manifold+kitchen://x", "", "://", "a:b"]),
    STRINGS,
)


def params_for(method: str) -> st.SearchStrategy[Any]:
    """Params shaped for `method` with fuzzed values, or any value at all."""
    shaped: dict[str, st.SearchStrategy[Any]] = {
        protocol.TOOLS_CALL: st.fixed_dictionaries(
            {"name": TOOL_NAMES}, optional={"arguments": HOSTILE_VALUES, "_meta": JSON_VALUES}
        ),
        protocol.INITIALIZE: st.fixed_dictionaries(
            {},
            optional={
                "protocolVersion": st.one_of(st.sampled_from(VERSIONS), JSON_VALUES),
                "capabilities": HOSTILE_VALUES,
                "clientInfo": JSON_VALUES,
            },
        ),
        protocol.PROMPTS_GET: st.fixed_dictionaries({"name": STRINGS}, optional={"arguments": HOSTILE_VALUES}),
        protocol.RESOURCES_READ: st.fixed_dictionaries({"uri": st.one_of(URIS, JSON_VALUES)}),
        protocol.RESOURCES_SUBSCRIBE: st.fixed_dictionaries({"uri": st.one_of(URIS, JSON_VALUES)}),
        protocol.RESOURCES_UNSUBSCRIBE: st.fixed_dictionaries({"uri": st.one_of(URIS, JSON_VALUES)}),
        protocol.COMPLETION_COMPLETE: st.fixed_dictionaries(
            {
                "ref": st.one_of(
                    st.fixed_dictionaries({"type": st.sampled_from(["ref/prompt", "ref/resource"])}), JSON_VALUES
                )
            },
            optional={"argument": JSON_VALUES},
        ),
        protocol.LOGGING_SET_LEVEL: st.fixed_dictionaries(
            {"level": st.one_of(st.sampled_from(list(protocol.LOG_LEVELS)), JSON_VALUES)}
        ),
        protocol.CANCELLED: st.fixed_dictionaries({"requestId": IDS}, optional={"reason": JSON_VALUES}),
        protocol.PROGRESS: st.fixed_dictionaries({"progressToken": IDS, "progress": JSON_VALUES}),
    }
    anything = st.one_of(st.just(MISSING), HOSTILE_VALUES, st.dictionaries(STRINGS, HOSTILE_VALUES, max_size=3))
    if method in shaped:
        return st.one_of(shaped[method], shaped[method], anything)
    return st.one_of(st.just(MISSING), st.just({}), anything)


VERSIONS = [*protocol.HANDSHAKE_VERSIONS, *protocol.MODERN_VERSIONS]
PROTOCOL_VERSION_HEADERS = st.one_of(
    st.sampled_from(VERSIONS),
    st.sampled_from(["2099-01-01", "2024-11-05 ", "", "2026-07-28,2025-11-25", "latest", "1"]),
    HEADER_TEXT,
)


# What one fuzzed message breaks: usually one part of an otherwise valid request, so the broken part reaches
# the code behind the checks of the others; sometimes nothing (the handlers get ordinary requests with fuzzed
# strings), sometimes every part at once.
ASPECTS = ["id"] * 3 + ["params"] * 4 + ["method"] * 2 + ["none"] * 2 + ["jsonrpc", "extra", "everything"]


@st.composite
def requests(draw: st.DrawFn, *, modern: bool = False) -> Any:
    """One JSON-RPC message: a request valid but for one fuzzed part (`ASPECTS`), or fuzzed throughout.
    `modern` adds the 2026-07-28 `_meta` envelope (itself sometimes fuzzed) to object params."""
    aspect = draw(st.sampled_from(ASPECTS))
    everything = aspect == "everything"
    method = draw(METHODS if aspect in ("method", "everything") else st.sampled_from(QUICK_METHODS))
    message: dict[str, Any] = {}
    jsonrpc = draw(st.one_of(st.just(MISSING), SCALARS)) if aspect == "jsonrpc" or everything else "2.0"
    if jsonrpc is not MISSING:
        message["jsonrpc"] = jsonrpc
    request_id = draw(st.one_of(IDS, st.just(MISSING))) if aspect == "id" or everything else draw(st.integers(0, 10**6))
    if request_id is not MISSING:
        message["id"] = request_id
    message["method"] = draw(JSON_VALUES) if everything and draw(st.booleans()) else method
    params = draw(params_for(method) if aspect == "params" or everything else sane_params(method))
    if modern and (params is MISSING or isinstance(params, dict)):
        params = dict(params) if isinstance(params, dict) else {}
        params["_meta"] = draw(META if aspect == "params" or everything else st.just(modern_meta()))
    if params is not MISSING:
        message["params"] = params
    if aspect == "extra" or everything:
        extra = st.dictionaries(st.sampled_from(["result", "error", "extra", "ID"]), JSON_VALUES, max_size=2)
        message.update(draw(extra))
    return message


def sane_params(method: str) -> st.SearchStrategy[Any]:
    """Params a well-behaved client would send for `method` (with ordinary fuzzed strings)."""
    if method == protocol.TOOLS_CALL:
        return st.fixed_dictionaries(
            {
                "name": st.sampled_from(["echo", "add", "noop", "kitchen__echo", "nope"]),
                "arguments": st.just({"text": "hi"}),
            }
        )
    if method == protocol.INITIALIZE:
        return st.just(
            {
                "protocolVersion": protocol.LATEST_HANDSHAKE,
                "capabilities": {},
                "clientInfo": {"name": "f", "version": "1"},
            }
        )
    if method in (protocol.RESOURCES_READ, protocol.RESOURCES_SUBSCRIBE, protocol.RESOURCES_UNSUBSCRIBE):
        return st.fixed_dictionaries({"uri": URIS})
    if method == protocol.CANCELLED:
        return st.fixed_dictionaries({"requestId": IDS})  # the id a cancellation names is fuzzed here too
    return st.just({})


def modern_meta() -> dict[str, Any]:
    return {
        protocol.META_PROTOCOL_VERSION: protocol.MODERN_VERSION,
        protocol.META_CLIENT_CAPABILITIES: {},
        protocol.META_CLIENT_INFO: {"name": "fuzz", "version": "1"},
    }


# A 2026-07-28 `_meta` envelope: genuine, with fuzzed members, or not an envelope at all.
META = st.one_of(
    st.just(modern_meta()),
    st.fixed_dictionaries(
        {},
        optional={
            protocol.META_PROTOCOL_VERSION: st.one_of(st.sampled_from(VERSIONS), JSON_VALUES),
            protocol.META_CLIENT_CAPABILITIES: HOSTILE_VALUES,
            protocol.META_CLIENT_INFO: JSON_VALUES,
            protocol.META_LOG_LEVEL: JSON_VALUES,
            "progressToken": IDS,
        },
    ),
    HOSTILE_VALUES,
)


@st.composite
def bodies(draw: st.DrawFn, *, modern: bool = False) -> bytes:
    """A POST body: mostly one message, sometimes a batch, a bare JSON value or bytes that are not JSON."""
    kind = draw(st.sampled_from(["message"] * 8 + ["batch", "value", "broken", "bytes"]))
    if kind == "message":
        return encode(draw(requests(modern=modern))).encode()
    if kind == "batch":
        return encode(draw(st.lists(requests(modern=modern), max_size=4))).encode()
    if kind == "value":
        return encode(draw(HOSTILE_VALUES)).encode()
    if kind == "broken":
        text = encode(draw(requests(modern=modern))).encode()
        cut = draw(st.integers(0, len(text)))
        junk = draw(
            st.sampled_from([b"", b"}", b"]]", b",", b"\\", b'"', b"\x00", b"NaN", b"\xed\xa0\x80", b"\xff\xfe"])
        )
        return text[:cut] + junk
    return draw(st.binary(max_size=200))


def mostly(valid: Any, fuzzed: st.SearchStrategy[Any], odds: int = 4) -> st.SearchStrategy[Any]:
    """`valid` `odds` times in `odds + 1`, else a value of `fuzzed`: several fuzzed parts of one request are then
    each usually right, so the request gets past the checks of the others (shrinks towards `valid`)."""
    return st.sampled_from([True] * odds + [False]).flatmap(lambda keep: st.just(valid) if keep else fuzzed)


CONTENT_TYPES = st.one_of(
    st.just("application/json"),
    st.just("application/json"),
    st.sampled_from(
        [
            None,
            "text/plain",
            "application/json; charset=latin-1",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "",
            "*/*",
        ]
    ),
    HEADER_TEXT,
)
ACCEPTS = st.one_of(
    st.just("application/json, text/event-stream"),
    st.just("application/json, text/event-stream"),
    st.sampled_from([None, "application/json", "text/event-stream", "*/*", "text/html", ""]),
    HEADER_TEXT,
)

# ---- headers ----------------------------------------------------------------------------------------------

HEADER_VALUES = st.one_of(
    HEADER_TEXT,
    st.sampled_from(["", " ", "null", "{}", "[]", "é", "🙂", "a" * 9000]),
)


def header_safe(text: str) -> str:
    """`text` without the control characters an HTTP client refuses to put in a header."""
    return CONTROL.sub(" ", text)


CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# Values known only once the gateway runs (its issuer, its dev key, a browser's cookies and form tokens) are
# drawn as markers, `⟦name⟧` or `⟦name:twist⟧`, and filled in by `fill` when the request is made: a strategy
# must not depend on a fixture, since a draw inside an async test can stop it with a BaseException.
MARKER = re.compile(r"⟦(\w+)(?::(\w+))?⟧")
TWISTS = {
    "": lambda v: v,
    "chop": lambda v: v[:-1],
    "upper": lambda v: v.upper(),
    "tail": lambda v: v[:-3] + "AAA",
}


def fill(text: str, values: Mapping[str, str]) -> str:
    """`text` with each marker replaced by its value (twisted as the marker says)."""

    def one(m: re.Match[str]) -> str:
        value = values.get(m.group(1))
        return m.group(0) if value is None else TWISTS.get(m.group(2) or "", TWISTS[""])(value)

    return MARKER.sub(one, text)


@dataclass(frozen=True)
class JwtShaped:
    """Three dot-separated parts that look like a JWT: a JSON header and payload (fuzzed, sometimes nested
    thousands of levels, sometimes naming the configured IdP so the token reaches signature checking), and a
    random signature; `mangle` breaks the shape (a fourth part, a missing one, one that is not base64)."""

    header: Any
    payload: Any
    signature: bytes
    mangle: str = "none"
    garbage: str = ""
    index: int = 0

    def render(self, values: Mapping[str, str]) -> str:
        parts = [
            b64url(fill(encode(self.header), values).encode()),
            b64url(fill(encode(self.payload), values).encode()),
            b64url(self.signature),
        ]
        if self.mangle == "extra":
            parts.append(self.garbage)
        elif self.mangle == "short":
            parts = parts[:2]
        elif self.mangle == "garbage":
            parts[self.index] = self.garbage
        elif self.mangle == "padding":
            parts = [part + "==" for part in parts]
        return ".".join(parts)


JWT_SHAPED = st.builds(
    JwtShaped,
    header=st.one_of(
        st.fixed_dictionaries(
            {"alg": st.sampled_from(["RS256", "HS256", "none", "ES256", "PS512", "RS1"])},
            optional={
                "kid": st.one_of(STRINGS, JSON_VALUES),
                "typ": st.sampled_from(["JWT", "at+jwt"]),
                "jku": STRINGS,
            },
        ),
        HOSTILE_VALUES,
    ),
    payload=st.one_of(
        st.fixed_dictionaries(
            {"iss": st.one_of(st.just("⟦issuer⟧"), STRINGS)},
            optional={
                "sub": st.one_of(STRINGS, st.just("dev"), JSON_VALUES),
                "aud": JSON_VALUES,
                "exp": st.one_of(INTEGERS, FLOATS, STRINGS),
                "nbf": INTEGERS,
                "iat": INTEGERS,
                "groups": HOSTILE_VALUES,
            },
        ),
        HOSTILE_VALUES,
    ),
    signature=st.binary(max_size=64),
    mangle=st.sampled_from(["none", "none", "none", "extra", "short", "garbage", "padding"]),
    garbage=st.sampled_from(["", "x", "e30", "!!", "é", "====", "e30=", "%00", "a.b"]),
    index=st.integers(0, 2),
)

# A bearer: JWT-shaped, API-key-shaped guesses, the gateway's real development key with a twist, anything.
BEARER_TOKENS = st.one_of(
    JWT_SHAPED,
    JWT_SHAPED,
    st.builds(lambda s: "mfk_" + s, HEADER_TEXT),
    st.builds(lambda s: "mfs_" + s, HEADER_TEXT),
    st.builds(lambda a, b: f"mfk_{a}_{b}", st.text("abcdef0123456789", max_size=20), HEADER_TEXT),
    st.builds(lambda s: "mfd_" + s, HEADER_TEXT),
    st.sampled_from(["⟦key⟧x", "⟦key:chop⟧", "⟦key:upper⟧", " ⟦key⟧", "⟦key⟧ ", "⟦key:tail⟧", "", "..."]),
    HEADER_TEXT,
)
# The Authorization header of an outsider, as (scheme and space, token); None: no header.
AUTHORIZATIONS = st.one_of(
    st.none(),
    st.tuples(st.just("Bearer "), BEARER_TOKENS),
    st.tuples(st.just("Bearer "), BEARER_TOKENS),
    st.tuples(st.sampled_from(["bearer ", "BEARER ", "Basic ", "Token ", "Bearer  ", "Bearer\t"]), BEARER_TOKENS),
    st.tuples(st.sampled_from(["Bearer", "Bearer ", "Basic Zm9vOmJhcg==", "Negotiate", ""]), st.just("")),
    st.tuples(st.just(""), HEADER_VALUES),
)


def authorization(drawn: tuple[str, Any] | None, values: Mapping[str, str]) -> str | None:
    """The header value of a drawn AUTHORIZATIONS, markers filled in."""
    if drawn is None:
        return None
    scheme, token = drawn
    return scheme + (token.render(values) if isinstance(token, JwtShaped) else fill(token, values))


def forwarded_headers() -> st.SearchStrategy[str]:
    """Values of `x-mcp-headers`: objects by member id (the configured ones and others) of header names to
    values, flat objects, other JSON, broken JSON."""
    names = st.one_of(
        st.sampled_from(
            ["X-Api-Key", "x-api-key", "Host", "Cookie", "Authorization", "Content-Length", "X:Y", "X Y", ""]
        ),
        HEADER_TEXT,
    )
    values = st.one_of(HEADER_TEXT, JSON_VALUES, st.sampled_from(["a\r\nb", "\x00", "é"]))
    per_member = st.dictionaries(names, values, max_size=3)
    members = st.one_of(st.sampled_from(["fwd", "kitchen", "web", "pair", "fwd-a", ""]), STRINGS)
    shapes = st.one_of(
        st.dictionaries(members, per_member, max_size=3),
        per_member,
        JSON_VALUES,
        DEEP,
        st.builds(Big, size=st.sampled_from([17 * 1024, 100_000])),
    )
    return st.one_of(
        st.builds(lambda v: header_safe(encode(v)), shapes),
        HEADER_VALUES,
    )
