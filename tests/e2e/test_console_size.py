"""The console at the size issue 13 names — 50 upstreams x 100 tools, every list fetched (5,000 tools) —
renders every page, correctly, on a real gateway with real upstream processes. Its speed is measured by
bench/console_pages.py (the same setup, timed), not here: a time limit in a test only makes it flaky.

Also the way back from the database to files (`manifold export`): a virtual server made through the API
(created, then replaced with PUT), exported and placed in `virtual_servers/` of a fresh config, passes
`manifold check` and serves the same tool names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.common import run_upstreams
from bench.console_pages import console_at_size, pages
from tests.e2e.harness import REPO, run_gateway

pytestmark = pytest.mark.anyio


async def test_every_console_page_renders_with_50_upstreams_of_100_tools() -> None:
    async with console_at_size(50, 100, processes=5) as site:
        answers = {label: await site.http.get(site.gw.base + path) for label, path in pages(site)}
        for label, answer in answers.items():
            assert answer.status_code == 200, (label, answer.text[-500:])
            assert "Something went wrong" not in answer.text, label
        listed = answers["upstreams list"].text
        assert listed.count('<th scope="row">') == 50
        assert listed.count(">100</td>") == 50  # every tool count known, none fetched by the list itself
        assert listed.count('/edit"') == 10 and listed.count("defined in manifold.yaml") == 40
        first = answers["tools of one upstream (page 1 of 2)"].text
        assert "100 of 100 tools; showing 1–50" in first and first.count('class="console-tool"') == 50
        assert "Page 1 of 2" in first and "tool_49" in first and "tool_50" not in first
        assert "showing 51–100" in answers["tools, page 2"].text
        assert "upstreams.yaml" in answers["export page"].text and "virtual_servers/everything-api.yaml" in (
            answers["export page"].text
        )
        assert "Traceback" not in site.gw.log()


async def test_an_exported_virtual_server_loads_from_files_and_serves_the_same_tools(tmp_path: Path) -> None:
    async with run_upstreams("fast", 2, 5) as started:
        upstreams = {f"u{i}": {"transport": "http", "url": u.url} for i, u in enumerate(started)}
        async with run_gateway(upstreams) as gw:
            body = {
                "id": "picked",
                "description": "made through the API",
                "members": [
                    {"upstream": "u0", "tools": ["noop", "tool_01"], "aliases": {"tool_01": "first"}},
                    {"upstream": "u1", "tools": ["tool_0*"]},
                ],
            }
            async with gw.http() as api:
                first = {"id": "picked", "members": [{"upstream": "u0", "tools": ["noop"]}]}
                made = await api.post(f"{gw.base}/admin/api/virtual-servers", json=first)
                assert made.status_code == 201, made.text
                async with gw.client("picked") as client:
                    assert [t.name for t in (await client.list_tools()).tools] == ["u0__noop"]
                replaced = await api.put(f"{gw.base}/admin/api/virtual-servers/picked", json=body)  # applied at once
                assert replaced.status_code == 200, replaced.text
            async with gw.client("picked") as client:
                served = sorted(t.name for t in (await client.list_tools()).tools)
            config = gw.config_dir / "manifold.yaml"
            out = tmp_path / "export"
            exported = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "manifold.cli",
                    "--config",
                    str(config),
                    "export",
                    "--kind",
                    "virtual_servers",
                    "--out",
                    str(out),
                ],
                capture_output=True,
                text=True,
                cwd=REPO,
                timeout=60,
                check=False,
            )
            assert exported.returncode == 0, exported.stderr
        assert len(served) == 6  # noop and tool_01 (as "first") of u0, tool_01..04 of u1
        fresh = tmp_path / "fresh"
        (fresh / "virtual_servers").mkdir(parents=True)
        (fresh / "virtual_servers" / "picked.yaml").write_text((out / "virtual_servers" / "picked.yaml").read_text())
        assert yaml.safe_load((fresh / "virtual_servers" / "picked.yaml").read_text())["id"] == "picked"
        checked_config = {"gateway": {"state_dir": str(fresh / "state")}, "upstreams": upstreams}
        (fresh / "manifold.yaml").write_text(yaml.safe_dump(checked_config))
        check = subprocess.run(
            [sys.executable, "-m", "manifold.cli", "--config", str(fresh / "manifold.yaml"), "check"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        body_from_file = yaml.safe_load((fresh / "virtual_servers" / "picked.yaml").read_text())
        async with run_gateway(upstreams, {"picked": body_from_file}) as again:
            async with again.client("picked") as client:
                assert sorted(t.name for t in (await client.list_tools()).tools) == served
