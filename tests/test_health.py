# -*- test-case-name: tests.test_health -*-
"""
Tests for L{bluegreen.health}: the settings, and the checks' results and
thresholds, deterministic (see L{tests._healthtest}).
"""

from __future__ import annotations

from twisted.internet.error import (
    ConnectionClosed,
)
from twisted.trial.unittest import SynchronousTestCase

from bluegreen.health import (
    DEFAULT_MAX_BODY,
    CheckResult,
    EnvironmentHealth,
    HealthSettings,
    StatusSet,
)
from tests._healthtest import (
    BLUE,
    GREEN,
    MonitorMixin,
)


class StatusSetTests(SynchronousTestCase):
    """
    L{StatusSet.parse} reads C{--health-expect}: statuses, classes, ranges.
    """

    def test_single(self) -> None:
        """
        One status matches that status only.
        """
        statuses = StatusSet.parse("200")
        self.assertEqual(statuses.ranges, ((200, 200),))
        self.assertEqual(statuses.text, "200")
        self.assertIn(200, statuses)
        self.assertNotIn(201, statuses)
        self.assertNotIn(199, statuses)

    def test_list(self) -> None:
        """
        A comma-separated list matches each of its statuses.
        """
        statuses = StatusSet.parse("200,204")
        self.assertEqual(statuses.ranges, ((200, 200), (204, 204)))
        self.assertIn(200, statuses)
        self.assertIn(204, statuses)
        self.assertNotIn(202, statuses)

    def test_class(self) -> None:
        """
        C{2xx} matches 200 to 299, in either case.
        """
        for text in ("2xx", "2XX"):
            statuses = StatusSet.parse(text)
            self.assertEqual(statuses.ranges, ((200, 299),))
            self.assertIn(200, statuses)
            self.assertIn(299, statuses)
            self.assertNotIn(300, statuses)
            self.assertNotIn(199, statuses)

    def test_range(self) -> None:
        """
        C{low-high} is inclusive and mixes with statuses and classes.
        """
        statuses = StatusSet.parse("200-204,304,5xx")
        self.assertEqual(statuses.ranges, ((200, 204), (304, 304), (500, 599)))
        for code in (200, 202, 204, 304, 500, 599):
            self.assertIn(code, statuses)
        for code in (205, 303, 305, 499):
            self.assertNotIn(code, statuses)

    def test_spaces(self) -> None:
        """
        Blanks around items and around the whole are ignored; the text is
        kept (stripped) for messages.
        """
        statuses = StatusSet.parse(" 200 , 204 ")
        self.assertEqual(statuses.ranges, ((200, 200), (204, 204)))
        self.assertEqual(statuses.text, "200 , 204")

    def test_notAnInteger(self) -> None:
        """
        Only integers are statuses: not strings, floats or L{None}.
        """
        statuses = StatusSet.parse("2xx")
        self.assertNotIn("200", statuses)
        self.assertNotIn(200.0, statuses)
        self.assertNotIn(None, statuses)

    def test_garbage(self) -> None:
        """
        An item that is neither a status, a class nor a range is named in
        the error, with examples of what is accepted.
        """
        error = self.assertRaises(ValueError, StatusSet.parse, "200,ok")
        self.assertEqual(
            str(error),
            "'ok' is not a status, class or range (e.g. 200, 2xx, 200-299)",
        )

    def test_empty(self) -> None:
        """
        An empty specification, or an empty item, is refused.
        """
        for text in ("", "200,,204", "200,"):
            error = self.assertRaises(ValueError, StatusSet.parse, text)
            self.assertEqual(
                str(error),
                "'' is not a status, class or range (e.g. 200, 2xx, 200-299)",
            )

    def test_malformed(self) -> None:
        """
        Near misses are refused too: two digits, four digits, a class of a
        class that does not exist, a half-open range.
        """
        for text in ("20", "2000", "0xx", "6xx", "200-", "2x"):
            self.assertRaises(ValueError, StatusSet.parse, text)

    def test_backwards(self) -> None:
        """
        A range whose low end is above its high end is refused.
        """
        error = self.assertRaises(ValueError, StatusSet.parse, "299-200")
        self.assertEqual(str(error), "'299-200': the range is backwards")

    def test_outOfRange(self) -> None:
        """
        Statuses and range ends outside 100-599 are refused.
        """
        for text in ("600", "099", "200-600", "050-200"):
            error = self.assertRaises(ValueError, StatusSet.parse, text)
            self.assertEqual(str(error), f"{text!r} is outside 100-599")


class HealthSettingsTests(SynchronousTestCase):
    """
    L{HealthSettings} defaults are the ones the spec (issue 3) gives.
    """

    def test_defaults(self) -> None:
        """
        Every 5 s, fast 1 s, C{GET /}, expect 200, 2 s timeout, fall 1,
        rise 2.
        """
        settings = HealthSettings()
        self.assertEqual(settings.interval, 5.0)
        self.assertEqual(settings.fastInterval, 1.0)
        self.assertEqual(settings.path, "/")
        self.assertEqual(settings.expect, StatusSet.parse("200"))
        self.assertEqual(settings.timeout, 2.0)
        self.assertEqual(settings.fall, 1)
        self.assertEqual(settings.rise, 2)


class TransitionalTests(SynchronousTestCase):
    """
    L{EnvironmentHealth.transitional} is true while an environment heads for
    the other state.
    """

    def test_unknown(self) -> None:
        """
        Before the first check, it is not.
        """
        self.assertFalse(EnvironmentHealth(GREEN).transitional)

    def test_upFailing(self) -> None:
        """
        An environment that is up with failures is heading down.
        """
        self.assertTrue(EnvironmentHealth(GREEN, up=True, failures=1).transitional)
        self.assertFalse(EnvironmentHealth(GREEN, up=True, successes=3).transitional)

    def test_downSucceeding(self) -> None:
        """
        An environment that is down with successes is heading up.
        """
        self.assertTrue(EnvironmentHealth(GREEN, up=False, successes=1).transitional)
        self.assertFalse(EnvironmentHealth(GREEN, up=False, failures=3).transitional)


class FirstCheckTests(MonitorMixin):
    """
    The first check after start decides at once, whatever the thresholds.
    """

    def test_unknownBeforeStart(self) -> None:
        """
        Before any check, nothing is known and nothing is up.
        """
        monitor = self.monitor(fall=3, rise=3)
        self.assertIsNone(monitor.health["green"].up)
        self.assertFalse(monitor.isUp("green"))
        self.assertFalse(monitor.isUp("red"))
        self.assertEqual(self.green.requests, [])

    def test_up(self) -> None:
        """
        A passing first check marks the environment up, even with C{rise}
        above 1, and tells the observers.
        """
        monitor = self.monitor(rise=3)
        monitor.startService()
        self.assertTrue(monitor.isUp("green"))
        self.assertEqual(self.events, [("green", True, "status 200")])
        self.assertEqual(
            monitor.health["green"].last,
            CheckResult(True, "status 200", 0.0, 0.0, 200),
        )

    def test_down(self) -> None:
        """
        A failing first check marks the environment down, even with C{fall}
        above 1.
        """
        self.green.code = 503
        monitor = self.monitor(fall=3)
        monitor.startService()
        self.assertIs(monitor.health["green"].up, False)
        self.assertFalse(monitor.isUp("green"))
        self.assertEqual(self.events, [("green", False, "status 503 (expected 200)")])

    def test_request(self) -> None:
        """
        The check is a C{GET} of the health path (query included) with a
        C{User-Agent} that says who asks.
        """
        monitor = self.monitor(path="/healthz?deep=1")
        monitor.startService()
        [request] = self.green.requests
        self.assertEqual(request.method, b"GET")
        self.assertEqual(request.uri, b"/healthz?deep=1")
        self.assertEqual(
            request.requestHeaders.getRawHeaders(b"user-agent"), [b"bluegreen-health"]
        )

    def test_bothEnvironments(self) -> None:
        """
        Every environment is checked at start, each on its own.
        """
        self.blue.code = 500
        monitor = self.monitor((GREEN, BLUE))
        monitor.startService()
        self.assertEqual(len(self.green.requests), 1)
        self.assertEqual(len(self.blue.requests), 1)
        self.assertTrue(monitor.isUp("green"))
        self.assertFalse(monitor.isUp("blue"))
        self.assertEqual(
            sorted(self.events),
            [
                ("blue", False, "status 500 (expected 200)"),
                ("green", True, "status 200"),
            ],
        )


class StatusTests(MonitorMixin):
    """
    A check passes when the status is expected; the reason names it.
    """

    def test_unexpected(self) -> None:
        """
        A status outside C{expect} fails, and says what was expected.
        """
        self.green.code = 503
        monitor = self.monitor()
        monitor.startService()
        last = monitor.health["green"].last
        assert last is not None
        self.assertFalse(last.ok)
        self.assertEqual(last.status, 503)
        self.assertEqual(last.reason, "status 503 (expected 200)")

    def test_expectedList(self) -> None:
        """
        Any status of a list passes.
        """
        self.green.code = 204
        self.green.body = b""
        monitor = self.monitor(expect=StatusSet.parse("200,204"))
        monitor.startService()
        self.assertTrue(monitor.isUp("green"))
        self.assertEqual(self.events, [("green", True, "status 204")])

    def test_expectedClass(self) -> None:
        """
        The expectation is quoted as given.
        """
        self.green.code = 404
        monitor = self.monitor(expect=StatusSet.parse("2xx"))
        monitor.startService()
        self.assertEqual(self.events, [("green", False, "status 404 (expected 2xx)")])

    def test_redirectNotFollowed(self) -> None:
        """
        A redirect is not followed: its own status is judged (302 is not
        200), and the target is never requested.
        """
        self.green.code = 302
        self.green.headers = {b"location": b"http://127.0.0.1:5002/elsewhere"}
        monitor = self.monitor()
        monitor.startService()
        self.assertEqual(self.events, [("green", False, "status 302 (expected 200)")])
        self.assertEqual([r.uri for r in self.green.requests], [b"/"])

    def test_redirectExpected(self) -> None:
        """
        A redirect passes when 3xx is expected.
        """
        self.green.code = 302
        self.green.headers = {b"location": b"/elsewhere"}
        monitor = self.monitor(expect=StatusSet.parse("2xx,3xx"))
        monitor.startService()
        self.assertEqual(self.events, [("green", True, "status 302")])
        self.assertEqual(len(self.green.requests), 1)


class BodyTests(MonitorMixin):
    """
    The body is read up to L{DEFAULT_MAX_BODY} bytes (more in
    L{tests.test_health_body}).
    """

    def test_largestAllowed(self) -> None:
        """
        A body of exactly L{DEFAULT_MAX_BODY} bytes passes.
        """
        self.green.body = b"x" * DEFAULT_MAX_BODY
        monitor = self.monitor()
        monitor.startService()
        self.assertEqual(self.events, [("green", True, "status 200")])


class TimeoutTests(MonitorMixin):
    """
    The whole response, body included, must arrive within the timeout; a
    check that hangs is cancelled then, and its connection closed.
    """

    def test_noResponse(self) -> None:
        """
        A server that never answers fails the check after exactly
        C{timeout} seconds; the connection is aborted.
        """
        self.green.hang = True
        monitor = self.monitor(timeout=2.0)
        monitor.startService()
        [request] = self.green.requests
        lost = request.notifyFinish()
        self.clock.advance(1.999)
        self.assertEqual(self.events, [])
        self.clock.advance(0.001)
        self.assertEqual(self.events, [("green", False, "timeout after 2 s")])
        last = monitor.health["green"].last
        assert last is not None
        self.assertEqual(last.latency, 2.0)
        self.stub.flush()
        self.failureResultOf(lost, ConnectionClosed)

    def test_stalledBody(self) -> None:
        """
        A server that sends the status and part of the body, then nothing,
        fails the check after C{timeout} seconds too, and that connection is
        closed (not left open for the server to end).
        """
        self.green.stall = True
        self.green.body = b"0123456789"
        monitor = self.monitor(timeout=0.5)
        monitor.startService()
        self.stub.flush()
        [request] = self.green.requests
        lost = request.notifyFinish()
        self.clock.advance(0.5)
        self.assertEqual(self.events, [("green", False, "timeout after 0.5 s")])
        self.stub.flush()
        self.failureResultOf(lost, ConnectionClosed)

    def test_slowButInTime(self) -> None:
        """
        A response that completes just inside the timeout passes; its
        latency is recorded.
        """
        self.green.hang = True
        monitor = self.monitor(timeout=2.0)
        monitor.startService()
        self.clock.advance(1.5)
        self.green.answer(self.green.requests[0], 200, b"late but fine")
        self.stub.flush()
        self.assertEqual(self.events, [("green", True, "status 200")])
        self.assertEqual(
            monitor.health["green"].last,
            CheckResult(True, "status 200", 1.5, 1.5, 200),
        )
        self.clock.advance(10)
        self.assertEqual(self.events, [("green", True, "status 200")])

    def test_loopGoesOn(self) -> None:
        """
        After a timeout, the loop checks again at the next turn.
        """
        self.green.hang = True
        monitor = self.monitor(timeout=2.0)
        monitor.startService()
        self.clock.advance(2)
        self.stub.flush()
        self.green.hang = False
        self.clock.advance(3)
        self.assertEqual(self.green.times, [0.0, 5.0])
        self.assertEqual(monitor.health["green"].successes, 1)


class FallTests(MonitorMixin):
    """
    C{fall} consecutive failures mark an up environment down.
    """

    def test_fall3(self) -> None:
        """
        With C{fall=3}, the third consecutive failure marks it down (and the
        observers hear it once).
        """
        monitor = self.monitor(fall=3)
        monitor.startService()
        self.green.code = 500
        self.advanceTo(5)
        self.assertTrue(monitor.isUp("green"))
        self.assertEqual(monitor.health["green"].failures, 1)
        self.advanceTo(6)
        self.assertTrue(monitor.isUp("green"))
        self.assertEqual(monitor.health["green"].failures, 2)
        self.advanceTo(7)
        self.assertFalse(monitor.isUp("green"))
        self.assertEqual(
            self.events,
            [
                ("green", True, "status 200"),
                ("green", False, "status 500 (expected 200)"),
            ],
        )
        self.advanceTo(30)
        self.assertEqual(len(self.events), 2)

    def test_successResets(self) -> None:
        """
        A success between failures starts the count again.
        """
        monitor = self.monitor(fall=3)
        monitor.startService()
        for code in (500, 500, 200, 500, 500):
            self.green.code = code
            self.clock.advance(5)
        state = monitor.health["green"]
        self.assertTrue(state.up)
        self.assertEqual(state.failures, 2)
        self.assertEqual(len(self.events), 1)

    def test_fall1(self) -> None:
        """
        With the default C{fall=1}, one failure is enough.
        """
        monitor = self.monitor()
        monitor.startService()
        self.green.code = 500
        self.clock.advance(5)
        self.assertFalse(monitor.isUp("green"))
        self.assertEqual(self.events[-1], ("green", False, "status 500 (expected 200)"))


class RiseTests(MonitorMixin):
    """
    C{rise} consecutive successes mark a down environment up.
    """

    def test_rise2(self) -> None:
        """
        With C{rise=2}, the second consecutive success marks it up.
        """
        self.green.code = 500
        monitor = self.monitor(rise=2)
        monitor.startService()
        self.green.code = 200
        self.clock.advance(5)
        self.assertFalse(monitor.isUp("green"))
        self.assertEqual(monitor.health["green"].successes, 1)
        self.clock.advance(1)
        self.assertTrue(monitor.isUp("green"))
        self.assertEqual(
            self.events,
            [
                ("green", False, "status 500 (expected 200)"),
                ("green", True, "status 200"),
            ],
        )

    def test_failureResets(self) -> None:
        """
        A failure between successes starts the count again.
        """
        self.green.code = 500
        monitor = self.monitor(rise=2)
        monitor.startService()
        for code in (200, 500, 200):
            self.green.code = code
            self.clock.advance(5)
        self.assertFalse(monitor.isUp("green"))
        self.assertEqual(monitor.health["green"].successes, 1)
        self.assertEqual(len(self.events), 1)
