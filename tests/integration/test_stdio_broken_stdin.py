"""A stdio command that stops reading its stdin and then closes it while a message waits to be written: the
send fails with the session's own error, and nothing else is said. On Python 3.11.2 (Debian's, which
`make venv` picks where it is the fastest) asyncio also logged the BrokenPipeError it keeps for
`stdin.wait_closed()` as "Future exception was never retrieved", with a traceback (found as a CI failure: the
test's event loop counts what is reported to its exception handler).

Under uvloop a child started by the loop kept, beyond fds 0-2, the sockets they were duplicated from (seen as fds
13, 17 and 19), so its closing fd 0 broke nothing and the send kept waiting; commands are now started on pipes
the gateway makes itself (upstream/stdio.py `_start_on_own_pipes`; tests/integration/test_stdio_closed_stdin.py
runs on both loops)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from manifold.config.models import UpstreamConfig
from manifold.upstream.base import UpstreamError
from manifold.upstream.stdio import StdioTransport

pytestmark = pytest.mark.anyio

# Reads nothing; closes its stdin when told (SIGUSR1), then stays alive.
CLOSES_STDIN_WHEN_TOLD = (
    "import os, signal, time; signal.signal(signal.SIGUSR1, lambda *_: os.close(0)); signal.pause(); time.sleep(30)"
)


async def handler_installed(pid: int) -> None:
    """Until the process catches SIGUSR1 (/proc/<pid>/status SigCgt)."""
    status = Path(f"/proc/{pid}/status")
    async with asyncio.timeout(10):
        while True:
            caught = next(line for line in status.read_text().splitlines() if line.startswith("SigCgt:"))
            if int(caught.split()[1], 16) & (1 << (signal.SIGUSR1 - 1)):
                return
            await asyncio.sleep(0.01)


async def test_a_stdin_closed_under_a_waiting_message_fails_the_send_and_logs_nothing_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    config = UpstreamConfig(transport="stdio", command=sys.executable, args=["-c", CLOSES_STDIN_WHEN_TOLD])
    transport = StdioTransport("closer", config)

    async def deliver(message: Any) -> None:  # noqa: ANN401
        pass

    closed = False
    try:
        await transport.connect(deliver, lambda *_: None)
        proc = transport._proc
        assert proc is not None and proc.stdin is not None
        await handler_installed(proc.pid)
        big = b'{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"' + b"x" * 200_000 + b'"}}'
        send = asyncio.ensure_future(transport.send(big, {}))
        async with asyncio.timeout(10):  # bounded: a pipe that took the whole message would spin here for good
            while not proc.stdin.transport.get_write_buffer_size():  # more than the pipe holds waits to be written
                await asyncio.sleep(0)
        os.kill(proc.pid, signal.SIGUSR1)
        with pytest.raises(UpstreamError) as caught:
            await send
        assert "went away while a message was being written" in caught.value.reason
        await transport.aclose()
        closed = True
        del transport, proc, send, caught  # the last references to the process's protocol and the futures it keeps
        for _ in range(3):  # the cancelled readers end, then what they held is collected
            await asyncio.sleep(0)
            gc.collect()  # an unretrieved exception is reported when its future is collected
    finally:
        if not closed:
            await transport.aclose()  # noqa: F821 — bound until it was closed
        loop.set_exception_handler(previous)
    assert [context.get("message") for context in reported] == []
