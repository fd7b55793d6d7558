# -*- test-case-name: tests.test_proxy_integration -*-
# mypy: allow-untyped-calls
"""
A raw HTTP/1.1 client for the proxy's integration tests.

L{RawClient} sends raw bytes (pipelining, chunked uploads, odd targets) and
reads the responses on one connection with the backend's parser, hashing
bodies as they arrive; it can stop reading to play a slow client.
L{connectRaw} and L{treqPool} register their own cleanup.
"""

from __future__ import annotations

import json
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from tests._messages import (
    KEEP_LIMIT,
    Body,
    BodyDecoder,
    Framing,
    Headers,
    ProtocolViolationError,
    framingOf,
    parseHead,
    values,
)
from tests._waiting import reactor

# The raw client


@define(eq=False)
class RawResponse:
    """
    A response as the raw client received it.

    @ivar code: The status code.
    @ivar phrase: The reason phrase.
    @ivar headers: Header lines in order.
    @ivar framing: How the body was framed.
    @ivar body: Length, sha256 and the first bytes of the body.
    @ivar complete: C{True} once the whole body has arrived.
    @ivar chunkSizes: The chunk sizes of a chunked body.
    @ivar firstDataAt: When the first body byte arrived (reactor seconds).
    """

    version: bytes
    code: int
    phrase: bytes
    headers: Headers
    framing: Framing = "none"
    body: Body = field(factory=Body)
    complete: bool = False
    chunkSizes: list[int] = field(factory=list)
    firstDataAt: float | None = None

    def values(self, name: bytes) -> list[bytes]:
        """
        Every value of header C{name}, in order.
        """
        return values(self.headers, name)

    @property
    def content(self) -> bytes:
        """
        The body's first L{KEEP_LIMIT} bytes.
        """
        return bytes(self.body.kept)

    @property
    def text(self) -> str:
        """
        The body as text.
        """
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """
        The body parsed as JSON.
        """
        return json.loads(self.content)


class IncompleteResponseError(Exception):
    """
    The connection closed before the response was complete.

    @ivar response: What had arrived (L{None} if not even the head).
    @ivar reason: Why the connection closed.
    """

    def __init__(self, response: RawResponse | None, reason: Failure) -> None:
        super().__init__(response, reason)
        self.response = response
        self.reason = reason


@define(eq=False)
class _Expected:
    """
    A response the raw client waits for.
    """

    isHead: bool
    keep: int
    deferred: Deferred[RawResponse] = field(factory=Deferred)


class RawClient(Protocol):
    """
    An HTTP/1.1 client on one connection, for exact bytes.

    Each request sent is matched with a response read in order (so requests
    may be pipelined).

    @ivar onData: Called with each piece of a response body as it arrives.
    @ivar onInterim: Called with each interim (1xx) response.
    @ivar interim: The interim responses received.
    @ivar closed: C{True} once the connection is gone.
    @ivar lost: Fires once the connection is gone.
    @ivar lostReason: Why it went.
    @ivar bodyBytes: Body bytes received on this connection so far.
    """

    def __init__(self) -> None:
        self.onData: Callable[[RawResponse, bytes], None] | None = None
        self.onInterim: Callable[[RawResponse], None] | None = None
        self.interim: list[RawResponse] = []
        self.closed = False
        self.lost: Deferred[None] = Deferred()
        self.lostReason: Failure | None = None
        self.bodyBytes = 0
        self._aborted = False
        self._expected: deque[_Expected] = deque()
        self._buffer = b""
        self._response: RawResponse | None = None
        self._decoder: BodyDecoder | None = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Complete a read-until-close body, fail what is still expected.
        """
        self.closed = True
        response, decoder = self._response, self._decoder
        if response is not None and decoder is not None and response.framing == "close":
            self._complete()
            response = None
        if self._aborted:
            # The test dropped the connection itself: what it still expected
            # will never come, and nobody waits for it.
            self._expected.clear()
        while self._expected:
            expected = self._expected.popleft()
            expected.deferred.errback(IncompleteResponseError(response, reason))
            response = None
        self.lostReason = reason
        # Not callback(reason): a Failure passed to callback() errbacks.
        self.lost.callback(None)

    # Sending

    def sendRaw(self, data: bytes) -> None:
        """
        Write raw bytes.
        """
        self.transport.write(data)  # type: ignore[union-attr]

    def expect(
        self, isHead: bool = False, keep: int = KEEP_LIMIT
    ) -> Deferred[RawResponse]:
        """
        Expect one more response.

        @param isHead: C{True} if it answers a C{HEAD} request (no body).
        @param keep: Body bytes to keep (beyond that only length and sha256).
        @return: A Deferred firing with the complete response, or failing
            with L{IncompleteResponseError}.
        """
        expected = _Expected(isHead, keep)
        if self.closed:
            expected.deferred.errback(
                IncompleteResponseError(None, Failure(ConnectionDone()))
            )
        else:
            self._expected.append(expected)
        return expected.deferred

    def request(
        self,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
        host: bytes | None = b"proxy.test",
        version: bytes = b"HTTP/1.1",
        keep: int = KEEP_LIMIT,
    ) -> Deferred[RawResponse]:
        """
        Send a request (with C{Content-Length} if C{body} is given).

        @param host: The C{Host} header to send first, if not L{None}.
        @return: See L{expect}.
        """
        lines = [method, b" ", target, b" ", version, b"\r\n"]
        if host is not None:
            lines.append(b"Host: %s\r\n" % (host,))
        for name, value in headers:
            lines.append(b"%s: %s\r\n" % (name, value))
        if body is not None:
            lines.append(b"Content-Length: %d\r\n" % (len(body),))
        lines.append(b"\r\n")
        if body:
            lines.append(body)
        d = self.expect(method == b"HEAD", keep)
        self.sendRaw(b"".join(lines))
        return d

    # Flow control

    def setReceiveBuffer(self, size: int) -> None:
        """
        Set the kernel receive buffer (C{SO_RCVBUF}) of the connection, so
        that little data waits in the client's kernel while it is paused.
        """
        setBuffer(self.transport, socket.SO_RCVBUF, size)

    def pauseReading(self) -> None:
        """
        Stop reading from the socket (play a slow client).
        """
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeReading(self) -> None:
        """
        Read again.
        """
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def abort(self) -> None:
        """
        Drop the connection at once (responses still expected are forgotten).
        """
        if not self.closed:
            self._aborted = True
            self.transport.abortConnection()  # type: ignore[union-attr]

    # Parsing

    def dataReceived(self, data: bytes) -> None:
        """
        Parse responses as they arrive.
        """
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        while data and not self.closed:
            if self._decoder is None:
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    self._buffer = data
                    return
                head, data = data[:end], data[end + 4 :]
                self._startResponse(head)
            else:
                data = self._decoder.feed(data)
            if self._decoder is not None and self._decoder.done:
                self._complete()

    def _startResponse(self, head: bytes) -> None:
        start, headers = parseHead(head)
        code = int(start[1])
        response = RawResponse(
            start[0], code, start[2] if len(start) > 2 else b"", headers
        )
        if 100 <= code < 200:
            self.interim.append(response)
            if self.onInterim is not None:
                self.onInterim(response)
            return
        if not self._expected:
            raise ProtocolViolationError(f"unexpected response {start!r}")
        expected = self._expected[0]
        response.body.keep = expected.keep
        framing: Framing
        length = 0
        if expected.isHead or code in (204, 304):
            framing = "none"
        else:
            framing, length = framingOf(headers)
        response.framing = framing
        self._response = response
        self._decoder = BodyDecoder(framing, length, self._bodyData)

    def _bodyData(self, data: bytes) -> None:
        response = self._response
        assert response is not None
        if response.firstDataAt is None:
            response.firstDataAt = reactor.seconds()
        response.body.add(data)
        self.bodyBytes += len(data)
        if self.onData is not None:
            self.onData(response, data)

    def _complete(self) -> None:
        response, decoder = self._response, self._decoder
        assert response is not None and decoder is not None
        self._response = self._decoder = None
        response.complete = True
        response.chunkSizes = decoder.chunkSizes
        self._expected.popleft().deferred.callback(response)


async def connectRaw(testCase: TestCase, port: int) -> RawClient:
    """
    Connect a L{RawClient} to 127.0.0.1:C{port}, dropped when the test ends.
    """
    client = RawClient()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    await connectProtocol(endpoint, client)

    def cleanup() -> Deferred[Any]:
        if client.closed:
            return succeed(None)
        client.abort()
        return client.lost

    testCase.addCleanup(cleanup)
    return client


async def fetch(
    testCase: TestCase,
    port: int,
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes | None = None,
    **kwargs: Any,
) -> RawResponse:
    """
    One request on a new raw connection.
    """
    client = await connectRaw(testCase, port)
    return await client.request(method, target, headers, body, **kwargs)


def treqPool(testCase: TestCase, maxPersistentPerHost: int = 20) -> HTTPConnectionPool:
    """
    A persistent treq/Agent connection pool, closed when the test ends.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = maxPersistentPerHost
    pool.retryAutomatically = False
    testCase.addCleanup(pool.closeCachedConnections)
    return pool


def setBuffer(transport: Any, option: int, size: int) -> None:
    """
    Set a TCP transport's kernel buffer size (C{SO_SNDBUF} or C{SO_RCVBUF});
    this also stops the kernel from growing it automatically.
    """
    transport.getHandle().setsockopt(socket.SOL_SOCKET, option, size)
