"""Shared pytest configuration for the whole suite.

anyio's plugin is enabled in pyproject (`-p anyio`); every async test runs on asyncio only (the gateway
and the SDKs it uses are asyncio code). Session-scoped, so module- and session-scoped async fixtures can
use it too. A module may still override it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests import postgres

# Gateways, `manifold` commands and Python upstreams start forked from a process that has imported them
# (tests/zygote.py): about 2 s of CPU less per start. MANIFOLD_TEST_ZYGOTE=0 starts fresh interpreters.
os.environ.setdefault("MANIFOLD_TEST_ZYGOTE", "1")

# The fuzz package's request counts, printed at the end of the run: registered here, the conftest every
# process loads (the pytest-xdist controller never loads tests/fuzz/conftest.py).
from tests.fuzz.report import pytest_sessionfinish, pytest_terminal_summary, pytest_testnodedown  # noqa: F401


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _postgres_cluster_stopped() -> Iterator[None]:
    """The process's throw-away PostgreSQL cluster (tests/postgres.py, started on first use) ends with the
    session (atexit is only the backstop)."""
    yield
    postgres.stop()


@pytest.fixture
def postgres_url() -> str:
    """A fresh, empty PostgreSQL database in the test cluster."""
    return postgres.cluster().new_database()
