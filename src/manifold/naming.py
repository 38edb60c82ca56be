"""Deterministic naming: how an upstream's tool, prompt and resource names appear in a virtual server.

Tool and prompt names
    The exposed name of upstream name `name` in member `member` is

    - `{member}{sep}{name}` when the virtual server namespaces (the default; `sep` defaults to `__`),
    - `name` unchanged when namespacing is off,
    - with an alias, the alias replaces `name` first and the prefix is then applied as above
      (`alias=count_words` in member `toolbox` -> `toolbox__count_words`).

    Every exposed name must match `^[A-Za-z0-9_-]{1,64}$`: the MCP spec allows 128 characters and `.`,
    but LLM APIs accept only this, so we stay inside the stricter rule. A candidate that does not match is
    made to match, deterministically: every character outside `[A-Za-z0-9_-]` becomes `_`, the result is cut
    to 55 characters and `_` plus the first 8 hex digits of sha256(candidate) is appended (64 characters at
    most). The hash is of the *original* candidate, so `a.b` and `a_b` (or two long names sharing their
    first 55 characters) do not meet.

Resource URIs and URI templates
    Namespacing inserts the member into the URI scheme, so it is reversible without a table:
    `test://static-text` in member `server-1` -> `test+server-1://static-text`. `unwrap_uri` splits the
    scheme at its LAST `+` (member ids never contain `+`), so `svn+ssh://x` in member `a` ->
    `svn+ssh+a://x` -> (`a`, `svn+ssh://x`). A URI without a scheme (`readme`, `{path}`) - and one whose
    scheme is literally `manifold`, so that the mapping stays one-to-one - is wrapped whole behind the
    pseudo-scheme `manifold+{member}:`; unwrapping it returns the text after that first `:` unchanged.
    Template braces are never part of a scheme, so templates use the same functions.

Collisions
    `NameTable` maps exposed names back to (member id, upstream name) with one dict lookup and refuses an
    exposed name that two different sources produce, naming both.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_NAME = 64
_HASH_CHARS = 8
_KEEP = MAX_NAME - 1 - _HASH_CHARS  # 55: room for "_" + 8 hex digits
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

# RFC 3986: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), ended by the first ":".
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_MEMBER_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
NO_SCHEME = "manifold"


def is_valid_name(name: str) -> bool:
    """True if `name` is acceptable as an exposed tool/prompt name as it is."""
    return NAME_RE.match(name) is not None


def shorten(candidate: str) -> str:
    """`candidate` if valid, otherwise its deterministic sanitised-and-hashed form (see module doc)."""
    if NAME_RE.match(candidate):
        return candidate
    digest = hashlib.sha256(candidate.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{_UNSAFE.sub('_', candidate)[:_KEEP]}_{digest}"


def candidate_name(member: str, name: str, *, sep: str, namespace: bool, alias: str | None = None) -> str:
    """The exposed name before shortening (used to tell the user why a name was changed)."""
    base = alias if alias is not None else name
    return f"{member}{sep}{base}" if namespace else base


def expose_name(member: str, name: str, *, sep: str = "__", namespace: bool = True, alias: str | None = None) -> str:
    """The name a client sees for upstream tool/prompt `name` of member `member`."""
    return shorten(candidate_name(member, name, sep=sep, namespace=namespace, alias=alias))


# ---- resource URIs ------------------------------------------------------------------------------


def wrap_uri(member: str, uri: str) -> str:
    """Put `member` into `uri`'s scheme; `unwrap_uri` reverses it exactly."""
    m = _SCHEME_RE.match(uri)
    if m is None or m.group(1) == NO_SCHEME:
        return f"{NO_SCHEME}+{member}:{uri}"
    scheme = m.group(1)
    return f"{scheme}+{member}:{uri[len(scheme) + 1 :]}"


def unwrap_uri(uri: str) -> tuple[str, str] | None:
    """(member, original URI) for a URI made by `wrap_uri`, or None if `uri` is not one."""
    m = _SCHEME_RE.match(uri)
    if m is None:
        return None
    scheme = m.group(1)
    base, plus, member = scheme.rpartition("+")
    if not plus or not base or not _MEMBER_RE.match(member):
        return None
    rest = uri[len(scheme) + 1 :]
    if base == NO_SCHEME:
        return member, rest
    return member, f"{base}:{rest}"


# ---- collision table ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameSource:
    member_id: str
    upstream_name: str


class NameCollision(ValueError):
    """Two different sources produce the same exposed name. The message names both."""

    def __init__(self, exposed: str, new: NameSource, existing: NameSource, kind: str = "tool") -> None:
        self.exposed = exposed
        self.new = new
        self.existing = existing
        super().__init__(
            f"'{exposed}' from member '{new.member_id}' {kind} '{new.upstream_name}' collides with "
            f"member '{existing.member_id}' {kind} '{existing.upstream_name}'"
        )


class NameTable:
    """Exposed name -> (member id, upstream name) for one kind (tools or prompts) of one virtual server."""

    __slots__ = ("kind", "_by_exposed")

    def __init__(self, kind: str = "tool") -> None:
        self.kind = kind
        self._by_exposed: dict[str, NameSource] = {}

    def add(self, member_id: str, upstream_name: str, exposed: str) -> None:
        """Record one entry; raise `NameCollision` if another source already has `exposed`.
        Adding the same source under the same name again is a no-op."""
        collision = self.try_add(member_id, upstream_name, exposed)
        if collision is not None:
            raise collision

    def try_add(self, member_id: str, upstream_name: str, exposed: str) -> NameCollision | None:
        """Like `add`, but returns the collision (and keeps the first entry) instead of raising."""
        new = NameSource(member_id, upstream_name)
        existing = self._by_exposed.setdefault(exposed, new)
        if existing == new:
            return None
        return NameCollision(exposed, new, existing, self.kind)

    def resolve(self, exposed: str) -> tuple[str, str] | None:
        source = self._by_exposed.get(exposed)
        return None if source is None else (source.member_id, source.upstream_name)

    def __contains__(self, exposed: object) -> bool:
        return exposed in self._by_exposed

    def __len__(self) -> int:
        return len(self._by_exposed)

    def items(self) -> list[tuple[str, tuple[str, str]]]:
        return [(k, (v.member_id, v.upstream_name)) for k, v in self._by_exposed.items()]
