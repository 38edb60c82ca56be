"""The suite's process starter (tests/zygote.py) runs a script as a fresh interpreter would: its argv,
environment, working directory, standard streams and exit code; killed by a signal, it says so."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import zygote
from tests.waiting import wait_for

CHILD = """
import atexit, os, sys
atexit.register(lambda: print("atexit ran"))
print("argv", sys.argv[1:], "env", os.environ.get("ZYGOTE_TEST"), "cwd", os.getcwd(), "stdin", sys.stdin.read())
print("to stderr", file=sys.stderr)
if sys.argv[1] == "wait":
    print("waiting", flush=True)
    import threading
    threading.Event().wait()
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture
def script(tmp_path: Path) -> str:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return str(path)


@pytest.mark.anyio
async def test_a_script_sees_its_own_argv_env_cwd_and_stdin_and_exits_with_its_code(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(zygote.ENV_SWITCH, "1")
    done = await zygote.run(
        [sys.executable, script, "3"], input=b"hello", cwd=tmp_path, env={"ZYGOTE_TEST": "yes", "PATH": "/usr/bin"}
    )
    assert done.returncode == 3
    assert done.stdout.decode() == f"argv ['3'] env yes cwd {tmp_path} stdin hello\natexit ran\n"
    assert done.stderr == b"to stderr\n"


@pytest.mark.anyio
async def test_a_module_runs_as_main_without_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(zygote.ENV_SWITCH, "1")
    done = await zygote.run([sys.executable, "-m", "manifold.cli", "--help"], cwd=Path(__file__).parents[2])
    assert done.returncode == 0
    assert done.stdout.startswith(b"usage: manifold")
    assert done.stderr == b""


@pytest.mark.anyio
async def test_a_terminated_child_reports_the_signal(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(zygote.ENV_SWITCH, "1")
    out = tmp_path / "out"
    with out.open("wb") as sink:
        process = zygote.spawn([sys.executable, script, "wait"], stdout=sink, stderr=subprocess.STDOUT)
    assert isinstance(process, zygote.ZygoteProcess)
    await wait_for(lambda: "waiting" in out.read_text(), what="the child running")
    assert process.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(0.01)
    process.terminate()
    assert process.wait(10) == -signal.SIGTERM
    assert out.read_text().startswith("argv ['wait']")


def test_other_interpreters_and_options_start_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(zygote.ENV_SWITCH, "1")
    process = zygote.spawn([sys.executable, "-c", "raise SystemExit(4)"])
    assert isinstance(process, subprocess.Popen)
    assert process.wait(30) == 4


def test_another_venvs_python_starts_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """The legacy-SDK venv's python is a symlink to the same interpreter, but has other packages."""
    monkeypatch.setenv(zygote.ENV_SWITCH, "1")
    legacy = Path(__file__).parents[2] / ".venv-legacy" / "bin" / "python"
    assert legacy.exists(), "make test sets up the legacy venv (scripts/setup-legacy-venv.sh)"
    process = zygote.spawn([str(legacy), str(Path(__file__).parents[1] / "upstreams" / "legacy_server.py"), "--help"])
    assert isinstance(process, subprocess.Popen)
    assert process.wait(60) == 0
