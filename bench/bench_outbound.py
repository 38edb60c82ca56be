"""What a per-user OAuth credential costs: the same tools/call to the same upstream, once through an upstream
entry with `auth: static` and once through one with `auth: oauth` holding a valid stored token, in one run.

    .venv/bin/python -m bench.bench_outbound [--calls 300] [--warmup 30] [--rounds 6] [--json FILE]

One upstream process, one gateway; the gateway has two upstream entries pointing at it. The OAuth
connection of the calling user is put in the gateway's vault (encrypted, as the connect flow would store
it) before the gateway starts, so the measured calls find a valid token: the cost is the per-user session
lookup and the token cache, not a refresh. The paths alternate call by call (bench/common.interleaved).
Target: oauth p50 ≤ 1.05 × static p50.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.bench_call import TOOL
from bench.common import interleaved, paired_figures, paired_main, paired_report, run_upstreams
from tests.e2e.harness import run_gateway

TARGET_RATIO = 1.05
DEV_PRINCIPAL = "user:dev"  # the harness's development key belongs to user dev


async def store_connection(state_dir: Path, database_url: str) -> None:
    from manifold.outbound.oauth.vault import Connection, Vault
    from manifold.security.crypto import Cipher
    from manifold.store.db import open_database

    state_dir.mkdir(parents=True, exist_ok=True)
    engine = await open_database(database_url)
    try:
        cipher = Cipher.load(state_dir)
        await cipher.check(engine)
        now = time.time()
        await Vault(engine, cipher).put(
            Connection(
                user=DEV_PRINCIPAL, upstream="oauth", access_token="bench-access-token", refresh_token=None,
                expires_at=now + 86400, scopes=["mcp"], token_type="Bearer", issuer="https://as.bench.example",
                client_id="bench", created_at=now, updated_at=now,
            )
        )
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace) -> dict:
    import manifold.outbound.oauth  # noqa: F401 — registers the vault tables

    with tempfile.TemporaryDirectory(prefix="manifold-bench-") as tmp:
        directory = Path(tmp)
        state = directory / "state"
        await store_connection(state, f"sqlite+aiosqlite:///{state / 'manifold.db'}")
        async with run_upstreams("fast", 1, 1) as upstreams:
            url = upstreams[0].url
            upstreams_config = {
                "static": {"transport": "http", "url": url, "auth": {"mode": "static", "bearer": "bench-static"}},
                "oauth": {
                    "transport": "http",
                    "url": url,
                    "auth": {
                        "mode": "oauth", "client_id": "bench", "issuer": "https://as.bench.example",
                        "authorization_endpoint": "https://as.bench.example/authorize",
                        "token_endpoint": "https://as.bench.example/token",
                    },
                },
            }
            async with run_gateway(upstreams_config, directory=directory) as gw:
                headers = {"Authorization": f"Bearer {gw.key}"}
                samples = await interleaved(
                    {name: (gw.url(name), headers) for name in ("static", "oauth")},
                    tool=TOOL, calls=args.calls * args.rounds, warmup=args.warmup,
                )
    return paired_figures(samples, "static")


def report(results: dict) -> str:
    return paired_report(results, label="upstream auth", baseline="static", target=f"oauth ≤ {TARGET_RATIO}× static")


def main(argv: list[str] | None = None) -> dict:
    return paired_main(__doc__, run, report, argv)


if __name__ == "__main__":
    main()
