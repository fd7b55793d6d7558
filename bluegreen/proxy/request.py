# -*- test-case-name: tests.test_proxy_integration,tests.test_bigbodies -*-
"""
The client's side of a proxied request: a twisted.web request that starts
forwarding as soon as its headers are in, and its body, streamed upstream as
it arrives.

twisted.web would otherwise read the whole body into a file before rendering.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from twisted.web.server import Site

from bluegreen.proxy.body import RequestBody


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
