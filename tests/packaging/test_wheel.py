"""The wheel, as someone without the repository gets it, and the image's steps run on it.

Built with `python -m build --no-isolation` (the sdist, then the wheel from the sdist), installed into a clean
venv with `pip install <wheel> -c constraints.txt` (wheelenv.py; the venv is made once per set of
dependencies), then, from a folder outside the repository and with nothing of the repository on any path:
`manifold init`, `manifold check`, `manifold serve`, and a real MCP client (mcp 2.3.0, streamable HTTP)
listing the starter server's tools and calling one. Then the Dockerfile's HEALTHCHECK command and
docker/haproxy.cfg's health check are run against that gateway.

One test, because the venv is one: it is held (a file lock) from the install until the gateway has
stopped, so no other run replaces the package under a running gateway.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.packaging import wheelenv
from tests.packaging.test_container import HAPROXY_CFG, healthcheck_argv
from tests.replicas.harness import haproxy_binary
from tests.upstreams.launch import free_port

pytestmark = pytest.mark.packaging

ROOT = wheelenv.ROOT
START_DEADLINE_S = 30.0
# The first check of each server comes within `inter` (500 ms here) of haproxy's start.
HAPROXY_CHECK_DEADLINE_S = 15.0


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "manifold"), *args],
        cwd=cwd,
        env=wheelenv.clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextlib.contextmanager
def _process(args: list[str], *, cwd: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, cwd=cwd, env=wheelenv.clean_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """A bounded poll of /readyz: the process is seen from outside, nothing can signal it."""
    deadline = time.monotonic() + START_DEADLINE_S
    async with httpx2.AsyncClient(timeout=2) as http:
        while True:
            assert process.poll() is None, f"manifold serve exited {process.returncode}:\n{log.read_text()[-4000:]}"
            with contextlib.suppress(httpx2.TransportError):
                if (await http.get(f"{base}/readyz")).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"/readyz did not answer 200:\n{log.read_text()[-4000:]}"
            await anyio.sleep(0.05)


def check_contents(dist: wheelenv.Dist) -> None:
    """Every file of src/manifold (templates, stylesheets, scripts, migrations...) ships, whatever its kind:
    a new kind of file that package-data does not name fails here, not in an installation."""
    wanted = dist.package_files
    assert {"manifold/web/static/manifold.css", "manifold/console/static/htmx.min.js"} <= wanted
    with zipfile.ZipFile(dist.wheel) as wheel:
        in_wheel = {n for n in wheel.namelist() if n.startswith("manifold/")}
        metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert sorted(wanted - in_wheel) == []
    with tarfile.open(dist.sdist) as sdist:
        in_sdist = {n.split("/src/", 1)[1] for n in sdist.getnames() if "/src/manifold/" in n}
    assert sorted(wanted - in_sdist) == []
    assert "License-Expression: Apache-2.0" in metadata


def _haproxy_stat(sock: Path) -> dict[str, dict[str, str]]:
    """`show stat` of haproxy's admin socket: the backend's servers by name, each a row of the CSV."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(str(sock))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    header, *rows = data.decode().strip().splitlines()
    names = header.lstrip("# ").split(",")
    table = [dict(zip(names, row.split(","), strict=False)) for row in rows]
    return {r["svname"]: r for r in table if r["pxname"] == "replicas" and r["svname"] != "BACKEND"}


async def check_haproxy(tmp: Path, gateway_port: int) -> None:
    """docker/haproxy.cfg, its addresses made loopback ones (gateway-a: the gateway; gateway-b: a port where
    nothing listens), checking every 500 ms instead of 5 s, and an admin socket to read its checks: the /readyz
    check passes on the gateway (L7OK: its Host passed the gateway's DNS-rebinding check, 200), fails on the
    dead one, and requests through the frontend reach the gateway."""
    front, dead = free_port(), free_port()
    sock = tmp / "haproxy.sock"
    text = HAPROXY_CFG.read_text()
    replaced = {
        "global\n": f"global\n    stats socket {sock} level admin\n",
        "bind :8470": f"bind 127.0.0.1:{front}",
        "gateway-a:8470": f"127.0.0.1:{gateway_port}",
        "gateway-b:8470": f"127.0.0.1:{dead}",
        "check inter 5s": "check inter 500ms",  # the same checks, sooner: the first comes within `inter`
    }
    for old, new in replaced.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(text)
    with _process([haproxy_binary(), "-f", str(cfg), "-db"], cwd=tmp, log_path=tmp / "haproxy.log") as haproxy:
        deadline = time.monotonic() + HAPROXY_CHECK_DEADLINE_S
        while True:
            assert haproxy.poll() is None, (tmp / "haproxy.log").read_text()
            servers: dict[str, dict[str, str]] = {}
            with contextlib.suppress(OSError):
                servers = _haproxy_stat(sock)
            checks = {name: row.get("check_status", "") for name, row in servers.items()}
            if all(checks.get(name) not in (None, "", "INI") for name in ("gateway-a", "gateway-b")):
                break
            assert time.monotonic() < deadline, f"haproxy did not check both servers: {checks}"
            await anyio.sleep(0.1)
        assert checks["gateway-a"] == "L7OK", servers["gateway-a"]
        assert checks["gateway-b"] in ("L4CON", "L4TOUT"), servers["gateway-b"]
        async with httpx2.AsyncClient(timeout=5) as http:
            for _ in range(4):  # round-robin: the dead server's turns are retried on the gateway
                answer = await http.get(f"http://127.0.0.1:{front}/healthz")
                assert answer.status_code == 200, answer.text


@pytest.mark.anyio
async def test_the_wheel_installs_into_a_clean_venv_and_serves_outside_the_repository(tmp_path: Path) -> None:
    dist = wheelenv.build_dist(tmp_path / "dist")
    check_contents(dist)

    with wheelenv.installed(dist.wheel) as venv:
        # The code that runs is the wheel's, in the clean venv: nothing of the work tree on its path.
        located = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import manifold, sys; print(manifold.__file__); print(sys.path)"],
            cwd=tmp_path,
            env=wheelenv.clean_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert located.startswith(str(venv))
        assert str(ROOT) not in located

        folder = tmp_path / "gateway"
        assert not folder.resolve().is_relative_to(ROOT)
        done = _run(venv, "init", str(folder), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "manifold serve" in done.stdout and '"mcpServers"' in done.stdout
        checked = _run(venv, "check", cwd=folder)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "/mcp/starter" in checked.stdout

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = tmp_path / "serve.log"
        with _process([str(venv / "bin" / "manifold"), "serve", "--port", str(port)], cwd=folder, log_path=log) as gw:
            await _ready(base, gw, log)
            await _use(base, log, dist)

            # The image's HEALTHCHECK, run by the venv's Python: 0 while /readyz is 200, 1 (quietly) when
            # nothing answers.
            healthy = subprocess.run(healthcheck_argv(port, str(venv / "bin" / "python")), capture_output=True)
            assert healthy.returncode == 0, healthy.stderr
            nobody = subprocess.run(healthcheck_argv(free_port(), str(venv / "bin" / "python")), capture_output=True)
            assert (nobody.returncode, nobody.stderr) == (1, b"")

            await check_haproxy(tmp_path, port)
        assert "Traceback" not in log.read_text(), log.read_text()[-4000:]


async def _use(base: str, log: Path, dist: wheelenv.Dist) -> None:
    # The key and the snippet to paste come from the banner, as a person reads them.
    snippet = re.search(r'"Authorization": "Bearer ([^"]+)"', log.read_text())
    assert snippet, log.read_text()[-4000:]
    headers = {"Authorization": f"Bearer {snippet[1]}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        target = streamable_http_client(f"{base}/mcp/starter", http_client=http)
        async with Client(target, mode="legacy") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"notes__add_note", "notes__list_notes", "notes__search_notes"} <= names
            added = await client.call_tool("notes__add_note", {"title": "wheel", "body": "installed from a wheel"})
            assert not added.is_error, added
            found = await client.call_tool("notes__search_notes", {"query": "installed from a wheel"})
            assert "wheel" in str(found.content)

    # The files the wheel carries are what the pages serve: the web stylesheet, the console's own files,
    # and a console page rendered from its templates (a refused Origin gets the console's problem page).
    def shipped(name: str) -> bytes:
        with zipfile.ZipFile(dist.wheel) as wheel:
            return wheel.read(name)

    async with httpx2.AsyncClient(timeout=10) as http:
        css = await http.get(f"{base}/static/manifold.css")
        assert css.status_code == 200
        assert css.content == shipped("manifold/web/static/manifold.css")
        htmx = await http.get(f"{base}/admin/static/htmx.min.js")
        assert htmx.status_code == 200
        assert htmx.content == shipped("manifold/console/static/htmx.min.js")
        page = await http.get(f"{base}/admin", headers={"Origin": "http://evil.example"})
        assert page.status_code == 403
        assert "text/html" in page.headers["content-type"]
        assert "/admin/static/console.css" in page.text
