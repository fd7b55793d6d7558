# -*- test-case-name: tests.test_health_integration -*-
"""
Integration tests for L{bluegreen.health}: a real L{HealthMonitor} with a
real treq C{HTTPClient} (its own non-persistent pool) checking real
backends on 127.0.0.1 over real sockets, plain and TLS; and one
C{twistd -n bluegreen} process checking them with C{--health-expect-body}.

Timeouts and intervals are short (0.5 s, 0.2 s) so the suite stays fast.
Every listening port, every accepted connection and every monitor (with its
pool) is closed in cleanup, and each cleanup waits for the close, so the
reactor is left clean.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Sequence
from typing import Any

from attrs import evolve
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from treq.client import HTTPClient
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.internet.ssl import Certificate, PrivateCertificate
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from bluegreen.environment import Environment
from bluegreen.health import HealthMonitor, HealthSettings
from bluegreen.healthclient import healthClient
from tests._certificates import keyPEM, selfSigned
from tests._processes import spawn, twistdArguments, twistdPath
from tests._util import PATIENCE, waitFor

#: The reactor the tests run on (trial's real one).
reactor: Any = _reactor

#: An observed change of state: (environment, up, reason).
Event = tuple[str, bool, str]

#: Fast settings: checks every 0.2 s (0.05 s while changing).  The timeout is
#: L{PATIENCE}, so a loaded machine never fails a check that should pass;
#: the tests of timeouts set a short one (L{SHORT}).
FAST = HealthSettings(interval=0.2, fastInterval=0.05, timeout=PATIENCE)

#: The timeout of the tests of timeouts.
SHORT = evolve(FAST, timeout=0.5)

#: A big health page's size.
MIB = 1024 * 1024


def makeCertificate(
    names: Sequence[x509.GeneralName],
) -> tuple[PrivateCertificate, Certificate]:
    """
    Make a throw-away self-signed server certificate.

    @param names: Its subject alternative names.
    @return: The certificate with its key (for the server) and alone (for a
        client that chooses to trust it).
    """
    key, certificate = selfSigned("bluegreen test", names)
    certificatePEM = certificate.public_bytes(serialization.Encoding.PEM)
    return (
        PrivateCertificate.loadPEM(certificatePEM + keyPEM(key)),
        Certificate.loadPEM(certificatePEM),
    )


LOOPBACK = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))


class Health(Resource):
    """
    A health endpoint answering every C{GET} with C{code} and C{body}.

    @ivar stall: When C{True}, send the status, a C{Content-Length} and half
        of the body, then nothing more.
    @ivar requests: How many requests it received.
    """

    isLeaf = True

    def __init__(self, code: int = 200, body: bytes = b"ok") -> None:
        super().__init__()
        self.code = code
        self.body = body
        self.stall = False
        self.requests = 0

    def render_GET(self, request: Request) -> bytes | int:
        """
        Answer as configured.
        """
        self.requests += 1
        request.setResponseCode(self.code)
        if self.stall:
            request.setHeader(b"content-length", b"%d" % (len(self.body),))
            request.write(self.body[: len(self.body) // 2])
            return NOT_DONE_YET
        return self.body


class Silent(Protocol):
    """
    Accepts a connection and never answers.
    """


class CloseAtOnce(Protocol):
    """
    Closes each connection as soon as it is accepted.
    """

    def connectionMade(self) -> None:
        """
        Close.
        """
        assert self.transport is not None
        self.transport.loseConnection()


class CloseAfterRequest(Protocol):
    """
    Reads the request, then closes the connection cleanly without answering.
    """

    def dataReceived(self, data: bytes) -> None:
        """
        Close once the request's head has arrived.
        """
        assert self.transport is not None
        self.transport.loseConnection()


class ResetAfterRequest(Protocol):
    """
    Reads the request, then resets the connection (C{SO_LINGER} 0 makes the
    close send a TCP RST).
    """

    def dataReceived(self, data: bytes) -> None:
        """
        Reset.
        """
        assert self.transport is not None
        handle: socket.socket = self.transport.getHandle()  # type: ignore[attr-defined]
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abortConnection()  # type: ignore[attr-defined]


class Tracking(WrappingFactory):
    """
    Wraps a server factory to know its open connections, so that cleanup can
    close them and wait until they are gone.

    @ivar opened: How many connections were accepted.
    """

    def __init__(self, wrappedFactory: Factory[Any]) -> None:
        super().__init__(wrappedFactory)
        self.opened = 0
        self._idle: list[Deferred[None]] = []

    def registerProtocol(self, p: ProtocolWrapper) -> None:
        """
        Count an accepted connection.
        """
        super().registerProtocol(p)
        self.opened += 1

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        """
        Forget a closed connection; fire the waiters once none is open.
        """
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def whenIdle(self) -> Deferred[None]:
        """
        @return: A Deferred that fires once no connection is open.
        """
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d.addTimeout(PATIENCE, reactor)

    def closeAll(self) -> Deferred[None]:
        """
        Abort every open connection.

        @return: A Deferred that fires once they are all closed.
        """
        for p in list(self.protocols):
            p.transport.abortConnection()
        return self.whenIdle()


class Recorder:
    """
    Records a monitor's changes of state and lets a test wait for them.

    @ivar events: The changes seen so far.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._waiting: list[tuple[int, Deferred[Event]]] = []

    def __call__(self, name: str, up: bool, reason: str) -> None:
        """
        Record one change.
        """
        self.events.append((name, up, reason))
        for waiting in list(self._waiting):
            count, d = waiting
            if len(self.events) >= count:
                self._waiting.remove(waiting)
                d.callback(self.events[count - 1])

    def event(self, number: int) -> Deferred[Event]:
        """
        @param number: Which change, counting from 1.
        @return: A Deferred firing with it once it happened (failing after
            L{PATIENCE} seconds).
        """
        if len(self.events) >= number:
            return succeed(self.events[number - 1])
        d: Deferred[Event] = Deferred()
        self._waiting.append((number, d))
        return d.addTimeout(PATIENCE, reactor)


@implementer(IPolicyForHTTPS)
class TrustOnly:
    """
    Verify servers against one certificate only (instead of the platform's
    trust store), with the usual host name checks.
    """

    def __init__(self, trusted: Certificate) -> None:
        self._policy = BrowserLikePolicyForHTTPS(trustRoot=trusted)

    def creatorForNetloc(
        self, hostname: bytes, port: int
    ) -> IOpenSSLClientConnectionCreator:
        """
        Delegate to L{BrowserLikePolicyForHTTPS}.
        """
        return self._policy.creatorForNetloc(hostname, port)


class HealthIntegrationTests(TestCase):
    """
    A monitor over real sockets reports each kind of failure in words.
    """

    timeout = 4 * PATIENCE

    def listen(
        self, factory: Factory[Any], tls: PrivateCertificate | None = None
    ) -> str:
        """
        Listen on a free port of 127.0.0.1, closing everything at cleanup.

        @param factory: The server.
        @param tls: The server certificate, to listen with TLS.
        @return: The base URL.
        """
        tracking = Tracking(factory)
        port: IListeningPort
        if tls is None:
            port = reactor.listenTCP(0, tracking, interface="127.0.0.1")
        else:
            port = reactor.listenSSL(0, tracking, tls.options(), interface="127.0.0.1")
        self.addCleanup(tracking.closeAll)
        self.addCleanup(port.stopListening)
        self.tracking = tracking
        scheme = "http" if tls is None else "https"
        return f"{scheme}://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]

    def listenSite(
        self, resource: Resource, tls: PrivateCertificate | None = None
    ) -> str:
        """
        Serve C{resource} (see L{listen}).
        """
        return self.listen(Site(resource), tls)

    def listenProtocol(self, protocol: type[Protocol]) -> str:
        """
        Serve each connection with a C{protocol} (see L{listen}).
        """
        return self.listen(ServerFactory.forProtocol(protocol))

    def start(
        self,
        url: str,
        settings: HealthSettings = FAST,
        policy: IPolicyForHTTPS | None = None,
    ) -> tuple[HealthMonitor, Recorder]:
        """
        Start a monitor of one environment, C{green} at C{url}, through treq
        with its own non-persistent pool; it is stopped at cleanup.

        @param policy: How TLS servers are verified (default: the platform's
            trust store, as in production).
        @return: The monitor and a recorder of its changes.
        """
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = (
            Agent(reactor, pool=pool, connectTimeout=PATIENCE)
            if policy is None
            else Agent(reactor, policy, pool=pool, connectTimeout=PATIENCE)
        )
        monitor = HealthMonitor(
            {"green": Environment.fromURL("green", url)},
            settings,
            reactor,
            HTTPClient(agent),
            pool,
        )
        recorder = Recorder()
        monitor.subscribe(recorder)
        monitor.startService()
        self.addCleanup(self.stop, monitor)
        return monitor, recorder

    def stop(self, monitor: HealthMonitor) -> Deferred[None] | None:
        """
        Stop C{monitor} if still running.
        """
        return monitor.stopService() if monitor.running else None

    async def test_healthy(self) -> None:
        """
        A backend answering 200 is up.
        """
        url = self.listenSite(Health())
        monitor = await self.assertFirstCheck(True, "status 200", url)
        self.assertTrue(monitor.isUp("green"))

    async def test_serverError(self) -> None:
        """
        A backend answering 500 is down, for its status.
        """
        url = self.listenSite(Health(500, b"broken"))
        monitor = await self.assertFirstCheck(False, "status 500 (expected 200)", url)
        self.assertFalse(monitor.isUp("green"))

    async def test_refused(self) -> None:
        """
        A closed port is "connection refused".
        """
        probe = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        number = probe.getHost().port
        await probe.stopListening()
        await self.assertFirstCheck(
            False, "connection refused", f"http://127.0.0.1:{number}"
        )

    async def assertFirstCheck(
        self,
        up: bool,
        reason: str,
        url: str,
        settings: HealthSettings = FAST,
        policy: IPolicyForHTTPS | None = None,
    ) -> HealthMonitor:
        """
        Start a monitor of C{url} (see L{start}) and assert that its first
        check of GREEN finds it C{up} or not, for C{reason}.

        @return: The monitor.
        """
        monitor, recorder = self.start(url, settings, policy)
        self.assertEqual(await recorder.event(1), ("green", up, reason))
        return monitor

    async def assertTimesOut(self, url: str) -> None:
        """
        Assert that the check of C{url} with the short timeout fails for
        that timeout, and that the monitor closes its connection.
        """
        await self.assertFirstCheck(False, "timeout after 0.5 s", url, SHORT)
        await self.tracking.whenIdle()

    async def test_noAnswer(self) -> None:
        """
        A backend that accepts and never answers times out, and the
        connection is closed by the monitor.
        """
        url = self.listenProtocol(Silent)
        await self.assertTimesOut(url)

    async def test_stalledBody(self) -> None:
        """
        A backend that sends the status and half the body, then nothing,
        times out too, and the monitor closes that connection (rather than
        leaving it to the backend).
        """
        health = Health(200, b"x" * 1000)
        health.stall = True
        url = self.listenSite(health)
        await self.assertTimesOut(url)

    async def test_closedAtOnce(self) -> None:
        """
        A backend that closes each connection as soon as it is accepted is
        "connection closed" or "connection reset" (the close may race the
        request) "before a response".
        """
        url = self.listenProtocol(CloseAtOnce)
        _, recorder = self.start(url)
        _, up, reason = await recorder.event(1)
        self.assertFalse(up)
        self.assertIn(
            reason,
            [
                "connection closed before a response",
                "connection reset before a response",
            ],
        )

    async def test_closedAfterRequest(self) -> None:
        """
        A backend that reads the request and closes cleanly is "connection
        closed before a response".
        """
        url = self.listenProtocol(CloseAfterRequest)
        await self.assertFirstCheck(False, "connection closed before a response", url)

    async def test_resetAfterRequest(self) -> None:
        """
        A backend that reads the request and resets the connection is
        "connection reset before a response".
        """
        url = self.listenProtocol(ResetAfterRequest)
        await self.assertFirstCheck(False, "connection reset before a response", url)

    async def test_bigBody(self) -> None:
        """
        A 1 MiB health page is healthy (issue 11: it failed with "body
        larger than 65536 bytes"); the check's connection is closed.
        """
        url = self.listenSite(Health(200, b"x" * MIB))
        await self.assertFirstCheck(True, "status 200", url)
        await self.tracking.whenIdle()

    async def test_bigBodyNotDrained(self) -> None:
        """
        Through the production client (L{healthClient}): a page announcing
        2 MiB that sends 1 MiB and stalls is healthy at once (the check
        does not wait for the rest: with a drained connection it would time
        out), and the server sees the connection closed.
        """
        await self.assertNotDrained(None)

    async def test_bigBodyNotDrainedTLS(self) -> None:
        """
        The same over TLS: closing the TLS connection does not wait for the
        rest of the body either.
        """
        await self.assertNotDrained(makeCertificate([LOOPBACK]))

    async def assertNotDrained(
        self, tls: tuple[PrivateCertificate, Certificate] | None
    ) -> None:
        """
        Check, with L{healthClient}, a backend (TLS with C{tls}'s server
        certificate, trusting its certificate) that announces 2 MiB, sends
        1 MiB and stalls: the first check passes, and the server's
        connection is closed.
        """
        health = Health(200, b"x" * (2 * MIB))
        health.stall = True
        url = self.listenSite(health, None if tls is None else tls[0])
        http, pool = healthClient(reactor, PATIENCE, None if tls is None else tls[1])
        monitor = HealthMonitor(
            {"green": Environment.fromURL("green", url)}, FAST, reactor, http, pool
        )
        recorder = Recorder()
        monitor.subscribe(recorder)
        monitor.startService()
        self.addCleanup(self.stop, monitor)
        self.assertEqual(await recorder.event(1), ("green", True, "status 200"))
        await self.tracking.whenIdle()

    async def test_expectBodyErrorPage(self) -> None:
        """
        With C{expectBody}, a 200 error page is down, for the text it lacks.
        """
        url = self.listenSite(Health(200, b"<h1>Something went wrong</h1>"))
        await self.assertFirstCheck(
            False,
            "body lacks 'meow' in its first 65536 bytes",
            url,
            evolve(FAST, expectBody=b"meow"),
        )

    async def test_expectBodyRightPage(self) -> None:
        """
        With C{expectBody}, the right page is up, even past the window (the
        text is at its start).
        """
        url = self.listenSite(Health(200, b"<title>meow.io</title>" + b"x" * MIB))
        await self.assertFirstCheck(
            True, "status 200", url, evolve(FAST, expectBody=b"meow")
        )
        await self.tracking.whenIdle()

    async def test_twistdExpectBody(self) -> None:
        """
        C{twistd -n bluegreen} with C{--health-expect-body}: GREEN serving a
        200 error page is down for the text it lacks (the log line says
        so); BLUE serving a 1 MiB page with the text is up.
        """
        greenURL = self.listenSite(Health(200, b"<h1>Cannot GET /</h1>"))
        blueURL = self.listenSite(Health(200, b"<title>meow.io</title>" + b"x" * MIB))
        process = spawn(
            self,
            "twistd bluegreen",
            twistdPath(),
            twistdArguments(
                greenURL,
                blueURL,
                "--admin",
                "none",
                "--health-expect-body",
                "meow",
                "--health-max-body",
                "64K",
            ),
        )
        await process.waitForLine(
            r"green is down: body lacks 'meow' in its first 65536 bytes$"
        )
        await process.waitForLine(r"blue is up: status 200$")
        self.assertIsNone(process.findLine(r"Traceback"), process.tail())

    async def test_tlsUntrusted(self) -> None:
        """
        A TLS backend whose self-signed certificate the platform does not
        trust is a TLS error that says so.
        """
        server, _ = makeCertificate([LOOPBACK])
        url = self.listenSite(Health(), server)
        _, recorder = self.start(url)
        _, up, reason = await recorder.event(1)
        self.assertFalse(up)
        self.assertTrue(reason.startswith("TLS error: "), reason)
        self.assertIn("certificate verify failed", reason)

    async def test_tlsTrusted(self) -> None:
        """
        A TLS backend with a trusted certificate for its address is checked
        like any other.
        """
        server, trusted = makeCertificate([LOOPBACK])
        url = self.listenSite(Health(), server)
        await self.assertFirstCheck(True, "status 200", url, policy=TrustOnly(trusted))

    async def test_tlsWrongHost(self) -> None:
        """
        A trusted certificate for another host is a TLS error.
        """
        server, trusted = makeCertificate([x509.DNSName("elsewhere.example")])
        url = self.listenSite(Health(), server)
        _, recorder = self.start(url, policy=TrustOnly(trusted))
        _, up, reason = await recorder.event(1)
        self.assertFalse(up)
        self.assertTrue(reason.startswith("TLS error: "), reason)

    async def test_fallAndRise(self) -> None:
        """
        On the real clock, a backend that starts failing goes down after
        C{fall} failures and comes back after C{rise} successes.
        """
        health = Health()
        url = self.listenSite(health)
        _, recorder = self.start(url, evolve(FAST, fall=2, rise=2))
        self.assertEqual(await recorder.event(1), ("green", True, "status 200"))
        health.code = 503
        requests = health.requests
        self.assertEqual(
            await recorder.event(2), ("green", False, "status 503 (expected 200)")
        )
        self.assertGreaterEqual(health.requests - requests, 2)
        health.code = 200
        requests = health.requests
        self.assertEqual(await recorder.event(3), ("green", True, "status 200"))
        self.assertGreaterEqual(health.requests - requests, 2)

    async def test_stopWhileChecking(self) -> None:
        """
        Stopping with a check in flight cancels it without counting it,
        closes its connection and the pool.
        """
        url = self.listenProtocol(Silent)
        monitor, recorder = self.start(url)
        await waitFor(lambda: self.tracking.protocols, "the check's connection")
        await monitor.stopService()
        self.assertEqual(recorder.events, [])
        self.assertEqual(len(monitor.health["green"].history), 0)
        await self.tracking.whenIdle()
