"""What the fuzz tests sent and how the gateway answered, by target, and the line per target printed at the
end of the run: `fuzz <target>: tried N · 2xx · 3xx · 4xx · 5xx · no answer`.

The hooks are imported by tests/conftest.py, the one conftest pytest loads in every process: under
pytest-xdist each worker counts its own requests and hands them to the controller (`workeroutput`), which
adds them up and prints the summary; with `-n 0` the one process does both.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

WORKER_KEY = "manifold_fuzz_tally"
COLUMNS = ("tried", "2xx", "3xx", "4xx", "5xx", "no answer")

TALLY: dict[str, Counter[str]] = {}


def record(target: str, status: int | None) -> None:
    """One request to `target`, answered with `status` (None: no answer at all)."""
    counts = TALLY.setdefault(target, Counter())
    counts["tried"] += 1
    counts["no answer" if status is None else f"{status // 100}xx"] += 1


def _merge(tally: dict[str, dict[str, int]]) -> None:
    for target, counts in tally.items():
        TALLY.setdefault(target, Counter()).update(counts)


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller prints
        workeroutput[WORKER_KEY] = {target: dict(counts) for target, counts in TALLY.items()}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    _merge(getattr(node, "workeroutput", {}).get(WORKER_KEY, {}))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLY:
        return
    terminalreporter.section("fuzz: requests sent to the gateway, by target")
    for target in sorted(TALLY):
        counts = TALLY[target]
        terminalreporter.write_line(
            f"fuzz {target}: " + " · ".join(f"{column} {counts.get(column, 0)}" for column in COLUMNS)
        )
    total = Counter[str]()
    for counts in TALLY.values():
        total.update(counts)
    terminalreporter.write_line("fuzz total: " + " · ".join(f"{column} {total.get(column, 0)}" for column in COLUMNS))
