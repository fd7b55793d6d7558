# -*- test-case-name: tests.test_healthclient -*-
"""
Tests for L{bluegreen.healthclient}: the health checks' HTTP client.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import URI
from zope.interface import implementer

from bluegreen.healthclient import (
    DirectEndpoints,
    DroppingConnection,
    DroppingFactory,
    QuietEndpoint,
    healthClient,
)


class Abortable(StringTransport):
    """
    A transport that counts its aborts (and does nothing else for them).

    @ivar aborts: How many times C{abortConnection} was called.
    """

    aborts = 0

    def abortConnection(self) -> None:
        """
        Count.
        """
        self.aborts += 1


class HealthEndpointTests(SynchronousTestCase):
    """
    The health checks connect like the proxy does, without a log line per
    check.
    """

    def test_direct(self) -> None:
        """
        An IP address is connected to directly (a L{HostnameEndpoint} would
        report a refused connection only after its 0.3 s attempt delay,
        slowing every check of a dead environment), https is wrapped in TLS,
        and the check timeout is the connect timeout.
        """
        reactor = MemoryReactorClock()
        endpoints = DirectEndpoints(reactor, 2.0, None)

        def endpointFor(url: bytes) -> IStreamClientEndpoint:
            endpoint = endpoints.endpointForURI(URI.fromBytes(url))
            assert isinstance(endpoint, QuietEndpoint)
            return endpoint.endpoint

        v4 = endpointFor(b"http://127.0.0.1:5002/")
        self.assertIsInstance(v4, TCP4ClientEndpoint)
        v4.connect(Factory())
        [(host, port, _, timeout, _)] = reactor.tcpClients
        self.assertEqual((host, port, timeout), ("127.0.0.1", 5002, 2.0))
        v6 = endpointFor(b"http://[::1]:5002/health")
        self.assertIsInstance(v6, TCP6ClientEndpoint)
        tls = endpointFor(b"https://localhost:8443/")
        self.assertEqual(type(tls).__name__, "_WrapperEndpoint")

    def test_quiet(self) -> None:
        """
        The factory the client's pool makes for each connection is told not
        to log its start and stop (one pair per check would bury the news),
        and goes to the endpoint that connects, in a L{DroppingFactory}
        (quiet too).
        """
        given: list[IProtocolFactory] = []

        @implementer(IStreamClientEndpoint)
        class Recording:
            def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
                given.append(factory)
                return Deferred()

        factory = Factory()
        self.assertIs(factory.noisy, True)
        QuietEndpoint(Recording()).connect(factory)
        [wrapping] = given
        assert isinstance(wrapping, DroppingFactory)
        self.assertIs(wrapping.wrappedFactory, factory)
        self.assertIs(factory.noisy, False)
        self.assertIs(wrapping.noisy, False)

    def test_dropping(self) -> None:
        """
        The endpoint's connection is a L{DroppingConnection}, but the pool
        gets its own protocol back; C{stopProducing} on the connection (what
        the health check's body reader calls, through the HTTP client's
        transport proxy) aborts the transport, where C{loseConnection} would
        close it gracefully (and, over TLS, read on until the server's
        close alert).
        """
        transport = Abortable()

        @implementer(IStreamClientEndpoint)
        class Connecting:
            def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
                protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
                assert protocol is not None
                protocol.makeConnection(transport)
                return succeed(protocol)

        inner = Protocol()
        connected = QuietEndpoint(Connecting()).connect(
            Factory.forProtocol(lambda: inner)
        )
        self.assertIs(self.successResultOf(connected), inner)
        assert inner.transport is not None
        self.assertIsInstance(inner.transport, DroppingConnection)
        producer: Any = inner.transport
        producer.stopProducing()
        self.assertEqual((transport.aborts, transport.disconnecting), (1, False))

    def test_newConnectionPerCheck(self) -> None:
        """
        The client's pool keeps no connection: a reused one would hide
        connect failures.
        """
        _, pool = healthClient(MemoryReactorClock(), 2.0, None)
        self.assertIs(pool.persistent, False)
