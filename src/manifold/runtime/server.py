"""uvicorn's `Server` for `manifold serve`, stopping as soon as it can.

uvicorn notices a SIGTERM or Ctrl-C only at its next 0.1 s tick, then always sleeps 0.1 s "for existing
connections to finish sending responses" and polls the rest every 0.1 s: a gateway with nothing in flight
took ~0.25 s to stop — and one with a client's notification stream open (any connected IDE) waited out the
whole graceful-shutdown limit (3 s) and logged the cancelled stream's traceback, since a held stream only
ended at the lifespan shutdown, after that wait. A rolling restart, `make run`'s Ctrl-C and every test's
gateway waited that out. Here the signal wakes the main loop at once, held streams are ended first
(`on_stopping`), and the waits end as soon as what they wait for is done (still at most uvicorn's own times;
in-flight responses are waited for exactly as before).

Also: once started, what start-up made is frozen out of the garbage collector's way (below); before the
sockets listen, the open-file limit is raised as far as the system allows (`raise_open_file_limit`).
`shutdown` follows uvicorn 0.54's own (pinned in pyproject.toml); check it again on an upgrade.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn

from manifold.asgi import SHUTDOWN_CUT

logger = logging.getLogger("uvicorn.error")
_POLL_SECONDS = 0.005  # how often the shutdown waits look again (uvicorn: 0.1)
_SETTLE_SECONDS = 0.1  # at most this long for connections to finish their responses (uvicorn: always this long)


# Below this many open files a gateway is easy to starve: every client connection, held stream and upstream
# connection is one, and at the limit new connections are reset (with no line in any log).
FEW_OPEN_FILES = 4096
MOST_OPEN_FILES = 1 << 20  # no reason to ask for more, whatever the hard limit allows


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (at most MOST_OPEN_FILES), as servers that
    hold many connections do: the soft limit is often 1,024, a few hundred IDE sessions and their upstream
    connections. Returns (before, after); warns when even the hard limit is low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MOST_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MOST_OPEN_FILES)
    after = soft
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            after = wanted
        except (ValueError, OSError) as exc:  # a container's policy may refuse it: keep what there is
            logger.warning("could not raise the open-file limit from %d to %d: %s", soft, wanted, exc)
    if after != soft:
        logger.info("open-file limit raised from %d to %d", soft, after)
    if after != resource.RLIM_INFINITY and after < FEW_OPEN_FILES:
        logger.warning(
            "the open-file limit is %d: the gateway can hold fewer connections than that (clients, streams and "
            "upstreams together), and new ones are refused beyond it. Raise it (`ulimit -Hn`, systemd "
            "LimitNOFILE=, docker --ulimit nofile=)",
            after,
        )
    return soft, after


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None], on_stopping: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._on_stopping = on_stopping  # ends the held streams (Runtime.end_streams)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit_requested: asyncio.Event | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        raise_open_file_limit()
        await super().startup(sockets)
        if self.started and sockets:
            # uvicorn says where it listens only for sockets it bound itself; `serve --port 0` binds its own,
            # and behind a public_url this line is the one place the port the system picked is named.
            self._log_started_message(sockets)
        if self.started:  # the lifespan has started the runtime and the sockets listen
            self._on_started()
            # What start-up made (modules, config, the composed runtime: ~190,000 objects) lives as long as the
            # process: frozen out of the collector's way, a full collection later looks only at what serving
            # made (measured: 100 ms with them, about 1 ms without, a pause for every request in flight).
            gc.collect()
            gc.freeze()

    async def main_loop(self) -> None:
        # uvicorn's loop, but its 0.1 s sleep ends early when a signal asks the server to stop.
        self._loop = asyncio.get_running_loop()
        self._exit_requested = exit_requested = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            try:
                await asyncio.wait_for(exit_requested.wait(), 0.1)
            except TimeoutError:
                pass
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        loop, event = self._loop, self._exit_requested
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)  # signal-safe: it only queues the call and wakes the loop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        logger.info("Shutting down")
        for server in self.servers:  # no new connections
            server.close()
        for sock in sockets or []:
            sock.close()
        # Held streams (an IDE's notification stream, a legacy /sse session) never end by themselves: ended now,
        # their connections close with everything else instead of each costing the whole graceful-shutdown
        # limit and a cancelled task's traceback in the log. Their clients reconnect (behind a balancer: to
        # another replica). Calls in flight are not streams held here: they are answered as before.
        self._on_stopping()
        state = self.server_state
        for connection in list(state.connections):  # idle ones close now, busy ones after their response
            connection.shutdown()
        loop = asyncio.get_running_loop()
        settle = loop.time() + _SETTLE_SECONDS
        while state.connections and loop.time() < settle:
            await asyncio.sleep(_POLL_SECONDS)
        try:
            await asyncio.wait_for(self._until_done(), timeout=self.config.timeout_graceful_shutdown)
        except TimeoutError:
            logger.warning(
                "cut %d request(s) still running after the shutdown grace (gateway.shutdown_grace_seconds, %g s): "
                "answered 503, try again",
                len(self.server_state.tasks),
                self.config.timeout_graceful_shutdown,
            )
            for task in self.server_state.tasks:
                task.cancel(msg=SHUTDOWN_CUT)
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _until_done(self) -> None:
        state = self.server_state
        if state.connections and not self.force_exit:
            logger.info("Waiting for connections to close. (CTRL+C to force quit)")
            while state.connections and not self.force_exit:
                await asyncio.sleep(_POLL_SECONDS)
        if state.tasks and not self.force_exit:
            logger.info("Waiting for background tasks to complete. (CTRL+C to force quit)")
            while state.tasks and not self.force_exit:
                await asyncio.sleep(_POLL_SECONDS)
        for server in self.servers:
            await server.wait_closed()
