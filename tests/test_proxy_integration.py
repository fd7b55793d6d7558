# -*- test-case-name: tests.test_proxy_integration -*-
# mypy: allow-untyped-calls
"""
Integration tests of the proxy over real sockets: switching, persistent
connections, streaming and flow control.

How these tests run is said in L{tests._proxytest}.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable
from typing import Any

import treq
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import LoopingCall

from tests._backends import (
    BackendConnection,
    ReceivedRequest,
    delayed,
    echo,
    named,
    startBackend,
    startProxy,
)
from tests._bodies import DownloadStats, PatternSource, SourceProducer, generated
from tests._messages import MIB
from tests._proxytest import IntegrationTestCase, tokens
from tests._rawclient import (
    RawClient,
    RawResponse,
    connectRaw,
    fetch,
    setBuffer,
    treqPool,
)
from tests._util import PATIENCE
from tests._waiting import reactor, stalled, withTimeout


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
        # Streamed, so the body reaches GREEN as it arrives (buffered, see
        # tests.test_buffering).
        proxy = startProxy(self, greenURL, blueURL, "--request-buffering", "off")
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
        green, proxy = self.startProxyFor(echo("green"))
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
        green, proxy = self.startProxyFor(
            delayed(0.2, echo("green")), "--max-connections", "2"
        )
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
        green, proxy = self.startProxyFor(echo("green"), "--idle-timeout", "0.3")
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
        green, proxy = self.startProxyFor(delayed(0.3, echo("green")))
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
        _green, proxy = self.startProxyFor(slowTwoParts)
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

        _green, proxy = self.startProxyFor(chunked)
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
        time, reaches the backend byte for byte (chunk-framed); with
        C{--request-buffering off}, each piece before the next is sent.
        """
        green, proxy = self.startProxyFor(echo("green"), "--request-buffering", "off")
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
        _green, proxy = self.startProxyFor(echo("green"))
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
        _green, proxy = self.startProxyFor(generated(size, stats=stats))
        response = await fetch(self, proxy.port, b"GET", b"/big", keep=0)
        self.assertEqual(response.values(b"content-length"), [b"%d" % (size,)])
        self.assertEqual(response.body.length, size)
        self.assertEqual(response.body.sha256, stats.sources[0].sha256)

    async def test_slowClientPausesBackend(self) -> None:
        """
        With C{--response-buffering off}, a client that stops reading makes
        the proxy stop reading from the backend: the backend's
        (pull-produced, 64 KiB) writes stall, and it never gets more than
        8 MiB ahead of what the client has read.

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
        _green, proxy = self.startProxyFor(handler, "--response-buffering", "off")
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
        With C{--request-buffering off}, a backend that stops reading an
        upload makes the proxy stop reading from the client: the client's
        (pull-produced) writes stall, never more than 8 MiB ahead of what
        the backend has read, and the body arrives intact once the backend
        reads again.
        """
        size = 48 * MIB
        backendPaused: Deferred[None] = Deferred()

        def stall(request: ReceivedRequest, conn: BackendConnection) -> None:
            setBuffer(conn.transport, socket.SO_RCVBUF, 128 * 1024)
            conn.transport.pauseProducing()  # type: ignore[union-attr]
            backendPaused.callback(None)

        green, proxy = self.startProxyFor(
            echo("green"), "--request-buffering", "off", onHead=stall
        )
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

        green, proxy = self.startProxyFor(exact, "--response-timeout", "2")
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

        _green, proxy = self.startProxyFor(
            handler,
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
