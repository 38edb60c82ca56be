"""Pydantic models of `manifold.yaml` and `virtual_servers/*.yaml`.

Unknown keys are errors everywhere (`extra="forbid"`): a typo must not silently become a default.
Secrets are written as `${ENV_NAME}` references and resolved by the loader before validation.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from manifold.config.header_names import check_allowed_name
from manifold.config.hosts import configured_host, configured_origin
from manifold.protocol import LATEST_HANDSHAKE, MODERN_VERSION

SLUG = r"^[a-z0-9][a-z0-9-]*$"
SLUG_RE = re.compile(SLUG)


def check_separator(v: str) -> str:
    """A namespace separator must itself be a valid part of a tool name (see naming.py)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,4}", v) or v.strip("-") == "":
        raise ValueError("separator must be 1-4 characters of [A-Za-z0-9_-], and not only '-'")
    return v


def _slug_id(v: str) -> str:
    if not SLUG_RE.match(v):
        raise ValueError(f"id '{v}' must match {SLUG} (lowercase letters, digits, '-')")
    return v


# A mapping key that is an id. Checked per key, so a bad id is reported next to the entry's other errors.
SlugKey = Annotated[str, AfterValidator(_slug_id)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Transport(str, enum.Enum):
    STDIO = "stdio"
    HTTP = "http"  # streamable HTTP
    SSE = "sse"  # legacy HTTP+SSE (2024-11-05)
    OPENAPI = "openapi"  # a REST API described by an OpenAPI 3 document: its operations become tools


class ProtocolChoice(str, enum.Enum):
    """Which era to speak upstream. `auto` probes server/discover and falls back to initialize."""

    AUTO = "auto"
    MODERN = MODERN_VERSION
    HANDSHAKE = LATEST_HANDSHAKE


class PinningMode(str, enum.Enum):
    """Tool pinning (docs/pinning.md): what happens to a tool whose definition changed since it was approved.
    `hold`: left out of tools/list and refused on call until an admin approves; `flag`: listed, marked in its
    `_meta` and logged; `off`: not pinned."""

    HOLD = "hold"
    FLAG = "flag"
    OFF = "off"


class SessionSharing(str, enum.Enum):
    """Whose upstream session a call travels on when its credential does not already set it apart (`none`,
    `static`). `shared`: one session for every caller (one process for stdio), the cheap default;
    `per_user`: one per caller, for servers that keep per-client state a user must not see another's of
    (roots, logging toggles, subscriptions): at most the pool's bound of per-identity sessions per upstream, the
    least recently used closed first."""

    SHARED = "shared"
    PER_USER = "per_user"


class ListSharing(str, enum.Enum):
    """Whose tools/prompts/resources lists of an upstream a caller is shown (catalog/lists.py). `per_caller`:
    one list per caller's credential (its identity), fetched with it: for servers whose list depends on who
    asks (a user's own configured actions, a tenant's tools); the default for `oauth`, `passthrough`,
    `forwarded` and `exchange`. `shared`: one list, fetched with the first caller's credential and shown to
    everyone (grants still filter it): the default for `none` and `static`, and for an upstream an admin knows
    lists the same for everyone (one fetch instead of one per caller)."""

    SHARED = "shared"
    PER_CALLER = "per_caller"


# ---- outbound credentials: how the gateway authenticates to an upstream ------------------------------
#
# A tagged union on `mode`, resolved by one exhaustive `match` (outbound/resolver.py). Secret values are
# `${ENV}` references or `secret:NAME` (the encrypted store, `manifold secrets set NAME`).


class AuthMode(str, enum.Enum):
    NONE = "none"
    STATIC = "static"
    OAUTH = "oauth"
    PASSTHROUGH = "passthrough"
    FORWARDED = "forwarded"
    EXCHANGE = "exchange"


class NoAuth(Strict):
    """Nothing but the upstream's fixed `headers` (if any)."""

    mode: Literal[AuthMode.NONE] = AuthMode.NONE


class StaticAuth(Strict):
    """Fixed credentials shared by every caller: a bearer token and/or headers."""

    mode: Literal[AuthMode.STATIC]
    bearer: str | None = None  # sent as `Authorization: Bearer <bearer>`
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _something(self) -> StaticAuth:
        if not self.bearer and not self.headers:
            raise ValueError("a static auth needs 'bearer' or 'headers'")
        return self


class OAuthAuth(Strict):
    """Per-user OAuth 2.1: each user connects once in the browser; the gateway stores and refreshes tokens.

    Leave the endpoints out to discover them from the upstream (its 401 → RFC 9728 → RFC 8414 / OIDC) and
    the client out to register dynamically where the authorization server offers it."""

    mode: Literal[AuthMode.OAUTH]
    client_id: str | None = None
    client_secret: str | None = None
    issuer: str | None = None  # the authorization server (its metadata is fetched when endpoints are absent)
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    revocation_endpoint: str | None = None
    scopes: list[str] = Field(default_factory=list)
    resource: str | None = None  # RFC 8707 resource; default: the upstream's URL
    extra_authorize_params: dict[str, str] = Field(default_factory=dict)  # e.g. access_type: offline
    # Discovery URLs are untrusted: https only, public addresses only. This allows http and loopback targets
    # (development and tests); never turn it on for upstreams you do not run yourself.
    allow_insecure_discovery: bool = False
    refresh_margin_seconds: Annotated[float, Field(ge=0)] = 60.0  # refresh this long before expiry


class PassthroughAuth(Strict):
    """The caller's own validated token goes upstream, only when its audience includes `audience`."""

    mode: Literal[AuthMode.PASSTHROUGH]
    audience: str


class ForwardedAuth(Strict):
    """Headers the client sends in `x-mcp-headers`, limited to the names listed here."""

    mode: Literal[AuthMode.FORWARDED]
    allow: list[str]

    @field_validator("allow")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            check_allowed_name(name)
        if not v:
            raise ValueError("list at least one header name")
        return v


class ExchangeAuth(Strict):
    """RFC 8693: the caller's token is exchanged at `token_endpoint` for one whose audience is the upstream."""

    mode: Literal[AuthMode.EXCHANGE]
    token_endpoint: str
    audience: str
    client_id: str
    client_secret: str | None = None
    scopes: list[str] = Field(default_factory=list)
    resource: str | None = None
    allow_insecure: bool = False  # http / loopback token endpoint (development and tests)


UpstreamAuth = Annotated[
    NoAuth | StaticAuth | OAuthAuth | PassthroughAuth | ForwardedAuth | ExchangeAuth, Field(discriminator="mode")
]


def check_http_url(v: str) -> str:
    """An upstream's `url`: `http(s)://host[:port]/...`, usable as written. A URL without a host, with a port
    outside 1-65535 or with whitespace was accepted and failed at first use (outside probe: `http://`,
    `http://exa mple.com:99999/mcp` reached the connection as a traceback and callers got a ValueError)."""
    if not re.match(r"^https?://", v):
        raise ValueError("'url' must start with http:// or https://")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in v):
        raise ValueError("'url' must not contain spaces or control characters (write a space as %20)")
    try:
        parts = urlsplit(v)
        parts.port  # noqa: B018 — raises for what the checks below do not name
    except ValueError:
        parts = None
    hostport = re.split(r"[/?#]", v.split("://", 1)[1], maxsplit=1)[0].rpartition("@")[2]
    port = hostport.rpartition(":")[2] if ":" in hostport and not hostport.endswith("]") else ""
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise ValueError(
            f"'url' has port '{port[:20]}': write a port from 1 to 65535, or none for the scheme's default"
        )
    if "\\" in hostport:
        raise ValueError("'url' must not contain a backslash before its path")
    if parts is None:
        raise ValueError("'url' is not a valid URL: write http(s)://host[:port]/path (an IPv6 host in brackets)")
    if not parts.hostname:
        raise ValueError("'url' has no host: write http(s)://host[:port]/path")
    return v


class UpstreamConfig(Strict):
    """One upstream MCP server. Its id is the key under `upstreams:`."""

    transport: Transport
    # http / sse / openapi
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)  # static outbound headers (values may be ${ENV})
    # openapi: the OpenAPI document, a file (relative to the config file's folder) or an http(s) URL;
    # `url` is then the REST API's base (default: the document's servers[0])
    spec: str | None = None
    # openapi: the largest REST response body (and fetched document) read; a larger one is a tool error
    max_response_bytes: Annotated[int, Field(gt=0)] = 8 * 1024 * 1024
    # stdio
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None
    # how the gateway authenticates to it (default: no credentials)
    auth: UpstreamAuth = Field(default_factory=NoAuth)
    # behaviour
    protocol: ProtocolChoice = ProtocolChoice.AUTO
    connect_timeout: Annotated[float, Field(gt=0)] = 10.0
    call_timeout: Annotated[float, Field(gt=0)] = 60.0
    # /readyz answers 503 while a required upstream is down; an optional one is only reported.
    required: bool = True
    description: str | None = None
    # Tool pinning (docs/pinning.md): a tool's definition is approved on first sight; a later change is held.
    pinning: PinningMode = PinningMode.HOLD
    sessions: SessionSharing = SessionSharing.SHARED
    # Whose lists a caller is shown (ListSharing); unset: `per_caller_lists` decides by the auth mode.
    lists: ListSharing | None = None

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        # Checked here rather than in `_transport_fields` so that the problem names `headers` and its line.
        if v and info.data.get("transport") is Transport.STDIO:
            raise ValueError(
                "'headers' are sent to http, sse and openapi upstreams; a stdio upstream gets none "
                "(give it values through 'env')"
            )
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None, info: ValidationInfo) -> str | None:
        # Here rather than in `_transport_fields`, so that the problem names `url` and its line. A stdio
        # upstream's `url` is refused there ("'url' is for http, sse and openapi upstreams").
        if v is not None and info.data.get("transport") is not Transport.STDIO:
            check_http_url(v)
        return v

    @model_validator(mode="after")
    def _transport_fields(self) -> UpstreamConfig:
        if self.spec is not None and self.transport is not Transport.OPENAPI:
            raise ValueError("'spec' is for openapi upstreams")
        if self.transport is Transport.STDIO:
            if not self.command:
                raise ValueError("a stdio upstream needs 'command'")
            if self.url:
                raise ValueError("'url' is for http, sse and openapi upstreams; a stdio upstream has 'command'")
        elif self.transport is Transport.OPENAPI:
            if not self.spec:
                raise ValueError("an openapi upstream needs 'spec' (a file or an http(s) URL of its OpenAPI document)")
            if not self.url and self.auth.mode is AuthMode.OAUTH:
                raise ValueError("an openapi upstream with auth mode oauth needs 'url' (the API the tokens are for)")
            if self.command or self.args or self.env or self.cwd:
                raise ValueError("'command', 'args', 'env' and 'cwd' are for stdio upstreams")
        else:
            if not self.url:
                raise ValueError(f"an {self.transport.value} upstream needs 'url'")
            if self.command or self.args or self.env or self.cwd:
                raise ValueError("'command', 'args', 'env' and 'cwd' are for stdio upstreams")
        if self.transport is Transport.STDIO and self.auth.mode not in (AuthMode.NONE,):
            raise ValueError(
                "a stdio upstream takes credentials through 'env'; 'auth' is for http/sse upstreams (and openapi ones)"
            )
        return self


# The auth modes that give each caller a credential of their own: an upstream may list differently for each.
PER_CALLER_AUTH = frozenset({AuthMode.OAUTH, AuthMode.PASSTHROUGH, AuthMode.FORWARDED, AuthMode.EXCHANGE})


def per_caller_lists(config: UpstreamConfig) -> bool:
    """Whether the upstream's lists are kept per caller: its `lists`, or by default whether its auth mode gives
    each caller their own credential (`static` and `none` send the same one for everyone, so their lists are
    shared, `sessions: per_user` or not)."""
    if config.lists is not None:
        return config.lists is ListSharing.PER_CALLER
    return config.auth.mode in PER_CALLER_AUTH


class LimitsSettings(Strict):
    """What one caller can make the gateway hold. Reaching a limit refuses the newcomer (HTTP 429 or a
    JSON-RPC error); it never evicts or slows anyone else. docs/configuration.md explains each."""

    # 2025-11-25 client sessions one principal may hold open at once (across all servers).
    sessions_per_principal: Annotated[int, Field(gt=0)] = 200
    # Client sessions of everyone together: a ceiling on memory, never reached by evicting someone.
    sessions_total: Annotated[int, Field(gt=0)] = 20_000
    # Notification streams one principal may hold open at once (GET streams, SSE, subscriptions/listen).
    streams_per_principal: Annotated[int, Field(gt=0)] = 64
    # Bytes waiting to be written to one stream whose client does not read; past this the stream ends.
    queued_bytes_per_stream: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024
    # How deep a request's JSON may nest (objects and arrays), e.g. a tool's arguments.
    json_depth: Annotated[int, Field(gt=0, le=200)] = 64
    # A JSON-RPC id: a string of at most this many characters, or an integer within ±2^53.
    id_length: Annotated[int, Field(gt=0, le=4096)] = 256
    # How long an upstream's server→client request (sampling, elicitation, roots) waits for the client's
    # answer, and how long a 2026-07-28 client may take to come back with it (its call stays parked).
    client_reply_seconds: Annotated[float, Field(gt=0, le=3600)] = 300.0
    # Calls of one principal parked at once while a 2026-07-28 client answers a handshake-era upstream.
    waiting_for_input_per_principal: Annotated[int, Field(gt=0)] = 64
    # Tasks (2026-07-28 tasks extension, run by the gateway) one principal may have at once, running or kept.
    tasks_per_principal: Annotated[int, Field(gt=0)] = 64
    # Approval requests (docs/approvals.md) one principal may have waiting at once; past it a gated call fails.
    approvals_pending_per_principal: Annotated[int, Field(gt=0, le=10_000)] = 20
    # How long a finished task's outcome is kept for `tasks/get` (its `ttlMs`), then dropped.
    task_retention_seconds: Annotated[float, Field(gt=0, le=86400)] = 600.0
    # Requests one legacy-SSE session (/sse) may have running at once. Its POSTs are answered 202 before the
    # work is done, so without a bound a client could queue any number of calls (and their bodies) in the
    # gateway; past it the next POST's 202 waits until one of them finishes.
    requests_in_flight_per_sse_session: Annotated[int, Field(gt=0, le=10_000)] = 16
    # A request's line and headers at most (`manifold serve`, asgi.py): past it 431 and the connection closed.
    request_head_bytes: Annotated[int, Field(ge=4096, le=16 * 1024 * 1024)] = 64 * 1024
    # Seconds a request's line and headers may take from the connection (or the request's first byte): past it
    # 408 and the connection closed, so silent or trickling connections cannot pile up (`manifold serve`).
    request_head_seconds: Annotated[float, Field(gt=0, le=600)] = 20.0
    # Seconds a request's body may take after its head: past it 408 (or, if already answered, just the close)
    # and the connection closed, so a body trickling in a byte at a time cannot hold a connection (`manifold serve`).
    request_body_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # Client connections held at once (`manifold serve`): one more is answered 503 and closed. Each costs a file
    # and some memory (a held 2025-11-25 stream ~8 kB): bounded, so idle connections cannot pile up.
    connections: Annotated[int, Field(ge=16, le=1_000_000)] = 20_000
    # Rate-limit buckets held in memory at once (one per rule and principal/server/tool it counts); full
    # buckets are dropped first, so reaching it never refuses anyone (docs/rate-limits.md).
    rate_limit_buckets: Annotated[int, Field(gt=0)] = 100_000


def _allowed_host(v: str) -> str:
    if configured_host(v) is None:
        raise ValueError(
            f"'{v}' is not a host: write a DNS name, an IPv4 address or an IPv6 address, optionally with :port "
            "(no wildcards, no scheme or path; each name is listed on its own)"
        )
    return v


def _allowed_origin(v: str) -> str:
    if configured_origin(v) is None:
        raise ValueError(
            f"'{v}' is not an origin: write scheme://host[:port], e.g. https://app.example.com "
            "(no wildcards, no path; each origin is listed on its own)"
        )
    return v


AllowedHost = Annotated[str, AfterValidator(_allowed_host)]
AllowedOrigin = Annotated[str, AfterValidator(_allowed_origin)]


# The databases the gateway opens: store/db.py gives the plain forms their async driver (asyncpg, aiosqlite).
DATABASE_SCHEMES = ("sqlite", "sqlite+aiosqlite", "postgresql", "postgres", "postgresql+asyncpg")
_DATABASE_FORMS = (
    "sqlite:///PATH (relative) or sqlite:////PATH (absolute) or postgresql://user:password@host:5432/dbname"
)


def check_database_url(v: str) -> str:
    """`gateway.database_url`: SQLite or PostgreSQL. Any other scheme was passed to SQLAlchemy as written and
    failed at start-up with a traceback (`mysql://`: no module MySQLdb). The value is never quoted: it may
    carry a password."""
    if not v:
        raise ValueError(f"is empty; leave it out for the SQLite database under state_dir, or write {_DATABASE_FORMS}")
    scheme, sep, rest = v.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+._-]*", scheme):
        raise ValueError(f"is not a database URL; write {_DATABASE_FORMS}")
    if scheme not in DATABASE_SCHEMES:
        raise ValueError(
            f"database '{scheme[:40]}' is not supported: the gateway uses SQLite or PostgreSQL, {_DATABASE_FORMS} "
            f"(schemes {', '.join(DATABASE_SCHEMES)})"
        )
    if scheme.startswith("sqlite") and rest and not rest.startswith("/"):
        raise ValueError("an SQLite URL names no host: write sqlite:///PATH (relative) or sqlite:////PATH (absolute)")
    return v


class GatewaySettings(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8470
    # The absolute origin clients reach the gateway at (used in URLs the gateway prints or returns).
    public_url: str | None = None
    state_dir: Path = Path(".manifold")
    database_url: str | None = None  # default: sqlite+aiosqlite:///{state_dir}/manifold.db
    virtual_servers_dir: Path = Path("virtual_servers")
    # Apply changes to the files' upstreams, groups and virtual servers while running (runtime/file_watch.py).
    watch_files: bool = True
    # DNS-rebinding protection: loopback hosts/origins are always allowed; add public names here.
    allowed_hosts: list[AllowedHost] = Field(default_factory=list)
    allowed_origins: list[AllowedOrigin] = Field(default_factory=list)
    max_body_bytes: Annotated[int, Field(gt=0)] = 4 * 1024 * 1024
    stateless: bool = False  # 2025-11-25 clients get no Mcp-Session-Id (2026-07-28 is always sessionless)
    namespace_separator: str = "__"
    tool_list_ttl_seconds: Annotated[float, Field(ge=0)] = 300.0
    # Serving without a key is allowed only on loopback, and only when explicitly chosen.
    allow_unauthenticated: bool = False
    # On SIGTERM / Ctrl-C: how long calls in flight may run on before they are cut (held streams end at once).
    shutdown_grace_seconds: Annotated[float, Field(ge=0, le=3600)] = 3.0
    limits: LimitsSettings = Field(default_factory=LimitsSettings)

    @field_validator("namespace_separator")
    @classmethod
    def _separator(cls, v: str) -> str:
        return check_separator(v)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        return v if v is None else check_database_url(v)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("'public_url' must be an absolute http:// or https:// URL")
        return v.rstrip("/")  # URLs are built as public_url + "/mcp/..."


# ---- identity, grants, audit ----------------------------------------------------------------------

# Algorithms an IdP may sign with. HMAC (HS*) is never accepted: with a JWKS, a "shared secret" is the
# public key, and an attacker who knows it can sign (the classic RS256→HS256 confusion). `none` never.
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class ClaimMapping(Strict):
    """Which token claims give the principal's subject, email and teams."""

    subject: str = "sub"
    email: str = "email"
    groups: str = "groups"  # a list (or a space-separated string) of team names


class ExternalIdentity(Strict):
    """Admits tokens whose claims match, for callers with no account on the gateway (end customers).

    `match` values are exact; a list means "any of these". The principal id is `ext:<idp>:<name>:<subject>`
    and the principal gets `teams` in addition to those from the groups claim."""

    name: Annotated[str, AfterValidator(_slug_id)]
    match: dict[str, str | list[str]]
    teams: list[str] = Field(default_factory=list)

    @field_validator("match")
    @classmethod
    def _nonempty(cls, v: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        if not v:
            raise ValueError("an external identity needs at least one claim to match")
        return v


class IdpConfig(Strict):
    """An external identity provider whose JWTs the gateway accepts. Its id is the key under `idps:`."""

    issuer: str
    jwks_uri: str | None = None  # default: `jwks_uri` from {issuer}/.well-known/openid-configuration
    audience: list[str]  # the token's `aud` must contain one of these
    algorithms: list[str] = Field(default_factory=lambda: ["RS256"])
    clock_skew_seconds: Annotated[float, Field(ge=0, le=600)] = 60.0
    claims: ClaimMapping = Field(default_factory=ClaimMapping)
    # Tokens whose claims match no entry here are refused when `external_only` is true; otherwise they
    # are admitted as users (`user:<email>`, or `user:<idp>:<subject>` without one; docs/identity.md).
    external: list[ExternalIdentity] = Field(default_factory=list)
    external_only: bool = False
    # An IdP names users and their teams, so it can act as any user of the gateway. Limit that for an IdP
    # you do not fully trust: only emails in these domains name a user (others become `<idp>:<subject>`),
    # and the groups claim gives no teams unless `teams_from_groups` is on.
    user_domains: list[str] = Field(default_factory=list)  # empty: every verified email
    teams_from_groups: bool = True
    # A JWKS/discovery fetch is retried on an unknown `kid` at most this often.
    jwks_min_refresh_seconds: Annotated[float, Field(ge=0)] = 30.0

    @field_validator("audience", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("list at least one algorithm")
        for alg in v:
            if alg not in ASYMMETRIC_ALGORITHMS:
                raise ValueError(
                    f"algorithm '{alg}' is not allowed (use one of {', '.join(ASYMMETRIC_ALGORITHMS)}; "
                    "'none' and HMAC algorithms are refused)"
                )
        return v

    @field_validator("issuer", "jwks_uri")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an absolute http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _external_only(self) -> IdpConfig:
        if self.external_only and not self.external:
            raise ValueError("'external_only' needs at least one entry under 'external'")
        return self


class WebLoginConfig(Strict):
    """Signing in to the gateway's web pages (connect, connections) with an IdP's OpenID Connect login
    (web/oidc_login.py). The client is registered at that IdP with the redirect URI
    `<public_url>/login/callback`; the person is named as the IdP's tokens name them (its `claims` mapping)."""

    idp: str  # a key of identity.idps
    client_id: str
    client_secret: str | None = None  # none: a public client (PKCE only)
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])

    @field_validator("scopes")
    @classmethod
    def _openid(cls, v: list[str]) -> list[str]:
        if "openid" not in v:
            raise ValueError("must include 'openid'")
        return v


# A client's redirect URI: https, http on a loopback address (any port), or a native app's private-use scheme.
_REDIRECT_URI = re.compile(
    r"^(https://[^/\s]+|http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/|[a-z][a-z0-9+.-]*\.[a-z0-9+.-]+:/)"
)


class OAuthClientConfig(Strict):
    """A confidential client registered by configuration (a third-party app), at the gateway's own
    authorization server (authserver/). Its id is the key under `authorization_server.clients`."""

    name: str | None = None
    client_secret: str  # a value or `secret:NAME`
    redirect_uris: Annotated[list[str], Field(min_length=1)]

    @field_validator("redirect_uris")
    @classmethod
    def _redirect_uris(cls, v: list[str]) -> list[str]:
        for uri in v:
            if "#" in uri or not _REDIRECT_URI.match(uri):
                raise ValueError(
                    f"redirect URI {uri[:200]!r} must be https, http on loopback, or an app's private-use scheme "
                    "(com.example.app:/...), without a fragment"
                )
        return v


class AuthorizationServerSettings(Strict):
    """The gateway as the OAuth 2.1 authorization server of its own MCP endpoints (docs/gateway-oauth.md):
    MCP clients sign in through the web sign-in and get short-lived access tokens for one server."""

    enabled: bool = True
    access_token_seconds: Annotated[int, Field(ge=30, le=86_400)] = 900
    refresh_token_days: Annotated[float, Field(gt=0, le=365)] = 30.0
    # A rotated refresh token presented again by the same client this soon after is another connection of
    # that application refreshing at the same moment (IDE windows, Inspector connections sharing one
    # sign-in), served on the same sign-in; later, or by another client, it is a stolen copy and the sign-in
    # is revoked. 0: every reuse revokes.
    refresh_token_reuse_seconds: Annotated[float, Field(ge=0, le=300)] = 30.0
    code_seconds: Annotated[int, Field(ge=1, le=600)] = 60
    # Clients may register themselves (RFC 7591). Client ID Metadata Documents are always accepted.
    dynamic_registration: bool = True
    # Registrations from one address per minute (registration is open and unauthenticated); a registered
    # client that never signed anyone in is forgotten after a day.
    registrations_per_minute: Annotated[int, Field(gt=0)] = 20
    # Client ID Metadata Documents (and their redirect URIs) on http or a loopback/private address: for
    # development and tests only.
    allow_insecure_client_urls: bool = False
    clients: dict[str, OAuthClientConfig] = Field(default_factory=dict)


class IdentitySettings(Strict):
    idps: dict[SlugKey, IdpConfig] = Field(default_factory=dict)
    # The gateway's own authorization server for its MCP endpoints (authserver/).
    authorization_server: AuthorizationServerSettings = Field(default_factory=AuthorizationServerSettings)
    # Principals (selectors as in grants: user:, team:, sa:) that may use /admin/api and admin CLI commands.
    admins: list[str] = Field(default_factory=list)
    # Validated API keys and JWTs are cached this long (a revoked key still fails on the very next request:
    # revocation invalidates the cache).
    cache_seconds: Annotated[float, Field(ge=0, le=3600)] = 60.0
    # Web sign-in through an IdP, besides the API-key form (web/sign_in.py).
    web_login: WebLoginConfig | None = None

    @model_validator(mode="after")
    def _web_login_idp(self) -> IdentitySettings:
        if self.web_login is not None and self.web_login.idp not in self.idps:
            raise ValueError(f"web_login.idp '{self.web_login.idp}' is not one of identity.idps")
        return self


class UserConfig(Strict):
    email: str | None = None
    teams: list[str] = Field(default_factory=list)


class ServiceAccountConfig(Strict):
    description: str | None = None
    teams: list[str] = Field(default_factory=list)


class GrantConfig(Strict):
    """Who may use what. `who`: `user:<email|subject>`, `team:<id>`, `sa:<id>`, `idp:<id>`, `authenticated`.
    `claims` (only with `idp:`) narrows to tokens whose claims match. `what`: `server:<upstream>`,
    `group:<id>`, `vserver:<id>`, `tool:<upstream>/<tool glob>` (ids may be globs too)."""

    who: str
    claims: dict[str, str | list[str]] = Field(default_factory=dict)
    what: list[str]
    description: str | None = None
    # The human approval gate (docs/approvals.md): calls to these tools (`tool:`/`server:`/`group:`/`vserver:`
    # selectors) wait until one of `approvers` (a `who` selector) approves them in the browser.
    require_approval: list[str] = Field(default_factory=list)
    approvers: str | None = None
    approval_timeout_seconds: Annotated[float, Field(gt=0, le=7 * 86400)] = 900.0  # a pending request expires
    approval_valid_seconds: Annotated[float, Field(ge=0, le=7 * 86400)] = 0.0  # 0: one approval, one call
    self_approval: bool = False  # may the caller approve their own request (if they are an approver)?


# `rate: <count>/<unit>`: the units a rate or quota may be written in, and their length in seconds.
RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")


def parse_rate(text: str) -> tuple[int, float]:
    """`10/s`, `600/min`, `5000/day` -> (count, window seconds); ValueError naming the accepted forms."""
    m = _RATE_RE.match(text)
    if m is None or m.group(2) not in RATE_UNITS or int(m.group(1)) <= 0:
        raise ValueError(f"'{text}' is not a rate; write <count>/<unit>: a count > 0, a unit of s, min, hour, day")
    return int(m.group(1)), float(RATE_UNITS[m.group(2)])


class RateLimitConfig(Strict):
    """One rule of `rate_limits:` (docs/rate-limits.md): calls matching `who` and `what` draw from a token
    bucket of `burst` tokens refilled at `rate`; `per` says whose calls share one bucket."""

    id: SlugKey | None = None  # default: rate_limits[<index>]
    who: str = "anyone"  # a grant's principal selector
    what: str | None = None  # a grant's resource selector (server:, group:, vserver:, tool:); none: every request
    rate: str  # <count>/<s|min|hour|day>
    burst: Annotated[int, Field(gt=0)] | None = None  # bucket size; default: the rate's count
    per: list[Literal["principal", "server", "tool"]] = Field(default_factory=lambda: ["principal"])
    description: str | None = None

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: str) -> str:
        parse_rate(v)
        return v


class AuditSettings(Strict):
    enabled: bool = True
    retention_days: Annotated[float, Field(gt=0)] = 90.0
    jsonl_path: Path | None = None  # also append every event as one JSON line here (relative: to state_dir)
    include_arguments: bool = False  # tool arguments are stored only when this is on


class MetricsSettings(Strict):
    """`telemetry.metrics` (docs/telemetry.md): Prometheus `/metrics`, for admins or this bearer token."""

    enabled: bool = True
    token: str | None = None  # a value, `${ENV}` or `secret:NAME`; scrapers send `Authorization: Bearer <token>`
    # Distinct (server, member, tool) label sets at most; past it new ones count under tool="other".
    max_tool_series: Annotated[int, Field(gt=0, le=100_000)] = 5000


class TracingSettings(Strict):
    """`telemetry.tracing`: OpenTelemetry spans sent to an OTLP/HTTP collector. Off unless `endpoint` is set."""

    endpoint: str | None = None  # e.g. http://127.0.0.1:4318 (spans go to {endpoint}/v1/traces)
    protocol: Literal["http/protobuf"] = "http/protobuf"
    service_name: str = "manifold"
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0  # of traces the gateway starts; a client's flag wins
    headers: dict[str, str] = Field(default_factory=dict)  # sent to the collector (values may be ${ENV})
    batch_delay_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0  # how often finished spans are exported
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0  # one export, retries included; also bounds shutdown
    # Finished spans waiting for export at most; past it the oldest are dropped (and counted in the log).
    max_queued_spans: Annotated[int, Field(gt=0, le=1_000_000)] = 20_000

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("'endpoint' must be an absolute http:// or https:// URL")
        return v.rstrip("/") if v is not None else v


class TelemetrySettings(Strict):
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    logs: Literal["text", "json"] = "text"  # json: one JSON object per line, with request and trace ids


class GatewayConfig(Strict):
    """`manifold.yaml`."""

    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    upstreams: dict[SlugKey, UpstreamConfig] = Field(default_factory=dict)
    groups: dict[SlugKey, list[str]] = Field(default_factory=dict)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    users: dict[str, UserConfig] = Field(default_factory=dict)  # keyed by email or IdP subject
    teams: dict[SlugKey, str | None] = Field(default_factory=dict)  # team id -> description
    service_accounts: dict[SlugKey, ServiceAccountConfig] = Field(default_factory=dict)
    grants: list[GrantConfig] = Field(default_factory=list)
    rate_limits: list[RateLimitConfig] = Field(default_factory=list)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)


def _glob(v: str) -> str:
    """A tool name or shell-style pattern (fnmatch): not empty, every `[` closed (fnmatch would otherwise
    match the `[` literally, which is never what was meant)."""
    if not v.strip():
        raise ValueError("a tool name or pattern must not be empty")
    i = 0
    while i < len(v):
        if v[i] == "[":
            j = i + 1
            if j < len(v) and v[j] == "!":
                j += 1
            if j < len(v) and v[j] == "]":
                j += 1
            while j < len(v) and v[j] != "]":
                j += 1
            if j >= len(v):
                raise ValueError(f"pattern '{v}' opens a '[' that is never closed (a literal '[' is written '[[]')")
            i = j
        i += 1
    return v


Glob = Annotated[str, AfterValidator(_glob)]


class MemberConfig(Strict):
    """One upstream inside a virtual server."""

    upstream: str
    id: str | None = None  # member id: namespace prefix and x-mcp-headers key; default = upstream id
    tools: list[Glob] = Field(default_factory=lambda: ["*"])  # exact names or globs ("*", "create_*")
    hide: list[Glob] = Field(default_factory=list)  # names or globs removed after selection
    aliases: dict[str, str] = Field(default_factory=dict)  # upstream tool name -> exposed (un-prefixed) name
    descriptions: dict[str, str] = Field(default_factory=dict)  # upstream tool name -> description override
    resources: bool = True
    prompts: bool = True

    @property
    def member_id(self) -> str:
        return self.id or self.upstream

    @field_validator("id")
    @classmethod
    def _slug_id(cls, v: str | None) -> str | None:
        if v is not None and not SLUG_RE.match(v):
            raise ValueError(f"member id '{v}' must match {SLUG}")
        return v


# The tools a virtual server with `tool_search` on shows instead of its members' tools (docs/tool-search.md).
SEARCH_TOOLS = "search_tools"
CALL_TOOL = "call_tool"
TOOL_SEARCH_NAMES = frozenset({SEARCH_TOOLS, CALL_TOOL})


class ToolSearchConfig(Strict):
    """`tool_search:` of a virtual server (`true` is `{mode: search}`): tools/list shows `search_tools` and
    `call_tool` instead of the members' tools; every allowed tool stays callable by its name."""

    mode: Literal["search"] = "search"
    max_results: Annotated[int, Field(ge=1, le=50)] = 10
    # 2025-11-25 sessions: found tools join that session's tools/list (list_changed is sent), up to this many
    # (the oldest found leave first); 0: the list stays the two tools
    reveal_max: Annotated[int, Field(ge=0, le=1000)] = 100


class VirtualServerConfig(Strict):
    """`virtual_servers/<id>.yaml`. The id defaults to the file name without `.yaml`."""

    id: str | None = None
    description: str | None = None
    namespace: bool = True  # False keeps original names where they do not collide
    separator: str | None = None  # default: gateway.namespace_separator
    members: list[MemberConfig]
    tool_search: ToolSearchConfig | None = None  # docs/tool-search.md

    @field_validator("tool_search", mode="before")
    @classmethod
    def _tool_search(cls, v: object) -> object:
        if v is True:
            return {}
        return None if v is False else v

    @field_validator("separator")
    @classmethod
    def _separator(cls, v: str | None) -> str | None:
        return None if v is None else check_separator(v)

    @field_validator("members")
    @classmethod
    def _members(cls, v: list[MemberConfig]) -> list[MemberConfig]:
        if not v:
            raise ValueError("a virtual server needs at least one member")
        seen: set[str] = set()
        for m in v:
            if m.member_id in seen:
                raise ValueError(f"member id '{m.member_id}' appears twice")
            seen.add(m.member_id)
        return v
