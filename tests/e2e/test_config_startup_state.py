"""A state folder or database the gateway cannot use is one clear problem, never a traceback.

Outside probe: `manifold check` said ok, then `manifold serve` died with a traceback for a SQLite file in a
missing folder (`RevisionWatcher`), a `state_dir` that cannot be made (`/proc/...`) or is a file
(`dev_key.load_or_create`), and a `mysql://` URL (no module MySQLdb). Now `serve` says which field of which
file, on which line, and exits 2; `check` refuses an unsupported database outright and warns about folders
(it may run on another machine than the gateway).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from tests import zygote
from tests.e2e.harness import REPO

pytestmark = pytest.mark.anyio


def _config(tmp_path: Path, gateway: dict[str, object]) -> Path:
    path = tmp_path / "manifold.yaml"
    # A comment first, so the field's line is not simply the first lines of the file.
    path.write_text("# the gateway\n" + yaml.safe_dump({"gateway": gateway, "upstreams": {}}, sort_keys=False))
    return path


async def _manifold(config: Path, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "MANIFOLD_DEV_KEY"}  # the dev key is made in state_dir
    done = await zygote.run([sys.executable, "-m", "manifold.cli", "--config", str(config), *args], cwd=REPO, env=env)
    return done.returncode, done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")


def _line_of(config: Path, key: str) -> int:
    return next(i for i, text in enumerate(config.read_text().splitlines(), 1) if text.strip().startswith(f"{key}:"))


def _cases(tmp_path: Path) -> dict[str, tuple[dict[str, object], str, str]]:
    """name -> (gateway settings, the field named, words of the problem)."""
    (tmp_path / "a-file").write_text("not a folder\n")
    return {
        "database in a missing folder": (
            {
                "state_dir": str(tmp_path / "state"),
                "database_url": f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'manifold.db'}",
            },
            "database_url",
            "does not exist",
        ),
        "state_dir that cannot be made": ({"state_dir": "/proc/manifold-state"}, "state_dir", "cannot create folder"),
        "state_dir that is a file": ({"state_dir": str(tmp_path / "a-file")}, "state_dir", "is a file"),
    }


@pytest.mark.parametrize(
    "case", ["database in a missing folder", "state_dir that cannot be made", "state_dir that is a file"]
)
async def test_serve_names_the_field_and_line_of_a_state_it_cannot_use(tmp_path: Path, case: str) -> None:
    gateway, field, words = _cases(tmp_path)[case]
    config = _config(tmp_path, gateway)
    status, out = await _manifold(config, "serve", "--port", "0")
    assert "Traceback" not in out, out
    assert status == 2, out
    line = _line_of(config, field)
    problem = next((x for x in out.splitlines() if x.startswith(f"manifold.yaml: gateway.{field}: ")), None)
    assert problem is not None, out
    assert words in problem and problem.endswith(f"(line {line})"), problem
    assert "Manifold is serving" not in out


async def test_check_warns_about_folders_it_can_see_are_unusable(tmp_path: Path) -> None:
    for case in ("database in a missing folder", "state_dir that is a file"):
        gateway, field, words = _cases(tmp_path)[case]
        config = _config(tmp_path, gateway)
        status, out = await _manifold(config, "check")
        assert "Traceback" not in out, out
        assert status == 0, out  # check may run elsewhere than the gateway: a warning, not an error
        warning = next(
            (x for x in out.splitlines() if x.startswith(f"warning: manifold.yaml: gateway.{field}: ")), None
        )
        assert warning is not None and words in warning, out
        assert warning.endswith(f"(line {_line_of(config, field)})"), warning


@pytest.mark.parametrize("url", ["mysql://manifold:hunter2-password@db.internal/manifold", "mongodb://db/x"])
async def test_an_unsupported_database_is_refused_by_check_and_serve(tmp_path: Path, url: str) -> None:
    config = _config(tmp_path, {"state_dir": str(tmp_path / "state"), "database_url": url})
    line = _line_of(config, "database_url")
    for args, expected_status in ((("check",), 1), (("serve", "--port", "0"), 2)):
        status, out = await _manifold(config, *args)
        assert "Traceback" not in out, out
        assert status == expected_status, out
        problem = next(x for x in out.splitlines() if x.startswith("manifold.yaml: gateway.database_url: "))
        assert f"'{url.split(':')[0]}' is not supported" in problem, problem
        assert "postgresql://" in problem and "sqlite:///" in problem, problem  # the supported ones are named
        assert problem.endswith(f"(line {line})"), problem
        assert "hunter2" not in out  # the URL itself is never shown: it may carry a password


# Every admin command that opens the state (session 14's probe: `secrets list` died with FileExistsError;
# then `explain` with a traceback and `db upgrade` with a bare "FileExistsError").
ADMIN_COMMANDS = {
    "keys list": 1,
    "secrets list": 1,
    "connections list": 1,
    "apps list": 1,
    "tools list": 1,
    "export": 1,
    "db upgrade": 1,
    "db current": 1,
    "explain --as user:dev --server x --offline": 2,  # 1 is its "deny"
}


@pytest.mark.parametrize("command", list(ADMIN_COMMANDS))
async def test_an_admin_command_names_an_unusable_state_dir_too(tmp_path: Path, command: str) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    config = _config(tmp_path, {"state_dir": str(tmp_path / "a-file")})
    status, out = await _manifold(config, *command.split())
    assert "Traceback" not in out, out
    assert status == ADMIN_COMMANDS[command], out
    assert f"manifold.yaml: gateway.state_dir: folder '{tmp_path / 'a-file'}' is a file" in out, out


@pytest.mark.parametrize("command", ["db upgrade", "db current", "explain --as user:dev --server x --offline"])
async def test_an_admin_command_does_not_make_a_missing_database_folder_that_serve_refuses(
    tmp_path: Path, command: str
) -> None:
    gateway, field, words = _cases(tmp_path)["database in a missing folder"]
    config = _config(tmp_path, gateway)
    status, out = await _manifold(config, *command.split())
    assert "Traceback" not in out, out
    assert status == ADMIN_COMMANDS[command], out
    assert f"manifold.yaml: gateway.{field}: " in out and words in out, out
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("command", list(ADMIN_COMMANDS))
async def test_an_admin_command_says_it_cannot_open_an_unreachable_database(tmp_path: Path, command: str) -> None:
    """`secrets` (and `explain`) gave the driver's traceback."""
    from tests.upstreams.launch import free_port

    url = f"postgresql://nobody:s3cret-pw@127.0.0.1:{free_port()}/nothing"
    config = _config(tmp_path, {"state_dir": str(tmp_path / "state"), "database_url": url})
    status, out = await _manifold(config, *command.split())
    assert "Traceback" not in out and "s3cret-pw" not in out, out
    assert status == ADMIN_COMMANDS[command], out
    assert "ConnectionRefusedError" in out, out
