"""Two gateway replicas behind haproxy against one gateway process: what the load balancer's hop adds.

    .venv/bin/python -m bench.scale_replicas [--calls 2000] [--warmup 100] [--database-url URL | --postgres]
                                             [--json FILE]

Two `manifold serve` processes (tests/e2e/harness.py `run_gateway`, each in its own folder with the same
secret key) on ONE database — a SQLite file in the temporary folder, `--database-url` (e.g. a PostgreSQL
URL), or `--postgres` (a fresh database in a throw-away cluster, tests/postgres.py) — in front of
bench/fast_upstream.py, and Debian's haproxy (`haproxy -f cfg -db`, round-robin, HTTP keep-alive, loopback;
scripts/setup-haproxy.sh installs it) in front of both. The same tools/call `noop` goes
to replica A directly ("one process") and through haproxy (to A and B in turn), alternating call by call so
drift hits both alike, each path over one kept-alive connection:

- 2026-07-28: a fixed sessionless request (lean aiohttp client);
- 2025-11-25: one session per path (initialize through that path), then calls on it. Through haproxy its
  calls land on both replicas, so this row needs 2025-11-25 sessions that work across replicas; when they do
  not, the row says why instead of a figure.

The figure is "added p50" = p50 through haproxy - p50 to one process (no target: issue 14 asks for it to be
reported). "answered by" counts haproxy's X-Replica header (added by the bench's haproxy config) to show that
calls really went to both replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from cryptography.fernet import Fernet

from bench.common import fmt, modern_request, ms, p50, percentile, run_upstreams, signed, table
from bench.scale_common import POST_HEADERS, log_problems, open_session, session_headers
from tests.e2e.harness import Gateway, run_gateway
from tests.replicas.harness import run_haproxy  # the replica tests' balancer, the same config

SERVER = "bench"
PATHS = ("one process", "haproxy")


@dataclass
class Row:
    era: str
    samples: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PATHS})
    answered_by: Counter[str] = field(default_factory=Counter)
    failure: str = ""

    def figures(self) -> dict[str, float]:
        one, lb = self.samples["one process"], self.samples["haproxy"]
        return {"one_p50_ms": ms(p50(one)), "one_p99_ms": ms(percentile(one, 99)),
                "haproxy_p50_ms": ms(p50(lb)), "haproxy_p99_ms": ms(percentile(lb, 99)),
                "added_p50_ms": ms(p50(lb) - p50(one))}

    def answered(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.answered_by.items()))

    def summary(self) -> dict[str, float | str]:
        if self.failure:
            return {"failure": self.failure}
        return {**self.figures(), "answered_by": self.answered()}


@asynccontextmanager
async def run_two_replicas(upstreams: dict, database_url: str | None) -> AsyncIterator[tuple[list[Gateway], str]]:
    secret = Fernet.generate_key().decode()
    with tempfile.TemporaryDirectory(prefix="manifold-bench-replicas-") as tmp:
        directory = Path(tmp)
        url = database_url or f"sqlite+aiosqlite:///{directory / 'shared.db'}"
        async with AsyncExitStack() as stack:
            gateways = []
            for i in range(2):  # one after the other: the first creates the schema
                place = directory / f"replica-{i}"
                (place / "state").mkdir(parents=True)
                key_file = place / "state" / "secret.key"
                key_file.write_text(secret + "\n")
                key_file.chmod(0o600)
                gateways.append(await stack.enter_async_context(
                    run_gateway(upstreams, gateway={"database_url": url}, directory=place)))
            balancer = await stack.enter_async_context(
                run_haproxy(directory, [int(g.base.rsplit(":", 1)[1]) for g in gateways]))
            yield gateways, balancer


async def run(args: argparse.Namespace) -> list[Row]:
    rows = [Row("2026-07-28"), Row("2025-11-25")]
    async with run_upstreams("fast", 1, 1) as upstreams:
        config = {SERVER: {"transport": "http", "url": upstreams[0].url}}
        async with run_two_replicas(config, args.database_url) as (gateways, balancer):
            key = gateways[0].key
            bases = {"one process": gateways[0].base, "haproxy": balancer}
            auth = {"Authorization": f"Bearer {key}"}
            call_headers, call_body = modern_request("tools/call", {"name": "noop", "arguments": {}}, name="noop")
            async with AsyncExitStack() as stack:
                http = {p: await stack.enter_async_context(aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=1))) for p in PATHS}
                for row in rows:
                    requests: dict[str, tuple[dict[str, str], bytes]] = {}
                    for path in PATHS:
                        url = f"{bases[path]}/mcp/{SERVER}"
                        if row.era == "2026-07-28":
                            requests[path] = ({**auth, **call_headers}, call_body)
                        else:
                            sid = await open_session(http[path], url, key, f"replicas-{path}")
                            body = orjson.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                                                 "params": {"name": "noop", "arguments": {}}})
                            requests[path] = ({**POST_HEADERS, **session_headers(key, sid)}, body)

                    async def call(path: str, row: Row = row, requests: dict = requests) -> None:
                        headers, body = requests[path]
                        async with http[path].post(f"{bases[path]}/mcp/{SERVER}", data=body,
                                                   headers=headers) as response:
                            payload = await response.read()
                            if path == "haproxy":
                                row.answered_by[response.headers.get("X-Replica", "?")] += 1
                        if response.status != 200 or b'"result"' not in payload:
                            raise RuntimeError(f"{path} answered {response.status}: {payload[:200]!r}")

                    try:
                        for _ in range(args.warmup):
                            for path in PATHS:
                                await call(path)
                        row.answered_by.clear()
                        for i in range(args.calls):
                            for path in (PATHS if i % 2 == 0 else PATHS[::-1]):
                                begin = time.perf_counter()
                                await call(path)
                                row.samples[path].append(time.perf_counter() - begin)
                    except RuntimeError as exc:
                        row.failure = f"failed after {len(row.samples['haproxy'])} calls: {exc}"
                    print(f"  done: {row.era}", flush=True)
            for gateway in gateways:
                if problems := log_problems(gateway):
                    raise RuntimeError(f"{len(problems)} errors in a replica's log; the first: {problems[0]}")
    return rows


def report(rows: list[Row], args: argparse.Namespace) -> str:
    lines = []
    table_rows = []
    for row in rows:
        s = row.figures()
        if row.failure:
            lines.append(f"{row.era}: n/a — {row.failure}")
            continue
        table_rows.append([row.era, fmt(s["one_p50_ms"], 3), fmt(s["one_p99_ms"], 3), fmt(s["haproxy_p50_ms"], 3),
                           fmt(s["haproxy_p99_ms"], 3), signed(s["added_p50_ms"], 3), row.answered()])
    database = args.database_url or "one SQLite file"
    head = (f"two replicas on {database} behind haproxy (round-robin) vs one process (replica A directly); "
            f"tools/call noop, {args.calls} calls per path alternating call by call (ms)")
    added = ", ".join(f"{row.era} {signed(row.figures()['added_p50_ms'], 3)} ms" for row in rows if not row.failure)
    return "\n".join([head, table(["client era", "one process p50", "p99", "haproxy p50", "p99", "added p50",
                                   "answered by"], table_rows), *lines,
                      f"haproxy hop, added p50 (reported, no target): {added or 'n/a'}"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per path and era")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--database-url", help="the replicas' one database (default: a SQLite file)")
    parser.add_argument("--postgres", action="store_true",
                        help="a fresh database in a throw-away PostgreSQL cluster (tests/postgres.py; Debian's "
                             "postgresql, scripts/setup-postgres.sh; durability off, as for the tests)")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> tuple[str, bool, dict]:
    """Run it: the report, True (no target to miss), the figures (also written to --json)."""
    if args.postgres:
        from tests import postgres

        try:
            args.database_url = postgres.cluster().new_database(migrated=True)
            rows = asyncio.run(run(args))
        finally:
            postgres.stop()
        args.database_url = "a throw-away PostgreSQL cluster (fsync off)"
    else:
        rows = asyncio.run(run(args))
    text = report(rows, args)
    figures = {row.era: row.summary() for row in rows}
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "figures": figures, "report": text}, out, indent=1)
    return text, True, figures


def main(argv: list[str] | None = None) -> dict:
    text, _, figures = measure(parse_args(argv))
    print(text)
    return figures


if __name__ == "__main__":
    main()
