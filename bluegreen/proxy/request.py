# -*- test-case-name: tests.test_proxy_integration,tests.test_bigbodies -*-
"""
The client's side of a proxied request: a twisted.web request that starts
forwarding as soon as its headers are in, and its body, streamed upstream as
it arrives.

twisted.web would otherwise read the whole body into a file before rendering.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from twisted.web.server import Site
from zope.interface import implementer

from bluegreen.proxy.upstream import UpstreamConnection

#: Bytes of request body kept so a request can be resent on a new connection
#: when a reused one turns out to have been closed by the server.
REPLAY_LIMIT = 64 * 1024

#: Bytes of request body held while waiting for an upstream connection
#: before the client is paused.
PENDING_LIMIT = 64 * 1024


class Abandonable(Protocol):
    """
    What a request tells when its client disconnects (its exchange).
    """

    def clientGone(self) -> None:
        """
        The client disconnected: abandon whatever is under way for it.
        """


class BodyLimit(Protocol):
    """
    Who a request tells when its chunked body passes C{--max-body-size}
    (its channel, L{bluegreen.proxy.channel.ProxyChannel}).
    """

    def bodyTooLarge(self) -> None:
        """
        The body passed the limit: refuse the request.
        """


def requestLine(channel: HTTPChannel) -> tuple[bytes, bytes, bytes]:
    """
    The method, target and version of the request whose headers C{channel}
    has just read.

    twisted.web passes them to L{Request.requestReceived} only once the whole
    body is in, but a proxy that streams bodies needs them as soon as the
    headers are.  Until then L{HTTPChannel} keeps them in private attributes:
    this is the one place bluegreen reads them.  A public hook would replace
    it: the request line given to L{Request.gotLength}, or set on the request
    (C{method}, C{uri}, C{clientproto}) before it.

    @param channel: The channel, from L{Request.gotLength}.
    @return: C{(method, target, version)}.
    """
    private: Any = channel
    return private._command, private._path, private._version


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

    def __init__(self, request: ProxyRequest, length: int | None) -> None:
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


class ProxyRequest(Request):
    """
    A request that is proxied as soon as its headers are in.

    twisted.web normally reads the whole body into a file before rendering;
    this request instead starts the exchange at once and streams the body
    (see L{RequestBody}).  It also skips the work a proxy does not need
    (argument and form parsing, resource traversal, default headers).

    @ivar body: The body being streamed, or L{None} for a request without
        one.
    @ivar exchange: Told when the client disconnects (the exchange under
        way), or L{None}.
    @ivar gone: C{True} once the client connection is lost.
    """

    body: RequestBody | None = None
    exchange: Abandonable | None = None
    gone = False
    #: Set by the channel: the origin-form target to forward instead of an
    #: absolute-form one (L{bluegreen.proxy.channel.checkRequest}).
    originTarget: bytes | None = None
    #: Set by the channel for a chunked body under C{--max-body-size}: the
    #: most body bytes allowed, and who is told past them.
    bodyLimit: int | None = None
    overLimit: BodyLimit | None = None
    received = 0

    def gotLength(self, length: int | None) -> None:
        """
        Headers are in: start proxying now if a body follows.

        @param length: The declared body length, or L{None} if chunked.
        """
        if length == 0:
            super().gotLength(0)
            return
        self.body = RequestBody(self, length)
        command, path, version = requestLine(self.channel)
        # Start on the next turn, after twisted.web may have sent
        # "100 Continue", so that can never follow a final response.
        _site(self).reactor.callLater(0, self._start, command, path, version)

    def handleContentChunk(self, data: bytes) -> None:
        """
        Forward a piece of the body.

        @param data: The piece.
        """
        limit = self.bodyLimit
        if limit is not None:
            self.received += len(data)
            if self.received > limit and self.overLimit is not None:
                self.bodyLimit = None
                self.overLimit.bodyTooLarge()
                return
        body = self.body
        if body is not None:
            body.dataReceived(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """
        The whole request has arrived.

        @param command: The method.
        @param path: The request target.
        @param version: The HTTP version.
        """
        body = self.body
        if body is not None:
            body.finished()
        else:
            self._start(command, path, version)

    def _start(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.gone:
            return
        if self.originTarget is not None:
            path = self.originTarget
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.split(b"?", 1)[0]
        self.args = {}
        self.prepath: list[bytes] = []
        self.postpath: list[bytes] = []
        site = _site(self)
        self.site = site
        try:
            site.resource.render(self)
        except Exception:
            Logger().failure("proxy failed to start a request")
            if not self.startedWriting and not self.finished:
                self.setResponseCode(500)
                self.finish()

    def connectionLost(self, reason: Failure) -> None:
        """
        The client went away: abandon the upstream exchange.

        @param reason: Why.
        """
        self.gone = True
        super().connectionLost(reason)
        exchange = self.exchange
        if exchange is not None:
            exchange.clientGone()


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


def _site(request: Request) -> Site:
    """
    The site whose channel carries C{request}.

    @param request: A request.
    @return: The L{Site} (L{Site.buildProtocol} sets it on each channel; the
        type of L{HTTPChannel} does not declare it).
    """
    channel: Any = request.channel
    site: Site = channel.site
    return site
