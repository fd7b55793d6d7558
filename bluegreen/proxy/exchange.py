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
from twisted.python.failure import Failure
from zope.interface import implementer

from bluegreen.controller import Controller
from bluegreen.environment import Environment
from bluegreen.proxy.accesslog import AccessLog
from bluegreen.proxy.body import clientTransport
from bluegreen.proxy.failures import classifyFailure, describeFailure
from bluegreen.proxy.headers import droppedBy, httpDate
from bluegreen.proxy.interfaces import PassiveHealth, ProxyMetrics
from bluegreen.proxy.pool import PoolClosed, UpstreamPool
from bluegreen.proxy.request import ProxyRequest
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
    registered with the client's request, so a slow client pauses the
    upstream connection.

    @ivar resource: The proxy.
    @ivar request: The client's request.
    @ivar environment: Where it goes (the standby, once retried there).
    @ivar started: When it began (monotonic seconds), for the access log.
    @ivar status: The status sent to the client (499: the client left).
    @ivar bytes: Response body bytes sent to the client.
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
        self._done = False
        self._responded = False
        self._retried = False
        self._standbyTried = False
        self._timeoutCall: IDelayedCall | None = None
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
        self._cancelTimeout()
        request = self.request
        if not request.gone:
            request.finish()
        self._log()

    def _abortClient(self) -> None:
        self._done = True
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
