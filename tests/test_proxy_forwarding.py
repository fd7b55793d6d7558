# -*- test-case-name: tests.test_proxy_forwarding -*-
# mypy: allow-untyped-calls
"""
Integration tests of what the proxy forwards over real sockets: headers,
the access log, TLS upstreams and HTTP's edge cases.

How these tests run is said in L{tests._proxytest}.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import formatEvent

from tests._backends import (
    BackendConnection,
    BackendFactory,
    ProxyUnderTest,
    ReceivedRequest,
    closeAfterFirst,
    echo,
    listenTLS,
    rawThen,
    route,
    startBackend,
    startProxy,
)
from tests._bodies import PatternSource
from tests._certificates import makeCertificates
from tests._messages import names
from tests._proxytest import IntegrationTestCase
from tests._rawclient import RawResponse, connectRaw, fetch
from tests._util import PATIENCE
from tests._waiting import withTimeout


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

    async def getRoot(
        self, headers: Sequence[tuple[bytes, bytes]], **kwargs: Any
    ) -> tuple[RawResponse, ReceivedRequest]:
        """
        Start the proxy, C{GET /} through it with C{headers}, and return the
        response with the request the green backend received.
        """
        await self.setUpProxy()
        response = await fetch(self, self.proxy.port, b"GET", b"/", headers, **kwargs)
        return response, self.green.requests[0]

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
        _response, request = await self.getRoot(
            [
                (b"Cookie", b"a=1"),
                (b"X-Multi", b"one"),
                (b"Cookie", b"b=2"),
                (b"X-Multi", b"two"),
                (b"X-Multi", b"three, four"),
            ]
        )
        self.assertEqual(request.values(b"cookie"), [b"a=1", b"b=2"])
        self.assertEqual(request.values(b"x-multi"), [b"one", b"two", b"three, four"])

    async def test_hopByHopRequestHeadersStripped(self) -> None:
        """
        C{Connection}, the headers it names, and the other hop-by-hop headers
        (C{Keep-Alive}, C{TE}, C{Trailer}, C{Upgrade}, C{Proxy-*}) are not
        forwarded; end-to-end headers are.
        """
        response, request = await self.getRoot(
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
            ]
        )
        self.assertEqual(response.code, 200)
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
        _response, request = await self.getRoot(
            [
                (b"X-Forwarded-For", b"203.0.113.9"),
                (b"X-Forwarded-For", b"198.51.100.7, 10.0.0.1"),
                (b"X-Forwarded-Proto", b"https"),
                (b"X-Forwarded-Host", b"spoofed.example"),
            ],
            host=b"app.example:8080",
        )
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
        _response, request = await self.getRoot([])
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
        _green, proxy = self.startProxyFor(rawThen(head, "keep"))
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

        _green, proxy = self.startProxyFor(fail)
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
        green, proxy = self.startProxyFor(handler)
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
        green, proxy = self.startProxyFor(echo("green"), "--access-log", "none")
        self.assertIsNone(proxy.resource.accessLog)
        for _ in range(3):
            await fetch(self, proxy.port, b"GET", b"/")
        self.assertEqual(self.logs.namespace("bluegreen.access"), [])
        self.assertEqual(len(green.requests), 3)

    async def test_serviceLogAccessLog(self) -> None:
        """
        With C{--access-log -} requests are logged in batches in the service
        log (namespace C{bluegreen.access}): one event per flush, holding a
        line and the fields of each request.
        """
        _green, proxy = self.startProxyFor(echo("green"), "--access-log", "-")
        await fetch(self, proxy.port, b"GET", b"/x")
        await fetch(self, proxy.port, b"PUT", b"/y", body=b"z")
        accessLog = proxy.resource.accessLog
        assert accessLog is not None
        accessLog.flush()
        events = self.logs.namespace("bluegreen.access")
        self.assertEqual(len(events), 1)
        self.assertEqual(
            [
                (r["method"], r["path"], r["status"], r["environment"])
                for r in events[0]["records"]
            ],
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

    def startTLSProxy(
        self, certificate: str, *extra: str
    ) -> tuple[BackendFactory, ProxyUnderTest]:
        """
        Run GREEN as an echo backend over TLS with the named certificate, an
        echo BLUE, and the proxy in front of them.

        @param extra: More options for the proxy.
        @return: The GREEN backend and the proxy.
        """
        green = BackendFactory("green", echo("green"))
        port = listenTLS(self, green, self.certs.serverOptions(certificate))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, f"https://localhost:{port}", blueURL, *extra)
        return green, proxy

    async def test_trustedUpstream(self) -> None:
        """
        With C{--upstream-ca} the TLS backend is verified and used; the
        connection is reused.
        """
        green, proxy = self.startTLSProxy("good", "--upstream-ca", self.certs.caPath)
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
        green, proxy = self.startTLSProxy("good")
        response = await fetch(self, proxy.port, b"GET", b"/")
        self.assertPlainError(response, 502, "TLS")
        self.assertIn("certificate verify failed", response.text)
        self.assertEqual(green.requests, [])

    async def test_wrongHostName(self) -> None:
        """
        A certificate from the trusted CA but for another host name: 502 with
        a TLS error message.
        """
        green, proxy = self.startTLSProxy("wrong", "--upstream-ca", self.certs.caPath)
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
        green, proxy = self.startProxyFor(echo("green"))
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

        # Streamed, so the backend sees the head before the body is in.
        _green, proxy = self.startProxyFor(
            echo("green"), "--request-buffering", "off", onHead=refuse
        )
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
        green, proxy = self.startProxyFor(echo("green"))
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
        green, proxy = self.startProxyFor(echo("green"))
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

        green, proxy = self.startProxyFor(closing)
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
        green, proxy = self.startProxyFor(
            rawThen(b"HTTP/1.0 200 OK\r\nX-Old: 1\r\n\r\n" + body)
        )
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
        body too large to have been kept is not resent (502), with
        C{--request-buffering off} (a buffered body is kept whole: see
        L{tests.test_buffering}).
        """
        green, proxy = self.startProxyFor(
            closeAfterFirst(echo("green")), "--request-buffering", "off"
        )
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
        green, proxy = self.startProxyFor(echo("green"))
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
        green, proxy = self.startProxyFor(echo("green"))
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
