# -*- test-case-name: tests.test_health -*-
"""
Tests for L{bluegreen.health}: deterministic, on a L{Clock}, over in-memory
HTTP.

The monitor talks to a real C{twisted.web} resource through
L{treq.testing.StubTreq}, which wires a real L{Agent} to a real L{Site} over
L{twisted.test.iosim}.  A resource that answers at once is answered
synchronously; one that returns C{NOT_DONE_YET} needs C{stub.flush()} after
each write.  The monitor's timeouts and loops run on the L{Clock} given to
L{HealthMonitor} (StubTreq's own C{MemoryReactorClock} is never advanced):
C{clock.advance(timeout)} cancels a hanging check, the cancellation aborts
the in-memory connection, and C{flush()} delivers the abort to the server.

Where a test needs an HTTP client that fails in a way no resource can (raises
synchronously, never answers, is refused), L{FakeHTTP} stands in for treq.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from attrs import evolve
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import (
    ConnectionClosed,
    ConnectionRefusedError,
)
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from bluegreen.checkfailure import MAX_BODY
from bluegreen.environment import Environment
from bluegreen.health import (
    HISTORY,
    CachedConnections,
    CheckResult,
    EnvironmentHealth,
    HealthMonitor,
    HealthSettings,
    StatusSet,
)

GREEN = Environment.fromURL("green", "http://127.0.0.1:5002")
BLUE = Environment.fromURL("blue", "http://127.0.0.1:5001")

#: An observed change of state: (environment, up, reason).
Event = tuple[str, bool, str]


class Backend(Resource):
    """
    One environment's health endpoint, told by the test how to answer.

    @ivar code: The status to answer with.
    @ivar body: The body to answer with.
    @ivar headers: Extra response headers.
    @ivar hang: When C{True}, answer nothing (C{NOT_DONE_YET}).
    @ivar stall: When C{True}, send the status and half of the body, then
        nothing more.
    @ivar requests: Every request received, in order.
    @ivar times: The clock's time at each request.
    """

    isLeaf = True

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.code = 200
        self.body = b"ok"
        self.headers: dict[bytes, bytes] = {}
        self.hang = False
        self.stall = False
        self.requests: list[Request] = []
        self.times: list[float] = []

    def render_GET(self, request: Request) -> bytes | int:
        """
        Answer as configured.
        """
        self.requests.append(request)
        self.times.append(self.clock.seconds())
        if self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.code)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        if self.stall:
            request.setHeader(b"content-length", b"%d" % (len(self.body),))
            request.write(self.body[: len(self.body) // 2])
            return NOT_DONE_YET
        return self.body

    def answer(self, request: Request, code: int, body: bytes = b"") -> None:
        """
        Finish a request that was left hanging.
        """
        request.setResponseCode(code)
        request.write(body)
        request.finish()


class Router(Resource):
    """
    Hand each request to the backend of the environment it was sent to
    (every environment's port reaches the same StubTreq resource).
    """

    isLeaf = True

    def __init__(self, backends: dict[int, Backend]) -> None:
        super().__init__()
        self.backends = backends

    def render(self, request: Request) -> bytes | int:
        """
        Dispatch on the port the request was made to.
        """
        return self.backends[request.getHost().port].render(request)


class FakeHTTP:
    """
    Stands in for treq where a test needs a failure no server can produce.

    @ivar respond: Makes the result of each C{get}: may raise, or return
        any Deferred.
    @ivar urls: The URL of every C{get}.
    @ivar kwargs: The keyword arguments of every C{get}.
    """

    def __init__(self, respond: Callable[[], Deferred[Any]]) -> None:
        self.respond = respond
        self.urls: list[str] = []
        self.kwargs: list[dict[str, object]] = []

    def get(self, url: str, **kwargs: object) -> Deferred[Any]:
        """
        Record the call and answer with C{respond()}.
        """
        self.urls.append(url)
        self.kwargs.append(kwargs)
        return self.respond()


class Pending:
    """
    Makes Deferreds that never fire by themselves, and counts cancellations.

    @ivar made: Every Deferred made.
    @ivar cancelled: How many were cancelled.
    """

    def __init__(self) -> None:
        self.made: list[Deferred[Any]] = []
        self.cancelled = 0

    def __call__(self) -> Deferred[Any]:
        """
        Make one.
        """
        d: Deferred[Any] = Deferred(self._cancel)
        self.made.append(d)
        return d

    def _cancel(self, d: Deferred[Any]) -> None:
        """
        Count a cancellation (and leave the Deferred to fail with
        L{CancelledError}).
        """
        self.cancelled += 1


class FakePool:
    """
    A connection pool that records being closed.

    @ivar closed: How many times C{closeCachedConnections} was called.
    @ivar result: What C{closeCachedConnections} returns.
    """

    def __init__(self) -> None:
        self.closed = 0
        self.result: Deferred[None] = succeed(None)

    def closeCachedConnections(self) -> Deferred[None]:
        """
        Record the call.
        """
        self.closed += 1
        return self.result


class MonitorMixin(SynchronousTestCase):
    """
    Builds monitors on a L{Clock} over StubTreq, and stops them afterwards.
    """

    def setUp(self) -> None:
        """
        Make a clock and a backend for each environment.
        """
        self.clock = Clock()
        self.green = Backend(self.clock)
        self.blue = Backend(self.clock)
        self.stub = StubTreq(
            Router({GREEN.port: self.green, BLUE.port: self.blue}),
        )
        self.events: list[Event] = []

    def monitor(
        self,
        environments: Sequence[Environment] = (GREEN,),
        http: object = None,
        pool: CachedConnections | None = None,
        **settings: Any,
    ) -> HealthMonitor:
        """
        Make a monitor (not started) that records its events in
        C{self.events}, and is stopped at cleanup if still running.

        @param environments: What it checks.
        @param http: The client (default: C{self.stub}).
        @param pool: Its pool.
        @param settings: L{HealthSettings} fields other than the defaults.
        """
        monitor = HealthMonitor(
            {environment.name: environment for environment in environments},
            evolve(HealthSettings(), **settings),
            self.clock,
            self.stub if http is None else http,
            pool,
        )
        monitor.subscribe(lambda *event: self.events.append(event))
        self.addCleanup(self.stop, monitor)
        return monitor

    def stop(self, monitor: HealthMonitor) -> None:
        """
        Stop C{monitor} if running; the stop must complete at once.
        """
        if monitor.running:
            self.successResultOf(monitor.stopService())
        self.stub.flush()

    def advanceTo(self, when: float) -> None:
        """
        Advance the clock to C{when}, one second at a time (so every loop
        turn on the way runs at its own time).
        """
        while self.clock.seconds() < when:
            self.clock.advance(min(1.0, when - self.clock.seconds()))

    def failureReason(self, d: Deferred[Any]) -> BaseException:
        """
        @return: The exception C{d} failed with.
        """
        value = self.failureResultOf(d).value
        assert value is not None
        return value


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
    The whole body is read, up to L{MAX_BODY} bytes.
    """

    def test_largestAllowed(self) -> None:
        """
        A body of exactly L{MAX_BODY} bytes passes.
        """
        self.green.body = b"x" * MAX_BODY
        monitor = self.monitor()
        monitor.startService()
        self.assertEqual(self.events, [("green", True, "status 200")])

    def test_tooLarge(self) -> None:
        """
        One byte more fails, whatever the status.
        """
        self.green.body = b"x" * (MAX_BODY + 1)
        monitor = self.monitor()
        monitor.startService()
        self.stub.flush()
        self.assertEqual(
            self.events, [("green", False, "body larger than 65536 bytes")]
        )
        last = monitor.health["green"].last
        assert last is not None
        self.assertIsNone(last.status)


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
        A passive failure that starts a change of state also brings the next
        scheduled check forward.
        """
        monitor = self.monitor(fall=4, interval=5.0, fastInterval=1.0)
        monitor.startService()
        self.advanceTo(2)
        self.green.code = 500
        monitor.reportPassive("green", "connection refused")
        self.advanceTo(4)
        self.assertFalse(monitor.isUp("green"))
        self.assertEqual(self.green.times, [0.0, 2.0, 3.0, 4.0])


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
    L{HealthMonitor.reportPassive}: a failure seen on proxied traffic counts
    as one failed check, and triggers a check at once.
    """

    def test_counts(self) -> None:
        """
        A passive failure is recorded as a failed check with the proxy's
        reason; the check it triggers runs at once.
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
        self.assertEqual(state.failures, 2)
        self.assertTrue(state.up)

    def test_marksDown(self) -> None:
        """
        With C{fall=1} a passive failure marks the environment down at once,
        with the proxy's reason.
        """
        monitor = self.monitor()
        monitor.startService()
        self.green.hang = True
        monitor.reportPassive("green", "connection reset before a response")
        self.assertEqual(
            self.events,
            [
                ("green", True, "status 200"),
                ("green", False, "connection reset before a response"),
            ],
        )
        last = monitor.health["green"].last
        assert last is not None
        self.assertTrue(last.passive)

    def test_onceBetweenActiveChecks(self) -> None:
        """
        A burst of passive failures counts once until an active check
        completes, and triggers only one check.
        """
        monitor = self.monitor(fall=3)
        monitor.startService()
        self.green.hang = True
        for _ in range(5):
            monitor.reportPassive("green", "connection refused")
        state = monitor.health["green"]
        self.assertEqual(state.failures, 1)
        self.assertEqual(len(self.green.requests), 2)
        self.green.answer(self.green.requests[1], 500)
        self.stub.flush()
        self.assertEqual(state.failures, 2)
        self.assertTrue(state.up)
        monitor.reportPassive("green", "connection refused")
        self.assertEqual(state.failures, 3)
        self.assertFalse(state.up)
        self.assertEqual(len(self.green.requests), 3)

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
