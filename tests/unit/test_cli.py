"""The `manifold` command line, in this process: every command is listed and explains itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from manifold.cli import main

# Every command and its actions, as an operator types them.
COMMANDS = {
    "serve": [],
    "check": [],
    "init": [],
    "keys": ["create", "list", "revoke"],
    "users": ["list", "create", "set-teams", "delete"],
    "teams": ["list", "create", "delete"],
    "sa": ["list", "create", "delete"],
    "grants": ["list", "add", "remove"],
    "upstreams": ["list", "get", "create", "delete"],
    "groups": ["list", "get", "create", "delete"],
    "vservers": ["list", "get", "create", "delete"],
    "explain": [],
    "export": [],
    "tools": ["list", "diff", "approve"],
    "secrets": ["set", "list", "delete", "rotate-key"],
    "connections": ["list", "revoke"],
    "apps": ["list", "revoke"],
    "audit": [],
    "db": ["upgrade", "current"],
}


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def test_help_lists_every_command_in_order(capsys: pytest.CaptureFixture[str]):
    text = help_text(capsys)
    assert "{" + ",".join(COMMANDS) + "}" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_and_action_explains_itself(command: str, capsys: pytest.CaptureFixture[str]):
    text = help_text(capsys, command)
    assert text.startswith(f"usage: manifold {command}")
    for action in COMMANDS[command]:
        assert action in text
        assert help_text(capsys, command, action).startswith(f"usage: manifold {command} {action}")


@pytest.mark.parametrize("command", ["users", "teams", "sa", "grants", "keys", "upstreams", "groups", "vservers"])
def test_each_admin_action_is_described_in_its_commands_help(command: str, capsys: pytest.CaptureFixture[str]):
    """Was: `manifold grants --help` (users, teams, sa too) listed `list, add, remove` with no word on what each
    does (newcomer walkthrough)."""
    lines = help_text(capsys, command).splitlines()
    for action in COMMANDS[command]:
        described = [line for line in lines if line.strip().startswith(action + " ") and len(line.split()) > 1]
        assert described, f"manifold {command} --help does not describe '{action}'"


def test_admin_actions_offer_json(capsys: pytest.CaptureFixture[str]):
    for command in ("keys", "users", "teams", "sa", "grants", "upstreams", "groups", "vservers"):
        for action in COMMANDS[command]:
            assert "--json" in help_text(capsys, command, action)


def test_a_command_without_its_action_is_refused(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["keys"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: action" in capsys.readouterr().err


def test_a_missing_configuration_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(missing), "keys", "list"])
    assert exit_info.value.code == 2
    assert "nowhere.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_refuses_a_port_that_is_not_one(port: str, capsys: pytest.CaptureFixture[str]):
    """Was (ops probe): `serve --port 99999` listened on 34463 (modulo 65536) and printed :99999 in its banner."""
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--port", port])
    assert exit_info.value.code == 2
    assert "--port" in capsys.readouterr().err
