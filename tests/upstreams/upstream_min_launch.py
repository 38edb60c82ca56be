"""Start and stop `upstream_min.py` servers as real subprocesses (for the upstream-client tests)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

SERVER = Path(__file__).with_name("upstream_min.py")
PYTHON = sys.executable
LEGACY_SERVER = Path(__file__).with_name("legacy_server.py")  # mcp 1.x, shared test upstream
LEGACY_PYTHON = Path(__file__).parents[2] / ".venv-legacy" / "bin" / "python"  # scripts/setup-legacy-venv.sh


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class ServerProcess:
    """One test server (upstream_min by default) on a loopback port (http or sse)."""

    def __init__(self, transport: str, port: int | None = None, *, script: Path = SERVER, python=PYTHON) -> None:
        self.transport = transport
        self.script = script
        self.python = python
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/" + ("mcp" if self.transport == "http" else "sse")

    def start(self, deadline: float = 20.0) -> ServerProcess:
        self.proc = subprocess.Popen(
            [str(self.python), str(self.script), "--transport", self.transport, "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + deadline
        while not port_open(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.script.name} exited with {self.proc.returncode}")
            if time.monotonic() > end:
                raise RuntimeError(f"{self.script.name} did not start listening in time")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        # Wait until the port is really free, so a restart on it can bind.
        end = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < end:
            time.sleep(0.05)


class RecordingSink:
    """A RequestSink that records notifications and answers sampling with a fixed text."""

    def __init__(
        self, answer: str = "sampled-by-test", principal_id: str = "user:tester", client_session: object | None = None
    ) -> None:
        self.client_session = client_session  # the client session it stands for (None: sessionless)
        self.notifications: list[dict] = []
        self.requests: list[tuple[str, dict | None]] = []
        self.answer = answer
        self.client_capabilities: dict = {"sampling": {}}  # what the client it stands for declared
        self.principal_id = principal_id  # whose request it is

    async def notify(self, message: dict) -> None:
        self.notifications.append(message)

    async def request(self, method: str, params: dict | None, *, shared: bool = False) -> dict:
        self.requests.append((method, params))
        if method == "sampling/createMessage":
            return {"result": {"role": "assistant", "content": {"type": "text", "text": self.answer}, "model": "test"}}
        return {"error": {"code": -32601, "message": f"test sink does not answer {method}"}}


def tool_result(reply: dict):
    """The structured result of a tools/call reply (raises if the reply is an error)."""
    assert "result" in reply, reply
    result = reply["result"]
    assert not result.get("isError"), result
    return result["structuredContent"]["result"]
