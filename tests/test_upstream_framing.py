# -*- test-case-name: tests.test_upstream_framing -*-
# mypy: allow-untyped-calls
"""
Upstream response framing, end to end: a table of raw upstream responses,
each served by a raw-socket upstream (the test backend writing canned bytes
on a free port) through the real proxy, and what the client gets.

The rows come from RFC 9112 / RFC 9110 and from what nginx and HAProxy
refuse, not from what the proxy's parser happens to do; each row cites its
source.  Every row also checks that no response can be split: the client
gets exactly one response, and the next request on the same client
connection gets a fresh upstream exchange (on a new upstream connection
after a refused response, whose connection is dropped and never reused).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Literal

from attrs import frozen

from tests._backends import (
    BackendConnection,
    BackendFactory,
    ProxyUnderTest,
    ReceivedRequest,
    echo,
    rawThen,
    route,
    startBackend,
    startProxy,
)
from tests._proxytest import IntegrationTestCase
from tests._rawclient import IncompleteResponseError, RawResponse, connectRaw
from tests._waiting import withTimeout

#: What the upstream answers to every request but the row's: a fresh,
#: well-framed response, so that anything else reaching the client shows.
FRESH = b"fresh"

Outcome = Literal["refused", "forwarded", "aborted"]


@frozen
class Row:
    """
    One raw upstream response and what the client must get.

    @ivar name: The test's name.
    @ivar why: Where the rule comes from (the test's docstring).
    @ivar raw: The bytes the upstream writes after reading the request.
    @ivar outcome: C{refused}: a 502 from the proxy naming C{word};
        C{forwarded}: the response passed on (C{code}, C{body}); C{aborted}:
        the client connection is cut without a complete response (the head
        had already gone out).
    @ivar word: For C{refused}, words of the 502's message.
    @ivar code: For C{forwarded}, the status the client gets.
    @ivar body: For C{forwarded}, the body the client gets.
    @ivar method: The client's method.
    @ivar then: What the upstream does after writing C{raw}: keep the
        connection (as if the response were complete) or close it.
    @ivar absent: Header names the forwarded response must not have.
    @ivar present: Header (name, value) pairs it must have, each exactly once.
    @ivar reused: For C{forwarded}, whether the upstream connection may be
        reused for the next request.
    """

    name: str
    why: str
    raw: bytes
    outcome: Outcome
    word: str = ""
    code: int = 200
    body: bytes = b""
    method: bytes = b"GET"
    then: Literal["keep", "close"] = "keep"
    absent: tuple[bytes, ...] = ()
    present: tuple[tuple[bytes, bytes], ...] = ()
    reused: bool = True


def refused(name: str, why: str, raw: bytes, word: str) -> Row:
    """
    A row the proxy must answer with its own 502.
    """
    return Row(name, why, raw, "refused", word=word)


OK = b"HTTP/1.1 200 OK\r\n"
CHUNKED = OK + b"Transfer-Encoding: chunked\r\n\r\n"

#: The response splitting of issue 10: a chunk that is a second response.
SMUGGLED = (
    b"HTTP/1.1 200 OK\r\nSet-Cookie: session=attacker\r\nContent-Length: 0\r\n\r\n"
)

ROWS = [
    # --- Content-Length and Transfer-Encoding (RFC 9112 section 6.3) ---
    refused(
        "clAndTe",
        "RFC 9112 6.3 item 3; nginx: 'upstream sent Content-Length and "
        "Transfer-Encoding headers at the same time' -> 502 (issue 10's split).",
        OK + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
        "both Content-Length and Transfer-Encoding",
    ),
    refused(
        "teAndCl",
        "RFC 9112 6.3 item 3, the fields the other way round.",
        OK + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        "both Content-Length and Transfer-Encoding",
    ),
    refused(
        "teGzipChunked",
        "nginx accepts only 'chunked' ('upstream sent unknown Transfer-Encoding'): "
        "the gzip coding would be forwarded without its name.",
        OK + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "unsupported Transfer-Encoding",
    ),
    refused(
        "teChunkedNotFinal",
        "RFC 9112 6.3 item 4 would read until close; nginx refuses: 502.",
        OK + b"Transfer-Encoding: chunked, identity\r\n\r\nabc",
        "unsupported Transfer-Encoding",
    ),
    refused(
        "teIdentity",
        "RFC 9112 7: 'identity' is no longer a transfer coding; nginx 502.",
        OK + b"Transfer-Encoding: identity\r\n\r\nabc",
        "unsupported Transfer-Encoding",
    ),
    refused(
        "teTwice",
        "nginx 1.23+: duplicate Transfer-Encoding -> 502 (chunked applied twice).",
        OK + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        "unsupported Transfer-Encoding",
    ),
    refused(
        "teLookalike",
        "A coding that merely ends in 'chunked' is not chunked (RFC 9112 7).",
        OK + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        "unsupported Transfer-Encoding",
    ),
    refused(
        "teInHttp10",
        "RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.0",
    ),
    refused(
        "clDiffer",
        "RFC 9112 6.3 item 5: differing Content-Length fields are unrecoverable.",
        OK + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "conflicting Content-Length",
    ),
    refused(
        "clListDiffers",
        "RFC 9110 8.6: a list is accepted only of identical values.",
        OK + b"Content-Length: 1, 2\r\n\r\nab",
        "conflicting Content-Length",
    ),
    refused(
        "clPlus",
        "RFC 9110 8.6: Content-Length = 1*DIGIT (no sign).",
        OK + b"Content-Length: +2\r\n\r\nab",
        "invalid Content-Length",
    ),
    refused(
        "clNegative",
        "RFC 9110 8.6: Content-Length = 1*DIGIT.",
        OK + b"Content-Length: -1\r\n\r\n",
        "invalid Content-Length",
    ),
    refused(
        "clHex",
        "RFC 9110 8.6: decimal digits only.",
        OK + b"Content-Length: 0x2\r\n\r\nab",
        "invalid Content-Length",
    ),
    refused(
        "clInnerSpace",
        "RFC 9110 8.6: one number, no inner whitespace.",
        OK + b"Content-Length: 1 2\r\n\r\nab",
        "invalid Content-Length",
    ),
    refused(
        "clEmpty",
        "RFC 9110 8.6: at least one digit.",
        OK + b"Content-Length: \r\n\r\n",
        "invalid Content-Length",
    ),
    # --- Chunk sizes and extensions (RFC 9112 section 7.1) ---
    refused(
        "chunkHexPrefix",
        "RFC 9112 7.1: chunk-size = 1*HEXDIG, so no '0x' (int(x, 16) takes it).",
        CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n",
        "invalid chunk size",
    ),
    refused(
        "chunkUnderscore",
        "RFC 9112 7.1: no '_' (Python's int() takes '1_0').",
        CHUNKED + b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n",
        "invalid chunk size",
    ),
    refused(
        "chunkPlus",
        "RFC 9112 7.1: no sign.",
        CHUNKED + b"+5\r\nhello\r\n0\r\n\r\n",
        "invalid chunk size",
    ),
    refused(
        "chunkMinus",
        "RFC 9112 7.1: no sign.",
        CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n",
        "invalid chunk size",
    ),
    refused(
        "chunkLeadingSpace",
        "RFC 9112 7.1: nothing before the size.",
        CHUNKED + b" 5\r\nhello\r\n0\r\n\r\n",
        "invalid chunk size",
    ),
    refused(
        "chunkTrailingSpace",
        "RFC 9112 7.1: whitespace only before a ';' extension (BWS).",
        CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n",
        "invalid chunk size",
    ),
    refused(
        "chunkSeventeenDigits",
        "At most 16 hex digits (64 bits; HAProxy and llhttp refuse an overflow).",
        CHUNKED + b"00000000000000005\r\nhello\r\n0\r\n\r\n",
        "invalid chunk size",
    ),
    refused(
        "chunkEmptySize",
        "RFC 9112 7.1: at least one hex digit.",
        CHUNKED + b"\r\nhello\r\n0\r\n\r\n",
        "invalid chunk size",
    ),
    refused(
        "chunkExtNoName",
        "RFC 9112 7.1.1: chunk-ext-name = token.",
        CHUNKED + b"5;=x\r\nhello\r\n0\r\n\r\n",
        "invalid chunk size",
    ),
    refused(
        "chunkExtBadQuote",
        "RFC 9112 7.1.1: chunk-ext-val = token / quoted-string (closed).",
        CHUNKED + b'5;a="open\r\nhello\r\n0\r\n\r\n',
        "invalid chunk size",
    ),
    refused(
        "chunkBareLf",
        "RFC 9112 7.1: chunk lines end in CRLF.",
        CHUNKED + b"5\nhello\r\n0\r\n\r\n",
        "invalid chunk size",
    ),
    # --- Field lines (RFC 9112 section 5, RFC 9110 section 5) ---
    refused(
        "nulInValue",
        "RFC 9110 5.5: NUL in a field value -> reject (issue 10: it got through).",
        OK + b"X-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
        "control character",
    ),
    refused(
        "crInValue",
        "RFC 9110 5.5: a bare CR in a field value -> reject.",
        OK + b"X-A: a\rb\r\nContent-Length: 0\r\n\r\n",
        "bare CR",
    ),
    refused(
        "lfInValue",
        "RFC 9110 5.5 / RFC 9112 2.2: a bare LF is refused (a header injection).",
        OK + b"X-A: a\nSet-Cookie: x=1\r\nContent-Length: 0\r\n\r\n",
        "bare LF",
    ),
    refused(
        "controlInValue",
        "RFC 9110 5.5: field-value is VCHAR, obs-text, SP and HTAB only.",
        OK + b"X-A: a\x1bb\r\nContent-Length: 0\r\n\r\n",
        "control character",
    ),
    refused(
        "nulInName",
        "RFC 9110 5.1: field-name = token.",
        OK + b"X-\x00A: 1\r\nContent-Length: 0\r\n\r\n",
        "control character",
    ),
    refused(
        "obsFold",
        "RFC 9112 5.2: obs-fold in a response -> reject (or replace; HAProxy rejects).",
        OK + b"X-A: one\r\n two\r\nContent-Length: 0\r\n\r\n",
        "obsolete line folding",
    ),
    refused(
        "spaceBeforeColon",
        "RFC 9112 5.1: no whitespace between field name and colon.",
        OK + b"Content-Length : 5\r\n\r\nhello",
        "invalid header line",
    ),
    refused(
        "nameNotToken",
        "RFC 9110 5.1: field-name = token ('@' is not a tchar).",
        OK + b"X@A: 1\r\nContent-Length: 0\r\n\r\n",
        "invalid header line",
    ),
    refused(
        "noColon",
        "RFC 9112 5: field-line = field-name ':' OWS field-value OWS.",
        OK + b"NoColon\r\nContent-Length: 0\r\n\r\n",
        "invalid header line",
    ),
    refused(
        "noColonKnownName",
        "RFC 9112 5: a common field name without its colon is no field either.",
        OK + b"Content-Type: text/plain\r\nContent-Type\r\nContent-Length: 0\r\n\r\n",
        "invalid header line",
    ),
    refused(
        "bareLfHead",
        "RFC 9112 2.2 lets a recipient refuse bare LF line ends: refused at once.",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        "bare LF",
    ),
    refused(
        "tooManyFields",
        "HAProxy tune.http.maxhdr 101, nginx 100: more than 100 fields -> 502.",
        OK + b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(101)) + b"\r\n",
        "more than 100 header fields",
    ),
    refused(
        "headTooLarge",
        "Envoy max 60 KiB, nginx proxy_buffer_size: a 70 KB head -> 502.",
        OK + b"X-Big: " + b"a" * 70000 + b"\r\nContent-Length: 0\r\n\r\n",
        "larger than 64 KiB",
    ),
    refused(
        "interimHeadsTooLarge",
        "The head limit counts the interim heads before the final one.",
        b"HTTP/1.1 103 Early Hints\r\nLink: " + b"a" * 40000 + b"\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 30000 + b"\r\nContent-Length: 0\r\n\r\n",
        "larger than 64 KiB",
    ),
    # --- Status line (RFC 9112 section 4) ---
    refused(
        "statusHttp2",
        "RFC 9112 4: HTTP/1.x only on this connection.",
        b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
        "invalid status line",
    ),
    refused(
        "statusLowercase",
        "RFC 9112 2.3: HTTP-name is case-sensitive.",
        b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        "invalid status line",
    ),
    refused(
        "statusTwoDigits",
        "RFC 9112 4: status-code = 3DIGIT.",
        b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
        "invalid status line",
    ),
    refused(
        "statusFourDigits",
        "RFC 9112 4: status-code = 3DIGIT.",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        "invalid status line",
    ),
    refused(
        "status600",
        "RFC 9110 15: status codes are 100 to 599.",
        b"HTTP/1.1 600 Nope\r\nContent-Length: 0\r\n\r\n",
        "invalid status line",
    ),
    refused(
        "statusDoubleSpace",
        "RFC 9112 4: a single SP between version and code.",
        b"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n",
        "invalid status line",
    ),
    refused(
        "statusIcy",
        "RFC 9112 4: not HTTP at all (SHOUTcast's ICY).",
        b"ICY 200 OK\r\nContent-Length: 0\r\n\r\n",
        "invalid status line",
    ),
    refused(
        "switchingProtocols",
        "RFC 9110 15.2.2: 101 only answers an Upgrade the proxy never asks for.",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\n\r\n",
        "101",
    ),
    # --- Forwarded as they should be ---
    Row(
        "clSameTwice",
        "RFC 9110 8.6 (and HAProxy): identical Content-Length fields are one; "
        "the client gets it once.",
        OK + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "forwarded",
        body=b"hello",
        present=((b"content-length", b"5"),),
    ),
    Row(
        "clSameList",
        "RFC 9110 8.6: a list of identical values ('5, 5') is taken as 5.",
        OK + b"Content-Length: 5, 5\r\n\r\nhello",
        "forwarded",
        body=b"hello",
        present=((b"content-length", b"5"),),
    ),
    Row(
        "chunkUpperHexZeros",
        "RFC 9112 7.1: HEXDIG is case-insensitive and leading zeros are digits.",
        CHUNKED + b"000A\r\n0123456789\r\n0000000000000000\r\n\r\n",
        "forwarded",
        body=b"0123456789",
        absent=(b"content-length",),
    ),
    Row(
        "chunkExtensions",
        "RFC 9112 7.1.1: valid extensions (token, quoted-string, BWS) are ignored.",
        CHUNKED + b'5;a=b;c="x \\" y" ; d = e\r\nhello\r\n0;last\r\n\r\n',
        "forwarded",
        body=b"hello",
    ),
    Row(
        "chunkTrailers",
        "RFC 9112 7.1.2: a trailer section is read (and dropped).",
        CHUNKED + b"5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n",
        "forwarded",
        body=b"hello",
        absent=(b"x-checksum",),
    ),
    Row(
        "interimSkipped",
        "RFC 9110 15.2: 100 and 103 are skipped, as nginx does by default "
        "(twisted.web cannot send an interim response); the final one is sent.",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
        b"Link: </s.css>; rel=preload\r\n\r\n" + OK + b"Content-Length: 2\r\n\r\nok",
        "forwarded",
        body=b"ok",
        absent=(b"link",),
    ),
    Row(
        "noContentWithLength",
        "RFC 9110 8.6: no Content-Length on a 204 (issue 10: it was forwarded); "
        "no body is read.",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-A: 1\r\n\r\n",
        "forwarded",
        code=204,
        absent=(b"content-length", b"transfer-encoding"),
        present=((b"x-a", b"1"),),
    ),
    Row(
        "notModifiedWithLength",
        "RFC 9110 8.6 and 15.4.5: a 304 keeps its Content-Length, has no body.",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n",
        "forwarded",
        code=304,
        present=((b"content-length", b"1234"),),
    ),
    Row(
        "headWithLength",
        "RFC 9110 9.3.2: the response to HEAD has no body whatever it declares.",
        OK + b"Content-Length: 1000\r\n\r\n",
        "forwarded",
        method=b"HEAD",
        present=((b"content-length", b"1000"),),
    ),
    Row(
        "statusWithoutReason",
        "RFC 9112 4: the reason phrase is optional (nginx also takes no SP).",
        b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
        "forwarded",
        body=b"ok",
    ),
    Row(
        "obsTextAndTab",
        "RFC 9110 5.5: obs-text and HTAB are valid in a field value.",
        OK + b"X-A: caf\xe9\tau lait\r\nContent-Length: 2\r\n\r\nok",
        "forwarded",
        body=b"ok",
        present=((b"x-a", b"caf\xe9\tau lait"),),
    ),
    Row(
        "untilClose",
        "RFC 9112 6.3 item 8: no length, no chunked: the body ends with the "
        "connection, which is then not reused.",
        b"HTTP/1.0 200 OK\r\n\r\nuntil close",
        "forwarded",
        body=b"until close",
        then="close",
        reused=False,
    ),
    Row(
        "extraAfterLength",
        "RFC 9112 6.3: bytes past the Content-Length are not a response: the "
        "client gets the declared body, the upstream connection is dropped.",
        OK + b"Content-Length: 2\r\n\r\nok" + SMUGGLED,
        "forwarded",
        body=b"ok",
        reused=False,
    ),
    Row(
        "extraAfterLastChunk",
        "RFC 9112 7.1: bytes after the last chunk are not a response either.",
        CHUNKED + b"2\r\nok\r\n0\r\n\r\n" + SMUGGLED,
        "forwarded",
        body=b"ok",
        reused=False,
    ),
    # --- Broken after the head went out: the client connection is cut ---
    Row(
        "chunkDataTooLong",
        "RFC 9112 7.1: chunk data then CRLF; once a body is under way the "
        "client connection is aborted (nginx closes it too).",
        CHUNKED + b"5\r\nhelloXX\r\n0\r\n\r\n",
        "aborted",
    ),
    Row(
        "chunkDataBareLf",
        "RFC 9112 7.1: the CRLF after chunk data is not optional.",
        CHUNKED + b"5\r\nhello\n0\r\n\r\n",
        "aborted",
    ),
    Row(
        "secondChunkSizeBad",
        "RFC 9112 7.1: a later chunk size that is not 1*HEXDIG.",
        CHUNKED + b"5\r\nhello\r\n0x5\r\nworld\r\n0\r\n\r\n",
        "aborted",
    ),
    Row(
        "trailerNotAField",
        "RFC 9112 7.1.2: trailer lines are field lines.",
        CHUNKED + b"5\r\nhello\r\n0\r\nnot a field\r\n\r\n",
        "aborted",
    ),
]


class UpstreamFramingTests(IntegrationTestCase):
    """
    Each row of L{ROWS} through the real proxy (one generated test per row).
    """

    def startFor(self, row: Row) -> tuple[BackendFactory, ProxyUnderTest]:
        """
        Start the row's raw upstream as GREEN (answering C{/row} with the
        row's bytes and anything else with L{FRESH}), an echo BLUE, and the
        proxy.

        @return: The upstream and the proxy.
        """

        def fresh(request: ReceivedRequest, conn: BackendConnection) -> None:
            conn.respond(body=FRESH)

        handler = route({b"/row": rawThen(row.raw, row.then)}, fresh)
        green, greenURL = startBackend(self, "green", handler)
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL)
        return green, proxy

    async def checkRow(self, row: Row) -> None:
        """
        Send C{row}'s request, check the client's response, then check that
        the next request on the same client connection (or a new one, if it
        was cut) gets a fresh response from a fresh upstream exchange.
        """
        green, proxy = self.startFor(row)
        port = proxy.port
        client = await connectRaw(self, port)
        request = client.request(row.method, b"/row")
        if row.outcome == "aborted":
            with self.assertRaises(IncompleteResponseError) as caught:
                await withTimeout(request, "abort")
            partial = caught.exception.response
            self.assertTrue(partial is None or not partial.complete)
            self.assertTrue(client.closed)
            client = await connectRaw(self, port)
        else:
            response = await withTimeout(request, row.name)
            self.checkResponse(row, response, proxy)
        first = green.requests[0]
        carrier = next(c for c in green.connections if first in c.requests)
        if row.outcome != "forwarded" or not row.reused:
            # Never reused: whatever followed the response on that
            # connection cannot become the next client's response.
            await withTimeout(green.when(lambda: carrier.closed), "upstream dropped")
        following = await withTimeout(client.request(b"GET", b"/next"), "next")
        self.assertEqual((following.code, following.content), (200, FRESH))
        self.assertTrue(following.complete)
        self.assertEqual(client.interim, [])
        self.assertEqual([r.target for r in green.requests], [b"/row", b"/next"])
        if row.outcome != "forwarded" or not row.reused:
            self.assertNotIn(green.requests[1], carrier.requests)

    def checkResponse(
        self, row: Row, response: RawResponse, proxy: ProxyUnderTest
    ) -> None:
        """
        Check the client's response to C{row}'s request, and that a refused
        response is counted with the proxy's other refusals.
        """
        self.assertTrue(response.complete)
        if row.outcome == "refused":
            self.assertPlainError(response, 502, "sent an invalid response", row.word)
            counts = proxy.resource.rejections.counts
            self.assertEqual(counts.get((502, "invalid_response")), 1)
            return
        self.assertEqual(response.code, row.code, response.text)
        self.assertEqual(response.content, row.body)
        for name in row.absent:
            self.assertEqual(response.values(name), [], name)
        for name, value in row.present:
            self.assertEqual(response.values(name), [value], name)


def _rowTest(row: Row) -> Callable[[UpstreamFramingTests], Coroutine[Any, Any, None]]:
    """
    The generated test method for C{row}.
    """

    async def test(self: UpstreamFramingTests) -> None:
        await self.checkRow(row)

    test.__name__ = f"test_{row.name}"
    test.__doc__ = f"{row.outcome}: {row.why}"
    return test


for _row in ROWS:
    setattr(UpstreamFramingTests, f"test_{_row.name}", _rowTest(_row))
