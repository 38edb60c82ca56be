"""The composition root: builds every service of a running gateway in dependency order, each handed what
it needs in its constructor, and owns their lifetime.

`compose` is synchronous and touches nothing outside the process (no connection, no file written): the
database engine connects on first use, so the whole graph can be built before the event loop runs and
handed to any ASGI server. `Runtime.start` (the ASGI lifespan's startup) then loads what the services
serve from — schema, key check, keys, principals, grants, catalog — and starts the background tasks;
`Runtime.aclose` stops them in reverse order.

Build order (each line uses only what is above it):

    config ─ engine ─ cipher, secrets, vault/links/flows/broker (outbound credentials)
           ─ keys, directory, IdPs ─ authenticator
           ─ grants, policy access ─ audit log ─ audit recorder
           ─ notices ─ pool ─ lists ─ served views ─ hub ─ credential resolver ─ gateway (the relay's state)
           ─ sessions, pending replies ─ catalog swap ─ change sync
           ─ faces: streamable HTTP, legacy SSE, admin API, web pages ─ the ASGI app
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from manifold.admin.api import AdminApi
from manifold.admin.catalog import CatalogOperations
from manifold.admin.catalog_secrets import CatalogSecrets
from manifold.admin.ops import Operations
from manifold.admin.rate_limits import RateLimitAdmin
from manifold.app import ManifoldApp
from manifold.audit import AuditLog
from manifold.audit.unauthorized import UnauthorizedAudit
from manifold.authserver.clients import ClientRegistry
from manifold.authserver.routes import AuthorizationServerApp
from manifold.authserver.store import AuthStore
from manifold.catalog.lists import UpstreamLists
from manifold.catalog.pin_store import PinStore
from manifold.catalog.pinning import ToolPins
from manifold.catalog.served import ServedServers
from manifold.catalog.view import VirtualServerView
from manifold.config.loader import LoadedConfig, load_config
from manifold.config.models import PinningMode, per_caller_lists
from manifold.console.app import ConsoleApp
from manifold.console.frame import Services as ConsoleServices
from manifold.identity.api_keys import KeyRepository
from manifold.identity.authenticator import Authenticator
from manifold.identity.directory import Directory
from manifold.identity.gateway_tokens import GatewayTokens
from manifold.identity.idp_jwt import IdpRegistry
from manifold.outbound.exchange import TokenExchanger
from manifold.outbound.oauth import tables as _oauth_tables  # noqa: F401 — registers its tables on metadata
from manifold.outbound.oauth.broker import OAuthBroker
from manifold.outbound.oauth.client import OAuthFlows
from manifold.outbound.oauth.discovery import Fetcher
from manifold.outbound.oauth.links import ConnectLinks
from manifold.outbound.oauth.vault import Vault
from manifold.outbound.resolver import CredentialResolver
from manifold.policy.access import PolicyAccess
from manifold.policy.approval_store import ApprovalStore
from manifold.policy.approvals import Approvals
from manifold.policy.rate_limit_store import RateLimitRepository, SharedBuckets
from manifold.policy.rate_limits import RateLimits
from manifold.policy.store import GrantRepository, StoredGrant, file_grants
from manifold.relay.approval_gate import ApprovalGate
from manifold.relay.auth_required import RequestStates
from manifold.relay.handlers import Gateway
from manifold.relay.hub import Hub, Listener
from manifold.relay.inbound import InboundCheck
from manifold.relay.input_exchange import InputExchanges
from manifold.relay.sessions import EndedSessions, PendingReplies, SessionSeal, SessionStore
from manifold.relay.sse import LegacySse
from manifold.relay.streamable_http import StreamableHttp
from manifold.relay.tasks import Tasks
from manifold.runtime.audit_recorder import AuditRecorder
from manifold.runtime.catalog_swap import CatalogSwap, pool_config
from manifold.runtime.changes import ChangeSync
from manifold.runtime.file_watch import ConfigFileWatch
from manifold.runtime.telemetry import (
    CountingUnauthorized,
    ObservedAuditor,
    Telemetry,
    admin_check,
    make_telemetry,
    metrics_endpoint,
    register_gauges,
)
from manifold.security.crypto import Cipher
from manifold.security.origin import OriginPolicy
from manifold.security.secret_store import SecretStore
from manifold.security.signing import SigningKeys
from manifold.store.db import connect, create_schema
from manifold.store.revisions import RevisionWatcher
from manifold.upstream.notices import UpstreamNotices
from manifold.upstream.pool import UpstreamPool
from manifold.web.routes import WebApp

log = logging.getLogger(__name__)
LAST_USED_FLUSH_SECONDS = 15.0


@dataclass(frozen=True, eq=False)
class Runtime:
    """Every service of one running gateway (tests and benchmarks reach in here too)."""

    config: LoadedConfig
    dev_key: str | None
    engine: AsyncEngine
    cipher: Cipher
    secrets: SecretStore
    broker: OAuthBroker
    flows: OAuthFlows
    vault: Vault
    keys: KeyRepository
    directory: Directory
    idps: IdpRegistry | None
    authenticator: Authenticator
    grants: GrantRepository
    access: PolicyAccess
    audit_log: AuditLog
    notices: UpstreamNotices
    pool: UpstreamPool
    lists: UpstreamLists
    pins: ToolPins  # tool pinning (docs/pinning.md); held_count() for /metrics
    served: ServedServers
    hub: Hub
    exchanger: TokenExchanger
    gateway: Gateway
    sessions: SessionStore
    catalog: CatalogSwap
    watcher: RevisionWatcher
    changes: ChangeSync
    credentials: CredentialResolver
    links: ConnectLinks
    pending: PendingReplies
    catalog_operations: CatalogOperations
    signing: SigningKeys
    auth_store: AuthStore
    oauth_clients: ClientRegistry
    client_fetcher: Fetcher
    public_base: str
    tasks: set[asyncio.Task[None]]
    telemetry: Telemetry  # metrics (None: off; other features count through it), tracing, log format
    file_watch: ConfigFileWatch | None  # the configuration files, applied while running (None: watch_files off)

    async def start(self) -> None:
        """Load what the services serve from and start the background tasks. A wrong encryption key stops
        here with a clear message, before anything is read or written with it."""
        config = self.config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        await create_schema(self.engine)
        await self.cipher.check(self.engine)
        await self.secrets.load()
        if self.dev_key:
            await self.keys.register_dev_key(self.dev_key)
        await self.directory.load()
        await self.watcher.prime()
        await self.audit_log.start()
        await self.catalog.reload()  # also loads the grants (upstreams, groups, virtual servers from the API)
        await self.gateway.rate_limits.reload()
        self._spawn(self.changes.watch())
        if self.file_watch is not None:
            self._spawn(self.file_watch.run())
        self._spawn(self.hub.run(self.notices))
        self._spawn(self._flush_last_used())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _flush_last_used(self) -> None:
        while True:
            await asyncio.sleep(LAST_USED_FLUSH_SECONDS)
            await self.authenticator.flush_last_used()

    def end_streams(self, spare: AbstractSet[Listener] = frozenset()) -> None:
        """The server is stopping: every held client stream (2025-11-25 GET, 2026-07-28 listen, legacy /sse)
        ends once what is queued on it is written, so its connection can close (runtime/server.py). `spare`:
        legacy /sse streams whose requests are still running; their transport ends them after the replies."""
        self.hub.close_all(spare)

    async def aclose(self) -> None:
        """Stop in reverse order: streams, background tasks, then what holds files and connections."""
        self.hub.close_all()
        self.sessions.close_all()
        self.gateway.tasks.close()  # running tasks: their upstream calls are cancelled
        self.gateway.inputs.close()  # parked calls: their upstream requests are answered and cancelled
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.changes.aclose()
        await self.authenticator.flush_last_used()
        await self.audit_log.aclose()
        await self.exchanger.aclose()
        await self.flows.aclose()
        await self.client_fetcher.aclose()
        if self.idps is not None:
            await self.idps.aclose()
        self.watcher.close()
        await self.pool.aclose()
        await self.telemetry.aclose()
        await self.engine.dispose()


def compose(config: LoadedConfig, *, dev_key: str | None, public_base: str) -> Runtime:
    """Build the gateway for `config`. `public_base` is the origin clients reach it at (connect links)."""
    settings = config.settings
    identity = config.gateway.identity
    engine = connect(config.database_url)
    telemetry = make_telemetry(config)  # docs/telemetry.md: metrics, traces, log format
    metrics = telemetry.metrics

    # Outbound credentials: the gateway's cipher and secret store, then per-user OAuth over them.
    cipher = Cipher.load(config.state_dir)
    secrets = SecretStore(engine, cipher)
    links = ConnectLinks.from_cipher(cipher)
    flows = OAuthFlows(engine, cipher, secret=secrets.lookup)
    vault = Vault(engine, cipher)  # each user's stored tokens
    broker = OAuthBroker(
        vault,
        links,
        flows,
        lambda: public_base,
        on_refresh=None if metrics is None else lambda upstream, ok: metrics.oauth_refresh(upstream, ok=ok),
    )

    # Inbound: who is calling (API keys, IdP tokens, the access tokens of the gateway's own authorization
    # server, signed with keys derived from the cipher's).
    keys = KeyRepository(engine)
    directory = Directory(engine, config.gateway)
    idps = IdpRegistry(dict(identity.idps)) if identity.idps else None
    signing = SigningKeys(cipher)
    authenticator = Authenticator(
        keys,
        directory,
        idps,
        cache_seconds=identity.cache_seconds,
        allow_unauthenticated=settings.allow_unauthenticated,
        gateway_tokens=GatewayTokens(signing, engine) if identity.authorization_server.enabled else None,
    )
    auth_store = AuthStore(engine)
    client_fetcher = Fetcher()  # Client ID Metadata Documents, under the outbound SSRF rules
    oauth_clients = ClientRegistry(identity.authorization_server, auth_store, client_fetcher, secrets.lookup)

    # Decisions: grants and the audit trail.
    grants = GrantRepository(engine)

    async def stored_grants() -> list[StoredGrant]:
        # The files' grants as last applied (they may change while running: runtime/file_watch.py).
        return file_grants(catalog.files.gateway.grants) + await grants.list()

    access = PolicyAccess(config)
    audit_log = AuditLog(engine if config.gateway.audit.enabled else None, config.gateway.audit, config.state_dir)
    auditor = AuditRecorder(audit_log) if metrics is None else ObservedAuditor(AuditRecorder(audit_log), metrics)

    # What is served: upstream sessions, their lists, the virtual servers over them.
    notices = UpstreamNotices()
    pool = UpstreamPool(
        {uid: pool_config(config, uid, u) for uid, u in config.upstreams.items()},
        notices.post,
        tracing=telemetry.tracing,
    )
    pins = ToolPins(
        PinStore(engine, audit=config.gateway.audit.enabled),
        lambda uid: u.pinning if (u := pool.config(uid)) is not None else PinningMode.OFF,
        audit_log.record,
    )
    lists = UpstreamLists(
        pool,
        settings.tool_list_ttl_seconds,
        pins,
        per_caller=lambda uid: (u := pool.config(uid)) is not None and per_caller_lists(u),
    )
    pool.on_renewed = lists.invalidate  # an upstream that restarted is listed again, not served from before
    pool.on_reconfigured = lists.reconfigured  # its lists may be per caller now, or shared
    served = ServedServers(
        {
            sid: VirtualServerView(sid, vs, lists, config.separator_for(vs))
            for sid, vs in config.served_servers().items()
        }
    )
    hub = Hub(lists, access)
    # Connecting or revoking changes that user's lists: theirs are fetched again (another account's, maybe), and
    # their streams told.
    flows.add_listener(lists.connection_changed)
    flows.add_listener(hub.connection_changed)
    exchanger = TokenExchanger(secret=secrets.lookup)
    credentials = CredentialResolver(secret=secrets.lookup, oauth=broker, exchange=exchanger)
    inputs = InputExchanges(
        reply_timeout=settings.limits.client_reply_seconds,
        per_principal=settings.limits.waiting_for_input_per_principal,
        states=RequestStates.from_cipher(cipher),  # every replica accepts every replica's requestState
    )
    rate_limits = RateLimits(  # docs/rate-limits.md
        config.gateway.rate_limits,
        RateLimitRepository(engine),
        catalog=lambda: access.policy,
        shared=SharedBuckets(engine) if engine.dialect.name == "postgresql" else None,  # one budget for all replicas
        max_buckets=settings.limits.rate_limit_buckets,
    )
    gateway = Gateway(
        pool=pool,
        rate_limits=rate_limits,
        hub=hub,
        access=access,
        audit=auditor,
        credentials=credentials,
        inputs=inputs,
        tracing=telemetry.tracing,
        instructions_pinned=pins.instructions_allowed,
        # held tool calls wait for a human approver (docs/approvals.md); requests live in the database
        approvals=ApprovalGate(
            Approvals(
                ApprovalStore(engine), audit_log.record, max_pending=settings.limits.approvals_pending_per_principal
            ),
            lambda: access.policy,
            inputs.states,
            lambda: public_base,
        ),
        tasks=Tasks(
            per_principal=settings.limits.tasks_per_principal,
            retention_seconds=settings.limits.task_retention_seconds,
            reply_timeout=settings.limits.client_reply_seconds,
            inputs=inputs,
        ),
    )
    # Session ids sealed with a key derived from the secret key: any replica can serve them (docs/replicas.md).
    sessions = SessionStore(hub, settings.limits, seal=SessionSeal.from_cipher(cipher), ended=EndedSessions(engine))
    pending = PendingReplies()  # server→client requests waiting for the client's answer
    if metrics is not None:
        register_gauges(metrics, pool, sessions, hub, audit_log)
        metrics.add_gauge(
            "manifold_tools_held",
            "upstream tools held out until an admin approves their changed definition (docs/pinning.md)",
            (),
            lambda: [((), float(pins.held_count()))],
        )

    # Keeping all of it in step with the database.
    catalog_operations = CatalogOperations(engine, config, secrets=CatalogSecrets(secrets))
    catalog = CatalogSwap(config, catalog_operations, stored_grants, pool, lists, served, access, hub)
    watcher = RevisionWatcher(engine, config.database_url)
    changes = ChangeSync(
        watcher,
        directory,
        authenticator,
        stored_grants,
        access,
        catalog,
        broker,
        secrets,
        credentials,
        hub,
        sessions,
        served,
        rate_limits=rate_limits,
    )

    runtime = Runtime(
        config=config,
        dev_key=dev_key,
        engine=engine,
        cipher=cipher,
        secrets=secrets,
        broker=broker,
        flows=flows,
        vault=vault,
        keys=keys,
        directory=directory,
        idps=idps,
        authenticator=authenticator,
        grants=grants,
        access=access,
        audit_log=audit_log,
        notices=notices,
        pool=pool,
        lists=lists,
        pins=pins,
        served=served,
        hub=hub,
        exchanger=exchanger,
        gateway=gateway,
        sessions=sessions,
        catalog=catalog,
        watcher=watcher,
        changes=changes,
        credentials=credentials,
        links=links,
        pending=pending,
        catalog_operations=catalog_operations,
        signing=signing,
        auth_store=auth_store,
        oauth_clients=oauth_clients,
        client_fetcher=client_fetcher,
        public_base=public_base,
        tasks=set(),
        telemetry=telemetry,
        file_watch=ConfigFileWatch(config, load_config, catalog.use_files) if settings.watch_files else None,
    )
    return runtime


def build_app(runtime: Runtime) -> ManifoldApp:
    """The faces over a composed runtime, and the ASGI app that routes to them (its lifespan starts and
    stops the runtime)."""
    config, settings = runtime.config, runtime.config.settings
    metrics = runtime.telemetry.metrics
    # refused credentials, rate-limited, for both faces (and counted by reason when metrics are on)
    unauthorized = (
        UnauthorizedAudit(runtime.audit_log) if metrics is None else CountingUnauthorized(runtime.audit_log, metrics)
    )
    admin = AdminApi(
        config,
        runtime.authenticator,
        Operations(runtime.engine, config, apps=runtime.auth_store, flows=runtime.flows),
        runtime.catalog_operations,
        runtime.catalog,
        runtime.audit_log,
        unauthorized,
        rate_limits=RateLimitAdmin(runtime.gateway.rate_limits, RateLimitRepository(runtime.engine)),
    )

    def files_changed(files: LoadedConfig) -> None:  # the grants the API and the console list are the files' own
        admin.config = files
        admin.ops.config = files

    runtime.catalog.on_files.append(files_changed)
    web = WebApp(
        settings=settings,
        identity=config.gateway.identity,
        keys=runtime.keys,
        authenticator=runtime.authenticator,
        engine=runtime.engine,
        cipher=runtime.cipher,
        secrets=runtime.secrets,
        links=runtime.links,
        flows=runtime.flows,
        vault=runtime.vault,
        upstream_config=runtime.pool.config,
        sync=runtime.changes.sync,
        served=runtime.served,
        access=runtime.access,
        apps=runtime.auth_store,
        approvals=runtime.gateway.approvals.approvals if runtime.gateway.approvals is not None else None,
    )
    authorization_server = AuthorizationServerApp(
        settings=settings,
        server_settings=config.gateway.identity.authorization_server,
        store=runtime.auth_store,
        clients=runtime.oauth_clients,
        signing=runtime.signing,
        keys=runtime.keys,
        cookies=web.cookies,  # one sign-in session for the pages, the authorization server and the console
        known_server=runtime.served.__contains__,
        may_use_server=web.may_use_server,
        sync=runtime.changes.sync,
    )
    # One validator of what clients send, shared by both MCP transports.
    inbound = InboundCheck(id_length=settings.limits.id_length, json_depth=settings.limits.json_depth)
    return ManifoldApp(
        config,
        origin=OriginPolicy.from_settings(settings),
        authenticator=runtime.authenticator,
        served=runtime.served,
        access=runtime.access,
        auditor=runtime.gateway.audit,
        unauthorized=unauthorized,
        changes=runtime.changes,
        pool=runtime.pool,
        http=StreamableHttp(
            runtime.gateway, runtime.sessions, runtime.pending, stateless=settings.stateless, inbound=inbound
        ),
        sse=LegacySse(
            runtime.gateway,
            runtime.sessions,
            runtime.pending,
            inbound=inbound,
            in_flight_per_session=settings.limits.requests_in_flight_per_sse_session,
            in_flight_bytes_per_session=settings.limits.queued_bytes_per_stream,
        ),
        admin=admin,
        web=web,
        lifecycle=runtime,
        metrics=None
        if metrics is None
        else metrics_endpoint(
            config,
            metrics,
            runtime.secrets,
            admin_check(runtime.authenticator, config.gateway.identity.admins, unauthorized),
        ),
        tracing=runtime.telemetry.tracing,
        json_logs=runtime.telemetry.json_logs,
        authorization_server=authorization_server,
        console=ConsoleApp(
            ConsoleServices(
                settings=settings,
                admins=config.gateway.identity.admins,
                cookies=web.cookies,
                keys=runtime.keys,
                directory=lambda: runtime.authenticator.directory.snapshot,
                admin=admin,
                catalog_ops=runtime.catalog_operations,
                health=runtime.pool,
                lists=runtime.lists,
                sync=runtime.changes.sync,
                engine=runtime.engine,
                vault=runtime.vault,
                credential_of=runtime.gateway.credential_of,
            )
        ),
    )
