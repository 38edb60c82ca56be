"""The gateway's open-file limit and its bound on connections (rule 5: one caller must not lock everybody out,
nor grow the gateway without bound).

Every client connection, held stream and upstream connection is an open file. Where the soft limit is the
common 1,024, a few hundred idle connections were enough to have every new connection reset, with no line
in any log. `manifold serve` raises its soft limit to the hard one, and says so; where even the hard limit
is low, it warns at start how to raise it.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx2

from tests.e2e.harness import KEY, REPO, STARTUP_DEADLINE_S, write_config
from tests.upstreams.launch import free_port


@contextmanager
def gateway_with_open_files(
    tmp_path: Path, soft: int, hard: int, connections: int | None = None
) -> Iterator[tuple[str, Path]]:
    """`manifold serve` started (not from the tests' zygote: limits are inherited) with these limits, and
    `limits.connections` when given."""
    # SQLite whatever the suite's database: this is about files and connections (and a PostgreSQL database made
    # here would outlive the test: run_gateway is what drops them).
    gateway: dict[str, object] = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'state' / 'manifold.db'}"}
    if connections is not None:
        gateway["limits"] = {"connections": connections}
    config = write_config(tmp_path, {}, gateway=gateway)
    port = free_port()
    log = tmp_path / "gateway.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "manifold.cli", "--config", str(config), "serve", "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "MANIFOLD_DEV_KEY": KEY}, preexec_fn=limit,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx2.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        yield base, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # a loaded machine; stopping is not what these tests are about
            process.kill()
            process.wait()


def test_a_few_hundred_idle_connections_do_not_lock_everyone_out(tmp_path: Path) -> None:
    with gateway_with_open_files(tmp_path, soft=100, hard=2048) as (base, log):
        port = int(base.rsplit(":", 1)[1])
        with ExitStack() as held:
            for _ in range(300):  # three times the soft limit it was started with, saying nothing
                held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
            answer = httpx2.get(f"{base}/healthz", timeout=5)
            assert answer.status_code == 200
        assert "open-file limit raised from 100 to 2048" in log.read_text()


def test_a_low_hard_limit_is_said_at_start_with_how_to_raise_it(tmp_path: Path) -> None:
    with gateway_with_open_files(tmp_path, soft=256, hard=512) as (_base, log):
        text = log.read_text()  # said before the gateway listens, so before it answered /healthz
        assert "the open-file limit is 512" in text
        assert "LimitNOFILE" in text and "ulimit" in text



def test_connections_past_the_limit_are_refused_at_once_and_served_again_once_some_close(tmp_path: Path) -> None:
    """With the open-file limit raised nothing else bounded how many idle connections a client could hold (each
    a file and memory, for request_head_seconds). Past limits.connections one more is answered 503 with
    Retry-After and closed at once, and said in the log; once some close, requests are served again."""
    with gateway_with_open_files(tmp_path, soft=4096, hard=4096, connections=40) as (base, log):
        port = int(base.rsplit(":", 1)[1])
        with ExitStack() as held:
            for _ in range(40):
                held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
            with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
                answer = extra.recv(4096)  # sent at once, before any request: then closed
            assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer
        # The idle ones closed (the gateway sees it a moment later): room again.
        deadline = time.monotonic() + 5
        while (answer := httpx2.get(f"{base}/healthz", timeout=5)).status_code != 200:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.02)
        assert "refused a connection: 40 are open, limits.connections" in log.read_text()
