"""A control for bench_call's burst: a TCP relay that understands nothing and spends a set CPU per call.

    python bench/byte_relay.py --port 8124 --target 8123 --cpu-ms 0.25

It forwards bytes between each accepted connection and one connection of its own to the target (uvloop,
no parsing) and, before forwarding a read from the client, spins for `--cpu-ms` of its own CPU time. One
read is one request in the benchmark's traffic (a JSON-RPC POST fits in one segment), so the relay costs
the target's callers about `--cpu-ms` of CPU per call on top of its forwarding, and nothing else: no
framing, no headers, no connection churn.

Why: on a 2-core machine whose two cores the client and the upstream already fill, any hop in the path
takes CPU from them. Run with the gateway's own CPU per call, the relay shows the throughput a hop of that
cost reaches whatever it does with the bytes, so the gateway's burst ratio can be read against it
(bench/README.md, "The burst against a relay of the same CPU").
"""

from __future__ import annotations

import argparse
import asyncio
import time

import uvloop


def spin(seconds: float) -> None:
    """Busy for `seconds` of this process's CPU time (not wall time: a descheduled spin must not count)."""
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass


async def serve(port: int, target: int, cpu_seconds: float) -> None:
    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, cost: float) -> None:
        try:
            while data := await source.read(65536):
                if cost:
                    spin(cost)
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pipe(reader, up_writer, cpu_seconds), pipe(up_reader, writer, 0.0))

    server = await asyncio.start_server(relay, "127.0.0.1", port, backlog=2048)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", type=int, required=True, help="the port to relay to, on 127.0.0.1")
    parser.add_argument("--cpu-ms", type=float, default=0.0, help="CPU to spend per client read (per call)")
    args = parser.parse_args(argv)
    uvloop.run(serve(args.port, args.target, args.cpu_ms / 1000.0))


if __name__ == "__main__":
    main()
