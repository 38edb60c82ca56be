"""`Call`: everything a handler needs to know about one client request. Its own module because the seams
(relay/access.py) and the handlers (relay/handlers.py) both name it, and neither should import the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from manifold.catalog.view import Credential, VirtualServerView
from manifold.principal import ANONYMOUS, Principal
from manifold.protocol import Era
from manifold.relay.hub import Listener
from manifold.relay.sessions import ClientSession
from manifold.upstream.base import RequestSink

JSON = dict[str, Any]


@dataclass
class Call:
    view: VirtualServerView
    era: Era  # the client's: which form replies take and who answers an upstream's input_required
    client_capabilities: JSON
    sink: RequestSink | None = None
    listener: Listener | None = None  # the client session's notification listener (2025-11-25 sessions)
    session: ClientSession | None = None  # 2025-11-25 stateful clients
    principal: Principal = ANONYMOUS
    request_id: Any = None  # the client's JSON-RPC id (audit)
    forwarded_raw: str | None = None  # the client's x-mcp-headers (outbound/forwarded.py)
    # handlers.Gateway.credential_for's, made on first use: each member's credential resolved once per request
    credential: Credential | None = field(default=None, compare=False, repr=False)
