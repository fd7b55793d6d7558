# -*- test-case-name: tests.test_pool -*-
"""
A bounded pool of persistent HTTP/1.1 connections to one environment.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

from attrs import define, field
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IConnector,
    IDelayedCall,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ClientFactory, Factory
from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust
from twisted.logger import Logger
from twisted.python.failure import Failure

from bluegreen.checkfailure import localResourceError
from bluegreen.environment import Environment
from bluegreen.proxy.upstream import UpstreamConnection

_log = Logger()


class ConnectingReactor(Protocol):
    """
    The parts of a reactor that connecting to an environment uses: TCP
    (L{twisted.internet.interfaces.IReactorTCP}) and timers
    (L{twisted.internet.interfaces.IReactorTime}: connect timeouts, idle
    expiry).  The global reactor and
    L{twisted.internet.testing.MemoryReactorClock} provide both.
    """

    def connectTCP(
        self,
        host: str,
        port: int,
        factory: ClientFactory,
        timeout: float = 30,
        bindAddress: tuple[str, int] | None = None,
    ) -> IConnector:
        """
        See L{twisted.internet.interfaces.IReactorTCP.connectTCP}.
        """

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> IDelayedCall:
        """
        See L{twisted.internet.interfaces.IReactorTime.callLater}.
        """

    def seconds(self) -> float:
        """
        See L{twisted.internet.interfaces.IReactorTime.seconds}.
        """


class PoolClosed(Exception):
    """
    The pool is shutting down and lends no more connections.
    """


def loadTrustRoot(path: str) -> Certificate:
    """
    Read a PEM CA certificate to trust for C{https://} environments.

    @param path: A PEM file holding one CA certificate.
    @return: The CA certificate, a trust root for L{optionsForClientTLS}.
    @raise ValueError: If the file cannot be read or holds no certificate.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    try:
        return Certificate.loadPEM(data)
    except Exception:
        raise ValueError(f"{path} does not hold a PEM certificate") from None


def endpointFor(
    reactor: ConnectingReactor,
    environment: Environment,
    connectTimeout: float,
    trustRoot: Certificate | None = None,
) -> IStreamClientEndpoint:
    """
    Build the client endpoint that reaches an environment.

    IP literals connect directly (no resolver thread); names go through
    L{HostnameEndpoint}.  C{https} environments are verified against
    C{trustRoot} (the platform's trust store when L{None}) with
    service-identity checking the certificate names C{environment.host}.

    @param reactor: The reactor to connect with.
    @param environment: Where to connect.
    @param connectTimeout: Seconds allowed for the TCP connect.
    @param trustRoot: The CA to trust for C{https}, or L{None}.
    @return: The endpoint.
    """
    host, port = environment.host, environment.port
    endpoint: IStreamClientEndpoint
    if isIPAddress(host):
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=connectTimeout)
    elif isIPv6Address(host):
        endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=connectTimeout)
    else:
        endpoint = HostnameEndpoint(reactor, host, port, timeout=connectTimeout)
    if environment.secure:
        options = optionsForClientTLS(
            host,
            trustRoot=trustRoot if trustRoot is not None else platformTrust(),
        )
        endpoint = wrapClientTLS(options, endpoint)
    return endpoint


class _ConnectionFactory(Factory):
    """
    Builds L{UpstreamConnection}s for one pool.
    """

    noisy = False

    def __init__(self, pool: UpstreamPool) -> None:
        """
        @param pool: The pool the connections belong to.
        """
        self.pool = pool

    def buildProtocol(self, addr: object) -> UpstreamConnection:
        """
        @param addr: The environment's address.
        @return: A connection owned by the pool.
        """
        return UpstreamConnection(self.pool)


@define(eq=False)
class UpstreamPool:
    """
    Persistent connections to one environment, at most C{maxConnections}.

    Idle connections are reused most-recently-used first and closed after
    C{idleTimeout} seconds; when every connection is busy, requests wait in
    order for one.

    @ivar reactor: Connects and times the idle connections.
    @ivar environment: Where the connections go.
    @ivar connectTimeout: Seconds allowed for a TCP connect.
    @ivar trustRoot: The CA trusted for C{https} (the platform's if L{None}).
    @ivar endpoint: How to connect (built by L{endpointFor} unless given).
    @ivar maxConnections: The most connections open or opening at once.
    @ivar idleTimeout: Seconds an unused connection is kept open.
    @ivar localErrors: Connects that failed for want of a local resource
        (C{EMFILE}...): logged once per streak, until a connect succeeds.
    """

    reactor: ConnectingReactor
    environment: Environment
    connectTimeout: float = 5.0
    trustRoot: Certificate | None = None
    maxConnections: int = 100
    idleTimeout: float = 4.0
    endpoint: IStreamClientEndpoint | None = None
    _idle: list[UpstreamConnection] = field(factory=list, init=False)
    _open: set[UpstreamConnection] = field(factory=set, init=False)
    _waiters: deque[Deferred[UpstreamConnection]] = field(factory=deque, init=False)
    _connecting: int = field(default=0, init=False)
    _closing: bool = field(default=False, init=False)
    _whenClosed: list[Deferred[None]] = field(factory=list, init=False)
    _connectionFactory: _ConnectionFactory = field(init=False)
    _sweeper: IDelayedCall | None = field(default=None, init=False)
    _distrusted: bool = field(default=False, init=False)
    localErrors: int = field(default=0, init=False)
    _localStreak: int = field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._connectionFactory = _ConnectionFactory(self)
        if self.endpoint is None:
            self.endpoint = endpointFor(
                self.reactor, self.environment, self.connectTimeout, self.trustRoot
            )

    @property
    def busy(self) -> int:
        """
        Connections lent out or being opened.
        """
        return len(self._open) - len(self._idle) + self._connecting

    @property
    def idle(self) -> int:
        """
        Open connections waiting to be reused.
        """
        return len(self._idle)

    @property
    def waiting(self) -> int:
        """
        Requests waiting for a connection (every one is busy).
        """
        return sum(1 for waiter in self._waiters if not waiter.called)

    @property
    def distrusted(self) -> bool:
        """
        L{True} from a failed request until a new connection succeeds: no
        connection is reused meanwhile (see L{distrust}).
        """
        return self._distrusted

    def idleConnection(self) -> UpstreamConnection | None:
        """
        Lend an idle connection at once, if there is one.

        This is the hot path of a busy proxy, so it involves no L{Deferred}.

        @return: The most recently used idle connection, or L{None}.
        """
        if self._idle and not self._closing and not self._distrusted:
            return self._idle.pop()
        return None

    def acquire(self, fresh: bool = False) -> Deferred[UpstreamConnection]:
        """
        Lend a connection.

        @param fresh: Open a new connection even when an idle one exists
            (used to retry after a reused one turned out closed).
        @return: A Deferred that fires with a connection for one exchange, or
            fails with the connection error (or L{PoolClosed}).  Cancelling it
            gives up the place in the queue.
        """
        if self._closing:
            return fail(PoolClosed(f"{self.environment.name} pool is closed"))
        if not fresh:
            conn = self.idleConnection()
            if conn is not None:
                return succeed(conn)
        if len(self._open) + self._connecting < self.maxConnections:
            return self._connect()
        waiter: Deferred[UpstreamConnection] = Deferred(self._cancelWaiter)
        self._waiters.append(waiter)
        return waiter

    def _cancelWaiter(self, waiter: Deferred[UpstreamConnection]) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    def _connect(self) -> Deferred[UpstreamConnection]:
        self._connecting += 1
        assert self.endpoint is not None
        d = cast(
            "Deferred[UpstreamConnection]",
            self.endpoint.connect(self._connectionFactory),
        )

        def connected(conn: UpstreamConnection) -> UpstreamConnection:
            self._connecting -= 1
            if self._localStreak:
                _log.info(
                    "connecting to {env} works again after {count} local failure(s)",
                    env=self.environment.name,
                    count=self._localStreak,
                    event="local-error-over",
                )
                self._localStreak = 0
            self._open.add(conn)
            # The environment accepts connections again.
            self._distrusted = False
            if self._closing:
                conn.transport.loseConnection()
                raise PoolClosed(f"{self.environment.name} pool is closed")
            return conn

        def failed(reason: Failure) -> Failure:
            self._connecting -= 1
            local = localResourceError(reason.value)
            if local is not None:
                self.localErrors += 1
                if not self._localStreak:
                    _log.warn(
                        "cannot connect to {env}: {why}; a local shortage, not "
                        "the environment's: requests get 503 and it is not "
                        "marked down (logged once until a connect succeeds)",
                        env=self.environment.name,
                        why=local,
                        event="local-error",
                    )
                self._localStreak += 1
            self._serveWaiter()
            self._checkClosed()
            return reason

        d.addCallbacks(connected, failed)
        return d

    def release(self, conn: UpstreamConnection) -> None:
        """
        Take back a connection whose exchange is complete and reusable.

        @param conn: The connection.
        """
        if self._closing or self._distrusted or conn not in self._open:
            # Closing it frees its slot: connectionClosed then opens a new
            # connection for a waiter, if any.
            conn.transport.loseConnection()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.called:
                waiter.callback(conn)
                return
        conn.idleSince = self.reactor.seconds()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.reactor.callLater(self.idleTimeout, self._sweep)

    def distrust(self) -> int:
        """
        Stop reusing connections, until a new one succeeds.

        Called when a request could not reach the environment.  Connections
        opened before it crashed are dead too, although the reactor may not
        have read their close yet, and a request sent on one would be lost
        (a C{POST} cannot be resent).  So idle connections are closed at
        once, connections released meanwhile are closed instead of kept, and
        every request opens a new connection: while the environment is
        down, that is refused at once and the request is retried on the
        standby, whatever its method.

        @return: How many idle connections were closed.
        """
        self._distrusted = True
        dropped, self._idle = self._idle, []
        for conn in dropped:
            conn.abort()
        return len(dropped)

    def discard(self, conn: UpstreamConnection) -> None:
        """
        Close a connection that cannot be reused.

        @param conn: The connection.
        """
        conn.transport.loseConnection()

    def _sweep(self) -> None:
        # One timer for all idle connections, rather than one per release:
        # the idle list is oldest-first, so expired ones are at its head.
        self._sweeper = None
        deadline = self.reactor.seconds() - self.idleTimeout
        while self._idle and self._idle[0].idleSince <= deadline:
            self._idle.pop(0).transport.loseConnection()
        if self._idle:
            delay = self._idle[0].idleSince - deadline
            self._sweeper = self.reactor.callLater(max(delay, 0.01), self._sweep)

    def connectionClosed(self, conn: UpstreamConnection) -> None:
        """
        Forget a connection that has closed (called by the connection).

        @param conn: The connection.
        """
        if conn in self._idle:
            self._idle.remove(conn)
        self._open.discard(conn)
        self._serveWaiter()
        self._checkClosed()

    def _serveWaiter(self) -> None:
        # A slot freed up: open a connection for the longest waiter.
        if not self._waiters or self._closing:
            return
        if len(self._open) + self._connecting >= self.maxConnections:
            return
        waiter = self._waiters.popleft()

        def give(conn: UpstreamConnection) -> None:
            if waiter.called:
                self.release(conn)
            else:
                waiter.callback(conn)

        def failed(reason: Failure) -> None:
            if not waiter.called:
                waiter.errback(reason)

        self._connect().addCallbacks(give, failed)

    def close(self, grace: float = 10.0) -> Deferred[None]:
        """
        Close every connection: idle ones now, busy ones when their exchange
        ends or after C{grace} seconds, whichever is first.

        @param grace: Seconds busy connections may finish in.
        @return: A Deferred that fires when every connection has closed.
        """
        self._closing = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.called:
                waiter.errback(PoolClosed(f"{self.environment.name} pool is closed"))
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._idle):
            conn.transport.loseConnection()
        d: Deferred[None] = Deferred()
        self._whenClosed.append(d)
        if self._open or self._connecting:
            timer: IDelayedCall = self.reactor.callLater(grace, self._abortAll)

            def stopTimer(result: None) -> None:
                if timer.active():
                    timer.cancel()

            d.addCallback(stopTimer)
        self._checkClosed()
        return d

    def _abortAll(self) -> None:
        for conn in list(self._open):
            conn.abort()

    def _checkClosed(self) -> None:
        if self._closing and not self._open and not self._connecting:
            waiting, self._whenClosed = self._whenClosed, []
            for d in waiting:
                d.callback(None)


__all__ = [
    "ConnectingReactor",
    "PoolClosed",
    "UpstreamPool",
    "endpointFor",
    "loadTrustRoot",
]
