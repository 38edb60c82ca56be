"""How tests wait for something that happens in another task or process, without sleeping a guessed time.

Prefer an event the observed code path sets (`NotificationLog`, `HeldSink`, or an `asyncio.Event` of the
test's own) and `within()`; poll a condition with `wait_for()` only when nothing can signal it (a process's
state seen from outside). Both fail with an AssertionError that says what did not happen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
POLL_INTERVAL = 0.01


async def wait_for(condition: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT, *, what: str = "") -> None:
    """Return as soon as `condition()` holds; fail once `timeout` seconds pass without it holding."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what or 'condition'} did not hold within {timeout:g}s")
        await asyncio.sleep(POLL_INTERVAL)


async def within(awaitable: Awaitable[T], timeout: float = DEFAULT_TIMEOUT, *, what: str = "") -> T:
    """Await `awaitable` (an event's wait(), a future); fail once `timeout` seconds pass without it finishing."""
    try:
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError:
        raise AssertionError(f"{what or 'awaited event'} did not happen within {timeout:g}s") from None


class NotificationLog:
    """A pool's session callback that records (upstream_id, notification) and wakes whoever waits for one."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._arrived = asyncio.Condition()

    async def __call__(self, source: Any, message: dict[str, Any]) -> None:
        async with self._arrived:  # source: the pool's UpstreamKey (upstream id, credential identity)
            self.received.append((source.upstream_id, message))
            self._arrived.notify_all()

    @property
    def methods(self) -> list[str]:
        return [message["method"] for _, message in self.received]

    async def until(self, method: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until a notification with this method has arrived (or had already)."""

        async def arrived() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: method in self.methods)

        await within(arrived(), timeout, what=f"notification {method}")


class HeldSink:
    """A RequestSink whose server→client requests are held unanswered until `release()`.

    `asked` is set when the upstream makes one, which proves the upstream received the call and is
    working on it: the moment a test may kill the process or cancel the caller."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.requests: list[tuple[str, dict[str, Any] | None]] = []
        self.notifications: list[dict[str, Any]] = []
        self._released = asyncio.Event()
        self.client_capabilities: dict[str, Any] = {"sampling": {}, "elicitation": {}}
        self.principal_id = "user:tester"  # whose request it is
        self.client_session: object | None = None  # sessionless

    async def notify(self, message: dict[str, Any]) -> None:
        self.notifications.append(message)

    async def request(self, method: str, params: dict[str, Any] | None, *, shared: bool = False) -> dict[str, Any]:
        self.requests.append((method, params))
        self.asked.set()
        await self._released.wait()
        return {"error": {"code": -32603, "message": "the test did not answer"}}

    def release(self) -> None:
        self._released.set()
