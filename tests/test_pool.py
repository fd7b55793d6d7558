# -*- test-case-name: tests.test_pool -*-
"""
Tests for L{bluegreen.proxy.pool}: bounds, reuse order, waiting, idle expiry and
closing, with a deterministic clock and in-memory connections.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from bluegreen.environment import Environment
from bluegreen.proxy.pool import PoolClosed, UpstreamPool, endpointFor, loadTrustRoot
from bluegreen.proxy.upstream import UpstreamConnection

GREEN = Environment.fromURL("green", "http://127.0.0.1:5002")


class ClosingTransport(StringTransport):
    """
    A transport whose C{loseConnection} tells the protocol at once.
    """

    protocol: UpstreamConnection | None = None

    def loseConnection(self) -> None:
        if not self.disconnecting and self.protocol is not None:
            self.disconnecting = True
            self.protocol.connectionLost(Failure(ConnectionDone()))

    def abortConnection(self) -> None:
        self.loseConnection()


class FakeEndpoint:
    """
    An endpoint whose connections are in memory; each connect waits for the
    test to call L{succeedOne} or L{failOne}.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[IProtocolFactory, Deferred[UpstreamConnection]]] = []
        self.connections: list[UpstreamConnection] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[UpstreamConnection]:
        d: Deferred[UpstreamConnection] = Deferred()
        self.pending.append((factory, d))
        return d

    def succeedOne(self) -> UpstreamConnection:
        factory, d = self.pending.pop(0)
        conn = factory.buildProtocol(None)  # type: ignore[arg-type]
        assert isinstance(conn, UpstreamConnection)
        transport = ClosingTransport()
        transport.protocol = conn
        conn.makeConnection(transport)
        self.connections.append(conn)
        d.callback(conn)
        return conn

    def failOne(self) -> None:
        _, d = self.pending.pop(0)
        d.errback(ConnectionRefusedError())


def makePool(
    maxConnections: int = 2, idleTimeout: float = 4.0
) -> tuple[UpstreamPool, FakeEndpoint, Clock]:
    """
    A pool over a L{FakeEndpoint} and a L{Clock}.
    """
    clock = MemoryReactorClock()
    endpoint = FakeEndpoint()
    pool = UpstreamPool(
        clock,
        GREEN,
        maxConnections=maxConnections,
        idleTimeout=idleTimeout,
        endpoint=endpoint,  # type: ignore[arg-type]
    )
    return pool, endpoint, clock


def got(d: Deferred[UpstreamConnection]) -> list[object]:
    """
    Collect what C{d} fires with.
    """
    results: list[object] = []
    d.addBoth(results.append)
    return results


class PoolTests(SynchronousTestCase):
    """
    L{UpstreamPool} lends and takes back connections.
    """

    def test_connectAndReuse(self) -> None:
        """
        A released connection is lent again instead of opening another.
        """
        pool, endpoint, _ = makePool()
        first = got(pool.acquire())
        conn = endpoint.succeedOne()
        self.assertEqual(first, [conn])
        self.assertEqual(pool.busy, 1)
        pool.release(conn)
        self.assertEqual((pool.busy, pool.idle), (0, 1))
        self.assertIs(pool.idleConnection(), conn)
        self.assertEqual(endpoint.pending, [])

    def test_distrust(self) -> None:
        """
        L{UpstreamPool.distrust} closes every idle connection (not the busy
        ones), so the next request opens a fresh one.
        """
        pool, endpoint, _ = makePool(maxConnections=3)
        pool.acquire()
        pool.acquire()
        pool.acquire()
        a, b, busy = (endpoint.succeedOne() for _ in range(3))
        pool.release(a)
        pool.release(b)
        self.assertEqual(pool.distrust(), 2)
        self.assertTrue(pool.distrusted)
        transport = a.transport
        assert isinstance(transport, ClosingTransport)
        self.assertTrue(transport.disconnecting)
        self.assertEqual((pool.busy, pool.idle), (1, 0))
        self.assertFalse(cast(ClosingTransport, busy.transport).disconnecting)
        self.assertIsNone(pool.idleConnection())
        got(pool.acquire())
        self.assertEqual(len(endpoint.pending), 1)
        self.assertEqual(pool.distrust(), 0)

    def test_distrustedReleaseCloses(self) -> None:
        """
        A connection released while the pool is distrusted (its exchange
        ended just before the environment failed) is closed, not kept: the
        next request connects afresh instead of reusing it.
        """
        pool, endpoint, _ = makePool()
        pool.acquire()
        conn = endpoint.succeedOne()
        pool.distrust()
        pool.release(conn)
        self.assertTrue(cast(ClosingTransport, conn.transport).disconnecting)
        self.assertEqual((pool.busy, pool.idle), (0, 0))
        got(pool.acquire())
        self.assertEqual(len(endpoint.pending), 1)

    def test_distrustedWaiterConnectsAfresh(self) -> None:
        """
        A request waiting for a busy connection is not handed one released
        while the pool is distrusted: the connection is closed and a new one
        opened for the waiter.
        """
        pool, endpoint, _ = makePool(maxConnections=1)
        pool.acquire()
        conn = endpoint.succeedOne()
        waiting = got(pool.acquire())
        pool.distrust()
        pool.release(conn)
        self.assertEqual(waiting, [])
        self.assertEqual(len(endpoint.pending), 1)
        fresh = endpoint.succeedOne()
        self.assertEqual(waiting, [fresh])
        self.assertIsNot(fresh, conn)

    def test_trustedAfterNewConnection(self) -> None:
        """
        A new connection that succeeds ends the distrust: connections are
        kept and reused again.  A failed one does not.
        """
        pool, endpoint, _ = makePool()
        pool.distrust()
        refused = got(pool.acquire())
        endpoint.failOne()
        self.assertEqual(len(refused), 1)
        self.assertTrue(pool.distrusted)
        pool.acquire()
        conn = endpoint.succeedOne()
        self.assertFalse(pool.distrusted)
        pool.release(conn)
        self.assertIs(pool.idleConnection(), conn)

    def test_mostRecentlyUsedFirst(self) -> None:
        """
        The connection released last is reused first, so surplus ones expire.
        """
        pool, endpoint, clock = makePool()
        pool.acquire()
        pool.acquire()
        a, b = endpoint.succeedOne(), endpoint.succeedOne()
        pool.release(a)
        clock.advance(1)
        pool.release(b)
        self.assertIs(pool.idleConnection(), b)

    def test_bounded(self) -> None:
        """
        Past C{maxConnections}, requests wait in order and get connections
        as they are released.
        """
        pool, endpoint, _ = makePool(maxConnections=1)
        got(pool.acquire())
        conn = endpoint.succeedOne()
        second = got(pool.acquire())
        third = got(pool.acquire())
        self.assertEqual(endpoint.pending, [])
        self.assertEqual((second, third), ([], []))
        pool.release(conn)
        self.assertEqual(second, [conn])
        self.assertEqual(third, [])
        pool.release(conn)
        self.assertEqual(third, [conn])

    def test_cancelWaiting(self) -> None:
        """
        A cancelled wait gives up its place.
        """
        pool, endpoint, _ = makePool(maxConnections=1)
        pool.acquire()
        conn = endpoint.succeedOne()
        waiting = pool.acquire()
        waiting.addErrback(lambda f: None)
        waiting.cancel()
        pool.release(conn)
        self.assertEqual(pool.idle, 1)

    def test_closedFreesSlot(self) -> None:
        """
        A connection that closes lets a waiting request open a new one.
        """
        pool, endpoint, _ = makePool(maxConnections=1)
        pool.acquire()
        conn = endpoint.succeedOne()
        waiting = got(pool.acquire())
        conn.transport.loseConnection()
        self.assertEqual(len(endpoint.pending), 1)
        fresh = endpoint.succeedOne()
        self.assertEqual(waiting, [fresh])

    def test_connectFailure(self) -> None:
        """
        A failed connect fails the acquire and frees its slot.
        """
        pool, endpoint, _ = makePool(maxConnections=1)
        result = got(pool.acquire())
        endpoint.failOne()
        [failure] = result
        assert isinstance(failure, Failure)
        self.assertTrue(failure.check(ConnectionRefusedError))
        self.assertEqual(pool.busy, 0)
        pool.acquire()
        self.assertEqual(len(endpoint.pending), 1)

    def test_fresh(self) -> None:
        """
        C{fresh=True} opens a new connection even when one is idle.
        """
        pool, endpoint, _ = makePool()
        pool.acquire()
        pool.release(endpoint.succeedOne())
        pool.acquire(fresh=True)
        self.assertEqual(len(endpoint.pending), 1)
        self.assertEqual(pool.idle, 1)

    def test_idleExpiry(self) -> None:
        """
        Idle connections close C{idleTimeout} seconds after their last use,
        with one timer for them all.
        """
        pool, endpoint, clock = makePool(idleTimeout=4.0)
        pool.acquire()
        pool.acquire()
        a, b = endpoint.succeedOne(), endpoint.succeedOne()
        pool.release(a)
        clock.advance(2)
        pool.release(b)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(2)
        self.assertTrue(a.transport.disconnecting)  # type: ignore[attr-defined]
        self.assertFalse(b.transport.disconnecting)  # type: ignore[attr-defined]
        clock.advance(2)
        self.assertTrue(b.transport.disconnecting)  # type: ignore[attr-defined]
        self.assertEqual((pool.idle, pool.busy), (0, 0))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_close(self) -> None:
        """
        Closing closes idle connections now, fails waiters, refuses new
        acquires, and fires once busy connections are released.
        """
        pool, endpoint, clock = makePool(maxConnections=2)
        pool.acquire()
        pool.acquire()
        busy, idle = endpoint.succeedOne(), endpoint.succeedOne()
        pool.release(idle)
        closed = got(pool.close(grace=10))  # type: ignore[arg-type]
        self.assertTrue(idle.transport.disconnecting)  # type: ignore[attr-defined]
        self.assertEqual(closed, [])
        refused = got(pool.acquire())
        [failure] = refused
        assert isinstance(failure, Failure)
        self.assertTrue(failure.check(PoolClosed))
        pool.release(busy)
        self.assertEqual(closed, [None])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_closeGrace(self) -> None:
        """
        Busy connections still open after the grace period are aborted.
        """
        pool, endpoint, clock = makePool()
        pool.acquire()
        busy = endpoint.succeedOne()
        closed = got(pool.close(grace=5))  # type: ignore[arg-type]
        clock.advance(5)
        self.assertTrue(busy.transport.disconnecting)  # type: ignore[attr-defined]
        self.assertEqual(closed, [None])


class EndpointTests(SynchronousTestCase):
    """
    L{endpointFor} and L{loadTrustRoot}.
    """

    def test_ipLiteral(self) -> None:
        """
        IP literals connect directly, with the connect timeout.
        """
        reactor = MemoryReactorClock()
        endpoint = endpointFor(reactor, GREEN, 3.0)
        self.assertEqual(type(endpoint).__name__, "TCP4ClientEndpoint")
        endpoint.connect(Factory())
        [(host, port, _, timeout, _)] = reactor.tcpClients
        self.assertEqual((host, port, timeout), (GREEN.host, GREEN.port, 3.0))
        v6 = Environment.fromURL("blue", "http://[::1]:5001")
        self.assertEqual(
            type(endpointFor(MemoryReactorClock(), v6, 1)).__name__,
            "TCP6ClientEndpoint",
        )

    def test_https(self) -> None:
        """
        https environments are wrapped in TLS.
        """
        secure = Environment.fromURL("blue", "https://localhost:8443")
        endpoint = endpointFor(MemoryReactorClock(), secure, 1)
        self.assertEqual(type(endpoint).__name__, "_WrapperEndpoint")

    def test_badTrustRoot(self) -> None:
        """
        A missing or non-PEM CA file is a clear error.
        """
        with self.assertRaises(ValueError) as missing:
            loadTrustRoot("/nonexistent/ca.pem")
        self.assertIn("cannot read /nonexistent/ca.pem", str(missing.exception))
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a certificate")
        with self.assertRaises(ValueError) as bad:
            loadTrustRoot(path)
        self.assertIn("does not hold a PEM certificate", str(bad.exception))
