"""Approval gates on grants made through the admin API (docs/approvals.md): created, read, listed and changed
through the API's own route (as the console and the CLI reach it), checked exactly as in manifold.yaml (every
bad value refused naming its field, nothing stored), kept in the grants table, and enforced by the policy
built from the stored grants. Over a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from manifold.admin.api import AdminApi
from manifold.admin.catalog import CatalogOperations
from manifold.admin.export import grants_file
from manifold.admin.ops import BadRequest, Conflict, Operations, OpError
from manifold.audit import AuditLog
from manifold.audit.unauthorized import UnauthorizedAudit
from manifold.cli import main
from manifold.config.loader import load_config
from manifold.identity.api_keys import KeyRepository
from manifold.identity.authenticator import Authenticator
from manifold.identity.directory import Directory
from manifold.policy.access import PolicyAccess
from manifold.policy.approvals import rule_for
from manifold.policy.store import file_grants
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind
from manifold.store.db import audit_events, default_url, grants, open_database

pytestmark = pytest.mark.anyio

ROOT = Principal(kind=PrincipalKind.USER, name="root@corp.com", credential=Credential(CredentialKind.API_KEY, "k0"))
ALICE = Principal(
    kind=PrincipalKind.USER,
    name="alice@corp.com",
    credential=Credential(CredentialKind.API_KEY, "k1"),
    email="alice@corp.com",
    teams=frozenset({"eng"}),
)
GATED = {
    "who": "team:eng",
    "what": ["server:github"],
    "require_approval": ["tool:github/delete_*"],
    "approvers": "team:sre",
    "approval_timeout_seconds": 120,
    "approval_valid_seconds": 30,
    "self_approval": True,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Api:
    def __init__(self, admin: AdminApi, engine: Any) -> None:
        self.admin, self.engine = admin, engine

    async def call(self, method: str, parts: list[str], body: dict[str, Any] | None = None) -> tuple[int, Any]:
        return await self.admin.perform(ROOT, method, parts, body)

    async def refused(self, method: str, parts: list[str], body: dict[str, Any]) -> OpError:
        with pytest.raises(OpError) as raised:
            await self.call(method, parts, body)
        return raised.value


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    (tmp_path / "manifold.yaml").write_text(
        f"gateway:\n  state_dir: {tmp_path / 'state'}\n"
        "upstreams:\n  github:\n    transport: http\n    url: http://127.0.0.1:9/mcp\n"
        "grants:\n  - who: team:eng\n    what: ['server:github']\n"
    )
    config = load_config(tmp_path / "manifold.yaml")
    engine = await open_database(default_url(tmp_path))
    audit_log = AuditLog(engine, config.gateway.audit, config.state_dir)
    await audit_log.start()
    directory = Directory(engine, config.gateway)
    await directory.load()

    class Reloads:
        async def reload(self) -> None:
            return None

    admin = AdminApi(
        config,
        Authenticator(KeyRepository(engine), directory, None, cache_seconds=0),
        Operations(engine, config),
        CatalogOperations(engine, config, env={}),
        Reloads(),
        audit_log,
        UnauthorizedAudit(audit_log),
    )
    yield Api(admin, engine)
    await audit_log.aclose()
    await engine.dispose()


async def policy_of(api: Api) -> PolicyAccess:
    """The policy every replica builds from the stored grants when the auth revision moves (runtime/changes.py)."""
    config = api.admin.config
    access = PolicyAccess(config)
    access.load(file_grants(config.gateway.grants) + await api.admin.ops.grants.list())
    return access


async def test_a_gate_made_through_the_api_is_stored_shown_and_enforced(api: Api) -> None:
    status, made = await api.call("POST", ["grants"], GATED)
    assert status == 201
    assert {k: made[k] for k in GATED} == GATED  # returned as given
    _, one = await api.call("GET", ["grants", made["id"]])
    assert {k: one[k] for k in GATED} == GATED
    _, listed = await api.call("GET", ["grants"])
    assert [g["approvers"] for g in listed if g["id"] == made["id"]] == ["team:sre"]
    assert [g.get("approvers") for g in listed if g["id"] == "grants[0]"] == [None]  # the file grant: no gate

    rule = rule_for((await policy_of(api)).policy, ALICE, "github", "github", "delete_repo")
    assert rule is not None and rule.approvers.text == "team:sre"
    assert (rule.timeout_seconds, rule.valid_seconds, rule.self_approval) == (120, 30, True)
    assert rule.grant_label == f"grant {made['id']} (api)"
    assert rule_for((await policy_of(api)).policy, ALICE, "github", "github", "create_issue") is None  # not gated

    # Export carries the gate, in manifold.yaml's own words.
    exported = grants_file(listed)
    assert exported is not None and "require_approval:" in exported.text and "approvers: team:sre" in exported.text


async def test_a_gate_is_changed_and_lifted_with_patch(api: Api) -> None:
    _, made = await api.call("POST", ["grants"], {"who": "team:eng", "what": ["server:github"]})
    assert rule_for((await policy_of(api)).policy, ALICE, "github", "github", "delete_repo") is None
    patch = {"require_approval": ["tool:github/delete_*"], "approvers": "user:sam@corp.com"}
    status, changed = await api.call("PATCH", ["grants", made["id"]], patch)
    assert status == 200 and changed["approvers"] == "user:sam@corp.com" and changed["what"] == ["server:github"]
    rule = rule_for((await policy_of(api)).policy, ALICE, "github", "github", "delete_repo")
    assert rule is not None and rule.approvers.text == "user:sam@corp.com"

    await api.call("PATCH", ["grants", made["id"]], {"require_approval": [], "approvers": None})
    assert rule_for((await policy_of(api)).policy, ALICE, "github", "github", "delete_repo") is None
    async with api.engine.connect() as conn:  # lifted: the columns hold nothing again
        row = (await conn.execute(select(grants).where(grants.c.id == made["id"]))).one()
    assert (row.require_approval, row.approvers, row.approval_timeout_seconds, row.self_approval) == (None,) * 4

    refused = await api.refused("PATCH", ["grants", "grants[0]"], patch)
    assert isinstance(refused, Conflict) and "manifold.yaml" in refused.message


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"approvers": None}, "approvers", "require_approval needs approvers"),
        ({"require_approval": []}, "approvers", "lists nothing to approve"),
        ({"require_approval": ["nope:x"]}, "require_approval[0]", "unknown resource selector"),
        ({"require_approval": "tool:github/*"}, "require_approval", "list"),
        ({"approvers": "squad:sre"}, "approvers", ""),
        ({"approval_timeout_seconds": 0}, "approval_timeout_seconds", "greater than 0"),
        ({"approval_timeout_seconds": 8 * 86400}, "approval_timeout_seconds", "less than or equal"),
        ({"approval_valid_seconds": -1}, "approval_valid_seconds", "greater than or equal"),
        ({"self_approval": "maybe"}, "self_approval", "bool"),
        ({"approvers": "user:" + "x" * 400}, "approvers", "longer than 400"),
    ],
)
async def test_a_bad_gate_is_refused_naming_its_field_and_nothing_is_stored(
    api: Api, change: dict[str, Any], field: str, says: str
) -> None:
    body = {k: v for k, v in {**GATED, **change}.items() if v is not None}
    refused = await api.refused("POST", ["grants"], body)
    assert isinstance(refused, BadRequest) and refused.status == 400
    assert refused.message.startswith((f"'{field}'", f"{field}:")), refused.message
    assert says in refused.message
    assert await api.admin.ops.grants.list() == []

    _, made = await api.call("POST", ["grants"], {"who": "team:eng", "what": ["server:github"]})
    patched = await api.refused("PATCH", ["grants", made["id"]], body)
    assert patched.message == refused.message
    _, still = await api.call("GET", ["grants", made["id"]])
    assert still["require_approval"] == []  # the refused change left the grant as it was


async def test_grant_changes_are_audited(api: Api) -> None:
    _, made = await api.call("POST", ["grants"], GATED)
    await api.call("PATCH", ["grants", made["id"]], {"approvers": "team:ops"})
    await api.refused("PATCH", ["grants", made["id"]], {"approvers": None})
    await api.admin.audit_log.flush()
    async with api.engine.connect() as conn:
        rows = (await conn.execute(select(audit_events.c.method, audit_events.c.outcome))).all()
    assert ("console POST", "ok") in rows and ("console PATCH", "ok") in rows and ("console PATCH", "error") in rows


def test_the_cli_adds_a_gated_grant_and_lists_its_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifold.yaml").write_text(
        f"gateway:\n  state_dir: {tmp_path / 'state'}\n"
        "upstreams:\n  github:\n    transport: http\n    url: http://127.0.0.1:9/mcp\n"
    )
    config = ["--config", str(tmp_path / "manifold.yaml")]
    add = [*config, "grants", "add", "--who", "team:eng", "--what", "server:github"]
    main([*add, "--require-approval", "tool:github/delete_*", "--approvers", "team:sre", "--approval-timeout", "60"])
    out = capsys.readouterr().out
    assert "calls of tool:github/delete_* wait for team:sre" in out
    main([*config, "grants", "list", "--json"])
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["require_approval"], listed["approvers"], listed["approval_timeout_seconds"]) == (
        ["tool:github/delete_*"],
        "team:sre",
        60,
    )
    assert main([*add, "--require-approval", "tool:x/y"]) != 0  # the same check as the API's: approvers are required
    assert "approvers" in capsys.readouterr().err


def test_the_cli_changes_a_grant_and_lifts_its_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifold.yaml").write_text(
        f"gateway:\n  state_dir: {tmp_path / 'state'}\n"
        "upstreams:\n  github:\n    transport: http\n    url: http://127.0.0.1:9/mcp\n"
        "grants:\n  - who: team:ops\n    what: [server:github]\n"
    )
    config = ["--config", str(tmp_path / "manifold.yaml")]
    main([*config, "grants", "add", "--who", "team:eng", "--what", "server:github", "--json"])
    grant_id = json.loads(capsys.readouterr().out)["id"]
    update = [*config, "grants", "update", grant_id]

    assert main([*update, "--require-approval", "tool:github/delete_*", "--approvers", "team:sre"]) == 0
    assert "calls of tool:github/delete_* wait for team:sre" in capsys.readouterr().out
    assert main([*update, "--approvers", "team:security", "--json"]) == 0  # only what is given changes
    changed = json.loads(capsys.readouterr().out)
    assert (changed["who"], changed["require_approval"], changed["approvers"]) == (
        "team:eng",
        ["tool:github/delete_*"],
        "team:security",
    )
    assert main([*update, "--no-approval", "--json"]) == 0
    lifted = json.loads(capsys.readouterr().out)
    assert (lifted["require_approval"], lifted.get("approvers"), lifted["what"]) == ([], None, ["server:github"])

    assert main(update) != 0  # nothing to change
    assert "nothing to change" in capsys.readouterr().err
    assert main([*config, "grants", "update", "grants[0]", "--who", "team:eng"]) != 0
    assert "manifold.yaml" in capsys.readouterr().err  # a file's grant is changed in the file
    assert main([*update, "--require-approval", "tool:x/y", "--approvers", "nobody"]) != 0
    assert "approvers" in capsys.readouterr().err  # checked whole, as a new grant is; nothing stored
    main([*config, "grants", "list", "--json"])
    stored = {g["id"]: g for g in json.loads(capsys.readouterr().out)}
    assert stored[grant_id]["require_approval"] == []


def test_an_exported_grant_carries_its_gate_and_one_without_a_gate_no_gate_settings() -> None:
    defaults = {"approvers": None, "approval_timeout_seconds": 900.0, "approval_valid_seconds": 0.0}
    plain = {"id": "g1", "source": "api", "who": "team:eng", "what": ["server:github"], "require_approval": []}
    gated = {
        **plain,
        "id": "g2",
        "require_approval": ["tool:github/delete_*"],
        **defaults,
        "approvers": "team:sre",
        "self_approval": False,
    }
    exported = grants_file([{**plain, **defaults, "self_approval": False}, gated])
    assert exported is not None
    first, second = exported.text.split("- who:")[1:]
    assert "approval" not in first and "self_approval" not in first  # nothing but who and what
    assert "require_approval:" in second and "approvers: team:sre" in second and "approval_timeout_seconds" in second
