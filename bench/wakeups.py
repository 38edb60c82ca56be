"""What one loopback round trip between two processes costs on this machine, by what the sender does between
round trips — the floor under every hop the gateway adds (bench/README.md, "Why the SDK client's added ms is
larger than the raw client's").

    .venv/bin/python -m bench.wakeups [--trips 2000]

Two processes, one socketpair, one byte each way. "back to back": the next trip at once; "busy 1 ms": the
sender computes for 1 ms between trips (as the mcp SDK client does: ~1 ms of CPU per call of its own);
"idle 1 ms": it sleeps instead.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time


def _echo(sock: socket.socket) -> None:
    while data := sock.recv(1):
        sock.send(data)
    os._exit(0)


def _trips(sock: socket.socket, trips: int, gap: float, busy: bool) -> float:
    rtts = []
    for _ in range(trips):
        if gap and busy:
            end = time.perf_counter() + gap
            while time.perf_counter() < end:
                pass
        elif gap:
            time.sleep(gap)
        began = time.perf_counter()
        sock.send(b"x")
        sock.recv(1)
        rtts.append(time.perf_counter() - began)
    return statistics.median(rtts) * 1e6


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, default=2000)
    args = parser.parse_args(argv)
    mine, theirs = socket.socketpair()
    if os.fork() == 0:
        mine.close()
        _echo(theirs)
    theirs.close()
    figures = {
        "back to back": _trips(mine, args.trips, 0, False),
        "busy 1 ms between": _trips(mine, args.trips, 0.001, True),
        "idle 1 ms between": _trips(mine, args.trips, 0.001, False),
    }
    mine.close()
    os.wait()
    for name, us in figures.items():
        print(f"{name:20}  median round trip {us:6.1f} µs")
    return figures


if __name__ == "__main__":
    main()
