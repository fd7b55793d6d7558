# -*- test-case-name: tests.test_metrics,tests.test_metrics_integration -*-
"""
Prometheus metrics, served as C{GET /metrics} on the admin port.

The proxy's hot path only adds to plain Python numbers (a couple of dict
updates per request); the Prometheus metric families are built from them
when C{/metrics} is scraped, by L{Metrics.collect}.  The live environment
and each environment's health are not counted at all: they are read from
the controller and the health monitor at scrape time.

Every L{Metrics} has its own C{CollectorRegistry} (never
C{prometheus_client}'s global one), so any number of services can be built
in one process.  The metrics (all prefixed C{bluegreen_}):

  - C{bluegreen_requests_total{environment, method, status_class}}: proxied
    requests, counted when they end.  C{environment} is the one that served
    the request (the standby after a retry on it); C{method} is one of
    L{METHODS} or C{other}; C{status_class} is C{1xx}-C{5xx} for the status
    sent (or begun: a response cut off half way counts under its status),
    C{client_closed} when the client left before any response was sent
    (the access log's C{499}), and C{other} for a status outside 100-599.
  - C{bluegreen_request_duration_seconds{environment}}: histogram of the
    time from a request's arrival to its end (L{REQUEST_BUCKETS}).
  - C{bluegreen_response_bytes_total{environment}}: response body bytes
    sent to clients (error pages included).
  - C{bluegreen_upstream_errors_total{environment, kind}}: failures to get
    a response from an environment, including those retried on the standby;
    C{kind} is one of L{bluegreen.proxy.failures.FAILURE_KINDS}.  A stale pooled
    connection resent on a new one is a retry, not an error.
  - C{bluegreen_retries_total{from, to, kind}}: requests sent again:
    C{stale_connection} (a reused connection the server had closed; C{from}
    and C{to} are the same environment) or C{standby} (the environment could
    not be reached; sent to the standby).
  - C{bluegreen_live_environment{environment}}: 1 for the live environment,
    0 for the other.
  - C{bluegreen_environment_up{environment}}: 1 up, 0 down, -1 unknown (no
    check has decided yet, or the health checks are not running).  -1 rather
    than C{NaN}, so C{== 0} (down) and C{< 1} (not known to be up) both
    mean what they say in alert rules.
  - C{bluegreen_health_checks_total{environment, result}}: health check
    results: C{success}, C{failure}, or C{passive_failure} (proxied
    requests that could not reach the environment, at most one between two
    active checks: evidence that starts a check, never a failed check; every
    such request is counted in C{/api/status}'s C{passiveFailures}).
  - C{bluegreen_health_check_duration_seconds{environment}}: histogram of
    active checks' durations, passed or failed (L{CHECK_BUCKETS}).
  - C{bluegreen_switches_total{reason}}: changes of the live environment
    since start: C{failover} (the live environment went down), C{recovered}
    (traffic was on a down environment and the other came up), C{failback}
    (automatic return to C{--active}) or C{manual}.
  - C{bluegreen_build_info{version}}: always 1.
  - With feature flags (L{FlagMetrics}, for each environment that has a
    Redis): C{bluegreen_flag_on{environment, flag}} (1 on, 0 off, from the
    cache at scrape time), C{bluegreen_flag_changes_total{environment}}
    (changes the service saw since start, whoever made them),
    C{bluegreen_flag_redis_up{environment}} (1 connected, 0 not) and
    C{bluegreen_flag_cache_stale{environment}} (1 while the cached values
    may be out of date).
  - The client side (L{bluegreen.proxy.rejections.ClientMetrics}):
    C{bluegreen_rejected_requests_total{status, cause}},
    C{bluegreen_client_connections}, C{bluegreen_client_connections_limit}
    and C{bluegreen_client_accept_paused}.
  - C{process_*}: C{prometheus_client}'s process metrics (CPU, memory, file
    descriptors), where the platform has them.

Label sets that are known in advance are exported from the start, at zero,
so that C{rate()} and C{increase()} see the first event.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString
from twisted.web.resource import Resource
from twisted.web.server import Request

from bluegreen import __version__
from bluegreen.admin.jsonapi import refuseUnlessGet
from bluegreen.proxy.failures import FAILURE_KINDS

if TYPE_CHECKING:
    from bluegreen.controller import Controller, Switch
    from bluegreen.flags.model import FlagChange
    from bluegreen.flags.service import FlagService
    from bluegreen.health import CheckResult, HealthMonitor

#: The exposition format served: the Prometheus text format 0.0.4, which
#: every Prometheus version reads.  (C{prometheus_client}'s
#: C{CONTENT_TYPE_LATEST} now names version 1.0.0, which older servers do
#: not know; the bytes are the same for C{bluegreen_} names.)
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

#: The C{method} label of each method counted by name; any other is
#: C{other}, so clients cannot create series at will.
METHODS: dict[bytes, str] = {
    method: method.decode("ascii")
    for method in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS")
}

#: The C{status_class} of a request that ended before any response was sent
#: because the client disconnected.
CLIENT_CLOSED = "client_closed"

#: Upper bounds (seconds) of the request duration histogram's buckets: from
#: the proxy's own sub-millisecond cost up to the default response timeout.
REQUEST_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

#: Upper bounds (seconds) of the health check duration histogram's buckets.
CHECK_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: The C{kind} of a retry.
RETRY_KINDS = ("stale_connection", "standby")

#: The C{result} of a health check.
CHECK_RESULTS = ("success", "failure", "passive_failure")

#: The C{reason} of a switch (see L{bluegreen.controller.Controller.onSwitch}).
SWITCH_REASONS = ("failover", "recovered", "failback", "manual")


def statusClass(status: int) -> str:
    """
    The C{status_class} label of a status.

    @param status: The status sent, or C{0} if the client left before any
        response was sent.
    @return: C{"2xx"} and so on, L{CLIENT_CLOSED}, or C{"other"}.
    """
    if status == 0:
        return CLIENT_CLOSED
    if 100 <= status <= 599:
        return f"{status // 100}xx"
    return "other"


class Histogram:
    """
    A histogram kept as plain numbers: a count per bucket and a sum.

    @ivar bounds: The buckets' upper bounds, ascending, without C{+Inf}.
    @ivar counts: Observations per bucket (not cumulative); the last one is
        the C{+Inf} bucket.
    @ivar sum: The sum of the observations.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        """
        @param bounds: The buckets' upper bounds, ascending.
        """
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """
        Count C{value} in the first bucket whose bound is not below it.
        """
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """
        @return: C{(le, cumulative count)} for each bucket, ending with
            C{+Inf}, as C{HistogramMetricFamily.add_metric} wants them.
        """
        result: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            result.append((floatToGoString(bound), total))
        return result


class _Traffic:
    """
    The request counts of one environment.

    @ivar counts: Requests by C{(method label, status)}.
    @ivar bytes: Response body bytes.
    @ivar durations: Request durations.
    """

    __slots__ = ("bytes", "counts", "durations")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, int], int] = {}
        self.bytes = 0
        self.durations = Histogram(REQUEST_BUCKETS)


class Metrics:
    """
    bluegreen's metrics: counted by the proxy, the health monitor and the
    controller, exported in the Prometheus formats through L{registry}.

    It is a C{prometheus_client} collector, registered in its own
    L{registry}; add other collectors (later features' metrics) there too.

    @ivar registry: The registry C{/metrics} exports.
    @ivar controller: Says which environment is live.
    @ivar health: Says which environments are up, or L{None}.
    """

    def __init__(
        self,
        controller: Controller,
        health: HealthMonitor | None = None,
        process: bool = True,
    ) -> None:
        """
        Make the metrics and subscribe to C{health}'s check results and
        C{controller}'s switches.

        @param controller: The switch.
        @param health: The health monitor, if any.
        @param process: Also export C{prometheus_client}'s C{process_*}
            metrics.
        """
        self.controller = controller
        self.health = health
        names = tuple(controller.environments)
        self._traffic = {name: _Traffic() for name in names}
        self._errors = {(name, kind): 0 for name in names for kind in FAILURE_KINDS}
        self._retries: dict[tuple[str, str, str], int] = {}
        for name in names:
            self._retries[name, name, "stale_connection"] = 0
            for other in names:
                if other != name:
                    self._retries[name, other, "standby"] = 0
        self._checks = {(name, result): 0 for name in names for result in CHECK_RESULTS}
        self._checkDurations = {name: Histogram(CHECK_BUCKETS) for name in names}
        self._switches = dict.fromkeys(SWITCH_REASONS, 0)
        self.registry = CollectorRegistry()
        self.registry.register(self)
        if process:
            ProcessCollector(registry=self.registry)
        if health is not None:
            health.subscribeChecks(self.checked)
        controller.onSwitch.append(self.switched)

    def register(self, collector: Collector) -> None:
        """
        Export C{collector}'s metrics too.

        @param collector: A C{prometheus_client} collector (with a
            C{describe} method, so name clashes are caught now).
        """
        self.registry.register(collector)

    def expose(self) -> bytes:
        """
        @return: Every metric in the Prometheus text format 0.0.4
            (L{CONTENT_TYPE}).
        """
        return generate_latest(self.registry)

    # Counting (the proxy's is on its hot path: keep it cheap)

    def request(
        self, environment: str, method: bytes, status: int, size: int, seconds: float
    ) -> None:
        """
        Count a proxied request that ended: the proxy's side of it, with its
        parameters, is L{bluegreen.proxy.interfaces.ProxyMetrics.request}.
        """
        traffic = self._traffic.get(environment)
        if traffic is None:
            traffic = self._traffic[environment] = _Traffic()
        counts = traffic.counts
        key = (METHODS.get(method, "other"), status)
        counts[key] = counts.get(key, 0) + 1
        traffic.bytes += size
        durations = traffic.durations
        durations.counts[bisect_left(REQUEST_BUCKETS, seconds)] += 1
        durations.sum += seconds

    def upstreamError(self, environment: str, kind: str) -> None:
        """
        Count a failure to get a response from an environment.

        @param environment: The environment.
        @param kind: One of L{bluegreen.proxy.failures.FAILURE_KINDS}.
        """
        key = (environment, kind)
        self._errors[key] = self._errors.get(key, 0) + 1

    def retry(self, source: str, to: str, kind: str) -> None:
        """
        Count a request sent again.

        @param source: The environment it was sent to first.
        @param to: The environment it is sent to now.
        @param kind: One of L{RETRY_KINDS}.
        """
        key = (source, to, kind)
        self._retries[key] = self._retries.get(key, 0) + 1

    def checked(self, name: str, result: CheckResult) -> None:
        """
        Count a health check's result (the health monitor's check observer).

        @param name: The environment checked.
        @param result: The outcome.
        """
        if result.passive:
            outcome = "passive_failure"
        else:
            outcome = "success" if result.ok else "failure"
            durations = self._checkDurations.get(name)
            if durations is None:
                durations = self._checkDurations[name] = Histogram(CHECK_BUCKETS)
            durations.observe(result.latency)
        key = (name, outcome)
        self._checks[key] = self._checks.get(key, 0) + 1

    def switched(self, record: Switch, kind: str) -> None:
        """
        Count a switch (the controller's switch observer).

        @param record: The switch.
        @param kind: One of L{SWITCH_REASONS}.
        """
        self._switches[kind] = self._switches.get(kind, 0) + 1

    # The collector

    def describe(self) -> Iterable[Metric]:
        """
        The metric families, without samples (for the registry's checks of
        name clashes).
        """
        return _Families().all()

    def collect(self) -> Iterable[Metric]:
        """
        The metric families with their current samples (called on scrape).
        """
        f = _Families()
        for name, traffic in self._traffic.items():
            byClass: dict[tuple[str, str], int] = {}
            for (method, status), count in traffic.counts.items():
                key = (method, statusClass(status))
                byClass[key] = byClass.get(key, 0) + count
            for (method, label), count in sorted(byClass.items()):
                f.requests.add_metric([name, method, label], count)
            durations = traffic.durations
            f.durations.add_metric([name], durations.buckets(), durations.sum)
            f.bytes.add_metric([name], traffic.bytes)
        for (name, kind), count in sorted(self._errors.items()):
            f.errors.add_metric([name, kind], count)
        for (source, to, kind), count in sorted(self._retries.items()):
            f.retries.add_metric([source, to, kind], count)
        states = {} if self.health is None else self.health.health
        liveName = self.controller.live.name
        for name in self.controller.environments:
            f.live.add_metric([name], 1 if name == liveName else 0)
            state = states.get(name)
            known = None if state is None else state.up
            f.up.add_metric([name], -1 if known is None else int(known))
        for (name, result), count in sorted(self._checks.items()):
            f.checks.add_metric([name, result], count)
        for name, histogram in sorted(self._checkDurations.items()):
            f.checkDurations.add_metric([name], histogram.buckets(), histogram.sum)
        for reason, count in sorted(self._switches.items()):
            f.switches.add_metric([reason], count)
        f.info.add_metric([__version__], 1)
        return f.all()


class _Families:
    """
    The metric families L{Metrics} exports, empty.
    """

    def __init__(self) -> None:
        self.requests = CounterMetricFamily(
            "bluegreen_requests",
            "Proxied requests, by the environment that served them.",
            labels=["environment", "method", "status_class"],
        )
        self.durations = HistogramMetricFamily(
            "bluegreen_request_duration_seconds",
            "Time from a proxied request's arrival to its end.",
            labels=["environment"],
        )
        self.bytes = CounterMetricFamily(
            "bluegreen_response_bytes",
            "Response body bytes sent to clients.",
            labels=["environment"],
        )
        self.errors = CounterMetricFamily(
            "bluegreen_upstream_errors",
            "Failures to get a response from an environment, by kind.",
            labels=["environment", "kind"],
        )
        self.retries = CounterMetricFamily(
            "bluegreen_retries",
            "Requests sent again: on a new connection (stale_connection) or to "
            "the standby (standby).",
            labels=["from", "to", "kind"],
        )
        self.live = GaugeMetricFamily(
            "bluegreen_live_environment",
            "1 for the environment receiving traffic, else 0.",
            labels=["environment"],
        )
        self.up = GaugeMetricFamily(
            "bluegreen_environment_up",
            "Health: 1 up, 0 down, -1 unknown (not checked yet).",
            labels=["environment"],
        )
        self.checks = CounterMetricFamily(
            "bluegreen_health_checks",
            "Health check results (passive_failure: proxied requests that could "
            "not reach it, at most one between two active checks; not a failed "
            "check).",
            labels=["environment", "result"],
        )
        self.checkDurations = HistogramMetricFamily(
            "bluegreen_health_check_duration_seconds",
            "Duration of active health checks, passed or failed.",
            labels=["environment"],
        )
        self.switches = CounterMetricFamily(
            "bluegreen_switches",
            "Changes of the live environment since start, by reason.",
            labels=["reason"],
        )
        self.info = GaugeMetricFamily(
            "bluegreen_build_info",
            "The running bluegreen version (always 1).",
            labels=["version"],
        )

    def all(self) -> list[Metric]:
        """
        @return: Every family, in the order they are exported.
        """
        return [
            self.requests,
            self.durations,
            self.bytes,
            self.errors,
            self.retries,
            self.live,
            self.up,
            self.checks,
            self.checkDurations,
            self.switches,
            self.info,
        ]


class FlagMetrics:
    """
    The feature flag metrics: a collector for L{Metrics.register}, reading
    the flag service's cache when scraped (never Redis) and counting the
    changes it reports.

    @ivar flags: The flag service.
    """

    def __init__(self, flags: FlagService) -> None:
        """
        Subscribe to C{flags}' changes.

        @param flags: The flag service.
        """
        self.flags = flags
        self._changes: dict[str, int] = {
            name: 0
            for name, info in flags.table()["environments"].items()
            if info.get("redis") is not None
        }
        flags.subscribe(self.changed)

    def changed(self, change: FlagChange) -> None:
        """
        Count a change.
        """
        self._changes[change.env] = self._changes.get(change.env, 0) + 1

    def describe(self) -> Iterable[Metric]:
        """
        The metric families, without samples.
        """
        return list(_flagFamilies())

    def collect(self) -> Iterable[Metric]:
        """
        The metric families with their current samples.
        """
        from bluegreen.flags.model import isOn

        on, changes, up, stale = _flagFamilies()
        environments = self.flags.table()["environments"]
        for name, info in environments.items():
            if info.get("redis") is None:
                continue
            for flag, value in sorted(info.get("flags", {}).items()):
                on.add_metric([name, flag], 1 if isOn(value) else 0)
            up.add_metric([name], 1 if info.get("connected") else 0)
            stale.add_metric([name], 1 if info.get("stale") else 0)
        for name, count in sorted(self._changes.items()):
            changes.add_metric([name], count)
        return [on, changes, up, stale]


def _flagFamilies() -> tuple[
    GaugeMetricFamily, CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily
]:
    """
    @return: The families of L{FlagMetrics}, empty: flag on, changes, Redis
        up, cache stale.
    """
    return (
        GaugeMetricFamily(
            "bluegreen_flag_on",
            "Feature flags: 1 on (the value ON), 0 off, as last read from the "
            "environment's Redis.",
            labels=["environment", "flag"],
        ),
        CounterMetricFamily(
            "bluegreen_flag_changes",
            "Feature flag changes seen since start (whoever made them).",
            labels=["environment"],
        ),
        GaugeMetricFamily(
            "bluegreen_flag_redis_up",
            "1 while the environment's Redis is connected, else 0.",
            labels=["environment"],
        ),
        GaugeMetricFamily(
            "bluegreen_flag_cache_stale",
            "1 while the cached flags may be out of date (Redis unreachable).",
            labels=["environment"],
        ),
    )


class MetricsResource(Resource):
    """
    C{GET /metrics}: every metric, in the Prometheus text format.

    It needs no token, like C{GET /api/status}: the metrics say no more than
    the status does, and a scraper should not hold the switch token.  Any
    method but C{GET} and C{HEAD} gets a JSON C{405}, like the rest of the
    admin API.

    @ivar metrics: What is exported.
    """

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        """
        @param metrics: What to export.
        """
        super().__init__()
        self.metrics = metrics

    def render(self, request: Request) -> bytes:
        """
        Answer with the metrics (or 405, or 404 below C{/metrics}).
        """
        refused = refuseUnlessGet(request, " (try GET /metrics)")
        if refused is not None:
            return refused
        data = self.metrics.expose()
        request.setHeader(b"Content-Type", CONTENT_TYPE)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Length", b"%d" % len(data))
        # twisted.web drops the body of a HEAD itself.
        return data
