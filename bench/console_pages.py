"""Console page times at size: every /admin page of a real gateway with 50 upstreams x 100 tools.

    .venv/bin/python -m bench.console_pages [--upstreams 50] [--tools 100] [--processes 5] [--samples 21]
                                            [--json FILE]

The gateway is `manifold serve` (tests/e2e/harness.py); the upstreams are `--processes` fast upstream
processes (bench/fast_upstream.py, `--tools` tools each), each behind `--upstreams / --processes` upstream
entries (a light fixture: the gateway connects, lists and caches each entry on its own, as for 50 separate
servers). Four fifths of the entries are in `manifold.yaml`, one fifth made through the admin API (so the
catalog merge has database rows to check), plus a file virtual server over every upstream and one made
through the API. Before timing, every upstream's tool list is fetched (the console's tool pages fill the
gateway's list cache: 5,000 tools), then each page is fetched `--samples` times in a row over one kept-alive
connection, signed in as an admin (the dev key through /login). The figure is the median time to the last
byte seen by the client on loopback: the server's time plus well under a millisecond. Target: <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html import unescape
from typing import Any

import anyio
import httpx2

from bench.common import run_upstreams, table
from tests.e2e.harness import Gateway, run_gateway

TARGET_MS = 100.0


@dataclass
class Site:
    gw: Gateway
    http: httpx2.AsyncClient  # signed in as the dev key's admin user
    upstreams: list[str]
    api_upstream: str


def pages(site: Site) -> list[tuple[str, str]]:
    """(label, path) of every console page timed. The virtual server editor's pages are console-servers'."""
    first, api = site.upstreams[0], site.api_upstream
    return [
        ("home", "/admin"),
        ("upstreams list", "/admin/upstreams"),
        ("tools of one upstream (page 1 of 2)", f"/admin/upstreams/{first}/tools"),
        ("tools, page 2", f"/admin/upstreams/{first}/tools?page=2"),
        ("tools, filtered", f"/admin/upstreams/{first}/tools?q=tool_5"),
        ("add upstream form", "/admin/upstreams/new"),
        ("edit upstream form", f"/admin/upstreams/{api}/edit"),
        ("remove upstream (confirm)", f"/admin/upstreams/{api}/remove"),
        ("export page", "/admin/export"),
        ("export all (zip)", "/admin/export/all.zip"),
        ("virtual servers list", "/admin/servers"),
        ("virtual server editor, new (5,000 tools)", "/admin/servers/new"),
        ("virtual server editor, API server", "/admin/servers/everything-api"),
        ("grants", "/admin/grants"),
        ("keys", "/admin/keys"),
        ("connections", "/admin/connections"),
        ("audit", "/admin/audit"),
    ]


async def sign_in(gw: Gateway, http: httpx2.AsyncClient) -> None:
    """The web sign-in with the dev key (an admin): the session cookie stays in `http`'s jar."""
    form = await http.get(gw.base + "/login")
    fields = {
        unescape(n): unescape(v)
        for n, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.text)
    }
    signed_in = await http.post(gw.base + "/login", data={**fields, "key": gw.key}, headers={"Origin": gw.base})
    if signed_in.status_code != 303:
        raise RuntimeError(f"sign-in answered {signed_in.status_code}: {signed_in.text[:300]}")


@asynccontextmanager
async def console_at_size(upstream_count: int, tools: int, processes: int) -> AsyncIterator[Site]:
    """A gateway with `upstream_count` upstreams of `tools` tools each, every list fetched, and a signed-in
    admin's HTTP client."""
    async with run_upstreams("fast", processes, tools) as started:
        ids = [f"up{i + 1:02d}" for i in range(upstream_count)]
        entries = {uid: {"transport": "http", "url": started[i % processes].url} for i, uid in enumerate(ids)}
        from_files = ids[: upstream_count * 4 // 5]
        made = ids[len(from_files) :]
        servers = {"everything": {"description": "every upstream", "members": [{"upstream": u} for u in from_files]}}
        async with run_gateway({u: entries[u] for u in from_files}, servers) as gw:  # the dev key is an admin's
            async with gw.http() as api:
                for uid in made:
                    created = await api.post(f"{gw.base}/admin/api/upstreams", json={"id": uid, **entries[uid]})
                    if created.status_code != 201:
                        raise RuntimeError(f"creating {uid}: {created.status_code} {created.text[:300]}")
                body = {"id": "everything-api", "members": [{"upstream": u} for u in made]}
                created = await api.post(f"{gw.base}/admin/api/virtual-servers", json=body)
                if created.status_code != 201:
                    raise RuntimeError(f"creating a virtual server: {created.status_code} {created.text[:300]}")
            async with httpx2.AsyncClient(timeout=60, follow_redirects=False) as http:
                await sign_in(gw, http)
                for uid in ids:  # fill the list cache: each tool page fetches its upstream's list once
                    page = await http.get(f"{gw.base}/admin/upstreams/{uid}/tools")
                    if page.status_code != 200 or f"of {tools} tools" not in page.text:
                        raise RuntimeError(f"the tools of {uid}: {page.status_code} {page.text[-500:]}")
                yield Site(gw, http, ids, made[0] if made else ids[0])


async def time_pages(site: Site, samples: int) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    for label, path in pages(site):
        times: list[float] = []
        status = 0
        size = 0
        for _ in range(samples):
            begin = time.perf_counter()
            answer = await site.http.get(site.gw.base + path)
            times.append(time.perf_counter() - begin)
            status, size = answer.status_code, len(answer.content)
        median = statistics.median(times) * 1000
        figures[label] = {
            "path": path,
            "status": status,
            "bytes": size,
            "median_ms": round(median, 2),
            "max_ms": round(max(times) * 1000, 2),
            "within_target": median <= TARGET_MS,
        }
    return figures


def report(figures: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    rows = [
        [
            label,
            f["status"],
            f"{f['bytes'] / 1024:.0f} KiB",
            f"{f['median_ms']:.1f}",
            f"{f['max_ms']:.1f}",
            "ok" if f["within_target"] else "OVER",
        ]
        for label, f in figures.items()
    ]
    head = (
        f"Console pages, {args.upstreams} upstreams x {args.tools} tools ({args.upstreams * args.tools} tools "
        f"cached), median of {args.samples} GETs, target <= {TARGET_MS:.0f} ms"
    )
    return head + "\n" + table(["page", "status", "size", "median ms", "max ms", "target"], rows)


async def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    async with console_at_size(args.upstreams, args.tools, args.processes) as site:
        figures = await time_pages(site, args.samples)
        assert "Traceback" not in site.gw.log(), site.gw.log()[-3000:]
        return figures


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description="Console page times with 50 upstreams x 100 tools.")
    parser.add_argument("--upstreams", type=int, default=50)
    parser.add_argument("--tools", type=int, default=100)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--samples", type=int, default=21)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    figures = anyio.run(run, args)
    print(report(figures, args), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return figures


if __name__ == "__main__":
    main()
