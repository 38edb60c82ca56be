"""The audit journal: every audit row, as one JSON line, appended to a local file before the answer leaves.

The database is written in batches by a background task (writer.py), so its newest rows live only in memory
for a moment. The journal closes that gap: `AuditLog.record` appends the row here with one `os.write` on an
`O_APPEND` descriptor before it returns, and the relay calls `record` before it hands the answer to the
transport. Once `write` returns, the kernel holds the bytes: a SIGKILL or a crash of the gateway cannot lose
them (power loss can lose the last moments: there is no fsync per call).

Layout, under `state_dir/audit-journal/` (0700, files 0600: rows may hold redacted arguments):

    <id>.lock                 held (flock) by the live gateway that owns journal <id>, for its lifetime
    <id>.<seq>.jsonl          its segments; a new one is started every SEGMENT_BYTES

Every row gets a position, (segment, byte offset after its line). The batch that inserts rows into the
database also stores, in the same transaction, the position of its last row as the journal's *mark*
(`meta` row `audit_journal.<id>`), so the database itself says which lines it holds: a crash between the
commit and the deletion of a segment can never make a row appear twice. Segments wholly below the mark are
deleted after the commit, so the journal holds only what the database does not have yet (plus the current
segment), at most MAX_SEGMENTS segments.

At startup, `orphans` finds the journals whose lock nobody holds (their gateway died) and the writer replays
the lines after their mark, then deletes them. Several gateways on one state dir each have their own journal.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DIRECTORY = "audit-journal"
SEGMENT_BYTES = 4 * 1024 * 1024  # a new segment after this many bytes
MAX_SEGMENTS = 64  # with the database refusing rows for long, the oldest segment goes: 256 MiB at most
OFFSET_BITS = 40  # a position is (segment << OFFSET_BITS) | offset: one int per row, no tuple
OFFSET_MASK = (1 << OFFSET_BITS) - 1
MARK_PREFIX = "audit_journal."  # + the journal id: the key of its mark in the `meta` table


def position(segment: int, offset: int) -> int:
    return (segment << OFFSET_BITS) | offset


def split(pos: int) -> tuple[int, int]:
    """(segment, offset) of a position."""
    return pos >> OFFSET_BITS, pos & OFFSET_MASK


def format_mark(pos: int) -> str:
    segment, offset = split(pos)
    return f"{segment}:{offset}"


def parse_mark(value: str | None) -> int:
    """The position a stored mark names; 0 (nothing written yet) when there is none or it is unreadable."""
    if not value:
        return 0
    segment, _, offset = value.partition(":")
    try:
        return position(int(segment), int(offset))
    except ValueError:
        return 0


class JournalError(OSError):
    """A line could not be appended whole."""


class Journal:
    """The journal of this gateway. `append` opens it on first use; call it from one thread only."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / DIRECTORY
        self.id = secrets.token_hex(8)
        self._lock_fd = -1
        self._fd = -1
        self._segment = 0
        self._offset = 0
        self._oldest = 0  # the oldest segment not yet deleted

    @property
    def mark_key(self) -> str:
        return MARK_PREFIX + self.id

    def append(self, line: bytes) -> int:
        """Append one line (it ends with a newline) in one write; returns the position after it."""
        fd = self._fd
        if fd < 0:
            fd = self._open_segment()
        written = os.write(fd, line)
        if written != len(line):  # a short write (disk full): the next line goes into a fresh segment
            self._start_next_segment()
            raise JournalError(f"short write ({written} of {len(line)} bytes)")
        self._offset += written
        pos = (self._segment << OFFSET_BITS) | self._offset
        if self._offset >= SEGMENT_BYTES:
            self._start_next_segment()
        return pos

    def committed(self, pos: int) -> None:
        """The database holds every row up to `pos`: delete the segments before its segment."""
        segment, _ = split(pos)
        while self._oldest < segment:
            _unlink(self._segment_path(self._oldest))
            self._oldest += 1

    @property
    def opened(self) -> bool:
        return self._lock_fd >= 0

    def drop_segments(self) -> None:
        """Delete every segment (the database holds all their rows). The mark goes next, the lock last."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            for segment in range(self._oldest, self._segment + 1):
                _unlink(self._segment_path(segment))
            self._oldest = self._segment + 1

    def close(self, *, remove_lock: bool) -> None:
        """Let the journal go. Without `remove_lock` its lock file stays and the next start replays what is
        left after its mark (nothing, once `drop_segments` ran)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd < 0:
            return
        if remove_lock:
            _unlink(self._lock_path())
        os.close(self._lock_fd)
        self._lock_fd = -1
        self.id = secrets.token_hex(8)  # opened again after this (a record after aclose): a new journal
        self._segment = self._offset = self._oldest = 0

    # -- files --

    def _open_segment(self) -> int:
        if self._lock_fd < 0:
            self._lock_fd = _create_lock(self.directory, self.id)
        self._fd = os.open(self._segment_path(self._segment), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def _start_next_segment(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._segment += 1
        self._offset = 0
        if self._segment - self._oldest >= MAX_SEGMENTS:
            log.warning("audit: the journal is full (the database has not taken rows for long); oldest part dropped")
            _unlink(self._segment_path(self._oldest))
            self._oldest += 1

    def _segment_path(self, segment: int) -> Path:
        return self.directory / f"{self.id}.{segment}.jsonl"

    def _lock_path(self) -> Path:
        return self.directory / f"{self.id}.lock"


@dataclass
class Orphan:
    """The journal of a gateway that is gone, locked by this process while it is replayed."""

    directory: Path
    id: str
    segments: list[int]  # in order
    lock_fd: int

    @property
    def mark_key(self) -> str:
        return MARK_PREFIX + self.id

    def lines(self, after: int) -> Iterator[tuple[bytes, int]]:
        """Every whole line after position `after`, with the position after it. A last line without its
        newline (cut by power loss) is left out."""
        mark_segment, mark_offset = split(after)
        for segment in self.segments:
            if segment < mark_segment:
                continue
            start = mark_offset if segment == mark_segment else 0
            try:
                data = (self.directory / f"{self.id}.{segment}.jsonl").read_bytes()
            except FileNotFoundError:
                continue
            begin = start
            while True:
                end = data.find(b"\n", begin)
                if end < 0:
                    break
                yield data[begin:end], position(segment, end + 1)
                begin = end + 1

    def drop_segments(self) -> None:
        """Delete the segments (the database holds all their rows). The mark goes next, the lock last."""
        for segment in self.segments:
            _unlink(self.directory / f"{self.id}.{segment}.jsonl")
        self.segments = []

    def close(self, *, remove_lock: bool) -> None:
        if self.lock_fd < 0:
            return
        if remove_lock:
            _unlink(self.directory / f"{self.id}.lock")
        os.close(self.lock_fd)
        self.lock_fd = -1


def orphans(state_dir: Path) -> list[Orphan]:
    """The journals under `state_dir` whose gateway is gone (nobody holds their lock), each now locked by
    this process. Lock files left half-made by a crash are removed."""
    directory = state_dir / DIRECTORY
    if not directory.is_dir():
        return []
    found: list[Orphan] = []
    segments: dict[str, list[int]] = {}
    for path in directory.iterdir():
        name = path.name
        if name.endswith(".jsonl"):
            journal_id, _, segment = name[: -len(".jsonl")].partition(".")
            if segment.isdigit():
                segments.setdefault(journal_id, []).append(int(segment))
    for path in sorted(directory.iterdir()):
        name = path.name
        if name.endswith(".tmp"):  # a lock file that never got its name: its creator died at once
            fd = _try_lock(path)
            if fd >= 0:
                _unlink(path)
                os.close(fd)
            continue
        if not name.endswith(".lock"):
            continue
        fd = _try_lock(path)
        if fd < 0:
            continue  # a live gateway's journal
        journal_id = name[: -len(".lock")]
        found.append(Orphan(directory, journal_id, sorted(segments.get(journal_id, [])), fd))
    return found


def _create_lock(directory: Path, journal_id: str) -> int:
    """Create and lock `<id>.lock`: made under a temporary name and renamed once locked, so another process
    never sees it unlocked and takes it for an orphan."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = directory / f"{journal_id}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(temporary, directory / f"{journal_id}.lock")
    except BaseException:
        os.close(fd)
        _unlink(temporary)
        raise
    return fd


def _try_lock(path: Path) -> int:
    """A descriptor holding `path`'s lock, or -1 when someone else holds it (or it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return -1
    if not path.exists():  # removed by whoever held it before us: nothing left to do
        os.close(fd)
        return -1
    return fd


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
