"""What authentication costs: the same tools/call through one gateway with no credential (auth off),
with an API key, and with an IdP JWT (a real oidc-provider), in one run.

    .venv/bin/python -m bench.bench_auth [--calls 300] [--warmup 30] [--rounds 6] [--json FILE]

One gateway process serves all three: `allow_unauthenticated: true` admits requests without a token as
the anonymous principal, while a request that carries a token is authenticated as usual; a grant lets
`anyone` use the server, so only the credential differs. The paths alternate call by call
(bench/common.interleaved), with the mcp SDK client in 2025-11-25 mode and a lean raw 2026-07-28 client,
`--calls` × `--rounds` timed calls per path and client. Target: p50 with auth ≤ 1.05 × p50 without.
The JWT row needs tests/node installed (`make test` does it); without it the row is left out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import anyio

from bench.bench_call import TOOL
from bench.common import fmt, interleaved, ms, p50, run_upstreams, table
from tests.e2e.harness import REPO, run_gateway

TARGET_RATIO = 1.05
AUDIENCE = "https://manifold.bench/mcp"


def create_key(config_dir: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "manifold.cli", "--config", f"{config_dir}/manifold.yaml", "keys", "create",
         "--user", "bench@example.com", "--name", "bench", "--json"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    return json.loads(out.stdout)["token"]


async def measure(args: argparse.Namespace, issuer: str | None, jwt_token: str | None) -> dict[str, dict]:
    extra: dict = {"grants": [{"who": "anyone", "what": ["server:*"]}]}
    if issuer:
        extra["identity"] = {"idps": {"bench": {"issuer": issuer, "audience": [AUDIENCE]}}}
    async with run_upstreams("fast", 1, 1) as upstreams, run_gateway(
        {"bench": {"transport": "http", "url": upstreams[0].url}},
        gateway={"allow_unauthenticated": True},
        extra=extra,
    ) as gw:
        key = create_key(str(gw.config_dir))
        paths = {"auth off": {}, "API key": {"Authorization": f"Bearer {key}"}}
        if jwt_token:
            paths["IdP JWT"] = {"Authorization": f"Bearer {jwt_token}"}
        url = gw.url("bench")
        return await interleaved(
            {name: (url, headers) for name, headers in paths.items()},
            tool=TOOL, calls=args.calls * args.rounds, warmup=args.warmup,
        )


async def run(args: argparse.Namespace) -> dict:
    jwt_token = issuer = None
    try:
        from tests.idp import NODE, IdpClient, run_idp
    except ImportError:
        NODE = None  # noqa: N806
    if NODE is not None and NODE.exists():
        async with run_idp([IdpClient("bench-client", claims={"email": "bench@example.com"})]) as idp:
            issuer = idp.issuer
            jwt_token = await idp.token("bench-client", resource=AUDIENCE)
            samples = await measure(args, issuer, jwt_token)
    else:
        print("  (tests/node not installed: no JWT row; run `make test` once)", flush=True)
        samples = await measure(args, None, None)
    off = samples["auth off"]
    out: dict = {}
    for name, s in samples.items():
        out[name] = {
            "sdk_p50_ms": ms(p50(s["sdk"])),
            "raw_p50_ms": ms(p50(s["raw"])),
            "sdk_ratio": p50(s["sdk"]) / p50(off["sdk"]),
            "raw_ratio": p50(s["raw"]) / p50(off["raw"]),
        }
    return out


def report(results: dict) -> str:
    rows = [
        [name, fmt(r["sdk_p50_ms"], 3), fmt(r["sdk_ratio"], 3), fmt(r["raw_p50_ms"], 3), fmt(r["raw_ratio"], 3)]
        for name, r in results.items()
    ]
    head = ["credential", "p50 ms (sdk, 2025-11-25)", "÷ auth off", "p50 ms (raw, 2026-07-28)", "÷ auth off"]
    return table(head, rows) + f"\ntarget: ≤ {TARGET_RATIO}× auth off"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    results = anyio.run(run, args)
    print(report(results), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
