# -*- test-case-name: tests.test_promote_analysis -*-
"""
Tests for L{bluegreen.promote.analysis}: the post-promotion window on a
L{Clock}, and the rollback of a release whose pages answer 500 while its
health path passes, with real app processes and a real proxy.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from bluegreen.promote.analysis import SAMPLE, Analysis, ObservedMetrics
from bluegreen.promote.settings import AnalysisSettings
from tests._admin import QUIET_HEALTH, call, listeningPort, runService, serviceArguments
from tests._failover import ControllerMixin
from tests._util import waitFor
from tests.test_cli_admin import bluegreen
from tests.test_failover_integration import setMode, startApp


class Counted:
    """
    Stand-in proxy metrics: records what it is told.
    """

    def __init__(self) -> None:
        """
        Start with nothing recorded.
        """
        self.calls: list[tuple[Any, ...]] = []

    def request(
        self, environment: str, method: bytes, status: int, size: int, seconds: float
    ) -> None:
        """
        Record a request.
        """
        self.calls.append(("request", environment, status))

    def upstreamError(self, environment: str, kind: str) -> None:
        """
        Record an upstream error.
        """
        self.calls.append(("error", environment, kind))

    def retry(self, source: str, to: str, kind: str) -> None:
        """
        Record a retry.
        """
        self.calls.append(("retry", source, to, kind))


class AnalysisTests(ControllerMixin):
    """
    L{Analysis} on a L{Clock}.
    """

    def analysis(self, **settings: Any) -> Analysis:
        """
        GREEN live and both up, BLUE made live by a planned switch, watched
        by an analysis with C{settings}.
        """
        self.make()
        self.bothUp()
        analysis = Analysis(self.controller, self.clock, AnalysisSettings(**settings))
        self.addCleanup(analysis.stop)
        self.successResultOf(
            Deferred.fromCoroutine(self.controller.plannedSwitch("blue", "promoted"))
        )
        return analysis

    def serve(
        self, analysis: Analysis, count: int, status: int, seconds: float = 0.01
    ) -> None:
        """
        Report C{count} responses of BLUE's.
        """
        for _ in range(count):
            analysis.observe("blue", status, seconds)

    def test_rollback(self) -> None:
        """
        Past the minimum of requests, a 5xx share above the maximum rolls
        back at once, recorded with the figures.
        """
        analysis = self.analysis(minRequests=20, maxErrorRate=5.0)
        self.serve(analysis, 12, 200)
        self.serve(analysis, 7, 500)
        # 19 requests: too few to judge, even at 37 % errors.
        self.assertEqual(self.controller.active, "blue")
        self.serve(analysis, 1, 500)
        self.assertEqual(
            (self.controller.active, self.controller.history[-1].reason),
            ("green", "rollback: 5xx 40 % over 20 requests"),
        )
        self.assertEqual(
            analysis.last, "blue rolled back to green: 5xx 40 % over 20 requests"
        )
        # The rollback is not itself watched.
        self.assertIsNone(analysis.watching)
        self.assertNoTimers()

    def test_rollbackRefused(self) -> None:
        """
        A rollback to an environment that went down meanwhile is refused
        like any switch, and said so.
        """
        analysis = self.analysis(minRequests=5)
        self.change("green", False)
        self.serve(analysis, 5, 500)
        self.assertEqual(self.controller.active, "blue")
        self.assertEqual(
            analysis.last,
            "rollback to green refused: green is down (status 500); "
            "use force to switch anyway",
        )
        self.assertIn(
            "rollback to green refused: green is down (status 500); "
            "use force to switch anyway",
            self.logged(LogLevel.error),
        )

    def test_withinTolerance(self) -> None:
        """
        A 5xx share at the maximum is tolerated; the window then ends.
        """
        analysis = self.analysis(window=60.0, minRequests=20, maxErrorRate=5.0)
        self.serve(analysis, 19, 200)
        self.serve(analysis, 1, 503)
        self.assertEqual(analysis.status()["window"]["requests"], 20)
        self.clock.advance(60)
        self.assertEqual(self.controller.active, "blue")
        self.assertEqual(analysis.last, "blue passed: 1 5xx over 20 requests")
        self.assertIsNone(analysis.status()["window"])
        # After the window, errors change nothing.
        self.serve(analysis, 50, 500)
        self.assertEqual(self.controller.active, "blue")

    def test_tooFew(self) -> None:
        """
        A window with fewer requests than the minimum says so.
        """
        analysis = self.analysis(window=10.0, minRequests=20)
        self.serve(analysis, 5, 500)
        self.clock.advance(10)
        self.assertEqual(
            (self.controller.active, analysis.last),
            ("blue", "blue: only 5 requests in 10 s, too few to judge"),
        )

    def test_p95(self) -> None:
        """
        With C{maxP95}, a slow p95 rolls back too.
        """
        analysis = self.analysis(minRequests=20, maxP95=0.5)
        self.serve(analysis, 18, 200, 0.01)
        self.serve(analysis, 1, 200, 2.0)
        self.serve(analysis, 1, 200, 0.01)
        # 1 slow in 20: the p95 (19th of 20) is fast.
        self.assertEqual(self.controller.active, "blue")
        self.serve(analysis, 1, 200, 2.0)
        self.assertEqual(
            self.controller.history[-1].reason,
            "rollback: p95 2 s over 21 requests (max 0.5 s)",
        )

    def test_p95Sampled(self) -> None:
        """
        A busy window keeps a bounded sample of durations, whose p95 still
        follows the traffic; without C{maxP95} no duration is kept.
        """
        analysis = self.analysis(minRequests=20, maxP95=10.0)
        self.serve(analysis, 3 * SAMPLE, 200, 0.01)
        self.assertEqual(analysis.p95(), 0.01)
        self.serve(analysis, 3 * SAMPLE, 200, 2.0)
        self.assertEqual(analysis.p95(), 2.0)
        self.assertEqual(analysis.status()["window"]["requests"], 6 * SAMPLE)
        self.assertEqual(self.controller.active, "blue")
        plain = self.analysis(minRequests=20)
        self.serve(plain, 30, 200, 0.01)
        self.assertIsNone(plain.p95())

    def test_otherTraffic(self) -> None:
        """
        Responses of the other environment, and clients that left, are not
        counted; a failover ends the window.
        """
        analysis = self.analysis(minRequests=1)
        analysis.observe("green", 500, 0.1)
        analysis.observe("blue", 0, 0.1)
        self.assertEqual(analysis.status()["window"]["requests"], 0)
        self.change("blue", False)
        self.assertEqual(self.controller.active, "green")
        self.assertIsNone(analysis.watching)
        self.assertNoTimers()

    def test_disabled(self) -> None:
        """
        A window of 0 watches nothing.
        """
        analysis = self.analysis(window=0.0, minRequests=1)
        self.assertIsNone(analysis.watching)
        self.serve(analysis, 5, 500)
        self.assertEqual(self.controller.active, "blue")

    def test_observedMetrics(self) -> None:
        """
        L{ObservedMetrics} passes every call on, and tells the analysis of
        each response.
        """
        analysis = self.analysis(minRequests=100)
        counted = Counted()
        metrics = ObservedMetrics(counted, analysis)
        metrics.request("blue", b"GET", 500, 10, 0.1)
        metrics.upstreamError("blue", "refused")
        metrics.retry("blue", "green", "standby")
        self.assertEqual(
            counted.calls,
            [
                ("request", "blue", 500),
                ("error", "blue", "refused"),
                ("retry", "blue", "green", "standby"),
            ],
        )
        self.assertEqual((analysis.requests, analysis.errors), (1, 1))
        ObservedMetrics(None, analysis).request("blue", b"GET", 200, 1, 0.1)
        self.assertEqual(analysis.requests, 2)


class RollbackIntegrationTests(TestCase):
    """
    A bad release rolled back by itself, with real processes.
    """

    timeout = 60

    async def test_pages500(self) -> None:
        """
        BLUE's pages answer 500 while its health path passes: promoted (its
        health is fine), it is rolled back within the window once the
        minimum of requests is seen, and the history says why.
        """
        green = await startApp(self, "green")
        blue = await startApp(self, "blue")
        pool = HTTPConnectionPool(_reactor(), persistent=False)
        await setMode(pool, blue, "pages500")
        args = serviceArguments(
            green.url,
            blue.url,
            *QUIET_HEALTH,
            "--health-path",
            "/healthz",
            "--analysis-window",
            "60",
            "--analysis-min-requests",
            "10",
        )
        service = runService(self.addCleanup, args)
        states = service.health.health.values()
        await waitFor(lambda: all(s.up for s in states), "both apps up")
        admin = f"http://127.0.0.1:{listeningPort(service, 'admin').getHost().port}"  # type: ignore[attr-defined]
        proxy = f"http://127.0.0.1:{listeningPort(service, 'port').getHost().port}"  # type: ignore[attr-defined]
        out, err, code = await bluegreen("--admin", admin, "promote")
        self.assertEqual((err, code), ("", 0))
        codes = [(await call(proxy + "/")).code for _ in range(10)]
        self.assertEqual(codes, [500] * 10)
        await waitFor(lambda: service.controller.active == "green", "the rollback")
        self.assertEqual(
            service.controller.history[-1].reason,
            "rollback: 5xx 100 % over 10 requests",
        )
        self.assertEqual((await call(proxy + "/")).code, 200)
        out, err, code = await bluegreen("--admin", admin, "status")
        self.assertIn("rollback: 5xx 100 % over 10 requests", out)
        status = (await call(admin + "/api/status")).json
        self.assertEqual(
            status["promotion"]["analysis"]["last"],
            "blue rolled back to green: 5xx 100 % over 10 requests",
        )


def _reactor() -> Any:
    """
    @return: The global reactor.
    """
    from twisted.internet import reactor

    return reactor
