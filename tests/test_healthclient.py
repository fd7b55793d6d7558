# -*- test-case-name: tests.test_healthclient -*-
"""
Tests for L{bluegreen.healthclient}: the health checks' HTTP client.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import URI
from zope.interface import implementer

from bluegreen.healthclient import DirectEndpoints, QuietEndpoint, healthClient


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
        and goes to the endpoint that connects.
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
        self.assertEqual(given, [factory])
        self.assertIs(factory.noisy, False)

    def test_newConnectionPerCheck(self) -> None:
        """
        The client's pool keeps no connection: a reused one would hide
        connect failures.
        """
        _, pool = healthClient(MemoryReactorClock(), 2.0, None)
        self.assertIs(pool.persistent, False)
