"""`explain` resolves names by the demo's rules (hidden, aliases) and says nothing twice; `check --live`'s
warnings for names that match no listed tool, on the demo configuration the issue used."""

from __future__ import annotations

import io
from pathlib import Path

from manifold.admin.explain import RULES_ONLY, resolve_by_rules
from manifold.config.check import run_check, unmatched_names
from manifold.config.loaded import LoadedConfig
from manifold.config.loader import load_config
from manifold.policy.explain import why_not
from manifold.policy.grants import parse_grant
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind

REPO = Path(__file__).resolve().parents[2]
DEMO_TOOLS = {
    "notes": ["add_note", "list_notes", "search_notes"],
    "toolbox": ["now", "add", "uuid", "echo", "word_count"],
}


def demo() -> LoadedConfig:
    return load_config(REPO / "manifold.yaml", env={})


def test_a_hidden_tool_resolves_to_nothing_and_says_why() -> None:
    config = demo()
    server = config.served_servers()["demo"]
    found = resolve_by_rules(config, "demo", server, "toolbox__uuid", server.members)
    assert found.item is None
    assert found.not_served == "member toolbox hides uuid (hide: ['uuid'])"


def test_an_alias_resolves_to_the_one_tool_it_renames() -> None:
    config = demo()
    server = config.served_servers()["demo"]
    found = resolve_by_rules(config, "demo", server, "toolbox__count_words", server.members)
    assert found.item is not None and (found.item.member, found.item.name) == ("toolbox", "word_count")
    assert found.notes == [RULES_ONLY]
    # The renamed tool is not also served under its own name.
    assert resolve_by_rules(config, "demo", server, "toolbox__word_count", server.members).item is None


def test_a_tool_outside_the_globs_is_not_served() -> None:
    config = demo()
    server = config.served_servers()["notes-readonly"]
    found = resolve_by_rules(config, "notes-readonly", server, "add_note", server.members)
    assert found.item is None and found.not_served is not None and "matches none of member notes" in found.not_served


def test_a_user_named_by_email_is_named_once() -> None:
    alice = Principal(PrincipalKind.USER, "alice@corp.com", Credential(CredentialKind.API_KEY), email="alice@corp.com")
    reason = why_not(parse_grant("user:bob@corp.com", ["server:x"], grant_id="g-1"), alice)
    assert reason == "bob@corp.com does not match alice@corp.com"


def test_live_check_names_file_field_and_line_of_a_glob_that_matches_nothing() -> None:
    config = demo()
    names = {**DEMO_TOOLS, "notes": ["add_note", "delete_note"]}  # no *_notes
    problems = [str(p) for p in unmatched_names(config, names)]
    assert problems[0] == (
        "virtual_servers/demo.yaml: members[0].tools[1]: '*_notes' matches no tool of upstream 'notes' (line 5)"
    )
    readonly = "virtual_servers/notes-readonly.yaml: members[0]"
    assert problems[1:] == [
        f"{readonly}.tools[0]: 'list_*' matches no tool of upstream 'notes' (line 6)",
        f"{readonly}.tools[1]: 'search_*' matches no tool of upstream 'notes' (line 6)",
    ]


def test_live_check_warns_for_an_unknown_alias_and_an_unreachable_upstream() -> None:
    config = demo()
    names = {"notes": "connection refused", "toolbox": ["now", "add", "uuid", "echo"]}
    problems = [str(p) for p in unmatched_names(config, names)]
    assert any(
        p.startswith("manifold.yaml: upstreams.notes: could not list its tools (connection refused)") for p in problems
    )
    assert any("members[1].aliases.word_count: 'word_count' is no tool of upstream 'toolbox'" in p for p in problems)


def test_check_without_live_lists_nothing_and_with_it_warns_but_passes() -> None:
    plain, live = io.StringIO(), io.StringIO()
    assert run_check(REPO / "manifold.yaml", plain) == 0
    assert "warning" not in plain.getvalue() and "live:" not in plain.getvalue()
    names = {**DEMO_TOOLS, "toolbox": ["now"]}
    assert run_check(REPO / "manifold.yaml", live, lister=lambda _config: names) == 0
    out = live.getvalue()
    assert "warning: virtual_servers/demo.yaml: members[1].hide[0]: 'uuid' matches no tool of upstream 'toolbox'" in out
    assert "live: 2 warnings" in out
