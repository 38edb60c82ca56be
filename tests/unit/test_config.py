"""Configuration loading: every kind of problem names its file and field; the demo config loads."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from manifold.config.check import run_check
from manifold.config.loaded import upstream_as_virtual_server
from manifold.config.loader import load_config
from manifold.config.models import Transport
from manifold.config.problems import ConfigError, Problem

REPO = Path(__file__).resolve().parents[2]

MAIN = """
upstreams:
  github:
    transport: http
    url: https://api.example.com/mcp
  notes:
    transport: stdio
    command: python3
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))
    return root / "manifold.yaml"


def problems(root: Path, files: dict[str, str], env: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_config(write(root, files), env=env or {})
    return info.value.problems


def where(ps: list[Problem]) -> set[tuple[str, str]]:
    return {(p.file, p.field_path) for p in ps}


# ---- the demo ------------------------------------------------------------------------------------


def test_demo_config_loads_cleanly() -> None:
    config = load_config(REPO / "manifold.yaml", env={})
    assert set(config.upstreams) == {"notes", "toolbox"}
    assert config.upstreams["notes"].transport is Transport.STDIO
    assert config.upstreams["toolbox"].url == "http://127.0.0.1:8471/mcp"
    assert set(config.virtual_servers) == {"demo", "notes-readonly"}
    assert config.virtual_servers["demo"].id == "demo"
    assert config.virtual_servers["notes-readonly"].namespace is False
    assert config.state_dir == REPO / ".manifold"
    assert config.stdio_cwd("notes") == REPO  # so '.venv/bin/python' is found from any working directory
    assert list(config.served_servers()) == ["demo", "notes-readonly", "notes", "toolbox"]


def test_check_prints_summary_for_demo() -> None:
    out = io.StringIO()
    assert run_check(REPO / "manifold.yaml", out=out) == 0
    assert out.getvalue().splitlines()[0] == "ok: 2 upstreams, 2 virtual servers"


def test_check_prints_every_problem(tmp_path: Path) -> None:
    path = write(tmp_path, {"manifold.yaml": "upstreams:\n  a:\n    transport: http\n  b:\n    transport: stdio\n"})
    out = io.StringIO()
    assert run_check(path, out=out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == "manifold.yaml: upstreams.a: an http upstream needs 'url' (line 2)"
    assert lines[1] == "manifold.yaml: upstreams.b: a stdio upstream needs 'command' (line 4)"
    assert lines[2].startswith("2 problems in ")


def test_the_summary_names_the_files_the_problems_are_in(tmp_path: Path) -> None:
    """Was: "1 problem in manifold.yaml" when the one problem was in a virtual-server file (newcomer walkthrough)."""
    path = write(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/x.yaml": "members:\n  - upstream: notez\n"})
    out = io.StringIO()
    assert run_check(path, out=out) == 1
    assert out.getvalue().splitlines()[-1] == "1 problem in virtual_servers/x.yaml"


def test_a_configuration_file_that_is_not_there_says_where_it_was_looked_for(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_check(tmp_path / "manifold.yaml", out=out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == "manifold.yaml: file not found"
    assert str(tmp_path / "manifold.yaml") in lines[1] and "--config" in lines[1]


def test_a_manifold_yaml_that_does_not_parse_adds_no_false_problems_in_the_virtual_server_files(tmp_path: Path) -> None:
    """Was: each member of every virtual-server file also reported "unknown upstream 'notes' (known: none)", so
    three of four problems listed were not real (newcomer walkthrough)."""
    broken = MAIN.replace("    url: https://api.example.com/mcp", "      url: https://api.example.com/mcp")
    ps = problems(tmp_path, {"manifold.yaml": broken, "virtual_servers/eng.yaml": "members:\n  - upstream: notes\n"})
    assert len(ps) == 1 and ps[0].file == "manifold.yaml" and "YAML syntax error" in ps[0].reason


def test_check_warns_of_a_grant_that_names_no_upstream_group_or_virtual_server(tmp_path: Path) -> None:
    """Was: accepted silently; the typo showed only later as a 403 (newcomer walkthrough)."""
    grants = (
        "groups:\n  dev: [notes]\n"
        "grants:\n  - who: anyone\n    what:\n      - server:githb\n      - tool:notes/add_*\n"
        "      - vserver:engg\n      - group:dev\n      - group:ops\n      - server:git*\n"
    )
    path = write(
        tmp_path, {"manifold.yaml": MAIN + grants, "virtual_servers/eng.yaml": "members:\n  - upstream: notes\n"}
    )
    out = io.StringIO()
    assert run_check(path, out=out) == 0  # warnings: a grant may name what the admin API makes
    warnings = [line for line in out.getvalue().splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: manifold.yaml: grants[0].what[0]: 'server:githb' matches no upstream in the files; "
        "did you mean 'github'? (line 13)",
        "warning: manifold.yaml: grants[0].what[2]: 'vserver:engg' matches no virtual server in the files; "
        "did you mean 'eng'? (line 15)",
        "warning: manifold.yaml: grants[0].what[4]: 'group:ops' matches no group in the files (line 17)",
    ]


def test_indentation_slips_are_said_as_such(tmp_path: Path) -> None:
    """Was: PyYAML's words ("found '?'"), and for a member's key written at the file's top level a "did you
    mean 'tool_search'?" pointing the wrong way (newcomer walkthrough)."""
    dedented_key = "upstreams:\n  notes:\n    transport: stdio\n  command: python3\n"
    ps = problems(tmp_path / "a", {"manifold.yaml": dedented_key})
    assert "manifold.yaml: upstreams.command: 'command' is a key of each entry here, not an entry: check its " \
        "indentation (line 4)" in [str(p) for p in ps]  # fmt: skip
    member_key_at_top = {"manifold.yaml": MAIN, "virtual_servers/x.yaml": "members:\n- upstream: notes\ntools: ['*']\n"}
    ps = problems(tmp_path / "b", member_key_at_top)
    assert [str(p) for p in ps] == [
        "virtual_servers/x.yaml: tools: unknown key 'tools' here; it belongs inside 'members' (check its indentation) "
        "(line 3)"
    ]
    half_dedented = {"manifold.yaml": MAIN, "virtual_servers/x.yaml": "members:\n  - upstream: notes\n  tools: ['*']\n"}
    (problem,) = problems(tmp_path / "c", half_dedented)
    assert problem.reason.endswith("found another key (check the indentation of this line and of the line before it)")
    assert "'?'" not in problem.reason


# ---- YAML ---------------------------------------------------------------------------------------


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    ps = problems(tmp_path, {"manifold.yaml": "upstreams:\n  a: [1, 2\n  b: 3\n"})
    assert len(ps) == 1 and ps[0].file == "manifold.yaml" and ps[0].field_path == ""
    assert "YAML syntax error at line 3, column" in ps[0].reason


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/x.yaml": "- a\n- b\n"})
    assert [str(p) for p in ps] == [
        "virtual_servers/x.yaml: the top level must be a mapping of keys to values, not a list"
    ]


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    ps = problems(tmp_path, {"manifold.yaml": MAIN + "  notes:\n    transport: stdio\n    command: x\n"})
    assert where(ps) == {("manifold.yaml", "upstreams.notes")}
    assert "duplicate key 'notes' (first at line 5)" in ps[0].reason and ps[0].line == 8


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", env={})
    assert str(info.value) == "nope.yaml: file not found"


def test_empty_main_file_means_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {"manifold.yaml": ""}), env={})
    assert config.upstreams == {} and config.virtual_servers == {}
    assert config.settings.port == 8470
    assert config.database_url == f"sqlite+aiosqlite:///{tmp_path / '.manifold' / 'manifold.db'}"


def test_empty_top_level_sections_mean_none(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {"manifold.yaml": "gateway:\nupstreams:\ngroups:\n  # dev: [a]\n"}), env={})
    assert config.upstreams == {} and config.gateway.groups == {}


# ---- pydantic -----------------------------------------------------------------------------------


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    ps = problems(tmp_path, {"manifold.yaml": "upstreams:\n  a:\n    transport: stdio\n    comand: x\n"})
    got = {(p.field_path, p.reason) for p in ps}
    assert ("upstreams.a.comand", "unknown key 'comand'; did you mean 'command'?") in got


def test_unknown_key_in_virtual_server_member(tmp_path: Path) -> None:
    vs = "members:\n  - upstream: notes\n    tool: [x]\n"
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/v.yaml": vs})
    assert [str(p) for p in ps] == [
        "virtual_servers/v.yaml: members[0].tool: unknown key 'tool'; did you mean 'tools'? (line 3)"
    ]


def test_field_required_and_bad_values(tmp_path: Path) -> None:
    main = MAIN + "gateway:\n  port: 99999\n  namespace_separator: '.'\n  public_url: example.com\n"
    ps = problems(tmp_path, {"manifold.yaml": main, "virtual_servers/v.yaml": "description: no members\n"})
    assert where(ps) == {
        ("manifold.yaml", "gateway.port"),
        ("manifold.yaml", "gateway.namespace_separator"),
        ("manifold.yaml", "gateway.public_url"),
        ("virtual_servers/v.yaml", "members"),
    }
    assert [p.reason for p in ps if p.field_path == "members"] == ["field required"]


def test_upstream_id_must_be_a_slug(tmp_path: Path) -> None:
    ps = problems(tmp_path, {"manifold.yaml": "upstreams:\n  Git_Hub:\n    transport: stdio\n    command: x\n"})
    assert [(p.field_path, p.line) for p in ps] == [("upstreams.Git_Hub", 2)]
    assert "must match" in ps[0].reason


def test_public_url_trailing_slash_is_dropped(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, {"manifold.yaml": "gateway:\n  public_url: https://gw.example.com/\n"}), env={}
    )
    assert config.settings.public_url == "https://gw.example.com"


# ---- ${ENV} -------------------------------------------------------------------------------------


def test_env_references_are_resolved_and_tracked(tmp_path: Path) -> None:
    main = """
    upstreams:
      github:
        transport: http
        url: https://${GH_HOST}/mcp
        headers:
          Authorization: "Bearer ${GH_TOKEN}"
          X-Literal: "$${NOT_A_VAR} and $$ and $x"
    """
    config = load_config(write(tmp_path, {"manifold.yaml": main}), env={"GH_HOST": "gh.local", "GH_TOKEN": "tok123"})
    up = config.upstreams["github"]
    assert up.url == "https://gh.local/mcp"
    assert up.headers == {"Authorization": "Bearer tok123", "X-Literal": "${NOT_A_VAR} and $$ and $x"}
    assert config.is_env_sourced("manifold.yaml", "upstreams.github.headers.Authorization")
    assert config.is_env_sourced("manifold.yaml", "upstreams.github.url")
    assert not config.is_env_sourced("manifold.yaml", "upstreams.github.headers.X-Literal")


def test_missing_env_variable_names_field_and_variable_only(tmp_path: Path) -> None:
    main = """
    upstreams:
      github:
        transport: http
        url: https://api.example.com/mcp
        headers:
          Authorization: "Bearer ${GH_TOKEN}"
          X-Other: "${OTHER}"
    """
    env = {"OTHER": "other-secret-value"}
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, {"manifold.yaml": main}), env=env)
    text = str(info.value)
    assert (
        text
        == "manifold.yaml: upstreams.github.headers.Authorization: environment variable GH_TOKEN is not set (line 6)"
    )
    assert "other-secret-value" not in text


def test_invalid_env_reference(tmp_path: Path) -> None:
    main = MAIN + "    args: ['${not valid}']\n"
    ps = problems(tmp_path, {"manifold.yaml": main})
    assert where(ps) == {("manifold.yaml", "upstreams.notes.args[0]")}
    assert "not a valid environment variable reference" in ps[0].reason


def test_resolved_value_never_appears_in_a_problem(tmp_path: Path) -> None:
    # The member-id validator quotes its input; the input here came from the environment.
    vs = "members:\n  - upstream: notes\n    id: ${MEMBER_ID}\n"
    env = {"MEMBER_ID": "Sup3r-Secret"}
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/v.yaml": vs}, env=env)
    assert where(ps) == {("virtual_servers/v.yaml", "members[0].id")}
    assert "Sup3r-Secret" not in str(ConfigError(ps))
    assert "${MEMBER_ID}" in ps[0].reason


# ---- cross references ---------------------------------------------------------------------------


def test_member_upstream_must_exist(tmp_path: Path) -> None:
    vs = "members:\n  - upstream: notes\n  - upstream: githb\n"
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/v.yaml": vs})
    assert [str(p) for p in ps] == [
        "virtual_servers/v.yaml: members[1].upstream: unknown upstream 'githb'; did you mean 'github'? (line 3)"
    ]


def test_group_members_must_exist(tmp_path: Path) -> None:
    main = MAIN + "groups:\n  dev: [github, zzz, github]\n"
    ps = problems(tmp_path, {"manifold.yaml": main})
    assert [(p.field_path, p.reason) for p in ps] == [
        ("groups.dev[1]", "unknown upstream 'zzz' (known: github, notes)"),
        ("groups.dev[2]", "upstream 'github' is listed twice"),
    ]


def test_virtual_server_id_must_match_file_name(tmp_path: Path) -> None:
    vs = "id: other\nmembers:\n  - upstream: notes\n"
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/eng.yaml": vs})
    assert [(p.file, p.field_path, p.line) for p in ps] == [("virtual_servers/eng.yaml", "id", 1)]
    assert "does not match the file name 'eng'" in ps[0].reason


def test_virtual_server_id_equal_to_file_name_is_fine(tmp_path: Path) -> None:
    vs = "id: eng\nmembers:\n  - upstream: notes\n"
    config = load_config(write(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/eng.yaml": vs}), env={})
    assert list(config.virtual_servers) == ["eng"]


def test_virtual_server_id_must_be_a_slug(tmp_path: Path) -> None:
    vs = "members:\n  - upstream: notes\n"
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/My_Tools.yaml": vs})
    assert where(ps) == {("virtual_servers/My_Tools.yaml", "")}
    assert "virtual server id 'My_Tools' (the file name) must match" in ps[0].reason


def test_virtual_server_id_must_not_be_an_upstream_id(tmp_path: Path) -> None:
    vs = "members:\n  - upstream: notes\n"
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/github.yaml": vs})
    assert where(ps) == {("virtual_servers/github.yaml", "")}
    assert "is also an upstream id" in ps[0].reason


def test_duplicate_virtual_server_ids_across_files(tmp_path: Path) -> None:
    vs = "members:\n  - upstream: notes\n"
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/eng.yaml": vs, "virtual_servers/eng.yml": vs})
    assert [str(p) for p in ps] == [
        "virtual_servers/eng.yml: virtual server id 'eng' is also defined in virtual_servers/eng.yaml"
    ]


def test_duplicate_member_ids(tmp_path: Path) -> None:
    vs = "members:\n  - upstream: notes\n  - upstream: github\n    id: notes\n"
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/v.yaml": vs})
    assert [(p.field_path, p.reason) for p in ps] == [("members", "member id 'notes' appears twice")]


def test_virtual_servers_dir_named_but_missing(tmp_path: Path) -> None:
    ps = problems(tmp_path, {"manifold.yaml": MAIN + "gateway:\n  virtual_servers_dir: vs\n"})
    assert [str(p) for p in ps] == ["manifold.yaml: gateway.virtual_servers_dir: folder 'vs' does not exist (line 9)"]


def test_virtual_servers_dir_is_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path / "conf",
        {
            "manifold.yaml": MAIN + "gateway:\n  virtual_servers_dir: vs\n",
            "vs/eng.yaml": "members:\n  - upstream: notes\n",
        },
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("conf/manifold.yaml"), env={})
    assert config.virtual_servers_dir == tmp_path / "conf" / "vs"
    assert list(config.virtual_servers) == ["eng"]


def test_all_problems_from_all_files_are_collected(tmp_path: Path) -> None:
    main = "gateway:\n  prot: 1\nupstreams:\n  a:\n    transport: stdio\n"
    ps = problems(
        tmp_path,
        {
            "manifold.yaml": main,
            "virtual_servers/one.yaml": "members:\n  - upstream: zz\n",
            "virtual_servers/two.yaml": "members: [\n",
            "virtual_servers/three.yaml": "members:\n  - upstream: a\n    bogus: 1\n  - upstream: yy\n",
        },
    )
    assert where(ps) == {
        ("manifold.yaml", "gateway.prot"),
        ("manifold.yaml", "upstreams.a"),
        ("virtual_servers/one.yaml", "members[0].upstream"),
        ("virtual_servers/three.yaml", "members[0].bogus"),
        ("virtual_servers/three.yaml", "members[1].upstream"),
        ("virtual_servers/two.yaml", ""),
    }
    # manifold.yaml first, then the virtual-server files in name order, each by line.
    assert [p.file for p in ps][:2] == ["manifold.yaml", "manifold.yaml"]


# ---- static names -------------------------------------------------------------------------------


def test_alias_must_be_a_valid_name(tmp_path: Path) -> None:
    vs = "members:\n  - upstream: notes\n    aliases:\n      add_note: add.note\n"
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/v.yaml": vs})
    assert [(p.field_path, p.line) for p in ps] == [("members[0].aliases.add_note", 4)]
    assert "alias 'add.note' is not a valid tool name" in ps[0].reason


def test_alias_too_long_once_prefixed(tmp_path: Path) -> None:
    alias = "a" * 60  # valid alone, 67 characters as notes__aaaa...
    vs = f"members:\n  - upstream: notes\n    aliases:\n      add_note: {alias}\n"
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/v.yaml": vs})
    assert where(ps) == {("virtual_servers/v.yaml", "members[0].aliases.add_note")}
    assert "longer than 64" in ps[0].reason


def test_aliases_that_collide(tmp_path: Path) -> None:
    vs = """
    members:
      - upstream: notes
        aliases:
          add_note: add
          new_note: add
    """
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/v.yaml": vs})
    assert [(p.field_path, p.reason) for p in ps] == [
        (
            "members[0].aliases.new_note",
            "'notes__add' from member 'notes' tool 'new_note' collides with member 'notes' tool 'add_note'",
        )
    ]


def test_alias_colliding_with_a_named_tool_across_members_without_namespace(tmp_path: Path) -> None:
    vs = """
    namespace: false
    members:
      - upstream: notes
        aliases:
          list_notes: search
      - upstream: github
        tools: [search, "get_*"]
    """
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/v.yaml": vs})
    assert where(ps) == {("virtual_servers/v.yaml", "members[1].tools[0]")}
    assert "member 'github' tool 'search'" in ps[0].reason and "member 'notes' tool 'list_notes'" in ps[0].reason


def test_alias_and_description_for_tools_not_exposed(tmp_path: Path) -> None:
    vs = """
    members:
      - upstream: notes
        tools: ["list_*", add_note]
        hide: [add_note]
        aliases:
          add_note: add
        descriptions:
          search_notes: Search.
    """
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/v.yaml": vs})
    assert [(p.field_path, p.reason) for p in ps] == [
        ("members[0].aliases.add_note", "tool 'add_note' is removed by 'hide', so this alias does nothing"),
        (
            "members[0].descriptions.search_notes",
            "tool 'search_notes' is not selected by 'tools', so this description does nothing",
        ),
    ]


def test_virtual_server_separator_is_validated(tmp_path: Path) -> None:
    vs = "separator: '::'\nmembers:\n  - upstream: notes\n"
    ps = problems(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/v.yaml": vs})
    assert where(ps) == {("virtual_servers/v.yaml", "separator")}


# ---- served servers -----------------------------------------------------------------------------


def test_upstream_as_virtual_server() -> None:
    vs = upstream_as_virtual_server("github")
    assert vs.id == "github" and vs.namespace is False
    [member] = vs.members
    assert member.upstream == "github" and member.member_id == "github" and member.tools == ["*"]
    assert member.resources and member.prompts and not member.hide and not member.aliases


def test_served_servers_are_files_then_upstreams(tmp_path: Path) -> None:
    path = write(tmp_path, {"manifold.yaml": MAIN, "virtual_servers/eng.yaml": "members:\n  - upstream: notes\n"})
    config = load_config(path, env={})
    served = config.served_servers()
    assert list(served) == ["eng", "github", "notes"]
    assert served["github"] == config.upstream_as_virtual_server("github")
    with pytest.raises(KeyError):
        config.upstream_as_virtual_server("nope")


# ---- auth modes, identity, grants ----------------------------------------------------------------------


def test_auth_mode_problems_name_the_keys_as_written(tmp_path: Path) -> None:
    ps = problems(
        tmp_path,
        {
            "manifold.yaml": """
            upstreams:
              a: {transport: http, url: "http://127.0.0.1:1/mcp", auth: {mode: oath}}
              b: {transport: http, url: "http://127.0.0.1:1/mcp", auth: {mode: forwarded, allow: [Host]}}
              c: {transport: http, url: "http://127.0.0.1:1/mcp", auth: {mode: passthrough, audiance: x}}
              d: {transport: stdio, command: x, auth: {mode: static, bearer: y}}
            """
        },
    )
    by_path = {p.field_path: p.reason for p in ps}
    assert by_path["upstreams.a.auth.mode"].startswith("unknown value 'oath'; one of: none, static, oauth")
    assert by_path["upstreams.b.auth.allow"] == "header 'Host' can never be forwarded"
    assert by_path["upstreams.c.auth.audience"] == "field required"
    assert by_path["upstreams.c.auth.audiance"] == "unknown key 'audiance'; did you mean 'audience'?"
    assert "'auth' is for http/sse upstreams" in by_path["upstreams.d"]
    assert all(p.line is not None for p in ps)


def test_grants_admins_and_idps_are_checked(tmp_path: Path) -> None:
    ps = problems(
        tmp_path,
        {
            "manifold.yaml": """
            upstreams:
              a: {transport: http, url: "http://127.0.0.1:1/mcp"}
            identity:
              admins: ["bogus:x"]
              idps:
                one: {issuer: "https://idp.example", audience: x}
                two: {issuer: "https://idp.example/", audience: x}
            grants:
              - {who: "team:eng", what: ["server:a", "nope:x"]}
              - {who: "user:a", claims: {tenant: acme}, what: ["server:a"]}
            """
        },
    )
    by_path = {p.field_path: p.reason for p in ps}
    assert "unknown principal selector 'bogus:'" in by_path["identity.admins[0]"]
    assert by_path["identity.idps.two.issuer"] == "same issuer as IdP 'one'"
    assert "unknown resource selector 'nope:'" in by_path["grants[0].what[1]"]
    assert "claims narrow an idp: grant" in by_path["grants[1].claims"]


def test_hmac_and_none_algorithms_are_refused(tmp_path: Path) -> None:
    for alg in ("HS256", "none"):
        ps = problems(
            tmp_path,
            {
                "manifold.yaml": f"""
                identity:
                  idps:
                    corp: {{issuer: "https://idp.example", audience: x, algorithms: [{alg}]}}
                """
            },
        )
        assert [p.field_path for p in ps] == ["identity.idps.corp.algorithms"]
        assert f"algorithm '{alg}' is not allowed" in ps[0].reason
