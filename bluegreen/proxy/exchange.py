# -*- test-case-name: tests.test_proxy_errors,tests.test_failover_chain -*-
"""
One request's trip to an environment and back.

An L{Exchange} ties together the client's request, its body and the upstream
connection: it sends the request head, copies the response to the client, is
the producer the client's transport pauses (so a slow client pauses the
upstream), times the response, retries where that is safe, and ends with an
access log line and the metrics.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import (
    ConnectingCancelledError,
    ConnectionDone,
    ConnectionLost,
)
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from bluegreen.controller import Controller
from bluegreen.environment import Environment
from bluegreen.proxy.accesslog import AccessLog
from bluegreen.proxy.body import clientTransport
from bluegreen.proxy.failures import classifyFailure, describeFailure, isLocalFailure
from bluegreen.proxy.headers import droppedBy, httpDate
from bluegreen.proxy.interfaces import PassiveHealth, ProxyMetrics
from bluegreen.proxy.pool import PoolClosed, UpstreamPool
from bluegreen.proxy.rejections import Rejections
from bluegreen.proxy.request import ProxyRequest
from bluegreen.proxy.spool import Spool, TempFiles
from bluegreen.proxy.upstream import UpstreamConnection

_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))

# Methods retried on the standby after they may have reached the live
# environment: those without side effects.
_SAFE = frozenset((b"GET", b"HEAD", b"OPTIONS"))


class Proxy(Protocol):
    """
    What an exchange needs of the proxy (L{bluegreen.proxy.resource.ProxyResource}
    provides it): see there for each attribute.
    """

    @property
    def controller(self) -> Controller:
        """
        Holds the live environment, and names the standby.
        """

    @property
    def pools(self) -> Mapping[str, UpstreamPool]:
        """
        A connection pool per environment name.
        """

    @property
    def clock(self) -> IReactorTime:
        """
        Times responses.
        """

    @property
    def responseTimeout(self) -> float:
        """
        Seconds allowed for the response head, and for a silence in its body.
        """

    @property
    def accessLog(self) -> AccessLog | None:
        """
        Where each request is logged, or L{None}.
        """

    @property
    def health(self) -> PassiveHealth | None:
        """
        Told of environments that cannot be reached, or L{None}.
        """

    @property
    def retry(self) -> bool:
        """
        Retry a request that could not reach its environment on the standby.
        """

    @property
    def metrics(self) -> ProxyMetrics | None:
        """
        Counts requests, upstream errors and retries, or L{None}.
        """

    @property
    def buffers(self) -> TempFiles | None:
        """
        Buffers bodies for slow clients (see L{BufferSettings}), or L{None}
        to stream both ways with backpressure only.
        """

    @property
    def rejections(self) -> Rejections:
        """
        Counts the requests the proxy refuses itself.
        """

    def destination(self) -> Environment:
        """
        Where a request goes now (the live environment, or the standby for
        the preview).
        """

    def buildHead(self, request: ProxyRequest, environment: Environment) -> bytes:
        """
        @param request: The client's request.
        @param environment: Where it goes.
        @return: The upstream request line and headers.
        """


@implementer(IPushProducer)
class Exchange:
    """
    One request's trip to an environment and back.

    It is the L{ResponseSink} of the upstream connection and the producer
    registered with the client's request.  With response buffering, what a
    slow client has not taken yet goes to a L{Spool} (memory, then a
    temporary file), so the upstream connection is free as soon as the
    upstream is done; only a full spool pauses the upstream.  Without it, a
    slow client pauses the upstream connection.  With request buffering,
    the connection is only taken once the body is in (see
    L{RequestBody.buffer}).

    @ivar resource: The proxy.
    @ivar request: The client's request.
    @ivar environment: Where it goes (the standby, once retried there).
    @ivar started: When it began (monotonic seconds), for the access log.
    @ivar status: The status sent to the client (499: the client left).
    @ivar bytes: Response body bytes sent to the client.
    """

    __slots__ = (
        "_acquiring",
        "_clientPaused",
        "_confirmed",
        "_conn",
        "_done",
        "_responded",
        "_retried",
        "_spool",
        "_standbyTried",
        "_timeoutCall",
        "_upstreamDone",
        "_upstreamPaused",
        "_waitingBody",
        "bytes",
        "environment",
        "request",
        "resource",
        "started",
        "status",
    )

    def __init__(
        self, resource: Proxy, request: ProxyRequest, environment: Environment
    ) -> None:
        """
        @param resource: The proxy's settings and collaborators.
        @param request: The client's request.
        @param environment: Where it goes (read once from the controller).
        """
        self.resource = resource
        self.request = request
        self.environment = environment
        self.started = time.monotonic()
        self.status = 0
        self.bytes = 0
        self._conn: UpstreamConnection | None = None
        self._acquiring: Deferred[UpstreamConnection] | None = None
        self._confirmed = False
        self._done = False
        self._responded = False
        self._retried = False
        self._standbyTried = False
        self._timeoutCall: IDelayedCall | None = None
        self._spool: Spool | None = None
        self._clientPaused = False
        self._upstreamPaused = False
        self._upstreamDone = False
        self._waitingBody = False
        body = request.body
        buffers = resource.buffers
        if body is not None and buffers is not None:
            settings = buffers.settings
            if settings.requestBuffering and body.buffer(
                buffers, settings.clientBodyBuffer, settings.maxBufferedBody
            ):
                self._waitingBody = True
                body.whenReady(self._bodyReady)
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
        if self._waitingBody or self._done:
            # Started by _bodyReady once the body is in.
            return
        resource = self.resource
        pool = resource.pools[self.environment.name]
        if not fresh:
            conn = pool.idleConnection()
            if conn is not None:
                self._connected(conn)
                return
        health = resource.health
        if pool.distrusted and health is not None and not self._confirmed:
            # A request just failed there: wait for the check it started
            # (see PassiveHealth.confirming), once per request.
            waiting = health.confirming(self.environment.name)
            if waiting is not None:
                self._confirmed = True
                d = waiting.addCallback(lambda _: self._afterCheck(fresh))
                self._acquiring = d
                d.addCallbacks(self._connected, self._connectFailed)
                return
        d = pool.acquire(fresh)
        self._acquiring = d
        d.addCallbacks(self._connected, self._connectFailed)

    def _afterCheck(self, fresh: bool) -> Deferred[UpstreamConnection]:
        """
        The check of a distrusted environment is in: go to the live
        environment now (the standby, if the check failed it over), or
        stay on the standby a retry chose.

        @param fresh: As for L{start}.
        @return: A connection, from the pool of wherever the request goes.
        """
        resource = self.resource
        if not self._standbyTried:
            self.environment = resource.destination()
        return resource.pools[self.environment.name].acquire(fresh)

    def _bodyReady(self) -> None:
        self._waitingBody = False
        self.start(False)

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
        # Bluegreen's own shortage (EMFILE...) says nothing of the
        # environment, and the standby would meet it too.
        local = reason.check(PoolClosed) or isLocalFailure(reason)
        if not local and self._unreachable(reason, sent=False):
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
        # Its other connections are suspect now: see UpstreamPool.distrust.
        resource.pools[environment.name].distrust()
        if health is not None:
            _, text = describeFailure(reason)
            path = self.request.uri.split(b"?", 1)[0].decode("latin-1")
            health.reportPassive(environment.name, f"proxied request: {text}", path)
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

        @param code: The status.
        @param phrase: The reason phrase.
        @param headers: The headers, in order.
        """
        # From here the response timeout bounds silences in the body.
        self._armTimeout()
        self._responded = True
        self.status = code
        request = self.request
        request.setResponseCode(code, phrase or None)
        responseHeaders = request.responseHeaders
        connection = [value for name, value in headers if name.lower() == b"connection"]
        drop = droppedBy(connection)
        hasDate = False
        for name, value in headers:
            lower = name.lower()
            if lower in drop or lower.startswith(b"proxy-"):
                continue
            if lower == b"date":
                hasDate = True
            responseHeaders.addRawHeader(name, value)
        if not hasDate:
            responseHeaders.setRawHeaders(b"Date", [httpDate(time.time())])
        request.registerProducer(self, True)

    def responseData(self, data: bytes) -> None:
        """
        Pass a piece of the body on.

        @param data: The piece.
        """
        call = self._timeoutCall
        if call is not None:
            call.reset(self.resource.responseTimeout)
        spool = self._spool
        if not self._clientPaused and (spool is None or not len(spool)):
            self.bytes += len(data)
            self.request.write(data)
            return
        if spool is None:
            buffers = self.resource.buffers
            assert buffers is not None
            settings = buffers.settings
            spool = self._spool = Spool(
                buffers, settings.proxyBuffer, settings.maxTempFile
            )
        try:
            spool.write(data)
        except OSError:
            self._spoolFailed()
            return
        if spool.full and self._conn is not None and not self._upstreamPaused:
            # Memory and file both full: the upstream waits for the client.
            self._upstreamPaused = True
            self._cancelTimeout()
            self._conn.pauseProducing()

    def responseDone(self) -> None:
        """
        The upstream response is complete: complete the client's (once the
        client has taken what is buffered for it).
        """
        self._conn = None
        self._upstreamDone = True
        if self._spool is not None and len(self._spool):
            self._cancelTimeout()
            return
        self._responseComplete()

    def _responseComplete(self) -> None:
        self._closeSpool()
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

        @param reason: Why.
        @param started: C{True} if any byte of the response had arrived.
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
        The client is not keeping up: buffer for it (with response
        buffering), or stop reading from the upstream (and stop timing its
        silence, which is the client's doing).
        """
        if (
            self.resource.buffers is not None
            and self.resource.buffers.settings.responseBuffering
        ):
            self._clientPaused = True
        elif self._conn is not None:
            self._upstreamPaused = True
            self._cancelTimeout()
            self._conn.pauseProducing()

    def resumeProducing(self) -> None:
        """
        The client caught up: give it what is buffered, and read from the
        upstream again if it was paused.
        """
        self._clientPaused = False
        spool = self._spool
        if spool is not None:
            request = self.request
            while not self._clientPaused and not self._done:
                data = spool.read()
                if not data:
                    break
                self.bytes += len(data)
                request.write(data)
            if self._done:
                return
            if not len(spool) and self._upstreamDone:
                self._responseComplete()
                return
            if spool.full:
                return
        if self._upstreamPaused and self._conn is not None:
            self._upstreamPaused = False
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
        self._closeSpool()
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
        resource = self.resource
        pool = resource.pools[self.environment.name]
        status, text, kind = classifyFailure(reason, pool.connectTimeout)
        if kind == "invalid_response":
            # Refused by the framing checks: counted with the proxy's
            # other refusals (bluegreen_rejected_requests_total).
            resource.rejections.count(status, kind)
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
        request.responseHeaders.setRawHeaders(b"Date", [httpDate(time.time())])
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
        self._closeSpool()
        self._cancelTimeout()
        request = self.request
        if not request.gone:
            request.finish()
        self._log()

    def _spoolFailed(self) -> None:
        """
        The temporary file could not be written (disk full, say) after part
        of a piece went in: the client cannot get the whole response, so it
        is cut off.
        """
        Logger(namespace="bluegreen.proxy").failure(
            "cannot buffer a response for a slow client"
        )
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
        self._abortClient()

    def _closeSpool(self) -> None:
        """
        Give back what is buffered for this exchange: the response's spool,
        and the request body's store.
        """
        spool, self._spool = self._spool, None
        if spool is not None:
            spool.close()
        body = self.request.body
        if body is not None and body.complete:
            body.discard()

    def _abortClient(self) -> None:
        self._done = True
        self._closeSpool()
        self._cancelTimeout()
        transport = clientTransport(self.request)
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
