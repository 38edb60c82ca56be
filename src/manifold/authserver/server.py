"""Authlib's authorization server, set up for the gateway: the authorization-code grant with PKCE (S256
only, always required), the refresh-token grant (rotated on every use), RFC 7591 registration, RFC 7009
revocation, RFC 9207 `iss` in every authorization response, and RFC 9068 JWT access tokens whose `aud` is
the one MCP server URL the client asked for (RFC 8707 `resource`).

Authlib's server is synchronous and our database is not, so each request is served in three steps: what
the request names is read first (`Exchange`: the client, the code, the refresh token), Authlib then decides
with those in memory, and what it decided to write is written afterwards, atomically and checked again
there (a code spent twice or a refresh token rotated twice by racing requests loses at that point). A server
object is made per request: it is a few registrations, and the issuer is per request when the gateway is
reached by more than one name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, TokenMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload, JsonPayload, JsonRequest
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7591 import ClientMetadataClaims, ClientRegistrationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from authlib.oauth2.rfc9207 import IssuerParameter
from joserfc import jwt
from joserfc.errors import InvalidClaimError, JoseError
from joserfc.jwk import KeySet

from manifold.authserver.clients import GatewayClient, redirect_uri_allowed, registered_client
from manifold.authserver.store import CodeRow, RefreshRow
from manifold.config.models import AuthorizationServerSettings
from manifold.security.signing import ALGORITHM, SigningKeys

GRANT_ID_BYTES = 24
SUCCESSOR_PURPOSE = b"manifold gateway-oauth refresh successor v1"  # the HMAC key deriving a rotation's token


class InvalidTargetError(OAuth2Error):
    """RFC 8707 §2: the `resource` is not one of this gateway's MCP servers."""

    error = "invalid_target"


class FormRequest(OAuth2Request):
    """An OAuth2Request over already-parsed query or form fields."""

    def __init__(self, method: str, uri: str, fields: dict[str, str], headers: Mapping[str, str]) -> None:
        super().__init__(method, uri, headers=headers)
        self.payload = BasicOAuth2Payload(fields)
        self._fields = fields

    @property
    def args(self) -> dict[str, str | None]:
        return dict(self._fields) if self.method == "GET" else {}

    @property
    def form(self) -> dict[str, str]:
        return self._fields if self.method == "POST" else {}


def _fields(request: Any) -> dict[str, str]:
    """The parameters of a request of ours (Authlib types its payload as optional)."""
    return request.payload.data if request.payload is not None else {}


class _Json(JsonPayload):
    def __init__(self, body: dict[str, Any]) -> None:
        self._body = body

    @property
    def data(self) -> dict[str, Any]:
        return self._body


class JsonBody(JsonRequest):
    def __init__(self, uri: str, body: dict[str, Any], headers: Mapping[str, str]) -> None:
        super().__init__("POST", uri, headers)
        self.payload = _Json(body)


@dataclass(frozen=True)
class SignedIn:
    """The resource owner as Authlib sees it, with what the token needs: the server and the grant."""

    principal: str
    resource: str
    grant_id: str

    def get_user_id(self) -> str:
        return self.principal


@dataclass(frozen=True)
class CodeRecord(AuthorizationCodeMixin):
    code: str
    row: CodeRow

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope


@dataclass(frozen=True)
class RefreshRecord(TokenMixin):
    token: str
    row: RefreshRow

    def check_client(self, client: GatewayClient) -> bool:
        return client.client_id == self.row.client_id

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return max(0, int(self.row.expires_at - time.time()))

    def is_expired(self) -> bool:
        return self.row.expires_at <= time.time()

    def is_revoked(self) -> bool:
        return self.row.revoked


@dataclass(frozen=True)
class AccessRecord(TokenMixin):
    """An access token presented for revocation: only its grant matters."""

    grant_id: str
    client_id: str

    def check_client(self, client: GatewayClient) -> bool:
        return client.client_id == self.client_id


@dataclass
class Exchange:
    """What one request read before Authlib decides, and what Authlib decided to write."""

    client: GatewayClient | None = None
    code: CodeRecord | None = None
    refresh: RefreshRecord | None = None
    presented: RefreshRecord | AccessRecord | None = None  # /revoke
    resources: Callable[[str], bool] = lambda _resource: False  # is this one of our MCP server URLs?
    grant_id: str = field(default_factory=lambda: secrets.token_urlsafe(GRANT_ID_BYTES))
    new_code: tuple[str, CodeRow] | None = None
    tokens: list[dict[str, Any]] = field(default_factory=list)
    code_spent: bool = False
    refresh_rotated: bool = False
    refresh_reused: bool = False  # a rotated refresh token within its reuse window (routes.py `token`)
    successor: str | None = None  # then: its successor, as stored by its rotation (handed out again, never minted)
    registered: tuple[str, dict[str, Any], str | None] | None = None
    revoke_grant: str | None = None


@dataclass
class Answer:
    """What Authlib answered: routes.py turns it into the HTTP response (`location` is what RFC 9207's
    extension rewrites to add `iss`)."""

    status: int
    body: Any
    headers: list[tuple[str, str]]

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "location"), None)

    @location.setter
    def location(self, value: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != "location"] + [("Location", value)]


class S256Challenge(CodeChallenge):
    """PKCE is required of every client, with S256 only (OAuth 2.1, MCP authorization)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge (S256)")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, authorization_code: CodeRecord) -> str:
        return authorization_code.row.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: CodeRecord) -> str:
        return authorization_code.row.code_challenge_method


def _check_resource(grant: Any, redirect_uri: str) -> None:
    """RFC 8707: exactly one `resource`, one of this gateway's MCP server URLs."""
    exchange: Exchange = grant.server.exchange
    resource = grant.request.payload.data.get("resource")
    if not resource:
        raise InvalidTargetError("resource is required: the URL of the MCP server (RFC 8707)")
    if not exchange.resources(resource):
        raise InvalidTargetError("resource is not an MCP server of this gateway")


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def __init__(self, request: Any, server: Any) -> None:
        super().__init__(request, server)
        self.register_hook("after_validate_authorization_request_payload", _check_resource)

    def save_authorization_code(self, code: str, request: Any) -> None:
        server: GatewayServer = self.server
        data = request.payload.data
        user: SignedIn = request.user
        row = CodeRow(
            client_id=request.client.client_id,
            principal=user.principal,
            redirect_uri=data.get("redirect_uri") or request.client.get_default_redirect_uri(),
            scope=request.scope or "",
            resource=data["resource"],
            code_challenge=data["code_challenge"],
            code_challenge_method=data.get("code_challenge_method") or "S256",
            expires_at=time.time() + server.settings.code_seconds,
        )
        server.exchange.new_code = (code, row)

    def query_authorization_code(  # pyright: ignore[reportIncompatibleMethodOverride] — None is Authlib's "no such code"
        self, code: str, client: GatewayClient
    ) -> CodeRecord | None:
        record = self.server.exchange.code
        if record is None or record.code != code or record.row.client_id != client.client_id:
            return None
        if record.row.expires_at <= time.time():
            return None  # expired: invalid_grant, as an unknown code
        resource = _fields(self.request).get("resource")
        if resource and resource != record.row.resource:
            raise InvalidTargetError("resource differs from the one the code was issued for")
        return record

    def delete_authorization_code(self, authorization_code: CodeRecord) -> None:
        self.server.exchange.code_spent = True

    def authenticate_user(self, authorization_code: CodeRecord) -> SignedIn:
        row = authorization_code.row
        return SignedIn(row.principal, row.resource, self.server.exchange.grant_id)


class RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotated on every use

    def authenticate_refresh_token(  # pyright: ignore[reportIncompatibleMethodOverride] — None: "no such token"
        self, refresh_token: str
    ) -> RefreshRecord | None:
        record = self.server.exchange.refresh
        if record is None or record.token != refresh_token or record.is_expired() or record.is_revoked():
            return None
        if record.row.used_at is not None and not self.server.exchange.refresh_reused:
            return None  # reuse: the family was revoked before Authlib was asked (routes.py)
        resource = _fields(self.request).get("resource")
        if resource and resource != record.row.resource:
            raise InvalidTargetError("resource differs from the one the refresh token was issued for")
        return record

    def authenticate_user(self, refresh_token: RefreshRecord) -> SignedIn:
        row = refresh_token.row
        return SignedIn(row.principal, row.resource, row.grant_id)

    def revoke_old_credential(self, refresh_token: TokenMixin) -> None:
        self.server.exchange.refresh_rotated = True


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> RefreshRecord | AccessRecord | None:
        presented = self.server.exchange.presented
        if isinstance(presented, RefreshRecord) and presented.token != token_string:
            return None
        return presented

    def revoke_token(self, token: RefreshRecord | AccessRecord, request: Any) -> None:
        self.server.exchange.revoke_grant = token.row.grant_id if isinstance(token, RefreshRecord) else token.grant_id


class RegistrationMetadata(ClientMetadataClaims):
    def validate_redirect_uris(self) -> None:
        """Our rule (`redirect_uri_allowed`, checked by routes.py before this runs), not Authlib's URL check:
        that one refuses RFC 8252 §7.1's own private-use form, `com.example.app:/oauth2redirect`, so native
        apps that register that way could not sign in."""
        for uri in self.get("redirect_uris") or []:
            if not (isinstance(uri, str) and redirect_uri_allowed(uri)):
                raise InvalidClaimError("redirect_uris")


class Registration(ClientRegistrationEndpoint):
    def __init__(self, server: Any = None, claims_classes: Any = None) -> None:
        super().__init__(server, claims_classes or [RegistrationMetadata])

    def authenticate_token(self, request: Any) -> bool:
        return True  # open registration (RFC 7591 §3): what a client may do is decided at consent

    def get_server_metadata(self) -> dict[str, Any]:
        return self.server.metadata()

    def create_registration_response(self, request: Any) -> tuple[int, dict[str, Any], Any]:
        status, body, headers = super().create_registration_response(request)
        if body.get("token_endpoint_auth_method") == "none":  # a public client gets no secret
            body = {k: v for k, v in body.items() if k not in ("client_secret", "client_secret_expires_at")}
        return status, body, headers

    def save_client(self, client_info: dict[str, Any], client_metadata: dict[str, Any], request: Any) -> GatewayClient:
        method = client_metadata.get("token_endpoint_auth_method") or "client_secret_basic"
        client_metadata = {**client_metadata, "token_endpoint_auth_method": method}
        if not client_metadata.get("redirect_uris"):
            raise InvalidRequestError("redirect_uris is required")
        secret = client_info.get("client_secret") if method != "none" else None
        client_id = client_info["client_id"]
        self.server.exchange.registered = (client_id, client_metadata, secret)
        return registered_client(client_id, client_metadata, None)


class AccessTokens(JWTBearerTokenGenerator):
    def __init__(
        self, issuer: str, signing: SigningKeys, settings: AuthorizationServerSettings, exchange: Exchange
    ) -> None:
        super().__init__(
            issuer,
            alg=ALGORITHM,
            refresh_token_generator=self._refresh_token,
            expires_generator=settings.access_token_seconds,
        )
        self.signing = signing
        self.exchange = exchange

    def _refresh_token(self, *_args: Any, **_kwargs: Any) -> str:
        """A new sign-in's first refresh token is random; a rotation's successor is derived from the token it
        replaces (HMAC with a key of the gateway's), so every connection that presents that token within its
        reuse window gets the same successor: the sign-in's chain never forks, and a copy used later is still
        caught (RFC 9700 4.14.2), however many times the token is presented."""
        if self.exchange.successor is not None:
            return self.exchange.successor  # a reuse: the successor already stored (routes.py `token`)
        previous = self.exchange.refresh
        if previous is None:
            return secrets.token_urlsafe(32)
        return successors(self.signing, previous.token)[0]

    def get_jwks(self) -> KeySet:
        return KeySet([self.signing.signing_key()])  # joserfc names its kid in the header

    def get_audiences(self, client: GatewayClient, user: SignedIn, scope: str) -> str:
        return user.resource

    def get_extra_claims(self, client: GatewayClient, grant_type: str, user: SignedIn, scope: str) -> dict[str, Any]:
        return {"fam": user.grant_id}


def successors(signing: SigningKeys, token: str) -> list[str]:
    """The successors a rotation of `token` may have been given: one per secret key, the newest first (a
    replica whose newest key differs stored another one)."""
    return [
        base64.urlsafe_b64encode(hmac.new(key, token.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
        for key in signing.secrets(SUCCESSOR_PURPOSE)
    ]


class IssuerInResponse(IssuerParameter):
    def __init__(self, issuer: str) -> None:
        self.issuer = issuer

    def get_issuer(self) -> str:
        return self.issuer


class GatewayServer(AuthorizationServer):
    def __init__(
        self,
        issuer: str,
        exchange: Exchange,
        settings: AuthorizationServerSettings,
        signing: SigningKeys,
    ) -> None:
        super().__init__(scopes_supported=None)
        self.issuer = issuer
        self.exchange = exchange
        self.settings = settings
        self.signing = signing
        self.register_grant(CodeGrant, [S256Challenge(required=True)])
        self.register_grant(RefreshGrant)
        self.register_token_generator("default", AccessTokens(issuer, signing, settings, exchange))
        self.register_extension(IssuerInResponse(issuer))
        self.register_endpoint(Revocation)
        if settings.dynamic_registration:
            self.register_endpoint(Registration)

    def query_client(self, client_id: str) -> GatewayClient | None:  # pyright: ignore[reportIncompatibleMethodOverride]
        client = self.exchange.client
        return client if client is not None and client.client_id == client_id else None

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        self.exchange.tokens.append(token)

    def create_oauth2_request(self, request: Any) -> Any:
        return request

    def create_json_request(self, request: Any) -> Any:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> Answer:
        return Answer(status, body, list(headers or []))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    # Authlib's entry points, typed as this server answers them (handle_response makes every answer an Answer).

    def authorization_answer(self, request: FormRequest, user: SignedIn | None, grant: Any) -> Answer:
        answer = self.create_authorization_response(request, grant_user=user, grant=grant)
        assert isinstance(answer, Answer)
        return answer

    def token_answer(self, request: FormRequest) -> Answer:
        answer = self.create_token_response(request)
        assert isinstance(answer, Answer)
        return answer

    def endpoint_answer(self, name: str, request: FormRequest | JsonBody) -> Answer | None:
        answer = self.create_endpoint_response(name, request)
        assert answer is None or isinstance(answer, Answer)
        return answer

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 metadata."""
        issuer = self.issuer
        body: dict[str, Any] = {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "revocation_endpoint": f"{issuer}/revoke",
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "authorization_response_iss_parameter_supported": True,
            "client_id_metadata_document_supported": True,
            "scopes_supported": [],
        }
        if self.settings.dynamic_registration:
            body["registration_endpoint"] = f"{issuer}/register"
        return body


def access_token_grant(signing: SigningKeys, token: str) -> AccessRecord | None:
    """The grant and client of an access token of ours (signature checked, expiry not: revoking an expired
    token is harmless), for /revoke."""
    try:
        claims = jwt.decode(token, signing.verification_keys(), algorithms=[ALGORITHM]).claims
    except (JoseError, ValueError):
        return None
    fam, client_id = claims.get("fam"), claims.get("client_id")
    if isinstance(fam, str) and isinstance(client_id, str):
        return AccessRecord(fam, client_id)
    return None
