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

import asyncio
import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

ENV_VAR = "MANIFOLD_TEST_DATABASE"
TEMPLATE = "m_template_migrated"
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
        self._migrated = False
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

    def new_database(self, *, migrated: bool = False) -> str:
        """A fresh database, empty or (`migrated`) already holding the schema's tables and nothing else: a
        copy of a template database migrated once per cluster, so a gateway's start-up finds the schema
        current instead of spending half a second creating it (the migrations themselves are tested in
        tests/unit/test_schema.py). Its URL."""
        name = f"m_{uuid.uuid4().hex[:16]}"
        template = f' TEMPLATE "{self._template()}"' if migrated else ""
        self.psql(f'CREATE DATABASE "{name}"{template}')
        return self.url(name)

    def _template(self) -> str:
        if not self._migrated:
            self.psql(f'CREATE DATABASE "{TEMPLATE}"')
            url = self.url(TEMPLATE)

            async def upgrade() -> None:
                from manifold.store import schema
                from manifold.store.db import connect

                engine = connect(url)
                try:
                    await schema.upgrade(engine)
                finally:
                    await engine.dispose()

            # The caller may be inside a running event loop (the e2e harness): migrate on a thread of its own.
            errors: list[BaseException] = []
            thread = threading.Thread(target=lambda: _capture(errors, lambda: asyncio.run(upgrade())))
            thread.start()
            thread.join()
            if errors:
                raise errors[0]
            self._migrated = True
        return TEMPLATE

    def dump(self, url: str) -> str:
        """Every row of the database at `url` (pg_dump --data-only), to compare a database before and after."""
        done = subprocess.run(
            [str(self.bindir / "pg_dump"), "--data-only", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
             "-d", url.rsplit("/", 1)[1]],
            capture_output=True, check=True,
        )  # fmt: skip
        # pg_dump fences its output with a random restrict key (CVE-2025-8714): not content, left out.
        lines = done.stdout.decode().splitlines(keepends=True)
        return "".join(line for line in lines if not line.startswith(("\\restrict ", "\\unrestrict ")))

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with contextlib.suppress(RuntimeError):
            self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _capture(errors: list[BaseException], run: Callable[[], object]) -> None:
    try:
        run()
    except BaseException as exc:  # handed to the calling thread
        errors.append(exc)


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
