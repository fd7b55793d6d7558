# -*- test-case-name: tests.test_upstream,tests.test_bigbodies -*-
"""
A request body arriving from the client, and the client connection's
transport it pauses and resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

from twisted.internet.interfaces import IPushProducer
from twisted.web.http import Request
from zope.interface import implementer

from bluegreen.proxy.upstream import UpstreamConnection

#: Bytes of request body kept so a request can be resent on a new connection
#: when a reused one turns out to have been closed by the server.
REPLAY_LIMIT = 64 * 1024

#: Bytes of request body held while waiting for an upstream connection
#: before the client is paused.
PENDING_LIMIT = 64 * 1024


@implementer(IPushProducer)
class RequestBody:
    """
    A request body arriving from the client, forwarded upstream as it comes.

    Until an upstream connection is ready, chunks are held (pausing the client
    past L{PENDING_LIMIT}); the first L{REPLAY_LIMIT} bytes are kept so the
    request can be resent once on a fresh connection.

    @ivar request: The client's request.
    @ivar length: The declared length, or L{None} for a chunked upload.
    @ivar complete: C{True} once the client has sent the whole body.
    @ivar replayable: C{True} while all that was sent upstream is kept
        (at most L{REPLAY_LIMIT} bytes), so it can be sent again.
    """

    def __init__(self, request: Request, length: int | None) -> None:
        """
        @param request: The client's request.
        @param length: The declared length, or L{None} for a chunked upload.
        """
        self.request = request
        self.length = length
        self.complete = False
        self.replayable = True
        self._sent: list[bytes] = []
        self._sentSize = 0
        self._pending: list[bytes] = []
        self._pendingSize = 0
        self._conn: UpstreamConnection | None = None
        self._discarding = False
        self._paused = False
        self._whenComplete: list[Callable[[], object]] = []

    # From the client

    def dataReceived(self, data: bytes) -> None:
        """
        A chunk of the body arrived from the client.

        @param data: The chunk.
        """
        if self._discarding:
            return
        if self._conn is not None:
            self._remember(data)
            self._conn.writeBody(data)
        else:
            self._pending.append(data)
            self._pendingSize += len(data)
            if self._pendingSize > PENDING_LIMIT and not self._paused:
                self.pauseProducing()

    def finished(self) -> None:
        """
        The client has sent the whole body.
        """
        self.complete = True
        if self._conn is not None:
            self._conn.unregisterBodyProducer()
            self._conn.endBody()
        waiting, self._whenComplete = self._whenComplete, []
        for f in waiting:
            f()

    def whenComplete(self, f: Callable[[], object]) -> None:
        """
        Call C{f} once the client has sent the whole body.

        @param f: Called with no argument (at once if the body is complete).
        """
        if self.complete:
            f()
        else:
            self._whenComplete.append(f)

    def _remember(self, data: bytes) -> None:
        if self.replayable:
            self._sentSize += len(data)
            if self._sentSize > REPLAY_LIMIT:
                self.replayable = False
                self._sent = []
            else:
                self._sent.append(data)

    # Toward the upstream

    def attach(self, conn: UpstreamConnection) -> None:
        """
        Send the body (what has arrived, then the rest as it comes) on C{conn}.

        @param conn: The upstream connection the request head went out on.
        """
        self._conn = conn
        conn.registerBodyProducer(self)
        for data in self._sent:
            conn.writeBody(data)
        pending, self._pending, self._pendingSize = self._pending, [], 0
        for data in pending:
            self._remember(data)
            conn.writeBody(data)
        if self.complete:
            conn.unregisterBodyProducer()
            conn.endBody()
        elif self._paused:
            self.resumeProducing()

    def detach(self) -> None:
        """
        Stop sending on the current connection (it failed).
        """
        self._conn = None

    def discard(self) -> None:
        """
        Drop the rest of the body (the exchange is over).
        """
        self._discarding = True
        self._conn = None
        self._pending = []
        self._sent = []
        if self._paused:
            self.resumeProducing()

    # IPushProducer, driven by the upstream transport's write buffer

    def pauseProducing(self) -> None:
        """
        Stop reading from the client.
        """
        transport = clientTransport(self.request)
        if transport is not None:
            self._paused = True
            transport.pauseProducing()

    def resumeProducing(self) -> None:
        """
        Read from the client again.
        """
        transport = clientTransport(self.request)
        self._paused = False
        if transport is not None:
            transport.resumeProducing()

    def stopProducing(self) -> None:
        """
        The upstream connection is gone; the exchange handles that.
        """


class ClientTransport(Protocol):
    """
    What the proxy does with a client connection's transport (a TCP or TLS
    transport provides it all): pause and resume reading, and cut it off.
    """

    def pauseProducing(self) -> None:
        """
        Stop reading.
        """

    def resumeProducing(self) -> None:
        """
        Read again.
        """

    def abortConnection(self) -> None:
        """
        Close at once, dropping what is buffered.
        """


def clientTransport(request: Request) -> ClientTransport | None:
    """
    The client connection's transport, or L{None} once it is gone.

    @param request: A request.
    @return: Its channel's transport.
    """
    channel = request.channel
    if channel is None:
        return None
    # HTTPChannel's type says only ITransport; a stream transport is more.
    return cast("ClientTransport | None", channel.transport)
