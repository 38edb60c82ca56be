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


@pytest.mark.parametrize(
    "line",
    [
        "ERROR:mcp_server_git.server:/home/alice/projects/my-company-website-repo does not exist",
        "Warning: Cannot access directory /srv/data/customer-exports/2026-q4, skipping",
        "Error: ENOENT: no such file or directory, open '/var/lib/mcp/memory-server/memory.jsonl'",
        '  File "/opt/venvs/mcp-tools/bin/mcp-server-sqlite", line 8, in <module>',
        "loading /Users/Alice/Documents/notes_archive/index",
    ],
)
def test_file_paths_in_a_line_are_left_alone(line: str) -> None:
    """Was (interop, mcp-server-git started on a missing repository): the gateway said "process exited (code 1):
    ERROR:mcp_server_git.server:[redacted] does not exist" — a path of 32 characters or more looked like a
    base64 secret, so the one line that said what was wrong lost what it was about."""
    assert redact(line, ()) == line


@pytest.mark.parametrize(
    "secret",
    [
        "dGhpcyBpcyBhIHNlY3JldCB2YWx1ZSBvZiBzb21lIGxlbmd0aA/x9Kq",  # base64 with a slash
        "/K7MDENGbPxRfiCYEXAMPLEKEY/wJalrXUtnFEMI/Q",  # one that starts with a slash, mixed case segments
        "ab/cdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL",  # a long segment past a short one
    ],
)
def test_base64_runs_with_slashes_are_still_redacted(secret: str) -> None:
    cleaned = redact(f"using key {secret} now", ())
    assert secret not in cleaned and REDACTED in cleaned
