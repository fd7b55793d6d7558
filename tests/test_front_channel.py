# -*- test-case-name: tests.test_front_channel -*-
"""
The timing logic of L{bluegreen.proxy.channel.ProxyChannel}, on a L{Clock}
and an in-memory transport: when the head's deadline starts and ends, the
idle timer within a head and between requests, and the linger after a
refusal.  The real-socket behaviour is in L{tests.test_front_limits}.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET

from bluegreen.proxy.channel import (
    BODY,
    CLOSING,
    HANDLING,
    HEAD,
    IDLE,
    ProxyChannel,
    connectionTokens,
)
from bluegreen.proxy.clients import ClientGate
from bluegreen.proxy.limits import ClientLimits
from bluegreen.proxy.rejections import Rejections
from bluegreen.proxy.request import ProxyRequest


class Answering:
    """
    A resource that answers each request at once, or holds it.

    @ivar held: Requests held (with C{hold}), to be finished by the test.
    """

    def __init__(self) -> None:
        self.hold = False
        self.held: list[ProxyRequest] = []

    def render(self, request: ProxyRequest) -> object:
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        request.setHeader(b"content-length", b"2")
        request.write(b"ok")
        request.finish()
        return NOT_DONE_YET


@define
class FakeSite:
    """
    What a channel needs of its site.
    """

    limits: ClientLimits
    reactor: Clock = field(factory=Clock)
    rejections: Rejections = field(factory=Rejections)
    gate: ClientGate | None = None
    resource: Answering = field(factory=Answering)


GET = b"GET / HTTP/1.1\r\nHost: proxy.test\r\n\r\n"


class ChannelTimingTests(SynchronousTestCase):
    """
    The deadlines of a client connection.
    """

    def connect(self, **limits: Any) -> tuple[ProxyChannel, StringTransport, Clock]:
        """
        A channel on a string transport, with C{limits}.
        """
        site = FakeSite(ClientLimits(**limits))
        self.site = site
        channel = ProxyChannel()
        channel.site = site
        # What twisted.web's factory sets on each channel (loosely typed).
        settable: Any = channel
        settable.requestFactory = ProxyRequest
        settable.callLater = site.reactor.callLater
        settable.timeOut = site.limits.idleTimeout
        transport = StringTransport()
        channel.makeConnection(transport)
        self.addCleanup(self.disconnect, channel)
        return channel, transport, site.reactor

    def disconnect(self, channel: ProxyChannel) -> None:
        if channel.state != CLOSING:
            channel.connectionLost()
        self.assertEqual(self.site.reactor.getDelayedCalls(), [])

    def assertRefused(self, transport: StringTransport, status: bytes) -> None:
        written = transport.value()
        self.assertTrue(written.startswith(b"HTTP/1.1 " + status), written)
        self.assertIn(b"\r\nConnection: close\r\n", written)
        self.assertTrue(transport.disconnecting)

    def test_deadlineFromConnection(self) -> None:
        """
        A new connection that sends nothing gets a 408 at the deadline, not
        before.
        """
        channel, transport, clock = self.connect(headerTimeout=10.0)
        clock.advance(9.9)
        self.assertEqual(transport.value(), b"")
        clock.advance(0.1)
        self.assertRefused(transport, b"408")
        self.assertEqual(channel.state, CLOSING)
        self.assertEqual(self.site.rejections.counts, {(408, "header_timeout"): 1})
        channel.connectionLost()

    def test_tricklingDoesNotExtend(self) -> None:
        """
        One header line every 2 s resets the idle timer but not the head's
        deadline: cut at 10 s.
        """
        channel, transport, clock = self.connect(headerTimeout=10.0)
        channel.dataReceived(b"GET / HTTP/1.1\r\n")
        for n in range(4):
            clock.advance(2)
            channel.dataReceived(b"X-%d: y\r\n" % n)
        clock.advance(1.9)
        self.assertEqual(transport.value(), b"")
        clock.advance(0.1)
        self.assertRefused(transport, b"408")
        channel.connectionLost()

    def test_deadlineStartsAtFirstByteOfNextRequest(self) -> None:
        """
        Between keep-alive requests only the idle timer runs; the next
        head's deadline starts at its first byte.
        """
        channel, transport, clock = self.connect(headerTimeout=10.0, idleTimeout=60.0)
        channel.dataReceived(GET)
        self.assertIn(b"200 OK", transport.value())
        self.assertEqual(channel.state, IDLE)
        transport.clear()
        clock.advance(50)
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(b"G")
        self.assertEqual(channel.state, HEAD)
        clock.advance(9.9)
        self.assertEqual(transport.value(), b"")
        clock.advance(0.1)
        self.assertRefused(transport, b"408")
        channel.connectionLost()

    def test_timerMovedOnForLaterHead(self) -> None:
        """
        A keep-alive connection keeps one timer: set for an earlier head,
        it finds a later head under way when it fires and gives that one
        its whole time.
        """
        channel, transport, clock = self.connect(headerTimeout=10.0)
        channel.dataReceived(GET)
        self.assertEqual(len(clock.getDelayedCalls()), 2)  # head and idle
        clock.advance(5)
        transport.clear()
        channel.dataReceived(b"GET / HT")
        self.assertEqual(len(clock.getDelayedCalls()), 2)
        clock.advance(5)
        self.assertEqual(transport.value(), b"")
        clock.advance(4.9)
        self.assertEqual(transport.value(), b"")
        clock.advance(0.1)
        self.assertRefused(transport, b"408")
        channel.connectionLost()

    def test_idleBetweenRequestsClosesQuietly(self) -> None:
        """
        An idle keep-alive connection is closed at the idle timeout without
        a response, and without a refusal counted.
        """
        channel, transport, clock = self.connect(idleTimeout=60.0)
        channel.dataReceived(GET)
        transport.clear()
        clock.advance(60)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.site.rejections.counts, {})
        channel.connectionLost()

    def test_idleWithinHead(self) -> None:
        """
        With an idle timeout shorter than the head's deadline, a silence
        within a head is a 408 too.
        """
        channel, transport, clock = self.connect(headerTimeout=10.0, idleTimeout=2.0)
        channel.dataReceived(b"GET / HT")
        clock.advance(2)
        self.assertRefused(transport, b"408")
        self.assertEqual(self.site.rejections.counts, {(408, "header_timeout"): 1})
        channel.connectionLost()

    def test_noDeadlineWhileHandling(self) -> None:
        """
        A request whose response takes long is not cut by either timer.
        """
        channel, transport, clock = self.connect(headerTimeout=10.0, idleTimeout=5.0)
        self.site.resource.hold = True
        channel.dataReceived(GET)
        self.assertEqual(channel.state, HANDLING)
        clock.advance(100)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)
        [request] = self.site.resource.held
        request.setHeader(b"content-length", b"0")
        request.finish()
        self.assertIn(b"200 OK", transport.value())
        self.assertEqual(channel.state, IDLE)
        channel.connectionLost()

    def test_bodyStall(self) -> None:
        """
        A body silent for the idle timeout gets a 408 (body_timeout).
        """
        channel, transport, clock = self.connect(idleTimeout=5.0)
        self.site.resource.hold = True
        channel.dataReceived(
            b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab"
        )
        self.assertEqual(channel.state, BODY)
        clock.advance(0)  # the proxy starts a streamed request next turn
        clock.advance(5)
        self.assertRefused(transport, b"408")
        self.assertEqual(self.site.rejections.counts, {(408, "body_timeout"): 1})
        channel.connectionLost()

    def test_lingerThenAbort(self) -> None:
        """
        After a refusal the client's bytes are dropped; the connection is
        aborted at the end of the linger.
        """
        channel, transport, clock = self.connect(lingerTimeout=5.0)
        channel.dataReceived(b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\n")
        self.assertRefused(transport, b"405")
        written = transport.value()
        channel.dataReceived(GET)
        self.assertEqual(transport.value(), written)
        self.assertFalse(transport.disconnected)
        clock.advance(5)
        self.assertTrue(transport.disconnected)
        channel.connectionLost()

    def test_gateCounts(self) -> None:
        """
        A channel is counted by the gate while it is connected.
        """
        site = FakeSite(ClientLimits(), gate=ClientGate(10, Clock()))
        channel = ProxyChannel()
        channel.site = site
        settable: Any = channel
        settable.callLater = site.reactor.callLater
        channel.makeConnection(StringTransport())
        assert site.gate is not None
        self.assertEqual(site.gate.current, 1)
        channel.connectionLost()
        self.assertEqual(site.gate.current, 0)
        channel.connectionLost()
        self.assertEqual(site.gate.current, 0)


class ConnectionTokenTests(SynchronousTestCase):
    """
    L{connectionTokens}.
    """

    def test_everyToken(self) -> None:
        """
        Every comma-separated token of every field, trimmed, lower case.
        """
        self.assertEqual(
            connectionTokens([b"keep-alive, Close ,Foo", b"BAR", b" , "]),
            {b"keep-alive", b"close", b"foo", b"bar"},
        )
        self.assertEqual(connectionTokens(None), set())
