"""The MCP server face: one function per method, the same for both eras and both transports.

A handler gets a `Call` (which server, what the client can do, where side traffic goes) and returns a
reply dict ({"result": ...} or {"error": ...}). Upstream replies pass through as they came; only names and
URIs are translated between the exposed and the upstream form.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, assert_never

from manifold.catalog.view import Credential, Target, VirtualServerView, connected_text, once_per_member
from manifold.config.models import CALL_TOOL, TOOL_SEARCH_NAMES, AuthMode, MemberConfig, SessionSharing
from manifold.outbound.resolver import AuthRequired, CallContext, CredentialResolver, OutboundRefused
from manifold.policy.evaluation import ItemKind
from manifold.policy.rate_limits import RateLimits
from manifold.principal import Principal
from manifold.protocol import (
    COMPLETION_COMPLETE,
    ENVELOPE_KEYS,
    FORBIDDEN_CREDENTIAL,
    HANDSHAKE_VERSIONS,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    LATEST_HANDSHAKE,
    LOG_LEVELS,
    LOGGING_SET_LEVEL,
    META_LOG_LEVEL,
    META_SERVER_INFO,
    METHOD_NOT_FOUND,
    MODERN_VERSIONS,
    PING,
    PROMPTS_GET,
    PROMPTS_LIST,
    RATE_LIMITED,
    REF_PROMPT,
    REF_RESOURCE,
    RESOURCE_NOT_FOUND,
    RESOURCES_LIST,
    RESOURCES_READ,
    RESOURCES_SUBSCRIBE,
    RESOURCES_TEMPLATES_LIST,
    RESOURCES_UNSUBSCRIBE,
    RESULT_COMPLETE,
    RESULT_INPUT_REQUIRED,
    ROOTS_LIST_CHANGED,
    TASKS_CANCEL,
    TASKS_EXTENSION,
    TASKS_GET,
    TASKS_UPDATE,
    TOOLS_CALL,
    TOOLS_LIST,
    Era,
)
from manifold.relay import auth_required, tool_search
from manifold.relay.access import Access, Auditor
from manifold.relay.approval_gate import ApprovalGate, Held, Passed
from manifold.relay.call import Call
from manifold.relay.hub import Hub, Listener
from manifold.relay.input_exchange import InputExchanges
from manifold.relay.jsonrpc import RpcError, tool_error_result
from manifold.relay.response_channel import ResponseChannel
from manifold.relay.tasks import Forward, TaskRun, Tasks
from manifold.upstream.base import ErrorKind, RequestSink, UpstreamError
from manifold.upstream.credential import SHARED, Outbound, in_handshake_era
from manifold.upstream.pool import StillStarting, UpstreamPool

if TYPE_CHECKING:
    from manifold.telemetry.tracing import Tracing

log = logging.getLogger(__name__)

# An upstream's instructions passed on by a server of one member (they are for the model: bounded like a tool
# description would be).
MAX_INSTRUCTIONS = 10_000
JSON = dict[str, Any]


@dataclass
class Gateway:
    """What every handler shares: where requests go (the pool), who may do what (access), the audit trail,
    outbound credentials, notification fan-out (hub), and the server's own identity. Built once by the
    composition root (runtime/compose.py) with every collaborator in place."""

    pool: UpstreamPool
    hub: Hub
    access: Access
    audit: Auditor
    credentials: CredentialResolver
    server_name: str = "manifold"
    server_version: str = "0.1.0"
    started: float = field(default_factory=time.monotonic)
    # 2026-07-28 clients' calls parked while they answer a handshake-era upstream's questions
    inputs: InputExchanges = field(default_factory=InputExchanges)
    # tools/call run as tasks for 2026-07-28 clients that declared the tasks extension (relay/tasks.py)
    tasks: Tasks = field(default_factory=Tasks)
    # rate limits and quotas on the requests relayed upstream (policy/rate_limits.py): tools/call, prompts/get,
    # resources/read, resources/subscribe, completion/complete; no rules: one attribute read per request
    rate_limits: RateLimits = field(default_factory=RateLimits)
    # the human approval gate on tools/call (relay/approval_gate.py); None: no gate (tests of the relay alone)
    approvals: ApprovalGate | None = None
    # spans for the policy decision and credential resolution (telemetry/tracing.py); None: tracing is off
    tracing: Tracing | None = None
    # (upstream id, instructions) -> may they be passed on: pinned like tools (catalog/pinning.py
    # `ToolPins.instructions_allowed`); None: passed on as they come (tests of the relay alone)
    instructions_pinned: Callable[[str, str], bool] | None = None

    def server_info(self, view: VirtualServerView) -> JSON:
        return {"name": f"{self.server_name}/{view.id}", "version": self.server_version}

    def capabilities(self, *, sessionless: bool = False) -> JSON:
        """What the gateway serves. `sessionless`: a 2025-11-25 client without a session (`gateway.stateless`)
        has no stream that could carry list changes or resource updates (GET is 405, resources/subscribe is
        refused), so none are promised: advertised, they made clients subscribe and fail (the MCP Inspector's
        resources/subscribe: "resource subscriptions need a session")."""
        if sessionless:
            return {"tools": {}, "prompts": {}, "resources": {}, "completions": {}, "logging": {}}
        return {
            "tools": {"listChanged": True},
            "prompts": {"listChanged": True},
            "resources": {"subscribe": True, "listChanged": True},
            "completions": {},
            "logging": {},
        }

    # ---- lifecycle ------------------------------------------------------------------------------

    def initialize_result(self, view: VirtualServerView, requested: str | None, *, sessionless: bool = False) -> JSON:
        version = requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE
        result: JSON = {
            "protocolVersion": version,
            "capabilities": self.capabilities(sessionless=sessionless),
            "serverInfo": self.server_info(view),
        }
        instructions = self.instructions(view)
        if instructions:
            result["instructions"] = instructions
        return result

    def instructions(self, view: VirtualServerView) -> str | None:
        """The server's `description`; without one, a server of one member (an upstream served alone, or a
        virtual server over one) passes on its upstream's own instructions, as that upstream's live shared
        session learned them (interop: server-everything's 1,575 characters of guidance for the model were
        dropped even on /mcp/<upstream>). Best effort: none before that session first started. They speak to the
        model like a tool description, so they are pinned like one: none until a tool list of the upstream was
        reviewed, and a changed text is held until approved (docs/pinning.md)."""
        if view.config.description:
            return view.config.description
        if len(view.members) != 1:
            return None  # several upstreams' words, each about its own tool names: not mixed
        upstream_id = view.members[0].upstream
        session = self.pool.live(upstream_id)
        text = session.instructions if session is not None else None
        if not text or (self.instructions_pinned is not None and not self.instructions_pinned(upstream_id, text)):
            return None
        return text[:MAX_INSTRUCTIONS]

    def discover_result(self, view: VirtualServerView) -> JSON:
        result: JSON = {
            "supportedVersions": list(MODERN_VERSIONS),
            "capabilities": {**self.capabilities(), "extensions": {TASKS_EXTENSION: {}}},
            "resultType": RESULT_COMPLETE,
            "ttlMs": 0,
            "cacheScope": "public",
            "_meta": {META_SERVER_INFO: self.server_info(view)},
        }
        instructions = self.instructions(view)
        if instructions:
            result["instructions"] = instructions
        return result

    # ---- dispatch -------------------------------------------------------------------------------

    async def handle(self, call: Call, method: str, params: JSON) -> JSON:
        handler = HANDLERS.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        return await handler(self, call, params)

    async def _forward(self, call: Call, target: Target, method: str, params: JSON) -> JSON:
        try:
            return await self.relay(call, target, method, params)
        except UpstreamError as exc:
            raise RpcError(INTERNAL_ERROR, f"member '{target.member_id}': {exc}") from None
        except AuthRequired as exc:
            return self.auth_required(call, exc, target.member_id, tool=False)
        except OutboundRefused as exc:
            raise refusal(exc) from None

    async def upstream_runs_tasks(self, call: Call, target: Target) -> bool:
        """Whether the member's upstream runs tasks itself: a 2026-07-28 upstream declaring the tasks extension."""
        try:
            outbound = await self.outbound(call, target.member_id, target.upstream_id)
            session = await self.pool.session(target.upstream_id, outbound)
        except Exception:  # the call itself meets the same failure and answers it
            return False
        extensions = session.capabilities.get("extensions")
        return session.era is Era.MODERN and isinstance(extensions, dict) and TASKS_EXTENSION in extensions

    # ---- outbound credentials -------------------------------------------------------------------

    async def outbound(self, call: Call, member_id: str, upstream_id: str) -> Outbound:
        """The credential this caller's requests carry to this upstream (outbound/resolver.py), and the identity
        its upstream session is keyed by."""
        config = self.pool.config(upstream_id)
        # A 2025-11-25 client of an upstream that speaks both eras goes through the upstream's session of that era
        # (upstream/credential.py HANDSHAKE_SESSION): FastMCP 4's tools ask elicitation, sampling and roots only
        # there, and failed for every client when all went through its 2026-07-28 session (fastmcp interop).
        handshake = call.era is Era.HANDSHAKE and self.pool.speaks_both(upstream_id)
        if config is None or (config.auth.mode is AuthMode.NONE and config.sessions is SessionSharing.SHARED):
            if not handshake:
                return SHARED  # no per-caller work at all
            resolved = SHARED
        elif config.auth.mode is AuthMode.NONE:
            resolved = SHARED
        else:
            resolved = await self._resolve(call, member_id, upstream_id)
        own = f"{resolved.identity or 'caller'}|caller:{call.principal.id}"
        if config is not None and config.sessions is SessionSharing.PER_USER:
            # One session per caller whatever the credential: `none` and `static` share one otherwise, and a
            # `forwarded` one is keyed by the headers' values, which two callers may share (second review).
            resolved = Outbound(resolved.headers, identity=own)
        # The handshake-era session is always the caller's own: the requests such an upstream makes on its GET
        # stream name no call (FastMCP asks sampling and roots there), and are given to the one call in flight,
        # which on a session shared by everyone may be another user's (isolation probe: Bob was asked Alice's
        # question once her call was given up; and any call in flight made everybody else's questions fail).
        return in_handshake_era(resolved, own) if handshake else resolved

    async def credential_of(self, principal: Principal, upstream_id: str) -> Outbound:
        """What this principal's own requests to the upstream carry outside any MCP call: the console lists an
        upstream's tools with its admin's credential, as a client's call would (with none, a `static` upstream's
        shared session was replaced by one without its headers, and an `oauth` one was marked down)."""
        config = self.pool.config(upstream_id)
        if config is None:
            return SHARED
        resolved = SHARED
        if config.auth.mode is not AuthMode.NONE:
            ctx = CallContext(principal=principal, member_id=upstream_id, server_id=upstream_id)
            resolved = await self.credentials.resolve(upstream_id, config, ctx)
        if config.sessions is SessionSharing.PER_USER:  # as `outbound` keys it (review: else the shared session)
            return Outbound(resolved.headers, identity=f"{resolved.identity or 'caller'}|caller:{principal.id}")
        return resolved

    async def _resolve(self, call: Call, member_id: str, upstream_id: str) -> Outbound:
        config = self.pool.config(upstream_id)
        assert config is not None
        ctx = CallContext(
            principal=call.principal,
            member_id=member_id,
            server_id=call.view.id,
            forwarded_raw=call.forwarded_raw,
            member_ids=tuple(call.view.by_member),
        )
        if self.tracing is not None:
            with self.tracing.span("credentials", {"manifold.upstream": upstream_id}):
                return await self.credentials.resolve(upstream_id, config, ctx)
        return await self.credentials.resolve(upstream_id, config, ctx)

    async def roots_changed(self, call: Call) -> None:
        """The client's roots changed (`notifications/roots/list_changed`): every live handshake-era upstream
        session of this caller's own hears it, so a server that cached the roots asks again (found with
        server-everything: the notification was dropped, and the server kept the first roots for good). A
        shared session does not (second review): its server would then ask whoever has a call in flight, and
        one user could make another's roots the server's for everyone."""
        for member in call.view.members:
            try:
                outbound = await self.outbound(call, member.member_id, member.upstream)
            except Exception:  # noqa: BLE001 — no session of this caller's there; a notification answers nothing
                continue
            # A shared session is everybody's: not told (a handshake-era one is always the caller's own; a `forwarded`
            # credential's under `sessions: shared` is its senders' together, pool._owned).
            session = self.pool.live(member.upstream, outbound) if outbound.identity is not None else None
            if session is not None and session.era is Era.HANDSHAKE and session.owned:
                self._introduce(call, member.upstream, outbound)  # the server asks again, outside any call
                with contextlib.suppress(Exception):
                    await session.notify(ROOTS_LIST_CHANGED)

    def _introduce(self, call: Call, upstream_id: str, outbound: Outbound) -> None:
        """A 2025-11-25 caller's own upstream session (never a shared one) learns the client session to ask for
        roots when no call of it can: its server asks right after its handshake and after the client's
        roots/list_changed, outside any call (interop, server-filesystem with `sessions: per_user`: it was
        answered "no client can answer roots/list now" and served its own directories instead of the client's
        roots). Cheap: a dict lookup, only for sessions of the caller's own."""
        if outbound.identity is None or not isinstance(call.sink, ResponseChannel):
            return
        session = self.pool.live(upstream_id, outbound)
        if session is not None and session.owned and (standing := call.sink.standing()) is not None:
            session.use_roots_client(standing)

    def credential_for(self, call: Call) -> Credential:
        """The caller's credential per member, for the lists: resolved once per member per request (whose lists
        the caller is shown is worked out before they are listed; view.py `once_per_member`)."""
        if call.credential is None:

            async def credential(member: MemberConfig) -> Outbound:
                return await self.outbound(call, member.member_id, member.upstream)

            call.credential = once_per_member(credential)
        return call.credential

    def auth_required(self, call: Call, exc: AuthRequired, member_id: str, *, tool: bool) -> JSON:
        reply = auth_required.render(
            exc,
            member_id=member_id,
            principal_id=call.principal.id,
            era=call.era,
            client_capabilities=call.client_capabilities,
            states=self.inputs.states,
        )
        if not tool and "result" in reply and reply["result"].get("isError"):
            # Not a tool: there is no tool result to carry the text, so it becomes the error message.
            raise RpcError(INTERNAL_ERROR, auth_required.message_for(exc, member_id))
        return reply

    async def subscribe(self, call: Call, target: Target, listener: Listener, exposed_uri: str) -> JSON:
        """Subscribe `listener` to a resource, under the URI its client knows it by. One upstream
        subscription per (upstream, credential identity, URI), however many clients asked for it: an
        upstream with per-user sessions is subscribed on each user's own session, and an update seen on
        one user's session reaches only that user's subscribers (relay/hub.py)."""
        try:
            outbound = await self.outbound(call, target.member_id, target.upstream_id)
            key = (target.upstream_id, outbound.identity, target.name)
            first = self.hub.subscribers(key) == 0
            listener.resources[key] = exposed_uri
            if not first:
                return {"result": {}}
            try:
                session = await self.pool.session(target.upstream_id, outbound)
                reply = await session.subscribe_resource(target.name)
            except BaseException:
                listener.resources.pop(key, None)
                raise
            if "error" in reply:
                listener.resources.pop(key, None)
                return reply
            return {"result": {}}
        except UpstreamError as exc:
            raise RpcError(INTERNAL_ERROR, f"member '{target.member_id}': {exc}") from None
        except AuthRequired as exc:
            return self.auth_required(call, exc, target.member_id, tool=False)
        except OutboundRefused as exc:
            raise refusal(exc) from None

    async def relay(self, call: Call, target: Target, method: str, params: JSON) -> JSON:
        """Send one request upstream on the client's behalf.

        A 2026-07-28 upstream asks for client input (sampling, elicitation) by answering
        `input_required`; a 2026-07-28 client gets that answer as it is and retries by itself, while a
        2025-11-25 client is asked with ordinary server→client requests and the gateway retries for it."""
        outbound = await self.outbound(call, target.member_id, target.upstream_id)
        match call.era:
            case Era.HANDSHAKE:
                level = call.session.log_level if call.session and call.session.log_level else "debug"
                params = _with_log_level(params, level)
                if outbound.identity is not None and call.session is not None:
                    if self.pool.live(target.upstream_id, outbound) is None:
                        try:  # opened first, so it knows whom to ask; a failure is the request's
                            await self.pool.session(target.upstream_id, outbound)
                        except StillStarting:
                            raise  # said now: the request would wait connect_timeout again to say it (review)
                        except UpstreamError:
                            pass
                    self._introduce(call, target.upstream_id, outbound)
            case Era.MODERN:
                # The client's own request says whether it wants log messages. A handshake-era upstream asks
                # its questions as server→client requests, which this client hears as input_required.
                if self.inputs.is_ours(params.get("requestState")):
                    exchange = self.inputs.resume(
                        params["requestState"],
                        call.principal.id,
                        target.upstream_id,
                        params.get("inputResponses"),
                        call.sink,
                        meta.get("progressToken") if isinstance(meta := params.get("_meta"), dict) else None,
                    )
                    return await self.inputs.run(exchange)
                era = self.pool.era(target.upstream_id, outbound)
                if era is None:  # no session yet: this call opens it
                    era = (await self.pool.session(target.upstream_id, outbound)).era
                if era is Era.HANDSHAKE:
                    exchange = self.inputs.begin(
                        call.sink, call.client_capabilities, call.principal.id, target.upstream_id
                    )
                    exchange.start(asyncio.ensure_future(self._reply(call, target, method, params, exchange, outbound)))
                    return await self.inputs.run(exchange)
            case _:
                assert_never(call.era)
        try:
            reply = await self.pool.request(target.upstream_id, method, params, sink=call.sink, outbound=outbound)
        except UpstreamError as exc:
            outbound = await self._fresh_credential(exc, call, target)
            reply = await self.pool.request(target.upstream_id, method, params, sink=call.sink, outbound=outbound)
        match call.era:
            case Era.MODERN:
                return reply  # an input_required result goes to the client as it is; the client retries
            case Era.HANDSHAKE:
                if outbound.identity is not None:
                    self._introduce(call, target.upstream_id, outbound)  # a session this call opened
                result = reply.get("result")
                if isinstance(result, dict) and result.get("resultType") == RESULT_INPUT_REQUIRED:
                    return await self._answer_input_requests(call, target, method, params, outbound, reply)
                return reply
            case _:
                assert_never(call.era)

    async def _fresh_credential(self, exc: UpstreamError, call: Call, target: Target) -> Outbound:
        """After an upstream refused a per-user token (revoked, rotated): a fresh one to retry with, once.
        Any other failure is raised again."""
        config = self.pool.config(target.upstream_id)
        if (
            exc.kind is not ErrorKind.AUTH
            or config is None
            or not self.credentials.rejected(target.upstream_id, config, call.principal)
        ):
            raise exc
        return await self.outbound(call, target.member_id, target.upstream_id)

    async def _reply(
        self, call: Call, target: Target, method: str, params: JSON, sink: RequestSink, outbound: Outbound
    ) -> JSON:
        """The upstream call an exchange (relay/input_exchange.py) runs for a 2026-07-28 client."""
        try:
            return await self.pool.request(target.upstream_id, method, params, sink=sink, outbound=outbound)
        except UpstreamError as exc:
            outbound = await self._fresh_credential(exc, call, target)
            return await self.pool.request(target.upstream_id, method, params, sink=sink, outbound=outbound)

    async def _answer_input_requests(
        self, call: Call, target: Target, method: str, params: JSON, outbound: Outbound, reply: JSON
    ) -> JSON:
        """For a 2025-11-25 client: ask it what a 2026-07-28 upstream's `input_required` result wants
        (server→client requests through the call's sink), then retry with `inputResponses` and the
        upstream's `requestState`, for as long as the upstream keeps asking (at most MAX_INPUT_ROUNDS)."""
        for _ in range(MAX_INPUT_ROUNDS):
            result = reply.get("result")
            if not isinstance(result, dict) or result.get("resultType") != RESULT_INPUT_REQUIRED:
                return reply
            if call.sink is None:
                raise RpcError(
                    INTERNAL_ERROR, f"member '{target.member_id}' needs client input this connection cannot carry"
                )
            responses: JSON = {}
            for key, request in (result.get("inputRequests") or {}).items():
                answer = await call.sink.request(request.get("method", ""), request.get("params"))
                if "error" in answer:
                    return answer
                responses[key] = answer.get("result", {})
            params = {**params, "inputResponses": responses}
            if "requestState" in result:
                params["requestState"] = result["requestState"]
            reply = await self.pool.request(target.upstream_id, method, params, sink=call.sink, outbound=outbound)
        raise RpcError(
            INTERNAL_ERROR,
            f"member '{target.member_id}' kept asking for input; gave up after {MAX_INPUT_ROUNDS} rounds",
        )


def refusal(exc: OutboundRefused) -> RpcError:
    """A call that may not go upstream with a credential (passthrough audience, forwarded headers...).
    Over streamable HTTP it is answered with HTTP 403 (relay/streamable_http.py)."""
    return RpcError(FORBIDDEN_CREDENTIAL, f"member upstream '{exc.upstream_id}': {exc.reason}")


MAX_INPUT_ROUNDS = 8


def _params_with(params: JSON, **changes: Any) -> JSON:
    """The params to send upstream: renamed, and without the client's 2026-07-28 envelope (the upstream
    session speaks for the gateway with its own). progressToken, logLevel and other _meta stay."""
    out = dict(params)
    out.update(changes)
    meta = out.get("_meta")
    if isinstance(meta, dict) and any(k in meta for k in ENVELOPE_KEYS):
        meta = {k: v for k, v in meta.items() if k not in ENVELOPE_KEYS}
        if meta:
            out["_meta"] = meta
        else:
            del out["_meta"]
    return out


def _with_log_level(params: JSON, level: str) -> JSON:
    """2026-07-28 upstreams log only for requests that opt in; a 2025-11-25 client opted in with
    logging/setLevel (or, by that era's rules, gets what the server sends)."""
    meta = params.get("_meta")
    return {**params, "_meta": {**meta, META_LOG_LEVEL: level} if isinstance(meta, dict) else {META_LOG_LEVEL: level}}


def _lister(kind: str, key: str) -> Callable[[Gateway, Call, JSON], Awaitable[JSON]]:
    """tools/list, prompts/list, resources/list, resources/templates/list: the view's built list."""

    async def handler(gw: Gateway, call: Call, params: JSON) -> JSON:
        built = await call.view.get(kind, credential=gw.credential_for(call))
        if kind == "tools" and call.view.search is not None:  # tool search instead of the tools (tool_search.py)
            revealed = call.session.revealed if call.session is not None else {}
            visible = gw.access.visible(call.principal, call.view, kind, built) if revealed else []
            items = tool_search.listed(visible, revealed, call.view.search.max_results)
        else:
            items = gw.access.visible(call.principal, call.view, kind, built)
        if built.connect_tools:  # members this caller must connect first, shown where a grant gives them
            visible = gw.access.member_visible
            items = items + [t for m, t in built.connect_tools if visible(call.principal, call.view, m)]
        result: JSON = {key: items}
        match call.era:
            case Era.MODERN:
                # Lists differ per caller (grants): never shareable between users.
                result.update(resultType=RESULT_COMPLETE, ttlMs=0, cacheScope="private")
            case Era.HANDSHAKE:
                pass
            case _:
                assert_never(call.era)
        return {"result": result}

    return handler


async def _ping(gw: Gateway, call: Call, params: JSON) -> JSON:
    return {"result": {}}


async def _resolve_granted(gw: Gateway, call: Call, kind: str, name: str) -> Target | None:
    """The target of an exposed name, or None when it does not exist *or the caller may not use it*: a
    denied name must answer exactly like one that does not exist."""
    target = await call.view.resolve(kind, name, gw.credential_for(call))
    if target is None or not gw.access.allows(call.principal, call.view, kind, target):
        return None
    return target


async def _tools_call(gw: Gateway, call: Call, params: JSON) -> JSON:
    name = params.get("name")
    if not isinstance(name, str):
        raise RpcError(INVALID_PARAMS, f"{TOOLS_CALL} needs a string 'name'")
    arguments = params.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        # MCP's arguments are an object. Anything else never reaches an upstream: a lenient one might run it,
        # and an approver would have been shown `{}` for it (found by a security probe).
        raise RpcError(INVALID_PARAMS, f"{TOOLS_CALL} 'arguments' must be an object")
    if call.era is Era.HANDSHAKE and "task" in params:
        # 2025-11-25's experimental task augmentation: the gateway offers tasks to 2026-07-28 clients (relay/tasks.py)
        # and declares none here, so the call runs as an ordinary one. Relayed, the upstream made a task whose
        # id the client could follow nowhere (tasks/get is no method here), its work orphaned (interop).
        params = {k: v for k, v in params.items() if k != "task"}
    started = time.perf_counter()
    if call.view.search is not None and name in TOOL_SEARCH_NAMES:  # relay/tool_search.py
        return await _tool_search(gw, call, name, params, started)
    state = params.get("requestState")
    if auth_required.is_ours(state):
        # A 2026-07-28 client retrying after it was asked to connect an account: the state is ours, not
        # the upstream's, so it is checked here and not sent on.
        gw.inputs.states.check(state, call.principal.id)
        params = {k: v for k, v in params.items() if k not in ("requestState", "inputResponses")}
    policy_began = time.time_ns() if gw.tracing is not None else 0
    target, listed = await call.view.lookup("tools", name, gw.credential_for(call))  # the caller's own list
    if target is None or not gw.access.allows(call.principal, call.view, "tools", target):
        if gw.tracing is not None:
            gw.tracing.policy(policy_began, name, allowed=False)
        failed = call.view.failed_member_for("tools", name, listed) if target is None else None
        if failed is not None and gw.access.member_visible(call.principal, call.view, failed[0]):
            error = call.view.failure_error("tools", failed[0], listed)
            member = Target(failed[0], call.view.by_member[failed[0]].upstream, name)  # for the audit row
            if isinstance(error, AuthRequired):
                gw.audit.call(call, TOOLS_CALL, name, member, "auth_required", started, error.reason)
                return gw.auth_required(call, error, failed[0], tool=True)
            if isinstance(error, OutboundRefused):
                gw.audit.call(call, TOOLS_CALL, name, member, "denied", started, error.reason)
                raise refusal(error) from None
            gw.audit.call(call, TOOLS_CALL, name, None, "error", started, f"member '{failed[0]}' down")
            return tool_error_result(f"Tool '{name}' is unavailable: member '{failed[0]}': {failed[1]}")
        connected = call.view.connect_tool_member(name) if target is None else None  # catalog/view.py
        if connected is not None and gw.access.member_visible(call.principal, call.view, connected):
            upstream_id = call.view.by_member[connected].upstream
            gw.audit.call(call, TOOLS_CALL, name, None, "ok", started, f"already connected to {upstream_id}")
            return {"result": {"content": [{"type": "text", "text": connected_text(upstream_id)}]}}
        gw.audit.call(call, TOOLS_CALL, name, target, "unknown" if target is None else "denied", started, None)
        raise RpcError(INVALID_PARAMS, f"Unknown tool: {name}")
    if gw.tracing is not None:
        gw.tracing.policy(policy_began, name, allowed=True)
    limits = gw.rate_limits
    # policy/rate_limits.py: in memory (no await), or one transaction on PostgreSQL; a task's run was counted
    # when the client asked for it
    if limits.active and not isinstance(call.request_id, TaskRun):
        if limits.shared:
            refused = await limits.take_shared(call.principal, call.view.id, target)
        else:
            refused = limits.take(call.principal, call.view.id, target)
        if refused is not None:
            gw.audit.call(call, TOOLS_CALL, name, target, "rate_limited", started, refused.message)
            raise RpcError(RATE_LIMITED, refused.message, refused.data())
    passed: Passed | None = None
    rule = gw.approvals.rule(call, target) if gw.approvals is not None else None  # approval_gate.py
    if gw.approvals is not None and rule is not None:
        held = await gw.approvals.hold(call, target, name, params, rule)
        if isinstance(held, Held):
            gw.audit.call(call, TOOLS_CALL, name, target, held.outcome, started, held.detail)
            return held.reply
        passed, params = held, held.params
    if call.era is Era.MODERN and gw.tasks.wanted(call, name, listed):  # relay/tasks.py
        runner = partial(_tools_call, gw)
        return await gw.tasks.start(call, params, target, runner, partial(gw.upstream_runs_tasks, call, target))
    try:
        reply = await gw.relay(call, target, TOOLS_CALL, _params_with(params, name=target.name))
    except AuthRequired as exc:
        gw.audit.call(call, TOOLS_CALL, name, target, "auth_required", started, exc.reason)
        return gw.auth_required(call, exc, target.member_id, tool=True)
    except OutboundRefused as exc:
        gw.audit.call(call, TOOLS_CALL, name, target, "denied", started, exc.reason)
        raise refusal(exc) from None
    except UpstreamError as exc:
        # The model sees which member failed and why; other members' tools are unaffected.
        log.warning("tools/call %s: member '%s': %s", name, target.member_id, exc)
        gw.audit.call(call, TOOLS_CALL, name, target, "error", started, str(exc), params.get("arguments"))
        return tool_error_result(f"Tool '{name}' is unavailable: member '{target.member_id}': {exc}")
    except BaseException:
        gw.audit.call(call, TOOLS_CALL, name, target, "error", started, "cancelled or failed")
        raise
    if call.view.namespace:
        result = reply.get("result")
        if isinstance(result, dict) and isinstance(result.get("content"), list):
            reply = {
                **reply,
                "result": {**result, "content": call.view.expose_links(target.member_id, result["content"])},
            }
    outcome = _outcome(reply)
    detail = None if outcome == "ok" else _failure_detail(reply)
    gw.audit.call(call, TOOLS_CALL, name, target, outcome, started, detail, params.get("arguments"))
    if passed is not None and gw.approvals is not None and rule is not None:
        return gw.approvals.continued(call, passed, reply, rule)
    return reply


async def _tool_search(gw: Gateway, call: Call, name: str, params: JSON, started: float) -> JSON:
    """`search_tools` and `call_tool` of a server with tool search on (relay/tool_search.py). A tool called
    through `call_tool` is an ordinary tools/call of that tool: resolved, checked and audited as one."""
    config = call.view.search
    assert config is not None
    if name == CALL_TOOL:
        inner = tool_search.inner_call(params)
        if isinstance(inner, str):
            gw.audit.call(call, TOOLS_CALL, name, None, "tool_error", started, inner)
            return tool_error_result(inner)
        return await _tools_call(gw, call, inner)
    arguments = params.get("arguments")
    query = tool_search.parse_query(arguments, config)
    if isinstance(query, str):
        gw.audit.call(call, TOOLS_CALL, name, None, "tool_error", started, query)
        return tool_error_result(query)
    built = await call.view.get("tools", credential=gw.credential_for(call))
    visible = gw.access.visible(call.principal, call.view, "tools", built)
    found = await tool_search.search(call.view, built, visible, query)
    gw.audit.call(call, TOOLS_CALL, name, None, "ok", started, f"{len(found)} found", arguments)
    session = call.session  # 2025-11-25: found tools join this session's list
    if session is not None and tool_search.reveal(session.revealed, found, config.reveal_max):
        session.listener.push(tool_search.LIST_CHANGED)
    return tool_search.search_result(found)


def _outcome(reply: JSON) -> str:
    if "error" in reply:
        return "error"
    result = reply.get("result")
    if isinstance(result, dict) and result.get("isError"):
        return "tool_error"
    return "ok"


def _failure_detail(reply: JSON) -> str | None:
    """What an audit row says about a failed reply: the JSON-RPC error's message, or a tool error's first
    text, cut to 200 characters: the upstream's own words, as the client saw them."""
    error = reply.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        return str(message)[:200] if message else None
    result = reply.get("result")
    content = result.get("content") if isinstance(result, dict) else None
    if isinstance(content, list):
        for item in content:
            if isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
                return item["text"][:200]
    return None


async def _audited_forward(gw: Gateway, call: Call, method: str, label: str, target: Target, params: JSON) -> JSON:
    started = time.perf_counter()
    try:
        reply = await gw._forward(call, target, method, params)
    except RpcError as exc:
        gw.audit.call(call, method, label, target, "error", started, exc.message)
        raise
    except BaseException:
        gw.audit.call(call, method, label, target, "error", started, "cancelled or failed")
        raise
    outcome = _outcome(reply)
    gw.audit.call(call, method, label, target, outcome, started, None if outcome == "ok" else _failure_detail(reply))
    return reply


async def _within_limits(gw: Gateway, call: Call, method: str, label: str, target: Target, kind: ItemKind) -> None:
    """Take this request's tokens (policy/rate_limits.py), or refuse it as tools/call is refused: the JSON-RPC
    error with its retry hint (HTTP 429 on a POST's JSON answer), audited `rate_limited`, nothing sent upstream.
    For a request other than tools/call; the caller reads `gw.rate_limits.active` first (no rules: nothing more)."""
    limits = gw.rate_limits
    started = time.perf_counter()
    if limits.shared:
        refused = await limits.take_shared(call.principal, call.view.id, target, kind)
    else:
        refused = limits.take(call.principal, call.view.id, target, kind)
    if refused is not None:
        gw.audit.call(call, method, label, target, "rate_limited", started, refused.message)
        raise RpcError(RATE_LIMITED, refused.message, refused.data())


async def _prompts_get(gw: Gateway, call: Call, params: JSON) -> JSON:
    name = params.get("name")
    if not isinstance(name, str):
        raise RpcError(INVALID_PARAMS, f"{PROMPTS_GET} needs a string 'name'")
    target = await call.view.resolve("prompts", name, gw.credential_for(call))
    if target is None or not gw.access.allows(call.principal, call.view, "prompts", target):
        outcome = "unknown" if target is None else "denied"
        gw.audit.call(call, PROMPTS_GET, name, target, outcome, time.perf_counter(), None)
        raise RpcError(INVALID_PARAMS, f"Unknown prompt: {name}")
    if gw.rate_limits.active:
        await _within_limits(gw, call, PROMPTS_GET, name, target, ItemKind.PROMPTS)
    reply = await _audited_forward(gw, call, PROMPTS_GET, name, target, _params_with(params, name=target.name))
    result = reply.get("result")
    if call.view.namespace and isinstance(result, dict) and isinstance(messages := result.get("messages"), list):
        exposed = [
            {**m, "content": call.view.expose_links(target.member_id, m["content"])}
            if isinstance(m, dict) and "content" in m
            else m
            for m in messages
        ]
        reply = {**reply, "result": {**result, "messages": exposed}}
    return reply


async def _resource_target(gw: Gateway, call: Call, params: JSON, *, audit: bool = False) -> tuple[str, Target]:
    uri = params.get("uri")
    if not isinstance(uri, str):
        raise RpcError(INVALID_PARAMS, "a string 'uri' is required")
    target = await call.view.resolve_uri_for(uri, gw.credential_for(call))
    if target is None or not gw.access.allows(call.principal, call.view, "resources", target):
        if audit:
            outcome = "unknown" if target is None else "denied"
            gw.audit.call(call, RESOURCES_READ, uri, target, outcome, time.perf_counter(), None)
        raise RpcError(RESOURCE_NOT_FOUND, "Resource not found", {"uri": uri})
    return uri, target


async def _resources_read(gw: Gateway, call: Call, params: JSON) -> JSON:
    uri, target = await _resource_target(gw, call, params, audit=True)
    if gw.rate_limits.active:
        await _within_limits(gw, call, RESOURCES_READ, uri, target, ItemKind.RESOURCES)
    reply = await _audited_forward(gw, call, RESOURCES_READ, uri, target, _params_with(params, uri=target.name))
    result = reply.get("result")
    if isinstance(result, dict) and isinstance(result.get("contents"), list) and call.view.namespace:
        # Contents name the upstream's URIs; show them as the client asked for them.
        contents = []
        for c in result["contents"]:
            if isinstance(c, dict) and isinstance(c.get("uri"), str):
                c = {**c, "uri": call.view.expose_uri(target.member_id, c["uri"])}
            contents.append(c)
        reply = {"result": {**result, "contents": contents}}
    return reply


async def _resources_subscribe(gw: Gateway, call: Call, params: JSON) -> JSON:
    uri, target = await _resource_target(gw, call, params)
    if call.listener is None:
        raise RpcError(INVALID_PARAMS, "resource subscriptions need a session (or subscriptions/listen in 2026-07-28)")
    if gw.rate_limits.active:  # counted even when the upstream subscription exists already (one request each)
        await _within_limits(gw, call, RESOURCES_SUBSCRIBE, uri, target, ItemKind.RESOURCES)
    return await gw.subscribe(call, target, call.listener, uri)


async def _resources_unsubscribe(gw: Gateway, call: Call, params: JSON) -> JSON:
    uri, target = await _resource_target(gw, call, params)
    if call.listener is not None:  # whatever credential it was subscribed with
        subscribed = call.listener.resources
        for key in [k for k in subscribed if k[0] == target.upstream_id and k[2] == target.name]:
            del subscribed[key]
    try:
        outbound = await gw.outbound(call, target.member_id, target.upstream_id)
        if gw.hub.subscribers((target.upstream_id, outbound.identity, target.name)) == 0:
            session = await gw.pool.session(target.upstream_id, outbound)
            await session.unsubscribe_resource(target.name)
    except (UpstreamError, AuthRequired, OutboundRefused) as exc:
        log.info("unsubscribe %s: member '%s': %s", uri, target.member_id, exc)
    return {"result": {}}


async def _complete(gw: Gateway, call: Call, params: JSON) -> JSON:
    ref = params.get("ref")
    if not isinstance(ref, dict):
        raise RpcError(INVALID_PARAMS, f"{COMPLETION_COMPLETE} needs a 'ref'")
    if ref.get("type") == REF_PROMPT:
        label = str(ref.get("name"))
        target = await _resolve_granted(gw, call, "prompts", label)
        if target is None:
            raise RpcError(INVALID_PARAMS, f"Unknown prompt: {label}")
        new_ref, kind = {**ref, "name": target.name}, ItemKind.PROMPTS
    elif ref.get("type") == REF_RESOURCE:
        label = str(ref.get("uri"))
        target = await call.view.resolve_uri_for(label, gw.credential_for(call))
        if target is None or not gw.access.allows(call.principal, call.view, "resources", target):
            raise RpcError(INVALID_PARAMS, f"Unknown resource: {label}")
        new_ref, kind = {**ref, "uri": target.name}, ItemKind.RESOURCES
    else:
        raise RpcError(INVALID_PARAMS, f"ref.type must be {REF_PROMPT} or {REF_RESOURCE}")
    if gw.rate_limits.active:  # counted against the prompt or resource it completes
        await _within_limits(gw, call, COMPLETION_COMPLETE, label, target, kind)
    return await gw._forward(call, target, COMPLETION_COMPLETE, _params_with(params, ref=new_ref))


async def _set_level(gw: Gateway, call: Call, params: JSON) -> JSON:
    # Upstream sessions are shared between clients, so the level is applied per client by the gateway
    # (relay.streamable_http filters notifications/message) rather than sent upstream.
    level = params.get("level")
    if level not in LOG_LEVELS:
        raise RpcError(INVALID_PARAMS, f"level must be one of {', '.join(LOG_LEVELS)}")
    if call.session is not None:
        call.session.log_level = level
    return {"result": {}}


def _task_method(
    name: str, method: Callable[[Tasks, Call, JSON, Forward], Awaitable[JSON]]
) -> Callable[[Gateway, Call, JSON], Awaitable[JSON]]:
    async def handler(gw: Gateway, call: Call, params: JSON) -> JSON:
        if call.era is not Era.MODERN:  # the extension is 2026-07-28's
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {name}")
        return await method(gw.tasks, call, params, gw._forward)

    return handler


HANDLERS: dict[str, Callable[[Gateway, Call, JSON], Awaitable[JSON]]] = {
    PING: _ping,
    TOOLS_LIST: _lister("tools", "tools"),
    TOOLS_CALL: _tools_call,
    PROMPTS_LIST: _lister("prompts", "prompts"),
    PROMPTS_GET: _prompts_get,
    RESOURCES_LIST: _lister("resources", "resources"),
    RESOURCES_TEMPLATES_LIST: _lister("resource_templates", "resourceTemplates"),
    RESOURCES_READ: _resources_read,
    RESOURCES_SUBSCRIBE: _resources_subscribe,
    RESOURCES_UNSUBSCRIBE: _resources_unsubscribe,
    COMPLETION_COMPLETE: _complete,
    LOGGING_SET_LEVEL: _set_level,
    TASKS_GET: _task_method(TASKS_GET, Tasks.get),
    TASKS_UPDATE: _task_method(TASKS_UPDATE, Tasks.update),
    TASKS_CANCEL: _task_method(TASKS_CANCEL, Tasks.cancel),
}
