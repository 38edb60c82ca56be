"""What the HTTP server layer alone costs per request: uvicorn as `manifold serve` runs it (uvloop, its httptools
protocol with the write-combining transport of manifold/asgi.py) serving a trivial ASGI app that answers a
fixed JSON body, against a bare httptools `asyncio.Protocol` that writes the same answer from its parser
callback. Neither does any gateway work, so the difference is the floor a lighter server protocol could take
off every call (the gateway's CPU per call is ~0.4 ms; bench/README.md "Where the gateway's CPU per call goes").

    .venv/bin/python -m bench.http_floor [--calls 3000] [--rounds 6]

Both servers run as their own processes; the lean raw client (bench/common.raw_round: one kept-alive aiohttp
connection) POSTs a 2026-07-28 tools/call with the headers a client sends, rounds alternating; the figure is
each server process's utime+stime per request (/proc), min and median over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from typing import Any

import anyio

from bench.common import STARTUP_DEADLINE_S, CpuMeter, _listening, modern_request, raw_round
from tests.upstreams.launch import free_port

BODY = b'{"jsonrpc":"2.0","id":1,"result":{"content":[],"resultType":"complete"}}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
KINDS = ("uvicorn", "bare")


async def trivial_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


class BareProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one fixed answer per request, nothing else."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        import httptools

        self.transport: Any = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(BODY)
        self.transport.write(head + BODY)


def serve(kind: str, port: int) -> None:
    import uvloop

    if kind == "uvicorn":
        import uvicorn

        from manifold.asgi import write_combining_http

        config = uvicorn.Config(
            trivial_app,
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            http=write_combining_http(),
            lifespan="off",
            access_log=False,
            log_level="warning",
        )
        uvicorn.Server(config).run()
        return

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(BareProtocol, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


async def measure(calls: int, rounds: int) -> dict[str, list[float]]:
    processes: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for kind in KINDS:
            port = free_port()
            process = subprocess.Popen([sys.executable, "-m", "bench.http_floor", "--serve", kind, str(port)])
            processes[kind] = (process, port)
            with anyio.fail_after(STARTUP_DEADLINE_S):
                while not _listening(port):
                    await anyio.sleep(0.05)
        headers, body = modern_request("tools/call", {"name": "noop", "arguments": {}}, name="noop")
        headers = {**headers, "Authorization": "Bearer mfk_0123456789ab_" + "x" * 43}
        spent: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for _ in range(rounds):
            for kind, (process, port) in processes.items():
                meter = CpuMeter(process.pid)
                await raw_round(f"http://127.0.0.1:{port}/mcp/bench", headers, body, 200, calls, meter)
                spent[kind].append(meter.spent / calls * 1000)
        return spent
    finally:
        for process, _ in processes.values():
            process.terminate()
            process.wait()


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return {}
    spent = anyio.run(measure, args.calls, args.rounds)
    figures = {}
    for kind, values in spent.items():
        values.sort()
        figures[kind] = {"min_ms": values[0], "median_ms": values[len(values) // 2]}
        print(f"{kind:8} server CPU per request: min {values[0]:.3f} ms, median {values[len(values) // 2]:.3f} ms")
    return figures


if __name__ == "__main__":
    main()
