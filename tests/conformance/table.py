"""Run the conformance matrix through the gateway and print the README's results table.

    .venv/bin/python -m tests.conformance.table [--findings FILE]

For every upstream of tests/conformance/upstreams.py and both requirement sets, runs 0.2.0-alpha.12
through a fresh gateway (as tests/e2e/test_conformance_matrix.py does), reads the direct side from
tests/conformance/direct_results.json (`python -m tests.conformance.record`), and prints a Markdown table
of scenarios passed directly / through the gateway. `--findings FILE` also writes, per upstream and
revision, every gateway-only failure (a scenario `must_pass` demands that failed through the gateway) with
its failing checks and the gateway's WARNING/ERROR log lines.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio

from tests.conformance.matrix import EXCUSED, SCENARIO_COUNT, must_pass, passed_through_gateway
from tests.conformance.record import read_record
from tests.conformance.support import REQUIREMENT_SETS, ConformanceResult
from tests.conformance.upstreams import DIRECT_STAND_IN, TITLES, UPSTREAMS, run_through_gateway

Runs = dict[tuple[str, str], tuple[ConformanceResult, str]]


async def run_all(out_dir: Path) -> Runs:
    runs: Runs = {}
    for name in UPSTREAMS:
        for requirements in REQUIREMENT_SETS:
            for attempt in range(3):
                try:
                    runs[name, requirements] = await run_through_gateway(name, requirements, out_dir)
                    break
                except TimeoutError:  # a process too slow to start on a loaded machine: again
                    if attempt == 2:
                        raise
            result = runs[name, requirements][0]
            print(f"{name} {requirements}: {len(result.passed)}/{len(result.scenarios)}", file=sys.stderr)
    return runs


def table(runs: Runs) -> str:
    record = read_record()["upstreams"]
    header = "| Upstream | " + " | ".join(f"{r}: directly | {r}: through the gateway" for r in REQUIREMENT_SETS) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(REQUIREMENT_SETS)]
    for name in UPSTREAMS:
        cells = []
        for requirements in REQUIREMENT_SETS:
            total = SCENARIO_COUNT[requirements]
            direct = len(record[name][requirements]["passed"])
            gateway = len(runs[name, requirements][0].passed)
            star = "*" if name in DIRECT_STAND_IN else ""
            cells += [f"{direct}/{total}{star}", f"{gateway}/{total}"]
        lines.append(f"| {TITLES[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings(runs: Runs) -> str:
    record = read_record()["upstreams"]
    out = ["## Gateway-only failures (must pass through the gateway, did not)", ""]
    for (name, requirements), (result, log) in runs.items():
        passed = passed_through_gateway(name, result)
        lost = sorted(must_pass(name, requirements, record[name][requirements]["passed"]) - passed)
        excused = sorted(EXCUSED.get((name, requirements), {}))
        out.append(
            f"### {name} × {requirements}: directly {len(record[name][requirements]['passed'])}, "
            f"through the gateway {len(result.passed)} of {len(result.scenarios)}; "
            f"gateway-only failures: {len(lost)}" + (f" (excused, upstream defect: {excused})" if excused else "")
        )
        for scenario in lost:
            for check in result.scenarios[scenario].failures:
                message = str(check.get("errorMessage") or check.get("description") or "")[:400]
                out.append(f"- {scenario} / {check.get('id')}: {message}")
        noisy = [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]
        if lost and noisy:
            out.append("  gateway log (WARNING/ERROR):")
            out += [f"      {line[:300]}" for line in noisy[-12:]]
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--findings", type=Path, help="also write the gateway-only failures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="conformance-table-") as tmp:
        runs = anyio.run(run_all, Path(tmp))
        print(table(runs))
        if args.findings:
            args.findings.write_text(table(runs) + "\n\n" + findings(runs) + "\n")


if __name__ == "__main__":
    main()
