# -*- test-case-name: tests.test_tunnel,tests.test_tunnel_integration -*-
"""
Protocol upgrades (WebSocket and any other C{Upgrade}) through the proxy.

A request with C{Connection: upgrade} and an C{Upgrade} header goes to the
live environment on a connection of its own, never pooled.  If the
environment answers C{101 Switching Protocols} the proxy forwards that answer
and from then on copies bytes both ways, with backpressure each way, until
either side closes or nothing moves for the idle timeout (like HAProxy's
C{timeout tunnel}).  Any other answer is passed back as a normal response and
that upstream connection is closed.

The tunnel ends with one access log line (bytes each way, duration); the
registry of open tunnels (L{bluegreen.proxy.tunnels}) counts them per
environment and closes those left on an old environment after a switch.
"""

from __future__ import annotations

import time
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from bluegreen.environment import Environment
from bluegreen.proxy.channel import ProxyChannel
from bluegreen.proxy.failures import classifyFailure, describeFailure
from bluegreen.proxy.framing import MAX_HEAD
from bluegreen.proxy.headers import droppedBy, httpDate
from bluegreen.proxy.request import ProxyRequest
from bluegreen.proxy.upgrade import PauseReads, StreamTransport, TunnelProxy, stream
from bluegreen.proxy.upstream import BadResponse, UpstreamConnection

#: Seconds a closing side may take to flush what was written to it before
#: it is cut off (a peer that stopped reading would otherwise hold it open).
CLOSE_GRACE = 15.0


class TunnelRegistry(TypingProtocol):
    """
    Where open tunnels are counted (L{bluegreen.proxy.tunnels.Tunnels}).
    """

    @property
    def idleTimeout(self) -> float:
        """
        Seconds a tunnel may carry nothing before it is closed.
        """

    def opened(self, tunnel: Tunnel) -> None:
        """
        C{tunnel} switched protocols and is open.
        """

    def closed(self, tunnel: Tunnel) -> None:
        """
        C{tunnel} ended.
        """


class _Closer:
    """
    The owner of the connection a non-101 answer came on: it is never
    reused, so it is closed once the answer is complete.
    """

    def release(self, conn: UpstreamConnection) -> None:
        stream(conn.transport).loseConnection()

    def discard(self, conn: UpstreamConnection) -> None:
        stream(conn.transport).loseConnection()

    def connectionClosed(self, conn: UpstreamConnection) -> None:
        pass


# What the upstream side is doing.
_HEAD, _PIPE, _HTTP = range(3)


class TunnelUpstream(Protocol):
    """
    The tunnel's connection to the environment: reads the response head,
    then either pipes bytes (after a C{101}) or parses the other answer as
    an ordinary response (with L{UpstreamConnection}).
    """

    def __init__(self, tunnel: Tunnel) -> None:
        """
        @param tunnel: The tunnel this connection belongs to.
        """
        self.tunnel = tunnel
        self.mode = _HEAD
        self._buffer = b""
        self._http: UpstreamConnection | None = None

    def connectionMade(self) -> None:
        """
        Send the request (the tunnel writes its head).
        """
        self.tunnel.upstreamConnected(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes from the environment.

        @param data: The bytes.
        """
        mode = self.mode
        if mode == _PIPE:
            self.tunnel.upstreamData(data)
        elif mode == _HTTP:
            assert self._http is not None
            self._http.dataReceived(data)
        else:
            self._headData(data)

    def _headData(self, data: bytes) -> None:
        buffer = self._buffer + data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self.tunnel.upstreamFailed(
                        Failure(BadResponse("response head is larger than 64 KiB"))
                    )
                    return
                self._buffer = buffer
                return
            line = buffer[: buffer.find(b"\r\n")]
            parts = line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                self.tunnel.upstreamFailed(
                    Failure(BadResponse(f"bad status line {line[:80]!r}"))
                )
                return
            try:
                code = int(parts[1])
            except ValueError:
                code = 0
            if code == 101:
                self.mode = _PIPE
                self._buffer = b""
                self.tunnel.switched(buffer[: end + 4], buffer[end + 4 :])
                return
            if 100 <= code < 200:
                # An interim answer (100 Continue, 103 Early Hints): the
                # final one follows.
                buffer = buffer[end + 4 :]
                continue
            self._buffer = b""
            self.mode = _HTTP
            http = self._http = UpstreamConnection(_Closer())
            http.makeConnection(self.transport)
            # Nothing to send: the request went out already.
            http.sendHead(b"", self.tunnel, self.tunnel.isHead, False, False)
            http.dataReceived(buffer)
            return

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        The environment closed the connection.
        """
        if self.mode == _HTTP:
            assert self._http is not None
            # Completes or fails the answer first (it may end at the close).
            self._http.connectionLost(reason)
        self.tunnel.upstreamLost(reason)


class _UpstreamFactory(Factory):
    noisy = False

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel

    def buildProtocol(self, addr: object) -> TunnelUpstream:
        return TunnelUpstream(self.tunnel)


class Tunnel:
    """
    One client's upgrade request, and the tunnel it becomes on a C{101}.

    @ivar proxy: The proxy's settings and collaborators.
    @ivar registry: Counts open tunnels; gives the idle timeout.
    @ivar request: The client's request.
    @ivar environment: Where it goes (the standby, once retried there).
    @ivar started: When the request arrived (monotonic seconds).
    @ivar openedAt: When the tunnel opened (the clock's seconds), or L{None}
        before the C{101}.
    @ivar toUpstream: Bytes the client sent through the tunnel.
    @ivar toClient: Bytes the environment sent through the tunnel (after the
        C{101} head), or the body bytes of a non-101 answer.
    @ivar status: The status sent to the client (499: the client left
        before any).
    @ivar ended: Why it ended (C{"client closed"}, C{"idle"}...), or
        L{None} while it runs.
    """

    def __init__(
        self,
        proxy: TunnelProxy,
        registry: TunnelRegistry,
        request: ProxyRequest,
        environment: Environment,
    ) -> None:
        """
        @param proxy: The proxy's settings and collaborators.
        @param registry: Counts open tunnels.
        @param request: The upgrade request.
        @param environment: Where it goes (read once from the controller).
        """
        self.proxy = proxy
        self.registry = registry
        self.request = request
        self.environment = environment
        self.started = time.monotonic()
        self.openedAt: float | None = None
        self.toUpstream = 0
        self.toClient = 0
        self.status = 0
        self.ended: str | None = None
        self.isHead = request.method == b"HEAD"
        self._upstream: TunnelUpstream | None = None
        self._client: StreamTransport | None = None
        self._channel: ProxyChannel | None = None
        self._clientOpen = True
        self._upstreamOpen = False
        self._standbyTried = False
        self._responded = False
        self._timer: IDelayedCall | None = None
        self._lastActivity = 0.0
        self._graceCalls: list[IDelayedCall] = []
        self._connecting: Deferred[IProtocol] | None = None
        self._whenGone: list[Deferred[None]] = []

    # Connecting

    def start(self) -> None:
        """
        Connect to the environment (the request head follows on connect).
        """
        request = self.request
        request.exchange = self
        pool = self.proxy.pools[self.environment.name]
        assert pool.endpoint is not None
        self._arm(self.proxy.responseTimeout)
        d = pool.endpoint.connect(_UpstreamFactory(self))
        self._connecting = d
        d.addErrback(self._connectFailed)

    def _connectFailed(self, reason: Failure) -> None:
        self._connecting = None
        if self.ended is not None:
            return
        proxy = self.proxy
        self._countError(reason)
        environment = self.environment
        # As for any request that cannot reach it: see UpstreamPool.distrust.
        proxy.pools[environment.name].distrust()
        health = proxy.health
        if health is not None:
            _, text = describeFailure(reason)
            path = self.request.uri.split(b"?", 1)[0].decode("latin-1")
            health.reportPassive(environment.name, f"proxied upgrade: {text}", path)
        if reason.check(ConnectionRefusedError) and self._retryOnStandby():
            return
        status, text = describeFailure(
            reason, proxy.pools[environment.name].connectTimeout
        )
        self._error(status, text)

    def _retryOnStandby(self) -> bool:
        proxy = self.proxy
        if not proxy.retry or self._standbyTried:
            return False
        standby = proxy.controller.other(self.environment.name)
        health = proxy.health
        if health is not None and not health.isUp(standby.name):
            return False
        self._standbyTried = True
        metrics = proxy.metrics
        if metrics is not None:
            metrics.retry(self.environment.name, standby.name, "standby")
        self.environment = standby
        self.start()
        return True

    def upstreamConnected(self, upstream: TunnelUpstream) -> None:
        """
        Connected: send the request head with its upgrade headers.

        @param upstream: The connection.
        """
        self._connecting = None
        self._upstream = upstream
        self._upstreamOpen = True
        if self.ended is not None:
            stream(upstream.transport).loseConnection()
            return
        request = self.request
        head = self.proxy.buildHead(request, self.environment)
        upgrade = b", ".join(request.requestHeaders.getRawHeaders(b"upgrade", []))
        # buildHead drops them as hop-by-hop; an upgrade request needs them.
        stream(upstream.transport).write(
            head[:-2] + b"Connection: Upgrade\r\nUpgrade: " + upgrade + b"\r\n\r\n"
        )

    # The switch

    def switched(self, head: bytes, rest: bytes) -> None:
        """
        The environment answered C{101}: forward it and start piping.

        @param head: The C{101} head, as received (ending with an empty line).
        @param rest: Bytes that followed it (the new protocol's).
        """
        upstream = self._upstream
        channel = self.request.channel
        assert upstream is not None
        if self.ended is not None or not isinstance(channel, ProxyChannel):
            stream(upstream.transport).abortConnection()
            return
        client = self._client = stream(channel.transport)
        self._channel = channel
        self._cancelTimer()
        self._responded = True
        self.status = 101
        early = channel.takeOver(self)
        client.write(head)
        # Each side's writes pause the other side's reads when they back up.
        channel.registerProducer(PauseReads(upstream.transport), True)
        stream(upstream.transport).registerProducer(PauseReads(client), True)
        self.openedAt = self.proxy.clock.seconds()
        self.registry.opened(self)
        self._lastActivity = self.openedAt
        self._arm(self.registry.idleTimeout)
        if early:
            self.clientData(early)
        if rest:
            self.upstreamData(rest)

    def clientData(self, data: bytes) -> None:
        """
        Bytes from the client, through the tunnel.

        @param data: The bytes.
        """
        upstream = self._upstream
        if self.ended is not None or upstream is None:
            return
        self.toUpstream += len(data)
        self._lastActivity = self.proxy.clock.seconds()
        stream(upstream.transport).write(data)

    def upstreamData(self, data: bytes) -> None:
        """
        Bytes from the environment, through the tunnel.

        @param data: The bytes.
        """
        client = self._client
        if self.ended is not None or client is None:
            return
        self.toClient += len(data)
        self._lastActivity = self.proxy.clock.seconds()
        client.write(data)

    # Ending

    def close(self, why: str) -> None:
        """
        End the tunnel (or the request on its way to becoming one): close
        both connections, letting each flush what it was given (for at most
        L{CLOSE_GRACE} seconds).

        @param why: For the access log, e.g. C{"drained"}.
        """
        if self.ended is not None:
            return
        if self.openedAt is None:
            self._abandon(why)
            return
        self._end(why)
        clock = self.proxy.clock
        channel = self._channel
        if self._clientOpen and channel is not None:
            # A TLS transport closes only once no producer is registered:
            # HTTPChannel.loseConnection unregisters itself, we do ours.
            channel.unregisterProducer()
            channel.loseConnection()
            self._graceCalls.append(clock.callLater(CLOSE_GRACE, self._cutClient))
        upstream = self._upstream
        if self._upstreamOpen and upstream is not None:
            transport = stream(upstream.transport)
            transport.unregisterProducer()
            transport.loseConnection()
            self._graceCalls.append(clock.callLater(CLOSE_GRACE, self._cutUpstream))

    def _cutClient(self) -> None:
        if self._clientOpen and self._client is not None:
            self._client.abortConnection()

    def _cutUpstream(self) -> None:
        if self._upstreamOpen and self._upstream is not None:
            stream(self._upstream.transport).abortConnection()

    def whenGone(self) -> Deferred[None]:
        """
        @return: A Deferred firing once both connections are closed.
        """
        d: Deferred[None] = Deferred()
        if self._gone():
            d.callback(None)
        else:
            self._whenGone.append(d)
        return d

    def clientGone(self) -> None:
        """
        The client connection is lost.
        """
        self._clientOpen = False
        if self.openedAt is not None:
            self.close("client closed")
        else:
            self._abandon("client left")
        self._maybeGone()

    def upstreamLost(self, reason: Failure) -> None:
        """
        The environment's connection is lost.

        @param reason: Why.
        """
        self._upstreamOpen = False
        if self.ended is None:
            if self.openedAt is not None:
                self.close("server closed")
            else:
                self._countError(reason)
                self._error(502, "closed the connection before answering")
        self._maybeGone()

    def upstreamFailed(self, reason: Failure) -> None:
        """
        The environment's answer to the upgrade was not HTTP.

        @param reason: Why (a L{BadResponse}).
        """
        upstream = self._upstream
        if upstream is not None:
            stream(upstream.transport).abortConnection()
        self._countError(reason)
        self._error(502, f"sent a bad response: {reason.getErrorMessage()}")

    def _gone(self) -> bool:
        # Without a tunnel the client connection goes back to HTTP: not ours.
        clientOpen = self._clientOpen and self.openedAt is not None
        return self.ended is not None and not (clientOpen or self._upstreamOpen)

    def _maybeGone(self) -> None:
        if not self._gone():
            return
        calls, self._graceCalls = self._graceCalls, []
        for call in calls:
            if call.active():
                call.cancel()
        waiting, self._whenGone = self._whenGone, []
        for d in waiting:
            d.callback(None)

    def _abandon(self, why: str) -> None:
        """
        End without a tunnel: drop the upstream side, and the client's if
        it is still there (it cannot be answered any more).
        """
        self._end(why)
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        upstream = self._upstream
        if upstream is not None and self._upstreamOpen:
            stream(upstream.transport).abortConnection()
        request = self.request
        if self._clientOpen and not request.finished:
            channel = request.channel
            transport = channel.transport if channel is not None else None
            if transport is not None:
                stream(transport).abortConnection()

    def _end(self, why: str) -> None:
        self.ended = why
        self._cancelTimer()
        if self.openedAt is not None:
            self.registry.closed(self)
        if self.status == 0:
            self.status = 499
        self._log()
        self._maybeGone()

    # Timers: the response head's, then the tunnel's idle timeout.

    def _arm(self, seconds: float) -> None:
        self._cancelTimer()
        self._timer = self.proxy.clock.callLater(seconds, self._timedOut)

    def _cancelTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _timedOut(self) -> None:
        self._timer = None
        if self.ended is not None:
            return
        if self.openedAt is None:
            if self._responded:
                # A non-101 answer's body stalled.
                self._abandon("response timeout")
                return
            metrics = self.proxy.metrics
            if metrics is not None:
                metrics.upstreamError(self.environment.name, "timeout_response")
            upstream = self._upstream
            if upstream is not None:
                stream(upstream.transport).abortConnection()
            seconds = self.proxy.responseTimeout
            self._error(504, f"did not respond within {seconds:g} s (response timeout)")
            return
        # Checked lazily: data only stamps the time, the timer re-arms.
        idle = self.registry.idleTimeout
        quiet = self.proxy.clock.seconds() - self._lastActivity
        if quiet < idle:
            self._timer = self.proxy.clock.callLater(idle - quiet, self._timedOut)
            return
        self.close("idle")

    # A non-101 answer, passed back as a normal response (ResponseSink)

    def responseHead(
        self, code: int, phrase: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """
        Copy the status and end-to-end headers to the client.

        @param code: The status.
        @param phrase: The reason phrase.
        @param headers: The headers, in order.
        """
        if self.ended is not None:
            return
        self._responded = True
        self.status = code
        self._arm(self.proxy.responseTimeout)
        request = self.request
        request.setResponseCode(code, phrase or None)
        connection = [value for name, value in headers if name.lower() == b"connection"]
        drop = droppedBy(connection)
        hasDate = False
        for name, value in headers:
            lower = name.lower()
            if lower in drop or lower.startswith(b"proxy-"):
                continue
            hasDate = hasDate or lower == b"date"
            request.responseHeaders.addRawHeader(name, value)
        if not hasDate:
            request.responseHeaders.setRawHeaders(b"Date", [httpDate(time.time())])
        upstream = self._upstream
        if upstream is not None:
            request.registerProducer(PauseReads(upstream.transport), True)

    def responseData(self, data: bytes) -> None:
        """
        Pass a piece of the body on.

        @param data: The piece.
        """
        if self.ended is not None:
            return
        self._arm(self.proxy.responseTimeout)
        self.toClient += len(data)
        self.request.write(data)

    def responseDone(self) -> None:
        """
        The answer is complete: so is the client's response.
        """
        if self.ended is not None:
            return
        request = self.request
        request.unregisterProducer()
        self._end("answered")
        if not request.gone:
            request.finish()

    def responseFailed(self, reason: Failure, started: bool) -> None:
        """
        The answer failed part way.

        @param reason: Why.
        @param started: C{True} if any of it had arrived.
        """
        if self.ended is not None:
            return
        self._countError(reason)
        if self._responded:
            self._abandon("response failed")
            return
        self._error(502, f"failed: {reason.getErrorMessage()}")

    def _error(self, status: int, text: str) -> None:
        if self.ended is not None:
            return
        request = self.request
        self.status = status
        self._end(text)
        if request.gone:
            return
        env = self.environment
        message = f"bluegreen: {env.name} ({env.url}) {text}\n".encode()
        request.setResponseCode(status)
        headers = request.responseHeaders
        headers.setRawHeaders(b"Content-Type", [b"text/plain; charset=utf-8"])
        headers.setRawHeaders(b"Content-Length", [b"%d" % len(message)])
        headers.setRawHeaders(b"Date", [httpDate(time.time())])
        request.write(message)
        self.toClient = len(message)
        request.finish()

    def _countError(self, reason: Failure) -> None:
        metrics = self.proxy.metrics
        if metrics is not None:
            _, _, kind = classifyFailure(reason)
            metrics.upstreamError(self.environment.name, kind)

    def _log(self) -> None:
        proxy = self.proxy
        seconds = time.monotonic() - self.started
        metrics = proxy.metrics
        if metrics is not None:
            status = 0 if self.status == 499 else self.status
            metrics.request(
                self.environment.name,
                self.request.method,
                status,
                self.toClient,
                seconds,
            )
        accessLog = proxy.accessLog
        if accessLog is None:
            return
        if self.openedAt is None:
            accessLog.record(
                self.request, self.environment.name, self.status, self.toClient, seconds
            )
            return
        accessLog.record(
            self.request,
            self.environment.name,
            101,
            self.toClient,
            seconds,
            f"tunnel up={self.toUpstream} down={self.toClient} end={self.ended}",
            tunnel=True,
            bytesUp=self.toUpstream,
            bytesDown=self.toClient,
            end=self.ended,
        )
