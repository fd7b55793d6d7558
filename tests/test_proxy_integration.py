# -*- test-case-name: tests.test_proxy_integration -*-
# mypy: allow-untyped-calls
"""
Integration tests of the proxy over real sockets.

Each test runs real backends (L{tests._backends.BackendFactory}) and the real
proxy (built from L{bluegreen.service.tap} options) on 127.0.0.1 with free ports, and
talks to the proxy with a real client: treq over a persistent connection pool,
or L{tests._backends.RawClient} when exact bytes matter.
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import treq
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import LoopingCall
from twisted.logger import formatEvent
from twisted.trial.unittest import TestCase

from tests._backends import (
    MIB,
    BackendConnection,
    BackendFactory,
    DownloadStats,
    IncompleteResponseError,
    PatternSource,
    RawClient,
    RawResponse,
    ReceivedRequest,
    SourceProducer,
    closeAfterFirst,
    closedPortURL,
    closeWithoutResponse,
    connectRaw,
    delayed,
    echo,
    failOnLoggedErrors,
    fetch,
    generated,
    listenTLS,
    makeCertificates,
    named,
    names,
    rawThen,
    reactor,
    resetWithoutResponse,
    route,
    setBuffer,
    silent,
    stalled,
    startBackend,
    startProxy,
    treqPool,
    withTimeout,
)
from tests._util import PATIENCE, waitFor


def tokens(body: bytes) -> list[bytes]:
    """
    The environment names a L{named} body is made of.
    """
    return [token for token in body.split(b";") if token]


class IntegrationTestCase(TestCase):
    """
    Captures the global log and fails the test if anything logged an error
    (checked after every cleanup, so shutdown errors count too).
    """

    timeout = 2 * PATIENCE

    def setUp(self) -> None:
        """
        Start capturing the log.
        """
        self.logs = failOnLoggedErrors(self)

    def assertPlainError(self, response: RawResponse, status: int, *words: str) -> None:
        """
        Assert C{response} is the proxy's plain-text error C{status} naming
        the GREEN environment and every one of C{words}, without a traceback.
        """
        self.assertEqual(response.code, status, response.text)
        self.assertTrue(response.complete)
        self.assertEqual(
            response.values(b"content-type"), [b"text/plain; charset=utf-8"]
        )
        text = response.text
        self.assertIn("green", text)
        for word in words:
            self.assertIn(word, text)
        self.assertNotIn("Traceback", text)
        self.assertNotIn('File "', text)
        self.assertLess(len(text), 500, text)


class AtomicSwitchTests(IntegrationTestCase):
    """
    A request goes wholly to one environment, whatever the switch does.
    """

    timeout = 4 * PATIENCE

    async def test_switchingUnderConcurrentLoad(self) -> None:
        """
        200 requests, 20 at a time over keep-alive connections, while the live
        environment flips every 3 ms: every request succeeds, each body comes
        wholly from one environment (bodies are streamed in four writes 2 ms
        apart, so many requests span a switch) and both environments serve.
        """
        green, greenURL = startBackend(self, "green", named("green", 4, 0.002))
        blue, blueURL = startBackend(self, "blue", named("blue", 4, 0.002))
        proxy = startProxy(self, greenURL, blueURL)
        controller = proxy.controller

        flipCount = [0]

        def flip() -> None:
            controller.switch(controller.standby().name, "test flip")
            flipCount[0] += 1

        flips = LoopingCall(flip)
        flips.start(0.003, now=False)
        self.addCleanup(lambda: flips.stop() if flips.running else None)
        pool = treqPool(self, 20)
        results: list[tuple[int, bytes, bool]] = []

        async def worker() -> None:
            for _ in range(10):
                before = flipCount[0]
                response = await treq.get(proxy.url + "/load", pool=pool)
                body = await treq.content(response)
                spanned = flipCount[0] != before
                results.append((response.code, body, spanned))

        await gatherResults([Deferred.fromCoroutine(worker()) for _ in range(20)])
        flips.stop()
        self.assertEqual(len(results), 200)
        served = {b"green": 0, b"blue": 0}
        for code, body, _ in results:
            self.assertEqual(code, 200, body)
            names_ = set(tokens(body))
            self.assertEqual(len(names_), 1, f"mixed body: {body!r}")
            self.assertEqual(len(tokens(body)), 32, body)
            served[names_.pop()] += 1
        self.assertGreater(served[b"green"], 0, served)
        self.assertGreater(served[b"blue"], 0, served)
        self.assertEqual(served[b"green"], len(green.requests))
        self.assertEqual(served[b"blue"], len(blue.requests))
        self.assertGreater(flipCount[0], 20)
        spanning = sum(1 for _, _, spanned in results if spanned)
        self.assertGreater(spanning, 10, "too few requests spanned a switch")
        # The client's keep-alive connections were reused: 20 connections
        # at most for 200 requests, so the backends saw few connections too.
        self.assertLessEqual(green.made + blue.made, 40)

    async def test_inFlightResponseFinishesOnOriginalEnvironment(self) -> None:
        """
        A slow response that has started streaming when the switch happens
        finishes from its environment; the next request on the same
        keep-alive client connection goes to the new one.
        """
        green, greenURL = startBackend(self, "green", named("green", 5, 0.1))
        blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        switchedAt: list[int] = []

        def onData(response: RawResponse, data: bytes) -> None:
            if not switchedAt:
                proxy.controller.switch("blue", "test")
                switchedAt.append(response.body.length)

        client.onData = onData
        first = await client.request(b"GET", b"/slow")
        self.assertEqual(first.code, 200)
        self.assertEqual(switchedAt, [8 * len(b"green;")], "switch after 1st write")
        self.assertEqual(set(tokens(first.content)), {b"green"})
        self.assertEqual(len(tokens(first.content)), 40)
        second = await client.request(b"GET", b"/next")
        self.assertEqual(second.json()["env"], "blue")
        self.assertFalse(client.closed)
        self.assertEqual(len(green.requests), 1)
        self.assertEqual(len(blue.requests), 1)

    async def test_switchBeforeUpstreamAnswers(self) -> None:
        """
        A request already sent to GREEN, whose response has not started when
        the switch happens, is still answered by GREEN.
        """
        green, greenURL = startBackend(self, "green", delayed(0.3, echo("green")))
        blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        pending = client.request(b"GET", b"/waiting")
        await withTimeout(green.when(lambda: len(green.requests) == 1), "request")
        proxy.controller.switch("blue", "test")
        response = await pending
        self.assertEqual(response.json()["env"], "green")
        self.assertEqual(blue.requests, [])

    async def test_uploadInProgressStaysOnItsEnvironment(self) -> None:
        """
        An upload whose body is still arriving when the switch happens goes
        wholly to GREEN (GREEN gets the whole body, BLUE nothing).
        """
        green, greenURL = startBackend(self, "green", echo("green"))
        blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        parts = [b"a" * 1000, b"b" * 1000, b"c" * 1000]
        client.sendRaw(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n"
            + parts[0]
        )
        pending = client.expect()
        await withTimeout(
            green.when(lambda: bool(green.requests)), "upload reached GREEN"
        )
        proxy.controller.switch("blue", "test")
        client.sendRaw(parts[1])
        await withTimeout(
            green.when(lambda: green.requests[0].body.length == 2000),
            "second part reached GREEN",
        )
        client.sendRaw(parts[2])
        response = await pending
        data = response.json()
        self.assertEqual(data["env"], "green")
        self.assertEqual(data["length"], 3000)
        self.assertEqual(data["sha256"], hashlib.sha256(b"".join(parts)).hexdigest())
        self.assertEqual(blue.requests, [])

    async def test_nextRequestOnSameConnectionFollowsSwitch(self) -> None:
        """
        Two requests on one client TCP connection: the first goes to GREEN,
        the switch happens, the second goes to BLUE.
        """
        green, greenURL = startBackend(self, "green", echo("green"))
        blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        first = await client.request(b"GET", b"/one")
        self.assertEqual(first.json()["env"], "green")
        self.assertEqual(proxy.controller.switch("blue", "test").to, "blue")
        second = await client.request(b"GET", b"/two")
        self.assertEqual(second.json()["env"], "blue")
        third = await client.request(b"GET", b"/three")
        self.assertEqual(third.json()["env"], "blue")
        self.assertFalse(client.closed, "the client connection was kept alive")
        self.assertEqual(first.values(b"connection"), [])
        self.assertEqual([r.target for r in green.requests], [b"/one"])
        self.assertEqual([r.target for r in blue.requests], [b"/two", b"/three"])


class PersistentConnectionTests(IntegrationTestCase):
    """
    Upstream connections are pooled, bounded, expired and closed.
    """

    async def test_sequentialRequestsShareOneUpstreamConnection(self) -> None:
        """
        Ten sequential requests on one client connection, then five more on
        five new client connections, all use a single upstream connection.
        """
        green, greenURL = startBackend(self, "green", echo("green"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        for i in range(10):
            response = await client.request(b"GET", b"/seq/%d" % (i,))
            self.assertEqual(response.code, 200)
        for i in range(5):
            response = await fetch(self, proxy.port, b"GET", b"/new/%d" % (i,))
            self.assertEqual(response.code, 200)
        self.assertEqual(green.made, 1, "one upstream connection")
        self.assertEqual(len(green.connections[0].requests), 15)
        self.assertEqual(proxy.pools["green"].idle, 1)
        self.assertEqual(proxy.pools["green"].busy, 0)

    async def test_poolIsBounded(self) -> None:
        """
        With C{--max-connections 2}, ten concurrent slow requests all succeed
        but the backend never has more than two connections open.
        """
        green, greenURL = startBackend(self, "green", delayed(0.2, echo("green")))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL, "--max-connections", "2")
        pool = treqPool(self, 10)

        async def one(i: int) -> tuple[int, Any]:
            response = await treq.get(f"{proxy.url}/slow/{i}", pool=pool)
            return response.code, await treq.json_content(response)

        started = time.monotonic()
        results = await gatherResults(
            [Deferred.fromCoroutine(one(i)) for i in range(10)]
        )
        elapsed = time.monotonic() - started
        self.assertEqual([code for code, _ in results], [200] * 10)
        self.assertEqual(
            sorted(data["target"] for _, data in results),
            sorted(f"/slow/{i}" for i in range(10)),
        )
        self.assertEqual(green.maxOpen, 2, "at most (and here exactly) 2")
        self.assertEqual(green.made, 2)
        # Five rounds of two 0.2 s requests.
        self.assertGreater(elapsed, 0.9)
        self.assertEqual(proxy.pools["green"].busy, 0)

    async def test_idleConnectionsClose(self) -> None:
        """
        An idle upstream connection is closed after C{--idle-timeout}.
        """
        green, greenURL = startBackend(self, "green", echo("green"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL, "--idle-timeout", "0.3")
        response = await fetch(self, proxy.port, b"GET", b"/")
        self.assertEqual(response.code, 200)
        done = time.monotonic()
        self.assertEqual(proxy.pools["green"].idle, 1)
        await withTimeout(green.when(lambda: green.lost == 1), "idle close")
        elapsed = time.monotonic() - done
        self.assertGreater(elapsed, 0.2)
        self.assertLess(elapsed, PATIENCE)
        self.assertEqual(proxy.pools["green"].idle, 0)
        # A new request opens a new connection.
        response = await fetch(self, proxy.port, b"GET", b"/again")
        self.assertEqual(response.code, 200)
        self.assertEqual(green.made, 2)

    async def test_poolsCloseOnStopService(self) -> None:
        """
        Stopping the service closes idle upstream connections of both
        environments and stops listening.
        """
        green, greenURL = startBackend(self, "green", echo("green"))
        blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        await fetch(self, proxy.port, b"GET", b"/g")
        proxy.controller.switch("blue", "test")
        await fetch(self, proxy.port, b"GET", b"/b")
        self.assertEqual((green.open, blue.open), (1, 1))
        await withTimeout(proxy.stop(), "stopService")
        await withTimeout(green.when(lambda: green.open == 0), "GREEN closed")
        await withTimeout(blue.when(lambda: blue.open == 0), "BLUE closed")
        self.assertEqual((proxy.pools["green"].idle, proxy.pools["blue"].idle), (0, 0))
        with self.assertRaises(ConnectionRefusedError):
            await connectRaw(self, proxy.port)

    async def test_stopServiceDrainsRequestInFlight(self) -> None:
        """
        A request in flight when the service stops still gets its response;
        then its upstream connection closes and C{stopService} completes.
        """
        green, greenURL = startBackend(self, "green", delayed(0.3, echo("green")))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        pending = client.request(b"GET", b"/draining")
        await withTimeout(green.when(lambda: bool(green.requests)), "request")
        stopped = proxy.stop()
        response = await pending
        self.assertEqual(response.json()["env"], "green")
        await withTimeout(stopped, "stopService")
        await withTimeout(green.when(lambda: green.open == 0), "GREEN closed")


class StreamingTests(IntegrationTestCase):
    """
    Bodies stream both ways without being buffered whole, with backpressure.
    """

    timeout = 4 * PATIENCE

    async def test_responseArrivesIncrementally(self) -> None:
        """
        The first chunk of a slow response reaches the client before the
        backend has written the rest.
        """
        state = {"second": False}

        def slowTwoParts(request: ReceivedRequest, conn: BackendConnection) -> None:
            conn.startResponse(chunked=True)
            conn.writeBody(b"first part;")

            def second() -> None:
                state["second"] = True
                conn.writeBody(b"second part;")
                conn.endResponse()

            # The rest is written only once the client has the first part.
            firstSeen.addCallback(lambda _: second())

        firstSeen: Deferred[None] = Deferred()
        _green, greenURL = startBackend(self, "green", slowTwoParts)
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        seen: list[tuple[bytes, bool]] = []

        def onData(response: RawResponse, data: bytes) -> None:
            seen.append((data, state["second"]))
            if not firstSeen.called:
                firstSeen.callback(None)

        client.onData = onData
        started = reactor.seconds()
        response = await client.request(b"GET", b"/stream")
        self.assertEqual(response.content, b"first part;second part;")
        self.assertEqual(seen[0], (b"first part;", False))
        assert response.firstDataAt is not None
        self.assertLess(response.firstDataAt - started, PATIENCE)

    async def test_chunkedResponsePassesThrough(self) -> None:
        """
        A chunked response of unknown length reaches an HTTP/1.1 client
        chunked and intact, and an HTTP/1.0 client as a body ended by close.
        """
        pieces = [b"alpha-", b"x" * 70000, b"-omega"]

        def chunked(request: ReceivedRequest, conn: BackendConnection) -> None:
            conn.startResponse(chunked=True)
            for piece in pieces:
                conn.writeBody(piece)
            conn.endResponse()

        _green, greenURL = startBackend(self, "green", chunked)
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        response = await fetch(self, proxy.port, b"GET", b"/chunked")
        self.assertEqual(response.framing, "chunked")
        self.assertEqual(response.values(b"content-length"), [])
        self.assertEqual(response.content, b"".join(pieces))
        old = await fetch(self, proxy.port, b"GET", b"/chunked", version=b"HTTP/1.0")
        self.assertEqual(old.framing, "close")
        self.assertEqual(old.content, b"".join(pieces))

    async def test_chunkedUploadReachesBackendIntact(self) -> None:
        """
        A chunked upload of unknown length, sent in irregular pieces over
        time, reaches the backend byte for byte (chunk-framed).
        """
        green, greenURL = startBackend(self, "green", echo("green"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        pending = client.expect()
        client.sendRaw(
            b"POST /chunked-upload HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\nContent-Type: application/x-test\r\n\r\n"
        )
        source = PatternSource(700_000)
        sizes = [1, 10, 4096, 65536, 100_000, 250_000, 3]
        sent = 0

        def received(count: int) -> Callable[[], bool]:
            return lambda: (
                bool(green.requests) and green.requests[0].body.length == count
            )

        for size in sizes:
            data = source.read(size)
            client.sendRaw(b"%x\r\n%s\r\n" % (len(data), data))
            sent += len(data)
            # Each piece reaches the backend before the next is sent.
            await withTimeout(green.when(received(sent)), f"{sent} bytes at GREEN")
        rest = []
        while not source.done:
            rest.append(source.read(MIB))
        data = b"".join(rest)
        client.sendRaw(
            b"%X;ext=1\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (len(data), data)
        )
        response = await pending
        echoed = response.json()
        self.assertEqual(echoed["framing"], "chunked")
        self.assertEqual(echoed["length"], 700_000)
        self.assertEqual(echoed["sha256"], source.sha256)
        headerNames = [name.lower() for name, _ in echoed["headers"]]
        self.assertNotIn("content-length", headerNames)
        self.assertIn("content-type", headerNames)

    async def test_largeUpload(self) -> None:
        """
        A 50 MB upload with a C{Content-Length} arrives intact.
        """
        size = 50 * 1000 * 1000
        _green, greenURL = startBackend(self, "green", echo("green"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        pending = client.expect()
        client.sendRaw(
            b"PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (size,)
        )
        source = PatternSource(size)
        SourceProducer(client.transport, source, 256 * 1024).start()
        response = await pending
        echoed = response.json()
        self.assertEqual(echoed["length"], size)
        self.assertEqual(echoed["sha256"], source.sha256)
        self.assertEqual(echoed["framing"], "length")

    async def test_largeDownload(self) -> None:
        """
        A 50 MB download arrives intact.
        """
        size = 50 * 1000 * 1000
        stats = DownloadStats()
        _green, greenURL = startBackend(self, "green", generated(size, stats=stats))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        response = await fetch(self, proxy.port, b"GET", b"/big", keep=0)
        self.assertEqual(response.values(b"content-length"), [b"%d" % (size,)])
        self.assertEqual(response.body.length, size)
        self.assertEqual(response.body.sha256, stats.sources[0].sha256)

    async def test_slowClientPausesBackend(self) -> None:
        """
        A client that stops reading makes the proxy stop reading from the
        backend: the backend's (pull-produced, 64 KiB) writes stall, and it
        never gets more than 8 MiB ahead of what the client has read.

        The client's receive buffer and the backend's send buffer are kept at
        128 KiB, so what is in flight is mostly what the proxy holds: its
        own buffers and its two sockets' kernel buffers (about 4 MB here).
        """
        size = 48 * MIB
        client: RawClient | None = None
        ahead = [0]

        def onWrite(written: int) -> None:
            read = client.bodyBytes if client is not None else 0
            ahead[0] = max(ahead[0], written - read)

        stats = DownloadStats()
        handler = generated(size, 64 * 1024, stats, onWrite, sendBuffer=128 * 1024)
        _green, greenURL = startBackend(self, "green", handler)
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        client.setReceiveBuffer(128 * 1024)
        paused: Deferred[None] = Deferred()

        def onData(response: RawResponse, data: bytes) -> None:
            assert client is not None
            if response.body.length >= MIB and not paused.called:
                client.pauseReading()
                paused.callback(None)

        client.onData = onData
        pending = client.expect(keep=0)
        client.sendRaw(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
        await withTimeout(paused, "first MiB")
        written = lambda: stats.producers[0].written  # noqa: E731
        writtenEarly = await stalled(written, "the backend's writes")
        writtenLate = await stalled(written, "the backend's writes, paused")
        readWhilePaused = client.bodyBytes
        client.resumeReading()
        response = await pending
        self.assertEqual(
            writtenEarly, writtenLate, "the backend kept writing while paused"
        )
        self.assertLess(writtenLate, size)
        self.assertLess(writtenLate - readWhilePaused, 8 * MIB)
        self.assertLess(ahead[0], 8 * MIB, f"backend got {ahead[0]} bytes ahead")
        self.assertEqual(response.body.length, size)
        self.assertEqual(response.body.sha256, stats.sources[0].sha256)

    async def test_slowBackendPausesUpload(self) -> None:
        """
        A backend that stops reading an upload makes the proxy stop reading
        from the client: the client's (pull-produced) writes stall, never
        more than 8 MiB ahead of what the backend has read, and the body
        arrives intact once the backend reads again.
        """
        size = 48 * MIB
        backendPaused: Deferred[None] = Deferred()

        def stall(request: ReceivedRequest, conn: BackendConnection) -> None:
            setBuffer(conn.transport, socket.SO_RCVBUF, 128 * 1024)
            conn.transport.pauseProducing()  # type: ignore[union-attr]
            backendPaused.callback(None)

        green, greenURL = startBackend(self, "green", echo("green"), onHead=stall)
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        setBuffer(client.transport, socket.SO_SNDBUF, 128 * 1024)
        pending = client.expect()
        client.sendRaw(
            b"PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (size,)
        )
        source = PatternSource(size)
        producer = SourceProducer(client.transport, source, 64 * 1024)
        producer.start()
        await withTimeout(backendPaused, "upload reached the backend")
        sentEarly = await stalled(lambda: producer.written, "the client's writes")
        sentLate = await stalled(
            lambda: producer.written, "the client's writes, paused"
        )
        conn = green.connections[0]
        readByBackend = conn.bytesReceived
        conn.transport.resumeProducing()  # type: ignore[union-attr]
        response = await pending
        self.assertEqual(sentEarly, sentLate, "the client kept sending while paused")
        self.assertLess(sentLate, size)
        self.assertLess(sentLate - readByBackend, 8 * MIB)
        echoed = response.json()
        self.assertEqual((echoed["length"], echoed["sha256"]), (size, source.sha256))


class ForwardingTests(IntegrationTestCase):
    """
    What reaches the backend, and what comes back, is what should.
    """

    async def setUpProxy(self, *extra: str) -> None:
        """
        Start echo backends and the proxy.
        """
        self.green, greenURL = startBackend(self, "green", echo("green"))
        self.blue, blueURL = startBackend(self, "blue", echo("blue"))
        self.greenPort = int(greenURL.rsplit(":", 1)[1])
        self.proxy = startProxy(self, greenURL, blueURL, *extra)

    async def test_methods(self) -> None:
        """
        Standard, WebDAV-ish and custom methods are forwarded as sent, with
        their bodies.
        """
        await self.setUpProxy()
        client = await connectRaw(self, self.proxy.port)
        for method in [b"GET", b"DELETE", b"OPTIONS", b"PURGE"]:
            response = await client.request(method, b"/m")
            self.assertEqual(response.code, 200, method)
            self.assertEqual(response.json()["method"], method.decode())
            self.assertEqual(response.json()["length"], 0)
        for method in [b"POST", b"PUT", b"PATCH", b"PROPFIND"]:
            response = await client.request(method, b"/m", body=b"payload")
            self.assertEqual(response.json()["method"], method.decode())
            self.assertEqual(response.json()["length"], 7)
        head = await client.request(b"HEAD", b"/m")
        self.assertEqual(head.values(b"x-echo-method"), [b"HEAD"])
        self.assertEqual(head.body.length, 0)
        self.assertEqual(
            [r.method for r in self.green.requests],
            [
                b"GET",
                b"DELETE",
                b"OPTIONS",
                b"PURGE",
                b"POST",
                b"PUT",
                b"PATCH",
                b"PROPFIND",
                b"HEAD",
            ],
        )

    async def test_rawTargetUnchanged(self) -> None:
        """
        Paths and queries arrive byte-identical: escapes, C{+}, empty
        segments, dot segments, repeated query names.
        """
        await self.setUpProxy()
        client = await connectRaw(self, self.proxy.port)
        targets = [
            b"/p/a+b%2Fc?q=1&x=%20",
            b"//double//slash",
            b"/trailing/",
            b"/no-trailing",
            b"/%7Euser/./../x;param?a=b&a=c",
            b"/q?",
            b"/%E2%82%AC?v=%e2%82%ac&empty=&=x",
            b"/",
        ]
        for target in targets:
            response = await client.request(b"GET", target)
            self.assertEqual(response.json()["target"], target.decode())
        self.assertEqual([r.target for r in self.green.requests], targets)

    async def test_repeatedHeadersKeptInOrder(self) -> None:
        """
        Repeated request headers all arrive, in the order sent.
        """
        await self.setUpProxy()
        await fetch(
            self,
            self.proxy.port,
            b"GET",
            b"/",
            [
                (b"Cookie", b"a=1"),
                (b"X-Multi", b"one"),
                (b"Cookie", b"b=2"),
                (b"X-Multi", b"two"),
                (b"X-Multi", b"three, four"),
            ],
        )
        request = self.green.requests[0]
        self.assertEqual(request.values(b"cookie"), [b"a=1", b"b=2"])
        self.assertEqual(request.values(b"x-multi"), [b"one", b"two", b"three, four"])

    async def test_hopByHopRequestHeadersStripped(self) -> None:
        """
        C{Connection}, the headers it names, and the other hop-by-hop headers
        (C{Keep-Alive}, C{TE}, C{Trailer}, C{Upgrade}, C{Proxy-*}) are not
        forwarded; end-to-end headers are.
        """
        await self.setUpProxy()
        response = await fetch(
            self,
            self.proxy.port,
            b"GET",
            b"/",
            [
                (b"Connection", b"keep-alive, X-Secret"),
                (b"Connection", b"X-Other-Secret"),
                (b"X-Secret", b"s"),
                (b"X-Other-Secret", b"s2"),
                (b"Keep-Alive", b"timeout=300"),
                (b"TE", b"trailers"),
                (b"Trailer", b"X-Sum"),
                (b"Upgrade", b"websocket"),
                (b"Proxy-Authorization", b"Basic Zm9vOmJhcg=="),
                (b"Proxy-Foo", b"bar"),
                (b"Proxy-Connection", b"keep-alive"),
                (b"X-Kept", b"yes"),
                (b"Authorization", b"Bearer t"),
            ],
        )
        self.assertEqual(response.code, 200)
        request = self.green.requests[0]
        sent = set(names(request.headers))
        for hop in [
            b"connection",
            b"x-secret",
            b"x-other-secret",
            b"keep-alive",
            b"te",
            b"trailer",
            b"upgrade",
            b"proxy-authorization",
            b"proxy-foo",
            b"proxy-connection",
        ]:
            self.assertNotIn(hop, sent, f"{hop!r} was forwarded")
        self.assertEqual(request.values(b"x-kept"), [b"yes"])
        self.assertEqual(request.values(b"authorization"), [b"Bearer t"])

    async def test_forwardedHeaders(self) -> None:
        """
        C{X-Forwarded-For} gets the client's address appended to the values
        it had; C{X-Forwarded-Proto} is C{http}; C{X-Forwarded-Host} is the
        client's C{Host} (client-sent values of those two are replaced); the
        C{Host} header is kept by default.
        """
        await self.setUpProxy()
        await fetch(
            self,
            self.proxy.port,
            b"GET",
            b"/",
            [
                (b"X-Forwarded-For", b"203.0.113.9"),
                (b"X-Forwarded-For", b"198.51.100.7, 10.0.0.1"),
                (b"X-Forwarded-Proto", b"https"),
                (b"X-Forwarded-Host", b"spoofed.example"),
            ],
            host=b"app.example:8080",
        )
        request = self.green.requests[0]
        self.assertEqual(
            request.values(b"x-forwarded-for"),
            [b"203.0.113.9, 198.51.100.7, 10.0.0.1, 127.0.0.1"],
        )
        self.assertEqual(request.values(b"x-forwarded-proto"), [b"http"])
        self.assertEqual(request.values(b"x-forwarded-host"), [b"app.example:8080"])
        self.assertEqual(request.values(b"host"), [b"app.example:8080"])

    async def test_forwardedForWithoutPriorValue(self) -> None:
        """
        Without an incoming C{X-Forwarded-For}, the header is the client's
        address alone.
        """
        await self.setUpProxy()
        await fetch(self, self.proxy.port, b"GET", b"/")
        request = self.green.requests[0]
        self.assertEqual(request.values(b"x-forwarded-for"), [b"127.0.0.1"])
        self.assertEqual(request.values(b"host"), [b"proxy.test"])

    async def test_hostHeaderTarget(self) -> None:
        """
        With C{--upstream-host-header target} the backend gets its own
        C{host:port} as C{Host}; C{X-Forwarded-Host} keeps the client's.
        """
        await self.setUpProxy("--upstream-host-header", "target")
        await fetch(self, self.proxy.port, b"GET", b"/", host=b"app.example")
        request = self.green.requests[0]
        self.assertEqual(request.values(b"host"), [b"127.0.0.1:%d" % (self.greenPort,)])
        self.assertEqual(request.values(b"x-forwarded-host"), [b"app.example"])

    async def test_http10WithoutHost(self) -> None:
        """
        An HTTP/1.0 request without C{Host} is forwarded as HTTP/1.1 with the
        target's C{Host} and no C{X-Forwarded-Host}.
        """
        await self.setUpProxy()
        response = await fetch(
            self, self.proxy.port, b"GET", b"/old", host=None, version=b"HTTP/1.0"
        )
        self.assertEqual(response.code, 200)
        request = self.green.requests[0]
        self.assertEqual(request.version, b"HTTP/1.1")
        self.assertEqual(request.values(b"host"), [b"127.0.0.1:%d" % (self.greenPort,)])
        self.assertEqual(request.values(b"x-forwarded-host"), [])

    async def test_responseStatusAndHeaders(self) -> None:
        """
        The status code and phrase pass through, repeated C{Set-Cookie}
        headers are kept in order, the backend's C{Date} and C{Server} are
        kept, and hop-by-hop response headers are stripped.
        """
        head = (
            b"HTTP/1.1 299 Quite Custom Phrase\r\n"
            b"Set-Cookie: a=1; Path=/\r\n"
            b"Set-Cookie: b=2; HttpOnly\r\n"
            b"Date: Tue, 15 Nov 1994 08:12:31 GMT\r\n"
            b"Server: test-backend/1\r\n"
            b"Connection: X-Hop\r\n"
            b"X-Hop: secret\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"Proxy-Authenticate: Basic\r\n"
            b"Proxy-Foo: bar\r\n"
            b"Upgrade: h2c\r\n"
            b"Trailer: X-Sum\r\n"
            b"X-Kept: yes\r\n"
            b"Content-Length: 2\r\n\r\nok"
        )
        _green, greenURL = startBackend(self, "green", rawThen(head, "keep"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        response = await fetch(self, proxy.port, b"GET", b"/")
        self.assertEqual(
            (response.code, response.phrase), (299, b"Quite Custom Phrase")
        )
        self.assertEqual(
            response.values(b"set-cookie"), [b"a=1; Path=/", b"b=2; HttpOnly"]
        )
        self.assertEqual(response.values(b"date"), [b"Tue, 15 Nov 1994 08:12:31 GMT"])
        self.assertEqual(response.values(b"server"), [b"test-backend/1"])
        self.assertEqual(response.values(b"x-kept"), [b"yes"])
        received = set(names(response.headers))
        for hop in [
            b"x-hop",
            b"keep-alive",
            b"proxy-authenticate",
            b"proxy-foo",
            b"upgrade",
            b"trailer",
        ]:
            self.assertNotIn(hop, received, f"{hop!r} was passed back")
        self.assertNotIn(b"x-hop", b" ".join(response.values(b"connection")).lower())
        self.assertEqual(response.content, b"ok")

    async def test_errorStatusesPassThrough(self) -> None:
        """
        Backend error statuses reach the client unchanged (the proxy does not
        replace them with its own).
        """

        def fail(request: ReceivedRequest, conn: BackendConnection) -> None:
            code = int(request.target.strip(b"/"))
            conn.respond(code, b"Backend Says No", body=b"backend body %d" % code)

        _green, greenURL = startBackend(self, "green", fail)
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        for code in [400, 404, 500, 502, 503, 504]:
            response = await client.request(b"GET", b"/%d" % (code,))
            self.assertEqual(
                (response.code, response.phrase), (code, b"Backend Says No")
            )
            self.assertEqual(response.content, b"backend body %d" % (code,))

    async def test_headResponse(self) -> None:
        """
        A C{HEAD} response keeps its C{Content-Length}, has no body, and the
        client connection stays usable.
        """
        await self.setUpProxy()
        client = await connectRaw(self, self.proxy.port)
        head = await client.request(b"HEAD", b"/resource")
        self.assertEqual(head.code, 200)
        self.assertEqual(head.body.length, 0)
        length = int(head.values(b"content-length")[0])
        self.assertGreater(length, 0)
        get = await client.request(b"GET", b"/resource")
        self.assertEqual(get.json()["method"], "GET")
        self.assertEqual(self.green.made, 1)

    async def test_bodilessStatuses(self) -> None:
        """
        C{204} and C{304} responses carry no body (even with a
        C{Content-Length} on the 304) and keep the connections usable.
        """

        def noContent(request: ReceivedRequest, conn: BackendConnection) -> None:
            conn.write(b"HTTP/1.1 204 No Content\r\nX-Id: 1\r\n\r\n")
            conn.finish()

        def notModified(request: ReceivedRequest, conn: BackendConnection) -> None:
            conn.write(
                b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 50\r\n\r\n'
            )
            conn.finish()

        handler = route({b"/204": noContent, b"/304": notModified}, echo("green"))
        green, greenURL = startBackend(self, "green", handler)
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        empty = await client.request(b"DELETE", b"/204")
        self.assertEqual((empty.code, empty.body.length), (204, 0))
        self.assertEqual(empty.values(b"x-id"), [b"1"])
        self.assertEqual(empty.values(b"transfer-encoding"), [])
        same = await client.request(b"GET", b"/304", [(b"If-None-Match", b'"v1"')])
        self.assertEqual((same.code, same.body.length), (304, 0))
        self.assertEqual(same.values(b"etag"), [b'"v1"'])
        after = await withTimeout(client.request(b"GET", b"/after"), "after")
        self.assertEqual(after.json()["target"], "/after")
        self.assertEqual(green.made, 1, "the upstream connection was reused")


class ErrorTests(IntegrationTestCase):
    """
    Upstream failures become short plain-text 502/504 responses, or an
    aborted client connection once a response has started.
    """

    def assertIncomplete(self, error: IncompleteResponseError, sent: bytes) -> None:
        """
        Assert the client connection closed without a complete response: either
        before any response (the proxy aborted with the head still buffered)
        or in the middle of the body, after no more than the C{sent} bytes.
        """
        partial = error.response
        if partial is not None:
            self.assertEqual(partial.code, 200)
            self.assertFalse(partial.complete)
            self.assertTrue(sent.startswith(partial.content), partial.content)

    async def test_refused(self) -> None:
        """
        A backend port nobody listens on: 502 naming the environment and
        the refusal.
        """
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, closedPortURL(), blueURL)
        response = await fetch(self, proxy.port, b"GET", b"/")
        self.assertPlainError(response, 502, "refused")

    async def test_closedWithoutResponse(self) -> None:
        """
        A backend that accepts the request then closes: 502.
        """
        _green, greenURL = startBackend(self, "green", closeWithoutResponse)
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        response = await fetch(self, proxy.port, b"GET", b"/")
        self.assertPlainError(response, 502, "closed the connection")
        self.assertEqual(proxy.pools["green"].busy, 0)

    async def test_resetWithoutResponse(self) -> None:
        """
        A backend that resets the connection (RST) instead of answering: 502.
        """
        _green, greenURL = startBackend(self, "green", resetWithoutResponse)
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        response = await fetch(self, proxy.port, b"GET", b"/")
        self.assertPlainError(response, 502)
        self.assertEqual(proxy.pools["green"].busy, 0)

    async def test_garbage(self) -> None:
        """
        A backend that answers with something that is not HTTP: 502 saying
        the response was invalid.
        """
        green, greenURL = startBackend(
            self, "green", rawThen(b"NOT HTTP\r\n\r\n", "keep")
        )
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        response = await fetch(self, proxy.port, b"GET", b"/")
        self.assertPlainError(response, 502, "invalid response")
        await withTimeout(green.when(lambda: green.open == 0), "dropped")

    async def test_responseTimeout(self) -> None:
        """
        A backend that never answers: 504 after C{--response-timeout},
        mentioning the response timeout; the upstream connection is dropped.
        """
        green, greenURL = startBackend(self, "green", silent)
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL, "--response-timeout", "0.5")
        started = time.monotonic()
        response = await fetch(self, proxy.port, b"GET", b"/")
        elapsed = time.monotonic() - started
        self.assertPlainError(response, 504, "response timeout")
        self.assertGreater(elapsed, 0.45)
        self.assertLess(elapsed, PATIENCE)
        await withTimeout(green.when(lambda: green.open == 0), "dropped")
        self.assertEqual(proxy.pools["green"].busy, 0)

    async def test_connectTimeout(self) -> None:
        """
        A backend whose accept queue is full never completes the TCP
        handshake: 504 after C{--connect-timeout} naming the connect timeout.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler = socket.socket()
        self.addCleanup(filler.close)
        filler.settimeout(2)
        filler.connect(("127.0.0.1", port))
        probe = socket.socket()
        self.addCleanup(probe.close)
        probe.settimeout(0.3)
        try:
            probe.connect(("127.0.0.1", port))
        except TimeoutError:
            pass
        else:
            self.skipTest("the kernel accepted a connection on a full backlog")
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(
            self, f"http://127.0.0.1:{port}", blueURL, "--connect-timeout", "0.5"
        )
        started = time.monotonic()
        response = await fetch(self, proxy.port, b"GET", b"/")
        elapsed = time.monotonic() - started
        self.assertPlainError(response, 504, "connect timeout")
        self.assertGreater(elapsed, 0.45)
        self.assertLess(elapsed, PATIENCE)
        self.assertEqual(proxy.pools["green"].busy, 0)

    async def test_truncatedBodyAbortsClient(self) -> None:
        """
        A body cut short by the backend (C{Content-Length: 1000}, 10 bytes,
        close) is not passed off as complete: the client connection is
        aborted mid-body.
        """
        truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"
        _green, greenURL = startBackend(self, "green", rawThen(truncated, "close"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        with self.assertRaises(IncompleteResponseError) as caught:
            await withTimeout(client.request(b"GET", b"/"), "abort")
        self.assertIncomplete(caught.exception, b"0123456789")
        self.assertTrue(client.closed)

    async def test_stalledBodyAbortsClient(self) -> None:
        """
        A body that stops arriving (10 of 1000 bytes, then silence, the
        connection left open) is cut off after C{--response-timeout}: the
        client connection is aborted mid-body and the upstream connection
        dropped, instead of both being held forever.
        """
        stalled = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"
        green, greenURL = startBackend(self, "green", rawThen(stalled, "keep"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL, "--response-timeout", "0.5")
        client = await connectRaw(self, proxy.port)
        started = time.monotonic()
        with self.assertRaises(IncompleteResponseError) as caught:
            await withTimeout(client.request(b"GET", b"/"), "abort")
        self.assertGreater(time.monotonic() - started, 0.45)
        self.assertIncomplete(caught.exception, b"0123456789")
        self.assertTrue(client.closed)
        await withTimeout(green.when(lambda: green.open == 0), "dropped")
        self.assertEqual(proxy.pools["green"].busy, 0)

    async def test_truncatedChunkedBodyAbortsClient(self) -> None:
        """
        A chunked body whose connection closes before the last chunk makes
        the proxy abort the client connection too.
        """
        truncated = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        _green, greenURL = startBackend(self, "green", rawThen(truncated, "close"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        with self.assertRaises(IncompleteResponseError) as caught:
            await withTimeout(client.request(b"GET", b"/"), "abort")
        self.assertIncomplete(caught.exception, b"hello")
        self.assertTrue(client.closed)

    async def test_staleKeepAliveConnectionRetried(self) -> None:
        """
        A backend that closes a kept-alive connection when the next request
        arrives on it: an idempotent request is resent on a new connection
        and succeeds; a POST is not resent and gets a 502.
        """
        green, greenURL = startBackend(self, "green", closeAfterFirst(echo("green")))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        first = await client.request(b"GET", b"/1")
        self.assertEqual(first.code, 200)
        second = await client.request(b"GET", b"/2")
        self.assertEqual(second.code, 200, second.text)
        self.assertEqual(second.json()["target"], "/2")
        self.assertEqual(green.made, 2)
        post = await client.request(b"POST", b"/3", body=b"once")
        self.assertPlainError(post, 502, "closed the connection")
        self.assertEqual(green.made, 2, "the POST was not resent")


class ClientDisconnectTests(IntegrationTestCase):
    """
    A client that goes away cancels its upstream request.
    """

    async def startSlow(self, handler: Any) -> tuple[BackendFactory, Any, str]:
        """
        Start a GREEN backend with C{handler}, a BLUE echo backend and the
        proxy with a file access log.

        The response timeout is longer than the tests wait (L{PATIENCE}), so
        an upstream connection that closes within that wait was aborted for
        the client's sake, not timed out.
        """
        green, greenURL = startBackend(self, "green", handler)
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        log = self.mktemp()
        proxy = startProxy(
            self,
            greenURL,
            blueURL,
            "--access-log",
            log,
            "--response-timeout",
            f"{2 * PATIENCE:g}",
        )
        return green, proxy, log

    async def test_disconnectWhileWaiting(self) -> None:
        """
        The client closes its connection while the backend has not answered:
        the backend's connection is aborted within a second, nothing is
        logged as an error, the pool has no busy connection left and the
        access log records status 499.
        """
        green, proxy, log = await self.startSlow(silent)
        client = await connectRaw(self, proxy.port)
        client.sendRaw(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await withTimeout(green.when(lambda: bool(green.requests)), "request")
        client.transport.loseConnection()  # type: ignore[union-attr]
        await withTimeout(green.when(lambda: green.open == 0), "upstream aborted")
        self.assertEqual(proxy.pools["green"].busy, 0)
        self.assertEqual(proxy.pools["green"].idle, 0)
        await proxy.stop()  # flushes the access log
        with open(log) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn('"GET /slow HTTP/1.1" 499 0 green', lines[0])

    async def test_disconnectMidResponse(self) -> None:
        """
        The client drops its connection while a slow response streams: the
        backend's connection is aborted and the pool is left clean.
        """
        green, proxy, _log = await self.startSlow(
            # A stream longer than the wait: only an abort ends it in time.
            route({b"/stream": named("green", int(40 * PATIENCE), 0.05)}, echo("green"))
        )
        client = await connectRaw(self, proxy.port)
        gotData: Deferred[None] = Deferred()
        client.onData = lambda r, d: None if gotData.called else gotData.callback(None)
        client.request(b"GET", b"/stream")
        await withTimeout(gotData, "first data")
        client.abort()
        await withTimeout(green.when(lambda: green.open == 0), "upstream aborted")
        self.assertEqual(proxy.pools["green"].busy, 0)
        self.assertEqual(proxy.pools["green"].idle, 0)
        # The proxy still works afterwards.
        response = await fetch(self, proxy.port, b"GET", b"/")
        self.assertEqual(response.json()["env"], "green")
        self.assertEqual(green.made, 2)

    async def test_disconnectMidUpload(self) -> None:
        """
        The client drops its connection in the middle of a large upload: the
        backend's connection is aborted and the pool is left clean.
        """
        green, proxy, _log = await self.startSlow(echo("green"))
        client = await connectRaw(self, proxy.port)
        client.sendRaw(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
        )
        client.sendRaw(b"x" * 300_000)
        await withTimeout(
            green.when(
                lambda: (
                    bool(green.requests) and green.requests[0].body.length == 300_000
                )
            ),
            "upload started",
        )
        client.abort()
        await withTimeout(green.when(lambda: green.open == 0), "upstream aborted")
        self.assertEqual(proxy.pools["green"].busy, 0)
        self.assertEqual(green.requests[0].body.length, 300_000)
        self.assertFalse(green.requests[0].complete)


class AccessLogTests(IntegrationTestCase):
    """
    C{--access-log}: one line per request, or nothing.
    """

    async def test_fileAccessLog(self) -> None:
        """
        With C{--access-log FILE} each request adds one line with the client,
        method, path, protocol, status, bytes, environment and duration.
        """

        def notFound(request: ReceivedRequest, conn: BackendConnection) -> None:
            conn.respond(404, b"Not Found", body=b"no such thing\n")

        _green, greenURL = startBackend(
            self, "green", route({b"/missing": notFound}, echo("green"))
        )
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        log = self.mktemp()
        proxy = startProxy(self, greenURL, blueURL, "--access-log", log)
        client = await connectRaw(self, proxy.port)
        first = await client.request(b"GET", b"/a?x=1")
        second = await client.request(b"POST", b"/b", body=b"12345")
        third = await client.request(b"GET", b"/missing")
        proxy.controller.switch("blue", "test")
        fourth = await client.request(b"DELETE", b"/c")
        await proxy.stop()  # flushes the access log
        with open(log) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 4, lines)
        expected = [
            ("GET", "/a?x=1", 200, first, "green"),
            ("POST", "/b", 200, second, "green"),
            ("GET", "/missing", 404, third, "green"),
            ("DELETE", "/c", 200, fourth, "blue"),
        ]
        pattern = re.compile(
            r'(?:^|\s)127\.0\.0\.1 "(\S+) (\S+) HTTP/1\.1" (\d{3}) (\d+) '
            r"(green|blue) (\d+\.\d)ms$"
        )
        for line, (method, path, status, response, env) in zip(
            lines, expected, strict=True
        ):
            match = pattern.search(line)
            assert match is not None, line
            self.assertEqual(
                match.group(1, 2, 3, 4, 5),
                (method, path, str(status), str(response.body.length), env),
            )
            self.assertLess(float(match.group(6)), PATIENCE * 1000)

    async def test_noAccessLog(self) -> None:
        """
        With C{--access-log none} no access event is logged anywhere.
        """
        green, greenURL = startBackend(self, "green", echo("green"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL, "--access-log", "none")
        self.assertIsNone(proxy.resource.accessLog)
        for _ in range(3):
            await fetch(self, proxy.port, b"GET", b"/")
        self.assertEqual(self.logs.namespace("bluegreen.access"), [])
        self.assertEqual(len(green.requests), 3)

    async def test_serviceLogAccessLog(self) -> None:
        """
        With C{--access-log -} each request is one event in the service log
        (namespace C{bluegreen.access}).
        """
        _green, greenURL = startBackend(self, "green", echo("green"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL, "--access-log", "-")
        await fetch(self, proxy.port, b"GET", b"/x")
        await fetch(self, proxy.port, b"PUT", b"/y", body=b"z")
        events = self.logs.namespace("bluegreen.access")
        self.assertEqual(
            [(e["method"], e["path"], e["status"], e["environment"]) for e in events],
            [("GET", "/x", 200, "green"), ("PUT", "/y", 200, "green")],
        )
        self.assertIn('"GET /x HTTP/1.1" 200', formatEvent(events[0]))


class TLSUpstreamTests(IntegrationTestCase):
    """
    C{https://} environments are verified against C{--upstream-ca}.
    """

    def setUp(self) -> None:
        """
        Make a CA, a certificate for localhost/127.0.0.1 and one for another
        name.
        """
        super().setUp()
        self.certs = makeCertificates(
            self.mktemp(),
            {"good": ["localhost", "127.0.0.1"], "wrong": ["wrong.example"]},
        )

    def startTLSBackend(self, certificate: str) -> tuple[BackendFactory, int]:
        """
        Run an echo backend over TLS with the named certificate.
        """
        factory = BackendFactory("green", echo("green"))
        port = listenTLS(self, factory, self.certs.serverOptions(certificate))
        return factory, port

    async def test_trustedUpstream(self) -> None:
        """
        With C{--upstream-ca} the TLS backend is verified and used; the
        connection is reused.
        """
        green, port = self.startTLSBackend("good")
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(
            self,
            f"https://localhost:{port}",
            blueURL,
            "--upstream-ca",
            self.certs.caPath,
        )
        client = await connectRaw(self, proxy.port)
        for _ in range(2):
            response = await client.request(b"GET", b"/secure")
            self.assertEqual(response.code, 200, response.text)
            self.assertEqual(response.json()["env"], "green")
        request = green.requests[0]
        self.assertEqual(request.values(b"x-forwarded-proto"), [b"http"])
        self.assertEqual(green.made, 1)

    async def test_untrustedUpstream(self) -> None:
        """
        Without C{--upstream-ca} the test CA is not trusted: 502 with a TLS
        error message.
        """
        green, port = self.startTLSBackend("good")
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, f"https://localhost:{port}", blueURL)
        response = await fetch(self, proxy.port, b"GET", b"/")
        self.assertPlainError(response, 502, "TLS")
        self.assertIn("certificate verify failed", response.text)
        self.assertEqual(green.requests, [])

    async def test_wrongHostName(self) -> None:
        """
        A certificate from the trusted CA but for another host name: 502 with
        a TLS error message.
        """
        green, port = self.startTLSBackend("wrong")
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(
            self,
            f"https://localhost:{port}",
            blueURL,
            "--upstream-ca",
            self.certs.caPath,
        )
        response = await fetch(self, proxy.port, b"GET", b"/")
        self.assertPlainError(response, 502, "TLS")
        self.assertIn("localhost", response.text)
        self.assertEqual(green.requests, [])


class ProtocolEdgeTests(IntegrationTestCase):
    """
    HTTP/1.1 details on either side of the proxy.
    """

    async def test_expectContinue(self) -> None:
        """
        A client that sends C{Expect: 100-continue} gets C{100 Continue},
        then sends its body, which reaches the backend.
        """
        green, greenURL = startBackend(self, "green", echo("green"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        body = b"x" * 5000
        continued: Deferred[None] = Deferred()
        client.onInterim = lambda response: continued.callback(None)
        pending = client.expect()
        client.sendRaw(
            b"POST /expect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 5000\r\n\r\n"
        )
        await withTimeout(continued, "100 Continue")
        self.assertEqual([r.code for r in client.interim], [100])
        client.sendRaw(body)
        response = await pending
        self.assertEqual(response.code, 200)
        self.assertEqual(response.json()["length"], 5000)
        self.assertEqual(len(green.requests), 1)

    async def test_earlyResponseDuringUpload(self) -> None:
        """
        A backend that answers C{413} and closes as soon as it sees the
        request head: the client gets the 413 while still uploading, and
        once it has sent its body the client connection is still usable.
        """

        def refuse(request: ReceivedRequest, conn: BackendConnection) -> None:
            if request.method == b"POST":
                conn.respond(
                    413,
                    b"Content Too Large",
                    [(b"Connection", b"close")],
                    b"too large\n",
                )
                conn.transport.loseConnection()  # type: ignore[union-attr]

        _green, greenURL = startBackend(self, "green", echo("green"), onHead=refuse)
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        pending = client.expect()
        client.sendRaw(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n"
        )
        client.sendRaw(b"y" * 100_000)
        response = await withTimeout(pending, "early 413")
        self.assertEqual((response.code, response.content), (413, b"too large\n"))
        client.sendRaw(b"y" * 1_900_000)
        after = await withTimeout(client.request(b"GET", b"/after"), "next")
        self.assertEqual(after.json()["target"], "/after")
        self.assertEqual(proxy.pools["green"].busy, 0)

    async def test_pipelinedRequests(self) -> None:
        """
        Three requests written at once on one connection are answered in
        order.
        """
        green, greenURL = startBackend(self, "green", echo("green"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        pending = [client.expect() for _ in range(3)]
        client.sendRaw(
            b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        responses = [await withTimeout(d, "pipelined") for d in pending]
        self.assertEqual(
            [(r.json()["method"], r.json()["target"]) for r in responses],
            [("GET", "/1"), ("POST", "/2"), ("GET", "/3")],
        )
        self.assertEqual(responses[1].json()["length"], 3)
        self.assertEqual(green.made, 1)

    async def test_clientConnectionClose(self) -> None:
        """
        C{Connection: close} from the client closes the client connection
        after the response, but not the pooled upstream connection.
        """
        green, greenURL = startBackend(self, "green", echo("green"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        response = await client.request(b"GET", b"/bye", [(b"Connection", b"close")])
        self.assertEqual(response.code, 200)
        await withTimeout(client.lost, "client connection closed")
        self.assertEqual(green.open, 1)
        await fetch(self, proxy.port, b"GET", b"/again")
        self.assertEqual(green.made, 1)

    async def test_backendConnectionClose(self) -> None:
        """
        A response with C{Connection: close} is passed on, the upstream
        connection is not reused, and the client connection stays open.
        """

        def closing(request: ReceivedRequest, conn: BackendConnection) -> None:
            conn.respond(headers=[(b"Connection", b"close")], body=b"bye")
            conn.transport.loseConnection()  # type: ignore[union-attr]

        green, greenURL = startBackend(self, "green", closing)
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        for _ in range(3):
            response = await client.request(b"GET", b"/")
            self.assertEqual(response.content, b"bye")
        self.assertFalse(client.closed)
        self.assertEqual(green.made, 3)
        await withTimeout(green.when(lambda: green.open == 0), "closed")
        self.assertEqual(proxy.pools["green"].idle, 0)

    async def test_http10ResponseReadUntilClose(self) -> None:
        """
        An HTTP/1.0 backend response without a length (body ended by close)
        reaches the client complete.
        """
        body = b"old-style body " * 1000
        green, greenURL = startBackend(
            self, "green", rawThen(b"HTTP/1.0 200 OK\r\nX-Old: 1\r\n\r\n" + body)
        )
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        response = await client.request(b"GET", b"/old")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.content, body)
        self.assertEqual(response.values(b"x-old"), [b"1"])
        second = await client.request(b"GET", b"/old")
        self.assertEqual(second.content, body)
        self.assertEqual(green.made, 2)

    async def test_bodyReplayedOnRetry(self) -> None:
        """
        A small C{PUT} sent on a kept-alive connection the backend then
        closes is resent, with its whole body, on a new connection; a C{PUT}
        body too large to have been kept is not resent (502).
        """
        green, greenURL = startBackend(self, "green", closeAfterFirst(echo("green")))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        client = await connectRaw(self, proxy.port)
        await client.request(b"GET", b"/warm")
        small = PatternSource(10_000)
        smallBody = small.read(10_000)
        response = await client.request(b"PUT", b"/small", body=smallBody)
        self.assertEqual(response.code, 200, response.text)
        self.assertEqual(response.json()["sha256"], small.sha256)
        self.assertEqual(green.made, 2)
        big = b"B" * 200_000
        response = await client.request(b"PUT", b"/big", body=big)
        self.assertPlainError(response, 502, "closed the connection")
        self.assertEqual(green.made, 2)

    async def test_dateAddedWhenMissing(self) -> None:
        """
        A backend response without C{Date} gets exactly one from the proxy.
        """
        green, greenURL = startBackend(
            self,
            "green",
            rawThen(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "keep"),
        )
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        response = await fetch(self, proxy.port, b"GET", b"/")
        dates = response.values(b"date")
        self.assertEqual(len(dates), 1, dates)
        self.assertRegex(dates[0], rb"^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$")
        self.assertEqual(green.made, 1)

    async def test_headerBytesUnchanged(self) -> None:
        """
        Header values with non-ASCII bytes, tabs and odd case in names pass
        through unchanged (names keep the client's spelling).
        """
        green, greenURL = startBackend(self, "green", echo("green"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        await fetch(
            self,
            proxy.port,
            b"GET",
            b"/",
            [(b"X-Bytes", b"caf\xc3\xa9 \xff\x01"), (b"x-MiXeD", b"a\tb")],
        )
        request = green.requests[0]
        self.assertEqual(request.values(b"x-bytes"), [b"caf\xc3\xa9 \xff\x01"])
        self.assertEqual(request.values(b"x-mixed"), [b"a\tb"])

    async def test_ambiguousFramingRejected(self) -> None:
        """
        Requests with conflicting body framing (C{Content-Length} with
        chunked, or repeated lengths) are refused with 400 and never reach
        the backend, so the proxy cannot be used to smuggle requests.
        """
        green, greenURL = startBackend(self, "green", echo("green"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        for framing in [
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            b"Content-Length: 5\r\nContent-Length: 6\r\n",
        ]:
            client = await connectRaw(self, proxy.port)
            pending = client.expect()
            client.sendRaw(
                b"POST /x HTTP/1.1\r\nHost: x\r\n"
                + framing
                + b"\r\n5\r\nhello\r\n0\r\n\r\n"
            )
            response = await withTimeout(pending, "400")
            self.assertEqual(response.code, 400, framing)
        self.assertEqual(green.requests, [])


class QueueingTests(IntegrationTestCase):
    """
    Requests waiting for an upstream connection (pool full, or connecting)
    can be abandoned without leaking anything.
    """

    async def test_clientLeavesWhileQueued(self) -> None:
        """
        With C{--max-connections 1} and the connection busy, a second client
        that disconnects while waiting for the connection leaves no trace:
        the busy request completes and a third request is served on the
        same upstream connection.
        """
        green, greenURL = startBackend(self, "green", delayed(0.4, echo("green")))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL, "--max-connections", "1")
        first = await connectRaw(self, proxy.port)
        firstResponse = first.request(b"GET", b"/first")
        await withTimeout(green.when(lambda: bool(green.requests)), "first")
        second = await connectRaw(self, proxy.port)
        second.sendRaw(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        pool = proxy.pools["green"]
        await waitFor(lambda: pool.waiting == 1, "second request queued")
        second.abort()
        response = await withTimeout(firstResponse, "first response")
        self.assertEqual(response.json()["target"], "/first")
        third = await withTimeout(
            Deferred.fromCoroutine(fetch(self, proxy.port, b"GET", b"/third")),
            "third response",
        )
        self.assertEqual(third.json()["target"], "/third")
        self.assertEqual([r.target for r in green.requests], [b"/first", b"/third"])
        self.assertEqual(green.made, 1)
        self.assertEqual(proxy.pools["green"].busy, 0)

    async def test_responseTimeoutWhileQueued(self) -> None:
        """
        A request still waiting for a pooled connection when the response
        timeout expires gets a 504; the pool stays consistent.
        """
        # /second needs far longer than the timeout, whenever it gets the
        # connection; /first (and /third) far less.
        green, greenURL = startBackend(
            self,
            "green",
            route(
                {b"/second": delayed(3.0, echo("green"))}, delayed(0.2, echo("green"))
            ),
        )
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(
            self,
            greenURL,
            blueURL,
            "--max-connections",
            "1",
            "--response-timeout",
            "1.5",
        )
        first = await connectRaw(self, proxy.port)
        firstResponse = first.request(b"GET", b"/first")
        await withTimeout(green.when(lambda: bool(green.requests)), "first")
        second = await connectRaw(self, proxy.port)
        secondResponse = second.request(b"GET", b"/second")
        response = await withTimeout(firstResponse, "first response")
        self.assertEqual(response.code, 200)
        # /second got the connection at ~0.2 s and needs 3 s more: 504.
        late = await withTimeout(secondResponse, "second response")
        self.assertPlainError(late, 504, "response timeout")
        await withTimeout(green.when(lambda: green.open == 0), "aborted")
        self.assertEqual(proxy.pools["green"].busy, 0)
        third = await fetch(self, proxy.port, b"GET", b"/third")
        self.assertEqual(third.code, 200)

    async def test_clientLeavesWhileConnecting(self) -> None:
        """
        A client that disconnects while the proxy is still connecting to the
        backend (which never accepts) cancels the connection attempt: the
        pool counts nothing busy afterwards.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler = socket.socket()
        self.addCleanup(filler.close)
        filler.settimeout(2)
        filler.connect(("127.0.0.1", port))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(
            self, f"http://127.0.0.1:{port}", blueURL, "--connect-timeout", "5"
        )
        client = await connectRaw(self, proxy.port)
        client.sendRaw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        pool = proxy.pools["green"]
        await waitFor(lambda: pool.busy == 1, "connecting")
        self.assertEqual(proxy.pools["green"].busy, 1, "connecting")
        client.abort()
        await waitFor(lambda: pool.busy == 0, "connection attempt cancelled")
        self.assertEqual(proxy.pools["green"].busy, 0)

    async def test_requestDuringShutdown(self) -> None:
        """
        While the service drains a request in flight, a new request on an
        already open client connection gets a 503 saying bluegreen is
        shutting down.
        """
        green, greenURL = startBackend(self, "green", delayed(0.5, echo("green")))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        other = await connectRaw(self, proxy.port)
        client = await connectRaw(self, proxy.port)
        pending = client.request(b"GET", b"/draining")
        await withTimeout(green.when(lambda: bool(green.requests)), "request")
        stopped = proxy.stop()
        refused = await withTimeout(other.request(b"GET", b"/new"), "503")
        self.assertPlainError(refused, 503, "shutting down")
        response = await pending
        self.assertEqual(response.code, 200)
        await withTimeout(stopped, "stopService")


class FlowControlReuseTests(IntegrationTestCase):
    """
    An upstream connection that was paused for a slow client is not put
    back in the pool paused.
    """

    async def test_reusableAfterPauseInFinalRead(self) -> None:
        """
        The whole response (head and body, 65536 bytes, no C{Date}) arrives
        in one read; the client-side head the proxy writes is longer (it adds
        C{Date}), so writing it pushes the client's write buffer past 64 KiB
        and pauses the upstream connection in the very read that completes
        the response.  The next request reusing that connection must still
        be answered (not time out with a 504).
        """
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %05d\r\n\r\n"
        size = 65536 - len(head % (0,))

        def exact(request: ReceivedRequest, conn: BackendConnection) -> None:
            if request.target == b"/exact":
                conn.write(head % (size,) + b"e" * size)
                conn.finish()
            else:
                echo("green")(request, conn)

        green, greenURL = startBackend(self, "green", exact)
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL, "--response-timeout", "2")
        client = await connectRaw(self, proxy.port)
        first = await client.request(b"GET", b"/exact")
        self.assertEqual((first.code, first.body.length), (200, size))
        second = await client.request(b"GET", b"/next")
        self.assertEqual(second.code, 200, second.text)
        self.assertEqual(green.made, 1)

    async def test_reusableAfterDownloads(self) -> None:
        """
        Downloads of various sizes, each followed by a small request, over
        one upstream connection (C{--max-connections 1}): every small
        request is answered.
        """
        sizes = [155_004, 401_703, 682_032, 769_428, 1_733_418, 250_000, 999_999]
        sizes += [100_000 + 137_771 * i for i in range(13)]

        def handler(request: ReceivedRequest, conn: BackendConnection) -> None:
            if request.target.startswith(b"/download/"):
                generated(int(request.target.split(b"/")[-1]))(request, conn)
            else:
                echo("green")(request, conn)

        _green, greenURL = startBackend(self, "green", handler)
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(
            self,
            greenURL,
            blueURL,
            "--response-timeout",
            "1",
            "--max-connections",
            "1",
        )
        client = await connectRaw(self, proxy.port)
        failed = []
        for size in sizes:
            download = await client.request(b"GET", b"/download/%d" % (size,), keep=0)
            self.assertEqual(download.body.length, size)
            small = await client.request(b"GET", b"/small")
            if small.code != 200:
                failed.append((size, small.code))
        self.assertEqual(failed, [], "requests after these downloads failed")
