# -*- test-case-name: tests.test_health_monitor -*-
"""
Tests for L{bluegreen.health.HealthMonitor}: observers, intervals, passive
reports, checks on demand, stopping and history, deterministic (see
L{tests._healthtest}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import (
    ConnectionClosed,
    ConnectionRefusedError,
)
from twisted.logger import capturedLogs, formatEvent

from bluegreen.health import (
    HISTORY,
    CheckResult,
)
from tests._healthtest import (
    BLUE,
    GREEN,
    Event,
    FakeHTTP,
    FakePool,
    MonitorMixin,
    Pending,
)


class ObserverTests(MonitorMixin):
    """
    Observers hear every change of state once, and only changes.
    """

    def test_severalObservers(self) -> None:
        """
        Every observer hears every change, in order.
        """
        monitor = self.monitor()
        other: list[Event] = []
        monitor.subscribe(lambda *event: other.append(event))
        monitor.startService()
        self.green.code = 503
        self.clock.advance(5)
        self.clock.advance(5)
        self.assertEqual(
            self.events,
            [
                ("green", True, "status 200"),
                ("green", False, "status 503 (expected 200)"),
            ],
        )
        self.assertEqual(other, self.events)

    def test_observerRaises(self) -> None:
        """
        An observer that raises is logged; the others still hear the change,
        and the monitor goes on checking.
        """
        monitor = self.monitor()
        later: list[Event] = []

        def broken(name: str, up: bool, reason: str) -> None:
            """
            Fail.
            """
            raise ZeroDivisionError()

        monitor.subscribe(broken)
        monitor.subscribe(lambda *event: later.append(event))
        monitor.startService()
        self.assertEqual(later, [("green", True, "status 200")])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.green.code = 500
        self.clock.advance(5)
        self.assertEqual(len(later), 2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.clock.advance(5)
        self.assertEqual(self.green.times, [0.0, 5.0, 10.0])


class IntervalTests(MonitorMixin):
    """
    Steady environments are checked every C{interval}; one that is changing
    state every C{fastInterval}.
    """

    def test_steady(self) -> None:
        """
        An environment that stays up is checked every C{interval}.
        """
        monitor = self.monitor(interval=5.0, fastInterval=1.0)
        monitor.startService()
        self.advanceTo(20)
        self.assertEqual(self.green.times, [0.0, 5.0, 10.0, 15.0, 20.0])

    def test_fastWhileFalling(self) -> None:
        """
        From the first failure of an up environment until it is down, it is
        checked every C{fastInterval}; once down, every C{interval} again.
        """
        monitor = self.monitor(fall=3, interval=5.0, fastInterval=1.0)
        monitor.startService()
        self.green.code = 500
        self.advanceTo(15)
        self.assertFalse(monitor.isUp("green"))
        self.assertEqual(self.green.times, [0.0, 5.0, 6.0, 7.0, 10.0, 15.0])

    def test_fastWhileRising(self) -> None:
        """
        From the first success of a down environment until it is up, it is
        checked every C{fastInterval}; once up, every C{interval} again.
        """
        self.green.code = 500
        monitor = self.monitor(rise=3, interval=5.0, fastInterval=1.0)
        monitor.startService()
        self.advanceTo(4)
        self.green.code = 200
        self.advanceTo(15)
        self.assertTrue(monitor.isUp("green"))
        self.assertEqual(self.green.times, [0.0, 5.0, 6.0, 7.0, 10.0, 15.0])

    def test_fastAfterCheckNow(self) -> None:
        """
        When a check outside the schedule (C{checkNow}) starts a change of
        state, the next scheduled check comes C{fastInterval} later, not at
        the turn booked before.
        """
        monitor = self.monitor(fall=3, interval=5.0, fastInterval=1.0)
        monitor.startService()
        self.advanceTo(2)
        self.green.code = 500
        self.successResultOf(monitor.checkNow())
        self.advanceTo(4)
        self.assertFalse(monitor.isUp("green"))
        self.assertEqual(self.green.times, [0.0, 2.0, 3.0, 4.0])
        self.advanceTo(12)
        self.assertEqual(self.green.times, [0.0, 2.0, 3.0, 4.0, 7.0, 12.0])

    def test_fastAfterPassive(self) -> None:
        """
        A passive failure checks at once and brings the next scheduled
        check forward to the fast interval; only those active checks mark
        the environment down (with C{fall=4}: at 4 s before issue 11, when
        the passive failure counted as one; now at 5 s).
        """
        monitor = self.monitor(fall=4, interval=5.0, fastInterval=1.0)
        monitor.startService()
        self.advanceTo(2)
        self.green.code = 500
        monitor.reportPassive("green", "connection refused")
        self.advanceTo(4)
        self.assertTrue(monitor.isUp("green"))
        self.assertEqual(self.green.times, [0.0, 2.0, 3.0, 4.0])
        self.advanceTo(5)
        self.assertFalse(monitor.isUp("green"))

    def test_fastWhileSuspected(self) -> None:
        """
        After a passive failure the environment is checked at the fast
        interval until an active check passes, then at the normal one.
        """
        monitor = self.monitor(fall=4, interval=5.0, fastInterval=1.0)
        monitor.startService()
        self.green.hang = True
        monitor.reportPassive("green", "connection refused")
        self.assertTrue(monitor.health["green"].suspected)
        self.green.hang = False
        self.green.answer(self.green.requests[1], 200)
        self.stub.flush()
        self.assertFalse(monitor.health["green"].suspected)
        self.advanceTo(4)
        self.assertEqual(self.green.times, [0.0, 0.0])
        self.advanceTo(5)
        self.assertEqual(self.green.times, [0.0, 0.0, 5.0])


class LoopSurvivalTests(MonitorMixin):
    """
    Whatever the HTTP client does, a check fails cleanly and the loop goes
    on.
    """

    def test_raisesSynchronously(self) -> None:
        """
        A client that raises from C{get} fails the check with the error's
        name and message.
        """

        def explode() -> Deferred[Any]:
            """
            Fail before returning a Deferred.
            """
            raise RuntimeError("boom")

        http = FakeHTTP(explode)
        monitor = self.monitor(http=http)
        monitor.startService()
        self.assertEqual(self.events, [("green", False, "RuntimeError: boom")])
        self.clock.advance(5)
        self.clock.advance(5)
        self.assertEqual(len(http.urls), 3)
        self.assertEqual(len(monitor.health["green"].history), 3)

    def test_refused(self) -> None:
        """
        A client whose request fails with L{ConnectionRefusedError} fails the
        check as "connection refused".
        """
        http = FakeHTTP(lambda: fail(ConnectionRefusedError()))
        monitor = self.monitor(http=http)
        monitor.startService()
        self.assertEqual(self.events, [("green", False, "connection refused")])
        self.clock.advance(5)
        self.assertEqual(len(http.urls), 2)

    def test_neverFires(self) -> None:
        """
        A request that never completes is cancelled at the timeout and the
        loop checks again at the next turn.
        """
        pending = Pending()
        http = FakeHTTP(pending)
        monitor = self.monitor(http=http, timeout=2.0)
        monitor.startService()
        self.clock.advance(2)
        self.assertEqual(pending.cancelled, 1)
        self.assertEqual(self.events, [("green", False, "timeout after 2 s")])
        self.clock.advance(3)
        self.assertEqual(len(http.urls), 2)

    def test_neverFiresNoCanceller(self) -> None:
        """
        A request whose Deferred cannot be cancelled times out all the same.
        """
        http = FakeHTTP(lambda: Deferred())
        monitor = self.monitor(http=http, timeout=2.0)
        monitor.startService()
        self.clock.advance(2)
        self.assertEqual(self.events, [("green", False, "timeout after 2 s")])
        self.clock.advance(3)
        self.assertEqual(len(http.urls), 2)

    def test_request(self) -> None:
        """
        The client is asked for the environment's URL plus the path, without
        following redirects.
        """
        http = FakeHTTP(lambda: fail(ConnectionRefusedError()))
        monitor = self.monitor((BLUE,), http=http, path="/health")
        monitor.startService()
        self.assertEqual(http.urls, ["http://127.0.0.1:5001/health"])
        self.assertIs(http.kwargs[0]["allow_redirects"], False)


class PassiveTests(MonitorMixin):
    """
    L{HealthMonitor.reportPassive}: a failure seen on proxied traffic is
    evidence, counted and checked at once, never a failed check (issue 11
    reversed the rule these tests asserted before: a passive failure no
    longer adds to C{failures} nor marks an environment down by itself).
    """

    def test_counts(self) -> None:
        """
        A passive failure is shown in the history with the proxy's reason
        and counted in C{passiveFailures}, but not in C{failures} (before
        issue 11: 2 failures, the passive one and the check); the check it
        triggers runs at once and alone decides.
        """
        monitor = self.monitor(fall=3)
        monitor.startService()
        self.clock.advance(1)
        self.green.code = 500
        monitor.reportPassive("green", "connection refused")
        state = monitor.health["green"]
        self.assertEqual(
            list(state.history)[-2],
            CheckResult(False, "connection refused", 1.0, 0.0, passive=True),
        )
        self.assertEqual(self.green.times, [0.0, 1.0])
        self.assertEqual(state.failures, 1)
        self.assertEqual(state.passiveFailures, 1)
        self.assertTrue(state.up)

    def test_noStateChangeUntilCheckFails(self) -> None:
        """
        With C{fall=1} a passive failure schedules a check at once and
        changes nothing by itself (before issue 11 it marked the
        environment down at once); when that check fails, the environment
        is down with the check's reason.
        """
        monitor = self.monitor()
        monitor.startService()
        self.green.hang = True
        monitor.reportPassive("green", "connection reset before a response")
        self.assertEqual(self.events, [("green", True, "status 200")])
        self.assertEqual(len(self.green.requests), 2)
        last = monitor.health["green"].last
        assert last is not None
        self.assertFalse(last.passive)
        self.green.answer(self.green.requests[1], 503)
        self.stub.flush()
        self.assertEqual(
            self.events,
            [
                ("green", True, "status 200"),
                ("green", False, "status 503 (expected 200)"),
            ],
        )

    def test_passingCheckNoChange(self) -> None:
        """
        A passive failure whose check passes leaves the environment up.
        """
        monitor = self.monitor()
        monitor.startService()
        monitor.reportPassive("green", "connection reset before a response")
        self.assertEqual(self.events, [("green", True, "status 200")])
        self.assertTrue(monitor.isUp("green"))

    def test_confirming(self) -> None:
        """
        L{HealthMonitor.confirming} gives a Deferred for the check a passive
        failure started, firing once that check is recorded (so the proxy
        can hold requests until the verdict); there is none before a
        passive failure, for an ordinary scheduled check, or afterwards.
        """
        monitor = self.monitor()
        monitor.startService()
        self.assertIsNone(monitor.confirming("green"))
        self.green.hang = True
        monitor.reportPassive("green", "connection reset before a response")
        waiting = monitor.confirming("green")
        assert waiting is not None
        self.assertNoResult(waiting)
        self.green.answer(self.green.requests[1], 503)
        self.stub.flush()
        self.assertIsNone(self.successResultOf(waiting))
        self.assertFalse(monitor.isUp("green"))
        self.assertIsNone(monitor.confirming("green"))

    def test_confirmingScheduledCheck(self) -> None:
        """
        A scheduled check in flight is not a confirmation: requests are not
        held for it.
        """
        monitor = self.monitor()
        self.green.hang = True
        monitor.startService()
        self.assertIsNone(monitor.confirming("green"))

    def test_confirmingCancelled(self) -> None:
        """
        Cancelling the Deferred (the client left) only forgets it: the check
        still completes and is recorded, with no error.
        """
        monitor = self.monitor()
        monitor.startService()
        self.green.hang = True
        monitor.reportPassive("green", "connection reset before a response")
        waiting = monitor.confirming("green")
        assert waiting is not None
        waiting.cancel()
        self.failureResultOf(waiting).trap(CancelledError)
        self.green.answer(self.green.requests[1], 200)
        self.stub.flush()
        self.assertTrue(monitor.isUp("green"))

    def test_onceBetweenActiveChecks(self) -> None:
        """
        A burst of passive failures is one history entry until an active
        check completes, and triggers only one check; each is counted in
        C{passiveFailures}, none in C{failures} (before issue 11 the third
        passive failure here made the third failure and marked it down).
        """
        monitor = self.monitor(fall=3)
        monitor.startService()
        self.green.hang = True
        for _ in range(5):
            monitor.reportPassive("green", "connection refused")
        state = monitor.health["green"]
        self.assertEqual(state.failures, 0)
        self.assertEqual(state.passiveFailures, 5)
        self.assertEqual(len([r for r in state.history if r.passive]), 1)
        self.assertEqual(len(self.green.requests), 2)
        self.green.answer(self.green.requests[1], 500)
        self.stub.flush()
        self.assertEqual(state.failures, 1)
        self.assertTrue(state.up)
        monitor.reportPassive("green", "connection refused")
        self.assertEqual(state.failures, 1)
        self.assertTrue(state.up)
        self.assertEqual(len(self.green.requests), 3)

    def test_logOncePerPathPerMinute(self) -> None:
        """
        Passive failures are logged at most once per path per minute per
        environment; the others are only counted.
        """
        monitor = self.monitor((GREEN, BLUE))
        logged = self.enterContext(capturedLogs())
        monitor.startService()
        for _ in range(3):
            monitor.reportPassive("green", "proxied request: reset", "/a")
            monitor.reportPassive("green", "proxied request: reset", "/b")
            monitor.reportPassive("blue", "proxied request: reset", "/a")
        passive = [e for e in logged if e.get("passive")]
        self.assertEqual(
            [(e["name"], e["path"]) for e in passive],
            [("green", "/a"), ("green", "/b"), ("blue", "/a")],
        )
        self.assertEqual(
            formatEvent(passive[0]),
            "green: proxied request: reset on /a (1 passive failures so far;"
            " checking green now)",
        )
        self.clock.advance(59)
        monitor.reportPassive("green", "proxied request: reset", "/a")
        self.assertEqual(len([e for e in logged if e.get("passive")]), 3)
        self.clock.advance(1)
        monitor.reportPassive("green", "proxied request: reset", "/a")
        passive = [e for e in logged if e.get("passive")]
        self.assertEqual(len(passive), 4)
        # green: 3 on /a, 3 on /b, then 2 more on /a.
        self.assertEqual(passive[-1]["count"], 8)

    def test_notRunning(self) -> None:
        """
        Before start, and after stop, passive failures are ignored and
        trigger nothing.
        """
        monitor = self.monitor()
        monitor.reportPassive("green", "connection refused")
        monitor.startService()
        self.successResultOf(monitor.stopService())
        monitor.reportPassive("green", "connection refused")
        self.assertEqual(len(monitor.health["green"].history), 1)
        self.assertEqual(len(self.green.requests), 1)

    def test_unknownEnvironment(self) -> None:
        """
        A passive failure for an environment the monitor does not check is
        ignored.
        """
        monitor = self.monitor()
        monitor.startService()
        monitor.reportPassive("red", "connection refused")
        self.assertEqual(list(monitor.health), ["green"])
        self.assertEqual(len(self.green.requests), 1)


class CheckNowTests(MonitorMixin):
    """
    L{HealthMonitor.checkNow} checks outside the schedule, without
    duplicating checks in flight.
    """

    def test_all(self) -> None:
        """
        Without names, every environment is checked; the Deferred fires once
        the results are recorded.
        """
        monitor = self.monitor((GREEN, BLUE))
        monitor.startService()
        self.clock.advance(1)
        self.blue.code = 503
        self.successResultOf(monitor.checkNow())
        self.assertEqual(self.green.times, [0.0, 1.0])
        self.assertEqual(self.blue.times, [0.0, 1.0])
        self.assertFalse(monitor.isUp("blue"))

    def test_some(self) -> None:
        """
        With names, only those are checked.
        """
        monitor = self.monitor((GREEN, BLUE))
        monitor.startService()
        self.successResultOf(monitor.checkNow(["blue"]))
        self.assertEqual(len(self.green.requests), 1)
        self.assertEqual(len(self.blue.requests), 2)

    def test_noDuplicate(self) -> None:
        """
        While a check is in flight, C{checkNow} (and the loop's own turn)
        wait for it instead of sending another request, and all fire when it
        is recorded.
        """
        self.green.hang = True
        monitor = self.monitor(timeout=10.0, interval=5.0)
        monitor.startService()
        first = monitor.checkNow()
        second = monitor.checkNow(["green"])
        self.clock.advance(5)
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.assertEqual(len(self.green.requests), 1)
        self.green.answer(self.green.requests[0], 200)
        self.stub.flush()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(len(monitor.health["green"].history), 1)
        self.assertEqual(self.events, [("green", True, "status 200")])


class StopTests(MonitorMixin):
    """
    L{HealthMonitor.stopService} stops the loops, cancels checks in flight
    without counting them, and closes the pool.
    """

    def test_stopsLoops(self) -> None:
        """
        After stop, nothing is scheduled and nothing is checked.
        """
        monitor = self.monitor((GREEN, BLUE))
        monitor.startService()
        self.successResultOf(monitor.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertEqual(len(self.green.requests), 1)
        self.assertEqual(len(self.blue.requests), 1)

    def test_cancelsInFlight(self) -> None:
        """
        A check in flight is cancelled (its connection aborted) and not
        recorded: stopping says nothing about health.
        """
        self.green.hang = True
        monitor = self.monitor()
        monitor.startService()
        lost = self.green.requests[0].notifyFinish()
        self.successResultOf(monitor.stopService())
        self.assertIsNone(monitor.health["green"].up)
        self.assertEqual(len(monitor.health["green"].history), 0)
        self.assertEqual(self.events, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.stub.flush()
        self.failureResultOf(lost, ConnectionClosed)

    def test_cancelsFakeRequest(self) -> None:
        """
        The client's request Deferred is cancelled; waiters on the check
        fire.
        """
        pending = Pending()
        monitor = self.monitor(http=FakeHTTP(pending))
        monitor.startService()
        waiting = monitor.checkNow()
        self.successResultOf(monitor.stopService())
        self.assertEqual(pending.cancelled, 1)
        self.successResultOf(waiting)
        self.assertEqual(self.events, [])

    def test_keepsState(self) -> None:
        """
        What was known before stop stays known.
        """
        monitor = self.monitor()
        monitor.startService()
        self.successResultOf(monitor.stopService())
        self.assertTrue(monitor.isUp("green"))

    def test_closesPool(self) -> None:
        """
        The pool is closed once, and stop completes when it is closed.
        """
        pool = FakePool()
        pool.result = Deferred()
        monitor = self.monitor(pool=pool)
        monitor.startService()
        stopping = monitor.stopService()
        self.assertEqual(pool.closed, 1)
        self.assertNoResult(stopping)
        pool.result.callback(None)
        self.assertIsNone(self.successResultOf(stopping))

    def test_restart(self) -> None:
        """
        A stopped monitor can be started again and checks again.
        """
        monitor = self.monitor()
        monitor.startService()
        self.successResultOf(monitor.stopService())
        self.clock.advance(1)
        monitor.startService()
        self.assertEqual(self.green.times, [0.0, 1.0])
        self.clock.advance(5)
        self.assertEqual(self.green.times, [0.0, 1.0, 6.0])


class HistoryTests(MonitorMixin):
    """
    Each environment keeps its latest L{HISTORY} checks.
    """

    def test_capped(self) -> None:
        """
        After more than L{HISTORY} checks, only the latest are kept, oldest
        first; C{last} is the newest.
        """
        monitor = self.monitor()
        monitor.startService()
        for _ in range(59):
            self.clock.advance(5)
        state = monitor.health["green"]
        self.assertEqual(HISTORY, 50)
        self.assertEqual(len(self.green.requests), 60)
        self.assertEqual(len(state.history), 50)
        self.assertEqual(state.history[0].when, 50.0)
        self.assertEqual(state.history[-1].when, 295.0)
        self.assertIs(state.last, state.history[-1])
