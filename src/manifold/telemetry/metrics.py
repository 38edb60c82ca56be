"""Prometheus metrics of one gateway: a `Metrics` object made by the composition root and handed to whoever
counts. Two kinds of series:

- **counted as things happen**: calls and their latency per (server, member, tool), auth failures by reason,
  OAuth refreshes. A call costs one histogram observe and one counter increment on label children cached per
  (server, member, tool[, outcome]); nothing else on the hot path.
- **read at scrape time** (`add_gauge`): upstream state, pool sizes, client sessions, audit queue depth.
  The readers are callables over the services' own state, so nothing is updated per call.

Cardinality is bounded: tool labels come only from tools the served catalog resolved (an unknown name counts
under `tool="other"`), and at most `max_tool_series` (server, member, tool) sets are kept; past it new ones
count under `tool="other"` too. Other features add their own counters with `counter(...)` (docs/telemetry.md).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
OTHER = "other"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: from a fast local tool to a slow remote one.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Why a credential was refused: the messages of identity/authenticator.py mapped onto a fixed set.
_AUTH_REASONS = (
    ("missing", re.compile(r"^missing")),
    ("malformed", re.compile(r"malformed|must be 'Bearer")),
    ("expired", re.compile(r"expired")),
    ("revoked", re.compile(r"revoked|disabled")),
    ("wrong_audience", re.compile(r"another server|audience")),
    ("wrong_endpoint", re.compile(r"only for|MCP endpoints")),
)

# (labels, value) pairs of one gauge, read at scrape time.
GaugeReader = Callable[[], Iterable[tuple[Sequence[str], float]]]


def auth_reason(reason: str, *, missing: bool) -> str:
    """A bounded label for a refused credential's reason (the client's message is free text)."""
    if missing:
        return "missing"
    for label, pattern in _AUTH_REASONS:
        if pattern.search(reason):
            return label
    return "invalid"


class _Gauges(Collector):
    """The gauges read at scrape time from the services' own state."""

    def __init__(self) -> None:
        self._gauges: list[tuple[str, str, tuple[str, ...], GaugeReader]] = []

    def add(self, name: str, documentation: str, labels: Sequence[str], read: GaugeReader) -> None:
        self._gauges.append((name, documentation, tuple(labels), read))

    def collect(self) -> Iterator[Metric]:
        for name, documentation, labels, read in self._gauges:
            family = GaugeMetricFamily(name, documentation, labels=labels)
            try:
                for values, value in read():
                    family.add_metric(list(values), value)
            except Exception as exc:  # noqa: BLE001 — one failing reader must not fail the scrape
                log.warning("metrics: reading %s failed (%s)", name, type(exc).__name__)
                continue
            yield family

    def describe(self) -> Iterable[Metric]:
        return []  # read at scrape time only: registering must not call the readers


class _ToolSeries:
    """The label children of one (server, member, tool), bound once."""

    __slots__ = ("labels", "latency", "outcomes")

    def __init__(self, labels: tuple[str, str, str], latency: Histogram) -> None:
        self.labels = labels
        self.latency = latency
        self.outcomes: dict[str, Counter] = {}


class Metrics:
    """The gateway's metrics registry (one per gateway, never the process-global default registry)."""

    def __init__(self, *, max_tool_series: int = 5000) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.max_tool_series = max_tool_series
        self._calls = Counter(
            "manifold_tool_calls",
            "tools/call requests by server, member, tool and outcome",
            ("server", "member", "tool", "outcome"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "manifold_tool_call_duration_seconds",
            "tools/call latency through the gateway by server, member and tool",
            ("server", "member", "tool"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._requests = Counter(
            "manifold_relayed_requests",
            "other relayed requests (prompts/get, resources/read, ...) by server, method and outcome",
            ("server", "method", "outcome"),
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "manifold_auth_failures",
            "refused credentials by reason",
            ("reason",),
            registry=self.registry,
        )
        self.oauth_refreshes = Counter(
            "manifold_oauth_refreshes",
            "OAuth token refreshes of upstream credentials by upstream and result (ok, failed)",
            ("upstream", "result"),
            registry=self.registry,
        )
        self._gauges = _Gauges()
        self.registry.register(self._gauges)
        # Pre-bound label children: the hot path does one dict lookup, then observe / inc.
        self._tool_children: dict[tuple[str, str, str], _ToolSeries] = {}

    # ---- counted as things happen ------------------------------------------------------------------

    def tool_call(self, server: str, member: str | None, tool: str | None, outcome: str, started: float) -> None:
        """One finished tools/call. `tool` is the upstream's name of a tool the catalog resolved, or None for
        a name that resolved to nothing (counted as "other"). `started` is a time.perf_counter() value."""
        key = (server, member or "", tool or OTHER)
        children = self._tool_children.get(key)
        if children is None:
            children = self._bind(key)
        counter = children.outcomes.get(outcome)
        if counter is None:  # outcomes are audit/model.py's `Outcome` values: a fixed set
            counter = children.outcomes[outcome] = self._calls.labels(*children.labels, outcome)
        counter.inc()
        children.latency.observe(time.perf_counter() - started)

    def _bind(self, key: tuple[str, str, str]) -> _ToolSeries:
        """The series of a new (server, member, tool); past `max_tool_series`, the member's "other" series
        (and past that many "other" sets too, one shared series)."""
        if len(self._tool_children) >= self.max_tool_series:
            key = (key[0], key[1], OTHER)
            if (existing := self._tool_children.get(key)) is not None:
                return existing
            if len(self._tool_children) >= 2 * self.max_tool_series:
                key = (OTHER, OTHER, OTHER)
                if (existing := self._tool_children.get(key)) is not None:
                    return existing
        children = _ToolSeries(key, self._latency.labels(*key))
        self._tool_children[key] = children
        return children

    def request(self, server: str, method: str, outcome: str) -> None:
        """One relayed request other than tools/call (its method is one of the protocol's few)."""
        self._requests.labels(server, method, outcome).inc()

    def auth_failure(self, reason: str, *, missing: bool) -> None:
        self.auth_failures.labels(auth_reason(reason, missing=missing)).inc()

    def oauth_refresh(self, upstream: str, *, ok: bool) -> None:
        self.oauth_refreshes.labels(upstream, "ok" if ok else "failed").inc()

    # ---- for other features ----------------------------------------------------------------------

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A counter of another feature (rate limits hit, approvals, pinned tools held...), in this registry.
        Make it once in a constructor and keep it; label values must come from a bounded set."""
        return Counter(name, documentation, tuple(labels), registry=self.registry)

    def add_gauge(self, name: str, documentation: str, labels: Sequence[str], read: GaugeReader) -> None:
        """A gauge read at scrape time: `read()` yields (label values, value) pairs from live state."""
        self._gauges.add(name, documentation, labels, read)

    # ---- scrape ----------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text format of every series."""
        return generate_latest(self.registry)
