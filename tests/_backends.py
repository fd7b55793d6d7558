# -*- test-case-name: tests.test_proxy_integration -*-
# mypy: allow-untyped-calls
"""
A real HTTP/1.1 backend for the proxy's integration tests, and the proxy
started in front of it.

  - L{BackendFactory} is an HTTP/1.1 test backend with a hand-written parser
    (L{tests._messages}), so a test sees exactly the bytes the proxy sent
    (raw request target, repeated headers in order, chunked framing) and can
    answer with exactly the bytes it wants (garbage, truncated bodies,
    resets).  It counts its connections (made, lost, open at once) and hashes
    request bodies as they stream in, so uploads of any size are checked
    without being stored.
  - L{startProxy} builds the real proxy from L{bluegreen.service.tap} on port
    0; L{listen} registers its own cleanup, so a test leaves a clean reactor.

The raw client is in L{tests._rawclient}, generated bodies in
L{tests._bodies}, certificates in L{tests._certificates}.
"""

from __future__ import annotations

import json
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from attrs import define, field
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from bluegreen.controller import Controller
from bluegreen.proxy.pool import UpstreamPool
from bluegreen.proxy.resource import ProxyResource, ProxySite
from bluegreen.service.tap import Options, ProxyService, makeService

# The "X as X" imports re-export names for the tests of other components,
# which import them from here; the proxy's tests import them from where they
# are defined.
from tests._certificates import makeCertificates as makeCertificates
from tests._logs import LogCapture as LogCapture
from tests._logs import captureLogs as captureLogs
from tests._logs import failOnLoggedErrors as failOnLoggedErrors
from tests._messages import (
    Body,
    BodyDecoder,
    Framing,
    Headers,
    ProtocolViolationError,
    framingOf,
    parseHead,
    values,
)
from tests._rawclient import IncompleteResponseError as IncompleteResponseError
from tests._rawclient import connectRaw as connectRaw
from tests._rawclient import fetch as fetch
from tests._util import proxyArguments
from tests._waiting import reactor as reactor
from tests._waiting import sleep as sleep
from tests._waiting import withTimeout as withTimeout


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
    body: Body = field(factory=Body)
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


# Listening and connecting


def portNumber(port: IListeningPort) -> int:
    """
    The TCP port C{port} listens on.
    """
    address = port.getHost()
    assert isinstance(address, IPv4Address), address
    return address.port


def stopAtCleanup(testCase: TestCase, port: IListeningPort, factory: Factory) -> int:
    """
    Stop listening on C{port} when the test ends, and then stop C{factory}
    if it is a test backend (closing its connections).

    @return: The port number.
    """

    async def stop() -> None:
        stopped = port.stopListening()
        if stopped is not None:
            await stopped
        if isinstance(factory, BackendFactory):
            await factory.stop()

    testCase.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    return portNumber(port)


def listen(testCase: TestCase, factory: Factory) -> int:
    """
    Listen on 127.0.0.1 on a free port until the test ends.

    @return: The port number.
    """
    port: IListeningPort = reactor.listenTCP(0, factory, interface="127.0.0.1")
    return stopAtCleanup(testCase, port, factory)


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


def buildService(arguments: Sequence[str]) -> ProxyService:
    """
    Build the service from the command-line C{arguments}, as twistd's
    C{bluegreen} plugin does (on the global reactor), without starting it.
    """
    options = Options()
    options.parseOptions(list(arguments))
    service = makeService(options, reactor)
    assert isinstance(service, ProxyService)
    return service


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
    service = buildService(
        proxyArguments(
            green,
            blue,
            "--access-log",
            "none",
            "--retry",
            "none",
            "--admin",
            "none",
            *extra,
        )
    )
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


def startProxyFor(
    testCase: TestCase,
    handler: Handler,
    *extra: str,
    onHead: Handler | None = None,
    health: bool = False,
) -> tuple[BackendFactory, ProxyUnderTest]:
    """
    Start a GREEN backend answering with C{handler}, a BLUE echo backend,
    and the proxy in front of them (see L{startProxy}).

    @param extra: More options for the proxy.
    @param onHead: See L{BackendFactory.onHead}.
    @param health: Keep the proxy's health monitor running.
    @return: The GREEN backend and the proxy.
    """
    green, greenURL = startBackend(testCase, "green", handler, onHead)
    _blue, blueURL = startBackend(testCase, "blue", echo("blue"))
    return green, startProxy(testCase, greenURL, blueURL, *extra, health=health)


def listenTLS(testCase: TestCase, factory: Factory, options: Any) -> int:
    """
    Listen with TLS on 127.0.0.1 on a free port until the test ends.

    @return: The port number.
    """
    port: IListeningPort = reactor.listenSSL(0, factory, options, interface="127.0.0.1")
    return stopAtCleanup(testCase, port, factory)
