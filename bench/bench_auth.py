"""What authentication costs: the same tools/call through one gateway with no credential (auth off),
with an API key, with an IdP JWT (a real oidc-provider), and with an access token of the gateway's own
authorization server (signed in through its pages, docs/gateway-oauth.md), in one run.

    .venv/bin/python -m bench.bench_auth [--calls 300] [--warmup 30] [--rounds 6] [--json FILE]

One gateway process serves all three: `allow_unauthenticated: true` admits requests without a token as
the anonymous principal, while a request that carries a token is authenticated as usual; a grant lets
`anyone` use the server, so only the credential differs. The paths alternate call by call
(bench/common.interleaved), with the mcp SDK client in 2025-11-25 mode and a lean raw 2026-07-28 client,
`--calls` × `--rounds` timed calls per path and client. Target: p50 with auth ≤ 1.05 × p50 without, and
p50 with a gateway OAuth token ≤ 1.03 × p50 with an API key (issue 12).
The JWT row needs tests/node installed (`make test` does it); without it the row is left out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import httpx2

from bench.bench_call import TOOL
from bench.common import interleaved, paired_figures, paired_main, paired_report, run_upstreams
from tests.e2e.harness import REPO, Gateway, run_gateway

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
        paths["gateway OAuth"] = {"Authorization": f"Bearer {await gateway_oauth_token(gw, 'bench', key)}"}
        if jwt_token:
            paths["IdP JWT"] = {"Authorization": f"Bearer {jwt_token}"}
        url = gw.url("bench")
        return await interleaved(
            {name: (url, headers) for name, headers in paths.items()},
            tool=TOOL, calls=args.calls * args.rounds, warmup=args.warmup,
        )


async def gateway_oauth_token(gw: Gateway, server: str, key: str) -> str:
    """An access token of the gateway's own authorization server for `server`, for the same person as the API
    key: registered, signed in with that key and allowed, through the gateway's pages (as
    tests/e2e/test_gateway_oauth.py does)."""
    from tests.e2e.test_gateway_oauth import Browser, Flow

    browser = Browser(gw, key)
    try:
        async with httpx2.AsyncClient(timeout=30) as http:
            flow = Flow(gw, browser, http)
            await flow.register()
            return (await flow.tokens(server))["access_token"]
    finally:
        await browser.aclose()


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
    return paired_figures(samples, "auth off")


def report(results: dict) -> str:
    return paired_report(results, label="credential", baseline="auth off", target=f"≤ {TARGET_RATIO}× auth off")


def main(argv: list[str] | None = None) -> dict:
    return paired_main(__doc__, run, report, argv)


if __name__ == "__main__":
    main()
