"""What the console's pages show, computed from the gateway's state: plain values, no markup."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]
HINTS = ("readOnlyHint", "destructiveHint", "openWorldHint")


@dataclass(frozen=True)
class UpstreamRow:
    id: str
    transport: str
    auth: str
    state: str  # up | degraded | down | idle (not connected yet: upstreams connect on first use)
    last_error: str | None
    tools: int | None  # None: the tool list was never fetched
    source: str  # the file that declares it, or "api"
    problem: str | None = None  # an API-made upstream the catalog leaves out, and why (admin/catalog.py merge)
    pinning: str = "hold"  # hold | flag | off (docs/pinning.md)


def state_of(health: Mapping[str, object], list_failed: bool) -> str:
    """up: connected and listing; degraded: connected (or connecting) but its last list or connect failed;
    down: the last thing known of it is a failure (upstream/health.py `down`); idle: never used yet."""
    if health.get("down"):
        return "down"
    if health.get("state") == "connected":
        return "degraded" if list_failed else "up"
    if health.get("last_error") or list_failed:
        return "degraded"
    return "idle"


def upstream_row(entry: JSON, health: Mapping[str, object], tools: int | None, list_error: str | None) -> UpstreamRow:
    """One row from the catalog's public entry (admin/catalog.py `Entry.public`) and the pool's health."""
    body = entry.get("body") or {}
    auth = body.get("auth") or {}
    last = health.get("last_error")
    error = list_error or (last if isinstance(last, str) else None)
    return UpstreamRow(
        id=str(entry.get("id")),
        transport=str(body.get("transport", "?")),
        auth=str(auth.get("mode", "none")) if isinstance(auth, dict) else "none",
        state=state_of(health, list_error is not None),
        last_error=error,
        tools=tools,
        source=str(entry.get("source", "")),
        problem=str(entry["problem"]) if entry.get("problem") else None,
        pinning=str(body.get("pinning") or "hold"),
    )


@dataclass(frozen=True)
class ToolRow:
    name: str
    title: str | None
    description: str
    input_schema: object
    hints: list[tuple[str, bool]]  # the annotation hints that are set, in HINTS order

    @property
    def schema(self) -> str:
        """The input schema, pretty-printed JSON (made only for the tools a page shows)."""
        return json.dumps(self.input_schema or {}, indent=2, sort_keys=True)


def tool_row(tool: JSON) -> ToolRow:
    annotations = tool.get("annotations")
    hints: list[tuple[str, bool]] = []
    if isinstance(annotations, dict):
        hints = [(h, bool(annotations[h])) for h in HINTS if isinstance(annotations.get(h), bool)]
    title = tool.get("title")
    description = tool.get("description")
    return ToolRow(
        name=str(tool.get("name", "")),
        title=title if isinstance(title, str) else None,
        description=description if isinstance(description, str) else "",
        input_schema=tool.get("inputSchema"),
        hints=hints,
    )


def matching(tools: Sequence[JSON], query: str, only_read_only: bool = False) -> list[ToolRow]:
    """The tools whose name, title or description contains `query` (case-insensitive), sorted by name."""
    needle = query.strip().lower()
    rows: list[ToolRow] = []
    for tool in tools:
        row = tool_row(tool)
        if needle and needle not in f"{row.name}\n{row.title or ''}\n{row.description}".lower():
            continue
        if only_read_only and ("readOnlyHint", True) not in row.hints:
            continue
        rows.append(row)
    return sorted(rows, key=lambda r: r.name)


TOOLS_PER_PAGE = 50


@dataclass(frozen=True)
class Paged:
    rows: list[ToolRow]
    page: int  # 1-based, within 1..pages
    pages: int
    first: int  # the 1-based position of the first row shown (0 when none)


def paged(rows: list[ToolRow], page_text: str, per_page: int = TOOLS_PER_PAGE) -> Paged:
    """One page of `rows` (an out-of-range or unreadable page number gives the nearest page)."""
    pages = max(1, -(-len(rows) // per_page))
    try:
        page = min(max(1, int(page_text)), pages)
    except ValueError:
        page = 1
    start = (page - 1) * per_page
    return Paged(rows[start : start + per_page], page, pages, start + 1 if rows else 0)


# ---- the upstream form (add / edit) ------------------------------------------------------------------

TRANSPORTS = ("http", "sse", "stdio", "openapi")
AUTH_MODES = ("none", "static", "oauth", "passthrough", "forwarded", "exchange")
AUTH_LABELS = {
    "none": "None (only the headers above)",
    "static": "Static: a bearer token and/or headers shared by every caller",
    "oauth": "OAuth: each user connects in the browser",
    "passthrough": "Passthrough: the caller's own token, when its audience fits",
    "forwarded": "Forwarded: headers the client sends in x-mcp-headers",
    "exchange": "Token exchange (RFC 8693)",
}
HIDDEN = "(hidden)"  # what the admin API shows for a stored credential (admin/catalog.py HIDDEN)
# Per auth mode: its plain text fields (form name → body key), its secret ones, its space-separated lists
# and its flags. Fields of a mode the form does not show (extra_authorize_params, ...) are kept on edit.
AUTH_TEXT = {
    "oauth": ("client_id", "issuer", "authorization_endpoint", "token_endpoint", "resource"),
    "passthrough": ("audience",),
    "exchange": ("token_endpoint", "audience", "client_id", "resource"),
}
AUTH_SECRET = {"static": ("bearer",), "oauth": ("client_secret",), "exchange": ("client_secret",)}
AUTH_LISTS = {"oauth": ("scopes",), "forwarded": ("allow",), "exchange": ("scopes",)}
AUTH_FLAGS = {"oauth": ("allow_insecure_discovery",), "exchange": ("allow_insecure",)}
MAX_PAIRS = 50  # header / environment rows a form may carry


@dataclass
class Pair:
    """One header or environment variable row: the name, the value typed (never a stored secret), and what
    is stored now: "" (nothing), "(hidden)" or a reference such as ${TOKEN} (shown: it is not a secret)."""

    name: str
    value: str = ""
    stored: str = ""


@dataclass
class UpstreamForm:
    """What the add / edit form shows: the values typed (or stored), never a stored secret."""

    id: str = ""
    transport: str = "http"
    description: str = ""
    url: str = ""
    spec: str = ""  # openapi: the OpenAPI document (a file or a URL)
    headers: list[Pair] = dataclasses.field(default_factory=list)
    command: str = ""
    args: str = ""  # one per line
    env: list[Pair] = dataclasses.field(default_factory=list)
    cwd: str = ""
    connect_timeout: str = ""
    call_timeout: str = ""
    required: bool = True
    auth_mode: str = "none"
    auth: dict[str, str] = dataclasses.field(default_factory=dict)  # "<mode>.<field>" → text typed
    auth_stored: dict[str, str] = dataclasses.field(default_factory=dict)  # "<mode>.<field>" → stored shown
    auth_headers: list[Pair] = dataclasses.field(default_factory=list)
    typed_secrets: bool = False  # the admin typed secrets that a refused form does not echo back

    def auth_value(self, mode: str, name: str) -> str:
        return self.auth.get(f"{mode}.{name}", "")

    def stored_secret(self, mode: str, name: str) -> str:
        return self.auth_stored.get(f"{mode}.{name}", "")


def _showable(value: object) -> str:
    """A stored credential as the form may mention it: the admin API shows only references (`${TOKEN}`,
    `secret:NAME`) and "(hidden)" for the rest."""
    return value if isinstance(value, str) else HIDDEN


def _pairs(values: object) -> list[Pair]:
    if not isinstance(values, dict):
        return []
    return [Pair(str(k), "", _showable(v)) for k, v in values.items()]


def form_of(upstream_id: str, body: JSON) -> UpstreamForm:
    """The edit form of an upstream, from its body as the admin API shows it (credentials hidden)."""
    auth = body.get("auth") if isinstance(body.get("auth"), dict) else {}
    assert isinstance(auth, dict)
    mode = str(auth.get("mode", "none"))
    form = UpstreamForm(
        id=upstream_id,
        transport=str(body.get("transport", "http")),
        description=str(body.get("description") or ""),
        url=str(body.get("url") or ""),
        spec=str(body.get("spec") or ""),
        headers=_pairs(body.get("headers")),
        command=str(body.get("command") or ""),
        args="\n".join(str(a) for a in body.get("args") or []),
        env=_pairs(body.get("env")),
        cwd=str(body.get("cwd") or ""),
        connect_timeout=_number_text(body.get("connect_timeout")),
        call_timeout=_number_text(body.get("call_timeout")),
        required=body.get("required") is not False,
        auth_mode=mode if mode in AUTH_MODES else "none",
    )
    for name in AUTH_TEXT.get(mode, ()):
        if auth.get(name) is not None:
            form.auth[f"{mode}.{name}"] = str(auth[name])
    for name in AUTH_LISTS.get(mode, ()):
        form.auth[f"{mode}.{name}"] = " ".join(str(v) for v in auth.get(name) or [])
    for name in AUTH_FLAGS.get(mode, ()):
        form.auth[f"{mode}.{name}"] = "1" if auth.get(name) is True else ""
    for name in AUTH_SECRET.get(mode, ()):
        if auth.get(name) is not None:
            form.auth_stored[f"{mode}.{name}"] = _showable(auth[name])
    if mode == "static":
        form.auth_headers = _pairs(auth.get("headers"))
    return form


def _number_text(value: object) -> str:
    return "" if value is None or isinstance(value, bool) else str(value)


def _posted_pairs(fields: Mapping[str, Sequence[str]], prefix: str, stored: list[Pair]) -> list[Pair]:
    """The rows `<prefix>_name_<n>` / `<prefix>_value_<n>` (n from 1) that have a name."""
    by_name = {p.name: p.stored for p in stored}
    pairs: list[Pair] = []
    for n in range(1, MAX_PAIRS + 1):
        name = (fields.get(f"{prefix}_name_{n}") or [""])[0].strip()
        if name:
            value = (fields.get(f"{prefix}_value_{n}") or [""])[0]
            pairs.append(Pair(name, value, by_name.get(name, "")))
    return pairs


def posted_form(fields: Mapping[str, Sequence[str]], stored: UpstreamForm | None) -> UpstreamForm:
    """The form as posted (`Frame.form_lists`); `stored` is the upstream's form before the edit."""

    def one(name: str) -> str:
        values = fields.get(name) or [""]
        return values[0].strip()

    before = stored or UpstreamForm()
    mode = one("auth_mode") or "none"
    form = UpstreamForm(
        id=before.id if stored is not None else one("id"),
        transport=one("transport") or "http",
        description=one("description"),
        url=one("url"),
        spec=one("spec"),
        headers=_posted_pairs(fields, "header", before.headers),
        command=one("command"),
        args="\n".join(line.strip() for line in (fields.get("args") or [""])[0].splitlines() if line.strip()),
        env=_posted_pairs(fields, "env", before.env),
        cwd=one("cwd"),
        connect_timeout=one("connect_timeout"),
        call_timeout=one("call_timeout"),
        required=one("required") == "1",
        auth_mode=mode,
        auth_stored=dict(before.auth_stored) if before.auth_mode == mode else {},
        auth_headers=_posted_pairs(fields, "auth_header", before.auth_headers if before.auth_mode == mode else []),
    )
    for name in (*AUTH_TEXT.get(mode, ()), *AUTH_LISTS.get(mode, ()), *AUTH_FLAGS.get(mode, ())):
        form.auth[f"{mode}.{name}"] = one(f"{mode}_{name}")
    for name in AUTH_SECRET.get(mode, ()):
        form.auth[f"{mode}.{name}"] = (fields.get(f"{mode}_{name}") or [""])[0]
    form.typed_secrets = any(p.value for p in (*form.headers, *form.env, *form.auth_headers)) or any(
        form.auth.get(f"{mode}.{n}") for n in AUTH_SECRET.get(mode, ())
    )
    return form


FormProblem = tuple[str, str]  # (field path as the admin API names it, reason)


def _secret_pairs(pairs: list[Pair], field: str, problems: list[FormProblem]) -> dict[str, str]:
    """Name → value to send: a blank value keeps what is stored (sent as the API's "(hidden)", or the
    reference as written); a new name needs a value."""
    out: dict[str, str] = {}
    for p in pairs:
        if p.value:
            out[p.name] = p.value
        elif p.stored:
            out[p.name] = p.stored
        else:
            problems.append((f"{field}.{p.name}", "give a value (a blank value keeps a stored one, and there is none)"))
    return out


def _number(text: str) -> object:
    try:
        return float(text)
    except ValueError:
        return text  # the model's check says what is wrong with it


# The upstream fields the form shows and sets (`body_of_form`); the others of a stored body are kept as they are.
FORM_FIELDS = frozenset(
    {"id", "transport", "description", "command", "args", "env", "cwd", "spec", "url", "headers"}
    | {"connect_timeout", "call_timeout", "required", "auth"}
)


def body_of_form(form: UpstreamForm, kept: JSON | None = None) -> tuple[JSON, list[FormProblem]]:
    """The admin API body the form describes (the files' format, plus `id`), and the problems only the form
    can see (a new secret left blank). `kept`: the stored body, whose fields the form does not show
    (protocol, OAuth's extra_authorize_params, ...) are kept."""
    kept = kept or {}
    problems: list[FormProblem] = []
    body: JSON = {"id": form.id, "transport": form.transport}
    # Every field the form does not show (protocol, pinning, sessions, max_response_bytes, ...) as stored: an
    # edit of the description left them out, and the API took that as "back to the default" (console review:
    # a per_user upstream went back to one shared session, a `flag` one to `hold`).
    body.update((k, v) for k, v in kept.items() if k not in FORM_FIELDS and v is not None)
    if form.description:
        body["description"] = form.description
    if form.transport == "stdio":
        body["command"] = form.command
        if form.args:
            body["args"] = form.args.splitlines()
        env = _secret_pairs(form.env, "env", problems)
        if env:
            body["env"] = env
        if form.cwd:
            body["cwd"] = form.cwd
    else:
        if form.transport == "openapi":
            body["spec"] = form.spec
        if form.url or form.transport != "openapi":  # an openapi upstream's default: the document's server
            body["url"] = form.url
        headers = _secret_pairs(form.headers, "headers", problems)
        if headers:
            body["headers"] = headers
    for name in ("connect_timeout", "call_timeout"):
        text = getattr(form, name)
        if text:
            body[name] = _number(text)
    if not form.required:
        body["required"] = False
    mode = form.auth_mode
    if form.transport != "stdio":  # a stdio upstream's credentials are its env (the auth fields are hidden)
        old_auth = kept.get("auth") if isinstance(kept.get("auth"), dict) else {}
        assert isinstance(old_auth, dict)
        auth: JSON = dict(old_auth) if old_auth.get("mode") == mode else {}
        auth["mode"] = mode
        for name in AUTH_TEXT.get(mode, ()):
            value = form.auth_value(mode, name)
            if value:
                auth[name] = value
            else:
                auth.pop(name, None)
        for name in AUTH_LISTS.get(mode, ()):
            auth[name] = form.auth_value(mode, name).replace(",", " ").split()
        for name in AUTH_FLAGS.get(mode, ()):
            auth[name] = form.auth_value(mode, name) == "1"
        for name in AUTH_SECRET.get(mode, ()):
            value = form.auth_value(mode, name)
            stored = form.stored_secret(mode, name)
            if value:
                auth[name] = value
            elif stored:
                auth[name] = stored
            else:
                auth.pop(name, None)
        if mode == "static":
            headers = _secret_pairs(form.auth_headers, "auth.headers", problems)
            if headers:
                auth["headers"] = headers
            else:
                auth.pop("headers", None)
        if auth != {"mode": "none"}:
            body["auth"] = auth
    return body, problems


def problems_by_field(problems: Sequence[FormProblem]) -> dict[str, list[str]]:
    """The admin API's problems (field path, reason) by the form control they belong next to: "url",
    "headers", "env", "args", "auth.<field>", ...; "" for the form as a whole."""
    placed: dict[str, list[str]] = {}
    for path, reason in problems:
        parts = [p for p in path.replace("[", ".").replace("]", "").split(".") if p]
        if not parts:  # the object as a whole: next to the field its reason names, if it names one
            named = re.search(r"'(url|command|auth|args|env|cwd)'", reason)
            key = ("auth.mode" if named.group(1) == "auth" else named.group(1)) if named else ""
        elif parts[0] == "auth":
            key = "auth." + parts[1] if len(parts) > 1 else "auth.mode"
        else:
            key = parts[0]
        placed.setdefault(key, []).append(f"{path}: {reason}" if path else reason)
    return placed
