"""Administrative operations, shared by the admin REST API and the CLI (one implementation, two faces).

Each operation validates its input, writes the database (bumping the revision so a running gateway
applies it on its next request), and returns plain JSON-able data. Errors are `OpError`s carrying an HTTP
status and a message fit for the caller: `BadRequest` (400), `NotFound` (404), `Conflict` (409).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.config.loaded import LoadedConfig
from manifold.config.models import GrantConfig
from manifold.identity import directory as dirmod
from manifold.identity.api_keys import KeyRepository, OwnerKind, parse_duration
from manifold.identity.app_consents import AppConsents
from manifold.identity.directory import Directory
from manifold.identity.gateway_tokens import revoke_sign_ins
from manifold.policy.grants import parse_grant
from manifold.policy.store import GrantRepository, file_grants
from manifold.store import revisions
from manifold.store.db import api_keys, grants, service_accounts, teams, too_long, users, write_transaction

if TYPE_CHECKING:
    from manifold.outbound.oauth.client import OAuthFlows

JSON = dict[str, Any]


class OpError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(OpError):
    status = 400


class NotFound(OpError):
    status = 404


class Conflict(OpError):
    status = 409


def _text(body: JSON, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"'{key}' must be a non-empty string")
    return value.strip()


def _checked_grant(body: JSON) -> GrantConfig:
    """A grant from the API checked exactly as one in manifold.yaml: the same pydantic model (fields, bounds)
    and the same selector grammar, approval gate included (policy/grants.py `parse_grant`)."""
    try:
        grant = GrantConfig.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"'{where}': {first['msg']}") from None
    try:
        parse_grant(grant.who, grant.what, grant.claims, grant_id="new", approval=grant)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    _fits(grants, who=grant.who, approvers=grant.approvers)
    return grant


def _fits(table: Table, **values: object) -> None:
    """Refuse (400) a value longer than its column: PostgreSQL would refuse it at the write."""
    problem = too_long(table, values)
    if problem is not None:
        raise BadRequest(problem)


def _optional_text(body: JSON, key: str) -> str | None:
    return None if body.get(key) is None else _text(body, key)


def _str_list(body: JSON, key: str) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadRequest(f"'{key}' must be a list of strings")
    return value


def _principal(user: str) -> str:
    """`alice@corp.com` → `user:alice@corp.com`; an id that names its kind (`sa:ci-bot`) is kept."""
    user = user.strip()
    if not user:
        raise BadRequest("'user' must not be empty")
    return user if user.startswith(("user:", "sa:", "ext:")) or user == "anonymous" else f"user:{user}"


class Operations:
    def __init__(
        self,
        engine: AsyncEngine,
        config: LoadedConfig,
        apps: AppConsents | None = None,
        flows: OAuthFlows | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.apps = apps
        self.flows = flows  # users' OAuth connections to upstreams (list, revoke)
        self.keys = KeyRepository(engine)
        self.directory = Directory(engine, config.gateway)
        self.grants = GrantRepository(engine)

    # ---- keys ----------------------------------------------------------------------------------

    async def create_key(self, body: JSON) -> JSON:
        """{user | sa, name, expires?: "90d", servers?: [...]} → the key record and, once, the token."""
        user, sa = body.get("user"), body.get("sa")
        if (user is None) == (sa is None):
            raise BadRequest("give exactly one of 'user' or 'sa'")
        name = _text(body, "name")
        _fits(api_keys, name=name)
        expires = body.get("expires")
        try:
            expires_in = parse_duration(expires) if isinstance(expires, str) else None
        except ValueError as exc:
            raise BadRequest(f"'expires': {exc}") from None
        if expires is not None and not isinstance(expires, str):
            raise BadRequest("'expires' must be a duration such as 90d")
        servers = _str_list(body, "servers")
        await self.directory.load()
        if sa is not None:
            sa_id = _text(body, "sa")
            if sa_id not in self.directory.snapshot.service_accounts:
                raise NotFound(f"no service account '{sa_id}'")
            kind, owner = OwnerKind.SERVICE_ACCOUNT, sa_id
        else:
            owner = _text(body, "user")
            kind = OwnerKind.USER
            _fits(users, id=owner)
            if owner not in self.directory.snapshot.users:
                await self.directory.create_user(owner)  # a key for someone new makes them a known user
        record, token = await self.keys.create(kind, owner, name, expires_in=expires_in, servers=servers)
        return {**record.public(), "token": token}

    async def list_keys(self, owner: str | None = None, *, include_revoked: bool = False) -> list[JSON]:
        if owner is not None and ":" not in owner:
            owner = f"user:{owner}"
        return [k.public() for k in await self.keys.list(owner=owner, include_revoked=include_revoked)]

    async def revoke_key(self, key_id: str) -> JSON:
        if not await self.keys.revoke(key_id):
            raise NotFound(f"no active key '{key_id}'")
        return {"id": key_id, "revoked": True}

    # ---- users, teams, service accounts ----------------------------------------------------------

    async def _directory_call(self, coro: Any) -> None:
        try:
            await coro
        except dirmod.Conflict as exc:
            raise Conflict(str(exc)) from None
        except dirmod.NotFound as exc:
            raise NotFound(str(exc)) from None

    async def list_users(self) -> list[JSON]:
        snap = await self.directory.load()
        return [u.public() for u in sorted(snap.users.values(), key=lambda u: u.id)]

    async def create_user(self, body: JSON) -> JSON:
        user_id, email = _text(body, "id"), _optional_text(body, "email")
        _fits(users, id=user_id, email=email)
        await self._directory_call(self.directory.create_user(user_id, email=email, team_ids=_str_list(body, "teams")))
        return self.directory.snapshot.users[user_id].public()

    async def set_user_teams(self, user_id: str, body: JSON) -> JSON:
        teams = _str_list(body, "teams")
        if teams is None:
            raise BadRequest("'teams' is required")
        await self._directory_call(self.directory.set_user_teams(user_id, teams))
        return self.directory.snapshot.users[user_id].public()

    async def delete_user(self, user_id: str) -> JSON:
        await self._directory_call(self.directory.delete_user(user_id))
        revoked = await self.keys.revoke_all_of(OwnerKind.USER, user_id)
        ended = await self._end_sign_ins(f"user:{user_id}", "user deleted")
        return {"id": user_id, "deleted": True, "keys_revoked": revoked, "sign_ins_revoked": ended}

    async def _end_sign_ins(self, principal_id: str, why: str) -> int:
        """The applications the principal signed in through the gateway's OAuth (IDEs) lose their tokens too:
        an IdP sign-in is tied to no key (attack probe: a deleted user's IDE kept working)."""
        async with write_transaction(self.engine) as conn:
            ended = await revoke_sign_ins(conn, principal_id, why)
            if ended:
                await revisions.bump(conn, revisions.AUTH)
        return ended

    async def list_teams(self) -> list[JSON]:
        snap = await self.directory.load()
        return [t.public() for t in sorted(snap.teams.values(), key=lambda t: t.id)]

    async def create_team(self, body: JSON) -> JSON:
        team_id = _text(body, "id")
        _fits(teams, id=team_id)
        await self._directory_call(self.directory.create_team(team_id, _optional_text(body, "description")))
        return self.directory.snapshot.teams[team_id].public()

    async def delete_team(self, team_id: str) -> JSON:
        await self._directory_call(self.directory.delete_team(team_id))
        return {"id": team_id, "deleted": True}

    async def list_service_accounts(self) -> list[JSON]:
        snap = await self.directory.load()
        return [s.public() for s in sorted(snap.service_accounts.values(), key=lambda s: s.id)]

    async def create_service_account(self, body: JSON) -> JSON:
        sa_id = _text(body, "id")
        _fits(service_accounts, id=sa_id)
        await self._directory_call(
            self.directory.create_service_account(
                sa_id,
                description=_optional_text(body, "description"),
                team_ids=_str_list(body, "teams"),
            )
        )
        return self.directory.snapshot.service_accounts[sa_id].public()

    async def delete_service_account(self, sa_id: str) -> JSON:
        await self._directory_call(self.directory.delete_service_account(sa_id))
        revoked = await self.keys.revoke_all_of(OwnerKind.SERVICE_ACCOUNT, sa_id)
        ended = await self._end_sign_ins(f"sa:{sa_id}", "service account deleted")
        return {"id": sa_id, "deleted": True, "keys_revoked": revoked, "sign_ins_revoked": ended}

    # ---- grants --------------------------------------------------------------------------------

    async def list_grants(self) -> list[JSON]:
        stored = file_grants(self.config.gateway.grants) + await self.grants.list()
        return [g.public() for g in stored]

    async def get_grant(self, grant_id: str) -> JSON:
        for stored in file_grants(self.config.gateway.grants):
            if stored.id == grant_id:
                return stored.public()
        found = await self.grants.get(grant_id)
        if found is None:
            raise NotFound(f"no grant '{grant_id}'")
        return found.public()

    async def add_grant(self, body: JSON) -> JSON:
        grant = _checked_grant(body)
        return (await self.grants.add(grant)).public()

    async def update_grant(self, grant_id: str, body: JSON) -> JSON:
        """Change the fields `body` names of an API-made grant (PATCH): the result is checked whole, as a new
        grant is. A field set to null goes back to its default."""
        if grant_id.startswith("grants["):
            raise Conflict(f"grant {grant_id} is declared in manifold.yaml; change it there")
        found = await self.grants.get(grant_id)
        if found is None:
            raise NotFound(f"no grant '{grant_id}'")
        merged = {**found.config.model_dump(exclude_none=True), **body}
        grant = _checked_grant({k: v for k, v in merged.items() if v is not None})
        stored = await self.grants.replace(grant_id, grant)
        if stored is None:
            raise NotFound(f"no grant '{grant_id}'")
        return stored.public()

    async def remove_grant(self, grant_id: str) -> JSON:
        if grant_id.startswith("grants["):
            raise Conflict(f"grant {grant_id} is declared in manifold.yaml; change it there")
        if not await self.grants.remove(grant_id):
            raise NotFound(f"no grant '{grant_id}'")
        return {"id": grant_id, "deleted": True}

    # ---- applications signed in with the gateway's own OAuth (authserver/) ----------------------------

    def _apps(self) -> AppConsents:
        if self.apps is None:
            raise NotFound("the gateway's authorization server is not available here")
        return self.apps

    async def list_apps(self, user: str | None = None) -> list[JSON]:
        """Who allowed which application, for which servers (`manifold apps list`, `GET /admin/api/apps`)."""
        principal = _principal(user) if user is not None else None
        return [
            {
                "user": c.principal,
                "client": c.client_id,
                "name": c.client_name,
                "servers": list(c.resources),
                "updated_at": c.updated_at,
            }
            for c in await self._apps().consents(principal)
        ]

    async def revoke_app(self, user: str, client: str) -> JSON:
        """Forget the person's consent to the application and revoke its tokens at once: refresh tokens stop
        working, access tokens are refused on the next request (the "auth" revision is bumped)."""
        principal, client_id = _principal(user), client.strip()
        if not client_id:
            raise BadRequest("'client' must not be empty")
        if not await self._apps().revoke_client(principal, client_id):
            raise NotFound(f"{principal[:200]} has not allowed the client '{client_id[:200]}'")
        return {"user": principal, "client": client_id, "revoked": True}

    # ---- users' OAuth connections to upstreams (outbound/oauth/) -----------------------------------------

    def _flows(self) -> OAuthFlows:
        if self.flows is None:
            raise NotFound("the users' OAuth connections are not available here")
        return self.flows

    async def list_connections(self, user: str | None = None) -> list[JSON]:
        """Who connected which OAuth upstream (`GET /admin/api/connections`, the console): never a token."""
        principal = _principal(user) if user is not None else None
        return [
            {
                "user": c.user,
                "upstream": c.upstream,
                "status": c.status.value,
                "scopes": list(c.scopes),
                "issuer": c.issuer,
                "expires_at": c.expires_at,
                "created_at": c.created_at,
                "updated_at": c.updated_at,
            }
            for c in await self._flows().vault.list(principal)
        ]

    async def revoke_connection(self, user: str, upstream: str) -> JSON:
        """Disconnect the user from the upstream: the authorization server is asked to revoke the tokens
        (RFC 7009, where it has a revocation endpoint), the stored connection is deleted (the `connections`
        revision is bumped: every replica forgets the token) and the user sees "connect your account" again."""
        principal, upstream_id = _principal(user), upstream.strip()
        if not upstream_id:
            raise BadRequest("'upstream' must not be empty")
        flows = self._flows()
        existing = await flows.vault.get(principal, upstream_id)
        if existing is None or not await flows.revoke(principal, upstream_id):
            raise NotFound(f"{principal[:200]} has no connection to upstream '{upstream_id[:200]}'")
        return {
            "user": principal,
            "upstream": upstream_id,
            "revoked": True,
            "asked_authorization_server": existing.revocation_endpoint is not None,
        }
