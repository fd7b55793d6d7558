# -*- test-case-name: tests.test_front_limits,tests.test_tunnel -*-
"""
The proxy's client connections: twisted.web's L{HTTPChannel} with the
front door's limits and timeouts (L{ClientLimits}), each refusal answered
with a status, logged and counted, never a silent close.

twisted.web alone closes a too-long line without a word, answers a bare
C{400} to a too-large or too-numerous header section, has no deadline for
a request head (only a 60 s idle timer that every byte resets), accepts
C{CONNECT}, absolute-form targets and requests without C{Host}, and reads
only the first word of C{Connection}.  L{ProxyChannel} checks each of these
before the request reaches the proxy:

  - a request line over C{requestLineLimit}: 414;
  - a header section over C{headerSectionLimit} bytes or
    C{headerFieldsLimit} fields: 431;
  - a head not complete within C{headerTimeout} of its first byte (or of
    the connection, for its first request): 408;
  - a silence of C{idleTimeout} within a body: 408;
  - a body over C{maxBodySize}: 413 (a declared length at once, before any
    upstream is contacted; a chunked body when it passes the limit);
  - C{CONNECT}: 405; an HTTP/1.1 request without C{Host}, or any with two:
    400; a target in neither origin nor absolute form: 400;
  - an absolute-form target (C{GET http://host/x}) becomes origin form,
    its authority the C{Host} (RFC 9112 section 3.2.2);
  - every token of C{Connection} counts (C{close, foo} closes).

A refused client's response says C{Connection: close}; the proxy then
closes its side for writing and reads and drops what the client still
sends for up to C{lingerTimeout}, so that the client's kernel does not
throw the response away by resetting the connection over unread data.

An accepted upgrade (C{101 Switching Protocols}, e.g. a WebSocket) ends HTTP
on the connection: L{ProxyChannel.takeOver} hands its bytes to the tunnel
(L{bluegreen.proxy.tunnel}), and the limits and timers above stop.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request

from bluegreen.proxy.clients import ClientGate
from bluegreen.proxy.headers import clientHost
from bluegreen.proxy.limits import ClientLimits
from bluegreen.proxy.rejections import ALLOWED_METHODS, Rejections, rejectionResponse
from bluegreen.proxy.request import ProxyRequest, requestLine

_log = Logger()

# A host and optional port, as Host and an absolute-form authority allow
# (RFC 3986 reg-name or IP literal; no user information).
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+;=%-]*)(:[0-9]*)?\Z")

# An absolute-form target: scheme, authority, and the rest.
_ABSOLUTE = re.compile(rb"(https?)://([^/?#]*)(.*)\Z", re.IGNORECASE | re.DOTALL)

#: The states of a client connection, as L{ProxyChannel.state} names them.
HEAD, BODY, HANDLING, IDLE, CLOSING = "head", "body", "handling", "idle", "closing"


class TunnelEnd(Protocol):
    """
    What takes a client connection over (a tunnel): it is given every byte
    the client sends from then on.
    """

    def clientData(self, data: bytes) -> None:
        """
        Bytes from the client.

        @param data: The bytes.
        """


class FrontDoor(Protocol):
    """
    What a channel needs of its site (L{bluegreen.proxy.resource.ProxySite}
    provides it).
    """

    @property
    def limits(self) -> ClientLimits:
        """
        The limits and timeouts.
        """

    @property
    def rejections(self) -> Rejections:
        """
        Counts refused requests.
        """

    @property
    def gate(self) -> ClientGate | None:
        """
        Counts client connections (C{--max-clients}), or L{None}.
        """

    @property
    def reactor(self) -> IReactorTime:
        """
        Times the request heads.
        """


class Refusal(Exception):
    """
    A request the proxy refuses.

    @ivar status: The status it is answered with.
    @ivar cause: The cause, as the metrics name it (see
        L{bluegreen.proxy.rejections.CAUSES}).
    @ivar text: Why, in a few words, for the client and the log.
    @ivar headers: More response header fields.
    """

    def __init__(
        self,
        status: int,
        cause: str,
        text: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(status, cause, text)
        self.status = status
        self.cause = cause
        self.text = text
        self.headers = headers


def connectionTokens(values: Sequence[bytes] | None) -> set[bytes]:
    """
    Every token of a message's C{Connection} fields, lower case.

    @param values: The C{Connection} field values.
    @return: The tokens (C{close, Foo} gives C{{b"close", b"foo"}}).
    """
    return {
        token.strip().lower()
        for value in values or ()
        for token in value.split(b",")
        if token.strip()
    }


def checkRequest(
    method: bytes, target: bytes, version: bytes, request: Request
) -> bytes | None:
    """
    Check a request's method, target and C{Host} (RFC 9112 section 3.2).

    @param method: The method.
    @param target: The request target.
    @param version: The HTTP version.
    @param request: The request, whose C{Host} is replaced by the authority
        of an absolute-form target.
    @return: The origin-form target to forward if C{target} is in absolute
        form, else L{None}.
    @raise Refusal: If the request is refused.
    """
    if method == b"CONNECT":
        raise Refusal(
            405,
            "connect",
            "CONNECT is not supported (bluegreen is a reverse proxy)",
            [(b"Allow", ALLOWED_METHODS)],
        )
    hosts = request.requestHeaders.getRawHeaders(b"host") or []
    if len(hosts) > 1:
        raise Refusal(400, "repeated_host", "more than one Host header field")
    if not hosts and version == b"HTTP/1.1":
        raise Refusal(400, "missing_host", "an HTTP/1.1 request needs a Host header")
    if hosts and not _HOST.match(hosts[0]):
        raise Refusal(400, "invalid_host", "the Host header is not a host[:port]")
    if target.startswith(b"/") or (target == b"*" and method == b"OPTIONS"):
        return None
    absolute = _ABSOLUTE.match(target)
    if absolute is None:
        raise Refusal(
            400,
            "invalid_target",
            "the request target must be a path (/...) or an http(s) URL",
        )
    authority, rest = absolute.group(2), absolute.group(3)
    if not authority or not _HOST.match(authority):
        raise Refusal(400, "invalid_target", "the request URL has no valid host")
    # RFC 9112 section 3.2.2: the target's authority wins over Host.
    request.requestHeaders.setRawHeaders(b"host", [authority])
    return rest if rest.startswith(b"/") else b"/" + rest


class ProxyChannel(HTTPChannel):
    """
    A client connection of the proxy, with the front door's limits.

    @ivar site: The site (set by L{twisted.web.server.Site.buildProtocol}).
    @ivar state: L{HEAD} (a request head is arriving, or awaited on a new
        connection), L{BODY} (its body is arriving), L{HANDLING} (the
        request is in; waiting for its response to end), L{IDLE} (a
        keep-alive connection between requests) or L{CLOSING} (refused;
        lingering before the close).
    @ivar tunnel: What the connection was handed over to by L{takeOver},
        or L{None} while it speaks HTTP.
    """

    site: FrontDoor
    state = HEAD
    tunnel: TunnelEnd | None = None
    _headerCall: IDelayedCall | None = None
    _headStarted = 0.0
    _lingerCall: IDelayedCall | None = None
    _lines = 0
    _headerBytes = 0
    _fields = 0
    _counted = False

    # Connection

    def connectionMade(self) -> None:
        """
        Apply the limits, count the connection, and start timing the head
        of its first request.
        """
        limits = self.site.limits
        # twisted.web's own limits, raised above ours so ours answer first.
        self.totalHeadersSize = limits.requestLineLimit + limits.headerSectionLimit
        self.maxHeaders = limits.headerFieldsLimit + 1
        super().connectionMade()
        gate = self.site.gate
        if gate is not None:
            self._counted = True
            gate.opened()
        channels = getattr(self.site, "channels", None)
        if channels is not None:
            # A drain looks for responses still open there.
            channels.add(self)
        self._beginHead()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Stop the timers and uncount the connection.

        @param reason: Why it closed.
        """
        self.state = CLOSING
        self._cancelHeaderTimer()
        call, self._lingerCall = self._lingerCall, None
        if call is not None and call.active():
            call.cancel()
        if self._counted:
            self._counted = False
            gate = self.site.gate
            if gate is not None:
                gate.closed()
        channels = getattr(self.site, "channels", None)
        if channels is not None:
            channels.discard(self)
        super().connectionLost(reason)

    def takeOver(self, tunnel: TunnelEnd) -> bytes:
        """
        Stop parsing HTTP: every byte the client sends from now on goes to
        C{tunnel}, and the head and idle timers stop (the tunnel has its
        own).  The request being handled stays unfinished; its
        C{connectionLost} still tells when the connection ends.

        @param tunnel: The new owner of the connection's bytes.
        @return: What the client sent after the request and before now
            (the channel held it, as it holds a pipelined request).
        """
        self.tunnel = tunnel
        self._cancelHeaderTimer()
        self.setTimeout(None)
        # HTTPChannel's private buffer (see WRAPPED_PRIVATES in
        # tests/test_layout.py): a public "hand the connection over" API
        # would replace it (Twisted's own websocket support uses a private
        # one, and drops these bytes).
        private: Any = self
        held: list[bytes] = private._dataBuffer
        early = b"".join(held)
        del held[:]
        # The channel pauses reading while it holds too much: the tunnel
        # does its own flow control from here.
        transport = self.transport
        if transport is not None:
            transport.resumeProducing()  # type: ignore[attr-defined]
        return early

    # Parsing

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes from the client: dropped once refused; the first of a request
        starts its head's deadline.

        @param data: The bytes.
        """
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.clientData(data)
            return
        if self.state == CLOSING:
            return
        if self.state == IDLE:
            self._beginHead()
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        """
        A line of a request head: check it against the limits.

        @param line: The line, without its CRLF.
        """
        if self.state == CLOSING:
            return
        if self.state == IDLE:
            self._beginHead()
        limits = self.site.limits
        if self._lines == 0:
            if line:
                if len(line) > limits.requestLineLimit:
                    self._tooLong()
                    return
                self._lines = 1
                self.MAX_LENGTH = limits.headerSectionLimit
        elif line:
            self._lines += 1
            self._headerBytes += len(line) + 2
            if line[:1] not in (b" ", b"\t"):
                self._fields += 1
            if self._headerBytes > limits.headerSectionLimit:
                self.reject(
                    Refusal(
                        431,
                        "header_section_too_large",
                        f"header section over {limits.headerSectionLimit} bytes",
                    )
                )
                return
            if self._fields > limits.headerFieldsLimit:
                self.reject(
                    Refusal(
                        431,
                        "too_many_fields",
                        f"more than {limits.headerFieldsLimit} header fields",
                    )
                )
                return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A line longer than the limit, even before its end arrived.

        @param line: What arrived of it (and after it).
        """
        if self.state == CLOSING:
            return
        if self._lines == 0:
            self._tooLong()
        else:
            limit = self.site.limits.headerSectionLimit
            self.reject(
                Refusal(
                    431,
                    "header_section_too_large",
                    f"header section over {limit} bytes",
                )
            )

    def _tooLong(self) -> None:
        limit = self.site.limits.requestLineLimit
        self.reject(
            Refusal(
                414,
                "request_line_too_long",
                f"request line over {limit} bytes",
            )
        )

    def rawDataReceived(self, data: bytes) -> None:
        """
        Body bytes, or a next request's bytes while one is handled; dropped
        once refused.

        @param data: The bytes.
        """
        if self.state != CLOSING:
            super().rawDataReceived(data)

    def allHeadersReceived(self) -> None:
        """
        The head is in: its deadline no longer applies (the timer is left
        to fire and find no head under way); check the request before the
        proxy sees it.
        """
        self.state = BODY
        limits = self.site.limits
        self.MAX_LENGTH = limits.requestLineLimit
        request = self.requests[-1]
        method, target, version = requestLine(self)
        try:
            origin = checkRequest(method, target, version, request)
            limit = limits.maxBodySize
            length = self.length
            if limit is not None and length is not None and length > limit:
                raise Refusal(
                    413,
                    "body_too_large",
                    f"request body of {length} bytes is over the limit of "
                    f"{limit} bytes",
                )
        except Refusal as refusal:
            self.reject(refusal)
            return
        if isinstance(request, ProxyRequest):
            request.originTarget = origin
            if limit is not None and length is None:
                request.bodyLimit = limit
                request.overLimit = self
        super().allHeadersReceived()

    def bodyTooLarge(self) -> None:
        """
        The request's chunked body passed C{--max-body-size}: a 413.
        """
        limit = self.site.limits.maxBodySize
        self.reject(
            Refusal(
                413,
                "body_too_large",
                f"chunked request body over the limit of {limit} bytes",
            )
        )

    def allContentReceived(self) -> None:
        """
        The whole request is in: hand it to the proxy (unless refused).
        """
        if self.state == CLOSING:
            return
        self.state = HANDLING
        super().allContentReceived()

    def checkPersistence(self, request: Request, version: bytes) -> bool:
        """
        Keep the connection after this request unless it is HTTP/1.0 or any
        C{Connection} token is C{close} (twisted.web reads only the first
        word of the first field).

        @param request: The request.
        @param version: Its HTTP version.
        @return: C{True} to keep the connection.
        """
        tokens = connectionTokens(request.requestHeaders.getRawHeaders(b"connection"))
        if version != b"HTTP/1.1":
            return False
        if b"close" in tokens:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return True

    def requestDone(self, request: Request) -> None:
        """
        A response ended: wait for the next request (idle timer).

        @param request: The request.
        """
        if self.persistent and self.state != CLOSING:
            # Before twisted.web replays pipelined bytes, which may hold the
            # next head.
            self.state = IDLE
        super().requestDone(request)

    # Timeouts

    def timeoutConnection(self) -> None:
        """
        The idle timer fired: a silence within a head or a body is a 408;
        between requests the connection is closed as twisted.web does.
        """
        if self.tunnel is not None:
            return
        if self.state == HEAD:
            self._refuseSlowHead()
        elif self.state == BODY:
            seconds = self.site.limits.idleTimeout
            self.reject(
                Refusal(
                    408,
                    "body_timeout",
                    f"request body stalled for {seconds:g} s",
                )
            )
        elif self.state != CLOSING:
            super().timeoutConnection()

    def _beginHead(self) -> None:
        self.state = HEAD
        self._lines = self._headerBytes = self._fields = 0
        self.MAX_LENGTH = self.site.limits.requestLineLimit
        reactor = self.site.reactor
        self._headStarted = reactor.seconds()
        # One timer per connection at a time, not one per request: a
        # keep-alive connection's timer, if still pending from an earlier
        # head, is moved on when it fires (see _headerTimedOut).
        if self._headerCall is None:
            self._headerCall = reactor.callLater(
                self.site.limits.headerTimeout, self._headerTimedOut
            )

    def _cancelHeaderTimer(self) -> None:
        call, self._headerCall = self._headerCall, None
        if call is not None and call.active():
            call.cancel()

    def _headerTimedOut(self) -> None:
        self._headerCall = None
        if self.state != HEAD:
            return
        seconds = self.site.limits.headerTimeout
        reactor = self.site.reactor
        left = self._headStarted + seconds - reactor.seconds()
        if left > 0:
            # This head began after the one the timer was set for.
            self._headerCall = reactor.callLater(left, self._headerTimedOut)
            return
        self._refuseSlowHead()

    def _refuseSlowHead(self) -> None:
        seconds = self.site.limits.headerTimeout
        self.reject(
            Refusal(
                408,
                "header_timeout",
                f"request head not received within {seconds:g} s",
            )
        )

    # Refusing

    def _respondToBadRequestAndDisconnect(self) -> None:
        # twisted.web's own answer to a request it cannot parse (a bad
        # request line, header line, Content-Length or chunk): a bare 400
        # with no log.  No public hook exists; this gives it a body, a log
        # line and a count like every other refusal.
        self.reject(Refusal(400, "malformed", "malformed request"))

    def reject(self, refusal: Refusal) -> None:
        """
        Refuse the request under way: count and log it, answer it (unless
        its response has begun, in which case the connection is cut), and
        close after lingering.

        @param refusal: Why.
        """
        if self.state == CLOSING:
            return
        self.state = CLOSING
        self._cancelHeaderTimer()
        self.setTimeout(None)
        site = self.site
        site.rejections.count(refusal.status, refusal.cause)
        # A TCP, UNIX or TLS transport, more than ITransport says.
        transport: Any = self.transport
        _log.info(
            "refused a request from {client}: {status} ({cause}): {text}",
            client=(clientHost(transport.getPeer()) or b"-").decode("ascii"),
            status=refusal.status,
            cause=refusal.cause,
            text=refusal.text,
            event="client-refused",
        )
        request = self.requests[-1] if self.requests else None
        if isinstance(request, ProxyRequest):
            # The proxy must not start it, nor go on with it.
            request.gone = True
            exchange = request.exchange
            if exchange is not None:
                exchange.clientGone()
        if request is not None and request.startedWriting:
            transport.abortConnection()
            return
        transport.write(
            rejectionResponse(
                refusal.status, refusal.text, site.reactor.seconds(), refusal.headers
            )
        )
        linger = site.limits.lingerTimeout
        halfClose = ITCPTransport.providedBy(
            self.transport
        ) and not ISSLTransport.providedBy(self.transport)
        if halfClose:
            # Close our side once the response is out and drop what the
            # client still sends until it closes, or until the linger ends.
            # The channel stops being the transport's producer first, or a
            # paused channel would hold the close back.
            transport.unregisterProducer()
            transport.loseWriteConnection()
            transport.resumeProducing()
        else:
            # HTTPChannel's own close: it stops being the producer first (a
            # TLS transport waits for its producer to go before closing).
            self.loseConnection()
        self._lingerCall = site.reactor.callLater(linger, transport.abortConnection)
