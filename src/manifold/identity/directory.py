"""Users, teams and service accounts: declared in `manifold.yaml` or created at run time (CLI, admin API).

Both sources are merged into one in-memory snapshot that the authenticator reads on every request. A
file-declared object cannot be changed or deleted through the API (edit the file instead); an object
created at run time lives in the database and survives restarts. The same id in both: the file wins, and
the API refuses to create it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.config.models import GatewayConfig
from manifold.store import revisions
from manifold.store.db import service_accounts, teams, users


class Source(str, enum.Enum):
    FILE = "manifold.yaml"
    API = "api"


@dataclass(frozen=True)
class UserRecord:
    id: str
    email: str | None
    teams: tuple[str, ...]
    source: Source

    def public(self) -> dict:
        return {"id": self.id, "email": self.email, "teams": list(self.teams), "source": self.source.value}


@dataclass(frozen=True)
class TeamRecord:
    id: str
    description: str | None
    source: Source

    def public(self) -> dict:
        return {"id": self.id, "description": self.description, "source": self.source.value}


@dataclass(frozen=True)
class ServiceAccountRecord:
    id: str
    description: str | None
    teams: tuple[str, ...]
    source: Source

    def public(self) -> dict:
        return {"id": self.id, "description": self.description, "teams": list(self.teams), "source": self.source.value}


class Conflict(Exception):
    """The operation would change a file-declared object, or create one that exists."""


class NotFound(Exception):
    pass


@dataclass(frozen=True)
class Snapshot:
    users: dict[str, UserRecord]
    teams: dict[str, TeamRecord]
    service_accounts: dict[str, ServiceAccountRecord]

    def user_teams(self, *ids: str | None) -> frozenset[str]:
        """Teams configured for a user known by any of these ids (email, subject). An email matches
        whatever its case, as `user:` grants do (an IdP may send `Alice@Corp.com`)."""
        found: set[str] = set()
        for i in ids:
            if not i:
                continue
            record = self.users.get(i) or (self._by_email().get(i.lower()) if "@" in i else None)
            if record is not None:
                found.update(record.teams)
        return frozenset(found)

    def knows_user(self, name: str) -> bool:
        """A user configured by this id, subject or email (any case of the email)."""
        return name in self.users or ("@" in name and name.lower() in self._by_email())

    def _by_email(self) -> dict[str, UserRecord]:
        index = self.__dict__.get("_email_index")
        if index is None:
            index = {}
            for uid, user in self.users.items():
                for name in (uid, user.email):
                    if name and "@" in name:
                        index.setdefault(name.lower(), user)
            object.__setattr__(self, "_email_index", index)
        return index


class Directory:
    def __init__(self, engine: AsyncEngine, config: GatewayConfig) -> None:
        self.engine = engine
        self.config = config
        self.snapshot = Snapshot({}, {}, {})

    def _file_objects(self) -> Snapshot:
        c = self.config
        return Snapshot(
            users={
                uid: UserRecord(uid, u.email or (uid if "@" in uid else None), tuple(u.teams), Source.FILE)
                for uid, u in c.users.items()
            },
            teams={tid: TeamRecord(tid, d, Source.FILE) for tid, d in c.teams.items()},
            service_accounts={
                sid: ServiceAccountRecord(sid, s.description, tuple(s.teams), Source.FILE)
                for sid, s in c.service_accounts.items()
            },
        )

    async def load(self) -> Snapshot:
        snap = self._file_objects()
        async with self.engine.connect() as conn:
            for r in await conn.execute(select(users)):
                snap.users.setdefault(r.id, UserRecord(r.id, r.email, tuple(r.teams or ()), Source.API))
            for r in await conn.execute(select(teams)):
                snap.teams.setdefault(r.id, TeamRecord(r.id, r.description, Source.API))
            for r in await conn.execute(select(service_accounts)):
                snap.service_accounts.setdefault(
                    r.id, ServiceAccountRecord(r.id, r.description, tuple(r.teams or ()), Source.API)
                )
        self.snapshot = snap
        return snap

    # ---- changes (CLI and admin API) ------------------------------------------------------------

    def _refuse_file_object(self, kind: str, object_id: str, declared: dict) -> None:
        if object_id in declared:
            raise Conflict(f"{kind} '{object_id}' is declared in manifold.yaml; change it there")

    async def _write(self, statement, *, exists_check=None) -> int:  # type: ignore[no-untyped-def]
        async with self.engine.begin() as conn:
            result = await conn.execute(statement)
            if result.rowcount:
                await revisions.bump(conn, revisions.AUTH)
        await self.load()
        return result.rowcount

    async def create_user(self, user_id: str, *, email: str | None = None, team_ids: list[str] | None = None) -> None:
        self._refuse_file_object("user", user_id, self.config.users)
        await self.load()
        if user_id in self.snapshot.users:
            raise Conflict(f"user '{user_id}' exists")
        email = email or (user_id if "@" in user_id else None)
        await self._write(insert(users).values(id=user_id, email=email, teams=list(team_ids or [])))

    async def set_user_teams(self, user_id: str, team_ids: list[str]) -> None:
        self._refuse_file_object("user", user_id, self.config.users)
        if not await self._write(update(users).where(users.c.id == user_id).values(teams=list(team_ids))):
            raise NotFound(f"no user '{user_id}'")

    async def delete_user(self, user_id: str) -> None:
        self._refuse_file_object("user", user_id, self.config.users)
        if not await self._write(delete(users).where(users.c.id == user_id)):
            raise NotFound(f"no user '{user_id}'")

    async def create_team(self, team_id: str, description: str | None = None) -> None:
        self._refuse_file_object("team", team_id, self.config.teams)
        await self.load()
        if team_id in self.snapshot.teams:
            raise Conflict(f"team '{team_id}' exists")
        await self._write(insert(teams).values(id=team_id, description=description))

    async def delete_team(self, team_id: str) -> None:
        self._refuse_file_object("team", team_id, self.config.teams)
        if not await self._write(delete(teams).where(teams.c.id == team_id)):
            raise NotFound(f"no team '{team_id}'")

    async def create_service_account(
        self, sa_id: str, *, description: str | None = None, team_ids: list[str] | None = None
    ) -> None:
        self._refuse_file_object("service account", sa_id, self.config.service_accounts)
        await self.load()
        if sa_id in self.snapshot.service_accounts:
            raise Conflict(f"service account '{sa_id}' exists")
        await self._write(
            insert(service_accounts).values(id=sa_id, description=description, teams=list(team_ids or []))
        )

    async def delete_service_account(self, sa_id: str) -> None:
        self._refuse_file_object("service account", sa_id, self.config.service_accounts)
        if not await self._write(delete(service_accounts).where(service_accounts.c.id == sa_id)):
            raise NotFound(f"no service account '{sa_id}'")
