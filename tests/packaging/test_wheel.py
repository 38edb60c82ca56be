"""The wheel, as someone without the repository gets it: built with `python -m build` (sdist, then the wheel
from the sdist), installed into a clean venv with `pip install <wheel> -c constraints.txt` (wheelenv.py),
then, from a folder outside the repository and with nothing of the repository on any path: `manifold init`,
`manifold check`, `manifold serve`, and a real MCP client (mcp 2.3.0, streamable HTTP) listing the starter
server's tools and calling one. The Dockerfile's builder and final stages are these same steps
(test_container.py holds them to it).
"""

from __future__ import annotations

import re
import subprocess
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.packaging import wheelenv
from tests.upstreams.launch import free_port

pytestmark = pytest.mark.packaging

ROOT = wheelenv.ROOT
START_DEADLINE_S = 30.0


@dataclass
class Installed:
    dist: wheelenv.Dist
    venv: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    dist = wheelenv.build_dist(tmp_path_factory.mktemp("dist"))
    wheelenv.ensure_venv(dist.wheel)  # at once when `make test`'s setup step made it
    return Installed(dist, wheelenv.install(dist.wheel))


def test_the_wheel_and_the_sdist_carry_every_file_of_the_package(installed: Installed) -> None:
    """Every file of src/manifold (templates, stylesheets, scripts, migrations...) ships, whatever its kind:
    a new kind of file that package-data does not name fails here, not in an installation."""
    wanted = installed.dist.package_files
    assert {"manifold/web/static/manifold.css", "manifold/console/static/htmx.min.js"} <= wanted
    with zipfile.ZipFile(installed.dist.wheel) as wheel:
        in_wheel = {n for n in wheel.namelist() if n.startswith("manifold/")}
        metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert sorted(wanted - in_wheel) == []
    with tarfile.open(installed.dist.sdist) as sdist:
        in_sdist = {n.split("/src/", 1)[1] for n in sdist.getnames() if "/src/manifold/" in n}
    assert sorted(wanted - in_sdist) == []
    assert "License-Expression: Apache-2.0" in metadata


def _run(installed: Installed, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [installed.bin("manifold"), *args],
        cwd=cwd,
        env=wheelenv.clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def served(installed: Installed, tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """`manifold init` then `manifold serve` in a folder outside the repository: (base URL, folder, process)."""
    folder = tmp_path / "gateway"
    assert not folder.resolve().is_relative_to(ROOT)
    done = _run(installed, "init", str(folder), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "manifold serve" in done.stdout and '"mcpServers"' in done.stdout
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [installed.bin("manifold"), "serve", "--port", str(port)],
            cwd=folder,
            env=wheelenv.clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}", folder, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_text = log_path.read_text(errors="replace")
        assert "Traceback" not in log_text, log_text[-4000:]


async def _ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """A bounded poll of /readyz: the process is seen from outside, nothing can signal it."""
    deadline = time.monotonic() + START_DEADLINE_S
    async with httpx2.AsyncClient(timeout=2) as http:
        while True:
            assert process.poll() is None, f"manifold serve exited {process.returncode}:\n{log.read_text()[-4000:]}"
            try:
                if (await http.get(f"{base}/readyz")).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, f"/readyz did not answer 200:\n{log.read_text()[-4000:]}"
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_the_installed_wheel_inits_checks_and_serves_outside_the_repository(
    installed: Installed, served: tuple[str, Path, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    base, folder, process = served
    log = tmp_path / "serve.log"

    # The code that runs is the wheel's, in the clean venv, not the work tree's.
    located = subprocess.run(
        [installed.bin("python"), "-c", "import manifold, sys; print(manifold.__file__); print(sys.path)"],
        cwd=folder,
        env=wheelenv.clean_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(installed.venv) in located.splitlines()[0]
    assert str(ROOT) not in located

    checked = _run(installed, "check", cwd=folder)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "/mcp/starter" in checked.stdout

    again = _run(installed, "init", str(folder), cwd=tmp_path)
    assert again.returncode == 1
    assert "already exist" in again.stderr and "nothing was written" in again.stderr

    await _ready(base, process, log)
    # The key and the snippet to paste come from the banner, as a person reads them.
    snippet = re.search(r'"Authorization": "Bearer ([^"]+)"', log.read_text())
    assert snippet, log.read_text()[-4000:]
    key = snippet[1]

    headers = {"Authorization": f"Bearer {key}"}
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
        with zipfile.ZipFile(installed.dist.wheel) as wheel:
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
