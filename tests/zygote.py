"""Start the test suite's Python processes (gateways, `manifold` commands, Python upstreams) by forking a
process that has already imported them, instead of a fresh interpreter each time.

Why: a fresh `python -m manifold.cli serve` spends about 2 s of CPU importing (mcp's types, SQLAlchemy,
Alembic, aiohttp, pydantic models) before it does anything, and the suite starts several hundred gateways,
upstreams and CLI commands: on two cores that was minutes of `make test`. A forked child starts with those
modules in memory and otherwise runs exactly what `python -m MODULE ARGS` / `python SCRIPT ARGS` would: its
own argv, environment, working directory and standard streams, `__main__` run by runpy, a normal interpreter
exit (atexit handlers, flushed streams) with the same exit code. It is still its own process — the tests
signal, kill and wait for it by pid as before.

What differs from a fresh interpreter, and why it does not matter here: modules are imported once in the
zygote, so a module that read the environment at import time would see the zygote's (the gateway reads its
environment when it starts serving, not at import); interpreter options (`-X`, PYTHON*
variables read at start-up) are the zygote's.

One zygote per test process, started on first use, ended when that process exits. tests/conftest.py turns it
on (`MANIFOLD_TEST_ZYGOTE=1`); `MANIFOLD_TEST_ZYGOTE=0 make test` starts everything with subprocess.Popen
instead, and so do the benchmarks, which share the launch code.

    process = spawn([sys.executable, "-m", "manifold.cli", "serve"], env=..., cwd=..., stdout=file)
    process.poll(); process.terminate(); process.wait(5); process.returncode
    done = await run(["-m", "manifold.cli", "keys", "list"], cwd=...)   # like anyio.run_process
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import IO, Any

import anyio

# What the processes the tests start import: the gateway and its CLI, and the upstream servers' SDKs.
PRELOAD = (
    "manifold.cli",
    "manifold.runtime.compose",
    "manifold.app",
    "manifold.store.schema",
    "manifold.store.migrations",
    "uvicorn",
    "uvicorn.config",
    "uvicorn.server",
    "uvicorn.main",
    "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.lifespan.on",
    "uvloop",
    "alembic.command",
    "alembic.runtime.migration",
    "aiosqlite",
    "asyncpg",
    "sqlalchemy.dialects.sqlite.aiosqlite",
    "sqlalchemy.dialects.postgresql.asyncpg",
    "mcp",
    "mcp.server",
    "mcp.server.lowlevel",
    "mcp.server.streamable_http_manager",
    "mcp.server.fastmcp",
    "fastmcp",
    "starlette.applications",
    "sse_starlette",
)
MAX_REQUEST = 1 << 20
ENV_SWITCH = "MANIFOLD_TEST_ZYGOTE"


def enabled() -> bool:
    """On in the test suite (tests/conftest.py), off elsewhere: the benchmarks start real fresh processes."""
    return os.environ.get(ENV_SWITCH, "0") not in ("0", "false", "no", "off")


# ---------------------------------------------------------------------------------------------------------
# The zygote process


def _preload() -> None:
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    # A thread would not survive the fork (its locks could be held forever in the child).
    assert threading.active_count() == 1, f"a preloaded module started a thread: {threading.enumerate()}"
    # The imported modules live as long as every child: frozen, as `manifold serve` freezes what its start-up
    # made, so a child's collections (its own freeze once it serves) look only at what the child made.
    gc.collect()
    gc.freeze()


def _serve(listener: socket.socket, control: socket.socket) -> dict[str, Any] | None:
    """The zygote's loop: fork a child per request, tell each requester its child's pid and then its exit
    code. Returns the request in a forked child (which then runs it); None when the test process is gone."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    waiting: dict[int, socket.socket] = {}
    while True:
        for key, _ in selector.select():
            if key.fileobj is control:
                if not control.recv(1):  # the test process exited
                    return None
            elif key.fileobj is wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                _reap(waiting)
            else:
                conn, _ = listener.accept()
                message, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
                request = json.loads(message)
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    selector.close()
                    for other in (listener, control, *waiting.values()):
                        other.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    conn.close()
                    for target, fd in enumerate(fds):
                        os.dup2(fd, target)
                        os.close(fd)
                    return request
                for fd in fds:
                    os.close(fd)
                conn.sendall(json.dumps({"pid": pid}).encode())
                waiting[pid] = conn
                _reap(waiting)


def _reap(waiting: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
            conn.close()


def _run_child(request: dict[str, Any]) -> int:
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv: list[str] = request["argv"]
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path[0] = os.getcwd()
            # `python -m X` runs X as __main__ only; X itself preloaded would make runpy warn.
            sys.modules.pop(argv[1], None)
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = str(Path(argv[0]).resolve().parent)
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except BaseException:  # as the interpreter would: the traceback on stderr, exit code 1
        traceback.print_exc()
        return 1
    return 0


def _zygote_main(path: str) -> int:
    _preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    control = socket.socket(fileno=int(os.environ.pop("MANIFOLD_ZYGOTE_CONTROL")))
    sys.stdout.flush()
    sys.stderr.flush()
    control.sendall(b"r")  # ready: listening
    request = _serve(listener, control)
    if request is None:
        return 0
    return _run_child(request)


# ---------------------------------------------------------------------------------------------------------
# The test process's side


class _Zygote:
    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="manifold-zygote-")
        self.path = os.path.join(self._dir.name, "z.sock")
        ours, theirs = socket.socketpair()
        self._control = ours
        env = {**os.environ, "MANIFOLD_ZYGOTE_CONTROL": str(theirs.fileno())}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.zygote", self.path],
            pass_fds=(theirs.fileno(),),
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._ready = False
        atexit.register(self.close)

    def connect(self) -> socket.socket:
        """A connection to the zygote, once it listens (it imports for about two seconds first)."""
        if not self._ready:
            if self._control.recv(1) != b"r":
                raise RuntimeError(f"the test zygote exited with {self._process.wait()}")
            self._ready = True
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(self.path)
        return conn

    def close(self) -> None:
        self._control.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(5)
        if self._process.poll() is None:
            self._process.kill()
        self._dir.cleanup()


_zygote: _Zygote | None = None
_zygote_pid: int | None = None


def _the_zygote() -> _Zygote:
    global _zygote, _zygote_pid
    if _zygote is None or _zygote_pid != os.getpid():
        _zygote = _Zygote()
        _zygote_pid = os.getpid()
    return _zygote


class ZygoteProcess:
    """A forked child, with the part of subprocess.Popen's interface the tests use."""

    def __init__(self, conn: socket.socket, args: list[str]) -> None:
        self.args = args
        self._conn = conn
        reply = json.loads(conn.recv(4096))
        self.pid: int = reply["pid"]
        self.returncode: int | None = None

    def _read_exit(self, timeout: float | None) -> None:
        if self.returncode is not None:
            return
        self._conn.settimeout(timeout)
        try:
            message = self._conn.recv(4096)
        except (TimeoutError, BlockingIOError):
            return
        self.returncode = json.loads(message)["exit"] if message else -signal.SIGKILL
        self._conn.close()

    def fileno(self) -> int:
        return self._conn.fileno()

    def poll(self) -> int | None:
        self._read_exit(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._read_exit(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
        return self.returncode

    async def wait_async(self) -> int:
        while self.returncode is None:
            await anyio.wait_readable(self._conn)
            self._read_exit(0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _fd(stream: IO[Any] | int | None, mode: int) -> tuple[int, bool]:
    """A file descriptor for a child's standard stream, and whether we opened it (and must close it)."""
    if stream is None or stream == subprocess.DEVNULL:
        return os.open(os.devnull, mode), True
    if isinstance(stream, int):
        return stream, False
    return stream.fileno(), False


def _python_args(argv: list[str]) -> list[str] | None:
    """`python -m X ...` / `python script ...` → what the zygote runs; None when it cannot (another
    interpreter, interpreter options)."""
    # Not realpath: another venv's python is a symlink to the same interpreter, with other packages.
    if not argv or os.path.abspath(argv[0]) != os.path.abspath(sys.executable):
        return None
    rest = argv[1:]
    if not rest or (rest[0].startswith("-") and rest[0] != "-m"):
        return None
    return rest


def spawn(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: IO[Any] | int | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
) -> ZygoteProcess | subprocess.Popen[bytes]:
    """Start `argv` (this interpreter running `-m MODULE` or a script) forked from the zygote; anything
    else — or with MANIFOLD_TEST_ZYGOTE=0 — through subprocess.Popen. `stderr=subprocess.STDOUT` is allowed."""
    args = _python_args(argv)
    if args is None or not enabled():
        return subprocess.Popen(argv, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr)
    opened: list[int] = []
    fds: list[int] = []
    for stream, mode in ((stdin, os.O_RDONLY), (stdout, os.O_WRONLY), (stderr, os.O_WRONLY)):
        if stream == subprocess.STDOUT:
            fds.append(fds[1])
            continue
        fd, ours = _fd(stream, mode)
        fds.append(fd)
        if ours:
            opened.append(fd)
    request = {"argv": args, "env": dict(os.environ if env is None else env), "cwd": str(cwd or os.getcwd())}
    try:
        conn = _the_zygote().connect()
        socket.send_fds(conn, [json.dumps(request).encode()], fds)
        return ZygoteProcess(conn, argv)
    finally:
        for fd in opened:
            os.close(fd)


async def run(
    argv: list[str],
    *,
    input: bytes | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Like anyio.run_process(argv, check=False): run to the end, its stdout and stderr captured."""
    if _python_args(argv) is None or not enabled():
        return await anyio.run_process(argv, input=input, check=False, cwd=cwd, env=env)
    with tempfile.TemporaryFile() as given, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        if input:
            given.write(input)
            given.seek(0)
        process = spawn(argv, env=env, cwd=cwd, stdin=given, stdout=out, stderr=err)
        assert isinstance(process, ZygoteProcess)
        code = await process.wait_async()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, code, out.read(), err.read())


if __name__ == "__main__":
    sys.exit(_zygote_main(sys.argv[1]))
