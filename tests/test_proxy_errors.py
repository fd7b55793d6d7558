# -*- test-case-name: tests.test_proxy_errors -*-
# mypy: allow-untyped-calls
"""
Integration tests of the proxy's failures over real sockets: upstream
errors, clients that leave, and requests waiting for a connection.

How these tests run is said in L{tests._proxytest}.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests._backends import (
    BackendFactory,
    ProxyUnderTest,
    closeAfterFirst,
    closedPortURL,
    closeWithoutResponse,
    delayed,
    echo,
    named,
    rawThen,
    resetWithoutResponse,
    route,
    silent,
    startBackend,
    startProxy,
)
from tests._proxytest import IntegrationTestCase
from tests._rawclient import IncompleteResponseError, connectRaw, fetch
from tests._util import PATIENCE, waitFor
from tests._waiting import withTimeout


def fullBacklogPort(testCase: TestCase) -> int:
    """
    Listen on a free port of 127.0.0.1 with a backlog of one, filled by a
    connection nobody accepts, until the test ends.

    @return: The port, where a new connection may never complete.
    """
    listener = socket.socket()
    testCase.addCleanup(listener.close)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    filler = socket.socket()
    testCase.addCleanup(filler.close)
    filler.settimeout(2)
    filler.connect(("127.0.0.1", port))
    return port


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

    async def assertTimedOut(self, proxy: ProxyUnderTest, timeout: str) -> None:
        """
        Assert that a C{GET /} through C{proxy} gets the 504 naming
        C{timeout}, after the tests' 0.5 s timeout (and within L{PATIENCE}).
        """
        started = time.monotonic()
        response = await fetch(self, proxy.port, b"GET", b"/")
        elapsed = time.monotonic() - started
        self.assertPlainError(response, 504, timeout)
        self.assertGreater(elapsed, 0.45)
        self.assertLess(elapsed, PATIENCE)

    async def assertAborted(self, proxy: ProxyUnderTest, sent: bytes) -> float:
        """
        Assert that a C{GET /} through C{proxy} on a new connection ends with
        that connection closed without a complete response (see
        L{assertIncomplete}).

        @return: How long, in seconds, the request took to fail.
        """
        client = await connectRaw(self, proxy.port)
        started = time.monotonic()
        with self.assertRaises(IncompleteResponseError) as caught:
            await withTimeout(client.request(b"GET", b"/"), "abort")
        elapsed = time.monotonic() - started
        self.assertIncomplete(caught.exception, sent)
        self.assertTrue(client.closed)
        return elapsed

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
        _green, proxy = self.startProxyFor(closeWithoutResponse)
        response = await fetch(self, proxy.port, b"GET", b"/")
        self.assertPlainError(response, 502, "closed the connection")
        self.assertEqual(proxy.pools["green"].busy, 0)

    async def test_resetWithoutResponse(self) -> None:
        """
        A backend that resets the connection (RST) instead of answering: 502.
        """
        _green, proxy = self.startProxyFor(resetWithoutResponse)
        response = await fetch(self, proxy.port, b"GET", b"/")
        self.assertPlainError(response, 502)
        self.assertEqual(proxy.pools["green"].busy, 0)

    async def test_garbage(self) -> None:
        """
        A backend that answers with something that is not HTTP: 502 saying
        the response was invalid.
        """
        green, proxy = self.startProxyFor(rawThen(b"NOT HTTP\r\n\r\n", "keep"))
        response = await fetch(self, proxy.port, b"GET", b"/")
        self.assertPlainError(response, 502, "invalid response")
        await withTimeout(green.when(lambda: green.open == 0), "dropped")

    async def test_responseTimeout(self) -> None:
        """
        A backend that never answers: 504 after C{--response-timeout},
        mentioning the response timeout; the upstream connection is dropped.
        """
        green, proxy = self.startProxyFor(silent, "--response-timeout", "0.5")
        await self.assertTimedOut(proxy, "response timeout")
        await withTimeout(green.when(lambda: green.open == 0), "dropped")
        self.assertEqual(proxy.pools["green"].busy, 0)

    async def test_connectTimeout(self) -> None:
        """
        A backend whose accept queue is full never completes the TCP
        handshake: 504 after C{--connect-timeout} naming the connect timeout.
        """
        port = fullBacklogPort(self)
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
        await self.assertTimedOut(proxy, "connect timeout")
        self.assertEqual(proxy.pools["green"].busy, 0)

    async def test_truncatedBodyAbortsClient(self) -> None:
        """
        A body cut short by the backend (C{Content-Length: 1000}, 10 bytes,
        close) is not passed off as complete: the client connection is
        aborted mid-body.
        """
        truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"
        _green, proxy = self.startProxyFor(rawThen(truncated, "close"))
        await self.assertAborted(proxy, b"0123456789")

    async def test_stalledBodyAbortsClient(self) -> None:
        """
        A body that stops arriving (10 of 1000 bytes, then silence, the
        connection left open) is cut off after C{--response-timeout}: the
        client connection is aborted mid-body and the upstream connection
        dropped, instead of both being held forever.
        """
        stalled = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"
        green, proxy = self.startProxyFor(
            rawThen(stalled, "keep"), "--response-timeout", "0.5"
        )
        elapsed = await self.assertAborted(proxy, b"0123456789")
        self.assertGreater(elapsed, 0.45)
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
        _green, proxy = self.startProxyFor(rawThen(truncated, "close"))
        await self.assertAborted(proxy, b"hello")

    async def test_staleKeepAliveConnectionRetried(self) -> None:
        """
        A backend that closes a kept-alive connection when the next request
        arrives on it: an idempotent request is resent on a new connection
        and succeeds; a POST is not resent and gets a 502.
        """
        green, proxy = self.startProxyFor(closeAfterFirst(echo("green")))
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

    async def startSlow(
        self, handler: Any, *extra: str
    ) -> tuple[BackendFactory, Any, str]:
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
            *extra,
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
        backend's connection is aborted and the pool is left clean (the
        upload streams, with C{--request-buffering off}).
        """
        green, proxy, _log = await self.startSlow(
            echo("green"), "--request-buffering", "off"
        )
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
        green, proxy = self.startProxyFor(
            delayed(0.4, echo("green")), "--max-connections", "1"
        )
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
        green, proxy = self.startProxyFor(
            route(
                {b"/second": delayed(3.0, echo("green"))}, delayed(0.2, echo("green"))
            ),
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
        port = fullBacklogPort(self)
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
        green, proxy = self.startProxyFor(delayed(0.5, echo("green")))
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
