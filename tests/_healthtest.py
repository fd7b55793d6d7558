# -*- test-case-name: tests.test_health -*-
"""
What the deterministic health monitor tests share: on a L{Clock}, over
in-memory HTTP.

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
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from bluegreen.environment import Environment
from bluegreen.health import (
    CachedConnections,
    HealthMonitor,
    HealthSettings,
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
