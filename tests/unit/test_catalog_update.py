"""`PUT /admin/api/{upstreams,groups,virtual-servers}/{id}`: an API-made object's body is replaced, checked
like a create, applied at once; a credential sent back as "(hidden)" keeps the stored one; file objects are
refused. Over a real SQLite file, through the admin API's own route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from manifold.admin.api import AdminApi
from manifold.admin.catalog import HIDDEN, CatalogOperations, InvalidBody, Kind
from manifold.admin.ops import Conflict, NotFound, Operations
from manifold.audit import AuditLog
from manifold.audit.unauthorized import UnauthorizedAudit
from manifold.config.loader import load_config
from manifold.identity.api_keys import KeyRepository
from manifold.identity.authenticator import Authenticator
from manifold.identity.directory import Directory
from manifold.store.db import catalog_objects, default_url, open_database

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Reloads:
    def __init__(self) -> None:
        self.count = 0

    async def reload(self) -> None:
        self.count += 1


class Api:
    def __init__(self, admin: AdminApi, ops: CatalogOperations, reloads: Reloads, engine: object) -> None:
        self.admin, self.ops, self.reloads, self.engine = admin, ops, reloads, engine


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    (tmp_path / "manifold.yaml").write_text(
        f"gateway:\n  state_dir: {tmp_path / 'state'}\n"
        "upstreams:\n  files:\n    transport: http\n    url: http://127.0.0.1:9/mcp\n"
    )
    config = load_config(tmp_path / "manifold.yaml")
    engine = await open_database(default_url(tmp_path))
    ops = CatalogOperations(engine, config, env={"TEAM": "sales"})
    audit_log = AuditLog(engine, config.gateway.audit, config.state_dir)
    await audit_log.start()
    directory = Directory(engine, config.gateway)
    await directory.load()
    reloads = Reloads()
    admin = AdminApi(
        config,
        Authenticator(KeyRepository(engine), directory, None, cache_seconds=0),
        Operations(engine, config),
        ops,
        reloads,
        audit_log,
        UnauthorizedAudit(audit_log),
    )
    yield Api(admin, ops, reloads, engine)
    await audit_log.aclose()
    await engine.dispose()


async def stored_body(api: Api, kind: Kind, object_id: str) -> dict[str, object]:
    async with api.engine.connect() as conn:  # type: ignore[attr-defined]
        result = await conn.execute(
            catalog_objects.select().where(catalog_objects.c.kind == kind.value, catalog_objects.c.id == object_id)
        )
        return dict(result.one().body)


async def test_an_upstream_is_replaced_and_a_hidden_secret_is_kept(api: Api) -> None:
    body = {
        "id": "crm",
        "transport": "http",
        "url": "http://127.0.0.1:9/a",
        "headers": {"Authorization": "Bearer s3cret", "X-Team": "${TEAM}"},
    }
    await api.admin.route("POST", ["upstreams"], {}, body)
    status, shown = await api.admin.route("GET", ["upstreams", "crm"], {}, {})
    assert shown["body"]["headers"] == {"Authorization": HIDDEN, "X-Team": "${TEAM}"}
    edited = dict(shown["body"], url="http://127.0.0.1:9/b", headers={**shown["body"]["headers"], "X-New": "1"})
    reloads = api.reloads.count
    status, result = await api.admin.route("PUT", ["upstreams", "crm"], {}, edited)
    assert status == 200 and result["body"]["url"] == "http://127.0.0.1:9/b"
    assert api.reloads.count == reloads + 1  # applied before the answer
    assert result["body"]["headers"]["Authorization"] == HIDDEN  # never shown
    stored = await stored_body(api, Kind.UPSTREAM, "crm")
    assert stored["headers"] == {"Authorization": "Bearer s3cret", "X-Team": "${TEAM}", "X-New": "1"}
    assert stored["url"] == "http://127.0.0.1:9/b"


async def test_an_invalid_update_lists_its_problems_and_changes_nothing(api: Api) -> None:
    await api.admin.route("POST", ["upstreams"], {}, {"id": "crm", "transport": "http", "url": "http://127.0.0.1:9/a"})
    with pytest.raises(InvalidBody) as raised:
        await api.admin.route("PUT", ["upstreams", "crm"], {}, {"transport": "http", "url": 5})
    assert [d["field"] for d in raised.value.details()] == ["url"]
    assert (await stored_body(api, Kind.UPSTREAM, "crm"))["url"] == "http://127.0.0.1:9/a"


async def test_a_virtual_server_and_a_group_are_replaced(api: Api) -> None:
    await api.admin.route("POST", ["upstreams"], {}, {"id": "crm", "transport": "http", "url": "http://127.0.0.1:9/a"})
    await api.admin.route("POST", ["virtual-servers"], {}, {"id": "sales", "members": [{"upstream": "crm"}]})
    await api.admin.route("POST", ["groups"], {}, {"id": "g", "upstreams": ["crm"]})
    body = {"members": [{"upstream": "crm"}, {"upstream": "files"}], "description": "both"}
    status, result = await api.admin.route("PUT", ["virtual-servers", "sales"], {}, body)
    assert status == 200 and result["body"]["description"] == "both"
    current = await api.ops.current()
    assert [m.upstream for m in current.virtual_servers["sales"].members] == ["crm", "files"]
    await api.admin.route("PUT", ["groups", "g"], {}, {"upstreams": ["crm", "files"]})
    assert (await api.ops.current()).groups["g"] == ["crm", "files"]


async def test_file_objects_unknown_ids_and_other_ids_are_refused(api: Api) -> None:
    with pytest.raises(Conflict, match="declared in manifold.yaml"):
        await api.admin.route("PUT", ["upstreams", "files"], {}, {"transport": "http", "url": "http://x/"})
    with pytest.raises(NotFound):
        await api.admin.route("PUT", ["upstreams", "nope"], {}, {"transport": "http", "url": "http://x/"})
    await api.admin.route("POST", ["upstreams"], {}, {"id": "crm", "transport": "http", "url": "http://127.0.0.1:9/a"})
    with pytest.raises(InvalidBody, match="differs"):
        await api.admin.route("PUT", ["upstreams", "crm"], {}, {"id": "other", "transport": "http", "url": "http://x/"})


def test_the_cli_updates_an_upstream_and_exports_it_without_its_secrets(tmp_path: Path) -> None:
    """`manifold upstreams update` (the same `update`), then `manifold export`: placeholders, never a secret."""
    import subprocess
    import sys

    (tmp_path / "manifold.yaml").write_text(f"gateway:\n  state_dir: {tmp_path / 'state'}\nupstreams: {{}}\n")

    def manifold(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "manifold.cli", "--config", str(tmp_path / "manifold.yaml"), *args]
        return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, check=False)

    made = manifold("upstreams", "create", stdin="id: crm\ntransport: stdio\ncommand: run\nenv: {TOKEN: t0p-s3cret}\n")
    assert made.returncode == 0, made.stderr
    updated = manifold(
        "upstreams", "update", stdin="id: crm\ntransport: stdio\ncommand: run2\nenv: {TOKEN: '(hidden)', MODE: fast}\n"
    )
    assert updated.returncode == 0, updated.stderr
    exported = manifold("export", "--kind", "upstreams")
    assert exported.returncode == 0, exported.stderr
    assert "t0p-s3cret" not in exported.stdout and "fast" not in exported.stdout
    assert "command: run2" in exported.stdout
    assert "TOKEN: ${CRM_ENV_TOKEN}" in exported.stdout and "#   CRM_ENV_TOKEN  (env.TOKEN of upstream crm)" in (
        exported.stdout
    )
    refused = manifold("upstreams", "update", stdin="id: nope\ntransport: stdio\ncommand: x\n")
    assert refused.returncode == 1 and "no upstream 'nope'" in refused.stderr
