"""Stdio message transport: one long-lived subprocess, newline-delimited JSON on stdin/stdout.

The child gets the config's `env` on top of a minimal inherited environment, never the gateway's whole
environment (which holds the gateway's own secrets). Its stderr goes to the debug log, capped; its last
lines are kept (bounded) so that when it dies the error, the warning and /healthz say what it said, with
anything that looks like a secret replaced by `[redacted]`.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from functools import partial
from pathlib import Path
from typing import Protocol

import orjson

from manifold import jsoncodec
from manifold.config.models import UpstreamConfig
from manifold.protocol import PARSE_ERROR
from manifold.upstream.base import TOO_DEEP, Deliver, ErrorKind, OnClosed, UpstreamError, UpstreamSessionLost

logger = logging.getLogger(__name__)

INHERITED_ENV = (
    "PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TERM", "TMPDIR", "TEMP", "TMP", "TZ",
    "USER", "LOGNAME", "SHELL", "SYSTEMROOT", "SYSTEMDRIVE", "WINDIR", "COMSPEC", "PATHEXT", "APPDATA",
    "LOCALAPPDATA", "PROGRAMDATA", "PROGRAMFILES", "USERPROFILE",
)  # fmt: skip
MAX_LINE_BYTES = 32 * 1024 * 1024
STDERR_LINE_CHARS = 500
STDERR_MAX_LINES = 1000  # per process; a chatty server must not flood the log
STDERR_TAIL_LINES = 20  # kept per process for the report of its death
STDERR_TAIL_CHARS = 300  # each, after redaction
STDERR_SETTLE_SECONDS = 0.5  # how long a death's report waits for the last stderr lines to arrive
# How long a closed process may take to exit after its stdin is closed, then after SIGTERM, before the next
# step (the MCP stdio shutdown: close stdin, SIGTERM, SIGKILL). A stop waits for it (after the calls in flight),
# so it is short: a server that ignores both costs a stop 2 s (resilience review: 4 s with 2.0).
EXIT_GRACE_SECONDS = 1.0
# How long a process whose stdin closed is given to exit (a dying one closes its pipes a moment before its exit is
# seen) before it is taken for one that closed its stdin and lives on, deaf, and is stopped.
DEAF_SETTLE_SECONDS = 0.5
# Requests whose place in the stdin stream is remembered, to tell which of them a process that died never read
# (`_never_read`); an older one is taken as read (never sent again).
MAX_TRACKED_REQUESTS = 4096
DEAF = "closed its stdin but kept running, so it could read no more messages; the gateway stopped its process"
REDACTED = "[redacted]"
MIN_SECRET_CHARS = 4  # env values shorter than this are not secrets worth hiding (and hiding them garbles text)
_SECRET_SHAPES = re.compile(
    r"(?i:bearer|basic|token)[ =:]+\S+"  # an authorization value, whatever follows
    # a value named like a secret: PASSWORD=…, AWS_SECRET_ACCESS_KEY=…, "api_key": "…" (ops probe: short
    # ones passed, and stderr reaches /healthz, the log and callers' errors)
    r"""|(?i:[\w.-]*(?:secret|passw(?:or)?d|pwd|api[_-]?key|access[_-]?key|private[_-]?key|credential|auth)[\w.-]*)"""
    r"""["']?\s*[=:]\s*["']?(?:(?i:bearer|basic)\s+)?[^\s"',;]+"""
    r"|(?<=://)[^/\s:@]*:[^/\s@]*@"  # a URL's user:password@
    r"|\b[0-9a-fA-F]{24,}\b"  # long hex runs (keys, digests)
    r"|(?P<run>[A-Za-z0-9+/_-]{32,}={0,2})"  # long base64(url) runs
)
# A run that is a file path, not base64: words between slashes, each lowercase (digits, `_`, `-`) or capitalised,
# none long. Random base64 of 32+ characters is that with a chance of about 1e-8; a path that is not (camel case,
# a long segment) is still redacted. Without it "[redacted] does not exist" was all a missing folder was told as.
_PATH_SEGMENT = re.compile(r"(?:[a-z0-9_-]{1,24}|[A-Z][a-z0-9_-]{0,23})?")


def _redacted(match: re.Match[str]) -> str:
    run = match.group("run")
    if run is not None and "/" in run and all(_PATH_SEGMENT.fullmatch(part) for part in run.split("/")):
        return run
    return REDACTED


class ProcessExited(UpstreamError):
    """A stdio upstream's process ended without being asked to. `stderr`: its last lines, redacted."""

    def __init__(self, upstream_id: str, reason: str, stderr: tuple[str, ...]) -> None:
        super().__init__(upstream_id, reason, kind=ErrorKind.CLOSED)
        self.stderr = stderr


def stderr_of(error: BaseException | None) -> tuple[str, ...]:
    """The last stderr lines a dead stdio process left, when `error` reports one; else ()."""
    return error.stderr if isinstance(error, ProcessExited) else ()


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with the given secret values and anything shaped like a credential replaced."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return _SECRET_SHAPES.sub(_redacted, text)


def _end_descendants(proc: _Running) -> None:
    """Kill what is left of the command's session (it runs in its own, `start_new_session`): helpers it forked
    outlived it, one orphan per crash or restart and every one at the gateway's stop (ops probe). Called once
    the command itself has exited, before its id can be reused: a session's id is its leader's pid."""
    if sys.platform == "win32":
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class _Running(Protocol):
    """What the transport uses of a running command: `asyncio.subprocess.Process` (Windows) or `_Child`."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    @property
    def stdin(self) -> asyncio.StreamWriter | None: ...
    @property
    def stdout(self) -> asyncio.StreamReader | None: ...
    @property
    def stderr(self) -> asyncio.StreamReader | None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class _Child:
    """A command started by `StdioTransport._start_on_own_pipes`: `subprocess.Popen` and the gateway's ends of
    its pipes as streams. `returncode` is set once the exit is seen (`_watch_exit`)."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdin: asyncio.StreamWriter,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
    ) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdin: asyncio.StreamWriter | None = stdin
        self.stdout: asyncio.StreamReader | None = stdout
        self.stderr: asyncio.StreamReader | None = stderr

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def terminate(self) -> None:
        self._popen.terminate()  # a no-op once it is reaped: never a signal to a reused pid

    def kill(self) -> None:
        self._popen.kill()


class _StdinProtocol(asyncio.streams.FlowControlMixin):
    """The protocol of the gateway's end of a command's stdin: `StreamWriter.drain` waits on it."""


def _watch_exit(loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes], exited: asyncio.Future[None]) -> None:
    """Reap the command once it exits and then set `exited`: told by a pidfd where there is one (Linux 5.3), else
    by a thread that waits for it (what asyncio's own child watcher does)."""

    def reaped() -> None:
        popen.poll()
        if not exited.done():
            exited.set_result(None)

    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):

        def wait() -> None:
            popen.wait()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(reaped)

        threading.Thread(target=wait, name=f"stdio-wait-{popen.pid}", daemon=True).start()
        return

    def readable() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        reaped()

    loop.add_reader(pidfd, readable)


class _ChildProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """(Windows) `asyncio.create_subprocess_exec`'s protocol, also telling when the process itself has exited: asyncio's
    `Process.wait()` returns only once its pipes are closed too (uvloop's does not wait for them), and a helper
    the command forked may hold its stdout open after it died."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        super().pipe_connection_lost(fd, exc)
        # stdin broke (the process went away while a message was being written; `send` reports that). asyncio
        # keeps the BrokenPipeError for `stdin.wait_closed()`, which nobody awaits, and Pythons before 3.11.5
        # (Debian's 3.11.2 among them) then logged "Future exception was never retrieved" with a traceback.
        closed = getattr(self, "_stdin_closed", None)
        if fd == 0 and isinstance(closed, asyncio.Future) and closed.done() and not closed.cancelled():
            closed.exception()  # retrieved: not logged


def child_environment(config: UpstreamConfig) -> dict[str, str]:
    env = {name: value for name in INHERITED_ENV if (value := os.environ.get(name)) is not None}
    env.update(config.env)
    return env


class StdioTransport:
    kind = "stdio"

    def __init__(self, upstream_id: str, config: UpstreamConfig) -> None:
        assert config.command
        self.upstream_id = upstream_id
        self._config = config
        self._proc: _Running | None = None
        self._exit: asyncio.Future[None] | None = None  # done once the process has exited (pipes open or not)
        self._pipes: list[asyncio.BaseTransport] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        # The last stderr lines, raw but cut (redacted only when shown): bounded to TAIL_LINES x TAIL_CHARS.
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._secrets = tuple(
            sorted((v for v in config.env.values() if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)
        )
        self._exited: ProcessExited | None = None
        # A duplicate of the gateway's end of the process's stdin, watched: it turns readable (an error) once no
        # process holds the other end (it closed its stdin, or died). None once closed, and on Windows.
        self._stdin_watch: int | None = None
        self._deaf = False  # the process closed its stdin and lived on: the gateway stopped it
        self._written = 0  # bytes handed to its stdin
        self._starts: deque[tuple[int, int]] = deque(maxlen=MAX_TRACKED_REQUESTS)  # (offset, request id)

    def _start_failure(self, exc: OSError) -> str:
        """Why the command did not start, with what was looked for and where (never its arguments: they may
        hold secrets)."""
        # Only the program: a command written with its arguments in it (`npx -y srv --api-key ...`) would show
        # them, and they may hold secrets (review); the stderr rules blank anything else shaped like one.
        written = str(self._config.command)
        command = written.split()[0] if written.split() else written
        for secret in self._secrets:  # the upstream's env values, should one be in the program's name
            command = command.replace(secret, REDACTED)
        command = command[:200]
        if " " in written.strip() and not Path(written).exists():
            # A program with arguments written into `command` (a program whose own path holds a space is
            # named whole: second review).
            return (
                f"could not start its command: no program '{command} ...' (if what follows '{command}' are its "
                "arguments, they go in 'args')"
            )
        cwd = self._config.cwd
        if "/" not in command:
            where = " on PATH"  # a bare name is looked up in PATH, not in the folder
        else:
            where = f" in {cwd}" if cwd is not None and not command.startswith("/") else ""
        if isinstance(exc, FileNotFoundError):
            if cwd is not None and not Path(cwd).is_dir():
                return f"could not start its command: its folder {cwd} does not exist"
            return f"could not start its command: no '{command}'{where}"
        if isinstance(exc, PermissionError):
            return f"could not start its command: '{command}'{where} is not executable"
        return f"could not start its command '{command}' ({type(exc).__name__})"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def connect(self, deliver: Deliver, on_closed: OnClosed) -> None:
        loop = asyncio.get_running_loop()
        try:
            if sys.platform == "win32":
                self._proc, self._exit, self._pipes = await self._start_by_the_loop(loop)
            else:
                self._proc, self._exit, self._pipes = await self._start_on_own_pipes(loop)
        except OSError as exc:
            raise UpstreamError(self.upstream_id, self._start_failure(exc)) from None
        if self._stdin_watch is not None:
            loop.add_reader(self._stdin_watch, self._stdin_closed)
        self._tasks = [
            asyncio.create_task(self._watch(deliver, on_closed)),
            asyncio.create_task(self._drain_stderr()),
        ]

    async def _start_on_own_pipes(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[_Running, asyncio.Future[None], list[asyncio.BaseTransport]]:
        """Start the command with `subprocess.Popen` on pipes the gateway made itself: the child holds its ends at
        fds 0-2 and nothing else (`close_fds`), the gateway closes its copies of them, and so a child that closes
        its stdin (or dies) closes the pipe: the next write fails at once. `loop.subprocess_exec` under uvloop
        (0.23) leaves the child inheritable duplicates of its socketpair ends at fds >= 3 (`close_fds`/`pass_fds`
        do not change that; only a `preexec_fn`, unsafe in a gateway that has threads, could close them): a child
        that closed its stdin closed nothing, the gateway's writes went on succeeding, and each call waited out
        its call_timeout (the third stdio review). Its own session (`start_new_session`) keeps the gateway's
        signals (Ctrl-C) to the gateway."""
        assert self._config.command
        ends: list[int] = []
        try:
            for _ in range(3):
                ends += os.pipe()
            in_read, in_write, out_read, out_write, err_read, err_write = ends
            popen = subprocess.Popen(
                [self._config.command, *self._config.args],
                stdin=in_read,
                stdout=out_write,
                stderr=err_write,
                env=child_environment(self._config),
                cwd=self._config.cwd,
                close_fds=True,
                start_new_session=True,
            )
        except BaseException:
            for fd in ends:
                os.close(fd)
            raise
        for fd in (in_read, out_write, err_write):
            os.close(fd)  # the child's ends: the child's alone now
        self._stdin_watch = os.dup(in_write)
        exited: asyncio.Future[None] = loop.create_future()
        _watch_exit(loop, popen, exited)
        stdout = asyncio.StreamReader(MAX_LINE_BYTES, loop)
        stderr = asyncio.StreamReader(MAX_LINE_BYTES, loop)
        files = [open(fd, mode, buffering=0) for fd, mode in ((out_read, "rb"), (err_read, "rb"), (in_write, "wb"))]  # noqa: SIM115
        pipes: list[asyncio.BaseTransport] = []
        try:
            for reader, file in ((stdout, files[0]), (stderr, files[1])):
                transport, _ = await loop.connect_read_pipe(
                    partial(asyncio.StreamReaderProtocol, reader, loop=loop), file
                )
                pipes.append(transport)
            writing, protocol = await loop.connect_write_pipe(partial(_StdinProtocol, loop), files[2])
            pipes.append(writing)
        except BaseException:
            for pipe in pipes:
                pipe.close()
            for file in files:
                with contextlib.suppress(OSError):
                    file.close()
            with contextlib.suppress(ProcessLookupError):
                popen.kill()
            self._unwatch_stdin(close=True)  # the duplicate of stdin's end, too
            raise
        stdin = asyncio.StreamWriter(writing, protocol, None, loop)
        return _Child(popen, stdin, stdout, stderr), exited, pipes

    async def _start_by_the_loop(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[_Running, asyncio.Future[None], list[asyncio.BaseTransport]]:
        """(Windows) `asyncio.create_subprocess_exec`, with a protocol that says when the process exits."""
        transport, protocol = await loop.subprocess_exec(
            lambda: _ChildProtocol(MAX_LINE_BYTES, loop),
            self._config.command,  # type: ignore[arg-type]
            *self._config.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_environment(self._config),
            cwd=self._config.cwd,
        )
        return asyncio.subprocess.Process(transport, protocol, loop), protocol.exited, [transport]

    def _stdin_closed(self) -> None:
        """No process holds the other end of its stdin any more: it died, or it closed its stdin and lives on,
        unable to read another message (the calls on it would wait out call_timeout). The latter is stopped."""
        self._unwatch_stdin(close=False)
        if not self._closing:
            self._tasks.append(asyncio.ensure_future(self._stop_if_deaf()))

    async def _stop_if_deaf(self) -> None:
        proc = self._proc
        if proc is None or await self._exited_within(DEAF_SETTLE_SECONDS) or self._closing:
            return  # it died (`_watch` says how), or it is being stopped anyway
        self._deaf = True
        with contextlib.suppress(ProcessLookupError):
            proc.kill()

    def _unwatch_stdin(self, *, close: bool) -> None:
        fd = self._stdin_watch
        if fd is None:
            return
        with contextlib.suppress(Exception):  # the loop is closed
            asyncio.get_running_loop().remove_reader(fd)
        if close:
            self._stdin_watch = None
            os.close(fd)

    def set_negotiated(self, protocol_version: str) -> None:
        pass

    async def request(self, request_id: int, body: bytes, headers: dict[str, str]) -> None:
        await self._write(body, request_id)

    async def send(self, body: bytes, headers: dict[str, str]) -> None:
        await self._write(body, None)

    async def _write(self, body: bytes, request_id: int | None) -> None:
        """Write one message. The session is reported lost (so the pool may start the process again and
        resend) only when no byte of it reached the pipe; once some may have, a failure is an UpstreamError:
        the process may have read the message before it went away. A request's place in the stream is kept:
        if the process dies with all of it still unread in the pipe, it is sent again all the same
        (`_never_read`)."""
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None or self._closing or self._deaf:
            raise await self._lost()
        stdin = proc.stdin
        # No await from the checks to the write: one message goes into the buffer whole, never interleaved.
        # The wait for the buffer to drain is each sender's own: held under a lock, one message the process
        # never read (a hung command) held up every later one, a call's and a notification's alike, for good.
        pipe = stdin.transport
        if pipe.is_closing():
            raise await self._lost()
        queued = pipe.get_write_buffer_size()
        if queued and queued + len(body) > MAX_LINE_BYTES:
            # A process that stopped reading its stdin: the buffer would only grow, a message per timed-out
            # call. Refused at once, naming the cause.
            raise UpstreamError(
                self.upstream_id,
                f"is not reading its stdin ({queued // 1024} kB wait to be written to it)",
                kind=ErrorKind.UNAVAILABLE,
            )
        if request_id is not None:
            self._starts.append((self._written, request_id))
        self._written += len(body) + 1
        stdin.write(body + b"\n")
        if pipe.is_closing() and not queued:
            # The write was tried at once and failed (the reader is gone): nothing of it was written.
            raise await self._lost()
        try:
            await stdin.drain()
        except (ConnectionError, RuntimeError):
            raise UpstreamError(
                self.upstream_id, "process went away while a message was being written", kind=ErrorKind.CLOSED
            ) from None

    async def open_change_channel(self, deliver: Deliver, ready: asyncio.Event) -> None:
        ready.set()  # unrelated notifications simply arrive on stdout

    async def aclose(self) -> None:
        self._closing = True
        proc = self._proc
        running = proc is not None and proc.returncode is None
        self._unwatch_stdin(close=True)  # a duplicate of stdin's end: open, the process would never see it end
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.close()
            if not await self._exited_within(EXIT_GRACE_SECONDS):
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                if not await self._exited_within(EXIT_GRACE_SECONDS):
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await self._exited_within(None)
        if proc is not None and running:
            # Only for a process this call saw exit: one that died earlier had its session ended then (`_watch`),
            # and its id may since be another's (review: a session closed hours later killed a reused group).
            _end_descendants(proc)
        for task in self._tasks:
            task.cancel()
        self._close_pipes()

    def _close_pipes(self) -> None:
        """Close the gateway's ends of the process's pipes: one a helper still holds would otherwise stay open
        (asyncio's transport finishes only once they all close)."""
        if self._exit is not None and self._exit.done():
            self._unwatch_stdin(close=True)
            for pipe in self._pipes:
                pipe.close()

    async def _exited_within(self, seconds: float | None) -> bool:
        """Whether the process has exited, waiting at most `seconds` (None: until it has). Not `proc.wait()`:
        under asyncio that also waits for its pipes to close, which a helper it forked may hold open."""
        exit_ = self._exit
        if exit_ is None:
            return True
        if not exit_.done():
            await asyncio.wait({exit_}, timeout=seconds)
        return exit_.done()

    async def _watch(self, deliver: Deliver, on_closed: OnClosed) -> None:
        """Read stdout until it ends or the process exits, whichever comes first; then end what is left of the
        process and report the session closed, once. The exit is watched itself: a helper the command forked
        may hold its stdout open after it died, and the calls in flight then waited out call_timeout with no
        word of the death (probe)."""
        proc, exit_ = self._proc, self._exit
        assert proc is not None and exit_ is not None
        reader = asyncio.ensure_future(self._read_stdout(deliver))
        cause: str | None = None  # why the gateway ended the process, when it did
        try:
            await asyncio.wait({reader, exit_}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():
                # Exited, its stdout still open: the helpers it left end now (they die with its session, which
                # usually closes the pipe), and what it wrote before it died is read first, for a short while
                # only (a helper that left its session may hold the pipe for good).
                _end_descendants(proc)
                await asyncio.wait({reader}, timeout=STDERR_SETTLE_SECONDS)
            if reader.done():
                cause = reader.result()
            if proc.returncode is None:
                # stdout closed (or unusable: `cause`) but the process lingers: it can no longer talk to us.
                if cause is None:
                    await self._exited_within(0.5)
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await self._exited_within(EXIT_GRACE_SECONDS)
        finally:
            reader.cancel()
            if proc.returncode is not None:
                _end_descendants(proc)
            if self._closing:
                on_closed(UpstreamError(self.upstream_id, "process was stopped", kind=ErrorKind.CLOSED))
            else:
                if self._deaf:
                    cause = DEAF
                exited = await self._report_exit(proc.returncode, cause)
                exited.never_read = self._never_read()
                on_closed(exited)
            self._close_pipes()

    async def _read_stdout(self, deliver: Deliver) -> str | None:
        """Deliver what the process writes on stdout until it ends: None; or why the gateway must end the
        process (its stdout became unusable)."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError:  # a line beyond MAX_LINE_BYTES: the stream is unusable now
                return (
                    f"sent a message larger than {MAX_LINE_BYTES // (1024 * 1024)} MB on stdout;"
                    " the gateway stopped its process"
                )
            if not line:
                return None
            line = line.strip()
            if not line:
                continue
            try:
                message = jsoncodec.loads(line)
            except orjson.JSONDecodeError as exc:
                if line.startswith(b"{") and "depth" in str(exc):
                    # A message nested too deep to read: most likely the reply a call waits for, which
                    # would otherwise wait out call_timeout. Told as JSON-RPC's unreadable-message error
                    # (id null), which fails the one request in flight (if one) naming the cause.
                    error = {"code": PARSE_ERROR, "message": TOO_DEEP}
                    await deliver({"jsonrpc": "2.0", "id": None, "error": error}, None)
                    continue
                logger.debug("upstream %s: non-JSON line on stdout ignored", self.upstream_id)
                continue
            if isinstance(message, dict):
                await deliver(message, None)
            elif isinstance(message, list):
                for item in message:
                    if isinstance(item, dict):
                        await deliver(item, None)

    def unread(self, request_id: int) -> bool | None:
        """Whether the process has not yet read a byte of this request (a command still starting has not read its
        first messages); None where that cannot be told. For protocol `auto`'s probe (session.py `_probe`)."""
        if self._stdin_watch is None:
            return None
        return request_id in self._never_read()

    def _never_read(self) -> frozenset[int]:
        """The requests of which the process, now dead, read not a byte: their messages wholly still in its stdin
        pipe (FIONREAD on the gateway's end) or not yet written to it. Sending them again cannot run them twice,
        so a call that came in the moment it went away (killed, or ending while idle) is made on a new process.
        Empty where that cannot be told (a transport that dropped what it held counts it as read)."""
        fd, proc = self._stdin_watch, self._proc
        if fd is None or proc is None or proc.stdin is None or not self._starts:
            return frozenset()
        import fcntl  # noqa: PLC0415  # POSIX only (`_stdin_watch` is None on Windows)
        import termios  # noqa: PLC0415

        count = array.array("i", [0])
        try:
            fcntl.ioctl(fd, termios.FIONREAD, count)
        except OSError:
            return frozenset()
        unread = count[0]
        pipe = proc.stdin.transport
        if not pipe.is_closing():
            unread += pipe.get_write_buffer_size()
        read = self._written - unread
        return frozenset(request_id for start, request_id in self._starts if start >= read)

    async def _lost(self) -> UpstreamSessionLost:
        """The error for a write to a process that is gone: why it died, once `_watch` has seen it go
        (bounded), so the caller learns what the process said rather than only that it is not running."""
        reader = self._tasks[0] if self._tasks else None
        if reader is not None and not reader.done() and not self._closing:
            await asyncio.wait({reader}, timeout=STDERR_SETTLE_SECONDS + 0.5)
        reason = self._exited.reason if self._exited is not None else DEAF if self._deaf else "process is not running"
        return UpstreamSessionLost(self.upstream_id, reason)

    async def _report_exit(self, code: int | None, cause: str | None = None) -> ProcessExited:
        """The process ended on its own (or, `cause`, the gateway ended it): one warning with its last stderr
        lines, and the error that says why."""
        drain = self._tasks[1] if len(self._tasks) > 1 else None
        if drain is not None and not drain.done():
            # Its last lines may still be in the pipe; a grandchild holding stderr open must not hold us up.
            await asyncio.wait({drain}, timeout=STDERR_SETTLE_SECONDS)
        tail = tuple(redact(line, self._secrets)[:STDERR_TAIL_CHARS] for line in self._stderr_tail)
        reason = cause or "process exited" + (f" (code {code})" if code is not None else "")
        if tail and cause is None:  # stopped by the gateway: its last line (said at its start, say) is not why
            reason += f": {tail[-1]}"
        self._exited = ProcessExited(self.upstream_id, reason, tail)
        if tail:
            logger.warning("upstream %s: %s; its last stderr lines: %s", self.upstream_id, reason, " | ".join(tail))
        else:
            logger.warning("upstream %s: %s", self.upstream_id, reason)
        return self._exited

    async def _drain_stderr(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        logged = 0
        while True:
            try:
                line = await proc.stderr.readline()
            except ValueError:
                continue
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()[:STDERR_LINE_CHARS]
            if text:
                self._stderr_tail.append(text)
            if logged < STDERR_MAX_LINES:
                logged += 1
                logger.debug("upstream %s stderr: %s", self.upstream_id, redact(text, self._secrets))
