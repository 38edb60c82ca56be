"""The gateway's encryption at rest, for everything secret it stores: OAuth tokens and client secrets,
`secret:NAME` values (static headers), and, through `Cipher.derive`, the keys web-session cookies are signed
with.

Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) through `MultiFernet`: the first key encrypts, every
key decrypts, so a key can be rotated while old rows are still readable. Keys come from the environment
variable MANIFOLD_SECRET_KEY (comma-separated, newest first) or, when it is unset, from
`state_dir/secret.key` (created with mode 0600 on first use; one key per line, newest first).

A database written with one key and opened with another must fail loudly and early, before anything is
overwritten: `Cipher.check` decrypts a canary row at startup and raises `WrongKey` without touching the
database. No key and no plaintext ever appears in an error or a log line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import stat
import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.security.tables import crypto_canary

log = logging.getLogger(__name__)

ENV_VAR = "MANIFOLD_SECRET_KEY"
KEY_FILE = "secret.key"
_CANARY_ID = "canary"
_CANARY_TEXT = b"manifold secret-key canary"
_SEPARATORS = re.compile(r"[,\s]+")
_RELOAD_MIN_SECONDS = 1.0


class WrongKey(Exception):
    """The configured key cannot read what this database holds."""


class DecryptError(Exception):
    """A stored value could not be decrypted with any configured key."""


class KeyProblem(Exception):
    """The key material itself is unusable (malformed, unreadable file)."""


def generate_key() -> str:
    return Fernet.generate_key().decode()


def parse_keys(text: str, where: str) -> list[str]:
    """Keys from `text` (separated by commas or whitespace), each checked to be a Fernet key.

    The message names the position of a bad entry, never its value."""
    keys = [k for k in _SEPARATORS.split(text.strip()) if k]
    if not keys:
        raise KeyProblem(f"{where} holds no key")
    for position, key in enumerate(keys, 1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            raise KeyProblem(
                f"{where}: entry {position} is not a Fernet key (32 url-safe base64-encoded bytes; "
                "make one with `manifold secrets rotate-key` or Fernet.generate_key())"
            ) from None
    return keys


def write_key_file(path: Path, keys: list[str]) -> None:
    """Replace `path` atomically with these keys (newest first), readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, ("\n".join(keys) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class Cipher:
    """MultiFernet over the configured keys, primary (encrypting) key first."""

    def __init__(self, keys: list[str], *, source: str, key_file: Path | None = None) -> None:
        if not keys:
            raise KeyProblem("no secret key given")
        self.source = source  # where the keys came from, for messages: never the keys themselves
        self._key_file = key_file
        self._set_keys(keys)
        self._file_stamp = self._stamp()
        self._next_reload = 0.0

    def _set_keys(self, keys: list[str]) -> None:
        self._keys = list(keys)
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])

    @classmethod
    def load(cls, state_dir: Path) -> Cipher:
        """Keys from MANIFOLD_SECRET_KEY, else from state_dir/secret.key (created on first use)."""
        env = os.environ.get(ENV_VAR)
        if env is not None and env.strip():
            return cls(parse_keys(env, ENV_VAR), source=ENV_VAR)
        path = Path(state_dir) / KEY_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process created it a moment ago: use theirs
                pass
            else:
                try:
                    os.write(fd, (generate_key() + "\n").encode())
                finally:
                    os.close(fd)
                log.info("created a new secret key in %s (keep it: the stored secrets need it)", path)
        return cls(_read_key_file(path), source=str(path), key_file=path)

    @property
    def keys(self) -> list[str]:
        """The keys, primary first (for `manifold secrets rotate-key` only)."""
        return list(self._keys)

    @property
    def key_file(self) -> Path | None:
        return self._key_file

    def encrypt(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            pass
        # `manifold secrets rotate-key` may have re-encrypted the database with a new key and written it to
        # the key file while this process ran: read the file again (at most once a second) and retry.
        if self._reload():
            try:
                return self._fernet.decrypt(token)
            except InvalidToken:
                pass
        raise DecryptError(
            f"a stored secret cannot be decrypted with the key from {self.source} (it was written with another key)"
        ) from None

    def encrypt_text(self, text: str) -> str:
        return self.encrypt(text.encode()).decode("ascii")

    def decrypt_text(self, token: str) -> str:
        return self.decrypt(token.encode("ascii")).decode()

    def rotate(self, token: str) -> str:
        """Re-encrypt a stored token with the primary key (decrypting with any key)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise DecryptError(f"a stored secret cannot be decrypted with the keys from {self.source}") from None

    def derive(self, purpose: bytes) -> list[bytes]:
        """One 32-byte key per configured key, for another use (HMAC or Fernet) that must not share the
        encryption key itself: HMAC-SHA256(key, purpose), primary first."""
        return [hmac.new(base64.urlsafe_b64decode(k), purpose, hashlib.sha256).digest() for k in self._keys]

    async def check(self, engine: AsyncEngine) -> None:
        """Prove the key reads this database (a canary row; written on first use). A wrong key raises WrongKey
        and changes nothing."""
        for _ in range(2):
            async with engine.connect() as conn:
                query = select(crypto_canary.c.token).where(crypto_canary.c.id == _CANARY_ID)
                row = (await conn.execute(query)).first()
            if row is not None:
                try:
                    plain = self.decrypt(row.token.encode("ascii"))
                except DecryptError:
                    plain = None
                if plain != _CANARY_TEXT:
                    raise WrongKey(
                        f"the secret key from {self.source} does not match this database: its stored secrets and "
                        f"OAuth connections were encrypted with another key. Set {ENV_VAR} (or restore "
                        f"the state dir's {KEY_FILE}) to the key used before; nothing was changed."
                    )
                return
            try:
                async with engine.begin() as conn:
                    await conn.execute(
                        crypto_canary.insert().values(
                            id=_CANARY_ID, token=self.encrypt(_CANARY_TEXT).decode("ascii"), created_at=time.time()
                        )
                    )
                return
            except IntegrityError:
                # Another process wrote it first (replicas started together on a new database): theirs is read
                # and checked now, not at the next start (replica probe: two replicas with different keys both
                # served, each unable to read what the other wrote).
                continue

    def _stamp(self) -> tuple[int, int] | None:
        if self._key_file is None:
            return None
        try:
            st = self._key_file.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _reload(self) -> bool:
        if self._key_file is None:
            return False
        now = time.monotonic()
        if now < self._next_reload:
            return False
        self._next_reload = now + _RELOAD_MIN_SECONDS
        stamp = self._stamp()
        if stamp is None or stamp == self._file_stamp:
            return False
        try:
            keys = _read_key_file(self._key_file)
        except KeyProblem as exc:
            log.warning("secret key file changed but cannot be used: %s", exc)
            return False
        self._file_stamp = stamp
        self._set_keys(keys)
        log.info("secret keys re-read from %s", self._key_file)
        return True


def _read_key_file(path: Path) -> list[str]:
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise KeyProblem(f"cannot read the secret key file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is readable by other users: run `chmod 600 %s`", path, path)
    return parse_keys(text, str(path))
