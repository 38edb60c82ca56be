"""scripts/bootstrap.sh's `pick_python` (the interpreter `make venv` builds .venv with), run in bash against stand-in
interpreters: small scripts that answer some of its questions themselves and hand the rest to this Python."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import REPO

REAL = os.path.realpath(sys.executable)


def functions() -> str:
    """The script's functions and probes, without its start (which would return at once: .venv exists)."""
    script = (REPO / "scripts" / "bootstrap.sh").read_text()
    return script[script.index("is_new_enough() {") : script.index("# A venv made")]


def stand_in(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(f'#!/bin/bash\n{body}\nexec "{REAL}" "$@"\n')
    path.chmod(0o755)
    return path


# Answers "where is your interpreter?" with its own path, so it counts as an interpreter of its own.
OWN_PATH = 'case "${2:-}" in *realpath*) readlink -f "$0"; exit 0;; esac'


def pick(bin_dir: Path, *candidates: str) -> subprocess.CompletedProcess[str]:
    snippet = f"set -euo pipefail\n{functions()}\ncandidates=({' '.join(candidates)})\npick_python\n"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("PYTHON", None)
    return subprocess.run(["bash", "-c", snippet], capture_output=True, text=True, env=env, timeout=60, check=False)


def test_a_python_without_ensurepip_is_named_not_reported_as_too_old(tmp_path: Path) -> None:
    """Debian's python3 without python3-venv: it said only 'needs Python 3.11 or newer'."""
    stub = tmp_path / "stdlib-stub"
    stub.mkdir()
    (stub / "ensurepip.py").write_text("raise ModuleNotFoundError(\"No module named 'ensurepip'\")\n")
    python = stand_in(tmp_path, "python3", f'{OWN_PATH}\nexport PYTHONPATH="{stub}"')
    done = pick(tmp_path, "python3")
    assert done.returncode == 1 and done.stdout == "", done
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"bootstrap: not {python} (Python {version}." in done.stderr, done.stderr
    assert "it has no ensurepip" in done.stderr and f"apt-get install python{version}-venv" in done.stderr


def test_a_python_that_prints_at_start_up_is_still_one_path(tmp_path: Path) -> None:
    """A sitecustomize (or a .pth file) that prints: its lines became part of the chosen 'interpreter'."""
    stand_in(tmp_path, "python3", 'echo "sitecustomize: hello"')
    done = pick(tmp_path, "python3")
    assert done.returncode == 0, done
    assert done.stdout == f"{REAL}\n", done


def test_the_fastest_is_taken_and_an_odd_timing_is_passed_over(tmp_path: Path) -> None:
    def timed(name: str, seconds: str) -> None:
        stand_in(tmp_path, name, f'{OWN_PATH}\ncase "${{2:-}}" in *perf_counter*) echo "{seconds}"; exit 0;; esac')

    timed("odd", "n/a")  # first: its answer once became the time every later one was compared with
    timed("slow", "0.5")
    timed("fast", "2.5e-02")
    done = pick(tmp_path, "odd", "slow", "fast")
    assert done.returncode == 0, done
    assert done.stdout == f"{tmp_path / 'fast'}\n", done
    assert "Traceback" not in done.stderr, done.stderr
    assert f"bootstrap: {tmp_path / 'fast'} " in done.stderr and f"bootstrap: {tmp_path / 'odd'} " not in done.stderr


def test_a_missing_constraints_file_is_said(tmp_path: Path) -> None:
    """Under `set -o pipefail` the stamp's `cat` of a missing constraints.txt ended the script, status 1, silent."""
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "bootstrap.sh"
    script.write_text((REPO / "scripts" / "bootstrap.sh").read_text())
    script.chmod(0o755)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(REAL)  # a venv that is there: no interpreter is picked
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done
    assert f"bootstrap: {tmp_path / 'constraints.txt'} is missing" in done.stderr, done


def test_the_venv_is_made_with_the_path_the_interpreter_calls_itself_not_its_resolved_file(tmp_path: Path) -> None:
    """Homebrew's /opt/homebrew/bin/python3.12 is a link into a versioned Cellar folder that `brew upgrade`
    removes: a venv made with the resolved path broke at the next upgrade (review). The resolved file still
    tells one interpreter reached two ways apart."""
    link = tmp_path / "python3"
    link.symlink_to(REAL)
    done = pick(tmp_path, "python3", str(link))
    assert done.returncode == 0, done
    assert done.stdout == f"{link}\n", done
    assert done.stderr.count("bootstrap: ") == 1, done.stderr  # timed once
