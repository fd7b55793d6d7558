# -*- test-case-name: tests.test_proxy_integration,tests.test_failover_unit -*-
"""
The reverse proxy: a twisted.web resource that forwards every request to the
live environment.

Each request reads the controller's live environment once, so it goes wholly
to one environment even if a switch happens while it is in flight.  Bodies
stream both ways with backpressure: L{ProxyRequest} starts forwarding as soon
as a request's headers have arrived (twisted.web would otherwise buffer the
whole upload first), and a slow client pauses the upstream connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.internet.interfaces import IAddress, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request, datetimeToString
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from bluegreen.proxy.accesslog import AccessLog
from bluegreen.proxy.pool import PoolClosed
from bluegreen.proxy.upstream import BadResponse, UpstreamConnection
from bluegreen.tls import describeTLSError, isTLSError

if TYPE_CHECKING:
    from bluegreen.admin.metrics import Metrics
    from bluegreen.controller import Controller
    from bluegreen.environment import Environment
    from bluegreen.health import HealthMonitor
    from bluegreen.proxy.pool import UpstreamPool

#: Hop-by-hop headers (RFC 9110 section 7.6.1), never forwarded; lower case.
HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
    )
)

# Request headers the proxy writes itself.
_REWRITTEN = frozenset(
    (b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
)

#: Bytes of request body kept so a request can be resent on a new connection
#: when a reused one turns out to have been closed by the server.
REPLAY_LIMIT = 64 * 1024

#: Bytes of request body held while waiting for an upstream connection
#: before the client is paused.
PENDING_LIMIT = 64 * 1024

_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))

# Methods retried on the standby after they may have reached the live
# environment: those without side effects.
_SAFE = frozenset((b"GET", b"HEAD", b"OPTIONS"))


def _droppedBy(connectionValues: Sequence[bytes] | None) -> frozenset[bytes]:
    """
    The lower-case header names a message's C{Connection} header makes
    hop-by-hop, plus the standard ones.
    """
    if not connectionValues:
        return HOP_BY_HOP
    tokens = {
        token.strip().lower()
        for value in connectionValues
        for token in value.split(b",")
    }
    return HOP_BY_HOP | tokens


class _DateCache:
    """
    The current HTTP date, formatted at most once a second.
    """

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self, seconds: float) -> bytes:
        second = int(seconds)
        if second != self._second:
            self._second = second
            self._value = datetimeToString(second)
        return self._value


_dates = _DateCache()


@implementer(IPushProducer)
class _RequestBody:
    """
    A request body arriving from the client, forwarded upstream as it comes.

    Until an upstream connection is ready, chunks are held (pausing the client
    past L{PENDING_LIMIT}); the first L{REPLAY_LIMIT} bytes are kept so the
    request can be resent once on a fresh connection.

    @ivar length: The declared length, or L{None} for a chunked upload.
    @ivar complete: C{True} once the client has sent the whole body.
    """

    def __init__(self, request: ProxyRequest, length: int | None) -> None:
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
        self._whenComplete: list[Any] = []

    # From the client

    def dataReceived(self, data: bytes) -> None:
        """
        A chunk of the body arrived from the client.
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

    def whenComplete(self, f: Any) -> None:
        """
        Call C{f} once the client has sent the whole body.
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
        transport = _clientTransport(self.request)
        if transport is not None:
            self._paused = True
            transport.pauseProducing()

    def resumeProducing(self) -> None:
        """
        Read from the client again.
        """
        transport = _clientTransport(self.request)
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
    (see L{_RequestBody}).  It also skips the work a proxy does not need
    (argument and form parsing, resource traversal, default headers).
    """

    body: _RequestBody | None = None
    exchange: _Exchange | None = None

    def gotLength(self, length: int | None) -> None:
        """
        Headers are in: start proxying now if a body follows.

        @param length: The declared body length, or L{None} if chunked.
        """
        if length == 0:
            super().gotLength(0)
            return
        self.body = _RequestBody(self, length)
        channel: Any = self.channel
        command, path, version = channel._command, channel._path, channel._version
        # Start on the next turn, after twisted.web may have sent
        # "100 Continue", so that can never follow a final response.
        channel.site.reactor.callLater(0, self._start, command, path, version)

    def handleContentChunk(self, data: bytes) -> None:
        """
        Forward a piece of the body.
        """
        body = self.body
        if body is not None:
            body.dataReceived(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """
        The whole request has arrived.
        """
        body = self.body
        if body is not None:
            body.finished()
        else:
            self._start(command, path, version)

    def _start(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._disconnected:
            return
        channel: Any = self.channel
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.split(b"?", 1)[0]
        self.args = {}
        self.prepath: list[bytes] = []
        self.postpath: list[bytes] = []
        site = channel.site
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
        """
        super().connectionLost(reason)
        exchange = self.exchange
        if exchange is not None:
            exchange.clientGone()


class ProxySite(Site):
    """
    A L{Site} whose requests are L{ProxyRequest}s and which does not write
    twisted.web's own access log (the proxy logs each request itself).
    """

    requestFactory = ProxyRequest  # type: ignore[assignment]

    def __init__(self, resource: ProxyResource, reactor: Any) -> None:
        """
        @param resource: The proxy.
        @param reactor: The reactor the site's connections run on.
        """
        super().__init__(resource, reactor=reactor)
        self.reactor = reactor

    def log(self, request: Request) -> None:
        """
        Do nothing: see L{ProxyResource} for the access log.
        """


class ProxyResource(Resource):
    """
    Forwards every request to the controller's live environment.

    @ivar controller: Holds the live environment.
    @ivar pools: A connection pool per environment name.
    @ivar clock: Times responses.
    @ivar responseTimeout: Seconds from the whole request being received
        until the upstream's response headers must have arrived, and the
        longest silence allowed in a response body (not counting pauses a
        slow client causes); a stalled body aborts the client connection.
    @ivar preserveHost: Send the client's C{Host} (C{True}) or the
        environment's (C{False}).
    @ivar accessLog: Where each request is logged, or L{None}.
    @ivar health: Told of environments that proxied requests cannot reach
        (passive detection), and asked whether the standby is up.
    @ivar retry: Retry a request that could not reach its environment once
        on the standby (when it is up and nothing of the request can have
        been processed).
    @ivar metrics: Counts requests, upstream errors and retries, or L{None}.
    @ivar stampFlags: With C{--stamp-flags}: called with the name of the
        environment a request goes to, returns its flags (name to C{"on"} or
        C{"off"}, from a cache: it never waits), each sent upstream as
        C{X-Feature-<NAME>}; the client's own C{X-Feature-*} headers are then
        dropped, so they cannot be forged.  L{None}: no stamping.
    """

    isLeaf = True

    def __init__(
        self,
        controller: Controller,
        pools: dict[str, UpstreamPool],
        clock: IReactorTime,
        responseTimeout: float = 60.0,
        preserveHost: bool = True,
        accessLog: AccessLog | None = None,
        health: HealthMonitor | None = None,
        retry: bool = True,
        metrics: Metrics | None = None,
        stampFlags: Callable[[str], Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__()
        self.stampFlags = stampFlags
        self.health = health
        self.retry = retry
        self.metrics = metrics
        self.controller = controller
        self.pools = pools
        self.clock = clock
        self.responseTimeout = responseTimeout
        self.preserveHost = preserveHost
        self.accessLog = accessLog

    def render(self, request: ProxyRequest) -> Any:
        """
        Start forwarding C{request}.

        @return: L{NOT_DONE_YET}: the exchange finishes the request.
        """
        environment = self.controller.live
        exchange = _Exchange(self, request, environment)
        request.exchange = exchange
        exchange.start(False)
        return NOT_DONE_YET

    def buildHead(self, request: ProxyRequest, environment: Environment) -> bytes:
        """
        The upstream request line and headers for C{request}.

        Repeated headers keep their order; hop-by-hop headers (and those
        named by C{Connection}) are dropped; C{X-Forwarded-*} are set.

        @param request: The client's request.
        @param environment: Where it goes.
        @return: The request head, ending with an empty line.
        """
        headers = request.requestHeaders
        drop = _droppedBy(headers.getRawHeaders(b"connection"))
        parts = [request.method, b" ", request.uri, b" HTTP/1.1\r\n"]
        append = parts.append
        host: bytes | None = None
        forwardedFor: list[bytes] = []
        stamp = self.stampFlags
        for name, values in headers.getAllRawHeaders():
            lower = name.lower()
            if lower in drop or lower.startswith(b"proxy-"):
                continue
            if stamp is not None and lower.startswith(b"x-feature-"):
                continue
            if lower in _REWRITTEN:
                if lower == b"host":
                    host = values[0]
                elif lower == b"x-forwarded-for":
                    forwardedFor.extend(values)
                continue
            for value in values:
                append(name)
                append(b": ")
                append(value)
                append(b"\r\n")
        upstreamHost = (
            host if host is not None and self.preserveHost else environment.hostHeader
        )
        append(b"Host: ")
        append(upstreamHost)
        client = _clientHost(request.getClientAddress())
        if client is not None:
            forwardedFor.append(client)
        if forwardedFor:
            append(b"\r\nX-Forwarded-For: ")
            append(b", ".join(forwardedFor))
        append(
            b"\r\nX-Forwarded-Proto: https"
            if request.isSecure()
            else b"\r\nX-Forwarded-Proto: http"
        )
        if host is not None:
            append(b"\r\nX-Forwarded-Host: ")
            append(host)
        if stamp is not None:
            for flag, state in stamp(environment.name).items():
                # A name with ":" cannot be a header name: not stamped.
                if ":" not in flag:
                    append(b"\r\nX-Feature-%s: %s" % (flag.encode(), state.encode()))
        body = request.body
        if body is not None and body.length is None:
            append(b"\r\nTransfer-Encoding: chunked")
        append(b"\r\n\r\n")
        return b"".join(parts)


def _clientTransport(request: Request) -> Any:
    """
    The client connection's transport, or L{None} once it is gone.
    """
    channel = request.channel
    return channel.transport if channel is not None else None


def _clientHost(address: IAddress | None) -> bytes | None:
    host = getattr(address, "host", None)
    if isinstance(host, str):
        return host.encode("ascii")
    return None


#: The kinds of upstream failure, as the metrics name them:
#:   - C{refused}: the connection was refused;
#:   - C{timeout_connect}: no connection within C{--connect-timeout};
#:   - C{timeout_response}: no response head within C{--response-timeout};
#:   - C{dns}: the host name could not be resolved;
#:   - C{unreachable}: any other failure to connect (no route to host...);
#:   - C{tls}: the TLS handshake or the certificate check failed;
#:   - C{closed}: the upstream closed the connection (before or during the
#:     response);
#:   - C{reset}: the connection was reset or otherwise lost;
#:   - C{invalid_response}: the response was not valid HTTP/1.1;
#:   - C{shutdown}: bluegreen is shutting down (the pool is closed);
#:   - C{other}: anything else.
#: L{classifyFailure} says which (but for C{timeout_response}).
FAILURE_KINDS = (
    "refused",
    "timeout_connect",
    "timeout_response",
    "dns",
    "unreachable",
    "tls",
    "closed",
    "reset",
    "invalid_response",
    "shutdown",
    "other",
)


def classifyFailure(
    reason: Failure, connectTimeout: float | None = None
) -> tuple[int, str, str]:
    """
    Turn an upstream failure into a status, a short reason and a kind.

    @param reason: Why the upstream exchange failed.
    @param connectTimeout: The connect timeout, for the message.
    @return: C{(502, 503 or 504, reason, kind)}; the kind is one of
        L{FAILURE_KINDS} (but never C{timeout_response}, which is no
        failure of the connection: see L{_Exchange._timedOut}).
    """
    error = reason.value
    if isinstance(error, TimeoutError):
        after = f" within {connectTimeout:g} s" if connectTimeout else ""
        return (
            504,
            f"did not accept a connection{after} (connect timeout)",
            "timeout_connect",
        )
    if isinstance(error, ConnectionRefusedError):
        return 502, "refused the connection", "refused"
    if isinstance(error, DNSLookupError):
        return 502, f"host name could not be resolved ({error})", "dns"
    if isinstance(error, BadResponse):
        return 502, f"sent an invalid response: {error}", "invalid_response"
    if isinstance(error, PoolClosed):
        return (
            503,
            "is not accepting requests (bluegreen is shutting down)",
            "shutdown",
        )
    if isinstance(error, ConnectionDone):
        return 502, "closed the connection before responding", "closed"
    if isinstance(error, ConnectionLost):
        return 502, "closed the connection before responding", "reset"
    if isinstance(error, ConnectError):
        text = str(error.osError or error) if hasattr(error, "osError") else str(error)
        return 502, f"could not be reached ({text.strip()})", "unreachable"
    if isTLSError(error):
        return 502, f"TLS handshake failed ({describeTLSError(error)})", "tls"
    return 502, f"failed ({type(error).__name__}: {error})", "other"


def describeFailure(
    reason: Failure, connectTimeout: float | None = None
) -> tuple[int, str]:
    """
    Turn an upstream failure into a status and a short reason.

    @param reason: Why the upstream exchange failed.
    @param connectTimeout: The connect timeout, for the message.
    @return: C{(502, 503 or 504, reason)}: see L{classifyFailure}.
    """
    status, text, _ = classifyFailure(reason, connectTimeout)
    return status, text


@implementer(IPushProducer)
class _Exchange:
    """
    One request's trip to an environment and back.

    It is the L{ResponseSink} of the upstream connection and the producer
    registered with the client's request, so a slow client pauses the
    upstream connection.
    """

    __slots__ = (
        "_acquiring",
        "_conn",
        "_done",
        "_responded",
        "_retried",
        "_standbyTried",
        "_timeoutCall",
        "bytes",
        "environment",
        "request",
        "resource",
        "started",
        "status",
    )

    def __init__(
        self, resource: ProxyResource, request: ProxyRequest, environment: Environment
    ) -> None:
        self.resource = resource
        self.request = request
        self.environment = environment
        self.started = time.monotonic()
        self.status = 0
        self.bytes = 0
        self._conn: UpstreamConnection | None = None
        self._acquiring: Deferred[UpstreamConnection] | None = None
        self._done = False
        self._responded = False
        self._retried = False
        self._standbyTried = False
        self._timeoutCall: Any = None
        body = request.body
        if body is None:
            self._startTimeout()
        else:
            # An upload can take longer than any response timeout: the
            # clock starts once the whole request is in.
            body.whenComplete(self._startTimeout)

    def start(self, fresh: bool) -> None:
        """
        Get a connection and send the request.

        @param fresh: Insist on a new connection (retrying after a reused one
            failed).
        """
        pool = self.resource.pools[self.environment.name]
        if not fresh:
            conn = pool.idleConnection()
            if conn is not None:
                self._connected(conn)
                return
        d = pool.acquire(fresh)
        self._acquiring = d
        d.addCallbacks(self._connected, self._connectFailed)

    def _connected(self, conn: UpstreamConnection) -> None:
        self._acquiring = None
        if self._done:
            self.resource.pools[self.environment.name].release(conn)
            return
        self._conn = conn
        request = self.request
        body = request.body
        conn.sendHead(
            self.resource.buildHead(request, self.environment),
            self,
            request.method == b"HEAD",
            body is not None and body.length is None,
            body is not None,
        )
        if body is not None:
            body.attach(conn)

    def _connectFailed(self, reason: Failure) -> None:
        self._acquiring = None
        if self._done or reason.check(CancelledError, ConnectingCancelledError):
            return
        self._countError(reason)
        if not reason.check(PoolClosed) and self._unreachable(reason, sent=False):
            return
        self._fail(reason)

    def _unreachable(self, reason: Failure, sent: bool) -> bool:
        """
        The environment could not be reached: tell the health monitor, and
        retry on the standby if that is safe.

        @param reason: The connect failure, or the connection lost before
            any response byte.
        @param sent: C{True} if the request was written (so the application
            may have acted on it).
        @return: C{True} if the request was retried on the standby.
        """
        resource = self.resource
        health = resource.health
        environment = self.environment
        if health is not None:
            _, text = describeFailure(reason)
            health.reportPassive(environment.name, f"proxied request: {text}")
        if not resource.retry or self._standbyTried:
            return False
        request = self.request
        if sent and (request.body is not None or request.method not in _SAFE):
            return False
        standby = resource.controller.other(environment.name)
        if health is not None and not health.isUp(standby.name):
            return False
        self._standbyTried = True
        self._retried = False
        metrics = resource.metrics
        if metrics is not None:
            metrics.retry(environment.name, standby.name, "standby")
        self.environment = standby
        if request.body is not None:
            request.body.detach()
        self.start(False)
        return True

    # ResponseSink

    def responseHead(
        self, code: int, phrase: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """
        Copy the upstream's status and end-to-end headers to the client.
        """
        # From here the response timeout bounds silences in the body.
        self._armTimeout()
        self._responded = True
        self.status = code
        request = self.request
        request.setResponseCode(code, phrase or None)
        responseHeaders = request.responseHeaders
        connection = [value for name, value in headers if name.lower() == b"connection"]
        drop = _droppedBy(connection)
        hasDate = False
        for name, value in headers:
            lower = name.lower()
            if lower in drop or lower.startswith(b"proxy-"):
                continue
            if lower == b"date":
                hasDate = True
            responseHeaders.addRawHeader(name, value)
        if not hasDate:
            responseHeaders.setRawHeaders(b"Date", [_dates.now(time.time())])
        request.registerProducer(self, True)

    def responseData(self, data: bytes) -> None:
        """
        Pass a piece of the body on.
        """
        call = self._timeoutCall
        if call is not None:
            call.reset(self.resource.responseTimeout)
        self.bytes += len(data)
        self.request.write(data)

    def responseDone(self) -> None:
        """
        The upstream response is complete: complete the client's.
        """
        self._conn = None
        request = self.request
        request.unregisterProducer()
        body = request.body
        if body is not None and not body.complete:
            # The upstream answered before the upload ended.  twisted.web can
            # only finish a request once its body is in, so drop the rest.
            body.discard()
            body.whenComplete(self._finish)
        else:
            self._finish()

    def responseFailed(self, reason: Failure, started: bool) -> None:
        """
        The upstream exchange failed.
        """
        conn, self._conn = self._conn, None
        if self._done:
            return
        body = self.request.body
        if (
            not started
            and conn is not None
            and conn.reused
            and not self._retried
            and (body is None or body.replayable)
            and self.request.method in _IDEMPOTENT
        ):
            # A pooled connection the server had already closed: nothing
            # reached the application, so send it again on a new connection.
            self._retried = True
            metrics = self.resource.metrics
            if metrics is not None:
                name = self.environment.name
                metrics.retry(name, name, "stale_connection")
            if body is not None:
                body.detach()
            self.start(True)
            return
        self._countError(reason)
        if self._responded:
            # Part of the body went out: cut the client off so the response
            # is not passed off as complete.
            self._abortClient()
            return
        if (
            not started
            and reason.check(ConnectionDone, ConnectionLost)
            and self._unreachable(reason, sent=True)
        ):
            return
        self._fail(reason)

    # IPushProducer (registered with the client's request)

    def pauseProducing(self) -> None:
        """
        The client is not keeping up: stop reading from the upstream (and
        stop timing its silence, which is the client's doing).
        """
        if self._conn is not None:
            self._cancelTimeout()
            self._conn.pauseProducing()

    def resumeProducing(self) -> None:
        """
        The client caught up.
        """
        if self._conn is not None:
            self._armTimeout()
            self._conn.resumeProducing()

    def stopProducing(self) -> None:
        """
        The client connection is going away.
        """
        self.clientGone()

    # Ending

    def clientGone(self) -> None:
        """
        The client disconnected: abandon the upstream request.
        """
        if self._done:
            return
        self._done = True
        self._cancelTimeout()
        if self._acquiring is not None:
            self._acquiring.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
        body = self.request.body
        if body is not None:
            body.discard()
        if not self._responded:
            self.status = 499
        self._log()

    def _timedOut(self) -> None:
        self._timeoutCall = None
        if self._done:
            return
        if self._acquiring is not None:
            acquiring, self._acquiring = self._acquiring, None
            acquiring.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
        metrics = self.resource.metrics
        if metrics is not None:
            metrics.upstreamError(self.environment.name, "timeout_response")
        if self._responded:
            # The body stalled: the response cannot be completed.
            self._abortClient()
            return
        seconds = self.resource.responseTimeout
        self._error(504, f"did not respond within {seconds:g} s (response timeout)")

    def _startTimeout(self) -> None:
        if not (self._done or self._responded):
            self._timeoutCall = self.resource.clock.callLater(
                self.resource.responseTimeout, self._timedOut
            )

    def _armTimeout(self) -> None:
        call = self._timeoutCall
        if call is not None and call.active():
            call.reset(self.resource.responseTimeout)
        elif not self._done:
            self._timeoutCall = self.resource.clock.callLater(
                self.resource.responseTimeout, self._timedOut
            )

    def _cancelTimeout(self) -> None:
        call, self._timeoutCall = self._timeoutCall, None
        if call is not None and call.active():
            call.cancel()

    def _countError(self, reason: Failure) -> None:
        """
        Count an upstream failure in the metrics (if there are any).
        """
        metrics = self.resource.metrics
        if metrics is not None:
            _, _, kind = classifyFailure(reason)
            metrics.upstreamError(self.environment.name, kind)

    def _fail(self, reason: Failure) -> None:
        pool = self.resource.pools[self.environment.name]
        status, text = describeFailure(reason, pool.connectTimeout)
        self._error(status, text)

    def _error(self, status: int, text: str) -> None:
        self._cancelTimeout()
        request = self.request
        body = request.body
        if body is not None:
            body.discard()
        env = self.environment
        message = f"bluegreen: {env.name} ({env.url}) {text}\n".encode()
        self.status = status
        request.setResponseCode(status)
        request.responseHeaders.setRawHeaders(
            b"Content-Type", [b"text/plain; charset=utf-8"]
        )
        request.responseHeaders.setRawHeaders(b"Content-Length", [b"%d" % len(message)])
        request.responseHeaders.setRawHeaders(b"Date", [_dates.now(time.time())])
        request.write(message)
        self.bytes = len(message)
        if body is not None and not body.complete:
            body.whenComplete(self._finish)
        else:
            self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self._cancelTimeout()
        request = self.request
        if not request._disconnected:
            request.finish()
        self._log()

    def _abortClient(self) -> None:
        self._done = True
        self._cancelTimeout()
        transport = _clientTransport(self.request)
        if transport is not None:
            transport.abortConnection()
        self._log()

    def _log(self) -> None:
        resource = self.resource
        accessLog = resource.accessLog
        metrics = resource.metrics
        if accessLog is None and metrics is None:
            return
        seconds = time.monotonic() - self.started
        if accessLog is not None:
            accessLog.record(
                self.request,
                self.environment.name,
                self.status,
                self.bytes,
                seconds,
            )
        if metrics is not None:
            status = self.status
            if status == 499 and not self._responded:
                status = 0  # the client left first
            metrics.request(
                self.environment.name, self.request.method, status, self.bytes, seconds
            )
