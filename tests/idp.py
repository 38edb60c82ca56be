"""A real OpenID Provider (node oidc-provider, tests/node/oidc_server.mjs) on a free loopback port, for tests.

    from tests.idp import IdpClient, run_idp

    async with run_idp(clients=[IdpClient("alice", claims={"email": "alice@corp.com", "groups": ["eng"]})]) as idp:
        token = await idp.token("alice", resource="http://127.0.0.1:8470/mcp")    # issued by the provider
        user = await idp.user_token("alice", client_id="app", resource=...)       # auth code + PKCE, no browser
        forged = idp.sign({"iss": idp.issuer, "exp": 0, ...})                      # signed with its real key
        returned = await idp.authorize(url, login="alice", redirect_uri=cb)     # the browser, for any auth URL
        await idp.counts()                                                         # {"discovery": n, "jwks": n, ...}

RFC 8693 token exchange is served for clients that list `TOKEN_EXCHANGE` among their grant types, e.g.
`IdpClient("gw", metadata={"grant_types": [TOKEN_EXCHANGE], "response_types": [], "redirect_uris": []})`:
a subject token this provider signed is exchanged for a JWT with aud = the requested audience (`resource`,
else `audience`), the same `sub`, and `act.sub` = the exchanging client.

The helper generates the provider's RSA signing key itself (cryptography) and hands the private JWKS to the
provider, so a test can craft tokens (expired, not yet valid, tampered) that carry the provider's genuine
signature. Each provider has its own key and `kid`; several can run at once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlparse, urlsplit

import aiohttp
import anyio
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.upstreams.launch import free_port, stop_process

TESTS = Path(__file__).resolve().parent
NODE_DIR = TESTS / "node"
NODE = NODE_DIR / "node_modules" / ".bin" / "node"
SERVER_SCRIPT = NODE_DIR / "oidc_server.mjs"

HOST = "127.0.0.1"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
STARTUP_DEADLINE_S = 30.0


@dataclass(frozen=True)
class IdpClient:
    """A client registered at the provider. `claims` are added to every access token it gets."""

    client_id: str
    client_secret: str = "test-secret"
    claims: Mapping[str, Any] = field(default_factory=dict)
    # Other oidc-provider client metadata (redirect_uris, grant_types…), overriding the defaults below.
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def registration(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "grant_types": ["client_credentials", "authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [f"http://{HOST}/callback"],
            "token_endpoint_auth_method": "client_secret_basic",
            **({"token_claims": dict(self.claims)} if self.claims else {}),
            **self.metadata,
        }


def new_signing_key() -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    """A fresh RSA key and its private JWK (with a random kid), as the provider's keystore wants it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key, as_dict=True)
    jwk.update(kid=secrets.token_urlsafe(8), alg="RS256", use="sig")
    return key, jwk


@dataclass
class Idp:
    issuer: str
    port: int
    private_key: rsa.RSAPrivateKey
    kid: str
    public_jwk: dict[str, Any]
    clients: dict[str, IdpClient]
    process: subprocess.Popen = field(repr=False)

    async def stop(self) -> None:
        """Stop the provider now (leaving `run_idp` stops it too), e.g. to start a successor on its port."""
        await stop_process(self.process)

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    async def token(self, client_id: str, *, resource: str, scope: str | None = None) -> str:
        """A real access token (a JWT, aud = resource) from the provider's token endpoint (client_credentials)."""
        client = self.clients[client_id]
        form = {"grant_type": "client_credentials", "resource": resource}
        if scope:
            form["scope"] = scope
        auth = {"Authorization": aiohttp.encode_basic_auth(client.client_id, client.client_secret)}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.issuer}/token", data=form, headers=auth) as resp:
                body = await resp.json(content_type=None)
        if resp.status != 200:
            raise RuntimeError(f"token endpoint answered {resp.status}: {body}")
        return body["access_token"]

    async def user_token(self, login: str, *, client_id: str, resource: str, scope: str = "openid") -> str:
        """A real access token for a user, by the authorization-code flow with PKCE, driven without a browser.

        The provider's development login accepts any `login` (claims from `accounts`) and asks for consent."""
        client = self.clients[client_id]
        redirect_uri = client.registration()["redirect_uris"][0]
        verifier = secrets.token_urlsafe(32)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = {
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": scope,
            "resource": resource,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": secrets.token_urlsafe(8),
        }
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            location = await _redirect(session, "GET", f"{self.issuer}/auth?{urlencode(query)}")
            # Each prompt is an interaction page; answering it sends us back to /auth, which redirects onwards.
            for answer in ({"prompt": "login", "login": login, "password": "any"}, {"prompt": "consent"}):
                location = await _redirect(session, "POST", urljoin(self.issuer, location), answer)
                location = await _redirect(session, "GET", urljoin(self.issuer, location))
                if location.startswith(redirect_uri):
                    break
            returned = parse_qs(urlparse(location).query)
            if "code" not in returned:
                raise RuntimeError(f"authorization did not return a code: {returned}")
            form = {
                "grant_type": "authorization_code",
                "code": returned["code"][0],
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
                "resource": resource,
            }
            auth = {"Authorization": aiohttp.encode_basic_auth(client.client_id, client.client_secret)}
            async with session.post(f"{self.issuer}/token", data=form, headers=auth) as resp:
                body = await resp.json(content_type=None)
        if resp.status != 200:
            raise RuntimeError(f"token endpoint answered {resp.status}: {body}")
        return body["access_token"]

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        headers: Mapping[str, Any] | None = None,
        key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        """A token with exactly these claims, RS256-signed with the provider's own key (or `key`).

        The header carries the provider's `kid` unless `headers` says otherwise."""
        return jwt.encode(
            dict(claims),
            key or self.private_key,
            algorithm="RS256",
            headers={"kid": self.kid, **(headers or {})},
        )

    def claims(self, *, audience: str, subject: str = "someone", lifetime_s: int = 300, **extra: Any) -> dict:
        """Ordinary, valid claims for `sign`, with overrides."""
        now = int(time.time())
        return {"iss": self.issuer, "sub": subject, "aud": audience, "iat": now, "exp": now + lifetime_s, **extra}

    async def authorize(self, url: str, *, login: str, redirect_uri: str | None = None) -> dict[str, str]:
        """Play the browser for an authorization URL someone else built (e.g. the gateway's OAuth client):
        sign in as `login`, consent, and return the query of the final redirect to `redirect_uri` (code,
        state, iss, or error). Redirects are read, never followed to `redirect_uri` itself. By default the
        redirect URI is the one the URL names (the gateway's differs per authorization server)."""
        if redirect_uri is None:
            redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            location = urljoin(url, await _redirect(session, "GET", url))
            answers = iter(({"prompt": "login", "login": login, "password": "any"}, {"prompt": "consent"}))
            while not location.startswith(redirect_uri):
                answer = next(answers, None)
                if answer is None:
                    raise RuntimeError(f"the provider kept asking after login and consent: {location}")
                location = urljoin(self.issuer, await _redirect(session, "POST", location, answer))
                location = urljoin(self.issuer, await _redirect(session, "GET", location))
        return {name: values[0] for name, values in parse_qs(urlparse(location).query).items()}

    async def counts(self) -> dict[str, Any]:
        """How often the discovery document and the JWKS have been requested so far; `token`: POSTs to the
        token endpoint; `token_exchange`: token-exchange requests; `revocation`, `registration`: POSTs to
        those endpoints; `grants`: successful grants by grant type (e.g. `refresh_token`)."""
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{self.issuer}/__test/counts") as resp:
                return await resp.json()


@asynccontextmanager
async def run_idp(
    clients: list[IdpClient] = (),  # type: ignore[assignment]
    *,
    accounts: Mapping[str, Mapping[str, Any]] | None = None,
    scopes: str = "mcp:tools",
    port: int | None = None,
    startup_deadline_s: float = STARTUP_DEADLINE_S,
) -> AsyncIterator[Idp]:
    """Start the provider on a free 127.0.0.1 port; ready once its discovery document answers.

    Every start has a new signing key. Pass the `port` of a provider that was stopped to start its successor
    under the same issuer: that is an IdP that rotated its key."""
    port = port or free_port()
    issuer = f"http://{HOST}:{port}"
    private_key, private_jwk = new_signing_key()
    public_jwk = {k: v for k, v in private_jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
    with tempfile.TemporaryDirectory(prefix="manifold-idp-") as tmp:
        files = Path(tmp)
        (files / "jwks.json").write_text(json.dumps({"keys": [private_jwk]}))
        (files / "clients.json").write_text(json.dumps([c.registration() for c in clients]))
        (files / "accounts.json").write_text(json.dumps(dict(accounts or {})))
        command = [
            str(NODE),
            str(SERVER_SCRIPT),
            "--port",
            str(port),
            "--issuer",
            issuer,
            "--jwks",
            str(files / "jwks.json"),
            "--clients",
            str(files / "clients.json"),
            "--accounts",
            str(files / "accounts.json"),
            "--scopes",
            scopes,
        ]
        # Output goes to files, not pipes: nobody reads them while the provider runs, and a full pipe blocks it.
        with (files / "stdout").open("w+b") as stdout, (files / "stderr").open("w+b") as stderr:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=NODE_DIR)
            try:
                await _wait_until_ready(process, issuer, startup_deadline_s, stderr)
                yield Idp(
                    issuer=issuer,
                    port=port,
                    private_key=private_key,
                    kid=private_jwk["kid"],
                    public_jwk=public_jwk,
                    clients={c.client_id: c for c in clients},
                    process=process,
                )
            finally:
                await stop_process(process)


async def _redirect(session: aiohttp.ClientSession, method: str, url: str, form: dict | None = None) -> str:
    async with session.request(method, url, data=form, allow_redirects=False) as resp:
        if resp.status not in (302, 303):
            raise RuntimeError(f"{method} {url} answered {resp.status}, not a redirect: {(await resp.text())[:500]}")
        return resp.headers["Location"]


async def _wait_until_ready(process: subprocess.Popen, issuer: str, deadline_s: float, stderr) -> None:
    deadline = time.monotonic() + deadline_s
    url = f"{issuer}/.well-known/openid-configuration"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            if process.poll() is not None:
                stderr.seek(0)
                raise RuntimeError(
                    f"oidc provider exited with {process.returncode} before it was ready:\n"
                    + stderr.read().decode(errors="replace")[-4000:]
                )
            try:
                async with session.get(url) as resp:
                    if resp.status == 200 and (await resp.json()).get("issuer") == issuer:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"oidc provider at {issuer} was not ready within {deadline_s}s")
            await anyio.sleep(0.05)
