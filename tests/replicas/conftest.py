"""The database the replicas share, for each backend: a SQLite file (made by the harness) or a fresh
database in the process's throw-away PostgreSQL cluster (tests/postgres.py), dropped after the module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import postgres


@pytest.fixture(scope="session")
def pg_cluster() -> postgres.Cluster:
    return postgres.cluster()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The one database of a module's replicas: None (the harness makes a SQLite file) or a PostgreSQL URL."""
    if request.param == "sqlite":
        yield None
        return
    cluster: postgres.Cluster = request.getfixturevalue("pg_cluster")
    url = cluster.new_database()
    yield url
    cluster.drop_database(url)
