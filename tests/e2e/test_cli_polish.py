"""Issue 11, item 6, with real processes: refused credentials in the audit (rate-limited, never the token),
the serve banner (every served server, both URLs), one log format, scripts/run-demo.sh ending with status 0
on Ctrl-C and SIGTERM and `make run` with the status the README gives, and the README's bigger example served
as it is and used with the development key."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
import yaml

from tests.e2e.harness import REPO, Gateway, manifold_cli, run_gateway, stdio_upstream, write_config
from tests.upstreams.launch import KITCHEN, free_port

pytestmark = pytest.mark.anyio

DEADLINE_S = 20.0
POLL_S = 0.05


async def poll(check: Any, what: str, deadline: float = DEADLINE_S) -> Any:
    """Call the async `check()` until it returns something truthy; fail after `deadline` seconds."""
    end = time.monotonic() + deadline
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"{what} did not happen within {deadline:g}s")
        await anyio.sleep(POLL_S)


def mcp_headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}},
}


async def unauthenticated_rows(gw: Gateway) -> list[dict[str, Any]]:
    done = await manifold_cli(gw, "audit", "--json", "--outcome", "unauthenticated", "--limit", "1000")
    return [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]


async def test_refused_credentials_are_audited_at_most_once_a_second_without_the_token():
    upstreams = {"kitchen": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "kitchen")}
    async with run_gateway(upstreams) as gw:
        key = json.loads(
            (await manifold_cli(gw, "keys", "create", "--user", "eve@corp.com", "--name", "x", "--json")).stdout
        )
        await manifold_cli(gw, "keys", "revoke", key["id"])
        token, garbage = key["token"], "not-one-of-ours-" + "z" * 30
        async with httpx2.AsyncClient(timeout=30) as http:
            started = time.monotonic()
            for _ in range(30):  # a flood with a revoked key
                assert (
                    await http.post(gw.url("kitchen"), headers=mcp_headers(token), json=INITIALIZE)
                ).status_code == 401
            flood_s = time.monotonic() - started
            for _ in range(3):
                assert (
                    await http.post(gw.url("kitchen"), headers=mcp_headers(garbage), json=INITIALIZE)
                ).status_code == 401
            admin = await http.get(f"{gw.base}/admin/api/keys", headers={"Authorization": f"Bearer {token}"})
            assert admin.status_code == 401
            no_credential = await http.post(gw.url("kitchen"), headers={"Accept": "application/json"}, json=INITIALIZE)
            assert no_credential.status_code == 401

            async def revoked_and_garbage_rows() -> list[dict[str, Any]] | None:
                rows = await unauthenticated_rows(gw)
                credentials = {r["credential"] for r in rows}
                return rows if {f"api_key:{key['id']}", "unknown"} <= credentials else None

            rows = await poll(revoked_and_garbage_rows, "the refused credentials' audit rows")
            flood = [r for r in rows if r["credential"] == f"api_key:{key['id']}"]
            # 31 refusals of one key (30 on /mcp, 1 on /admin/api): one row per second at most
            assert 1 <= len(flood) <= int(flood_s) + 2, flood
            assert all(r["principal"] == "unknown" and r["outcome"] == "unauthenticated" for r in rows)
            assert {r["server"] for r in flood} <= {"kitchen", "admin"}
            (garbage_row,) = [r for r in rows if r["credential"] == "unknown"]
            assert garbage_row["server"] == "kitchen" and "127.0.0.1" in garbage_row["detail"]
            text = json.dumps(rows)
            assert token not in text and token.rsplit("_", 1)[1] not in text and garbage not in text

            # The refusals that were not written are counted in the source's next row.
            async def a_row_with_the_count() -> dict[str, Any] | None:
                await http.post(gw.url("kitchen"), headers=mcp_headers(token), json=INITIALIZE)
                for r in await unauthenticated_rows(gw):
                    if r["credential"] == f"api_key:{key['id']}" and re.search(
                        r"and \d+ more since", r["detail"] or ""
                    ):
                        return r
                return None

            await poll(a_row_with_the_count, "a row counting the refusals in between")
        table = (await manifold_cli(gw, "audit", "--outcome", "unauthenticated")).stdout.decode()
        assert max(len(line) for line in table.splitlines()) <= 100
        assert f"api_key:{key['id']}" in table and "unauthenticated" in table


async def test_banner_lists_every_served_server_with_both_urls_in_one_log_format(tmp_path: Path):
    upstreams = {"kitchen": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "kitchen")}
    servers = {"mixed": {"members": [{"upstream": "kitchen"}]}}
    config = write_config(tmp_path, upstreams, servers)
    wiki = tmp_path / "wiki.yaml"
    wiki.write_text("id: wiki\ntransport: http\nurl: http://127.0.0.1:9/mcp\n")
    created = subprocess.run(
        [sys.executable, "-m", "manifold.cli", "--config", str(config), "upstreams", "create", "--file", str(wiki)],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    async with run_gateway(upstreams, servers, directory=tmp_path) as gw:

        async def banner() -> str | None:
            log = gw.log()
            return log if "Development key" in log else None

        log = await poll(banner, "the banner")
        for sid in ("mixed", "kitchen", "wiki"):  # a file virtual server, a file upstream, a CLI-created one
            assert re.search(rf"{re.escape(gw.url(sid))}\s+{re.escape(gw.sse_url(sid))}\n", log), log
        assert "Manifold is serving 3 servers" in log
        lines = [line for line in log.splitlines() if re.match(r"^(INFO|WARNING|ERROR|DEBUG):", line)]
        assert lines == [], "uvicorn's own format"
        assert re.search(r"^\d{4}-\d\d-\d\d [\d:,]+ INFO uvicorn\.error: Uvicorn running on", log, re.M), log


def demo_config(directory: Path, gateway_port: int, toolbox_port: int) -> Path:
    """The repository's demo configuration, on free ports, with its state in `directory`."""
    config = yaml.safe_load((REPO / "manifold.yaml").read_text())
    config["gateway"].update(
        port=gateway_port, state_dir=str(directory / "state"), virtual_servers_dir=str(REPO / "virtual_servers")
    )
    config["upstreams"]["notes"]["cwd"] = str(REPO)
    config["upstreams"]["toolbox"]["url"] = f"http://127.0.0.1:{toolbox_port}/mcp"
    path = directory / "manifold.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def start_demo(command: list[str], directory: Path, toolbox_port: int, output: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TOOLBOX_PORT": str(toolbox_port)}
    env.pop("MAKEFLAGS", None)
    with open(output, "wb") as out:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def banner() -> bool:
        assert process.poll() is None, output.read_text()
        return "Development key" in output.read_text()

    try:
        await poll(banner, "the demo's banner", deadline=60.0)
    except BaseException:
        end_group(process)
        raise
    return process


def end_group(process: subprocess.Popen[bytes]) -> None:
    """Whatever a failed test left running of the demo (its own process group) is stopped."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


async def stopped(process: subprocess.Popen[bytes]) -> int:
    async def done() -> bool:
        return process.poll() is not None

    await poll(done, "the demo's end")
    return process.returncode


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
async def test_run_demo_ends_with_status_0(tmp_path: Path, how: str):
    gateway_port, toolbox_port = free_port(), free_port()
    config = demo_config(tmp_path, gateway_port, toolbox_port)
    output = tmp_path / "out.log"
    process = await start_demo(["bash", "scripts/run-demo.sh", str(config)], tmp_path, toolbox_port, output)
    try:
        text = output.read_text()
        assert f"http://127.0.0.1:{gateway_port}/sse/demo" in text  # the banner names the SSE URL too
        if how == "sigterm":
            process.send_signal(signal.SIGTERM)
        else:
            os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
        assert await stopped(process) == 0, output.read_text()
        assert "Traceback" not in output.read_text()
    finally:
        end_group(process)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


# How the README says `make run` ends (outside probe: it said "exits 0", and the test never looked). GNU make
# re-raises a signal it was sent once its recipe is done: its status is the signal's (Popen: -signal; a shell
# shows 128 + signal), not the script's 0.
README_SAYS = "`make` itself then ends with that signal's status (130 after Ctrl-C, 143 after SIGTERM)"
SHELL_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_make_run_ends_without_a_make_error(tmp_path: Path, sig: signal.Signals):
    gateway_port, toolbox_port = free_port(), free_port()
    config = demo_config(tmp_path, gateway_port, toolbox_port)
    output = tmp_path / "out.log"
    process = await start_demo(
        ["make", "--no-print-directory", "run", f"CONFIG={config}"], tmp_path, toolbox_port, output
    )
    try:
        os.killpg(process.pid, sig)  # as a terminal's Ctrl-C, or a supervisor stopping the group
        status = await stopped(process)
        text = output.read_text()
        assert "make: ***" not in text and "Error 143" not in text and "Traceback" not in text, text
        # Both children stopped before make ended, and make ended with the status the README gives.
        assert not listening(gateway_port) and not listening(toolbox_port)
        assert README_SAYS in " ".join((REPO / "README.md").read_text().split())
        assert status == -sig and 128 + sig == SHELL_STATUS[sig], f"make ended with {status}, not as the README says"
    finally:
        end_group(process)


def readme_blocks() -> dict[str, str]:
    """The README's YAML blocks, by the file each is introduced as (`examples/...`:)."""
    readme = (REPO / "README.md").read_text()
    return {
        m.group(1): m.group(2)
        for m in re.finditer(r"`(examples/[\w/.]+\.yaml)`[^\n]*:\n\n```yaml\n(.*?)```", readme, re.S)
    }


async def test_the_readme_example_is_two_files_that_check_serve_and_answer_the_development_key(tmp_path: Path):
    blocks = readme_blocks()
    assert set(blocks) == {"examples/manifold.yaml", "examples/virtual_servers/eng.yaml"}
    for name, block in blocks.items():  # the README shows the files as they are (less their opening comments)
        assert block.strip() in (REPO / name).read_text(), name
    check = subprocess.run(
        [sys.executable, "-m", "manifold.cli", "--config", "examples/manifold.yaml", "check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "/mcp/eng" in check.stdout

    # Served as they are (a copy beside a link to the venv: the state stays out of the repository).
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    port = free_port()
    log = tmp_path / "gateway.log"
    env = {k: v for k, v in os.environ.items() if k != "MANIFOLD_DEV_KEY"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "manifold.cli", "--config", str(tmp_path / "examples" / "manifold.yaml"), "serve",
             "--port", str(port)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        async def printed_key() -> str | None:
            assert process.poll() is None, log.read_text()
            m = re.search(
                r"Development key, an admin key for user 'dev' \(kept in [^)]*\):\n  (mfd_\S+)", log.read_text()
            )
            return m.group(1) if m else None

        dev_key = await poll(printed_key, "the development key in the banner")
        banner = log.read_text()
        # The key-less way first (the IDE signs in through the gateway), the key as the fallback.
        assert f"claude mcp add --transport http manifold http://127.0.0.1:{port}/mcp/eng\n" in banner
        assert f"http://127.0.0.1:{port}/servers" in banner
        assert banner.index("no key in its config") < banner.index(f"Bearer {dev_key}")
        gw = Gateway(base=f"http://127.0.0.1:{port}", key=dev_key, process=process, log_path=log, config_dir=tmp_path)
        async with gw.client("eng") as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"notes__add_note", "notes__search_notes"} <= tools
            result = await client.call_tool("notes__add_note", {"title": "readme", "body": "it runs"})
            assert not result.is_error, result
            assert isinstance(result.content[0], types.TextContent)
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_the_audit_table_shows_why_a_call_failed():
    upstreams = {"kitchen": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "kitchen")}
    async with run_gateway(upstreams) as gw:
        async with gw.client("kitchen") as client:
            result = await client.call_tool("fail", {"message": "disk quota exceeded on /srv"})
            assert result.is_error

        async def failed_rows() -> list[dict[str, Any]]:
            done = await manifold_cli(gw, "audit", "--json", "--outcome", "tool_error")
            return [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]

        (row,) = await poll(failed_rows, "the tool_error row")
        assert row["detail"] == "disk quota exceeded on /srv"
        table = (await manifold_cli(gw, "audit")).stdout.decode().splitlines()
        assert max(len(line) for line in table) <= 100
        at = next(i for i, line in enumerate(table) if "fail" in line and "tool_error" in line)
        assert table[at + 1] == "  ↳ disk quota exceeded on /srv"


@contextlib.contextmanager
def serving_on_port_0(tmp_path: Path, config: Path, *extra: str) -> Iterator[Path]:
    """`manifold serve --port 0` (no development key from the environment) writing to a log; yields the log."""
    log_path = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "MANIFOLD_DEV_KEY"}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "manifold.cli", "--config", str(config), "serve", "--port", "0", *extra],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
    try:
        yield log_path
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_serve_on_port_0_names_the_port_it_got_everywhere(tmp_path: Path):
    """`serve --port 0` lets the system pick the port; the banner, the URLs and the OAuth metadata said ':0'
    (and '1 servers')."""
    upstreams = {"wiki": {"transport": "http", "url": "http://127.0.0.1:9/mcp"}}
    config = write_config(tmp_path, upstreams)
    with serving_on_port_0(tmp_path, config) as log_path:

        async def banner() -> re.Match[str] | None:
            return re.search(r"Manifold is serving 1 server on http://127\.0\.0\.1:(\d+) ", log_path.read_text())

        port = int((await poll(banner, "the banner")).group(1))
        assert port != 0
        base = f"http://127.0.0.1:{port}"
        log = log_path.read_text()
        assert f"{base}/mcp/wiki  {base}/sse/wiki" in log, log
        assert ":0/" not in log, log
        async with httpx2.AsyncClient() as http:
            metadata = (await http.get(f"{base}/.well-known/oauth-protected-resource/mcp/wiki")).json()
        assert metadata["resource"] == f"{base}/mcp/wiki", metadata


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("case", ["IPv6 host", "public_url"])
async def test_serve_on_port_0_names_a_reachable_address(tmp_path: Path, case: str):
    """An IPv6 literal host is bracketed in the served URLs ('http://::1:<port>' answered nothing), and behind a
    public_url the port the system picked is still named in the log (uvicorn names it only for sockets it bound
    itself)."""
    if case == "IPv6 host" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    upstreams = {"wiki": {"transport": "http", "url": "http://127.0.0.1:9/mcp"}}
    gateway = {"public_url": "https://gateway.example.com"} if case == "public_url" else None
    config = write_config(tmp_path, upstreams, gateway=gateway)
    host = ["--host", "::1"] if case == "IPv6 host" else []
    with serving_on_port_0(tmp_path, config, *host) as log_path:

        async def banner() -> re.Match[str] | None:
            log = log_path.read_text()
            return re.search(r"Manifold is serving 1 server on (\S+) ", log) and re.search(
                r"Uvicorn running on (http://\S+:\d+) ", log
            )

        listening = (await poll(banner, "the banner")).group(1)
        log = log_path.read_text()
        if case == "IPv6 host":
            assert re.match(r"http://\[::1\]:\d+$", listening), log
            assert f"Manifold is serving 1 server on {listening} " in log, log
        else:
            assert re.match(r"http://127\.0\.0\.1:\d+$", listening) and not listening.endswith(":0"), log
            assert "Manifold is serving 1 server on https://gateway.example.com " in log, log
        async with httpx2.AsyncClient() as http:
            assert (await http.get(f"{listening}/healthz")).status_code == 200


async def test_serve_stopped_with_ctrl_c_ends_with_status_130_without_a_traceback():
    """`manifold serve` in a terminal, stopped with Ctrl-C: it stops as with SIGTERM and ends with status 130 (a
    shell's for Ctrl-C), and prints no traceback. Was: uvicorn raises the SIGINT it stopped on again once
    stopped, and the KeyboardInterrupt that made ended the gateway with two tracebacks (`make run` never showed
    them: its gateway is a background job, which ignores SIGINT)."""
    async with run_gateway({"k": stdio_upstream(KITCHEN, "--transport", "stdio")}) as gw:
        async with gw.client("k") as client:
            assert (await client.call_tool("echo", {"text": "hi"})).is_error is False
        gw.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 15
        while gw.process.poll() is None and time.monotonic() < deadline:
            await anyio.sleep(0.02)
        assert gw.process.returncode == 128 + signal.SIGINT, gw.log()[-3000:]
    # run_gateway has checked the log for a traceback
