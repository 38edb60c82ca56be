"""`secret:NAME` values: the store, and `manifold secrets set|list|delete|rotate-key` against a real SQLite file."""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import pytest

from manifold.config.loaded import LoadedConfig
from manifold.config.loader import load_config
from manifold.outbound import secrets_cli
from manifold.outbound.oauth import tables  # noqa: F401 — registers the tables
from manifold.outbound.oauth.client import OAuthFlows
from manifold.outbound.oauth.vault import Connection, Vault
from manifold.security.crypto import ENV_VAR, Cipher
from manifold.security.secret_store import InvalidSecretName, SecretStore, UnknownSecret
from manifold.store.db import default_url, open_database

VALUE = "sk-live-abcdef0123456789"


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def config(tmp_path: Path) -> LoadedConfig:
    (tmp_path / "manifold.yaml").write_text("gateway:\n  state_dir: state\n")
    return load_config(tmp_path / "manifold.yaml")


def cli(config: LoadedConfig, *argv: str, stdin: str = "", monkeypatch: pytest.MonkeyPatch) -> int:
    parser = argparse.ArgumentParser()
    secrets_cli.register(parser.add_subparsers(dest="command"))
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return secrets_cli.run(parser.parse_args(["secrets", *argv]), lambda: config)


def state_bytes(config: LoadedConfig) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(config.state_dir.glob("manifold.db*")) if not p.name.endswith("shm"))


@pytest.mark.anyio
async def test_the_store_encrypts_and_looks_up_in_memory(tmp_path: Path) -> None:
    engine = await open_database(default_url(tmp_path))
    try:
        cipher = Cipher.load(tmp_path)
        store = SecretStore(engine, cipher)
        await store.set("api-key", VALUE)
        await store.set("api-key", VALUE + "-v2")  # replaces
        assert [s.name for s in await store.list()] == ["api-key"]
        reader = SecretStore(engine, cipher)
        with pytest.raises(UnknownSecret, match="manifold secrets set api-key"):
            reader.lookup("api-key")  # not loaded yet
        await reader.load()
        assert reader.lookup("api-key") == VALUE + "-v2"
        with pytest.raises(UnknownSecret) as caught:
            reader.lookup("nope")
        assert "nope" in str(caught.value)
        with pytest.raises(InvalidSecretName):
            await store.set("bad name", "x")
        assert await store.delete("api-key") and not await store.delete("api-key")
        await engine.dispose()
        assert VALUE.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("manifold.db*"))
    finally:
        await engine.dispose()


def test_set_reads_the_value_from_stdin_and_never_prints_it(
    config: LoadedConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(config, "set", "github-token", stdin=VALUE + "\n", monkeypatch=monkeypatch) == 0
    assert cli(config, "list", monkeypatch=monkeypatch) == 0
    out = capsys.readouterr()
    assert "secret:github-token" in out.out and "github-token\t" in out.out
    assert VALUE not in out.out + out.err
    assert VALUE.encode() not in state_bytes(config)

    assert cli(config, "set", "empty", stdin="", monkeypatch=monkeypatch) == 2
    assert "no value" in capsys.readouterr().err
    assert cli(config, "delete", "github-token", monkeypatch=monkeypatch) == 0
    assert cli(config, "delete", "github-token", monkeypatch=monkeypatch) == 1
    assert "no secret named 'github-token'" in capsys.readouterr().err


def test_a_wrong_key_stops_every_command_and_changes_nothing(
    config: LoadedConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(config, "set", "a", stdin=VALUE, monkeypatch=monkeypatch) == 0
    before = state_bytes(config)
    monkeypatch.setenv(ENV_VAR, Cipher.load(config.state_dir / "elsewhere").keys[0])
    assert cli(config, "set", "a", stdin="overwrite", monkeypatch=monkeypatch) == 1
    assert cli(config, "rotate-key", monkeypatch=monkeypatch) == 1
    assert "does not match this database" in capsys.readouterr().err
    assert state_bytes(config) == before


def test_rotate_key_reencrypts_everything_and_keeps_it_readable(
    config: LoadedConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    assert cli(config, "set", "a", stdin=VALUE, monkeypatch=monkeypatch) == 0
    old_key = Cipher.load(config.state_dir).keys[0]
    asyncio.run(_store_connection(config))
    capsys.readouterr()

    assert cli(config, "rotate-key", monkeypatch=monkeypatch) == 0
    out = capsys.readouterr().out
    assert "re-encrypted" in out and str(config.state_dir / "secret.key") in out
    keys = Cipher.load(config.state_dir).keys
    assert len(keys) == 2 and keys[1] == old_key and keys[0] != old_key
    assert not any(k in out for k in keys)  # the file holds the keys; the output does not

    # Everything is readable with the new key ALONE: every row was re-encrypted.
    monkeypatch.setenv(ENV_VAR, keys[0])
    assert asyncio.run(_read_back(config)) == (VALUE, "access-token-text", "refresh-token-text")

    # With the keys in the environment, the new value is printed for the operator to set.
    monkeypatch.setenv(ENV_VAR, ",".join(keys))
    assert cli(config, "rotate-key", monkeypatch=monkeypatch) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{ENV_VAR}=")]
    assert len(printed) == 1
    new_keys = printed[0].split("=", 1)[1].split(",")
    assert new_keys[1:] == keys
    monkeypatch.setenv(ENV_VAR, new_keys[0])
    assert asyncio.run(_read_back(config)) == (VALUE, "access-token-text", "refresh-token-text")


async def _store_connection(config: LoadedConfig) -> None:
    engine = await open_database(config.database_url)
    try:
        now = time.time()
        await Vault(engine, Cipher.load(config.state_dir)).put(
            Connection(
                user="user:alice",
                upstream="github",
                access_token="access-token-text",
                refresh_token="refresh-token-text",
                expires_at=now + 3600,
                scopes=["repo"],
                token_type="Bearer",
                issuer="https://github.com",
                client_id="abc",
                created_at=now,
                updated_at=now,
            )
        )
    finally:
        await engine.dispose()


async def _read_back(config: LoadedConfig) -> tuple[str, str, str | None]:
    engine = await open_database(config.database_url)
    try:
        cipher = Cipher.load(config.state_dir)
        await cipher.check(engine)
        secrets = await SecretStore(engine, cipher).get_all()
        connection = await OAuthFlows(engine, cipher).vault.get("user:alice", "github")
        assert connection is not None
        return secrets["a"], connection.access_token, connection.refresh_token
    finally:
        await engine.dispose()
