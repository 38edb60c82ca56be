"""What an operator is told when an upstream fails, with real child processes: a crashed stdio upstream's
last stderr lines (bounded, secrets redacted) in the error, the log and the health report; the failure
forgotten once it recovers; times in ISO 8601; a member left out of tools/list logged once per failure."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import datetime
from pathlib import Path

import anyio
import orjson
import pytest

from manifold.catalog.lists import UpstreamLists
from manifold.catalog.view import VirtualServerView
from manifold.config.models import MemberConfig, ProtocolChoice, Transport, UpstreamConfig, VirtualServerConfig
from manifold.upstream.base import UpstreamError
from manifold.upstream.pool import UpstreamPool

SERVER = Path(__file__).parents[1] / "upstreams" / "upstream_min.py"
SECRET = "s3cr3t-Value-4-the-child"
LAST_LINE = "None of the specified directories are accessible"
CRASH = f"""
import os, sys
print("starting with key " + os.environ["API_KEY"], file=sys.stderr)
print("Authorization: Bearer abcdefghijklmnop.qrstuvwxyz", file=sys.stderr)
print("digest " + "0123456789abcdef" * 4, file=sys.stderr)
for i in range(40):
    print(f"noise line {{i}} " + "x" * 1000, file=sys.stderr)
print("Error: {LAST_LINE}", file=sys.stderr)
sys.exit(1)
"""
GOOD = f"import runpy, sys\nsys.argv = [{str(SERVER)!r}]\nrunpy.run_path({str(SERVER)!r}, run_name='__main__')\n"


@pytest.fixture
def anyio_backend():
    return "asyncio"


def stdio(script: Path) -> UpstreamConfig:
    return UpstreamConfig(
        transport=Transport.STDIO,
        command=sys.executable,
        args=[str(script)],
        env={"API_KEY": SECRET},
        protocol=ProtocolChoice("2025-11-25"),
    )


async def request_until_connected(pool: UpstreamPool, upstream_id: str, deadline_s: float = 20.0) -> None:
    """Bounded poll past the pool's back-off (at most 1.5 s) until a call goes through."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            await pool.request(upstream_id, "tools/list", {})
            return
        except UpstreamError:
            if time.monotonic() > deadline:
                raise


@pytest.mark.anyio
async def test_a_crashed_stdio_upstream_says_what_it_printed_without_secrets(tmp_path, caplog):
    script = tmp_path / "crash.py"
    script.write_text(CRASH)
    pool = UpstreamPool({"files": stdio(script)})
    caplog.set_level(logging.DEBUG, logger="manifold")
    try:
        with pytest.raises(UpstreamError) as raised:
            await pool.request("files", "tools/list", {})
        message = str(raised.value)
        assert "upstream 'files'" in message and "code 1" in message and LAST_LINE in message, message

        report = pool.health()["files"]
        assert report["state"] == "failed" and LAST_LINE in str(report["last_error"])
        lines = report["stderr"]
        assert isinstance(lines, list) and lines[-1] == f"Error: {LAST_LINE}"
        assert len(lines) <= 20 and all(len(line) <= 300 for line in lines)

        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "files" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert LAST_LINE in warnings[0].getMessage()

        shown = message + orjson.dumps(report).decode() + caplog.text
        assert SECRET not in shown
        assert "abcdefghijklmnop" not in shown
        assert "0123456789abcdef" * 2 not in shown
        assert "[redacted]" in orjson.dumps(report).decode()
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_health_forgets_the_failure_once_recovered_and_gives_iso_times(tmp_path):
    script = tmp_path / "flaky.py"
    script.write_text(CRASH)
    pool = UpstreamPool({"files": stdio(script)})
    try:
        with pytest.raises(UpstreamError):
            await pool.request("files", "tools/list", {})
        failed = pool.health()["files"]
        since = failed["since"]
        assert isinstance(since, str) and since.endswith("Z")
        assert abs(datetime.fromisoformat(since).timestamp() - time.time()) < 60
        assert failed["last_error"] and failed["down"] is True

        script.write_text(GOOD)  # the operator fixed it
        await request_until_connected(pool, "files")
        recovered = pool.health()["files"]
        assert recovered["state"] == "connected"
        assert recovered["last_error"] is None and recovered["stderr"] == [] and recovered["down"] is False
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_a_member_left_out_of_tools_is_logged_once_per_failure(tmp_path, caplog):
    script = tmp_path / "member.py"
    script.write_text(CRASH)
    pool = UpstreamPool({"files": stdio(script)})
    config = VirtualServerConfig(members=[MemberConfig(upstream="files")])
    view = VirtualServerView("eng", config, UpstreamLists(pool, ttl_seconds=1e-9), "__")
    caplog.set_level(logging.WARNING, logger="manifold.catalog")

    def left_out() -> list[str]:
        return [r.getMessage() for r in caplog.records if "left out of tools" in r.getMessage()]

    try:
        for _ in range(4):
            built = await view.get("tools")
            assert "files" in built.failures
        assert len(left_out()) == 1, left_out()

        script.write_text(GOOD)
        deadline = time.monotonic() + 20
        while (await view.get("tools")).failures:
            assert time.monotonic() < deadline, "the member never recovered"
        assert len(left_out()) == 1

        script.write_text(CRASH)
        await pool.remove_upstream("files")  # its running process ends; it fails from now on
        await pool.put_upstream("files", stdio(script))
        for _ in range(3):
            assert "files" in (await view.get("tools")).failures
        assert len(left_out()) == 2, left_out()
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_a_command_that_never_answers_its_handshake_names_the_setting_to_raise(tmp_path: Path) -> None:
    """A stdio command that starts but never speaks (a slow `npx` fetching its package, a wrong command that
    waits for input) fails at connect_timeout, and the error says which setting that was."""
    silent = tmp_path / "silent.py"
    silent.write_text("import sys\nsys.stdin.read()\n")  # alive, reading, never answering
    config = stdio(silent).model_copy(update={"connect_timeout": 0.5})
    pool = UpstreamPool({"slowstart": config})
    try:
        with pytest.raises(UpstreamError) as failure:
            await pool.request("slowstart", "tools/list", {})
    finally:
        await pool.aclose()
    message = str(failure.value)
    assert "slowstart" in message and "0.5s" in message and "connect_timeout" in message, message


@pytest.mark.anyio
async def test_a_stdio_command_slow_to_start_keeps_starting_across_calls_and_serves_once_ready(tmp_path: Path) -> None:
    """`npx -y pkg` on a fresh machine fetches its package before it speaks MCP, often for longer than
    connect_timeout. Each call waits connect_timeout and is told the command is still starting, but the
    command is not killed (it was: every call started it again from nothing, and it never came up); once it
    completes its handshake the next call is served, by the process started first."""
    gate, starts = tmp_path / "gate", tmp_path / "starts"
    slow = tmp_path / "slow.py"
    slow.write_text(
        "import pathlib, time\n"
        f"with open({str(starts)!r}, 'a') as f:\n    f.write('started\\n')\n"
        f"while not pathlib.Path({str(gate)!r}).exists():  # fetching its package\n    time.sleep(0.02)\n" + GOOD
    )
    # call_timeout shorter than the start: the handshake's own requests must not be cut off by it (they were:
    # the command was killed at call_timeout after all, reported by review)
    config = stdio(slow).model_copy(update={"connect_timeout": 1.0, "call_timeout": 2.0})
    pool = UpstreamPool({"slowstart": config})
    try:
        began = time.monotonic()
        while time.monotonic() - began < 2.5:  # past call_timeout: each call waits connect_timeout
            with pytest.raises(UpstreamError) as failure:
                await pool.request("slowstart", "tools/list", {})
            message = str(failure.value)
            assert message.startswith("upstream 'slowstart' is still starting"), message
            assert "connect_timeout, 1s" in message, message
            assert pool.health()["slowstart"]["state"] == "connecting"

        async def one_of_many() -> float:
            started = time.monotonic()
            with pytest.raises(UpstreamError):
                await pool.request("slowstart", "tools/list", {})
            return time.monotonic() - started

        waited = await asyncio.gather(*(one_of_many() for _ in range(6)))  # together: not one after another
        assert max(waited) < 1.6, waited  # was 1, 2, 3 s, ...: each waited for the lock, then its own
        gate.touch()
        with anyio.fail_after(30):
            while True:  # each try waits at most connect_timeout for the handshake
                try:
                    listed = await pool.request("slowstart", "tools/list", {})
                    break
                except UpstreamError as exc:
                    assert "is still starting" in str(exc), exc
        assert "echo" in [tool["name"] for tool in listed["result"]["tools"]]
        assert pool.health()["slowstart"]["state"] == "connected"
    finally:
        await pool.aclose()
    assert starts.read_text() == "started\n"  # one process, never killed and started again
