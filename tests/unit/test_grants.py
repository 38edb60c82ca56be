"""Grants: selector parsing, evaluation (deny by default, scopes, globs, claims, groups) and `explain`."""

from __future__ import annotations

from typing import Any

import pytest

from manifold.config.models import GrantConfig
from manifold.config.selectors import GrantError
from manifold.policy.evaluation import ItemKind, Policy
from manifold.policy.explain import Item, explain, why_not
from manifold.policy.grants import Grant, GrantSource, grant_from_config, parse_grant
from manifold.principal import ANONYMOUS, Credential, CredentialKind, Principal, PrincipalKind

KEY = Credential(CredentialKind.API_KEY, "k1")
TOKEN = Credential(CredentialKind.IDP_JWT, "corp")


def user(name: str = "alice@corp.com", *, teams: tuple[str, ...] = (), **kw: Any) -> Principal:
    return Principal(PrincipalKind.USER, name, kw.pop("credential", KEY), teams=frozenset(teams), **kw)


def sa(name: str, *, teams: tuple[str, ...] = ()) -> Principal:
    return Principal(PrincipalKind.SERVICE_ACCOUNT, name, KEY, teams=frozenset(teams))


def ext(idp: str, identity: str, subject: str, **kw: Any) -> Principal:
    return Principal(PrincipalKind.EXTERNAL, subject, TOKEN, idp=idp, external_identity=identity, **kw)


def grant(who: str, *what: str, claims: dict[str, Any] | None = None, n: int = 0, **kw: Any) -> Grant:
    return parse_grant(who, list(what), claims, grant_id=kw.pop("grant_id", f"g{n}"), **kw)


def policy(*grants: Grant, **kw: Any) -> Policy:
    kw.setdefault("virtual_servers", ["eng", "eng-ro", "support"])
    kw.setdefault("groups", {"dev-tools": ["github", "jira"]})
    return Policy(list(grants), **kw)


def tool_ok(p: Policy, who: Principal, server: str, upstream: str, tool: str) -> bool:
    return p.allows(who, server, upstream, "tools", tool).allowed


# ---- parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "who",
    [
        "user:alice@corp.com",
        "user:*@corp.com",
        "user:00u1abcd",
        "team:eng",
        "team:Domain Users",
        "sa:ci-bot",
        "idp:corp",
        "ext:corp:customers",
        "authenticated",
        "anyone",
    ],
)
def test_valid_principal_selectors_parse(who: str) -> None:
    assert grant(who, "server:github").who.text == who


@pytest.mark.parametrize(
    "what", ["server:github", "server:git*", "group:dev-tools", "vserver:eng", "vserver:eng-*", "tool:github/create_*"]
)
def test_valid_resource_selectors_parse(what: str) -> None:
    assert grant("authenticated", what).what[0].text == what


@pytest.mark.parametrize(
    ("who", "field", "message"),
    [
        ("usr:alice", "who", "unknown principal selector 'usr:' in 'usr:alice'"),
        ("alice@corp.com", "who", "'alice@corp.com' is not a principal selector"),
        ("everyone", "who", "'everyone' is not a principal selector"),
        ("", "who", "expected a principal selector"),
        ("user:", "who", "'user:' names no user"),
        ("user:alice smith", "who", "no spaces"),
        ("team:", "who", "'team:' names no team"),
        ("team:eng-*", "who", "globs are allowed only in user: selectors"),
        ("sa:", "who", "'sa:' names no service account"),
        ("sa:CI_Bot", "who", "'CI_Bot' is not a service account id"),
        ("idp:*", "who", "globs are allowed only in user: selectors"),
        ("ext:corp", "who", "ext:<idp>:<identity>"),
        ("ext:corp:", "who", "ext:<idp>:<identity>"),
        (" team:eng", "who", "leading or trailing spaces"),
    ],
)
def test_bad_principal_selector(who: str, field: str, message: str) -> None:
    with pytest.raises(GrantError) as err:
        grant(who, "server:github")
    assert err.value.field == field
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    ("what", "field", "message"),
    [
        (["servers:github"], "what[0]", "unknown resource selector 'servers:' in 'servers:github'"),
        (["server:github", "upstream:jira"], "what[1]", "unknown resource selector 'upstream:'"),
        (["github"], "what[0]", "'github' is not a resource selector"),
        (["server:"], "what[0]", "'server:' names no upstream"),
        (["server:GitHub"], "what[0]", "'GitHub' is not a upstream id or glob"),
        (["group:"], "what[0]", "'group:' names no group"),
        (["group:dev-*"], "what[0]", "group ids are exact"),
        (["vserver:"], "what[0]", "'vserver:' names no virtual server"),
        (["tool:create_issue"], "what[0]", "tool:<upstream>/<tool>"),
        (["tool:github/"], "what[0]", "names no tool after '/'"),
        (["tool:/create_issue"], "what[0]", "names no upstream"),
        ([], "what", "lists nothing"),
    ],
)
def test_bad_resource_selector(what: list[str], field: str, message: str) -> None:
    with pytest.raises(GrantError) as err:
        parse_grant("authenticated", what, grant_id="x")
    assert err.value.field == field
    assert message in str(err.value)


def test_what_must_be_a_list() -> None:
    with pytest.raises(GrantError, match="what: expected a list of resource selectors"):
        parse_grant("authenticated", "server:github", grant_id="x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("who", "claims", "field", "message"),
    [
        ("team:eng", {"groups": "eng"}, "claims", "claims narrow an idp: grant, and 'team:eng' is not one"),
        ("authenticated", {"groups": "eng"}, "claims", "is not one"),
        ("idp:corp", {"groups": []}, "claims.groups", "an empty list matches no token"),
        ("idp:corp", {"groups": 3}, "claims.groups", "expected a string or a list of strings"),
        ("idp:corp", {"": "x"}, "claims", "claim name '' is empty"),
    ],
)
def test_bad_claims(who: str, claims: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(GrantError) as err:
        grant(who, "server:github", claims=claims)
    assert err.value.field == field
    assert message in str(err.value)


def test_grant_from_config_is_named_by_position_and_source() -> None:
    config = GrantConfig(who="team:eng", what=["tool:github/create_*"], description="engineers file issues")
    g = grant_from_config(config, 3)
    assert (g.id, g.source, g.description) == ("grants[3]", GrantSource.FILE, "engineers file issues")
    assert g.label == "manifold.yaml grants[3]"
    assert g.render() == "team:eng → tool:github/create_*"
    assert grant("idp:corp", "server:a", claims={"groups": ["x", "y"]}, grant_id="g-1").label == "grant g-1 (api)"


def test_parsed_grants_are_hashable_and_comparable() -> None:
    a = grant("idp:corp", "server:github", claims={"groups": ["eng"]})
    b = grant("idp:corp", "server:github", claims={"groups": ["eng"]})
    assert a == b and hash(a) == hash(b)


# ---- deny by default, principal selectors -------------------------------------------------------------


def test_no_grants_denies_everything() -> None:
    p = policy()
    d = p.allows(user(), "github", "github", "tools", "create_issue")
    assert not d.allowed and not d and d.grant is None
    assert d.reason == "no grant gives user:alice@corp.com tool create_issue of upstream github on server github"
    assert not p.server_access(user(), "github", [("github", "github")]).allowed


def test_user_selector_exact_and_glob() -> None:
    p = policy(grant("user:alice@corp.com", "server:github", n=0), grant("user:*@ops.corp.com", "server:jira", n=1))
    assert tool_ok(p, user("alice@corp.com"), "github", "github", "x")
    assert not tool_ok(p, user("bob@corp.com"), "github", "github", "x")
    assert tool_ok(p, user("carol@ops.corp.com"), "jira", "jira", "x")
    assert not tool_ok(p, user("carol@evil.com"), "jira", "jira", "x")
    assert not tool_ok(p, user("alice@corp.com"), "jira", "jira", "x")


def test_user_selector_matches_email_of_subject_named_user_case_insensitively() -> None:
    p = policy(grant("user:Alice@Corp.com", "server:github"))
    assert tool_ok(p, user("alice@corp.com"), "github", "github", "x")
    assert tool_ok(p, user("00u1abcd", email="ALICE@corp.com"), "github", "github", "x")


def test_subject_selector_is_exact_and_case_sensitive() -> None:
    p = policy(grant("user:00u1abcd", "server:github"))
    assert tool_ok(p, user("00u1abcd"), "github", "github", "x")
    assert not tool_ok(p, user("00U1ABCD"), "github", "github", "x")


def test_user_selector_never_matches_service_accounts_or_external_identities() -> None:
    p = policy(grant("user:*", "server:github"))
    assert tool_ok(p, user("anyone@x.com"), "github", "github", "x")
    assert not tool_ok(p, sa("ci-bot"), "github", "github", "x")
    assert not tool_ok(p, ext("corp", "customers", "cust-1"), "github", "github", "x")
    assert not tool_ok(p, ANONYMOUS, "github", "github", "x")


def test_team_selector_covers_users_and_service_accounts_in_the_team() -> None:
    p = policy(grant("team:eng", "server:github"))
    assert tool_ok(p, user(teams=("eng", "ops")), "github", "github", "x")
    assert tool_ok(p, sa("ci-bot", teams=("eng",)), "github", "github", "x")
    assert not tool_ok(p, user(teams=("ops",)), "github", "github", "x")
    assert not tool_ok(p, user(teams=("engineering",)), "github", "github", "x")


def test_sa_selector() -> None:
    p = policy(grant("sa:ci-bot", "server:github"))
    assert tool_ok(p, sa("ci-bot"), "github", "github", "x")
    assert not tool_ok(p, sa("other-bot"), "github", "github", "x")
    assert not tool_ok(p, user("ci-bot"), "github", "github", "x")


def test_ext_selector() -> None:
    p = policy(grant("ext:corp:customers", "server:support-kb"))
    assert tool_ok(p, ext("corp", "customers", "cust-1"), "support-kb", "support-kb", "search")
    assert not tool_ok(p, ext("corp", "partners", "p-1"), "support-kb", "support-kb", "search")
    assert not tool_ok(p, ext("other", "customers", "cust-1"), "support-kb", "support-kb", "search")
    assert not tool_ok(p, user(idp="corp"), "support-kb", "support-kb", "search")


def test_authenticated_excludes_anonymous_and_anyone_includes_it() -> None:
    p = policy(grant("authenticated", "server:github", n=0), grant("anyone", "server:public-docs", n=1))
    for who in (user(), sa("ci-bot"), ext("corp", "customers", "c")):
        assert tool_ok(p, who, "github", "github", "x")
        assert tool_ok(p, who, "public-docs", "public-docs", "x")
    assert not tool_ok(p, ANONYMOUS, "github", "github", "x")
    assert tool_ok(p, ANONYMOUS, "public-docs", "public-docs", "x")


# ---- claims ------------------------------------------------------------------------------------------


def idp_user(claims: dict[str, Any], *, idp: str = "corp", name: str = "alice@corp.com") -> Principal:
    return user(name, idp=idp, credential=TOKEN, claims=claims)


def test_idp_selector_without_claims_matches_any_token_of_that_idp() -> None:
    p = policy(grant("idp:corp", "server:github"))
    assert tool_ok(p, idp_user({}), "github", "github", "x")
    assert tool_ok(p, ext("corp", "customers", "c"), "github", "github", "x")
    assert not tool_ok(p, idp_user({}, idp="okta"), "github", "github", "x")
    assert not tool_ok(p, user(), "github", "github", "x")  # an API key: no IdP


def test_idp_claims_exact_and_any_of() -> None:
    p = policy(grant("idp:corp", "server:github", claims={"department": ["eng", "sre"], "email_verified": "true"}))
    assert tool_ok(p, idp_user({"department": "eng", "email_verified": True}), "github", "github", "x")
    assert tool_ok(p, idp_user({"department": "sre", "email_verified": "true"}), "github", "github", "x")
    assert not tool_ok(p, idp_user({"department": "sales", "email_verified": True}), "github", "github", "x")
    assert not tool_ok(p, idp_user({"department": "eng", "email_verified": False}), "github", "github", "x")
    assert not tool_ok(p, idp_user({"department": "eng"}), "github", "github", "x")  # every claim must match


def test_list_claim_matches_if_any_element_matches() -> None:
    p = policy(grant("idp:corp", "server:github", claims={"groups": "eng"}))
    assert tool_ok(p, idp_user({"groups": ["sales", "eng"]}), "github", "github", "x")
    assert not tool_ok(p, idp_user({"groups": ["sales", "engineering"]}), "github", "github", "x")
    assert not tool_ok(p, idp_user({"groups": []}), "github", "github", "x")
    assert not tool_ok(p, idp_user({"groups": {"eng": True}}), "github", "github", "x")  # objects never match


def test_nested_claim_by_dotted_path() -> None:
    p = policy(grant("idp:corp", "server:github", claims={"realm_access.roles": "mcp-user"}))
    assert tool_ok(p, idp_user({"realm_access": {"roles": ["mcp-user"]}}), "github", "github", "x")
    assert not tool_ok(p, idp_user({"realm_access": {"roles": ["viewer"]}}), "github", "github", "x")


def test_same_principal_with_different_claims_does_not_share_a_cached_decision() -> None:
    """Principals compare equal regardless of claims; the cache must still tell their tokens apart."""
    p = policy(grant("idp:corp", "server:github", claims={"groups": "eng"}))
    eng, sales = idp_user({"groups": ["eng"]}), idp_user({"groups": ["sales"]})
    assert eng == sales and hash(eng) == hash(sales)
    assert tool_ok(p, eng, "github", "github", "x")
    assert not tool_ok(p, sales, "github", "github", "x")
    assert tool_ok(p, eng, "github", "github", "x")
    # `True` and `1` hash alike in Python; as claims they are different values.
    p2 = policy(grant("idp:corp", "server:github", claims={"level": "1"}))
    assert tool_ok(p2, idp_user({"level": 1}), "github", "github", "x")
    assert not tool_ok(p2, idp_user({"level": True}), "github", "github", "x")


def test_applicable_lists_matching_grants_in_order_and_is_cached() -> None:
    g0, g1, g2 = (
        grant("team:eng", "server:a", n=0),
        grant("team:ops", "server:b", n=1),
        grant("anyone", "server:c", n=2),
    )
    p = policy(g0, g1, g2)
    alice = user(teams=("eng",))
    assert p.applicable(alice) == (g0, g2)
    assert p.view(alice) is p.view(user(teams=("eng",)))
    assert p.applicable(ANONYMOUS) == (g2,)


# ---- resource selectors --------------------------------------------------------------------------------

ALICE = user(teams=("eng",))


def test_server_selector_covers_the_upstream_everywhere_and_every_kind() -> None:
    p = policy(grant("team:eng", "server:github"))
    for server in ("github", "eng", "support"):  # its own server and virtual servers holding it
        for kind in ItemKind:
            assert p.allows(ALICE, server, "github", kind, "anything").allowed
        assert p.allows(ALICE, server, "github", "resources", None).allowed
    assert not tool_ok(p, ALICE, "eng", "jira", "create_issue")


def test_server_selector_glob() -> None:
    p = policy(grant("team:eng", "server:git*"))
    assert tool_ok(p, ALICE, "github", "github", "x")
    assert tool_ok(p, ALICE, "eng", "gitlab", "x")
    assert not tool_ok(p, ALICE, "eng", "jira", "x")


def test_group_selector_expands_to_its_upstreams() -> None:
    p = policy(grant("team:eng", "group:dev-tools"))
    assert tool_ok(p, ALICE, "github", "github", "x")
    assert p.allows(ALICE, "eng", "jira", "prompts", "triage").allowed
    assert not tool_ok(p, ALICE, "eng", "notes", "x")


def test_unknown_group_gives_nothing_and_is_warned_about() -> None:
    p = policy(grant("team:eng", "group:nope", grant_id="grants[0]", source=GrantSource.FILE))
    assert not tool_ok(p, ALICE, "github", "github", "x")
    assert p.warnings == ("manifold.yaml grants[0]: group:nope names no group",)


def test_vserver_selector_only_on_that_virtual_server() -> None:
    """A vserver: grant gives the members' items through the virtual server only — not through the upstream's
    own one-member server, nor through another virtual server holding the same upstream."""
    p = policy(grant("team:eng", "vserver:eng"))
    assert tool_ok(p, ALICE, "eng", "github", "create_issue")
    assert p.allows(ALICE, "eng", "github", "resources", None).allowed
    assert not tool_ok(p, ALICE, "github", "github", "create_issue")
    assert not tool_ok(p, ALICE, "support", "github", "create_issue")
    assert p.server_access(ALICE, "eng", [("gh", "github")]).allowed
    assert not p.server_access(ALICE, "github", [("github", "github")]).allowed


def test_vserver_glob_never_matches_one_member_servers() -> None:
    p = policy(grant("team:eng", "vserver:*"))
    assert tool_ok(p, ALICE, "eng-ro", "github", "x")
    assert not tool_ok(p, ALICE, "github", "github", "x")


def test_vserver_naming_an_upstream_is_warned_about() -> None:
    p = policy(grant("team:eng", "vserver:github", grant_id="g-1"), upstreams=["github", "jira"])
    assert p.warnings == (
        "grant g-1 (api): vserver:github matches no virtual server; 'github' is an upstream, "
        "which server:github covers",
    )


def test_tool_selector_gives_only_matching_tools_wherever_exposed() -> None:
    p = policy(grant("team:eng", "tool:github/create_*", "tool:jira/get_issue"))
    for server in ("github", "eng"):
        assert tool_ok(p, ALICE, server, "github", "create_issue")
        assert tool_ok(p, ALICE, server, "github", "create_pr")
        assert not tool_ok(p, ALICE, server, "github", "delete_repo")
    assert tool_ok(p, ALICE, "eng", "jira", "get_issue")
    assert not tool_ok(p, ALICE, "eng", "jira", "get_issues")


def test_tool_selector_gives_no_prompts_or_resources() -> None:
    p = policy(grant("team:eng", "tool:github/*"))
    assert tool_ok(p, ALICE, "github", "github", "anything")
    assert not p.allows(ALICE, "github", "github", "prompts", "anything").allowed
    assert not p.allows(ALICE, "github", "github", "resources", None).allowed
    assert not p.allows(ALICE, "github", "github", "resource_templates", None).allowed


def test_tool_selector_upstream_glob() -> None:
    p = policy(grant("team:eng", "tool:*/search"))
    assert tool_ok(p, ALICE, "eng", "github", "search")
    assert tool_ok(p, ALICE, "eng", "jira", "search")
    assert not tool_ok(p, ALICE, "eng", "jira", "searcher")


def test_unknown_item_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown item kind 'tool'"):
        policy().allows(ALICE, "eng", "github", "tool", "x")


def test_allow_decision_names_the_grant_and_selector() -> None:
    g = grant("team:eng", "server:jira", "tool:github/create_*", grant_id="grants[2]", source=GrantSource.FILE)
    d = policy(g).allows(ALICE, "eng", "github", "tools", "create_issue")
    assert d and d.grant is g and d.selector is not None and d.selector.text == "tool:github/create_*"
    assert d.reason == "by manifold.yaml grants[2]: team:eng → server:jira, tool:github/create_*"


def test_whole_upstream_grant_is_reported_over_a_narrower_tool_grant() -> None:
    tool_grant, server_grant = grant("team:eng", "tool:github/*", n=0), grant("team:eng", "server:github", n=1)
    d = policy(tool_grant, server_grant).allows(ALICE, "github", "github", "tools", "x")
    assert d.grant is server_grant


# ---- server access -------------------------------------------------------------------------------------


def test_server_access_needs_some_granted_item_in_the_server() -> None:
    p = policy(grant("team:eng", "server:jira", "tool:notes/read_*"))
    members = [("gh", "github"), ("wiki", "confluence")]
    d = p.server_access(ALICE, "eng", members)
    assert not d.allowed
    assert d.reason == "no grant gives user:alice@corp.com anything on server eng (upstreams: github, confluence)"
    assert p.server_access(ALICE, "eng", [*members, ("jira", "jira")]).allowed
    assert p.server_access(ALICE, "notes", [("notes", "notes")]).allowed  # a tool grant is enough


def test_credential_restricted_to_servers() -> None:
    p = policy(grant("team:eng", "server:github"))
    key_for_eng = user(teams=("eng",), servers=frozenset({"eng"}))
    assert tool_ok(p, key_for_eng, "eng", "github", "x")
    d = p.allows(key_for_eng, "github", "github", "tools", "x")
    assert not d.allowed and d.reason == "the credential is restricted to servers (eng), not github"
    assert not p.server_access(key_for_eng, "github", [("github", "github")]).allowed
    assert p.filter_items(key_for_eng, "github", "tools", [("github", "x")]) == [False]


def test_filter_items_agrees_with_allows() -> None:
    p = policy(grant("team:eng", "tool:github/create_*", "server:jira"), grant("team:eng", "vserver:eng", n=1))
    items = [("github", f"tool_{i}") for i in range(50)] + [("github", "create_issue"), ("jira", "anything")]
    for server in ("eng", "support", "github"):
        flags = p.filter_items(ALICE, server, "tools", items)
        assert flags == [p.allows(ALICE, server, u, "tools", n).allowed for u, n in items]
    assert p.filter_items(ALICE, "support", "tools", items) == [False] * 50 + [True, True]
    assert all(p.filter_items(ALICE, "eng", "tools", items))


# ---- explain -------------------------------------------------------------------------------------------

ENG_MEMBERS = [("server-1", "github"), ("tracker", "jira")]
CREATE_ISSUE = Item("server-1__create_issue", "server-1", "github", "create_issue")


def explain_text(p: Policy, who: Principal, server: str, members: list[tuple[str, str]], item: Item | None) -> str:
    return "\n".join(explain(p, who, server, members, item))


def test_explain_allow() -> None:
    p = policy(
        grant("team:ops", "server:jira", grant_id="grants[0]", source=GrantSource.FILE),
        grant(
            "team:eng",
            "tool:github/create_*",
            grant_id="grants[3]",
            source=GrantSource.FILE,
            description="engineers file issues",
        ),
        grant("authenticated", "vserver:eng", grant_id="g-7"),
    )
    text = explain_text(p, ALICE, "eng", ENG_MEMBERS, CREATE_ISSUE)
    assert text == (
        "ALLOW  user:alice@corp.com (teams: eng) → eng / server-1__create_issue "
        "(member server-1, upstream github, tool create_issue)\n"
        "  by grant g-7 (api): authenticated → vserver:eng\n"
        "  also by manifold.yaml grants[3]: tool:github/create_*"
    )


def test_explain_deny_lists_applicable_grants_and_those_that_would_allow() -> None:
    p = policy(
        grant("team:eng", "server:jira", grant_id="grants[0]", source=GrantSource.FILE),
        grant("team:admins", "tool:github/*", grant_id="grants[1]", source=GrantSource.FILE),
        grant("idp:corp", "server:github", claims={"groups": "github-users"}, grant_id="g-9"),
        grant("team:eng", "group:missing", grant_id="grants[2]", source=GrantSource.FILE),
    )
    text = explain_text(p, ALICE, "eng", ENG_MEMBERS, CREATE_ISSUE)
    assert text == (
        "DENY   user:alice@corp.com (teams: eng) → eng / server-1__create_issue "
        "(member server-1, upstream github, tool create_issue)\n"
        "  no grant gives user:alice@corp.com tool create_issue of upstream github on server eng\n"
        "  grants that apply to user:alice@corp.com:\n"
        "    manifold.yaml grants[0]: team:eng → server:jira\n"
        "    manifold.yaml grants[2]: team:eng → group:missing\n"
        "  grants that would give it, but do not select this principal:\n"
        "    manifold.yaml grants[1]: team:admins → tool:github/*  [tool:github/*: not in team admins]\n"
        "    grant g-9 (api): idp:corp {groups=github-users} → server:github  "
        "[server:github: not signed in through IdP corp (no IdP token)]\n"
        "  warning: manifold.yaml grants[2]: group:missing names no group"
    )


def test_explain_deny_on_an_upstream_server_points_out_vserver_scope() -> None:
    p = policy(grant("team:eng", "vserver:eng", grant_id="g-1"))
    item = Item("create_issue", "github", "github", "create_issue")
    lines = explain(p, ALICE, "github", [("github", "github")], item)
    assert lines[0].startswith("DENY ")
    assert "  no grant gives tool create_issue of upstream github to anyone on server github" in lines
    assert any("vserver: grants reach only virtual servers" in line for line in lines)


def test_explain_deny_for_a_claims_mismatch_names_the_claim() -> None:
    g = grant("idp:corp", "server:github", claims={"groups": ["eng", "sre"]}, grant_id="g-2")
    who = idp_user({"groups": ["sales"]})
    assert why_not(g, who) == "claim groups is ['sales'] (wanted any of eng, sre)"
    assert why_not(g, idp_user({})) == "claim groups is absent (wanted any of eng, sre)"
    assert why_not(g, idp_user({"groups": ["eng"]})) is None
    text = explain_text(policy(g), who, "github", [("github", "github")], Item("x", "github", "github", "x"))
    assert "[server:github: claim groups is ['sales'] (wanted any of eng, sre)]" in text


def test_explain_server_access_per_member() -> None:
    p = policy(
        grant("team:eng", "server:jira", grant_id="grants[0]", source=GrantSource.FILE),
        grant("team:eng", "tool:github/create_*", grant_id="grants[1]", source=GrantSource.FILE),
    )
    text = explain_text(p, ALICE, "eng", [*ENG_MEMBERS, ("wiki", "confluence")], None)
    assert text == (
        "ALLOW  user:alice@corp.com (teams: eng) → server eng\n"
        "  member server-1 (upstream github): tools matching create_*, by manifold.yaml grants[1]: "
        "tool:github/create_*\n"
        "  member tracker (upstream jira): all tools, prompts and resources, by manifold.yaml grants[0]: server:jira\n"
        "  member wiki (upstream confluence): nothing"
    )


def test_explain_server_denied_with_no_applicable_grants() -> None:
    p = policy(grant("sa:ci-bot", "server:github", grant_id="g-3"))
    lines = explain(p, ANONYMOUS, "github", [("github", "github")])
    assert lines == [
        "DENY   anonymous (no credential) → server github",
        "  member github (upstream github): nothing",
        "  no grant applies to anonymous",
        "  grants that would give it, but do not select this principal:",
        "    grant g-3 (api): sa:ci-bot → server:github  [server:github: not service account ci-bot]",
    ]


def test_explain_restricted_credential() -> None:
    p = policy(grant("team:eng", "server:github"))
    key_for_eng = user(teams=("eng",), servers=frozenset({"eng"}))
    lines = explain(p, key_for_eng, "github", [("github", "github")], Item("x", "github", "github", "x"))
    assert lines == [
        "DENY   user:alice@corp.com (teams: eng; credential restricted to servers: eng) → github / x "
        "(member github, upstream github, tool x)",
        "  the credential is restricted to servers (eng), not github",
    ]
