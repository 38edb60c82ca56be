"""`manifold explain` resolves names as the relay does, and `manifold check --live` finds globs that match nothing.

The demo's shape over a real upstream (kitchen, stdio): a virtual server `demo` that shows every tool but one
hidden (`noop`, as the demo hides `uuid`) and renames one (`echo` -> `say`, as the demo renames
`word_count` -> `count_words`); a server `flat` without namespacing where two members both have `echo` (a
collision: the relay shows neither); a server `notes` whose glob `*_nots` matches nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mcp.shared.exceptions import MCPError

from tests.e2e.harness import Gateway, manifold_cli, run_gateway, stdio_upstream
from tests.upstreams.launch import KITCHEN

pytestmark = pytest.mark.anyio

SERVERS = {
    "demo": {"members": [{"upstream": "alpha", "tools": ["*"], "hide": ["noop"], "aliases": {"echo": "say"}}]},
    "flat": {"namespace": False, "members": [{"upstream": "alpha"}, {"upstream": "beta"}]},
    "notes": {"members": [{"upstream": "alpha", "tools": ["echo", "*_nots"], "hide": ["nothing_here"]}]},
}
EXTRA = {
    "users": {"alice@corp.com": {"teams": ["eng"]}, "bob@corp.com": {}},
    "teams": {"eng": None},
    "grants": [
        {"who": "team:eng", "what": ["server:alpha", "server:beta"]},
        {"who": "user:carol@corp.com", "what": ["tool:alpha/add"]},
        {"who": "user:dev", "what": ["vserver:*"]},  # the harness's key, to ask the gateway itself
    ],
}


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    upstreams = {
        "alpha": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "alpha"),
        "beta": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "beta"),
    }
    async with run_gateway(upstreams, SERVERS, extra=EXTRA) as gateway:
        yield gateway


async def explain(gw: Gateway, *args: str) -> tuple[int, str, str]:
    done = await manifold_cli(gw, "explain", *args, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_a_hidden_tool_is_not_explained_as_allowed(gw: Gateway) -> None:
    # The gateway itself does not know the name...
    async with gw.client("demo") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "alpha__noop" not in names and "alpha__say" in names
        with pytest.raises(MCPError):
            await client.call_tool("alpha__noop", {})
    # ...and neither does explain: not ALLOW, and it says why.
    status, out, err = await explain(gw, "--as", "alice@corp.com", "--server", "demo", "--tool", "alpha__noop")
    assert status == 2, (out, err)
    assert "ALLOW" not in out
    assert "hide" in err and "noop" in err


async def test_an_alias_is_one_decision_about_the_tool_it_renames(gw: Gateway) -> None:
    status, out, err = await explain(gw, "--as", "alice@corp.com", "--server", "demo", "--tool", "alpha__say")
    assert status == 0, (out, err)
    blocks = [line for line in out.splitlines() if line.startswith(("ALLOW", "DENY"))]
    assert len(blocks) == 1, out
    assert "tool echo" in blocks[0] and "tool say" not in out


async def test_a_collision_is_explained_as_not_served(gw: Gateway) -> None:
    status, out, err = await explain(gw, "--as", "alice@corp.com", "--server", "flat", "--tool", "echo")
    assert status == 2, (out, err)
    assert "ALLOW" not in out
    assert "collide" in err


async def test_deny_exits_1_at_server_and_tool_level(gw: Gateway) -> None:
    server_deny = await explain(gw, "--as", "bob@corp.com", "--server", "demo")
    tool_deny = await explain(gw, "--as", "bob@corp.com", "--server", "demo", "--tool", "alpha__add")
    server_allow = await explain(gw, "--as", "alice@corp.com", "--server", "demo")
    assert server_deny[0] == 1 and server_deny[1].startswith("DENY"), server_deny
    assert tool_deny[0] == 1 and tool_deny[1].startswith("DENY"), tool_deny
    assert server_allow[0] == 0 and server_allow[1].startswith("ALLOW"), server_allow


async def test_explain_says_no_text_twice(gw: Gateway) -> None:
    status, out, _ = await explain(gw, "--as", "alice@corp.com", "--server", "demo", "--tool", "alpha__add")
    assert status == 0, out
    status, out, _ = await explain(gw, "--as", "bob@corp.com", "--server", "alpha", "--tool", "add")
    assert status == 1, out
    assert "carol@corp.com does not match bob@corp.com" in out
    assert "bob@corp.com or bob@corp.com" not in out


async def test_offline_explain_uses_the_rules_and_says_so(gw: Gateway) -> None:
    hidden = await explain(gw, "--offline", "--as", "alice@corp.com", "--server", "demo", "--tool", "alpha__noop")
    alias = await explain(gw, "--offline", "--as", "alice@corp.com", "--server", "demo", "--tool", "alpha__say")
    assert hidden[0] == 2 and "hide" in hidden[2], hidden
    assert alias[0] == 0, alias
    assert len([line for line in alias[1].splitlines() if line.startswith("ALLOW")]) == 1, alias
    assert "without the upstreams' lists" in alias[1]


async def test_check_live_warns_for_a_glob_that_matches_nothing(gw: Gateway) -> None:
    offline = await manifold_cli(gw, "check")
    assert b"_nots" not in offline.stdout, offline.stdout
    done = await manifold_cli(gw, "check", "--live", check=False)
    out = done.stdout.decode()
    assert done.returncode == 0, (out, done.stderr.decode())
    # Named by file, field and line, like every other problem.
    assert "virtual_servers/notes.yaml: members[0].tools[1]: " in out, out
    assert "'*_nots' matches no tool of upstream 'alpha'" in out and "(line " in out, out
    assert "members[0].hide[0]" in out and "nothing_here" in out, out
    # What does match is not mentioned.
    assert "tools[0]" not in out, out
