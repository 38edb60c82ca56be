"""The wheel and the clean venv of the packaging test (test_wheel.py), also run by `make test` before pytest
(scripts/setup-wheel-venv.sh, the one step that needs the package registry):

    python -m tests.packaging.wheelenv      # build the wheel, make the clean venv if it is missing or stale

`build_dist` builds the sdist and, from it, the wheel (`python -m build --no-isolation`: the build tools
of the project venv, no index), from a copy of pyproject.toml, README.md and src/ in a temporary folder,
so the build writes nothing into the work tree and cannot lean on any other file of the repository.

The clean venv is made with `python -m venv` (no system site-packages) outside the repository, in
`~/.cache/manifold-packaging/venv-<hash>` (XDG_CACHE_HOME is honoured), and `pip install <wheel> -c
constraints.txt` installs the wheel and so its dependencies into it, from the registry. The hash is that of
what decides those dependencies (constraints.txt, the [project] dependencies, the Python version), so the
venv is made again, and older ones removed, only when one of them changes. Each test run then replaces
only the project, offline (`pip install --no-index --no-deps --force-reinstall <wheel>`), and checks that
every requirement the new wheel declares is installed at its pinned version, as pip's resolver would.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "manifold-packaging"
CONSTRAINTS = ROOT / "constraints.txt"
DIST_NAME = "mcp-manifold"
# What the build reads (the Dockerfile's builder stage copies the same) and how it builds (the same RUN).
BUILD_INPUTS = ("pyproject.toml", "README.md", "src")
BUILD_ARGS = ("-m", "build", "--no-isolation")
# pip warns about this machine's optional local index once per package when the folder is absent.
_PIP_NOISE = "is ignored: it is neither a file nor a directory"


def venv_dir() -> Path:
    """The clean venv for the current dependencies (its name carries their hash)."""
    return CACHE / f"venv-{wanted_stamp()[:16]}"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for the clean venv's processes: nothing that points into the repository or its venv."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP") and not k.startswith("MANIFOLD_")
    }
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not p.startswith(str(ROOT))]
    env["PATH"] = os.pathsep.join([str(venv_dir() / "bin"), *path])
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def _run(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = "\n".join(line for line in (done.stdout + done.stderr).splitlines() if _PIP_NOISE not in line)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{output[-4000:]}")
    return output


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path
    package_files: frozenset[str]  # every file of src/manifold that was built from, as "manifold/..."


def build_dist(out: Path) -> Dist:
    """The wheel and sdist of the work tree's project, built into `out`."""
    with tempfile.TemporaryDirectory(prefix="manifold-build-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for name in BUILD_INPUTS:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, tree / name, ignore=junk)
            else:
                shutil.copy2(ROOT / name, tree / name)
        package = tree / "src" / "manifold"
        files = frozenset(p.relative_to(package.parent).as_posix() for p in package.rglob("*") if p.is_file())
        out.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, *BUILD_ARGS, "--outdir", str(out), str(tree)])
    wheels = sorted(out.glob("mcp_manifold-*.whl"))
    sdists = sorted(out.glob("mcp_manifold-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, f"expected one wheel and one sdist in {out}: {list(out.iterdir())}"
    return Dist(wheels[0], sdists[0], files)


def wanted_stamp() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    facts = {
        "constraints": CONSTRAINTS.read_text(),
        "dependencies": project["dependencies"],
        "requires-python": project.get("requires-python"),
        "python": sys.version,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


@contextmanager
def _locked() -> Iterator[None]:
    """One user of the clean venv at a time: make's setup step, and each test run from its install until its
    gateway has stopped (another run's install must not replace the package under a running gateway)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _up_to_date() -> bool:
    venv = venv_dir()
    return (venv / "bin" / "python").exists() and (venv / ".complete").exists()


def _make_venv(wheel: Path) -> bool:
    """Make the clean venv from `wheel` (a clean install, from the registry) unless it exists; the caller
    holds the lock. True when it was made now."""
    if _up_to_date():
        return False
    venv = venv_dir()
    for old in CACHE.glob("venv-*"):
        shutil.rmtree(old, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(venv)], env=clean_env())
    python = str(venv / "bin" / "python")
    _run([python, "-m", "pip", "install", "--quiet", str(wheel), "-c", str(CONSTRAINTS)], env=clean_env())
    (venv / ".complete").write_text(f"{wheel.name}\n")
    return True


@contextmanager
def installed(wheel: Path) -> Iterator[Path]:
    """The clean venv with `wheel` installed, held for the caller alone until the block ends. The venv is made
    first if it is missing (at once when `make test`'s setup step made it); then the project is replaced,
    offline, and every requirement the wheel declares must be installed at its pinned version."""
    with _locked():
        _make_venv(wheel)
        venv = venv_dir()
        python = str(venv / "bin" / "python")
        _run(
            [python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--force-reinstall", str(wheel)],
            env=clean_env(),
        )
        missing = _run([python, "-c", _REQUIREMENTS_MET, DIST_NAME], env=clean_env()).strip()
        assert not missing, f"the wheel's requirements not met in {venv} (run scripts/setup-wheel-venv.sh):\n{missing}"
        yield venv


# Run by the venv's Python: every `Requires-Dist: name[extras]==version` of the project (no extra, no marker)
# installed at that version, else one line per one that is not. (pip check, without a second pip start-up.)
_REQUIREMENTS_MET = """
import re, sys
from importlib import metadata
for req in metadata.requires(sys.argv[1]) or []:
    if ";" in req:
        continue
    name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\\[[^]]*\\])?==(\\S+)", req.strip()).groups()
    try:
        found = metadata.version(name)
    except metadata.PackageNotFoundError:
        found = None
    if found != version:
        print(f"{req}: {found or 'not installed'}")
"""


def main() -> int:
    if _up_to_date():
        return 0
    with tempfile.TemporaryDirectory(prefix="manifold-wheel-") as tmp:
        wheel = build_dist(Path(tmp)).wheel
        with _locked():
            made = _make_venv(wheel)
        if made:
            print(f"created {venv_dir()} (a clean install of {wheel.name} with -c constraints.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
