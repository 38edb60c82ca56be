"""The MCP protocol vocabulary, in one place: versions and eras, `_meta` keys, JSON-RPC and MCP error codes,
log levels and method names. Every other module names these through here, so a new protocol version is one
edit. Plain constants (not enums) where they meet the wire: they are compared against and used as keys of
the strings parsed from a message, on every relayed call.
"""

from __future__ import annotations

import enum

# ---- versions and eras ------------------------------------------------------------------------------------

MODERN_VERSION = "2026-07-28"
MODERN_VERSIONS = (MODERN_VERSION,)
# Handshake-era versions we accept in `initialize`, newest first.
HANDSHAKE_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_HANDSHAKE = HANDSHAKE_VERSIONS[0]
# The legacy HTTP+SSE transport (/sse/{server}) belongs to this version.
LEGACY_SSE_VERSION = HANDSHAKE_VERSIONS[-1]


class Era(enum.Enum):
    """Which MCP protocol generation a client or an upstream speaks. Each member's value is the newest
    version of that era."""

    HANDSHAKE = LATEST_HANDSHAKE  # initialize + Mcp-Session-Id (also covers 2025-06-18 and older)
    MODERN = MODERN_VERSION  # sessionless, server/discover, per-request _meta


# ---- _meta keys -------------------------------------------------------------------------------------------

META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
# The per-request envelope a 2026-07-28 sender puts in `params._meta`: it speaks for the sender only, so the
# gateway never forwards a client's envelope upstream (the upstream session stamps its own).
ENVELOPE_KEYS = (META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES, META_CLIENT_INFO)

# ---- result types (2026-07-28 `resultType`) ---------------------------------------------------------------

RESULT_COMPLETE = "complete"
RESULT_INPUT_REQUIRED = "input_required"

# ---- JSON-RPC / MCP error codes ---------------------------------------------------------------------------

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REQUEST_CANCELLED = -32800
REQUEST_TIMEOUT = -32001  # the other side did not answer in time (the SDK's code for it)
RESOURCE_NOT_FOUND = -32002
# Implementation-defined server error: the outbound credential was refused (answered with HTTP 403).
FORBIDDEN_CREDENTIAL = -32003
# Implementation-defined server error: the caller reached one of its limits (sessions, streams); HTTP 429.
LIMIT_REACHED = -32004
# Implementation-defined server error: over a rate limit or quota (docs/rate-limits.md); `data.retryAfter` is
# the seconds to wait; a POST's JSON answer is HTTP 429 with Retry-After.
RATE_LIMITED = -32029
HEADER_MISMATCH = -32020
MISSING_CLIENT_CAPABILITY = -32021
UNSUPPORTED_PROTOCOL_VERSION = -32022
URL_ELICITATION_REQUIRED = -32042

# ---- logging ----------------------------------------------------------------------------------------------

# RFC 5424 severities, least severe first: a level lets through itself and everything after it.
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")

# ---- method names -----------------------------------------------------------------------------------------

INITIALIZE = "initialize"
PING = "ping"
SERVER_DISCOVER = "server/discover"
SUBSCRIPTIONS_LISTEN = "subscriptions/listen"
TOOLS_LIST = "tools/list"
TOOLS_CALL = "tools/call"
PROMPTS_LIST = "prompts/list"
PROMPTS_GET = "prompts/get"
RESOURCES_LIST = "resources/list"
RESOURCES_TEMPLATES_LIST = "resources/templates/list"
RESOURCES_READ = "resources/read"
RESOURCES_SUBSCRIBE = "resources/subscribe"
RESOURCES_UNSUBSCRIBE = "resources/unsubscribe"
COMPLETION_COMPLETE = "completion/complete"
LOGGING_SET_LEVEL = "logging/setLevel"

# completion/complete reference types
REF_PROMPT = "ref/prompt"
REF_RESOURCE = "ref/resource"

# server → client requests
SAMPLING_CREATE_MESSAGE = "sampling/createMessage"
ELICITATION_CREATE = "elicitation/create"
# A URL-mode elicitation finished out of band (2025-11-25): the client may retry what it was asked for.
ELICITATION_COMPLETE = "notifications/elicitation/complete"
ROOTS_LIST = "roots/list"
# The client capability a server→client request needs.
CAPABILITY_FOR = {SAMPLING_CREATE_MESSAGE: "sampling", ELICITATION_CREATE: "elicitation", ROOTS_LIST: "roots"}

# notifications
INITIALIZED = "notifications/initialized"
CANCELLED = "notifications/cancelled"
ROOTS_LIST_CHANGED = "notifications/roots/list_changed"
PROGRESS = "notifications/progress"
LOG_MESSAGE = "notifications/message"
RESOURCES_UPDATED = "notifications/resources/updated"
SUBSCRIPTIONS_ACKNOWLEDGED = "notifications/subscriptions/acknowledged"
TOOLS_LIST_CHANGED = "notifications/tools/list_changed"
PROMPTS_LIST_CHANGED = "notifications/prompts/list_changed"
RESOURCES_LIST_CHANGED = "notifications/resources/list_changed"

# Which list a list_changed notification is about, and the other way round.
LIST_CHANGED = {
    TOOLS_LIST_CHANGED: "tools",
    PROMPTS_LIST_CHANGED: "prompts",
    RESOURCES_LIST_CHANGED: "resources",
}
LIST_CHANGED_NOTIFICATION = {kind: method for method, kind in LIST_CHANGED.items()}
# The `subscriptions/listen` flag that asks for each list's list_changed notifications.
LISTEN_FLAGS = {"tools": "toolsListChanged", "prompts": "promptsListChanged", "resources": "resourcesListChanged"}

# Methods of the handshake era that 2026-07-28 removed: a 2026-07-28 request for one is an unknown method.
REMOVED_IN_MODERN = frozenset({INITIALIZE, PING, LOGGING_SET_LEVEL, RESOURCES_SUBSCRIBE, RESOURCES_UNSUBSCRIBE})
# Result members only 2026-07-28 defines: never shown to a client of the handshake era.
MODERN_RESULT_FIELDS = frozenset({"resultType", "ttlMs", "cacheScope"})

# ---- tasks (SEP-2663, the io.modelcontextprotocol/tasks extension of 2026-07-28) ---------------------------

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
TASKS_GET = "tasks/get"
TASKS_UPDATE = "tasks/update"
TASKS_CANCEL = "tasks/cancel"
RESULT_TASK = "task"  # the `resultType` of a CreateTaskResult
# A tool's `execution.taskSupport` values that let it run as a task ("forbidden" or absent: never).
TASK_SUPPORT_OPTIONAL = "optional"
TASK_SUPPORT_REQUIRED = "required"
