"""Tool search cost at size: one `search_tools` query over 10,000 tools (docs/tool-search.md).

    .venv/bin/python -m bench.tool_search [--tools 10000] [--queries 200] [--json FILE]

In process: the catalog's `ToolIndex` (catalog/search.py) built once over `--tools` generated tools (50
services x verbs x nouns, descriptions of 12-30 words from a 400-word vocabulary plus each tool's own words,
"use" and "tool" in every description, two to four argument names), then the relay's `search`
(relay/tool_search.py: the caller's visibility mask, the ranking) for `--queries` queries of one to four words
and a quarter as many with words every tool has, for a caller who sees every tool and for one who sees every
third. Figures: the index build (once per catalog revision), and the median and p95 per query, as elapsed
time and as the thread's CPU time (which other processes on a shared machine do not inflate).
Target: <= 5 ms per query.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from typing import Any

from manifold.catalog.search import ToolIndex
from manifold.catalog.view import Built
from manifold.config.models import ToolSearchConfig
from manifold.relay.tool_search import Query

TARGET_MS = 5.0

VERBS = "get list create update delete search find open close merge send read write run start stop sync".split()
NOUNS = (
    "issue pull_request repository branch commit comment user team project ticket page document file folder "
    "message channel invoice customer order payment subscription report dashboard alert incident deployment "
    "build pipeline secret key bucket table query record event calendar meeting task note label"
).split()
FILLER = (
    "returns the a of for with by from into when if this that which each all any new existing given current "
    "status details fields optional required value values id name title body text date time range limit page "
    "cursor results error errors permission access token account workspace organization owner member role "
    "public private archived active pending failed done open closed recent latest first last sorted filtered "
    "matching including excluding summary full raw formatted json markdown html csv link url path size count"
).split()


def make_tools(n: int, rng: random.Random) -> list[dict[str, Any]]:
    services = [f"svc{i}" for i in range(50)]
    vocabulary = FILLER + [f"term{i}" for i in range(400 - len(FILLER))]
    tools = []
    for i in range(n):
        service = services[i % len(services)]
        verb, noun = rng.choice(VERBS), rng.choice(NOUNS)
        words = rng.sample(vocabulary, rng.randint(12, 30))
        args = rng.sample(vocabulary, rng.randint(2, 4))
        tools.append(
            {
                "name": f"{service}__{verb}_{noun}_{i}",
                "description": f"Use this tool to {verb} a {noun.replace('_', ' ')} in {service}: {' '.join(words)}.",
                "inputSchema": {"type": "object", "properties": {a: {"type": "string"} for a in args}},
            }
        )
    return tools


class OneView:
    """What relay/tool_search.py's `search` needs of a view: the index of a built list."""

    def __init__(self, index: ToolIndex) -> None:
        self._index = index

    async def index(self, built: Built) -> ToolIndex:
        return self._index


async def timed(
    view: Any, built: Built, visible: list[dict[str, Any]], queries: list[str], limit: int
) -> tuple[list[float], list[float]]:
    from manifold.relay import tool_search

    wall, cpu = [], []
    for q in queries:
        t0, c0 = time.perf_counter(), time.thread_time()
        await tool_search.search(view, built, visible, Query(q, limit))
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - t0) * 1000)
    return sorted(wall), sorted(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tools", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rng = random.Random(7)
    tools = make_tools(args.tools, rng)
    built = Built(items=tools, targets={}, item_targets=[], versions=())
    started, cpu_started = time.perf_counter(), time.thread_time()
    index = ToolIndex(tools)
    build_ms = (time.perf_counter() - started) * 1000
    build_cpu_ms = (time.thread_time() - cpu_started) * 1000
    view: Any = OneView(index)
    limit = ToolSearchConfig().max_results
    queries = [" ".join(rng.sample(VERBS + NOUNS + FILLER[:40], rng.randint(1, 4))) for _ in range(args.queries)]
    # the worst case: words every tool has ("use", "tool") with one or two others
    queries += [f"use tool {' '.join(rng.sample(VERBS + NOUNS, rng.randint(1, 2)))}" for _ in range(args.queries // 4)]
    figures: dict[str, Any] = {
        "tools": args.tools,
        "index_build_ms": round(build_ms, 1),
        "index_build_cpu_ms": round(build_cpu_ms, 1),
    }
    for label, visible in (("all visible", tools), ("a third visible", tools[::3])):
        wall, cpu = asyncio.run(timed(view, built, visible, queries, limit))
        figures[label] = {
            "median_ms": round(statistics.median(wall), 2),
            "p95_ms": round(wall[int(len(wall) * 0.95) - 1], 2),
            "cpu_median_ms": round(statistics.median(cpu), 2),
            "cpu_p95_ms": round(cpu[int(len(cpu) * 0.95) - 1], 2),
        }
    print(
        f"tool search over {args.tools} tools: index built in {build_ms:.0f} ms ({build_cpu_ms:.0f} ms CPU), "
        "once per catalog revision"
    )
    for label in ("all visible", "a third visible"):
        f = figures[label]
        print(
            f"  {label:16} median {f['median_ms']:.2f} ms, p95 {f['p95_ms']:.2f} ms per query; CPU "
            f"{f['cpu_median_ms']:.2f} / {f['cpu_p95_ms']:.2f} ms (target <= {TARGET_MS} ms)"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
