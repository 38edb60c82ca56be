"""The authorization server's endpoints, as one ASGI app (app.py routes these paths here):

    GET  /.well-known/oauth-authorization-server    RFC 8414 metadata (also /.well-known/openid-configuration)
    GET  /.well-known/jwks.json                     the public keys access tokens are signed with
    GET  /authorize                                 → sign-in (web), consent page, or straight back with a code
    POST /authorize                                 the consent form (CSRF token bound to the web session)
    POST /token                                     authorization_code, refresh_token
    POST /register                                  RFC 7591
    POST /revoke                                    RFC 7009

Who signs in is the web sign-in's business (web/sign_in.py: an API key, or the IdP of
`identity.web_login`): without a session, /authorize sends the browser to /login and back. An error that
cannot safely go back to the client (unknown client, unregistered redirect URI) is a page; any other goes
back to the client's redirect URI with `error`, `state` and `iss`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import cast
from urllib.parse import unquote, urlencode, urlsplit

import orjson
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.errors import AccessDeniedError, InsecureTransportError, OAuth2Error
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Receive as StarletteReceive
from starlette.types import Scope as StarletteScope
from starlette.types import Send as StarletteSend

from manifold.asgi import Receive, Scope, Send
from manifold.authserver import consent as consent_page
from manifold.authserver.clients import (
    ClientProblem,
    ClientRegistry,
    GatewayClient,
    is_cimd_url,
    redirect_uri_allowed,
    split_url,
)
from manifold.authserver.server import (
    Answer,
    CodeRecord,
    Exchange,
    FormRequest,
    GatewayServer,
    JsonBody,
    RefreshRecord,
    SignedIn,
    access_token_grant,
    successors,
)
from manifold.authserver.store import AuthStore, RefreshRow, digest
from manifold.config.models import AuthorizationServerSettings, GatewaySettings
from manifold.identity.api_keys import KeyRepository
from manifold.identity.gateway_tokens import GatewayTokens, server_of_resource
from manifold.security.origin import OriginPolicy
from manifold.security.signing import SigningKeys
from manifold.web import csrf
from manifold.web.forms import BodyTooLarge, TooManyFields, form_fields, read_body
from manifold.web.page_request import viewer
from manifold.web.responses import page
from manifold.web.session import SessionCookies, WebSession
from manifold.web.signed_out import SignedOut

log = logging.getLogger(__name__)

PATHS = frozenset(
    {
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
        "/authorize",
        "/token",
        "/register",
        "/revoke",
    }
)
# Parameters of an authorization request that may appear only once (RFC 6749 §3.1).
SINGLE = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "resource",
)
OAUTH_FIELDS = frozenset(SINGLE)
VSCHAR = re.compile(r"[\x20-\x7e]*")  # RFC 6749 Appendix A: what an authorization request's values may hold
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
CORS = {"access-control-allow-origin": "*"}  # metadata, token, registration, revocation: called from apps
# JSON that echoes what a client sent (a registration's client_name) is never to be read as a page.
NOSNIFF = {"x-content-type-options": "nosniff"}
PREFLIGHT = {
    **CORS,
    "access-control-allow-methods": "GET, POST",
    "access-control-allow-headers": "authorization, content-type, mcp-protocol-version",
    "access-control-max-age": "600",
}
MAX_FIELDS = 50
# RFC 7591 §2 metadata of these types, checked before Authlib (which takes a number for a scope and fails).
STRING_METADATA = (
    "client_name",
    "client_uri",
    "logo_uri",
    "tos_uri",
    "policy_uri",
    "jwks_uri",
    "scope",
    "software_id",
    "software_version",
    "token_endpoint_auth_method",
)
LIST_METADATA = ("grant_types", "response_types", "contacts")
OBJECT_METADATA = ("jwks",)
Sync = Callable[[], Awaitable[None]]
KnownServer = Callable[[str], bool]
# (the signed-in session, server id) -> may its person use that server (grants, as its MCP endpoint decides)
MayUseServer = Callable[[WebSession, str], Awaitable[bool]]


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={**CORS, **NOSNIFF, **(headers or {})},
    )


def _lower(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Authlib's header names as one spelling, so ours replace rather than repeat them (one Cache-Control)."""
    return {name.lower(): value for name, value in headers}


def _oauth_error(status: int, error: str, description: str) -> Response:
    return _json(status, {"error": error, "error_description": description}, NO_STORE)


class AuthorizationServerApp:
    def __init__(
        self,
        *,
        settings: GatewaySettings,
        server_settings: AuthorizationServerSettings,
        store: AuthStore,
        clients: ClientRegistry,
        signing: SigningKeys,
        keys: KeyRepository,
        cookies: SessionCookies,
        known_server: KnownServer,
        may_use_server: MayUseServer,
        sync: Sync,
    ) -> None:
        self.public_url = settings.public_url
        self.max_body = settings.max_body_bytes
        self.origin = OriginPolicy.from_settings(settings)
        self.settings = server_settings
        self.store = store
        self.clients = clients
        self.signing = signing
        self.keys = keys
        self.known_server = known_server
        self.may_use_server = may_use_server
        self.sync = sync
        self.registrations = PerMinute(server_settings.registrations_per_minute)
        # A client metadata document is fetched for anyone who names one: each address may make the gateway
        # fetch as many per minute as it may register clients (cached documents are not fetched again).
        self.documents = PerMinute(server_settings.registrations_per_minute)
        self.cookies = cookies  # the web pages' own (the same sign-in session)
        self.signed_out = SignedOut(store.engine)  # and the same sign-out (web/signed_out.py)
        self.router = Router(
            routes=[
                Route(
                    "/.well-known/oauth-authorization-server",
                    self._guard(self.metadata),
                    methods=["GET", "HEAD", "OPTIONS"],
                ),
                Route(
                    "/.well-known/openid-configuration", self._guard(self.metadata), methods=["GET", "HEAD", "OPTIONS"]
                ),
                Route("/.well-known/jwks.json", self._guard(self.jwks), methods=["GET", "HEAD", "OPTIONS"]),
                Route("/authorize", self._guard(self.authorize), methods=["GET", "HEAD", "POST"]),
                Route("/token", self._guard(self.token), methods=["POST", "OPTIONS"]),
                Route("/register", self._guard(self.register), methods=["POST", "OPTIONS"]),
                Route("/revoke", self._guard(self.revoke), methods=["POST", "OPTIONS"]),
            ],
            redirect_slashes=False,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.router(scope, receive, cast(StarletteSend, send))

    def _guard(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            problem_text = self.origin.check(dict(request.headers.items()))
            if problem_text is not None:
                return _json(403, {"error": "access_denied", "error_description": problem_text})
            if not self.settings.enabled:
                return _json(404, {"error": "not found"})
            if request.method == "OPTIONS":  # a browser-based client's preflight (JSON registration)
                return Response(status_code=204, headers=PREFLIGHT)
            try:
                await self.sync()
                return await handler(request)
            except InsecureTransportError:
                return _oauth_error(400, "invalid_request", "the authorization server needs https (gateway.public_url)")
            except Exception:  # noqa: BLE001 — an OAuth error, never a traceback
                log.exception("authorization server %s failed", request.url.path)
                return _oauth_error(500, "server_error", "the gateway could not answer this request")

        return endpoint

    def issuer(self, request: Request) -> str:
        if self.public_url:
            return self.public_url
        return f"http://{request.headers.get('host') or '127.0.0.1'}"

    def _resources(self, issuer: str) -> KnownServer:
        def known(resource: str) -> bool:
            parts = split_url(resource)  # None: not a URL at all (`http://[zz]/`), so not ours either
            server = server_of_resource(resource) if parts is not None else None
            return (
                parts is not None
                and server is not None
                # Exactly a server's URL as requests name it, the token's audience: `…/mcp/x/`, `…//mcp/x` or
                # `HTTP://…` got tokens no request could ever use (attack probe).
                and resource == f"{issuer}/{parts.path.strip('/').split('/')[0]}/{server}"
                and self.known_server(server)
            )

        return known

    def _server(self, request: Request, exchange: Exchange) -> GatewayServer:
        issuer = self.issuer(request)
        exchange.resources = self._resources(issuer)
        return GatewayServer(issuer, exchange, self.settings, self.signing)

    # ---- discovery ----

    async def metadata(self, request: Request) -> Response:
        body = self._server(request, Exchange()).metadata()
        return _json(200, body, {"cache-control": "max-age=300"})

    async def jwks(self, request: Request) -> Response:
        return _json(200, self.signing.jwks(), {"cache-control": "max-age=300"})

    # ---- the authorization endpoint ----

    async def authorize(self, request: Request) -> Response:
        posted = request.method == "POST"
        if posted:
            refused = csrf.cross_site(request.headers, self.issuer(request))
            if refused is not None:
                return self._page(403, "Not allowed", "access_denied", refused)
            fields = await self._form(request)
            if isinstance(fields, Response):
                return fields
        else:
            items = request.query_params.multi_items()
            if len(items) > MAX_FIELDS:
                return self._page(400, "Not understood", "invalid_request", "too many parameters")
            names = [k for k, _ in items]
            repeated = sorted({k for k in names if k in OAUTH_FIELDS and names.count(k) > 1})
            if repeated:
                return self._page(400, "Not understood", "invalid_request", f"repeated parameter: {repeated[0]}")
            fields = dict(items)
        session, key_servers = await self._signed_in(request)
        oauth = {k: v for k, v in fields.items() if k in OAUTH_FIELDS}
        odd = next((k for k, v in oauth.items() if VSCHAR.fullmatch(v) is None), None)
        if odd is not None:  # RFC 6749 Appendix A: printable ASCII only (Authlib fails on anything else)
            return self._page(
                400, "Not understood", "invalid_request", f"{odd} has characters OAuth does not allow", session
            )
        exchange = Exchange()
        server = self._server(request, exchange)
        try:
            exchange.client = await self._find(request, oauth.get("client_id", ""))
        except ClientProblem as exc:
            return self._page(400, "Unknown application", "invalid_client", str(exc), session)
        redirect_uri = oauth.get("redirect_uri")
        if redirect_uri and not exchange.client.check_redirect_uri(redirect_uri):
            # Said here, not by Authlib: its message quotes the URI, and one holding `\` or `"` (characters an
            # OAuth error may not carry) made it raise ValueError, a 500.
            return self._page(
                400,
                "Cannot sign in this application",
                "invalid_request",
                "the redirect_uri is not one this application registered",
                session,
            )
        oauth_request = FormRequest("GET", str(request.url), oauth, request.headers)
        try:
            grant = server.get_consent_grant(oauth_request, end_user=None)
        except OAuth2Error as error:
            if error.redirect_uri and await self._trusted(exchange.client, session):
                return self._redirect_error(server, error)
            return self._page(
                400,
                "Cannot sign in this application",
                error.error or "invalid_request",
                error.get_error_description(),
                session,
            )
        client = exchange.client
        resource = oauth["resource"]
        if session is None:
            next_url = "/authorize?" + urlencode(oauth)
            return page(303, location="/login?" + urlencode({"next": next_url}))
        principal = session.principal_id
        if not principal.startswith(("user:", "sa:")):
            return self._page(403, "Not allowed", "access_denied", "this account cannot sign in applications", session)
        server_id = server_of_resource(resource) or "?"
        refused: str | None = None
        if key_servers is not None and server_id not in key_servers:
            refused = "the key you signed in with may not use this server"
        elif not await self.may_use_server(session, server_id):
            # Signed in and allowed, the application would only meet 403 on its first request (fastmcp interop):
            # no grant gives this person the server, so nothing is issued for it.
            refused = f"you may not use server '{server_id}'"
        if refused is not None:
            # Told to the application only if it is one this gateway trusts to receive errors (configured, or
            # allowed by this person before); to anyone else the redirect would make the gateway an open
            # redirector, and its promptness would tell whether the person has a grant (review).
            if await self._trusted(client, session):
                error = AccessDeniedError(refused, redirect_uri=grant.redirect_uri)
                error.state = oauth.get("state")
                return self._redirect_error(server, error)
            return self._page(403, "Not allowed", "access_denied", refused, session)
        if posted:
            if not csrf.valid(self.cookies.signer, session.sid, _consent_action(client), fields.get("csrf")):
                return self._page(
                    403,
                    "Not allowed",
                    "access_denied",
                    "The consent form was not from this session; open the application's link again.",
                    session,
                )
            if fields.get("decision") != "allow":
                return self._answer(server.authorization_answer(oauth_request, None, grant))
            await self.store.give_consent(principal, client.client_id, client.name, resource)
        else:
            given = await self.store.consent(principal, client.client_id)
            if given is None or resource not in given.resources:
                body = consent_page.consent(
                    viewer=viewer(self.cookies.signer, session),
                    client_name=client.name,
                    client_id=client.client_id,
                    source=client.source,
                    redirect_host=urlsplit(grant.redirect_uri).netloc or grant.redirect_uri,
                    server_id=server_id,
                    resource=resource,
                    fields=oauth,
                    csrf=csrf.token(self.cookies.signer, session.sid, _consent_action(client)),
                    allowed=given.resources if given is not None else (),
                )
                return page(200, body)
        answer = server.authorization_answer(oauth_request, SignedIn(principal, resource, ""), grant)
        if exchange.new_code is not None:
            code, row = exchange.new_code
            kind, _, ref = session.method.partition(":")
            if kind == "api_key":  # the sign-in lives no longer than the key (identity/gateway_tokens.py)
                row = replace(row, key_id=ref)
            await self.store.save_code(code, row)
            log.info("gateway-oauth: code issued to %s for %s (%s)", client.client_id[:200], principal, server_id)
        return self._answer(answer)

    async def _trusted(self, client: GatewayClient | None, session: WebSession | None) -> bool:
        """Whether a request that failed its checks may go straight back to the client's redirect URI (RFC 9700
        §4.11.2: an authorization server redirects on its own only to a URI it trusts). Registration is open,
        so anyone can register `https://evil.example/` and make a link to this gateway that lands there with
        no click: only a configured client, or one the signed-in person allowed before, is sent its errors;
        for any other the person gets the error as a page."""
        if client is None:
            return False
        if client.source == "configured":
            return True
        return session is not None and await self.store.consent(session.principal_id, client.client_id) is not None

    def _redirect_error(self, server: GatewayServer, error: OAuth2Error) -> Response:
        status, _body, headers = error()
        location = dict(headers).get("Location", "")
        location = add_params_to_uri(location, [("iss", server.issuer)])
        return page(status if status in (302, 303) else 302, location=location)

    def _answer(self, answer: Answer) -> Response:
        if answer.location is not None:
            return page(302, location=answer.location)
        body = answer.body if isinstance(answer.body, dict) else {"error": "invalid_request"}
        return self._page(
            answer.status,
            "Cannot sign in this application",
            str(body.get("error")),
            str(body.get("error_description", "")),
        )

    def _page(
        self, status: int, title: str, error: str, description: str, session: WebSession | None = None
    ) -> Response:
        who = viewer(self.cookies.signer, session) if session is not None else None
        return page(status, consent_page.refused(title=title, error=error, description=description, viewer=who))

    async def _find(self, request: Request, client_id: str) -> GatewayClient:
        """The client (ClientRegistry.find), or ClientProblem; a metadata document not cached is fetched only
        within the address's limit."""
        if is_cimd_url(client_id) and not self.clients.cached(client_id):
            if not self.documents.allow(request.client.host if request.client else "?"):
                raise ClientProblem("too many client metadata documents asked for from this address; wait a minute")
        return await self.clients.find(client_id)

    async def _signed_in(self, request: Request) -> tuple[WebSession | None, frozenset[str] | None]:
        """The web session, and the servers the key it was proven with is restricted to (None: no
        restriction). A key limited to some servers signs in an application for those servers only: signing
        in must not turn a restricted key into the person's whole access."""
        session = self.cookies.session(dict(request.cookies))
        if session is None or await self.signed_out.ended(session):
            return None, None
        kind, _, ref = session.method.partition(":")
        if kind == "api_key":  # as web/routes.py: the key that proved who this is must still be good
            record = await self.keys.get(ref)
            if record is None or record.usable(time.time()) is not None:
                return None, None
            return session, frozenset(record.servers) if record.servers is not None else None
        return session, None

    async def _form(self, request: Request) -> dict[str, str] | Response:
        try:
            body = await read_body(request, self.max_body)
            return form_fields(request.headers.get("content-type"), body)
        except BodyTooLarge:
            return _oauth_error(413, "invalid_request", f"the request body is over {self.max_body} bytes")
        except TooManyFields:
            return _oauth_error(400, "invalid_request", "the form has too many fields")
        except ClientDisconnect:
            return _oauth_error(400, "invalid_request", "the form did not arrive whole")

    # ---- the token endpoint ----

    async def _client(self, request: Request, form: dict[str, str]) -> GatewayClient | Response:
        client_id = form.get("client_id")
        basic = _basic_client_id(request.headers.get("authorization"))
        if basic is not None:
            client_id = basic
        if not client_id:
            return _oauth_error(401, "invalid_client", "client authentication is required")
        try:
            return await self._find(request, client_id)
        except ClientProblem as exc:
            return _oauth_error(401, "invalid_client", str(exc))

    def _same_moment(self, row: RefreshRow, client: GatewayClient) -> bool:
        """Whether a rotated refresh token presented again is its own application's other connection
        refreshing at the same time, not a copy: the same client, within `refresh_token_reuse_seconds`."""
        window = self.settings.refresh_token_reuse_seconds
        return client.client_id == row.client_id and row.used_at is not None and time.time() - row.used_at <= window

    def _successors(self, token: str) -> list[str]:
        return successors(self.signing, token)

    async def token(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        client = await self._client(request, form)
        if isinstance(client, Response):
            return client
        exchange = Exchange(client=client)
        grant_type = form.get("grant_type")
        code = form.get("code")
        presented = form.get("refresh_token")
        if grant_type == "authorization_code" and code:
            refused = await self._read_code(exchange, code)
        elif grant_type == "refresh_token" and presented:
            refused = await self._read_refresh(exchange, client, presented)
        else:
            refused = None  # Authlib answers what is missing or unsupported
        if refused is not None:
            return refused
        server = self._server(request, exchange)
        answer = server.token_answer(FormRequest("POST", str(request.url), form, request.headers))
        if answer.status == 200 and exchange.tokens:
            return await self._store_issued(exchange, client, answer)
        return _json(answer.status, answer.body, {**NO_STORE, **_lower(answer.headers)})

    async def _read_code(self, exchange: Exchange, code: str) -> Response | None:
        row = await self.store.code(code)
        if row is not None and row.grant_id is not None:
            # A code presented again: whoever holds a copy must not keep what the first exchange got.
            await self.store.revoke_grant(row.grant_id, "code reused")
            log.warning("gateway-oauth: a code of %s was presented twice; its grant is revoked", row.principal)
            return _oauth_error(400, "invalid_grant", "the code was already used; its tokens are revoked")
        exchange.code = CodeRecord(code, row) if row is not None else None
        return None

    async def _read_refresh(self, exchange: Exchange, client: GatewayClient, presented: str) -> Response | None:
        row = await self.store.refresh(presented)
        if row is None:
            return None  # Authlib refuses an unknown token
        if not row.revoked and not row.key_usable:
            # The API key this sign-in was made with was revoked or expired: so is the sign-in (attack probe).
            await self.store.revoke_grant(row.grant_id, "signing key revoked")
            return _oauth_error(
                400, "invalid_grant", "the key this sign-in was made with is no longer valid; sign in again"
            )
        if row.used_at is not None and not row.revoked:
            if not self._same_moment(row, client):
                # A rotated refresh token came back: someone holds a copy. End the whole sign-in.
                await self.store.revoke_grant(row.grant_id, "refresh token reused")
                log.warning(
                    "gateway-oauth: a rotated refresh token of %s was reused; its grant is revoked", row.principal
                )
                return _oauth_error(400, "invalid_grant", "this refresh token was already used; the sign-in is revoked")
            # The same application refreshing from several connections at once (IDE windows, Inspector
            # connections that share one sign-in): each gets the chain's newest token (the successor its
            # rotation stored, or that one's, ...), so the sign-in's chain never forks (a copy used after it
            # moved on is still caught).
            successor = await self.store.live_successor(row.grant_id, presented, self._successors)
            if successor is None:
                return _oauth_error(400, "invalid_grant", "this refresh token was already used")
            exchange.refresh_reused = True
            exchange.successor = successor
        exchange.refresh = RefreshRecord(presented, row)
        return None

    async def _store_issued(self, exchange: Exchange, client: GatewayClient, answer: Answer) -> Response:
        """Authlib issued tokens: the code is spent or the refresh token rotated in the database, in one
        transaction that fails if another request got there first."""
        new_refresh = exchange.tokens[0].get("refresh_token")
        refresh_expires = time.time() + self.settings.refresh_token_days * 86_400
        if exchange.code_spent and exchange.code is not None:
            spent = await self.store.exchange_code(
                exchange.code.code, exchange.grant_id, exchange.code.row, new_refresh, refresh_expires
            )
            if not spent:
                return _oauth_error(400, "invalid_grant", "the code was already used")
        elif exchange.refresh_reused:
            pass  # its successor is already stored (and the sign-in was live a moment ago)
        elif exchange.refresh_rotated and exchange.refresh is not None and isinstance(new_refresh, str):
            grant_id = exchange.refresh.row.grant_id
            if not await self.store.rotate(exchange.refresh.token, grant_id, new_refresh, refresh_expires):
                # Used meanwhile: by another connection of this application at the same moment (kept), or by a
                # copy (the sign-in ends).
                now_row = await self.store.refresh(exchange.refresh.token)
                if now_row is not None and not now_row.revoked and self._same_moment(now_row, client):
                    stored = await self.store.live_successor(grant_id, exchange.refresh.token, self._successors)
                    if stored is None or not isinstance(answer.body, dict):
                        return _oauth_error(400, "invalid_grant", "this refresh token was already used")
                    body = {**answer.body, "refresh_token": stored}  # the one the other rotation stored
                    return _json(answer.status, body, {**NO_STORE, **_lower(answer.headers)})
                await self.store.revoke_grant(grant_id, "refresh token reused")
                return _oauth_error(400, "invalid_grant", "this refresh token was already used; the sign-in is revoked")
        else:
            return _oauth_error(400, "invalid_grant", "the grant could not be completed")
        return _json(answer.status, answer.body, {**NO_STORE, **_lower(answer.headers)})

    # ---- registration and revocation ----

    async def register(self, request: Request) -> Response:
        try:
            raw = await read_body(request, self.max_body)
            body = orjson.loads(raw)
        except BodyTooLarge:
            return _oauth_error(413, "invalid_client_metadata", f"the request body is over {self.max_body} bytes")
        except (orjson.JSONDecodeError, ClientDisconnect):
            return _oauth_error(400, "invalid_client_metadata", "the body must be a JSON object")
        if not isinstance(body, dict):
            return _oauth_error(400, "invalid_client_metadata", "the body must be a JSON object")
        if not self.settings.dynamic_registration:
            return _oauth_error(403, "access_denied", "dynamic client registration is turned off")
        if not self.registrations.allow(request.client.host if request.client else "?"):
            return _json(429, {"error": "temporarily_unavailable", "error_description": "too many registrations"})
        uris = body.get("redirect_uris")
        if (
            not isinstance(uris, list)
            or not uris
            or not all(isinstance(u, str) and redirect_uri_allowed(u) for u in uris)
        ):
            return _oauth_error(
                400,
                "invalid_redirect_uri",
                "redirect_uris must be https, loopback http or an app scheme, without a fragment",
            )
        wrong = _wrong_metadata(body)
        if wrong is not None:
            return _oauth_error(400, "invalid_client_metadata", wrong)
        exchange = Exchange()
        server = self._server(request, exchange)
        answer = server.endpoint_answer("client_registration", JsonBody(str(request.url), body, request.headers))
        if answer is None:
            return _oauth_error(400, "invalid_client_metadata", "the registration was refused")
        if answer.status == 201 and exchange.registered is not None:
            client_id, metadata, secret = exchange.registered
            await self.store.register_client(client_id, metadata, digest(secret) if secret else None)
            # %r: the name is the client's own words; quoted, a line break in it cannot forge a log line.
            log.info("gateway-oauth: client registered: %s (%r)", client_id, str(metadata.get("client_name", ""))[:100])
        return _json(answer.status, answer.body, {**NO_STORE, **_lower(answer.headers)})

    async def revoke(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        client = await self._client(request, form)
        if isinstance(client, Response):
            return client
        exchange = Exchange(client=client)
        token = form.get("token", "")
        if GatewayTokens.is_ours(token):
            exchange.presented = access_token_grant(self.signing, token)
        elif token:
            row = await self.store.refresh(token)
            exchange.presented = RefreshRecord(token, row) if row is not None else None
        server = self._server(request, exchange)
        answer = server.endpoint_answer("revocation", FormRequest("POST", str(request.url), form, request.headers))
        if answer is None:
            return _json(200, {})
        if answer.status == 200 and exchange.revoke_grant is not None:
            await self.store.revoke_grant(exchange.revoke_grant, "revoked by the client")
        return _json(answer.status, answer.body or {}, {**NO_STORE, **_lower(answer.headers)})


class PerMinute:
    """At most `limit` events per address per minute. Bounded: past MAX_ADDRESSES addresses the count starts
    over (a flood from many addresses then meets the limit again within a minute, never a memory ceiling)."""

    MAX_ADDRESSES = 10_000

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, tuple[float, int]] = {}

    def allow(self, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        start, count = self._counts.get(address, (now, 0))
        if now - start >= 60.0:
            start, count = now, 0
        if count >= self.limit:
            return False
        if len(self._counts) >= self.MAX_ADDRESSES and address not in self._counts:
            self._counts.clear()
        self._counts[address] = (start, count + 1)
        return True


def _wrong_metadata(body: dict[str, object]) -> str | None:
    """What is of the wrong type in a registration's metadata, or None."""
    for name in STRING_METADATA:
        if name in body and not isinstance(body[name], str):
            return f"{name} must be a string"
    for name in LIST_METADATA:
        value = body.get(name)
        if name in body and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return f"{name} must be a list of strings"
    for name in OBJECT_METADATA:
        if name in body and not isinstance(body[name], dict):
            return f"{name} must be a JSON object"
    return None


def _consent_action(client: GatewayClient) -> str:
    return "oauth-consent:" + client.client_id


def _basic_client_id(authorization: str | None) -> str | None:
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, _, _ = decoded.partition(":")
    return unquote(client_id) or None


async def not_found(scope: StarletteScope, receive: StarletteReceive, send: StarletteSend) -> None:
    await _json(404, {"error": "not found"})(scope, receive, send)
