# -*- test-case-name: tests.test_healthclient -*-
"""
The HTTP client the health checks use: treq over its own connection pool, a
new connection per check (a reused connection would hide connect failures),
connecting like the proxy does and without a log line per check.
"""

from __future__ import annotations

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.ssl import Certificate
from twisted.web.client import URI, Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from bluegreen.environment import Environment
from bluegreen.proxy.pool import ConnectingReactor, endpointFor


@implementer(IStreamClientEndpoint)
class QuietEndpoint:
    """
    An endpoint whose connections' factories do not log "Starting factory"
    and "Stopping factory": one pair per check would bury the real news.

    L{HTTPConnectionPool} makes a factory per connection and hands it to the
    endpoint, so the endpoint is where that factory can be quietened (its
    public C{noisy} attribute) without replacing the pool's factory class.

    @ivar endpoint: The endpoint that connects.
    """

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        """
        @param endpoint: The endpoint that connects.
        """
        self.endpoint = endpoint

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect with C{protocolFactory}, quietened.

        @param protocolFactory: The pool's factory for this connection.
        @return: See L{IStreamClientEndpoint.connect}.
        """
        if isinstance(protocolFactory, Factory):
            protocolFactory.noisy = False
        return self.endpoint.connect(protocolFactory)


@implementer(IAgentEndpointFactory)
class DirectEndpoints:
    """
    The health checks' endpoints: the proxy's own (L{endpointFor}), so an IP
    address is connected to directly.  L{HostnameEndpoint}, which a plain
    L{Agent} uses, reports a refused connection only after its 0.3 s
    attempt delay, slowing every check of a dead environment.

    @ivar reactor: Connects.
    @ivar timeout: Seconds allowed for a connect.
    @ivar trustRoot: The CA trusted for C{https} (the platform's if L{None}).
    """

    def __init__(
        self,
        reactor: ConnectingReactor,
        timeout: float,
        trustRoot: Certificate | None,
    ) -> None:
        """
        @param reactor: Connects.
        @param timeout: Seconds allowed for a connect.
        @param trustRoot: The CA trusted for C{https}, or L{None}.
        """
        self.reactor = reactor
        self.timeout = timeout
        self.trustRoot = trustRoot

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """
        @param uri: The URL a check requests.
        @return: The endpoint for C{uri}'s scheme, host and port.
        """
        host = uri.host.decode("idna").strip("[]")
        where = Environment("health", "", uri.scheme.decode("ascii"), host, uri.port)
        return QuietEndpoint(
            endpointFor(self.reactor, where, self.timeout, self.trustRoot)
        )


def healthClient(
    reactor: ConnectingReactor, timeout: float, trustRoot: Certificate | None
) -> tuple[HTTPClient, HTTPConnectionPool]:
    """
    The treq client the health checks use: its own pool, a new connection
    per check, https verified like the proxy's.

    @param reactor: Connects and times.
    @param timeout: Seconds allowed for a connect (the checks' timeout).
    @param trustRoot: The CA trusted for C{https} (C{--upstream-ca}), or
        L{None} for the platform's.
    @return: C{(client, pool)}; the pool is closed when the monitor stops.
    """
    pool = HTTPConnectionPool(reactor, persistent=False)
    endpoints = DirectEndpoints(reactor, timeout, trustRoot)
    agent = Agent.usingEndpointFactory(reactor, endpoints, pool=pool)
    return HTTPClient(agent), pool
