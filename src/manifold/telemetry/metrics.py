"""Prometheus metrics of one gateway: a `Metrics` object made by the composition root and handed to whoever
counts. Two kinds of series:

- **counted as things happen**: calls and their latency per (server, member, tool), auth failures by reason,
  OAuth refreshes. A tools/call adds to plain integers of its (server, member, tool) — a dict lookup, one
  bucket and one sum — that a collector turns into the counter and histogram at scrape time: the
  prometheus-client `Counter.inc` + `Histogram.observe` pair (locks, checks) cost ~5 µs per call here, about a
  tenth of everything tracing and metrics add to a relayed call (bench/bench_telemetry.py).
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
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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
    """The counts of one (server, member, tool): calls by outcome, and the latency histogram's buckets
    (non-cumulative; the last one is +Inf) and sum."""

    __slots__ = ("labels", "outcomes", "buckets", "total")

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.outcomes: dict[str, int] = {}  # outcomes are audit/model.py's `Outcome` values: a fixed set
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0


_BUCKET_LABELS = [floatToGoString(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]


class _ToolCalls(Collector):
    """`manifold_tool_calls_total` and `manifold_tool_call_duration_seconds`, built from the series' counts at
    scrape time."""

    def __init__(self, series: dict[tuple[str, str, str], _ToolSeries]) -> None:
        self._series = series

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "manifold_tool_calls",
            "tools/call requests by server, member, tool and outcome",
            labels=("server", "member", "tool", "outcome"),
        )
        latency = HistogramMetricFamily(
            "manifold_tool_call_duration_seconds",
            "tools/call latency through the gateway by server, member and tool",
            labels=("server", "member", "tool"),
        )
        for series in list(self._series.values()):
            for outcome, count in list(series.outcomes.items()):
                calls.add_metric([*series.labels, outcome], count)
            cumulative, buckets = 0, []
            for label, count in zip(_BUCKET_LABELS, series.buckets, strict=True):
                cumulative += count
                buckets.append((label, cumulative))
            latency.add_metric(list(series.labels), buckets, series.total)
        yield calls
        yield latency

    def describe(self) -> Iterable[Metric]:
        return []


class Metrics:
    """The gateway's metrics registry (one per gateway, never the process-global default registry)."""

    def __init__(self, *, max_tool_series: int = 5000) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.max_tool_series = max_tool_series
        # The tools/call series: one lookup, then plain integer updates on the hot path.
        self._tool_children: dict[tuple[str, str, str], _ToolSeries] = {}
        self.registry.register(_ToolCalls(self._tool_children))
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

    # ---- counted as things happen ------------------------------------------------------------------

    def tool_call(self, server: str, member: str | None, tool: str | None, outcome: str, started: float) -> None:
        """One finished tools/call. `tool` is the upstream's name of a tool the catalog resolved, or None for
        a name that resolved to nothing (counted as "other"). `started` is a time.perf_counter() value."""
        key = (server, member or "", tool or OTHER)
        series = self._tool_children.get(key)
        if series is None:
            series = self._bind(key)
        elapsed = time.perf_counter() - started
        outcomes = series.outcomes
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        series.buckets[bisect_left(LATENCY_BUCKETS, elapsed)] += 1  # a bucket holds values <= its bound
        series.total += elapsed

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
        series = self._tool_children[key] = _ToolSeries(key)
        return series

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
