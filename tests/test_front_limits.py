# -*- test-case-name: tests.test_front_limits -*-
"""
The front door's limits, over real sockets: every refusal of
L{bluegreen.proxy.channel.ProxyChannel} reaches a raw client as a status with
a short text body and C{Connection: close}, is logged and counted, and never
reaches the environment; absolute-form targets and C{Connection} tokens are
handled as RFC 9112 says.
"""

from __future__ import annotations

import os
import time
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import LoopingCall

from tests._backends import BackendFactory, ProxyUnderTest, delayed, echo
from tests._certificates import makeCertificates
from tests._proxytest import IntegrationTestCase
from tests._rawclient import RawClient, RawResponse, connectRaw, fetch
from tests._waiting import reactor, withTimeout


class FrontLimitTests(IntegrationTestCase):
    """
    Each limit, hit by a raw client.
    """

    def start(self, *extra: str) -> tuple[BackendFactory, ProxyUnderTest]:
        """
        The proxy in front of an echoing GREEN, with C{extra} options.
        """
        self.green, self.proxy = self.startProxyFor(echo("green"), *extra)
        return self.green, self.proxy

    async def assertRefused(
        self,
        client: RawClient,
        response: RawResponse,
        status: int,
        cause: str,
        *words: str,
        served: int = 0,
    ) -> None:
        """
        C{response} is the proxy's refusal: C{status} with a short text body
        holding C{words} and C{Connection: close}; the connection then
        closes; the refusal was logged and counted once under C{cause}; the
        environment saw no complete request (but the C{served} before).
        """
        self.assertEqual(response.code, status, response.text)
        self.assertEqual(response.values(b"connection"), [b"close"])
        self.assertEqual(
            response.values(b"content-type"), [b"text/plain; charset=utf-8"]
        )
        self.assertTrue(response.text.startswith("bluegreen: "), response.text)
        for word in words:
            self.assertIn(word, response.text)
        self.assertLess(len(response.text), 300)
        await withTimeout(client.lost, "the refused connection to close")
        # Closed cleanly (the response, then the proxy's FIN), not reset.
        assert client.lostReason is not None
        self.assertTrue(client.lostReason.check(ConnectionDone), client.lostReason)
        self.assertEqual(self.proxy.resource.rejections.counts, {(status, cause): 1})
        logged = [
            event
            for event in self.logs.events
            if event.get("event") == "client-refused"
        ]
        self.assertEqual(
            [(e["status"], e["cause"]) for e in logged], [(status, cause)], logged
        )
        self.assertEqual(len([r for r in self.green.requests if r.complete]), served)

    async def test_slowHeaderCutAtDeadline(self) -> None:
        """
        A client sending one header line at a time, each well within the
        idle timeout, is cut off with a 408 once the head's deadline passes
        (1 s here; 10 s by default).
        """
        self.start("--client-header-timeout", "1")
        client = await connectRaw(self, self.proxy.port)
        expected = client.expect()
        started = time.monotonic()
        client.sendRaw(b"GET / HTTP/1.1\r\nHost: proxy.test\r\n")
        counter = iter(range(10**6))
        trickle = LoopingCall(lambda: client.sendRaw(b"X-%d: y\r\n" % next(counter)))
        trickle.clock = reactor
        trickle.start(0.1)
        try:
            response = await withTimeout(expected, "the 408")
        finally:
            trickle.stop()
        # Not before the deadline (less a margin for when the proxy accepted
        # the connection), and lines kept coming until then.
        self.assertGreaterEqual(time.monotonic() - started, 0.5)
        self.assertGreaterEqual(next(counter), 2)
        await self.assertRefused(
            client, response, 408, "header_timeout", "request head not received"
        )

    async def test_silentNewConnection(self) -> None:
        """
        A connection that sends nothing gets a 408 at the head's deadline.
        """
        self.start("--client-header-timeout", "1")
        client = await connectRaw(self, self.proxy.port)
        response = await withTimeout(client.expect(), "the 408")
        await self.assertRefused(client, response, 408, "header_timeout")

    async def test_deadlineOnlyForTheHead(self) -> None:
        """
        A response that takes longer than the head's deadline is not cut,
        nor is a keep-alive connection idle between requests.
        """
        self.green, self.proxy = self.startProxyFor(
            delayed(1.5, echo("green")), "--client-header-timeout", "1"
        )
        client = await connectRaw(self, self.proxy.port)
        first = await client.request(b"GET", b"/slow")
        self.assertEqual(first.code, 200)
        second = await client.request(b"GET", b"/again")
        self.assertEqual(second.code, 200)
        self.assertEqual(self.proxy.resource.rejections.counts, {})

    async def test_requestLineTooLong(self) -> None:
        """
        A request line over 8 KiB gets a 414, even 100 KB of it.
        """
        self.start()
        client = await connectRaw(self, self.proxy.port)
        response = await client.request(b"GET", b"/" + b"a" * 100_000)
        await self.assertRefused(
            client, response, 414, "request_line_too_long", "request line over 8192"
        )

    async def test_requestLineAtLimit(self) -> None:
        """
        A request line of exactly C{--max-request-line} bytes is served.
        """
        self.start("--max-request-line", "1k")
        line = b"GET /" + b"a" * (1024 - len(b"GET / HTTP/1.1") - 1) + b" HTTP/1.1"
        self.assertEqual(len(line), 1023)
        response = await fetch(self, self.proxy.port, b"GET", line[4:-9])
        self.assertEqual(response.code, 200)

    async def test_headerSectionTooLarge(self) -> None:
        """
        A 70 KB header section gets a 431.
        """
        self.start()
        client = await connectRaw(self, self.proxy.port)
        response = await client.request(
            b"GET", b"/", [(b"X-Big-%d" % i, b"v" * 7000) for i in range(10)]
        )
        await self.assertRefused(
            client, response, 431, "header_section_too_large", "65536 bytes"
        )

    async def test_oneHugeHeaderLine(self) -> None:
        """
        One header line longer than the whole section allows gets a 431
        (not twisted.web's silent close).
        """
        self.start("--max-header-size", "16k")
        client = await connectRaw(self, self.proxy.port)
        response = await client.request(b"GET", b"/", [(b"Cookie", b"c" * 40_000)])
        await self.assertRefused(client, response, 431, "header_section_too_large")

    async def test_tooManyFields(self) -> None:
        """
        101 header fields get a 431; 100 are fine (C{Host} is one).
        """
        self.start()
        fields = [(b"X-F-%d" % i, b"v") for i in range(99)]
        ok = await fetch(self, self.proxy.port, b"GET", b"/", fields)
        self.assertEqual(ok.code, 200)
        client = await connectRaw(self, self.proxy.port)
        response = await client.request(b"GET", b"/", [*fields, (b"X-1", b"v")])
        await self.assertRefused(
            client,
            response,
            431,
            "too_many_fields",
            "more than 100 header fields",
            served=1,
        )

    async def test_bodyTooLarge(self) -> None:
        """
        A declared body over C{--max-body-size} gets a 413 before anything
        reaches the environment, without a C{100 Continue}.
        """
        self.start("--max-body-size", "1k")
        client = await connectRaw(self, self.proxy.port)
        response = await client.request(
            b"PUT", b"/up", [(b"Expect", b"100-continue")], body=b"x" * 2000
        )
        self.assertEqual(client.interim, [])
        await self.assertRefused(
            client, response, 413, "body_too_large", "2000 bytes", "1024 bytes"
        )
        self.assertEqual(self.green.made, 0)

    async def test_bodyAtLimit(self) -> None:
        """
        A body of exactly C{--max-body-size} bytes is forwarded.
        """
        self.start("--max-body-size", "1k")
        response = await fetch(self, self.proxy.port, b"PUT", b"/up", body=b"x" * 1024)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.green.requests[0].body.length, 1024)

    async def test_chunkedBodyTooLarge(self) -> None:
        """
        A chunked body that passes C{--max-body-size} gets a 413.
        """
        self.start("--max-body-size", "1k")
        client = await connectRaw(self, self.proxy.port)
        expected = client.expect()
        client.sendRaw(
            b"POST /up HTTP/1.1\r\nHost: proxy.test\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + b"200\r\n"
            + b"x" * 0x200
            + b"\r\n"
            + b"300\r\n"
            + b"y" * 0x300
            + b"\r\n0\r\n\r\n"
        )
        response = await withTimeout(expected, "the 413")
        await self.assertRefused(client, response, 413, "body_too_large", "chunked")

    async def test_bodyStalled(self) -> None:
        """
        A body that stops arriving for C{--client-idle-timeout} gets a 408
        and the upstream exchange is abandoned.
        """
        self.start("--client-idle-timeout", "1")
        client = await connectRaw(self, self.proxy.port)
        expected = client.expect()
        client.sendRaw(
            b"PUT /up HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 10\r\n\r\nabc"
        )
        response = await withTimeout(expected, "the 408")
        await self.assertRefused(client, response, 408, "body_timeout", "stalled")
        await withTimeout(
            self.green.when(lambda: self.green.open == 0), "the upstream to close"
        )

    async def test_connect(self) -> None:
        """
        C{CONNECT} gets a 405 naming the methods allowed.
        """
        self.start()
        client = await connectRaw(self, self.proxy.port)
        response = await client.request(
            b"CONNECT", b"evil.example:443", host=b"evil.example:443"
        )
        self.assertIn(b"GET", response.values(b"allow")[0])
        await self.assertRefused(client, response, 405, "connect", "CONNECT")

    async def test_missingHost(self) -> None:
        """
        An HTTP/1.1 request without C{Host} gets a 400.
        """
        self.start()
        client = await connectRaw(self, self.proxy.port)
        response = await client.request(b"GET", b"/", host=None)
        await self.assertRefused(client, response, 400, "missing_host", "Host")

    async def test_repeatedHost(self) -> None:
        """
        A request with two C{Host} fields gets a 400.
        """
        self.start()
        client = await connectRaw(self, self.proxy.port)
        response = await client.request(b"GET", b"/", [(b"Host", b"other.example")])
        await self.assertRefused(client, response, 400, "repeated_host")

    async def test_invalidHost(self) -> None:
        """
        A C{Host} that is not C{host[:port]} gets a 400.
        """
        self.start()
        client = await connectRaw(self, self.proxy.port)
        response = await client.request(b"GET", b"/", host=b"a.example, b.example")
        await self.assertRefused(client, response, 400, "invalid_host")

    async def test_invalidTarget(self) -> None:
        """
        A target in neither origin nor absolute form gets a 400.
        """
        self.start()
        client = await connectRaw(self, self.proxy.port)
        response = await client.request(b"GET", b"ftp://x/y")
        await self.assertRefused(client, response, 400, "invalid_target")

    async def test_malformed(self) -> None:
        """
        A header line twisted.web cannot parse gets a 400 with a body and a
        log line (twisted.web alone sends a bare 400).
        """
        self.start()
        client = await connectRaw(self, self.proxy.port)
        response = await client.request(b"GET", b"/", [(b"Bad Name", b"x")])
        await self.assertRefused(client, response, 400, "malformed", "malformed")

    async def test_absoluteForm(self) -> None:
        """
        C{GET http://host/x} is forwarded in origin form, with C{Host} from
        the target, whatever C{Host} the client sent.
        """
        self.start()
        response = await fetch(
            self,
            self.proxy.port,
            b"GET",
            b"http://app.example:8080/x?q=1",
            host=b"127.0.0.1",
        )
        self.assertEqual(response.code, 200)
        response = await fetch(
            self, self.proxy.port, b"GET", b"HTTPS://other.example?a", host=b"x"
        )
        self.assertEqual(response.code, 200)
        first, second = self.green.requests
        self.assertEqual(first.target, b"/x?q=1")
        self.assertEqual(first.values(b"host"), [b"app.example:8080"])
        self.assertEqual(first.values(b"x-forwarded-host"), [b"app.example:8080"])
        self.assertEqual(second.target, b"/?a")
        self.assertEqual(second.values(b"host"), [b"other.example"])

    async def test_connectionCloseAmongTokens(self) -> None:
        """
        C{Connection: close, foo} closes the connection after the response,
        and C{foo} is not forwarded.
        """
        self.start()
        client = await connectRaw(self, self.proxy.port)
        response = await client.request(
            b"GET", b"/", [(b"Connection", b"keep-alive, close, Foo"), (b"Foo", b"1")]
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(response.values(b"connection"), [b"close"])
        await withTimeout(client.lost, "the connection to close")
        sent = [name.lower() for name, _ in self.green.requests[0].headers]
        self.assertNotIn(b"foo", sent)
        self.assertNotIn(b"connection", sent)

    async def test_idleKeepAliveClosed(self) -> None:
        """
        A keep-alive connection idle for C{--client-idle-timeout} is closed
        without a response.
        """
        self.start("--client-idle-timeout", "1")
        client = await connectRaw(self, self.proxy.port)
        response = await client.request(b"GET", b"/")
        self.assertEqual(response.code, 200)
        await withTimeout(client.lost, "the idle connection to close")
        self.assertEqual(self.proxy.resource.rejections.counts, {})


class TLSFrontTests(IntegrationTestCase):
    """
    The limits on a TLS port (no half-close there: the connection is
    closed once the refusal is written).
    """

    async def test_refusedOverTLS(self) -> None:
        """
        Over TLS a request is served, and a too-long request line gets its
        414 before the connection closes.
        """
        directory = self.mktemp()
        certificates = makeCertificates(directory, {"proxy": ["127.0.0.1"]})
        keyFile = os.path.join(directory, "proxy.pem")
        with open(keyFile, "wb") as f:
            f.write(certificates.servers["proxy"])
        green, proxy = self.startProxyFor(
            echo("green"), "--port", f"ssl:0:interface=127.0.0.1:privateKey={keyFile}"
        )
        trust = Certificate.loadPEM(certificates.caPEM)

        async def connect() -> RawClient:
            client = RawClient()
            endpoint = wrapClientTLS(
                optionsForClientTLS("127.0.0.1", trustRoot=trust),
                TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.port),
            )
            await connectProtocol(endpoint, client)

            def cleanup() -> Deferred[Any]:
                if client.closed:
                    return succeed(None)
                client.abort()
                return client.lost

            self.addCleanup(cleanup)
            return client

        served = await (await connect()).request(b"GET", b"/tls")
        self.assertEqual(served.code, 200)
        client = await connect()
        response = await client.request(b"GET", b"/" + b"a" * 20_000)
        self.assertEqual(response.code, 414)
        self.assertEqual(response.values(b"connection"), [b"close"])
        await withTimeout(client.lost, "the refused TLS connection to close")
        # Closed cleanly by the proxy, not aborted at the end of the linger.
        assert client.lostReason is not None
        self.assertTrue(client.lostReason.check(ConnectionDone), client.lostReason)
        self.assertEqual(
            proxy.resource.rejections.counts, {(414, "request_line_too_long"): 1}
        )
        self.assertEqual([r.target for r in green.requests], [b"/tls"])
