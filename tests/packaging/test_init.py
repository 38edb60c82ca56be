"""`manifold init`: a starter configuration that `manifold check` accepts, never written over existing files.
(The wheel test runs the same command from an installed wheel and serves what it wrote.)"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from manifold.cli import main
from manifold.config.check import run_check
from manifold.config.loader import load_config


def test_init_writes_a_starter_that_check_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "new"
    assert main(["init", str(folder)]) == 0
    told = capsys.readouterr().out
    assert (folder / "manifold.yaml").is_file()
    assert (folder / "virtual_servers" / "starter.yaml").is_file()
    # The next steps: where to go, the two commands, and what to paste in a client.
    assert f"cd {folder}" in told and "manifold check" in told and "manifold serve" in told
    assert '"url": "http://127.0.0.1:8470/mcp/starter"' in told and '"Authorization": "Bearer ' in told

    assert main(["--config", str(folder / "manifold.yaml"), "check"]) == 0
    summary = io.StringIO()
    assert run_check(folder / "manifold.yaml", out=summary) == 0
    assert "ok: 1 upstream, 1 virtual server" in summary.getvalue()
    config = load_config(folder / "manifold.yaml")
    assert config.state_dir == folder / ".manifold"
    assert [m.upstream for m in config.virtual_servers["starter"].members] == ["notes"]


@pytest.mark.parametrize("existing", ["manifold.yaml", "virtual_servers/starter.yaml"])
def test_init_refuses_to_overwrite_and_writes_nothing(
    tmp_path: Path, existing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / existing).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / existing).write_text("# mine\n")
    assert main(["init", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / existing) in err and "nothing was written" in err
    assert (tmp_path / existing).read_text() == "# mine\n"
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == [existing]


def test_init_state_dir_and_port_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "var" / "lib" / "manifold"
    assert main(["init", str(tmp_path / "etc"), "--state-dir", str(state), "--port", "9000"]) == 0
    assert "http://127.0.0.1:9000/mcp/starter" in capsys.readouterr().out
    config = load_config(tmp_path / "etc" / "manifold.yaml")
    assert config.state_dir == state
    assert config.settings.port == 9000
