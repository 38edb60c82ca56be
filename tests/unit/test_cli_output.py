"""What the command line prints for people: a sentence for every change (JSON only with `--json`, exactly
the API's body, which scripts parse), and an audit table that fits 100 columns and says why a row failed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from manifold.audit import AuditEvent, Outcome, format_events
from manifold.audit.unauthorized import UnauthorizedAudit
from manifold.cli import main


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "manifold.yaml"
    path.write_text("gateway:\n  state_dir: state\n")
    return path


def run(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> str:
    assert main(["--config", str(config), *argv]) == 0
    captured = capsys.readouterr()
    return captured.out


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_every_change_prints_a_sentence_and_json_only_when_asked(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    upstream = tmp_path / "up.yaml"
    upstream.write_text("id: wiki\ntransport: http\nurl: http://127.0.0.1:9/mcp\n")
    out = run(capsys, config, "teams", "create", "eng", "--description", "engineers")
    assert out == "Created team eng.\n"
    out = run(capsys, config, "users", "create", "alice@corp.com", "--team", "eng")
    assert out == "Created user alice@corp.com in eng.\n"
    out = run(capsys, config, "users", "set-teams", "alice@corp.com")
    assert out == "User alice@corp.com is now in no team.\n"
    out = run(capsys, config, "sa", "create", "ci-bot")
    assert out.startswith("Created service account ci-bot.") and "keys create --sa ci-bot" in out

    out = run(capsys, config, "grants", "add", "--who", "team:eng", "--what", "vserver:demo")
    assert out.startswith("Added grant ") and out.endswith(": team:eng may use vserver:demo.\n")
    grant_id = out.split()[2].rstrip(":")

    created = run(capsys, config, "keys", "create", "--user", "alice@corp.com", "--name", "laptop", "--json")
    key_id = json.loads(created)["id"]
    out = run(capsys, config, "keys", "revoke", key_id)
    assert out == f"Revoked key {key_id}: refused from the very next request.\n"

    run(capsys, config, "upstreams", "create", "--file", str(upstream))
    out = run(capsys, config, "upstreams", "get", "wiki")
    assert not is_json(out) and "upstream 'wiki' (api)" in out and "url: http://127.0.0.1:9/mcp" in out
    out = run(capsys, config, "upstreams", "delete", "wiki")
    assert out.startswith("Deleted upstream 'wiki'.")

    out = run(capsys, config, "grants", "remove", grant_id)
    assert out == f"Removed grant {grant_id}.\n"
    assert run(capsys, config, "sa", "delete", "ci-bot") == "Deleted service account ci-bot.\n"
    assert run(capsys, config, "users", "delete", "alice@corp.com") == "Deleted user alice@corp.com.\n"
    assert run(capsys, config, "teams", "delete", "eng") == "Deleted team eng.\n"


def test_json_output_is_the_api_body(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    grant = json.loads(run(capsys, config, "grants", "add", "--who", "authenticated", "--what", "server:x", "--json"))
    assert grant["who"] == "authenticated" and grant["what"] == ["server:x"]
    assert json.loads(run(capsys, config, "grants", "remove", grant["id"], "--json")) == {
        "id": grant["id"],
        "deleted": True,
    }
    key = json.loads(run(capsys, config, "keys", "create", "--user", "bob@corp.com", "--name", "ci", "--json"))
    assert json.loads(run(capsys, config, "keys", "revoke", key["id"], "--json")) == {"id": key["id"], "revoked": True}
    upstream = tmp_path / "up.yaml"
    upstream.write_text("id: wiki\ntransport: http\nurl: http://127.0.0.1:9/mcp\n")
    run(capsys, config, "upstreams", "create", "--file", str(upstream))
    assert (
        json.loads(run(capsys, config, "upstreams", "get", "wiki", "--json"))["body"]["url"] == "http://127.0.0.1:9/mcp"
    )
    assert json.loads(run(capsys, config, "upstreams", "delete", "wiki", "--json")) == {"id": "wiki", "deleted": True}


def event(**fields: object) -> AuditEvent:
    values: dict = {
        "at": time.time(),
        "request_id": "req-7f3a9c2e-1b4d-4e8f-9a6b-2c5d8e1f4a7b",
        "principal": "user:alexandra.konstantinopoulou@engineering.corp.example.com",
        "credential": "api_key:3f2a9c8d7e6b",
        "server": "engineering-tools",
        "member": "github-enterprise",
        "upstream": "github-enterprise",
        "method": "tools/call",
        "target": "github-enterprise__create_pull_request_review_comment",
        "outcome": Outcome.OK,
        "latency_ms": 1234.567,
    }
    values.update(fields)
    return AuditEvent(**values)


def test_the_audit_table_fits_100_columns_and_keeps_what_matters():
    detail = "upstream answered: repository 'corp/monorepo' not found or you lack access " * 3
    table = format_events(
        [
            event(outcome=Outcome.ERROR, detail=detail),
            event(method="resources/read", target="test+docs://handbook/onboarding.md", outcome=Outcome.OK),
            event(principal="user:bob@corp.com", target="gh__list", latency_ms=3.21),
        ],
        as_json=False,
    )
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 100, table
    assert lines[0].split() == ["TIME", "PRINCIPAL", "CREDENTIAL", "SERVER", "TARGET", "OUTCOME", "MS"]
    assert "user:" in lines[1] and "example.com" in lines[1]  # the middle gives way, both ends stay
    assert "api_key:3f2a9c8d7e6b" in lines[1]
    assert "view_comment" in lines[1] and "error" in lines[1]  # a tool is told apart by its end
    assert lines[2].startswith("  ↳ upstream answered: repository 'corp/monorepo' not found")  # why it failed
    assert "resour" in lines[3] and "onboarding.md" in lines[3]  # the method, shortened, and the URI
    assert "user:bob@corp.com" in lines[4] and "gh__list" in lines[4] and "3.2" in lines[4]
    assert len(lines) == 5


def test_a_short_table_is_not_shortened():
    table = format_events([event(principal="user:a@b.c", target="x__y", server="eng", detail=None)], as_json=False)
    assert "user:a@b.c" in table and "…" not in table


class Recorded:
    """An AuditLog stand-in that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)


def test_refused_credentials_are_rate_limited_per_source_counted_and_bounded():
    log, now = Recorded(), [1000.0]
    audit = UnauthorizedAudit(log, max_sources=3, clock=lambda: now[0])  # type: ignore[arg-type]
    token = "mfk_0123456789ab_" + "s" * 40

    def refuse(authorization: str | None, client: str = "10.0.0.1", *, missing: bool = False) -> None:
        audit.refused(
            authorization=authorization,
            missing=missing,
            reason="revoked",
            client=client,
            server="eng",
            method="connect",
        )

    refuse(None, missing=True)  # no credential: a client discovering it must sign in, not an event
    assert log.events == []
    for i in range(50):  # one key, from many addresses, within a second: one row
        refuse(f"Bearer {token}", client=f"10.0.0.{i}")
    (row,) = log.events
    assert (row.credential, row.principal, row.outcome) == ("api_key:0123456789ab", "unknown", Outcome.UNAUTHENTICATED)
    assert "s" * 20 not in repr(row)
    now[0] += 1.0
    refuse(f"Bearer {token}")
    assert "and 49 more since" in (log.events[-1].detail or "")

    refuse("Bearer garbage", client="10.9.9.9")  # not ours: the address is the source
    assert log.events[-1].credential == "unknown" and "10.9.9.9" in (log.events[-1].detail or "")
    for i in range(100):  # more sources within one second than remembered: memory stays bounded
        refuse("Bearer garbage", client=f"192.168.0.{i}")
    assert len(audit._sources) <= 3  # noqa: SLF001
    assert len(log.events) <= 2 + 1 + 3


def test_a_grant_naming_nothing_the_gateway_has_is_added_with_a_warning(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: accepted silently, the typo seen only later as a 403 (newcomer walkthrough). The grant stays (it
    may name an upstream made later); stderr says what it matches nothing of, with the nearest id."""
    upstream = tmp_path / "up.yaml"
    upstream.write_text("id: toolbox\ntransport: http\nurl: http://127.0.0.1:9/mcp\n")
    run(capsys, config, "upstreams", "create", "--file", str(upstream))  # in the database, not the files
    assert main(["--config", str(config), "grants", "add", "--who", "anyone", "--what", "server:toolbx",
                 "--what", "server:toolbox", "--what", "vserver:demo"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert captured.out.startswith("Added grant ")
    assert captured.err.splitlines() == [
        "warning: 'server:toolbx' matches no upstream yet; did you mean 'toolbox'?",
        "warning: 'vserver:demo' matches no virtual server yet",
    ]
