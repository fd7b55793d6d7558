# -*- test-case-name: tests.test_metrics -*-
# mypy: allow-untyped-calls
"""
Tests of L{bluegreen.admin.metrics}: the collectors on their own (on a L{Clock}),
the hooks that feed them, and C{GET /metrics}, parsed by C{prometheus_client}'s
text parser.  Over real sockets: L{tests.test_metrics_integration}.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from twisted.application.service import Service
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import (
    ConnectError,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from bluegreen import __version__
from bluegreen.admin.metrics import (
    CHECK_BUCKETS,
    CONTENT_TYPE,
    REQUEST_BUCKETS,
    Histogram,
    Metrics,
    MetricsResource,
    statusClass,
)
from bluegreen.controller import Controller, Switch
from bluegreen.health import CheckResult, HealthMonitor, HealthSettings
from bluegreen.proxy.failures import FAILURE_KINDS, classifyFailure, describeFailure
from bluegreen.proxy.pool import PoolClosed
from bluegreen.proxy.upstream import BadResponse
from tests._failover import BLUE, BOTH, GREEN
from tests._metrics import Scrape, labels, retryLabels, scrape


def makeController(clock: Clock | None = None, **settings: Any) -> Controller:
    """
    @return: A controller of L{BOTH} with green live.
    """
    return Controller.create(BOTH, "green", clock or Clock(), **settings)


def makeMonitor(clock: Clock) -> HealthMonitor:
    """
    @return: A health monitor of L{BOTH} that runs no checks itself (it is
        "running" so that it records the results it is given).
    """
    monitor = HealthMonitor(BOTH, HealthSettings(), clock, http=None)
    Service.startService(monitor)
    return monitor


class HistogramTests(SynchronousTestCase):
    """
    L{Histogram}: buckets counted as Prometheus defines them.
    """

    def test_buckets(self) -> None:
        """
        A value counts in the first bucket whose bound is not below it (a
        bound is inclusive), a value above every bound in C{+Inf}; the
        buckets are cumulative and the sum is kept.
        """
        histogram = Histogram((0.1, 1.0))
        self.assertEqual(histogram.buckets(), [("0.1", 0), ("1.0", 0), ("+Inf", 0)])
        for value in (0.0, 0.1, 0.5, 1.0, 1.5, 100.0):
            histogram.observe(value)
        self.assertEqual(histogram.buckets(), [("0.1", 2), ("1.0", 4), ("+Inf", 6)])
        self.assertAlmostEqual(histogram.sum, 103.1)

    def test_bucketChoices(self) -> None:
        """
        The bounds are ascending, and reach the default response timeout
        (requests) and beyond the default check timeout (checks).
        """
        for bounds in (REQUEST_BUCKETS, CHECK_BUCKETS):
            self.assertEqual(list(bounds), sorted(set(bounds)))
        self.assertEqual(REQUEST_BUCKETS[-1], 60.0)
        self.assertGreater(CHECK_BUCKETS[-1], HealthSettings().timeout)


class StatusClassTests(SynchronousTestCase):
    """
    L{statusClass}.
    """

    def test_classes(self) -> None:
        """
        Statuses are counted by class; C{0} means the client left first.
        """
        self.assertEqual(
            [statusClass(s) for s in (0, 101, 200, 299, 304, 404, 499, 502, 599)],
            ["client_closed", "1xx", "2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "5xx"],
        )

    def test_other(self) -> None:
        """
        A status outside 100-599 (an upstream may send any three digits) is
        C{other}.
        """
        self.assertEqual([statusClass(s) for s in (99, 600, 999)], ["other"] * 3)


class MetricsTests(SynchronousTestCase):
    """
    L{Metrics}: what is counted, and how it is exported.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.controller = makeController(self.clock)
        self.monitor = makeMonitor(self.clock)
        self.metrics = Metrics(self.controller, self.monitor)

    def test_ownRegistry(self) -> None:
        """
        Every L{Metrics} has a registry of its own: any number can exist in
        one process, and the global registry holds none of them.
        """
        other = Metrics(makeController())
        self.assertIsInstance(self.metrics.registry, CollectorRegistry)
        self.assertIsNot(self.metrics.registry, other.registry)
        self.assertIsNot(self.metrics.registry, REGISTRY)
        self.assertNotIn("bluegreen_requests", [m.name for m in REGISTRY.collect()])

    def test_families(self) -> None:
        """
        Every metric is exported from the start, with its type and help.
        """
        result = scrape(self.metrics)
        types = {
            name: family.type
            for name, family in result.families.items()
            if name.startswith("bluegreen_")
        }
        self.assertEqual(
            types,
            {
                "bluegreen_requests": "counter",
                "bluegreen_request_duration_seconds": "histogram",
                "bluegreen_response_bytes": "counter",
                "bluegreen_upstream_errors": "counter",
                "bluegreen_retries": "counter",
                "bluegreen_live_environment": "gauge",
                "bluegreen_environment_up": "gauge",
                "bluegreen_health_checks": "counter",
                "bluegreen_health_check_duration_seconds": "histogram",
                "bluegreen_switches": "counter",
                "bluegreen_build_info": "gauge",
            },
        )
        for family in result.families.values():
            self.assertTrue(family.documentation, family.name)
        self.assertEqual(result("bluegreen_build_info", {"version": __version__}), 1.0)

    def test_processMetrics(self) -> None:
        """
        The process metrics are exported too, unless turned off.
        """
        self.assertIn(
            "process_cpu_seconds_total",
            self.metrics.expose().decode(),
        )
        quiet = Metrics(makeController(), process=False)
        self.assertNotIn("process_", quiet.expose().decode())

    def test_zeroAtStart(self) -> None:
        """
        The label sets known in advance are exported at zero before anything
        happens, so C{rate()} sees the first event; requests (by method and
        status) appear as they come.
        """
        result = scrape(self.metrics)
        self.assertEqual(result.series("bluegreen_requests_total"), {})
        for name in ("green", "blue"):
            env = {"environment": name}
            self.assertEqual(result("bluegreen_response_bytes_total", env), 0)
            self.assertEqual(result("bluegreen_request_duration_seconds_count", env), 0)
            self.assertEqual(
                result("bluegreen_health_check_duration_seconds_count", env), 0
            )
            for kind in FAILURE_KINDS:
                self.assertEqual(
                    result(
                        "bluegreen_upstream_errors_total",
                        {"environment": name, "kind": kind},
                    ),
                    0,
                )
            for outcome in ("success", "failure", "passive_failure"):
                self.assertEqual(
                    result(
                        "bluegreen_health_checks_total",
                        {"environment": name, "result": outcome},
                    ),
                    0,
                )
        self.assertEqual(
            set(result.series("bluegreen_retries_total")),
            {
                frozenset(retryLabels("green", "green", "stale_connection")),
                frozenset(retryLabels("blue", "blue", "stale_connection")),
                frozenset(retryLabels("green", "blue", "standby")),
                frozenset(retryLabels("blue", "green", "standby")),
            },
        )
        self.assertEqual(
            {
                dict(labels)["reason"]: value
                for labels, value in result.series("bluegreen_switches_total").items()
            },
            {"failover": 0, "recovered": 0, "failback": 0, "manual": 0},
        )

    def test_requests(self) -> None:
        """
        Requests are counted by environment, method and status class; the
        bytes and the durations are added up by environment.
        """
        m = self.metrics
        m.request("green", b"GET", 200, 10, 0.0002)
        m.request("green", b"GET", 204, 0, 0.003)
        m.request("green", b"GET", 404, 5, 0.02)
        m.request("green", b"POST", 502, 7, 1.5)
        m.request("blue", b"HEAD", 200, 0, 120.0)
        result = scrape(m)
        self.assertEqual(
            result.nonZero("bluegreen_requests_total"),
            {
                labels(environment="green", method="GET", status_class="2xx"): 2,
                labels(environment="green", method="GET", status_class="4xx"): 1,
                labels(environment="green", method="POST", status_class="5xx"): 1,
                labels(environment="blue", method="HEAD", status_class="2xx"): 1,
            },
        )
        green, blue = {"environment": "green"}, {"environment": "blue"}
        self.assertEqual(result("bluegreen_response_bytes_total", green), 22)
        self.assertEqual(result("bluegreen_response_bytes_total", blue), 0)
        duration = "bluegreen_request_duration_seconds"
        self.assertEqual(result(duration + "_count", green), 4)
        self.assertAlmostEqual(result(duration + "_sum", green), 1.5232)
        for environment, le, count in [
            ("green", "0.0005", 1),
            ("green", "0.005", 2),
            ("green", "0.025", 3),
            ("green", "60.0", 4),
            ("blue", "60.0", 0),
            ("blue", "+Inf", 1),
        ]:
            bucket = {"environment": environment, "le": le}
            self.assertEqual(result(duration + "_bucket", bucket), count, bucket)

    def test_methods(self) -> None:
        """
        The standard methods are counted by name; any other method (or
        spelling) is C{other}, so clients cannot add series at will.
        """
        for method in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH"):
            self.metrics.request("green", method, 200, 0, 0.001)
        self.metrics.request("green", b"OPTIONS", 200, 0, 0.001)
        for method in (b"get", b"PURGE", b"TRACE", b"X" * 100):
            self.metrics.request("green", method, 200, 0, 0.001)
        self.assertEqual(
            {
                dict(key)["method"]: value
                for key, value in scrape(self.metrics)
                .nonZero("bluegreen_requests_total")
                .items()
            },
            {
                "GET": 1,
                "HEAD": 1,
                "POST": 1,
                "PUT": 1,
                "DELETE": 1,
                "PATCH": 1,
                "OPTIONS": 1,
                "other": 4,
            },
        )

    def test_clientClosed(self) -> None:
        """
        A request whose client left before any response (status C{0}) is
        counted as C{client_closed}; statuses of the same class add up.
        """
        self.metrics.request("green", b"GET", 0, 0, 1.0)
        self.metrics.request("green", b"GET", 500, 0, 1.0)
        self.metrics.request("green", b"GET", 503, 0, 1.0)
        self.assertEqual(
            scrape(self.metrics).nonZero("bluegreen_requests_total"),
            {
                labels(
                    environment="green", method="GET", status_class="client_closed"
                ): 1,
                labels(environment="green", method="GET", status_class="5xx"): 2,
            },
        )

    def test_errorsAndRetries(self) -> None:
        """
        Upstream errors are counted by environment and kind, retries by
        source, target and kind.
        """
        m = self.metrics
        m.upstreamError("green", "refused")
        m.upstreamError("green", "refused")
        m.upstreamError("blue", "timeout_response")
        m.retry("green", "blue", "standby")
        m.retry("blue", "blue", "stale_connection")
        m.retry("blue", "blue", "stale_connection")
        result = scrape(m)
        self.assertEqual(
            result.nonZero("bluegreen_upstream_errors_total"),
            {
                labels(environment="green", kind="refused"): 2,
                labels(environment="blue", kind="timeout_response"): 1,
            },
        )
        self.assertEqual(
            result.nonZero("bluegreen_retries_total"),
            {
                retryLabels("green", "blue", "standby"): 1,
                retryLabels("blue", "blue", "stale_connection"): 2,
            },
        )

    def test_live(self) -> None:
        """
        The live environment is read from the controller on each scrape.
        """
        live = "bluegreen_live_environment"
        result = scrape(self.metrics)
        self.assertEqual(result(live, {"environment": "green"}), 1)
        self.assertEqual(result(live, {"environment": "blue"}), 0)
        # Not through the controller's switch: the gauge is not kept, it is
        # read.
        self.controller.live = BLUE
        result = scrape(self.metrics)
        self.assertEqual(result(live, {"environment": "green"}), 0)
        self.assertEqual(result(live, {"environment": "blue"}), 1)

    def test_up(self) -> None:
        """
        Health is read from the monitor on each scrape: 1 up, 0 down, -1 not
        known yet.
        """
        up = "bluegreen_environment_up"
        result = scrape(self.metrics)
        self.assertEqual(result(up, {"environment": "green"}), -1)
        self.assertEqual(result(up, {"environment": "blue"}), -1)
        self.monitor.health["green"].up = True
        self.monitor.health["blue"].up = False
        result = scrape(self.metrics)
        self.assertEqual(result(up, {"environment": "green"}), 1)
        self.assertEqual(result(up, {"environment": "blue"}), 0)

    def test_upWithoutMonitor(self) -> None:
        """
        Without a health monitor, health is unknown.
        """
        result = scrape(Metrics(makeController()))
        self.assertEqual(
            result.series("bluegreen_environment_up"),
            {
                frozenset({("environment", "green")}): -1,
                frozenset({("environment", "blue")}): -1,
            },
        )

    def test_checks(self) -> None:
        """
        Every check result the monitor records is counted; the durations of
        active checks (passed or failed) go in the histogram, passive
        failures (which take no time) do not.
        """
        record = self.monitor.record
        record("green", CheckResult(True, "status 200", 1.0, 0.004, 200))
        record("green", CheckResult(True, "status 200", 2.0, 0.3, 200))
        record("blue", CheckResult(False, "connection refused", 1.0, 0.0008))
        record("blue", CheckResult(False, "refused", 1.0, 0.0, passive=True))
        result = scrape(self.metrics)
        self.assertEqual(
            result.nonZero("bluegreen_health_checks_total"),
            {
                labels(environment="green", result="success"): 2,
                labels(environment="blue", result="failure"): 1,
                labels(environment="blue", result="passive_failure"): 1,
            },
        )
        duration = "bluegreen_health_check_duration_seconds"
        self.assertEqual(result(duration + "_count", {"environment": "green"}), 2)
        self.assertAlmostEqual(
            result(duration + "_sum", {"environment": "green"}), 0.304
        )
        self.assertEqual(
            result(duration + "_bucket", {"environment": "green", "le": "0.005"}), 1
        )
        self.assertEqual(result(duration + "_count", {"environment": "blue"}), 1)
        self.assertEqual(
            result(duration + "_bucket", {"environment": "blue", "le": "0.001"}), 1
        )

    def test_checksWhileStopped(self) -> None:
        """
        Results that reach a stopped monitor (checks it cancelled) are not
        counted, as the monitor ignores them.
        """
        Service.stopService(self.monitor)
        self.monitor.record("green", CheckResult(False, "timeout", 1.0, 2.0))
        self.assertEqual(
            scrape(self.metrics).nonZero("bluegreen_health_checks_total"), {}
        )

    def test_checkObserverSeesTheResultApplied(self) -> None:
        """
        A check observer is called once the result is in the environment's
        counts, before the state change it decides.
        """
        seen: list[tuple[str, CheckResult, int, bool | None]] = []

        def observer(name: str, result: CheckResult) -> None:
            state = self.monitor.health[name]
            seen.append((name, result, state.successes, state.up))

        self.monitor.subscribeChecks(observer)
        result = CheckResult(True, "status 200", 1.0, 0.01, 200)
        self.monitor.record("green", result)
        self.assertEqual(seen, [("green", result, 1, None)])
        self.assertTrue(self.monitor.health["green"].up)

    def test_checkObserverFails(self) -> None:
        """
        A check observer that raises is logged; the others, and the monitor,
        carry on.
        """

        def broken(name: str, result: CheckResult) -> None:
            raise RuntimeError("boom")

        # Subscribed before the metrics' observer, so it fails first.
        monitor = makeMonitor(self.clock)
        monitor.subscribeChecks(broken)
        metrics = Metrics(self.controller, monitor)
        with capturedLogs() as events:
            monitor.record("green", CheckResult(True, "ok", 1.0, 0.01, 200))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(
            [e["log_format"] for e in events if e.get("log_failure")],
            ["check observer {observer!r} failed"],
        )
        self.assertTrue(monitor.health["green"].up)
        self.assertEqual(
            scrape(metrics).nonZero("bluegreen_health_checks_total"),
            {labels(environment="green", result="success"): 1},
        )

    def test_extraCollector(self) -> None:
        """
        Other collectors (later features' metrics) can be added to the
        registry; a clash of names is refused.
        """

        class Flags:
            def describe(self) -> Iterable[Metric]:
                return [GaugeMetricFamily("bluegreen_flags", "Flags.")]

            def collect(self) -> Iterable[Metric]:
                return [GaugeMetricFamily("bluegreen_flags", "Flags.", value=3)]

        class Clash:
            def describe(self) -> Iterable[Metric]:
                return [GaugeMetricFamily("bluegreen_live_environment", "Again.")]

            def collect(self) -> Iterable[Metric]:
                return []

        self.metrics.register(Flags())
        self.assertEqual(scrape(self.metrics)("bluegreen_flags"), 3)
        self.assertRaises(ValueError, self.metrics.register, Clash())


class SwitchMetricsTests(SynchronousTestCase):
    """
    Switches are counted by the controller's kind of reason.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.up: dict[str, bool | None] = {"green": True, "blue": True}
        self.controller = makeController(
            self.clock,
            isUp=lambda name: self.up[name],
            failback="auto",
            failbackDelay=10.0,
        )
        self.metrics = Metrics(self.controller, process=False)

    def switches(self) -> dict[str, float]:
        """
        @return: The non-zero switch counts by reason.
        """
        return {
            dict(key)["reason"]: value
            for key, value in scrape(self.metrics)
            .nonZero("bluegreen_switches_total")
            .items()
        }

    def change(self, name: str, up: bool) -> None:
        """
        Tell the controller C{name} went up or down.
        """
        self.up[name] = up
        self.controller.healthChanged(name, up, "test")

    def test_kinds(self) -> None:
        """
        A failover, an automatic failback, a switch to an environment that
        recovered while the live one is down, and a manual switch are each
        counted under their own reason.
        """
        self.change("green", False)
        self.assertEqual(self.controller.live, BLUE)
        self.assertEqual(self.switches(), {"failover": 1})
        self.change("green", True)
        self.clock.advance(10)
        self.assertEqual(self.controller.live, GREEN)
        self.assertEqual(self.switches(), {"failover": 1, "failback": 1})
        self.change("blue", False)
        self.change("green", False)
        self.assertEqual(self.controller.mode, "outage")
        self.change("blue", True)
        self.assertEqual(self.controller.live, BLUE)
        self.assertEqual(
            self.switches(), {"failover": 1, "failback": 1, "recovered": 1}
        )
        self.change("green", True)
        self.controller.switch("green", "maintenance")
        self.assertEqual(
            self.switches(),
            {"failover": 1, "failback": 1, "recovered": 1, "manual": 1},
        )
        self.assertEqual(len(self.controller.history), 4)

    def test_observers(self) -> None:
        """
        Switch observers get the recorded L{Switch} and its kind; one that
        raises is logged and the others still run.
        """
        seen: list[tuple[Switch, str]] = []

        def broken(record: Switch, kind: str) -> None:
            raise RuntimeError("boom")

        self.controller.onSwitch.insert(0, broken)
        self.controller.onSwitch.append(lambda r, k: seen.append((r, k)))
        with capturedLogs() as events:
            record = self.controller.switch("blue", "because")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(
            [
                e["log_format"]
                for e in events
                if e.get("log_level") == LogLevel.critical or e.get("log_failure")
            ],
            ["switch observer {observer!r} failed"],
        )
        self.assertEqual(seen, [(record, "manual")])
        self.assertEqual(self.controller.live, BLUE)
        self.assertEqual(self.switches(), {"manual": 1})


class ClassifyFailureTests(SynchronousTestCase):
    """
    L{classifyFailure}: one classification for error pages and metrics.
    """

    def test_kinds(self) -> None:
        """
        Each failure has its status, reason and kind; L{describeFailure}
        gives the first two.
        """
        cases: list[tuple[BaseException, int, str]] = [
            (TimeoutError(), 504, "timeout_connect"),
            (ConnectionRefusedError(), 502, "refused"),
            (DNSLookupError("nowhere.invalid"), 502, "dns"),
            (BadResponse("invalid status line"), 502, "invalid_response"),
            (PoolClosed("green pool is closed"), 503, "shutdown"),
            (ConnectionDone(), 502, "closed"),
            (ConnectionLost(), 502, "reset"),
            (ConnectError(osError="No route to host"), 502, "unreachable"),
            (DeferredTimeoutError(), 502, "other"),
            (ValueError("odd"), 502, "other"),
        ]
        for error, status, kind in cases:
            reason = Failure(error)
            got = classifyFailure(reason, 5.0)
            self.assertEqual((got[0], got[2]), (status, kind), error)
            self.assertEqual(describeFailure(reason, 5.0), got[:2])
            self.assertIn(kind, FAILURE_KINDS)

    def test_tls(self) -> None:
        """
        A TLS failure is C{tls}.
        """
        from OpenSSL.SSL import Error as SSLError

        error = SSLError([("SSL routines", "", "certificate verify failed")])
        self.assertEqual(
            classifyFailure(Failure(error)),
            (
                502,
                "TLS handshake failed (TLS error: certificate verify failed)",
                "tls",
            ),
        )

    def test_messagesUnchanged(self) -> None:
        """
        The error page's reasons are those L{describeFailure} always gave.
        """
        self.assertEqual(
            describeFailure(Failure(TimeoutError()), 5.0),
            (504, "did not accept a connection within 5 s (connect timeout)"),
        )
        self.assertEqual(
            describeFailure(Failure(ConnectionLost())),
            (502, "closed the connection before responding"),
        )


class MetricsResourceTests(SynchronousTestCase):
    """
    L{MetricsResource} rendered directly.
    """

    def setUp(self) -> None:
        self.metrics = Metrics(makeController(), process=False)
        self.resource = MetricsResource(self.metrics)

    def render(self, method: bytes, postpath: list[bytes] | None = None) -> Any:
        request: Any = DummyRequest(postpath or [])
        request.method = method
        # As a real request's: /metrics, or /metrics/more below it.
        request.path = b"/".join([b"/metrics", *(postpath or [])])
        body = self.resource.render(request)
        return request, body

    def test_get(self) -> None:
        """
        C{GET} answers every metric in the text format 0.0.4.
        """
        self.metrics.request("green", b"GET", 200, 3, 0.01)
        request, body = self.render(b"GET")
        self.assertIn(request.responseCode, (None, 200))
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"), [CONTENT_TYPE]
        )
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-length"),
            [str(len(body)).encode()],
        )
        self.assertEqual(body, self.metrics.expose())
        self.assertEqual(
            Scrape(body.decode())(
                "bluegreen_requests_total",
                {"environment": "green", "method": "GET", "status_class": "2xx"},
            ),
            1,
        )

    def test_otherMethods(self) -> None:
        """
        Other methods than C{GET} and C{HEAD} get a JSON 405 with C{Allow}.
        """
        for method in (b"POST", b"DELETE"):
            request, body = self.render(method)
            self.assertEqual(request.responseCode, 405)
            self.assertEqual(
                request.responseHeaders.getRawHeaders(b"allow"), [b"GET, HEAD"]
            )
            self.assertEqual(
                json.loads(body),
                {"error": f"method {method.decode()} not allowed on /metrics"},
            )

    def test_below(self) -> None:
        """
        Paths below C{/metrics} are not found.
        """
        request, body = self.render(b"GET", [b"more"])
        self.assertEqual(request.responseCode, 404)
        self.assertEqual(
            json.loads(body), {"error": "not found: /metrics/more (try GET /metrics)"}
        )
