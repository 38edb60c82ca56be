"""A handshake-era upstream's server→client requests, for a 2026-07-28 client (the MRTR bridge).

A 2026-07-28 client cannot receive a JSON-RPC request: it is asked with an `input_required` result and
retries its call with `inputResponses` and `requestState`. A handshake-era upstream asks with a request on
the live call (sampling/createMessage, elicitation/create, roots/list) and waits for the answer. The gateway
bridges the two by keeping the upstream call running — an `Exchange` — while the client is away:

1. the call goes upstream with the exchange as its `RequestSink`; when the upstream asks something the
   client declared it can answer, the question is held and the handler returns `input_required` with the
   questions as `inputRequests` and a `requestState` that names the exchange (HMAC-signed, bound to the
   caller and the upstream, expiring; relay/auth_required.py `seal`);
2. the client's retry carries the answers: they go to the waiting upstream requests, and the handler waits
   again for the call's result or the next question.

A question the client cannot answer (capability not declared) is refused upstream at once, and the client's
call is answered with MissingRequiredClientCapability (-32021, naming the capability), as a 2026-07-28 server
answers a request that needs a capability the client did not declare. A client that
does not come back within `limits.client_reply_seconds` has its questions answered with an error, so the
upstream never waits longer than that; past `limits.waiting_for_input_per_principal` parked calls, a new
question is refused at once. Calls whose upstream asks nothing cost one task and one future
(`Gateway.relay` uses an exchange only for 2026-07-28 clients of handshake-era upstreams).

The parked call lives in the process that started it. Behind a load balancer the retry may reach another
replica: the state verifies there (its key is derived from the secret key), but names this process, so the
client is told plainly (-32602, "the call waiting for input is on another gateway replica; retry the call")
instead of "expired" (docs/replicas.md).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from manifold.protocol import (
    INVALID_PARAMS,
    MISSING_CLIENT_CAPABILITY,
    PING,
    PROGRESS,
    REQUEST_TIMEOUT,
    RESULT_INPUT_REQUIRED,
)
from manifold.relay.auth_required import RequestStates
from manifold.relay.jsonrpc import RpcError
from manifold.relay.response_channel import CAPABILITY_FOR, refusal_for
from manifold.upstream.base import RequestSink

JSON = dict[str, Any]
STATE_PREFIX = "manifold-input."
ELSEWHERE = "the call waiting for input is on another gateway replica; retry the call"
# How long the first of an upstream's questions waits for others asked with it (Exchange._gather_more).
GATHER_QUIET = 0.03
GATHER_LIMIT = 0.25
FIRST = object()  # `Exchange.progress_token` while the first request's channel is the one


@dataclass(slots=True)
class _Question:
    key: str
    method: str
    params: JSON | None
    answer: asyncio.Future[JSON]


def _error(code: int, message: str) -> JSON:
    return {"error": {"code": code, "message": message}}


class Exchange:
    """One upstream call made for a 2026-07-28 client whose upstream may ask it questions. It is the call's
    `RequestSink`: notifications go to the client's current response channel (none while parked)."""

    def __init__(
        self,
        channel: RequestSink | None,
        capabilities: JSON,
        principal_id: str,
        upstream_id: str,
        reply_timeout: float,
    ) -> None:
        self.id = secrets.token_urlsafe(18)
        self.channel = channel
        self.capabilities = capabilities
        self.principal_id = principal_id
        self.client_session: object | None = None  # sessionless (2026-07-28)
        self.upstream_id = upstream_id
        self.reply_timeout = reply_timeout
        self.task: asyncio.Task[JSON] | None = None
        self.fresh: list[_Question] = []  # asked by the upstream, not yet shown to the client
        self.shown: dict[str, _Question] = {}  # shown in an input_required result, waiting for the retry
        self.gone = False  # the client did not come back in time: every later question is refused
        self.missing: JSON | None = None  # the capability a refused question needed (answered with -32021)
        self.expiry: asyncio.TimerHandle | None = None
        self.round = 0  # which input_required this is: a state is good for its own round only
        # The progressToken of the retry whose channel this is (a retry is a new request with a token of its
        # own; the upstream's progress still names the first one's). FIRST: the first request's channel.
        self.progress_token: Any = FIRST
        self._keys = itertools.count(1)
        self._wake: asyncio.Future[None] | None = None

    # ---- RequestSink ----------------------------------------------------------------------------

    @property
    def client_capabilities(self) -> JSON:
        return self.capabilities

    async def notify(self, message: JSON) -> None:
        channel = self.channel
        if channel is None:
            return
        token = self.progress_token
        params = message.get("params")
        if token is not FIRST and message.get("method") == PROGRESS and isinstance(params, dict):
            if token is None:
                return  # this retry asked for no progress
            message = {**message, "params": {**params, "progressToken": token}}
        await channel.notify(message)

    async def request(self, method: str, params: JSON | None, *, shared: bool = False) -> JSON:
        if method == PING:
            return {"result": {}}
        refused = refusal_for(method, params, self.capabilities)
        if refused is not None:
            needed = CAPABILITY_FOR[method]
            self.missing = {needed: {"url": {}} if needed in self.capabilities else {}}
            self._signal()
            return refused
        if self.gone:
            return _error(REQUEST_TIMEOUT, f"the client did not come back to answer {method}")
        question = _Question(f"{method.replace('/', '-')}-{next(self._keys)}", method, params, _new_future())
        self.fresh.append(question)
        self._signal()
        try:
            # The parked exchange's expiry answers it first (InputExchanges._expire); this is the backstop
            # for a question nobody parked, so it allows for the time the question waited to be shown.
            async with asyncio.timeout(2 * self.reply_timeout):
                return await question.answer
        except TimeoutError:
            return _error(REQUEST_TIMEOUT, f"the client did not answer {method} in time")

    # ---- the handler's side ---------------------------------------------------------------------

    def start(self, task: asyncio.Task[JSON]) -> None:
        self.task = task
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[JSON]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved: nobody may be waiting for it any more (answered -32021, expired)
        self._signal()

    async def next_outcome(self) -> JSON | None:
        """The upstream call's reply once it ends, or None once it asked the client something (and what it asked
        with it, _gather_more).
        Cancelling the caller cancels the upstream call (the client went away before it was parked)."""
        task = self.task
        assert task is not None
        while True:
            if self.missing is not None:
                # The upstream already heard "not supported"; whatever it makes of that, the client is told
                # which capability the call needs.
                names = ", ".join(self.missing)
                return {
                    "error": {
                        "code": MISSING_CLIENT_CAPABILITY,
                        "message": f"Missing required client capability: {names}",
                        "data": {"requiredCapabilities": self.missing},
                    }
                }
            if task.done():
                return task.result()
            if self.fresh:
                await self._gather_more(task)
                if self.missing is None and not task.done():
                    return None
                continue
            await self._wait(task, None)

    async def _wait(self, task: asyncio.Task[JSON], seconds: float | None) -> bool:
        """Wait for the next question, the call's end or a refusal; False when `seconds` passed first."""
        self._wake = _new_future()
        try:
            async with asyncio.timeout(seconds):
                await self._wake
            return True
        except TimeoutError:
            return False
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self._wake = None

    async def _gather_more(self, task: asyncio.Task[JSON]) -> None:
        """Questions an upstream asks together (two `elicitation/create` side by side) reach the gateway as
        separate messages; shown one by one, the client would answer the first before it saw the second.
        So the first question waits until the upstream has been quiet for GATHER_QUIET seconds (at most
        GATHER_LIMIT in all): a person answers them, so the few milliseconds do not show."""
        # A fraction of the reply timeout at most: the questions' clocks are running.
        deadline = asyncio.get_running_loop().time() + min(GATHER_LIMIT, self.reply_timeout / 4)
        while not task.done() and self.missing is None:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or not await self._wait(task, min(GATHER_QUIET, left)):
                return

    def questions(self) -> JSON:
        """The fresh questions as `inputRequests`, now shown to the client."""
        requests: JSON = {}
        for question in self.fresh:
            request: JSON = {"method": question.method}
            if question.params is not None:
                request["params"] = question.params
            requests[question.key] = request
            self.shown[question.key] = question
        self.fresh.clear()
        return requests

    def answer(self, responses: Mapping[str, Any]) -> None:
        """Hand the client's answers to the upstream requests waiting for them; a question left unanswered
        gets an error (the upstream decides what to do without it)."""
        shown, self.shown = self.shown, {}
        for key, question in shown.items():
            if question.answer.done():
                continue
            response = responses.get(key)
            if isinstance(response, dict):
                question.answer.set_result({"result": response})
            else:
                question.answer.set_result(_error(INVALID_PARAMS, f"the client gave no answer to {question.method}"))

    def abandon(self, reason: str) -> None:
        """The client will not answer: every waiting question gets an error at once."""
        self.gone = True
        for question in [*self.shown.values(), *self.fresh]:
            if not question.answer.done():
                question.answer.set_result(_error(REQUEST_TIMEOUT, reason))
        self.shown.clear()
        self.fresh.clear()

    def _signal(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)


def _new_future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


class InputExchanges:
    """The exchanges parked while their client is away, by id. Bounded per principal; each one expires."""

    def __init__(
        self, *, reply_timeout: float = 300.0, per_principal: int = 64, states: RequestStates | None = None
    ) -> None:
        self.reply_timeout = reply_timeout
        self.per_principal = per_principal
        self.states = states or RequestStates()  # also the connect flow's requestState (auth_required.py)
        self.instance = secrets.token_hex(6)  # names this process in the states it seals
        self._parked: dict[str, Exchange] = {}
        self._count: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._parked)

    @staticmethod
    def is_ours(state: object) -> bool:
        return isinstance(state, str) and state.startswith(STATE_PREFIX)

    def begin(self, channel: RequestSink | None, capabilities: JSON, principal_id: str, upstream_id: str) -> Exchange:
        return Exchange(channel, capabilities, principal_id, upstream_id, self.reply_timeout)

    async def run(self, exchange: Exchange) -> JSON:
        """Wait for the exchange's next outcome: the upstream reply, or `input_required` (the exchange is
        then parked until the client's retry, or until it expires)."""
        while True:
            reply = await exchange.next_outcome()
            if reply is not None:
                return reply
            if self._count[exchange.principal_id] >= self.per_principal:
                exchange.abandon("too many of this user's calls are waiting for input")
                continue
            requests = exchange.questions()
            exchange.channel = None
            exchange.round += 1
            self._parked[exchange.id] = exchange
            self._count[exchange.principal_id] += 1
            exchange.expiry = asyncio.get_running_loop().call_later(self.reply_timeout, self._expire, exchange.id)
            state = self.states.seal(
                STATE_PREFIX,
                {
                    "x": exchange.id,
                    "r": exchange.round,
                    "p": exchange.principal_id,
                    "u": exchange.upstream_id,
                    "g": self.instance,
                },
                self.reply_timeout,
            )
            return {"result": {"resultType": RESULT_INPUT_REQUIRED, "inputRequests": requests, "requestState": state}}

    def resume(
        self,
        state: str,
        principal_id: str,
        upstream_id: str,
        responses: object,
        channel: RequestSink | None,
        progress_token: Any = None,
    ) -> Exchange:
        """The parked exchange a retry names, with the client's answers delivered. Raises RpcError for a
        state that is altered, expired, someone else's, for another upstream, or already used."""
        data = self.states.unseal(STATE_PREFIX, state, principal_id)
        if data.get("g") != self.instance:
            raise RpcError(INVALID_PARAMS, ELSEWHERE)
        exchange = self._parked.get(str(data.get("x")))
        if (
            exchange is None
            or data.get("r") != exchange.round
            or data.get("u") != upstream_id
            or exchange.upstream_id != upstream_id
        ):
            raise RpcError(INVALID_PARAMS, "requestState names no call waiting for input (answered or expired)")
        self._release(exchange)
        exchange.channel = channel
        exchange.progress_token = progress_token  # the retry's own (its progress is under it from now on)
        exchange.answer(responses if isinstance(responses, dict) else {})
        return exchange

    def _release(self, exchange: Exchange) -> None:
        self._parked.pop(exchange.id, None)
        if exchange.expiry is not None:
            exchange.expiry.cancel()
            exchange.expiry = None
        self._count[exchange.principal_id] -= 1
        if self._count[exchange.principal_id] <= 0:
            del self._count[exchange.principal_id]

    def _expire(self, exchange_id: str) -> None:
        exchange = self._parked.get(exchange_id)
        if exchange is None:
            return
        self._release(exchange)
        exchange.abandon("the client did not come back with an answer in time")

    def close(self) -> None:
        for exchange in list(self._parked.values()):
            self._release(exchange)
            exchange.abandon("the gateway is shutting down")
            if exchange.task is not None:
                exchange.task.cancel()
