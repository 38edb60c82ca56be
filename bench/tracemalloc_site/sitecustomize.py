"""A bench hook, not part of the gateway: on PYTHONPATH with `MANIFOLD_BENCH_TRACEMALLOC=<folder>` set, a
process (a gateway started by bench/scale_sessions.py --tracemalloc) starts tracemalloc at its first SIGUSR1
and writes a snapshot at each later one, as <folder>/snapshot-<n>.tm (written whole, then renamed).
`MANIFOLD_BENCH_TRACEMALLOC_FRAMES` (default 1) frames are kept per allocation."""

import os
import signal
import tracemalloc
from types import FrameType


def _install(folder: str) -> None:
    taken = [0]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(int(os.environ.get("MANIFOLD_BENCH_TRACEMALLOC_FRAMES", "1")))
            open(os.path.join(folder, "started"), "w").close()
            return
        taken[0] += 1
        path = os.path.join(folder, f"snapshot-{taken[0]}.tm")
        tracemalloc.take_snapshot().dump(path + ".part")
        os.rename(path + ".part", path)

    signal.signal(signal.SIGUSR1, on_signal)


_folder = os.environ.get("MANIFOLD_BENCH_TRACEMALLOC")
if _folder:
    _install(_folder)
