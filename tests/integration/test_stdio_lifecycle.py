"""Many starts, deaths and stops of a stdio upstream leave nothing behind: no descriptor, no process (zombie or
orphan), no thread; whichever way the gateway learns of an exit (a pidfd, or where there is none a thread that
waits: upstream/stdio.py `_watch_exit`), under the gateway's own loop (uvloop) and asyncio's alike."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from manifold.config.models import UpstreamConfig
from manifold.upstream.pool import UpstreamPool
from tests.integration.test_stdio_restart_race import pid_of
from tests.waiting import wait_for, within

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(sys.platform != "linux", reason="/proc, pidfd")]

SERVER = str(Path(__file__).resolve().parents[1] / "upstreams" / "ignores_unknown_stdio.py")
ECHO = {"name": "echo", "arguments": {"text": "hi"}}
CYCLES = 30


@pytest.fixture(params=[pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"), "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:  # noqa: ANN401
    return request.param


@pytest.fixture(params=["pidfd", "thread"])
def exit_watch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "thread":

        def unavailable(pid: int, flags: int = 0) -> int:
            raise OSError(38, "Function not implemented")  # an old kernel, or a sandbox that refuses it

        monkeypatch.setattr(os, "pidfd_open", unavailable)
    return request.param


def descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def children() -> list[tuple[int, str]]:
    """This process's child processes and their states (Z: a zombie nobody reaped)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == os.getpid():
            found.append((int(entry), state))
    return found


async def test_starts_deaths_and_stops_leave_no_descriptor_process_or_thread(exit_watch: str) -> None:
    config = UpstreamConfig.model_validate(
        {"transport": "stdio", "command": sys.executable, "args": [SERVER], "protocol": "2025-11-25"}
    )
    before: tuple[int, int] | None = None
    # Children of this process that other tests' fixtures keep running (a module's upstream server, in the same
    # pytest worker): not this test's to account for.
    others = {pid for pid, _ in children()}
    for cycle in range(CYCLES):
        if cycle == 2:  # the loop's own lazily made descriptors (its signal wake-up, a thread pool) are made now
            before = (descriptors(), threading.active_count())
        upstreams = UpstreamPool({"u": config})
        try:
            assert "result" in await within(upstreams.request("u", "tools/call", ECHO), 10, what="the call")
            first = pid_of(upstreams)
            os.kill(first, signal.SIGKILL)  # a crash: its exit is seen (pidfd or thread), and the call after it
            await wait_for(lambda pool=upstreams: pool.live("u") is None, 10, what=f"the exit seen ({exit_watch})")
            assert "result" in await within(upstreams.request("u", "tools/call", ECHO), 10, what="the next call")
            assert pid_of(upstreams) != first
        finally:
            await within(upstreams.aclose(), 10, what="the pool's close")
    await asyncio.sleep(0.05)
    assert before is not None
    await wait_for(lambda: threading.active_count() <= before[1], 5, what="the waiting threads ending")
    assert [child for child in children() if child[0] not in others] == []
    assert descriptors() - before[0] <= 0, f"{descriptors() - before[0]} descriptors more after {CYCLES} cycles"
