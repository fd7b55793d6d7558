# -*- test-case-name: tests.test_healthclient -*-
"""
The HTTP client the health checks use: treq over its own connection pool, a
new connection per check (a reused connection would hide connect failures),
connecting like the proxy does and without a log line per check; a check
that has read enough drops its connection at once, TLS included.
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
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.client import URI, Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from bluegreen.environment import Environment
from bluegreen.proxy.pool import ConnectingReactor, endpointFor


class DroppingConnection(ProtocolWrapper):
    """
    A check's connection, between the HTTP client and its transport, on
    which C{stopProducing} aborts the connection.

    The health check's body reader, past its C{--health-max-body} window,
    stops the body's producer: the HTTP client hands it a proxy of this
    transport, whose C{stopProducing} is relayed here.  A plain TCP
    transport would close on C{stopProducing}; but TLS has no
    C{stopProducing}, and its C{loseConnection} sends its close alert and
    then reads on, body included, until the server's alert: a server
    sending a big page would be drained, one that stalls would keep the
    connection.  An abort drops it at once, without reading further.
    """

    def stopProducing(self) -> None:
        """
        Drop the connection now (C{abortConnection}, which TCP and TLS
        transports have), reading nothing more.
        """
        transport = self.transport
        assert transport is not None
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()


class DroppingFactory(WrappingFactory[DroppingConnection]):
    """
    Wraps the pool's factory for one connection in a L{DroppingConnection},
    quietly.
    """

    protocol = DroppingConnection
    noisy = False


def _unwrap(connection: IProtocol) -> IProtocol:
    """
    @return: The pool's own protocol inside a L{DroppingConnection} (the
        pool sends its requests on what the endpoint returns).
    """
    assert isinstance(connection, DroppingConnection)
    return connection.wrappedProtocol


@implementer(IStreamClientEndpoint)
class QuietEndpoint:
    """
    An endpoint whose connections' factories do not log "Starting factory"
    and "Stopping factory": one pair per check would bury the real news;
    and whose connections are L{DroppingConnection}s.

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
        connecting = self.endpoint.connect(DroppingFactory(protocolFactory))
        return connecting.addCallback(_unwrap)


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
