# -*- test-case-name: tests.test_proxy_integration -*-
# mypy: allow-untyped-calls
"""
Real servers and clients for the proxy's integration tests.

Everything here runs on the real reactor over real loopback sockets:

  - L{BackendFactory} is an HTTP/1.1 test backend with a hand-written parser,
    so a test sees exactly the bytes the proxy sent (raw request target,
    repeated headers in order, chunked framing) and can answer with exactly
    the bytes it wants (garbage, truncated bodies, resets).  It counts its
    connections (made, lost, open at once) and hashes request bodies as they
    stream in, so uploads of any size are checked without being stored.
  - L{RawClient} is an HTTP/1.1 client with the same parser: it sends raw
    bytes (pipelining, chunked uploads, odd targets) and reads the responses
    on one connection, hashing bodies as they arrive; it can stop reading to
    play a slow client.
  - L{startProxy} builds the real proxy from L{bluegreen.service.tap} on port 0;
    L{listen}, L{connectRaw} and L{treqPool} register their own cleanup, so a
    test leaves a clean reactor.
  - L{makeCertificates} creates a throw-away CA and server certificates.
"""

from __future__ import annotations

import datetime
import gc
import hashlib
import ipaddress
import json
import os
import random
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from attrs import define, field
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IPullProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from zope.interface import implementer

from bluegreen.controller import Controller
from bluegreen.proxy.pool import UpstreamPool
from bluegreen.proxy.resource import ProxyResource, ProxySite
from bluegreen.service.tap import Options, ProxyService, makeService

#: The reactor every test here runs on (trial's real reactor).
reactor: Any = _reactor

Headers = list[tuple[bytes, bytes]]

Framing = Literal["none", "length", "chunked", "close"]

#: Body bytes a parsed message keeps (beyond that only length and sha256).
KEEP_LIMIT = 1 << 20

MIB = 1 << 20


class ProtocolViolationError(Exception):
    """
    The peer sent bytes that are not valid HTTP/1.1 framing.
    """


def values(headers: Headers, name: bytes) -> list[bytes]:
    """
    Every value of a header, in order.

    @param headers: Header lines as received.
    @param name: The header name (any case).
    @return: Its values, in the order they were sent.
    """
    lower = name.lower()
    return [value for key, value in headers if key.lower() == lower]


def names(headers: Headers) -> list[bytes]:
    """
    The lower-case names of C{headers}, in order.
    """
    return [key.lower() for key, _ in headers]


def parseHead(head: bytes) -> tuple[list[bytes], Headers]:
    """
    Split a message head into its start line's parts and its headers.

    @param head: The head, without the final empty line.
    @return: C{(start-line parts, headers)}; the start line is split on the
        first two spaces.
    @raise ProtocolViolationError: If a header line has no colon.
    """
    lines = head.split(b"\r\n")
    start = lines[0].split(b" ", 2)
    headers: Headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProtocolViolationError(f"bad header line {line!r}")
        headers.append((name, value.strip(b" \t")))
    return start, headers


def framingOf(headers: Headers) -> tuple[Framing, int]:
    """
    How a message with C{headers} frames its body (ignoring bodiless cases).

    @return: C{("chunked", 0)}, C{("length", n)} or C{("close", 0)}.
    """
    encodings = values(headers, b"transfer-encoding")
    if encodings and encodings[-1].lower().endswith(b"chunked"):
        return "chunked", 0
    lengths = values(headers, b"content-length")
    if lengths:
        return "length", int(lengths[0])
    return "close", 0


_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class BodyDecoder:
    """
    De-frames one message body as bytes arrive.

    @ivar done: C{True} once the whole body has been read.
    @ivar chunkSizes: The chunk sizes seen (chunked bodies).
    @ivar trailers: Trailer lines seen (chunked bodies).
    """

    def __init__(
        self, framing: Framing, length: int, onData: Callable[[bytes], None]
    ) -> None:
        """
        @param framing: How the body is framed.
        @param length: The length for C{"length"} framing.
        @param onData: Called with each piece of de-framed body.
        """
        self.framing = framing
        self.onData = onData
        self.remaining = length
        self.done = framing == "none" or (framing == "length" and length == 0)
        self.chunkSizes: list[int] = []
        self.trailers: list[bytes] = []
        self._state = _SIZE
        self._buffer = b""

    def feed(self, data: bytes) -> bytes:
        """
        Consume body bytes.

        @return: The bytes that follow the end of the body (if it ended).
        @raise ProtocolViolationError: On bad chunk framing.
        """
        if self.done:
            return data
        if self.framing == "close":
            self.onData(data)
            return b""
        if self.framing == "length":
            take = data[: self.remaining]
            self.remaining -= len(take)
            if take:
                self.onData(take)
            if self.remaining == 0:
                self.done = True
            return data[len(take) :]
        return self._chunked(data)

    def _chunked(self, data: bytes) -> bytes:
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        position = 0
        size = len(buffer)
        while position < size and not self.done:
            if self._state == _DATA:
                take = min(self.remaining, size - position)
                self.onData(buffer[position : position + take])
                position += take
                self.remaining -= take
                if self.remaining == 0:
                    self._state = _DATA_END
                continue
            end = buffer.find(b"\r\n", position)
            if end < 0:
                self._buffer = buffer[position:]
                return b""
            line = buffer[position:end]
            position = end + 2
            if self._state == _SIZE:
                try:
                    chunkSize = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ProtocolViolationError(f"bad chunk size {line!r}") from None
                self.chunkSizes.append(chunkSize)
                if chunkSize == 0:
                    self._state = _TRAILER
                else:
                    self.remaining = chunkSize
                    self._state = _DATA
            elif self._state == _DATA_END:
                if line:
                    raise ProtocolViolationError(f"chunk too long: {line!r}")
                self._state = _SIZE
            elif line:
                self.trailers.append(line)
            else:
                self.done = True
        return buffer[position:]


@define(eq=False)
class _Body:
    """
    A message body seen as it streams: length, sha256 and the first bytes.
    """

    keep: int = KEEP_LIMIT
    length: int = 0
    kept: bytearray = field(factory=bytearray)
    _hash: Any = field(factory=hashlib.sha256)

    def add(self, data: bytes) -> None:
        """
        Account for a piece of body.
        """
        self.length += len(data)
        self._hash.update(data)
        room = self.keep - len(self.kept)
        if room > 0:
            self.kept += data[:room]

    @property
    def sha256(self) -> str:
        """
        The hex sha256 of the body so far.
        """
        return str(self._hash.hexdigest())


@define(eq=False)
class ReceivedRequest:
    """
    A request as the backend received it.

    @ivar method: The method, as sent.
    @ivar target: The request target, byte for byte.
    @ivar version: The protocol version, e.g. C{b"HTTP/1.1"}.
    @ivar headers: The header lines in the order they came.
    @ivar framing: How the body was framed.
    @ivar body: Length, sha256 and the first bytes of the body.
    @ivar complete: C{True} once the whole body has arrived.
    @ivar chunkSizes: The chunk sizes of a chunked body.
    """

    method: bytes
    target: bytes
    version: bytes
    headers: Headers
    framing: Framing
    body: _Body = field(factory=_Body)
    complete: bool = False
    chunkSizes: list[int] = field(factory=list)

    def values(self, name: bytes) -> list[bytes]:
        """
        Every value of header C{name}, in order.
        """
        return values(self.headers, name)

    def describe(self) -> dict[str, Any]:
        """
        The request as JSON-able data (what L{echo} answers with).
        """
        return {
            "method": self.method.decode("latin-1"),
            "target": self.target.decode("latin-1"),
            "version": self.version.decode("latin-1"),
            "headers": [
                [k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers
            ],
            "framing": self.framing,
            "length": self.body.length,
            "sha256": self.body.sha256,
            "chunks": self.chunkSizes,
        }


Handler = Callable[[ReceivedRequest, "BackendConnection"], None]


class BackendConnection(Protocol):
    """
    One connection to the test backend.

    Requests are parsed in order; each complete request is passed to the
    factory's handler, which answers with L{respond} (or L{startResponse},
    L{writeBody} and L{endResponse}, or raw L{transport} writes followed by
    L{finish}).  The next request on the connection is handled only once the
    current response is finished.

    @ivar requests: The requests received on this connection.
    @ivar closed: C{True} once the connection is gone.
    @ivar lostReason: Why it closed.
    """

    def __init__(self, factory: BackendFactory) -> None:
        self.factory = factory
        self.requests: list[ReceivedRequest] = []
        self.closed = False
        self.lostReason: Failure | None = None
        self.bytesReceived = 0
        self._buffer = b""
        self._current: ReceivedRequest | None = None
        self._decoder: BodyDecoder | None = None
        self._queue: deque[ReceivedRequest] = deque()
        self._busy = False
        self._chunked = False
        self._whenLost: list[Deferred[None]] = []

    # Connection

    def connectionMade(self) -> None:
        """
        Count the connection.
        """
        self.factory._connectionMade(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Count the loss.
        """
        self.closed = True
        self.lostReason = reason
        self.factory._connectionLost(self)
        waiting, self._whenLost = self._whenLost, []
        for d in waiting:
            d.callback(None)

    def whenLost(self) -> Deferred[None]:
        """
        @return: A Deferred that fires once this connection has closed.
        """
        if self.closed:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._whenLost.append(d)
        return d

    # Parsing

    def dataReceived(self, data: bytes) -> None:
        """
        Parse requests as they arrive.
        """
        self.bytesReceived += len(data)
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        try:
            self._parse(data)
        except ProtocolViolationError:
            self.transport.loseConnection()  # type: ignore[union-attr]
        if self.factory._waiters:
            self.factory._check()

    def _parse(self, data: bytes) -> None:
        while data and not self.closed:
            if self._decoder is None:
                data = data.lstrip(b"\r\n")
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    self._buffer = data
                    return
                head, data = data[:end], data[end + 4 :]
                self._startRequest(head)
            else:
                data = self._decoder.feed(data)
            self._checkComplete()

    def _startRequest(self, head: bytes) -> None:
        start, headers = parseHead(head)
        if len(start) != 3:
            raise ProtocolViolationError(f"bad request line {start!r}")
        framing, length = framingOf(headers)
        if framing == "close":
            framing = "none"
        request = ReceivedRequest(start[0], start[1], start[2], headers, framing)
        self._current = request
        self.requests.append(request)
        self.factory.requests.append(request)
        self._decoder = BodyDecoder(framing, length, request.body.add)
        self.factory._requestStarted(request)
        onHead = self.factory.onHead
        if onHead is not None:
            onHead(request, self)
        self._checkComplete()

    def _checkComplete(self) -> None:
        decoder, request = self._decoder, self._current
        if decoder is None or request is None or not decoder.done:
            return
        self._decoder = self._current = None
        request.complete = True
        request.chunkSizes = decoder.chunkSizes
        self._queue.append(request)
        self._next()

    def _next(self) -> None:
        if self._busy or not self._queue or self.closed:
            return
        self._busy = True
        request = self._queue.popleft()
        self.factory.handler(request, self)

    # Answering

    def later(self, delay: float, f: Callable[..., object], *args: object) -> None:
        """
        Call C{f(*args)} after C{delay} seconds unless the connection is gone
        by then (the call is cancelled when the test's backend stops).
        """

        def run() -> None:
            if not self.closed:
                f(*args)

        self.factory.callLater(delay, run)

    def write(self, data: bytes) -> None:
        """
        Write raw bytes (ignored once the connection is gone).
        """
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def startResponse(
        self,
        code: int = 200,
        phrase: bytes = b"OK",
        headers: Iterable[tuple[bytes, bytes]] = (),
        length: int | None = None,
        chunked: bool = False,
    ) -> None:
        """
        Write a response head.

        @param length: Adds C{Content-Length} when not L{None}.
        @param chunked: Adds C{Transfer-Encoding: chunked} and frames what
            L{writeBody} writes.
        """
        lines = [b"HTTP/1.1 %d %s\r\n" % (code, phrase)]
        lines.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
        if length is not None:
            lines.append(b"Content-Length: %d\r\n" % (length,))
        if chunked:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        lines.append(b"\r\n")
        self._chunked = chunked
        self.write(b"".join(lines))

    def writeBody(self, data: bytes) -> None:
        """
        Write some of the response body (chunk-framed if the response is).
        """
        if self._chunked:
            if data:
                self.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.write(data)

    def endResponse(self) -> None:
        """
        End the response body and go on to the next request.
        """
        if self._chunked:
            self.write(b"0\r\n\r\n")
            self._chunked = False
        self.finish()

    def respond(
        self,
        code: int = 200,
        phrase: bytes = b"OK",
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes = b"",
    ) -> None:
        """
        Write a whole response with a C{Content-Length} and finish.
        """
        self.startResponse(code, phrase, headers, length=len(body))
        self.write(body)
        self.finish()

    def finish(self) -> None:
        """
        The current response is complete: handle the next request.
        """
        self._busy = False
        self._next()

    def reset(self) -> None:
        """
        Close the connection with a TCP reset (SO_LINGER 0).
        """
        if self.closed:
            return
        handle = self.transport.getHandle()  # type: ignore[union-attr]
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abortConnection()  # type: ignore[union-attr]


class BackendFactory(Factory):
    """
    An HTTP/1.1 test backend that counts its connections.

    @ivar name: The environment it plays (C{"green"} or C{"blue"}).
    @ivar handler: Answers each complete request.
    @ivar onHead: If not L{None}, also called as soon as a request's head
        has arrived (before its body), e.g. to answer early.
    @ivar connections: Every connection made, in order.
    @ivar made: Connections made so far.
    @ivar lost: Connections lost so far.
    @ivar maxOpen: The most connections that were open at once.
    @ivar requests: Every request received (including incomplete ones).
    """

    noisy = False

    def __init__(
        self, name: str, handler: Handler, onHead: Handler | None = None
    ) -> None:
        self.name = name
        self.handler = handler
        self.onHead = onHead
        self.connections: list[BackendConnection] = []
        self.made = 0
        self.lost = 0
        self.maxOpen = 0
        self.requests: list[ReceivedRequest] = []
        self._calls: set[IDelayedCall] = set()
        self._waiters: list[tuple[Callable[[], bool], Deferred[None]]] = []

    @property
    def open(self) -> int:
        """
        Connections open now.
        """
        return self.made - self.lost

    def buildProtocol(self, addr: object) -> BackendConnection:
        """
        A new connection.
        """
        return BackendConnection(self)

    def callLater(self, delay: float, f: Callable[[], object]) -> None:
        """
        Schedule C{f}, cancelled by L{stop} if it has not run by then.
        """
        call: IDelayedCall

        def run() -> None:
            self._calls.discard(call)
            f()

        call = reactor.callLater(delay, run)
        self._calls.add(call)

    def when(self, condition: Callable[[], bool]) -> Deferred[None]:
        """
        @return: A Deferred that fires once C{condition()} is true (checked
            whenever a connection comes or goes, a request starts or bytes
            arrive on this backend).
        """
        if condition():
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append((condition, d))
        return d

    def _check(self) -> None:
        waiting, self._waiters = self._waiters, []
        for condition, d in waiting:
            if condition():
                d.callback(None)
            else:
                self._waiters.append((condition, d))

    def _connectionMade(self, conn: BackendConnection) -> None:
        self.connections.append(conn)
        self.made += 1
        self.maxOpen = max(self.maxOpen, self.open)
        self._check()

    def _connectionLost(self, conn: BackendConnection) -> None:
        self.lost += 1
        self._check()

    def _requestStarted(self, request: ReceivedRequest) -> None:
        self._check()

    def stop(self) -> Deferred[None]:
        """
        Cancel pending calls and abort open connections.

        @return: A Deferred that fires once every connection has closed.
        """
        for call in list(self._calls):
            if call.active():
                call.cancel()
        self._calls.clear()
        waiting = []
        for conn in self.connections:
            if not conn.closed:
                waiting.append(conn.whenLost())
                conn.transport.abortConnection()  # type: ignore[union-attr]
        return _gather(waiting)


def _gather(ds: Sequence[Deferred[None]]) -> Deferred[None]:
    """
    A Deferred that fires once all of C{ds} have fired.
    """
    result: Deferred[None] = Deferred()
    remaining = [len(ds)]
    if not ds:
        result.callback(None)
        return result

    def one(_: object) -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            result.callback(None)

    for d in ds:
        d.addBoth(one)
    return result


# Handlers


def echo(name: str) -> Handler:
    """
    Answer every request with JSON describing it (L{ReceivedRequest.describe})
    plus C{"env": name}; C{X-Env} and C{X-Echo-Method} headers repeat the
    name and method (a C{HEAD} response has only those).
    """

    def handle(request: ReceivedRequest, conn: BackendConnection) -> None:
        data = request.describe()
        data["env"] = name
        body = json.dumps(data).encode()
        headers = [
            (b"Content-Type", b"application/json"),
            (b"X-Env", name.encode()),
            (b"X-Echo-Method", request.method),
        ]
        if request.method == b"HEAD":
            conn.startResponse(headers=headers, length=len(body))
            conn.finish()
        else:
            conn.respond(headers=headers, body=body)

    return handle


def delayed(seconds: float, handler: Handler) -> Handler:
    """
    Hand each request to C{handler} only after C{seconds}.
    """

    def handle(request: ReceivedRequest, conn: BackendConnection) -> None:
        conn.later(seconds, handler, request, conn)

    return handle


def named(name: str, parts: int = 4, delay: float = 0.0, repeat: int = 8) -> Handler:
    """
    Answer with a chunked body naming the environment, written in C{parts}
    writes C{delay} seconds apart (so a response can span a switch).
    """
    piece = (name + ";").encode() * repeat

    def handle(request: ReceivedRequest, conn: BackendConnection) -> None:
        conn.startResponse(headers=[(b"X-Env", name.encode())], chunked=True)

        def part(n: int) -> None:
            conn.writeBody(piece)
            if n + 1 < parts:
                conn.later(delay, part, n + 1)
            else:
                conn.endResponse()

        part(0)

    return handle


def silent(request: ReceivedRequest, conn: BackendConnection) -> None:
    """
    Never answer.
    """


def rawThen(data: bytes, then: Literal["close", "reset", "keep"] = "close") -> Handler:
    """
    Answer with raw C{data}, then close, reset or keep the connection.
    """

    def handle(request: ReceivedRequest, conn: BackendConnection) -> None:
        conn.write(data)
        if then == "close":
            conn.transport.loseConnection()  # type: ignore[union-attr]
        elif then == "reset":
            conn.reset()
        else:
            conn.finish()

    return handle


def closeWithoutResponse(request: ReceivedRequest, conn: BackendConnection) -> None:
    """
    Close the connection without answering.
    """
    conn.transport.loseConnection()  # type: ignore[union-attr]


def resetWithoutResponse(request: ReceivedRequest, conn: BackendConnection) -> None:
    """
    Reset the connection without answering.
    """
    conn.reset()


def closeAfterFirst(handler: Handler) -> Handler:
    """
    Answer the first request on each connection with C{handler}; close the
    connection, without answering, when a second request arrives on it (a
    server that dropped a kept-alive connection just as it was reused).
    """

    def handle(request: ReceivedRequest, conn: BackendConnection) -> None:
        if len(conn.requests) > 1:
            conn.transport.loseConnection()  # type: ignore[union-attr]
        else:
            handler(request, conn)

    return handle


def route(routes: dict[bytes, Handler], default: Handler) -> Handler:
    """
    Pick a handler by request path (the target without its query).
    """

    def handle(request: ReceivedRequest, conn: BackendConnection) -> None:
        path = request.target.split(b"?", 1)[0]
        routes.get(path, default)(request, conn)

    return handle


# Generated bodies


class PatternSource:
    """
    A deterministic body of C{size} bytes, generated block by block (never
    held whole), hashed as it is generated.

    Each block is a fixed pseudo-random block with its index in its first
    eight bytes, so misordered, lost or repeated blocks change the hash.

    @ivar produced: Bytes generated so far.
    """

    _BASE = random.Random(20240911).randbytes(1 << 20)

    def __init__(self, size: int) -> None:
        self.size = size
        self.produced = 0
        self._index = 0
        self._hash = hashlib.sha256()

    @property
    def done(self) -> bool:
        """
        C{True} once all C{size} bytes have been generated.
        """
        return self.produced >= self.size

    def read(self, n: int) -> bytes:
        """
        The next block, at most C{n} bytes (at most 1 MiB).
        """
        n = min(n, self.size - self.produced, len(self._BASE))
        if n <= 0:
            return b""
        header = struct.pack(">Q", self._index)
        block = header + self._BASE[8:n] if n >= 8 else header[:n]
        self._index += 1
        self.produced += n
        self._hash.update(block)
        return block

    @property
    def sha256(self) -> str:
        """
        The hex sha256 of what has been generated (the whole body once
        L{done}).
        """
        return str(self._hash.hexdigest())

    @classmethod
    def digest(cls, size: int, block: int) -> str:
        """
        The sha256 of the body C{PatternSource(size)} yields in C{block}-byte
        reads.
        """
        source = cls(size)
        while not source.done:
            source.read(block)
        return source.sha256


@implementer(IPullProducer)
class SourceProducer:
    """
    Writes a L{PatternSource} to a transport, one block each time the
    transport asks for more (a pull producer: nothing is written while the
    transport's buffer is full).

    @ivar written: Bytes written so far.
    @ivar stopped: C{True} if the transport stopped the producer.
    """

    def __init__(
        self,
        transport: Any,
        source: PatternSource,
        block: int = 64 * 1024,
        onWrite: Callable[[int], None] | None = None,
        onDone: Callable[[], None] | None = None,
    ) -> None:
        self.transport = transport
        self.source = source
        self.block = block
        self.onWrite = onWrite
        self.onDone = onDone
        self.written = 0
        self.stopped = False

    def start(self) -> None:
        """
        Register with the transport, which then pulls the blocks.
        """
        self.transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        """
        Write the next block.
        """
        if self.stopped or self.source.done:
            return
        data = self.source.read(self.block)
        self.written += len(data)
        self.transport.write(data)
        if self.onWrite is not None:
            self.onWrite(self.written)
        if self.source.done:
            self.transport.unregisterProducer()
            if self.onDone is not None:
                self.onDone()

    def stopProducing(self) -> None:
        """
        The connection is gone.
        """
        self.stopped = True


@define(eq=False)
class DownloadStats:
    """
    What a L{generated} handler wrote.

    @ivar sources: The body of each response, in order.
    @ivar producers: The producer of each response, in order.
    """

    sources: list[PatternSource] = field(factory=list)
    producers: list[SourceProducer] = field(factory=list)


def generated(
    size: int,
    block: int = 64 * 1024,
    stats: DownloadStats | None = None,
    onWrite: Callable[[int], None] | None = None,
    sendBuffer: int | None = None,
) -> Handler:
    """
    Answer with a generated body of C{size} bytes and a C{Content-Length},
    written one C{block} at a time by a pull producer.

    @param sendBuffer: If given, the connection's kernel send buffer size
        (C{SO_SNDBUF}), so that little of the body waits in the backend's
        kernel instead of in its producer.
    """

    def handle(request: ReceivedRequest, conn: BackendConnection) -> None:
        if sendBuffer is not None:
            setBuffer(conn.transport, socket.SO_SNDBUF, sendBuffer)
        source = PatternSource(size)
        conn.startResponse(
            headers=[(b"Content-Type", b"application/octet-stream")], length=size
        )
        producer = SourceProducer(conn.transport, source, block, onWrite, conn.finish)
        if stats is not None:
            stats.sources.append(source)
            stats.producers.append(producer)
        producer.start()

    return handle


# Listening and connecting


def setBuffer(transport: Any, option: int, size: int) -> None:
    """
    Set a TCP transport's kernel buffer size (C{SO_SNDBUF} or C{SO_RCVBUF});
    this also stops the kernel from growing it automatically.
    """
    transport.getHandle().setsockopt(socket.SOL_SOCKET, option, size)


def portNumber(port: IListeningPort) -> int:
    """
    The TCP port C{port} listens on.
    """
    address = port.getHost()
    assert isinstance(address, IPv4Address), address
    return address.port


def listen(testCase: TestCase, factory: Factory) -> int:
    """
    Listen on 127.0.0.1 on a free port until the test ends.

    @return: The port number.
    """
    port: IListeningPort = reactor.listenTCP(0, factory, interface="127.0.0.1")

    async def stop() -> None:
        stopped = port.stopListening()
        if stopped is not None:
            await stopped
        if isinstance(factory, BackendFactory):
            await factory.stop()

    testCase.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    return portNumber(port)


def startBackend(
    testCase: TestCase, name: str, handler: Handler, onHead: Handler | None = None
) -> tuple[BackendFactory, str]:
    """
    Run a test backend for the rest of the test.

    @param onHead: See L{BackendFactory.onHead}.
    @return: The backend and its URL.
    """
    factory = BackendFactory(name, handler, onHead)
    port = listen(testCase, factory)
    return factory, f"http://127.0.0.1:{port}"


def closedPortURL() -> str:
    """
    The URL of a loopback port nothing listens on.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@define(eq=False)
class ProxyUnderTest:
    """
    The real proxy, built by L{bluegreen.service.tap.makeService}, on a free port.
    """

    service: ProxyService
    port: int

    @property
    def controller(self) -> Controller:
        """
        The switch.
        """
        return self.service.controller

    @property
    def resource(self) -> ProxyResource:
        """
        The proxy resource.
        """
        return self.service.resource

    @property
    def pools(self) -> dict[str, UpstreamPool]:
        """
        The upstream pools by environment name.
        """
        return self.service.pools

    @property
    def url(self) -> str:
        """
        The proxy's base URL.
        """
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> Deferred[Any]:
        """
        Stop the service (once).
        """
        if not self.service.running:
            return succeed(None)
        return self.service.stopService()


def startProxy(
    testCase: TestCase, green: str, blue: str, *extra: str, health: bool = False
) -> ProxyUnderTest:
    """
    Start the proxy from command-line options, listening on a free port of
    127.0.0.1, stopped when the test ends.

    Unless C{health} is true the health monitor is taken out of the service
    tree before it starts: no health checks reach the test backends and no
    automatic failover or retry on the standby happens, so a test sees the
    proxy alone.  (C{--retry none} is also passed, and C{--admin none} so
    that no admin API listens on its default port, unless overridden.)

    @param green: The GREEN environment's URL.
    @param blue: The BLUE environment's URL.
    @param extra: More options (they override the defaults given here:
        C{--access-log none --retry none --admin none}).
    @param health: Keep the health monitor running.
    """
    options = Options()
    options.parseOptions(
        [
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--green",
            green,
            "--blue",
            blue,
            "--access-log",
            "none",
            "--retry",
            "none",
            "--admin",
            "none",
            *extra,
        ]
    )
    service = makeService(options, reactor)
    assert isinstance(service, ProxyService)
    if not health:
        service.health.disownServiceParent()
    service.startService()
    proxy: list[ProxyUnderTest] = []
    listeners = [s for s in service.listeners() if isinstance(s.factory, ProxySite)]
    assert len(listeners) == 1, list(service)
    # TCP listening is synchronous: the port is known already.
    port = listeners[0].port
    assert port is not None, "the proxy did not start listening"
    proxy.append(ProxyUnderTest(service, portNumber(port)))
    testCase.addCleanup(proxy[0].stop)
    return proxy[0]


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
    body: _Body = field(factory=_Body)
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


def sleep(seconds: float) -> Deferred[None]:
    """
    A Deferred that fires after C{seconds}.
    """
    return deferLater(reactor, seconds)


def withTimeout(d: Deferred[Any], seconds: float, what: str) -> Deferred[Any]:
    """
    C{d}, failed with an C{AssertionError} naming C{what} if it has not
    fired within C{seconds}.
    """
    done: Deferred[Any] = Deferred()
    call = reactor.callLater(
        seconds,
        lambda: done.errback(AssertionError(f"{what}: not within {seconds:g} s")),
    )

    def fired(result: object) -> None:
        if call.active():
            call.cancel()
            done.callback(result)

    d.addBoth(fired)
    return done


# Logs


@implementer(ILogObserver)
class LogCapture:
    """
    Collects every log event published while a test runs.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def errors(self) -> list[dict[str, Any]]:
        """
        The events that report errors (failures, C{isError}, level error or
        critical).
        """
        gc.collect()  # surface "Unhandled error in Deferred" now
        return [
            event
            for event in self.events
            if event.get("log_failure") is not None
            or event.get("isError")
            or getattr(event.get("log_level"), "name", "") in ("error", "critical")
        ]

    def namespace(self, namespace: str) -> list[dict[str, Any]]:
        """
        The events logged in C{namespace}.
        """
        return [e for e in self.events if e.get("log_namespace") == namespace]


def captureLogs(testCase: TestCase) -> LogCapture:
    """
    Capture the global log for the rest of the test.
    """
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    testCase.addCleanup(globalLogPublisher.removeObserver, capture)
    return capture


def failOnLoggedErrors(testCase: TestCase) -> LogCapture:
    """
    Capture the global log and fail the test if anything logged an error, a
    failure or an unhandled Deferred error (checked after the test's later
    cleanups, so errors logged while shutting down count too).
    """
    capture = captureLogs(testCase)

    def check() -> None:
        errors = capture.errors()
        testCase.assertEqual(
            [formatEvent(event) for event in errors],
            [],
            "errors were logged during the test",
        )

    testCase.addCleanup(check)
    return capture


# TLS


@define(eq=False)
class Certificates:
    """
    A throw-away CA and server certificates in PEM.

    @ivar caPath: The CA certificate's file.
    @ivar servers: Server certificate and key (PEM, concatenated) by name.
    """

    caPath: str
    caPEM: bytes
    servers: dict[str, bytes]

    def serverOptions(self, name: str) -> Any:
        """
        TLS server options for the server certificate C{name}.
        """
        certificate = PrivateCertificate.loadPEM(self.servers[name])
        return certificate.options()


def makeCertificates(directory: str, servers: dict[str, Sequence[str]]) -> Certificates:
    """
    Make a CA and, for each entry of C{servers}, a server certificate it
    signs whose subjectAltName lists the given DNS names and IP addresses.

    @param directory: Where C{ca.pem} is written (created if missing).
    @param servers: Host names and addresses by certificate name.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    notBefore, notAfter = (
        now - datetime.timedelta(days=1),
        now + datetime.timedelta(days=2),
    )

    def subject(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    caKey = ec.generate_private_key(ec.SECP256R1())
    caName = subject("bluegreen test CA")
    caCert = (
        x509.CertificateBuilder()
        .subject_name(caName)
        .issuer_name(caName)
        .public_key(caKey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(notBefore)
        .not_valid_after(notAfter)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(caKey.public_key()),
            critical=False,
        )
        .sign(caKey, hashes.SHA256())
    )
    caPEM = caCert.public_bytes(serialization.Encoding.PEM)
    os.makedirs(directory, exist_ok=True)
    caPath = os.path.join(directory, "ca.pem")
    with open(caPath, "wb") as f:
        f.write(caPEM)
    made: dict[str, bytes] = {}
    for certName, hosts in servers.items():
        key = ec.generate_private_key(ec.SECP256R1())
        alternatives: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alternatives.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject(hosts[0]))
            .issuer_name(caName)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(notBefore)
            .not_valid_after(notAfter)
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(
                x509.BasicConstraints(ca=False, path_length=None), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(caKey.public_key()),
                critical=False,
            )
            .sign(caKey, hashes.SHA256())
        )
        made[certName] = cert.public_bytes(serialization.Encoding.PEM) + (
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return Certificates(caPath, caPEM, made)


def listenTLS(testCase: TestCase, factory: Factory, options: Any) -> int:
    """
    Listen with TLS on 127.0.0.1 on a free port until the test ends.

    @return: The port number.
    """
    port: IListeningPort = reactor.listenSSL(0, factory, options, interface="127.0.0.1")

    async def stop() -> None:
        stopped = port.stopListening()
        if stopped is not None:
            await stopped
        if isinstance(factory, BackendFactory):
            await factory.stop()

    testCase.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    return portNumber(port)
