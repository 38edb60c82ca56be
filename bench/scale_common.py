"""Pieces the scale benchmarks share (bench/scale_*.py): raw 2025-11-25 sessions and GET streams, API keys
through the admin API, the gateway's memory, file-descriptor limits, and how a figure is judged.

The scale benches hold thousands of connections from one client process, so they speak HTTP with aiohttp
(POSTs over a small keep-alive pool) and bare asyncio streams (a GET stream is one socket whose response
head is read and then left alone), never the SDK client: its per-session tasks and buffers would weigh
more than the gateway's.
"""

from __future__ import annotations

import asyncio
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from bench.common import BENCH, REPO, STARTUP_DEADLINE_S, _listening, fmt
from tests.e2e.harness import Gateway
from tests.upstreams.launch import free_port

HANDSHAKE = "2025-11-25"
POST_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
MANY_TOOLS_UPSTREAM = str(BENCH / "many_tools_upstream.py")
MB = 1024 * 1024


# ---- the process side --------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """A process's resident set (VmRSS), as the kernel reports it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def raise_fd_limit(needed: int) -> str:
    """Raise this process's open-file limit (and so the gateway's and upstreams' it starts afterwards,
    which inherit it) to at least `needed`, within the hard limit. Returns a line saying what it did."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return f"open files: soft limit {soft} (hard {hard}) is enough for {needed}"
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    line = f"open files: soft limit raised {soft} -> {target} (hard {hard}); the gateway inherits it"
    if target < needed:
        line += f"; NOT ENOUGH for {needed}: raise the hard limit (ulimit -Hn, or LimitNOFILE=)"
    return line


def verdict(ok: bool) -> str:
    return "yes" if ok else "MISSED"


def judged(label: str, value: float, target: float, unit: str, *, lower_is_better: bool = True,
           digits: int = 2) -> tuple[str, bool]:
    """One line 'label: value unit (target <= x unit): yes|MISSED' and whether the target was met."""
    ok = value <= target if lower_is_better else value >= target
    sign = "<=" if lower_is_better else ">="
    unit = f" {unit}" if unit else ""
    return f"{label}: {fmt(value, digits)}{unit} (target {sign} {fmt(target, digits)}{unit}): {verdict(ok)}", ok


# ---- raw 2025-11-25 sessions --------------------------------------------------------------------------


def parse_reply(content_type: str, payload: bytes) -> dict[str, Any]:
    """The JSON-RPC message of a POST reply, whether it came as JSON or as one SSE event."""
    if "text/event-stream" in content_type:
        for line in payload.splitlines():
            if line.startswith(b"data:"):
                message = orjson.loads(line[5:])
                if "id" in message:
                    return message
        raise RuntimeError(f"no reply in the event stream: {payload[:300]!r}")
    return orjson.loads(payload)


async def post_rpc(http: aiohttp.ClientSession, url: str, headers: dict[str, str], message: dict[str, Any]
                   ) -> tuple[int, dict[str, str], bytes]:
    async with http.post(url, data=orjson.dumps(message), headers={**POST_HEADERS, **headers}) as response:
        return response.status, dict(response.headers), await response.read()


async def open_session(http: aiohttp.ClientSession, url: str, token: str, name: str = "scale-bench") -> str:
    """initialize + notifications/initialized as a 2025-11-25 client; the session id."""
    auth = {"Authorization": f"Bearer {token}"}
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": HANDSHAKE, "capabilities": {},
                             "clientInfo": {"name": name, "version": "1"}}}
    status, headers, body = await post_rpc(http, url, auth, initialize)
    sid = headers.get("Mcp-Session-Id") or headers.get("mcp-session-id")
    if status != 200 or not sid:
        raise RuntimeError(f"initialize answered {status}: {body[:300]!r}")
    session = {**auth, "Mcp-Session-Id": sid, "MCP-Protocol-Version": HANDSHAKE}
    status, _, body = await post_rpc(http, url, session, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    if status != 202:
        raise RuntimeError(f"notifications/initialized answered {status}: {body[:300]!r}")
    return sid


def session_headers(token: str, sid: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Mcp-Session-Id": sid, "MCP-Protocol-Version": HANDSHAKE}


async def delete_session(http: aiohttp.ClientSession, url: str, token: str, sid: str) -> None:
    """DELETE the session; an answer other than 200/202/204 raises."""
    async with http.delete(url, headers=session_headers(token, sid)) as response:
        payload = await response.read()
    if response.status not in (200, 202, 204):
        raise RuntimeError(f"DELETE of a session answered {response.status}: {payload[:200]!r}")


LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d ")  # a line of the gateway's log starts with its date
EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(: |$)")  # "module.SomeError: message", the end of a traceback


def log_problems(gateway: Gateway) -> list[str]:
    """What went wrong according to the gateway's log: one entry per ERROR line (or traceback without one),
    with the exception that ended its traceback, so a report says what failed without pages of stack."""
    lines = gateway.log().splitlines()
    problems: list[str] = []
    n = 0
    while n < len(lines):
        line = lines[n]
        n += 1
        if " ERROR " not in line and not line.startswith("Traceback"):
            continue
        last = ""
        while n < len(lines) and not LOG_LINE.match(lines[n]):  # the traceback, up to the next log line
            text = lines[n]
            if EXCEPTION_LINE.match(text):
                last = text
            n += 1
        head = line[:200] if " ERROR " in line else "traceback"
        problems.append(f"{head} — {last[:300]}" if last else head)
    return problems


@dataclass
class GetStream:
    """One open GET notification stream: the socket, its response head read, the rest left unread
    (or read by `events`)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    buffered: bytes = b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass

    async def next_event(self) -> dict[str, Any]:
        """The next SSE event's JSON data (comments skipped). The body is chunked; chunk framing lines are
        skipped as lines without a field name."""
        while True:
            while b"\n\n" not in self.buffered:
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise EOFError("the gateway ended the stream")
                self.buffered += chunk
            block, self.buffered = self.buffered.split(b"\n\n", 1)
            for line in block.split(b"\n"):
                line = line.strip(b"\r")
                if line.startswith(b"data:"):
                    return orjson.loads(line[5:])


async def open_get_stream(url: str, token: str, sid: str) -> GetStream:
    """GET the session's notification stream on a bare socket and read its response head (200)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    request = (f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
               f"Accept: text/event-stream\r\nMcp-Session-Id: {sid}\r\nMCP-Protocol-Version: {HANDSHAKE}\r\n\r\n")
    writer.write(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await reader.read(4096)
        if not chunk:
            writer.close()
            raise RuntimeError(f"GET stream closed before its head: {head[:300]!r}")
        head += chunk
    status_line = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status_line + b" ":
        writer.close()
        raise RuntimeError(f"GET stream answered {head[:400]!r}")
    rest = head.split(b"\r\n\r\n", 1)[1]
    return GetStream(reader, writer, rest)


# ---- principals ---------------------------------------------------------------------------------------


async def create_keys(gateway: Gateway, count: int, prefix: str = "user") -> list[str]:
    """`count` API keys, one per new user, made through the admin API (`POST /admin/api/keys`, as
    `manifold keys create` does) with the gateway's development key, which is an admin."""
    tokens = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {gateway.key}"}) as http:
        for index in range(count):
            body = {"user": f"{prefix}{index:04d}@scale.bench", "name": "scale"}
            async with http.post(f"{gateway.base}/admin/api/keys", json=body) as response:
                record = await response.json()
                if response.status != 201:
                    raise RuntimeError(f"POST /admin/api/keys answered {response.status}: {record}")
                tokens.append(record["token"])
    return tokens


# ---- timed calls over one session -----------------------------------------------------------------------


async def timed_calls(http: aiohttp.ClientSession, url: str, headers: dict[str, str], tool: str, count: int,
                      ) -> list[float]:
    """`count` tools/call of `tool` one after the other on a session (headers carry its id); seconds each.
    A reply that is not a result fails."""
    samples = []
    for n in range(count):
        body = orjson.dumps({"jsonrpc": "2.0", "id": n + 10, "method": "tools/call",
                             "params": {"name": tool, "arguments": {}}})
        begin = time.perf_counter()
        async with http.post(url, data=body, headers={**POST_HEADERS, **headers}) as response:
            payload = await response.read()
        samples.append(time.perf_counter() - begin)
        if response.status != 200 or b'"result"' not in payload:
            raise RuntimeError(f"{url} answered {response.status}: {payload[:300]!r}")
    return samples


# ---- the many-tools upstream process ----------------------------------------------------------------------


@asynccontextmanager
async def many_tools_upstreams(count: int, tools: int) -> AsyncIterator[list[str]]:
    """`count` upstreams (each listing `tools` tools) served by ONE process (bench/many_tools_upstream.py);
    their URLs. Stopped afterwards."""
    ports = [free_port() for _ in range(count)]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [sys.executable, MANY_TOOLS_UPSTREAM, "--ports", ",".join(map(str, ports)), "--tools", str(tools)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, cwd=REPO,
        )
        try:
            deadline = time.monotonic() + STARTUP_DEADLINE_S
            for port in ports:
                while not _listening(port):
                    if process.poll() is not None:
                        stderr.seek(0)
                        raise RuntimeError("many_tools_upstream exited:\n"
                                           + stderr.read().decode(errors="replace")[-3000:])
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"many_tools_upstream did not listen on {port} in {STARTUP_DEADLINE_S}s")
                    await asyncio.sleep(0.05)
            yield [f"http://127.0.0.1:{port}/mcp" for port in ports]
        finally:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
