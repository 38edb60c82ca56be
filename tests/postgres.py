"""A throw-away PostgreSQL cluster for the tests: Debian's `postgresql` binaries (scripts/setup-postgres.sh
installs them), `initdb` into a temporary directory, `pg_ctl start` on a free loopback port with the unix
socket in the same directory and durability off (fsync, synchronous_commit, full_page_writes: a crash loses
nothing a test needs). One cluster per test process (each pytest-xdist worker has its own), started on first
use and stopped when the process ends (tests/conftest.py's session fixture, atexit as the backstop).

initdb refuses to run as root: when the tests run as root the cluster runs as the `postgres` user the Debian
package created (else `nobody`), in a directory handed to that user.

    cluster()                 the process's cluster (started now if need be)
    cluster().new_database()  a fresh, empty database: its postgresql+asyncpg:// URL
    MANIFOLD_TEST_DATABASE    "postgresql": the e2e harness gives every gateway a fresh database here
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

ENV_VAR = "MANIFOLD_TEST_DATABASE"
SUPERUSER = "manifold"


def wanted() -> bool:
    """The e2e suite runs on PostgreSQL (MANIFOLD_TEST_DATABASE=postgresql) rather than SQLite."""
    value = os.environ.get(ENV_VAR, "sqlite").strip().lower()
    if value not in ("sqlite", "postgresql"):
        raise RuntimeError(f"{ENV_VAR}={value!r}: expected sqlite or postgresql")
    return value == "postgresql"


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError("no PostgreSQL server binaries (initdb): run scripts/setup-postgres.sh")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self) -> None:
        self.bindir = _bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="manifold-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.running = False
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres" if _has_user("postgres") else "nobody"
            entry = pwd.getpwnam(self._user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.dir.chmod(0o700)

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, cwd=self.dir, check=False)
        if done.returncode != 0:
            log = self.dir / "postgres.log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({done.returncode}):\n{done.stdout.decode(errors='replace')}"
                f"{done.stderr.decode(errors='replace')}\n{tail}"
            )

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = " ".join(
            (
                f"-p {self.port}",
                "-h 127.0.0.1",
                f"-k {self.dir}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=300",
                "-c shared_buffers=32MB",
            )
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "postgres.log"), "-o", options, "-w", "start")
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            with contextlib.suppress(RuntimeError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", SUPERUSER, "-d", database, "-c", sql],
            capture_output=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        name = f"m_{uuid.uuid4().hex[:16]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with contextlib.suppress(RuntimeError):
            self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


_cluster: Cluster | None = None


def cluster() -> Cluster:
    global _cluster
    if _cluster is None:
        started = Cluster()
        atexit.register(started.stop)
        started.start()
        _cluster = started
    return _cluster


def stop() -> None:
    global _cluster
    if _cluster is not None:
        _cluster.stop()
        _cluster = None
