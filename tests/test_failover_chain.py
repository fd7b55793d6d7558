# -*- test-case-name: tests.test_failover_chain -*-
"""
Deterministic tests of the failover chain, on a L{Clock}: a real
L{HealthMonitor} wired to the controller as C{makeService} does, checking
twisted.web resources through L{treq.testing.StubTreq}; and the proxy's
passive detection and retry on the standby, its requests sent to a real
L{ProxySite} over a L{StringTransport}, its pools connecting in memory
(L{twisted.test.iosim}) to twisted.web backends, or failing to.
"""

from __future__ import annotations

from typing import Any

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from bluegreen.controller import Controller, Switch, SwitchRefused
from bluegreen.health import HealthMonitor, HealthSettings
from bluegreen.proxy.pool import UpstreamPool
from bluegreen.proxy.resource import ProxyResource, ProxySite
from tests._failover import (
    BLUE,
    BOTH,
    GREEN,
    LogMixin,
)


class Backend(Resource):
    """
    An environment's application, answering every request with C{code}.

    @ivar name: Put in each response body.
    @ivar code: The status to answer with.
    @ivar requests: C{(method, path, body)} of each request.
    @ivar times: The clock's time at each request.
    """

    isLeaf = True

    def __init__(self, name: str, clock: Clock) -> None:
        super().__init__()
        self.name = name
        self.clock = clock
        self.code = 200
        self.requests: list[tuple[bytes, bytes, bytes]] = []
        self.times: list[float] = []

    def render(self, request: Request) -> bytes:
        """
        Answer C{"<name> <method> <body>"}, with C{code}.
        """
        body = request.content.read() if request.content is not None else b""
        method = request.method
        self.requests.append((method, request.uri, body))
        self.times.append(self.clock.seconds())
        request.setResponseCode(self.code)
        return b"%s %s %s" % (self.name.encode(), method, body)


class Router(Resource):
    """
    Hands each request to the backend of the environment it was sent to (all
    of StubTreq's requests reach this one resource).
    """

    isLeaf = True

    def __init__(self, backends: dict[int, Backend]) -> None:
        super().__init__()
        self.backends = backends
        self.holding: dict[int, list[Request]] = {}

    def render(self, request: Request) -> bytes | int:
        """
        Dispatch on the port the request was made to, or hold the request
        (a check in flight) when that port's requests are held.
        """
        port = request.getHost().port
        held = self.holding.get(port)
        if held is not None:
            held.append(request)
            return NOT_DONE_YET
        return self.backends[port].render(request)


class ChainMixin(LogMixin):
    """
    A real L{HealthMonitor} checking both environments through StubTreq and
    driving a L{Controller}, wired as C{makeService} wires them.
    """

    def setUp(self) -> None:
        """
        Make a clock at 0 and a backend per environment, both answering 200.
        """
        super().setUp()
        self.clock = MemoryReactorClock()
        self.green = Backend("green", self.clock)
        self.blue = Backend("blue", self.clock)
        self.router = Router({GREEN.port: self.green, BLUE.port: self.blue})
        self.stub = StubTreq(self.router)

    def start(
        self, fall: int = 1, rise: int = 2, **settings: Any
    ) -> tuple[HealthMonitor, Controller]:
        """
        Start a monitor checking every 5 s (every 1 s while an environment
        changes state) and a controller with green preferred.

        @param fall: Failures that mark an environment down.
        @param rise: Successes that mark it up.
        @param settings: Controller settings.
        @return: The monitor and the controller, stopped at cleanup.
        """
        health = HealthSettings(interval=5.0, fastInterval=1.0, fall=fall, rise=rise)
        monitor = HealthMonitor(dict(BOTH), health, self.clock, self.stub)
        controller = Controller.create(
            BOTH,
            "green",
            self.clock,
            isUp=lambda name: monitor.health[name].up,
            outageInterval=health.interval,
            **settings,
        )
        monitor.subscribe(controller.healthChanged)
        self.addCleanup(self.stop, monitor, controller)
        monitor.startService()
        return monitor, controller

    def stop(self, monitor: HealthMonitor, controller: Controller) -> None:
        """
        Stop both, as the service does.
        """
        controller.stop()
        if monitor.running:
            self.successResultOf(monitor.stopService())
        self.stub.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def advanceTo(self, when: float) -> None:
        """
        Advance the clock to C{when}, at most a second at a time.
        """
        while self.clock.seconds() < when:
            self.clock.advance(min(1.0, when - self.clock.seconds()))


class ChainTests(ChainMixin):
    """
    Health checks through the monitor's thresholds and intervals switch the
    controller.
    """

    def test_start(self) -> None:
        """
        The first checks decide at once; with both up nothing switches.
        """
        monitor, controller = self.start()
        self.assertEqual(
            {name: state.up for name, state in monitor.health.items()},
            {"green": True, "blue": True},
        )
        self.assertEqual((controller.active, controller.history), ("green", []))

    def test_fallOne(self) -> None:
        """
        With C{fall=1}, one failed check of the live environment fails over.
        """
        _monitor, controller = self.start(fall=1)
        self.green.code = 500
        self.clock.advance(4.9)
        self.assertEqual(controller.active, "green")
        self.clock.advance(0.1)
        self.assertEqual(controller.active, "blue")
        self.assertEqual(
            controller.history,
            [
                Switch(
                    5.0,
                    "green",
                    "blue",
                    "failover: green down: status 500 (expected 200)",
                )
            ],
        )
        self.assertEqual(self.green.times, [0.0, 5.0])

    def test_fallThree(self) -> None:
        """
        With C{fall=3}, the live environment fails over after three failed
        checks in a row, the second and third at the fast interval.
        """
        monitor, controller = self.start(fall=3)
        self.green.code = 500
        self.advanceTo(6)
        self.assertEqual(controller.active, "green")
        self.assertEqual(monitor.health["green"].failures, 2)
        self.clock.advance(1)
        self.assertEqual(controller.active, "blue")
        self.assertEqual(self.green.times, [0.0, 5.0, 6.0, 7.0])
        self.assertEqual(controller.history[0].when, 7.0)

    def test_fallThreeRecovered(self) -> None:
        """
        Failures short of C{fall}, followed by a success, switch nothing.
        """
        _monitor, controller = self.start(fall=3)
        self.green.code = 500
        self.advanceTo(6)
        self.green.code = 200
        self.advanceTo(60)
        self.assertEqual((controller.active, controller.history), ("green", []))

    def test_riseTwoManual(self) -> None:
        """
        After a failover the old environment is up again only after C{rise}
        good checks, the second at the fast interval; with manual failback
        it then waits as the standby until an operator switches.
        """
        monitor, controller = self.start(fall=1, rise=2)
        self.green.code = 500
        self.advanceTo(5)
        self.green.code = 200
        self.advanceTo(10)
        self.assertFalse(monitor.health["green"].up)
        self.assertRaises(SwitchRefused, controller.switch, "green")
        self.advanceTo(11)
        self.assertTrue(monitor.health["green"].up)
        self.assertEqual(self.green.times, [0.0, 5.0, 10.0, 11.0])
        self.advanceTo(120)
        self.assertEqual((controller.active, len(controller.history)), ("blue", 1))
        controller.switch("green")
        self.assertEqual(controller.active, "green")

    def failbackPending(self) -> Controller:
        """
        Start with automatic failback after 30 s; GREEN fails at 5 s (BLUE
        takes over) and has risen again by 11 s.

        @return: The controller, failback pending.
        """
        _monitor, controller = self.start(
            fall=1, rise=2, failback="auto", failbackDelay=30.0
        )
        self.green.code = 500
        self.advanceTo(5)
        self.green.code = 200
        self.advanceTo(11)
        self.assertEqual(controller.mode, "failback-pending")
        return controller

    def test_autoFailback(self) -> None:
        """
        With automatic failback, traffic returns once the preferred
        environment has risen and stayed up for the delay.
        """
        controller = self.failbackPending()
        self.advanceTo(40.5)
        self.assertEqual(controller.active, "blue")
        self.advanceTo(41)
        self.assertEqual(controller.active, "green")
        self.assertEqual(
            controller.history[-1],
            Switch(41.0, "blue", "green", "failback: green up for 30 s"),
        )

    def test_autoFailbackFlapping(self) -> None:
        """
        A preferred environment that fails a check during the delay does not
        get the traffic back.
        """
        controller = self.failbackPending()
        self.green.code = 500
        self.advanceTo(16)
        self.assertEqual(controller.mode, "serving")
        self.green.code = 200
        self.advanceTo(45)
        self.assertEqual(controller.active, "blue")
        self.assertEqual(controller.mode, "failback-pending")

    def test_bothDown(self) -> None:
        """
        Both down: the live environment stays, an error is logged every
        interval, and the first to recover gets the traffic.
        """
        _monitor, controller = self.start(fall=1, rise=2)
        self.blue.code = 500
        self.advanceTo(5)
        self.green.code = 500
        self.advanceTo(10)
        self.assertEqual((controller.active, controller.mode), ("green", "outage"))
        self.assertEqual(len(self.logged(LogLevel.error)), 1)
        self.advanceTo(20)
        self.assertEqual(len(self.logged(LogLevel.error)), 3)
        self.blue.code = 200
        self.advanceTo(25)
        self.assertEqual(controller.mode, "outage")
        self.advanceTo(26)
        self.assertEqual((controller.active, controller.mode), ("blue", "serving"))
        self.assertEqual(
            controller.history,
            [
                Switch(
                    26.0,
                    "green",
                    "blue",
                    "failover: blue recovered while green is down",
                )
            ],
        )
        errors = self.logged(LogLevel.error)
        self.assertEqual(len(errors), 4)
        self.assertIn("green: status 500 (expected 200)", errors[0])
        self.advanceTo(60)
        self.assertEqual(len(self.logged(LogLevel.error)), 4)

    def test_passive(self) -> None:
        """
        A failure seen on proxied traffic is evidence, not a verdict (issue
        11; this test asserted a switch on the report itself before): with
        C{fall=1} and the health path answering, nothing switches; when the
        check it starts at once fails, the controller fails over at once,
        with that check's reason.
        """
        monitor, controller = self.start(fall=1)
        self.clock.advance(1)
        monitor.reportPassive("green", "proxied request: refused the connection")
        self.assertEqual(self.green.times, [0.0, 1.0])
        self.assertEqual(controller.history, [])
        self.green.code = 500
        self.clock.advance(1)
        monitor.reportPassive("green", "proxied request: refused the connection")
        self.assertEqual(
            controller.history,
            [
                Switch(
                    2.0,
                    "green",
                    "blue",
                    "failover: green down: status 500 (expected 200)",
                )
            ],
        )

    def test_passiveFastCheck(self) -> None:
        """
        A passive failure checks the environment at once and then at the
        fast interval, so with C{fall=2} a failing application fails over
        after two active checks a fast interval apart (before issue 11 the
        passive failure counted as the first of the two).
        """
        monitor, controller = self.start(fall=2)
        self.green.code = 500
        self.clock.advance(1)
        monitor.reportPassive("green", "proxied request: connection reset")
        self.assertEqual(self.green.times, [0.0, 1.0])
        self.assertEqual(controller.active, "green")
        self.clock.advance(1)
        self.assertEqual(self.green.times, [0.0, 1.0, 2.0])
        self.assertEqual(controller.active, "blue")
        self.assertEqual(controller.history[0].when, 2.0)

    def test_passiveWhileHealthyNoSwitch(self) -> None:
        """
        Passive failures while the active checks pass never switch, however
        many; the fast interval ends with the first check that passes.
        """
        monitor, controller = self.start(fall=1)
        for second in range(1, 51):
            self.advanceTo(second)
            monitor.reportPassive("green", "proxied request: connection reset")
        self.assertEqual(controller.history, [])
        self.assertEqual(monitor.health["green"].passiveFailures, 50)
        self.assertFalse(monitor.health["green"].suspected)
        self.assertEqual(monitor.health["green"].failures, 0)

    def test_bothFailNoSwitch(self) -> None:
        """
        When both environments fail the same requests while their health
        paths answer, nothing switches (no ping-pong).
        """
        monitor, controller = self.start(fall=1)
        for second in range(1, 6):
            self.advanceTo(second)
            monitor.reportPassive("green", "proxied request: connection reset")
            monitor.reportPassive("blue", "proxied request: connection reset")
        self.assertEqual(controller.history, [])
        self.assertEqual(controller.active, "green")

    def test_noSwitchBackOnPassive(self) -> None:
        """
        After an automatic switch to blue, passive failures of blue do not
        switch back: only blue confirmed down by active checks would.
        """
        monitor, controller = self.start(fall=1, failback="manual")
        self.green.code = 500
        self.advanceTo(5)
        self.assertEqual(controller.active, "blue")
        self.green.code = 200
        self.advanceTo(20)
        for second in range(21, 26):
            self.advanceTo(second)
            monitor.reportPassive("blue", "proxied request: connection reset")
        self.assertEqual(controller.active, "blue")
        self.assertEqual(len(controller.history), 1)


class ResetOnRequest(Protocol):
    """
    A server that closes the connection as soon as a request arrives,
    before any response byte.
    """

    def dataReceived(self, data: bytes) -> None:
        """
        Hang up.
        """
        assert self.transport is not None
        self.transport.loseConnection()


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    Connects the proxy's pool to a backend in memory, or fails to connect.

    @ivar mode: C{"serve"} (answer with the backend), C{"refuse"} (the
        connect fails) or C{"reset"} (accept, then hang up on the request).
    @ivar attempts: How many connects were tried.
    @ivar pumps: The in-memory connections made.
    """

    def __init__(self, backend: Backend, clock: Clock) -> None:
        self.site = Site(backend, reactor=clock)
        self.mode = "serve"
        self.attempts = 0
        self.pumps: list[iosim.IOPump] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect a protocol from C{factory}, as the mode says.
        """
        self.attempts += 1
        if self.mode == "refuse":
            return fail(ConnectionRefusedError("Connection refused"))
        address = IPv4Address("TCP", "127.0.0.1", 5000)
        server: IProtocol | None = (
            self.site.buildProtocol(address) if self.mode == "serve" else None
        )
        if server is None:
            server = ResetOnRequest()
        client = factory.buildProtocol(address)
        assert client is not None
        pump = iosim.connect(
            server,
            iosim.makeFakeServer(server),
            client,
            iosim.makeFakeClient(client),
            greet=False,
        )
        self.pumps.append(pump)
        return succeed(client)


class ProxyTests(ChainMixin):
    """
    The proxy reports environments it cannot reach to the monitor, and
    retries a request on the standby when nothing of it can have been
    processed.
    """

    def setUp(self) -> None:
        """
        Make an in-memory endpoint per environment for the proxy's pools.
        """
        super().setUp()
        self.endpoints = {
            "green": MemoryEndpoint(self.green, self.clock),
            "blue": MemoryEndpoint(self.blue, self.clock),
        }

    def proxy(
        self, retry: bool = True, fall: int = 1, responseTimeout: float = 60.0
    ) -> tuple[HealthMonitor, Controller]:
        """
        Start the monitor and controller, and a proxy in front of them.
        """
        monitor, controller = self.start(fall=fall)
        pools = {
            name: UpstreamPool(self.clock, BOTH[name], endpoint=endpoint)
            for name, endpoint in self.endpoints.items()
        }
        self.resource = ProxyResource(
            controller,
            pools,
            self.clock,
            responseTimeout=responseTimeout,
            health=monitor,
            retry=retry,
        )
        self.site = ProxySite(self.resource, self.clock)
        self.addCleanup(self.closePools, list(pools.values()))
        return monitor, controller

    def closePools(self, pools: list[UpstreamPool]) -> None:
        """
        Close the proxy's pools, delivering the closes in memory.
        """
        closed = [pool.close(0) for pool in pools]
        self.clock.advance(0)
        self.flush()
        for d in closed:
            self.successResultOf(d)

    def request(self, raw: bytes, *more: tuple[float, bytes]) -> bytes:
        """
        Send a raw request to the proxy and run everything to completion.

        @param raw: The request, or its beginning.
        @param more: C{(seconds, data)}: advance the clock, then send more.
        @return: What the proxy answered.
        """
        channel = self.site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40000))
        assert channel is not None
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 40000))
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, Failure(ConnectionDone()))
        channel.dataReceived(raw)
        self.clock.advance(0)
        self.flush()
        for seconds, data in more:
            self.clock.advance(seconds)
            self.flush()
            channel.dataReceived(data)
            self.clock.advance(0)
            self.flush()
        return transport.value()

    def flush(self) -> None:
        """
        Move bytes over every in-memory connection until nothing moves.
        """
        moved = True
        while moved:
            moved = False
            for endpoint in self.endpoints.values():
                for pump in list(endpoint.pumps):
                    moved = pump.pump() or moved

    def passive(self, monitor: HealthMonitor, name: str) -> list[str]:
        """
        @return: The passive failures recorded for C{name}.
        """
        return [r.reason for r in monitor.health[name].history if r.passive]

    def assertAnswered(self, response: bytes, status: bytes, body: bytes) -> None:
        """
        Assert the status line and the end of the body of C{response}.
        """
        self.assertTrue(
            response.startswith(b"HTTP/1.1 " + status + b" "), response[:200]
        )
        self.assertTrue(response.endswith(body), response)

    def assertRefusedBy(self, reported: str, *refusing: str) -> None:
        """
        Make the C{refusing} environments refuse connections; a request then
        gets the 502 saying C{reported} refused the connection.
        """
        urls = {"green": "http://127.0.0.1:5002", "blue": "http://127.0.0.1:5001"}
        for name in refusing:
            self.endpoints[name].mode = "refuse"
        response = self.request(b"GET /a HTTP/1.1\r\nHost: example\r\n\r\n")
        expected = f"bluegreen: {reported} ({urls[reported]}) refused the connection\n"
        self.assertAnswered(response, b"502", expected.encode())

    def test_served(self) -> None:
        """
        With the live environment reachable, it answers and nothing is
        reported.
        """
        monitor, _controller = self.proxy()
        response = self.request(b"GET /a HTTP/1.1\r\nHost: example\r\n\r\n")
        self.assertAnswered(response, b"200", b"green GET ")
        self.assertEqual(self.passive(monitor, "green"), [])

    def test_responseTimeoutStartsAfterUpload(self) -> None:
        """
        An upload that takes longer than the response timeout (a byte every
        0.1 s for 1 s, against 0.5 s) is not cut off: the timeout counts
        from the end of the request.
        """
        self.proxy(responseTimeout=0.5)
        response = self.request(
            b"PUT /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
            *[(0.1, b"z")] * 10,
        )
        self.assertAnswered(response, b"200", b"green PUT zzzzzzzzzz")
        proxied = [r for r in self.green.requests if r[1] != b"/"]
        self.assertEqual(proxied, [(b"PUT", b"/slow", b"z" * 10)])

    def test_app500NotPassive(self) -> None:
        """
        A 500 from the application is passed on, and neither counts as a
        failed check nor is retried.
        """
        monitor, controller = self.proxy()
        self.green.code = 500
        response = self.request(b"GET /a HTTP/1.1\r\nHost: example\r\n\r\n")
        self.assertAnswered(response, b"500", b"green GET ")
        self.assertEqual(self.passive(monitor, "green"), [])
        self.assertEqual(self.blue.requests, [(b"GET", b"/", b"")])
        self.assertEqual(controller.active, "green")

    def test_refusedGETRetried(self) -> None:
        """
        A GET that cannot connect to the live environment is answered by the
        standby and reported; with the health path answering, nothing
        switches, even with C{fall=1} (before issue 11 this report alone
        switched to blue).
        """
        monitor, controller = self.proxy()
        self.endpoints["green"].mode = "refuse"
        response = self.request(b"GET /a HTTP/1.1\r\nHost: example\r\n\r\n")
        self.assertAnswered(response, b"200", b"blue GET ")
        self.assertEqual(
            self.passive(monitor, "green"), ["proxied request: refused the connection"]
        )
        self.assertEqual(controller.active, "green")
        self.assertEqual(controller.history, [])
        # Logged once, with the request's path (its query left out).
        self.request(b"GET /a?x=1 HTTP/1.1\r\nHost: example\r\n\r\n")
        self.assertEqual(
            self.logged(LogLevel.warn),
            [
                "green: proxied request: refused the connection on /a"
                " (1 passive failures so far; checking green now)"
            ],
        )
        self.assertEqual(monitor.health["green"].passiveFailures, 2)

    def test_refusedGETCrashFailsOver(self) -> None:
        """
        A crash: the request is answered by the standby, and the check the
        report starts fails at once, so with C{fall=1} production moves to
        blue at once, on the check's reason.
        """
        _monitor, controller = self.proxy()
        self.endpoints["green"].mode = "refuse"
        self.green.code = 500
        response = self.request(b"GET /a HTTP/1.1\r\nHost: example\r\n\r\n")
        self.assertAnswered(response, b"200", b"blue GET ")
        self.assertEqual(controller.active, "blue")
        self.assertEqual(
            controller.history[0].reason,
            "failover: green down: status 500 (expected 200)",
        )

    def test_refusedPOSTRetried(self) -> None:
        """
        A request whose connect failed was never sent, so it is retried on
        the standby whatever its method, body included.
        """
        monitor, controller = self.proxy(fall=3)
        self.endpoints["green"].mode = "refuse"
        response = self.request(
            b"POST /p HTTP/1.1\r\nHost: example\r\nContent-Length: 5\r\n\r\nhello"
        )
        self.assertAnswered(response, b"200", b"blue POST hello")
        self.assertEqual(self.blue.requests[-1], (b"POST", b"/p", b"hello"))
        self.assertEqual(len(self.passive(monitor, "green")), 1)
        self.assertEqual(controller.active, "green")

    def test_resetGETRetried(self) -> None:
        """
        A GET on a connection closed before any response byte is retried on
        the standby, and reported.
        """
        monitor, _controller = self.proxy(fall=3)
        self.endpoints["green"].mode = "reset"
        response = self.request(b"GET /a HTTP/1.1\r\nHost: example\r\n\r\n")
        self.assertAnswered(response, b"200", b"blue GET ")
        self.assertEqual(
            self.passive(monitor, "green"),
            ["proxied request: closed the connection before responding"],
        )

    def test_resetPOSTNotRetried(self) -> None:
        """
        A POST that was sent before the connection closed may have been acted
        on: it is not retried (but is reported).
        """
        monitor, _controller = self.proxy(fall=3)
        self.endpoints["green"].mode = "reset"
        response = self.request(
            b"POST /p HTTP/1.1\r\nHost: example\r\nContent-Length: 5\r\n\r\nhello"
        )
        self.assertAnswered(
            response,
            b"502",
            b"bluegreen: green (http://127.0.0.1:5002) closed the connection "
            b"before responding\n",
        )
        self.assertEqual(self.endpoints["blue"].attempts, 0)
        self.assertEqual(len(self.passive(monitor, "green")), 1)

    def heldAfterReset(
        self,
    ) -> tuple[Controller, StringTransport, Request]:
        """
        GREEN hangs up on a POST (sent, so not retried: a 502), and the
        check that starts is held; a second POST arrives meanwhile.

        @return: The controller, the second POST's client transport
            (nothing answered yet) and the held check.
        """
        _monitor, controller = self.proxy()
        self.endpoints["green"].mode = "reset"
        held: list[Request] = []
        self.router.holding[GREEN.port] = held
        first = self.request(
            b"POST /p HTTP/1.1\r\nHost: example\r\nContent-Length: 1\r\n\r\n1"
        )
        self.assertAnswered(first, b"502", b"closed the connection before responding\n")
        self.assertEqual(len(held), 1)
        attempts = self.endpoints["green"].attempts
        channel = self.site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40001))
        assert channel is not None
        transport = StringTransport()
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, Failure(ConnectionDone()))
        channel.dataReceived(
            b"POST /p HTTP/1.1\r\nHost: example\r\nContent-Length: 1\r\n\r\n2"
        )
        self.clock.advance(0)
        self.flush()
        # Held: not sent to GREEN (which may be dying), not answered.
        self.assertEqual(self.endpoints["green"].attempts, attempts)
        self.assertEqual(transport.value(), b"")
        del self.router.holding[GREEN.port]
        return controller, transport, held[0]

    def finishCheck(self, check: Request, status: int) -> None:
        """
        Answer the held check with C{status} and let everything run.
        """
        check.setResponseCode(status)
        check.finish()
        self.stub.flush()
        self.clock.advance(0)
        self.flush()

    def test_heldUntilCheckFailsOver(self) -> None:
        """
        After a request could not reach GREEN, new requests for GREEN wait
        for the check that failure started (a killed app's port can still
        accept connections for a moment, then reset them: a POST sent there
        would be lost).  The check fails, production moves to BLUE, and the
        held POST is sent there: no second client error.
        """
        controller, transport, check = self.heldAfterReset()
        self.finishCheck(check, 500)
        self.assertEqual(controller.active, "blue")
        self.assertAnswered(transport.value(), b"200", b"blue POST 2")

    def test_heldUntilCheckPasses(self) -> None:
        """
        When the check passes (one route failed, the app is fine), the held
        request goes to GREEN on a new connection, and nothing switches.
        """
        controller, transport, check = self.heldAfterReset()
        self.endpoints["green"].mode = "serve"
        self.finishCheck(check, 200)
        self.assertEqual(controller.active, "green")
        self.assertAnswered(transport.value(), b"200", b"green POST 2")

    def test_retryNone(self) -> None:
        """
        With C{--retry none}, a failed connect is answered with 502, and
        still reported.
        """
        monitor, _controller = self.proxy(retry=False, fall=3)
        self.assertRefusedBy("green", "green")
        self.assertEqual(self.endpoints["blue"].attempts, 0)
        self.assertEqual(len(self.passive(monitor, "green")), 1)

    def test_standbyDownNotRetried(self) -> None:
        """
        A standby that is down is not tried: the client gets the 502.
        """
        self.blue.code = 500
        monitor, _controller = self.proxy(fall=3)
        self.assertFalse(monitor.health["blue"].up)
        self.assertRefusedBy("green", "green")
        self.assertEqual(self.endpoints["blue"].attempts, 0)

    def test_retriedOnce(self) -> None:
        """
        When the standby cannot be reached either, the client gets its 502:
        a request is retried once, and both failures are reported.
        """
        monitor, controller = self.proxy(fall=1)
        self.assertRefusedBy("blue", "green", "blue")
        self.assertEqual(
            (self.endpoints["green"].attempts, self.endpoints["blue"].attempts),
            (1, 1),
        )
        self.assertEqual(len(self.passive(monitor, "green")), 1)
        self.assertEqual(len(self.passive(monitor, "blue")), 1)
        # Both failed the request while their health paths answer: with
        # fall 1 nothing switches all the same (issue 11: no ping-pong).
        self.assertEqual(controller.history, [])
