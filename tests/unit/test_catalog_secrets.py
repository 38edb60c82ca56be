"""Credentials typed into an API-made upstream (admin API, console, CLI) are kept encrypted, not in the
catalog table: admin/catalog_secrets.py moves each plain-text auth value into the secret store and the body
keeps `secret:NAME`. Over a real SQLite file: the database file never holds the typed value, the gateway's
resolver gets it back, a refused body leaves nothing behind, and replaced or deleted values are dropped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from manifold.admin.catalog import HIDDEN, CatalogOperations, InvalidBody, Kind
from manifold.admin.catalog_secrets import CatalogSecrets, seal_auth
from manifold.config.loader import load_config
from manifold.security.crypto import Cipher, generate_key
from manifold.security.secret_store import SecretStore
from manifold.store.db import catalog_objects, default_url, open_database

pytestmark = pytest.mark.anyio
BEARER = "tok-0123456789-bearer"
API_KEY = "key-9876543210-header"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Catalog:
    ops: CatalogOperations
    store: SecretStore
    database: Path
    engine: object


@pytest.fixture
async def catalog(tmp_path: Path) -> AsyncIterator[Catalog]:
    (tmp_path / "manifold.yaml").write_text(f"gateway:\n  state_dir: {tmp_path / 'state'}\n")
    config = load_config(tmp_path / "manifold.yaml")
    engine = await open_database(default_url(tmp_path))
    store = SecretStore(engine, Cipher([generate_key()], source="test"))
    ops = CatalogOperations(engine, config, env={"TEAM": "sales"}, secrets=CatalogSecrets(store))
    yield Catalog(ops, store, tmp_path / "state" / "manifold.db", engine)
    await engine.dispose()


def upstream(bearer: str = BEARER, key: str = API_KEY) -> dict[str, object]:
    auth = {"mode": "static", "bearer": bearer, "headers": {"X-Api-Key": key, "X-Team": "${TEAM}"}}
    return {"id": "crm", "transport": "http", "url": "http://127.0.0.1:9/mcp", "auth": auth}


async def stored(c: Catalog) -> dict[str, object]:
    async with c.engine.connect() as conn:  # type: ignore[attr-defined]
        row = (await conn.execute(catalog_objects.select().where(catalog_objects.c.id == "crm"))).one()
    return row.body


def file_bytes(c: Catalog) -> bytes:
    return b"".join(p.read_bytes() for p in c.database.parent.glob("manifold.db*"))


async def test_a_typed_credential_is_stored_encrypted_and_resolves_to_what_was_typed(catalog: Catalog) -> None:
    await catalog.ops.create(Kind.UPSTREAM, upstream())
    body = await stored(catalog)
    auth = body["auth"]
    assert isinstance(auth, dict)
    assert str(auth["bearer"]).startswith("secret:catalog.crm.bearer.")
    assert str(auth["headers"]["X-Api-Key"]).startswith("secret:catalog.crm.headers-X-Api-Key.")
    assert auth["headers"]["X-Team"] == "${TEAM}"  # a reference is kept as written
    assert BEARER.encode() not in file_bytes(catalog) and API_KEY.encode() not in file_bytes(catalog)
    await catalog.store.load()
    assert catalog.store.lookup(str(auth["bearer"])[len("secret:") :]) == BEARER
    assert catalog.store.lookup(str(auth["headers"]["X-Api-Key"])[len("secret:") :]) == API_KEY
    shown = await catalog.ops.get(Kind.UPSTREAM, "crm")
    assert BEARER not in str(shown)


async def test_hidden_keeps_the_stored_value_and_a_new_one_replaces_it(catalog: Catalog) -> None:
    await catalog.ops.create(Kind.UPSTREAM, upstream())
    first = await stored(catalog)
    await catalog.ops.update(Kind.UPSTREAM, "crm", upstream(bearer=HIDDEN, key=HIDDEN))
    assert await stored(catalog) == first
    await catalog.ops.update(Kind.UPSTREAM, "crm", upstream(bearer="tok-new-value-0000", key=HIDDEN))
    second = await stored(catalog)
    names = {s.name for s in await catalog.store.list()}
    assert second["auth"]["bearer"] != first["auth"]["bearer"]  # type: ignore[index]
    assert str(first["auth"]["bearer"])[7:] not in names  # type: ignore[index] — the replaced value is gone
    assert str(second["auth"]["bearer"])[7:] in names  # type: ignore[index]
    assert len(names) == 2


async def test_a_refused_body_leaves_no_secret_and_a_deleted_upstream_takes_its_own(catalog: Catalog) -> None:
    bad = {**upstream(), "url": "not a url"}
    with pytest.raises(InvalidBody):
        await catalog.ops.create(Kind.UPSTREAM, bad)
    assert await catalog.store.list() == []
    await catalog.ops.create(Kind.UPSTREAM, upstream())
    assert len(await catalog.store.list()) == 2
    await catalog.ops.delete(Kind.UPSTREAM, "crm")
    assert await catalog.store.list() == []


def test_only_plain_text_auth_values_are_sealed() -> None:
    body = {
        "transport": "stdio",
        "command": "x",
        "env": {"TOKEN": "plain-env-value"},  # stdio env resolves ${ENV} only: left as given
        "auth": {"mode": "oauth", "client_id": "abc", "client_secret": "secret:mine", "scopes": ["a"]},
    }
    sealed, values = seal_auth(body, "gh", "0001")
    assert sealed == body and values == {}
    sealed, values = seal_auth({"auth": {"mode": "exchange", "client_secret": "s3cr3t"}}, "a b/c", "0002")
    assert values == {"catalog.a_b_c.client_secret.0002": "s3cr3t"}
