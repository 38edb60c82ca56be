"""Encryption at rest: where the key comes from, what a wrong key does (nothing, loudly), and the connect links
derived from it. Real SQLite files throughout."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import event

from manifold.outbound.oauth import tables  # noqa: F401 — registers the tables
from manifold.outbound.oauth.links import ConnectLinks, InvalidLink
from manifold.security import crypto
from manifold.security.crypto import ENV_VAR, Cipher, DecryptError, KeyProblem, WrongKey, write_key_file
from manifold.security.secret_store import SecretStore
from manifold.store.db import default_url, open_database

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def db_bytes(state: Path) -> bytes:
    """Every byte SQLite keeps for the database (main file, WAL, shared memory index aside)."""
    return b"".join(p.read_bytes() for p in sorted(state.glob("manifold.db*")) if not p.name.endswith("-shm"))


def test_first_load_creates_a_private_key_file_and_reuses_it(tmp_path: Path) -> None:
    first = Cipher.load(tmp_path)
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = first.encrypt(b"hello")
    second = Cipher.load(tmp_path)
    assert second.decrypt(token) == b"hello"
    assert second.source == str(key_file)


def test_the_environment_wins_and_lists_keys_primary_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    written_with_old = Fernet(old.encode()).encrypt(b"from before")
    monkeypatch.setenv(ENV_VAR, f"{new}, {old}")
    cipher = Cipher.load(tmp_path)
    assert not (tmp_path / "secret.key").exists()
    assert cipher.source == ENV_VAR
    assert cipher.decrypt(written_with_old) == b"from before"
    # New values are written with the first key only.
    assert Fernet(new.encode()).decrypt(cipher.encrypt(b"now")) == b"now"


def test_a_malformed_key_is_named_by_position_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = Fernet.generate_key().decode()
    monkeypatch.setenv(ENV_VAR, f"{good},not-a-key-SECRETISH")
    with pytest.raises(KeyProblem) as caught:
        Cipher.load(tmp_path)
    assert "entry 2" in str(caught.value) and ENV_VAR in str(caught.value)
    assert "SECRETISH" not in str(caught.value) and good not in str(caught.value)


def test_decrypting_with_another_key_says_so_without_the_value(tmp_path: Path) -> None:
    token = Cipher([Fernet.generate_key().decode()], source="a").encrypt(b"plaintext-value")
    with pytest.raises(DecryptError) as caught:
        Cipher([Fernet.generate_key().decode()], source="the other key").decrypt(token)
    assert "the other key" in str(caught.value) and "plaintext-value" not in str(caught.value)


async def test_a_wrong_key_is_refused_and_the_database_is_left_unchanged(tmp_path: Path) -> None:
    engine = await open_database(default_url(tmp_path))
    try:
        right = Cipher.load(tmp_path)
        await right.check(engine)  # first use: the canary is written
        store = SecretStore(engine, right)
        await store.set("github-token", "ghp_value_that_must_survive")
        await right.check(engine)  # the right key passes again
        before = db_bytes(tmp_path)

        wrong = Cipher([Fernet.generate_key().decode()], source="MANIFOLD_SECRET_KEY")
        with pytest.raises(WrongKey) as caught:
            await wrong.check(engine)
        assert "MANIFOLD_SECRET_KEY" in str(caught.value) and "nothing was changed" in str(caught.value)
        assert db_bytes(tmp_path) == before
        # The right key still reads everything.
        assert await SecretStore(engine, right).get_all() == {"github-token": "ghp_value_that_must_survive"}
    finally:
        await engine.dispose()


async def test_of_two_processes_starting_together_on_a_new_database_the_one_with_another_key_is_refused(
    tmp_path: Path,
) -> None:
    """Replicas with different keys started together on a new database: the other one writes the canary between
    this one's read (none yet) and its write. This one then reads theirs and is refused, at once (it used to
    let it pass and serve, each replica unable to read what the other encrypted)."""
    engine = await open_database(default_url(tmp_path))
    theirs = Cipher([Fernet.generate_key().decode()], source="the other replica's key")
    ours = Cipher([Fernet.generate_key().decode()], source="MANIFOLD_SECRET_KEY")
    raced: list[str] = []

    def the_other_writes_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not raced and statement.lstrip().upper().startswith("SELECT") and "crypto_canary" in statement:
            raced.append(statement)
            with sqlite3.connect(tmp_path / "manifold.db") as other:
                other.execute(
                    "INSERT INTO crypto_canary (id, token, created_at) VALUES (?, ?, 0)",
                    (crypto._CANARY_ID, theirs.encrypt(crypto._CANARY_TEXT).decode("ascii")),
                )

    event.listen(engine.sync_engine, "after_cursor_execute", the_other_writes_first)
    try:
        with pytest.raises(WrongKey):
            await ours.check(engine)
        assert raced  # the race happened as described
        await theirs.check(engine)  # theirs reads the database
    finally:
        await engine.dispose()


async def test_a_lost_key_file_is_not_silently_replaced(tmp_path: Path) -> None:
    """Deleting secret.key makes a new key on the next start; the database then refuses it."""
    engine = await open_database(default_url(tmp_path))
    try:
        await Cipher.load(tmp_path).check(engine)
        (tmp_path / "secret.key").unlink()
        with pytest.raises(WrongKey):
            await Cipher.load(tmp_path).check(engine)
    finally:
        await engine.dispose()


def test_a_running_process_rereads_a_rotated_key_file(tmp_path: Path) -> None:
    """`secrets rotate-key` writes [new, old] to the key file; a process that loaded only the old key meets
    a value written with the new one and reads the file again."""
    running = Cipher.load(tmp_path)
    old = running.keys[0]
    new = Fernet.generate_key().decode()
    write_key_file(tmp_path / "secret.key", [new, old])
    os.utime(tmp_path / "secret.key", ns=(1, 1))  # a different stamp even within one clock tick
    written_with_new = Fernet(new.encode()).encrypt(b"rotated")
    assert running.decrypt(written_with_new) == b"rotated"
    assert running.keys == [new, old]


# ---- connect links --------------------------------------------------------------------------------


def links(key: bytes = b"k" * 32, ttl: int = 600) -> ConnectLinks:
    return ConnectLinks([hashlib.sha256(key).digest()], ttl_seconds=ttl)


def test_a_link_names_its_user_and_upstream_only_to_the_gateway() -> None:
    url = links().mint("user:alice@corp.com", "github", "https://gw.example.com/")
    assert url.startswith("https://gw.example.com/connect/github?t=")
    assert "alice" not in url and "corp.com" not in url  # no PII in the URL (MCP elicitation rules)
    assert links().verify(url.split("t=", 1)[1], "github") == "user:alice@corp.com"


def test_a_link_for_another_upstream_or_altered_or_foreign_is_refused() -> None:
    token = links().mint("user:alice", "github", "https://gw").split("t=", 1)[1]
    with pytest.raises(InvalidLink, match="another upstream"):
        links().verify(token, "jira")
    with pytest.raises(InvalidLink, match="not valid"):
        links().verify(token[:-4] + "AAAA", "github")
    with pytest.raises(InvalidLink, match="not valid"):
        links(b"another gateway's key".ljust(32)).verify(token, "github")
    with pytest.raises(InvalidLink, match="not valid"):
        links().verify("é", "github")


def test_an_old_link_has_expired() -> None:
    token = links(ttl=600).mint("user:alice", "github", "https://gw").split("t=", 1)[1]
    with pytest.raises(InvalidLink, match="expired"):
        links(ttl=-61).verify(token, "github")


def test_links_survive_a_key_rotation() -> None:
    """Links derive their key from the secret keys: after rotation (new key first, old second) a link minted
    just before still works."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    minted = ConnectLinks.from_cipher(Cipher([old], source="x")).mint("user:a", "gh", "https://gw")
    rotated = ConnectLinks.from_cipher(Cipher([new, old], source="x"))
    assert rotated.verify(minted.split("t=", 1)[1], "gh") == "user:a"
