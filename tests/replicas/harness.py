"""Two or more gateway replicas on one database behind a real load balancer, as a team would run them.

Each replica is its own `manifold serve` process (tests/e2e/harness.py `run_gateway`) in its own folder
(config, state dir, log), all on one database (a SQLite file, or a database in a throw-away PostgreSQL
cluster) and all with the SAME secret key (written into each state dir's `secret.key`, as an operator copies
it), so what one replica encrypts or signs the others read. In front of them: Debian's haproxy
(`haproxy -f cfg -db`, a child process; round-robin, loopback, config generated into the temp dir; installed
by scripts/setup-haproxy.sh, `make test`). It adds an `X-Replica` response header naming the replica that
answered, so a test can see where a request went without trusting that alone (tests also check from the
replica's side).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
from cryptography.fernet import Fernet

from tests.e2e.harness import KEY, Gateway, run_gateway
from tests.upstreams.launch import free_port

HAPROXY_START_DEADLINE_S = 15.0
# What the tests balance with by default: no affinity at all, the harshest case (every request may land on
# another replica). The shipped docker/haproxy.cfg keeps each caller on one replica instead (AFFINITY), which
# server→client questions need (docs/replicas.md, "Balancing").
ROUND_ROBIN = "roundrobin"
AFFINITY = "hdr(Authorization)"


def haproxy_binary() -> str:
    found = os.environ.get("MANIFOLD_HAPROXY") or shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(found).exists():
        raise RuntimeError("no haproxy: run scripts/setup-haproxy.sh (make test does)")
    return found


@dataclass
class Replicas:
    gateways: list[Gateway]
    balancer: str  # http://127.0.0.1:<port>, haproxy in front of all of them
    database_url: str
    directory: Path

    @property
    def key(self) -> str:
        return KEY

    def url(self, server: str) -> str:
        return f"{self.balancer}/mcp/{server}"


def haproxy_config(port: int, backends: list[int], balance: str = ROUND_ROBIN) -> str:
    servers = "\n".join(f"    server r{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
    return f"""global
    maxconn 512

defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    # Streams (SSE, subscriptions/listen) stay open for long: no idle cut while a test holds one.
    timeout tunnel 120s

frontend mcp
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance {balance}
    hash-type consistent
    http-response set-header X-Replica %s
{servers}
"""


@asynccontextmanager
async def run_haproxy(directory: Path, backends: list[int], balance: str = ROUND_ROBIN) -> AsyncIterator[str]:
    port = free_port()
    cfg = directory / "haproxy.cfg"
    cfg.write_text(haproxy_config(port, backends, balance))
    log_path = directory / "haproxy.log"
    binary = haproxy_binary()
    check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy refused its config:\n{check.stdout}{check.stderr}")
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [binary, "-f", str(cfg), "-db"], stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + HAPROXY_START_DEADLINE_S
        async with httpx2.AsyncClient(timeout=1) as http:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"haproxy exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx2.TransportError):
                    if (await http.get(f"{base}/healthz")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"haproxy did not answer:\n{log_path.read_text()[-2000:]}")
                await anyio.sleep(0.05)
        yield base
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@asynccontextmanager
async def run_replicas(
    database_url: str | None,
    upstreams: dict[str, Any],
    *,
    count: int = 2,
    virtual_servers: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    gateway: dict[str, Any] | None = None,
    balance: str = ROUND_ROBIN,
) -> AsyncIterator[Replicas]:
    """`database_url`: the one database (None: a SQLite file in the temporary folder). The first replica
    starts alone (it creates the schema), the others after it."""
    secret = Fernet.generate_key().decode()
    with tempfile.TemporaryDirectory(prefix="manifold-replicas-") as tmp:
        directory = Path(tmp)
        url = database_url or f"sqlite+aiosqlite:///{directory / 'shared.db'}"
        async with AsyncExitStack() as stack:
            gateways: list[Gateway] = []
            for i in range(count):
                place = directory / f"replica-{i}"
                (place / "state").mkdir(parents=True)
                key_file = place / "state" / "secret.key"
                key_file.write_text(secret + "\n")
                key_file.chmod(0o600)
                settings = {"database_url": url, **(gateway or {})}
                gw = await stack.enter_async_context(
                    run_gateway(upstreams, virtual_servers, gateway=settings, extra=extra, directory=place)
                )
                gateways.append(gw)
            balancer = await stack.enter_async_context(
                run_haproxy(directory, [int(g.base.rsplit(":", 1)[1]) for g in gateways], balance)
            )
            yield Replicas(gateways, balancer, url, directory)
