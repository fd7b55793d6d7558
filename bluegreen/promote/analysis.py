# -*- test-case-name: tests.test_promote_analysis -*-
"""
Post-promotion analysis and automatic rollback (Argo Rollouts'
C{postPromotionAnalysis} followed by an abort).

For C{--analysis-window} seconds after every planned switch, the new live
environment's proxied responses are counted (the proxy reports each one to
its L{ProxyMetrics}; L{ObservedMetrics} passes them on to L{Analysis} too,
so the proxy itself is unchanged).  Once at least C{--analysis-min-requests}
responses were seen, a 5xx share above C{--max-error-rate} per cent, or a
p95 latency above C{--max-p95} seconds, sends the traffic back to the
previous environment at once, as a planned switch (so the database sync
runs as for any switch), recorded as e.g. C{"rollback: 5xx 38 % over 50
requests"}.  The rollback itself is not analysed, and skips the promotion
checks (the previous environment was serving a moment ago).
"""

from __future__ import annotations

from bisect import insort
from random import Random
from typing import Any

from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from bluegreen.controller import Controller, Switch, SwitchRefused
from bluegreen.promote.settings import AnalysisSettings
from bluegreen.proxy.interfaces import ProxyMetrics

#: The prefix of a rollback's reason in the history.
ROLLBACK = "rollback: "

#: The most durations a window keeps for its p95 (see L{Analysis._sample}).
SAMPLE = 2000


@define(eq=False)
class ObservedMetrics:
    """
    The proxy's metrics, with every ended request also told to an
    L{Analysis}: a L{ProxyMetrics} for the proxy resource.

    @ivar metrics: The metrics the proxy had, or L{None}.
    @ivar analysis: Told of each response.
    """

    metrics: ProxyMetrics | None
    analysis: Analysis

    def request(
        self, environment: str, method: bytes, status: int, size: int, seconds: float
    ) -> None:
        """
        See L{ProxyMetrics.request}.
        """
        if self.metrics is not None:
            self.metrics.request(environment, method, status, size, seconds)
        self.analysis.observe(environment, status, seconds)

    def upstreamError(self, environment: str, kind: str) -> None:
        """
        See L{ProxyMetrics.upstreamError}.
        """
        if self.metrics is not None:
            self.metrics.upstreamError(environment, kind)

    def retry(self, source: str, to: str, kind: str) -> None:
        """
        See L{ProxyMetrics.retry}.
        """
        if self.metrics is not None:
            self.metrics.retry(source, to, kind)


@define(eq=False)
class Analysis:
    """
    Watches the new live environment after each planned switch, and rolls
    back a bad one.

    @ivar controller: The switch (its C{onSwitch} starts each window).
    @ivar clock: Times the window.
    @ivar settings: The thresholds.
    @ivar watching: The environment watched, or L{None} outside a window.
    @ivar previous: Where a rollback goes.
    @ivar until: When the window ends.
    @ivar requests: Responses counted in this window.
    @ivar errors: Of those, 5xx.
    @ivar last: What the last window concluded, in words, or L{None}.
    """

    controller: Controller
    clock: IReactorTime
    settings: AnalysisSettings
    watching: str | None = None
    previous: str = ""
    until: float = 0.0
    requests: int = 0
    errors: int = 0
    last: str | None = None
    _durations: list[float] = field(factory=list)
    _random: Random = field(factory=Random)
    _call: IDelayedCall | None = None
    _rollingBack: Deferred[Any] | None = None
    _log = Logger()

    def __attrs_post_init__(self) -> None:
        self.controller.onSwitch.append(self.switched)

    def switched(self, record: Switch, kind: str) -> None:
        """
        A switch (the controller's observer): a planned one starts a
        window; any other ends the current one.

        @param record: The switch.
        @param kind: C{"manual"} for a planned switch, else what moved the
            traffic.
        """
        self._end()
        if (
            kind != "manual"
            or record.reason.startswith(ROLLBACK)
            or self.settings.window <= 0
        ):
            return
        self.watching, self.previous = record.to, record.source
        self.until = self.clock.seconds() + self.settings.window
        self._call = self.clock.callLater(self.settings.window, self._passed)

    def observe(self, environment: str, status: int, seconds: float) -> None:
        """
        A proxied request ended (cheap unless it is watched).

        @param environment: Where it went.
        @param status: The status sent (0: the client left first).
        @param seconds: Its duration.
        """
        if environment != self.watching or status == 0:
            return
        self.requests += 1
        if status >= 500:
            self.errors += 1
        settings = self.settings
        if settings.maxP95 is not None:
            self._sample(seconds)
        if self.requests < settings.minRequests:
            return
        rate = 100.0 * self.errors / self.requests
        if rate > settings.maxErrorRate:
            self._rollback(f"5xx {rate:.0f} % over {self.requests} requests")
            return
        p95 = self.p95()
        if settings.maxP95 is not None and p95 is not None and p95 > settings.maxP95:
            self._rollback(
                f"p95 {p95:.3g} s over {self.requests} requests "
                f"(max {settings.maxP95:g} s)"
            )

    def _sample(self, seconds: float) -> None:
        """
        Keep C{seconds} in the window's sample of durations, sorted: every
        one up to L{SAMPLE} of them, then a uniform random sample of that
        size (reservoir sampling), so a busy window costs bounded memory
        and time per request.
        """
        durations = self._durations
        if len(durations) < SAMPLE:
            insort(durations, seconds)
            return
        slot = self._random.randrange(self.requests)
        if slot < SAMPLE:
            del durations[self._random.randrange(SAMPLE)]
            insort(durations, seconds)

    def p95(self) -> float | None:
        """
        @return: The 95th percentile of this window's durations (nearest
            rank, over a sample of at most L{SAMPLE}), or L{None} without
            any (they are kept only with C{maxP95}).
        """
        durations = self._durations
        if not durations:
            return None
        rank = max(0, -(-95 * len(durations) // 100) - 1)
        return durations[rank]

    def status(self) -> dict[str, Any]:
        """
        @return: The window in progress (or L{None}) and the last verdict.
        """
        window = None
        if self.watching is not None:
            window = {
                "environment": self.watching,
                "until": self.until,
                "requests": self.requests,
                "errors": self.errors,
                "p95": self.p95(),
            }
        return {"window": window, "last": self.last}

    def stop(self) -> None:
        """
        End the window (the service is stopping).
        """
        self._end()
        rolling, self._rollingBack = self._rollingBack, None
        if rolling is not None:
            rolling.cancel()

    def _passed(self) -> None:
        self._call = None
        watched = self.watching
        verdict = (
            f"{watched} passed: {self.errors} 5xx over {self.requests} requests"
            if self.requests >= self.settings.minRequests
            else f"{watched}: only {self.requests} requests in "
            f"{self.settings.window:g} s, too few to judge"
        )
        self.last = verdict
        self._log.info("post-promotion analysis: {verdict}", verdict=verdict)
        self._end()

    def _end(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self.watching = None
        self.requests = self.errors = 0
        self._durations = []

    def _rollback(self, why: str) -> None:
        source, to = self.watching, self.previous
        self._end()
        reason = ROLLBACK + why
        self.last = f"{source} rolled back to {to}: {why}"
        self._log.warn(
            "post-promotion analysis: {source} fails ({why}): rolling back to {to}",
            source=source,
            why=why,
            to=to,
            event="rollback",
        )
        self._rollingBack = Deferred.fromCoroutine(self._switchBack(to, reason))

    async def _switchBack(self, to: str, reason: str) -> None:
        try:
            await self.controller.plannedSwitch(to, reason, verify=False)
        except SwitchRefused as e:
            self.last = f"rollback to {to} refused: {e}"
            self._log.error(
                "rollback to {to} refused: {why}", to=to, why=str(e), event="rollback"
            )
        except CancelledError:
            pass  # the service is stopping
        except Exception:
            self.last = f"rollback to {to} failed (see the log)"
            self._log.failure("rollback to {to} failed", to=to)
        finally:
            self._rollingBack = None
