"""What a stdio upstream writes to stderr reaches /healthz, the log and callers' errors (upstream/stdio.py), so
anything shaped like a credential is redacted first. Was (ops probe): a URL's password and short values named
like secrets passed as written."""

from __future__ import annotations

import pytest

from manifold.upstream.stdio import REDACTED, redact


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("connecting to postgresql://admin:Hunter2-pass@db.corp:5432/app", "Hunter2-pass"),
        ("using AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI"),
        ("password: hunter2 was refused", "hunter2"),
        ('config {"api_key": "sk-12345"} loaded', "sk-12345"),
        ("GITHUB_TOKEN=ghp_abc123", "ghp_abc123"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("DB_PWD='s3cr3t' rejected", "s3cr3t"),
    ],
)
def test_credentials_in_a_line_are_redacted(line: str, secret: str) -> None:
    cleaned = redact(line, ())
    assert secret not in cleaned and REDACTED in cleaned


@pytest.mark.parametrize(
    "line", ["error: file not found at line 3", "KeyError: 'user'", "listening on http://127.0.0.1:8080/mcp"]
)
def test_ordinary_lines_are_left_alone(line: str) -> None:
    assert redact(line, ()) == line
