"""The encryption key of stored tokens and secrets, seen from the running gateway: a restart keeps what was
stored, and a wrong key stops the gateway with a clear message and changes nothing."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests import postgres
from tests.e2e.harness import REPO, database_url, run_gateway, write_config

pytestmark = pytest.mark.anyio


def _secrets(directory: Path, *args: str, value: str | None = None, env: dict | None = None):
    import os

    return subprocess.run(
        [sys.executable, "-m", "manifold.cli", "--config", str(directory / "manifold.yaml"), "secrets", *args],
        input=value,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def _digest(directory: Path) -> str:
    """The database's content: the SQLite file's bytes, or (PostgreSQL, tests/postgres.py) every table's rows."""
    url = database_url(directory)
    if url is None:
        return hashlib.sha256((directory / "state" / "manifold.db").read_bytes()).hexdigest()
    return hashlib.sha256(postgres.cluster().dump(url).encode()).hexdigest()


async def test_a_wrong_key_stops_the_gateway_clearly_and_destroys_nothing(tmp_path: Path) -> None:
    write_config(tmp_path, {})
    stored = _secrets(tmp_path, "set", "upstream-token", value="the-secret-value-123")
    assert stored.returncode == 0, stored.stderr
    before = _digest(tmp_path)
    key_file = (tmp_path / "state" / "secret.key").read_bytes()

    wrong = {"MANIFOLD_SECRET_KEY": Fernet.generate_key().decode()}
    with pytest.raises(RuntimeError) as failed:
        async with run_gateway({}, env=wrong, directory=tmp_path):
            pass
    message = str(failed.value)
    assert "does not match this database" in message
    assert "the-secret-value-123" not in message and wrong["MANIFOLD_SECRET_KEY"] not in message
    assert "Traceback" not in message
    assert _digest(tmp_path) == before, "a failed start must not change the database"
    assert (tmp_path / "state" / "secret.key").read_bytes() == key_file

    # The right key (the key file) still reads everything, and the gateway starts.
    async with run_gateway({}, directory=tmp_path) as gw:
        assert (await gw.http().get(f"{gw.base}/healthz")).status_code == 200
    listed = _secrets(tmp_path, "list")
    assert "upstream-token" in listed.stdout and "the-secret-value-123" not in listed.stdout
