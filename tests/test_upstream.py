# -*- test-case-name: tests.test_upstream -*-
"""
Tests for L{bluegreen.proxy.upstream} and L{bluegreen.proxy.framing}: the
upstream HTTP/1.1 response parser and connection reuse rules, over in-memory
transports, with responses split across reads in every way.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from bluegreen.proxy.framing import MAX_HEAD
from bluegreen.proxy.upstream import BadResponse, UpstreamConnection
from tests.test_upstream_framing import ROWS, Row


class RecordingPool:
    """
    Records what a connection tells its pool.
    """

    def __init__(self) -> None:
        self.released: list[UpstreamConnection] = []
        self.discarded: list[UpstreamConnection] = []
        self.closed: list[UpstreamConnection] = []

    def release(self, conn: UpstreamConnection) -> None:
        self.released.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        self.discarded.append(conn)
        conn.transport.loseConnection()

    def connectionClosed(self, conn: UpstreamConnection) -> None:
        self.closed.append(conn)


class RecordingSink:
    """
    Records a response as the connection reports it.
    """

    def __init__(self) -> None:
        self.head: tuple[int, bytes, list[tuple[bytes, bytes]]] | None = None
        self.body: list[bytes] = []
        self.done = False
        self.failure: Failure | None = None
        self.started: bool | None = None

    def responseHead(
        self, code: int, phrase: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.head = (code, phrase, headers)

    def responseData(self, data: bytes) -> None:
        self.body.append(data)

    def responseDone(self) -> None:
        self.done = True

    def responseFailed(self, reason: Failure, started: bool) -> None:
        self.failure = reason
        self.started = started


def connect() -> tuple[UpstreamConnection, StringTransport, RecordingPool]:
    """
    A connection over a L{StringTransport}.
    """
    pool = RecordingPool()
    conn = UpstreamConnection(pool)
    transport = StringTransport()
    conn.makeConnection(transport)
    return conn, transport, pool


def send(
    conn: UpstreamConnection,
    head: bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    isHead: bool = False,
    chunked: bool = False,
    hasBody: bool = False,
) -> RecordingSink:
    """
    Start an exchange on C{conn}.
    """
    sink = RecordingSink()
    conn.sendHead(head, sink, isHead, chunked, hasBody)
    return sink


def feedBytewise(conn: UpstreamConnection, data: bytes) -> None:
    """
    Deliver C{data} one byte at a time (the worst case for a parser).
    """
    for i in range(len(data)):
        conn.dataReceived(data[i : i + 1])


class ResponseFramingTests(SynchronousTestCase):
    """
    Bodies are delimited as RFC 9112 says and delivered as they arrive.
    """

    def test_contentLength(self) -> None:
        """
        A Content-Length body is delivered and the connection goes back to
        the pool.
        """
        conn, transport, pool = connect()
        sink = send(conn)
        self.assertEqual(transport.value(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhel")
        self.assertEqual(
            sink.head, (200, b"OK", [(b"Content-Length", b"5"), (b"X-A", b"1")])
        )
        self.assertFalse(sink.done)
        conn.dataReceived(b"lo")
        self.assertEqual(b"".join(sink.body), b"hello")
        self.assertTrue(sink.done)
        self.assertEqual(pool.released, [conn])
        self.assertTrue(conn.reused)

    def test_bytewise(self) -> None:
        """
        A response split at every byte parses the same.
        """
        conn, _, pool = connect()
        sink = send(conn)
        feedBytewise(
            conn,
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n10;ext=1\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\n",
        )
        assert sink.head is not None
        self.assertEqual(sink.head[0], 201)
        self.assertEqual(b"".join(sink.body), b"abc0123456789abcdef")
        self.assertTrue(sink.done)
        self.assertEqual(pool.released, [conn])

    def test_chunkedInOneRead(self) -> None:
        """
        A whole chunked response in one read.
        """
        conn, _, pool = connect()
        sink = send(conn)
        conn.dataReceived(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        self.assertEqual(b"".join(sink.body), b"hello world")
        self.assertTrue(sink.done)
        self.assertEqual(pool.released, [conn])

    def test_untilClose(self) -> None:
        """
        A body without a length ends with the connection, which is then not
        reused.
        """
        conn, _, pool = connect()
        sink = send(conn)
        conn.dataReceived(b"HTTP/1.1 200 OK\r\n\r\nsome ")
        conn.dataReceived(b"data")
        self.assertFalse(sink.done)
        conn.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(b"".join(sink.body), b"some data")
        self.assertTrue(sink.done)
        self.assertEqual(pool.released, [])
        self.assertEqual(pool.closed, [conn])

    def test_headHasNoBody(self) -> None:
        """
        The response to HEAD has no body whatever its Content-Length says.
        """
        conn, _, pool = connect()
        sink = send(conn, b"HEAD / HTTP/1.1\r\n\r\n", isHead=True)
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        self.assertTrue(sink.done)
        self.assertEqual(sink.body, [])
        self.assertEqual(pool.released, [conn])

    def test_noContent(self) -> None:
        """
        204 and 304 responses have no body.
        """
        for code in (204, 304):
            conn, _, pool = connect()
            sink = send(conn)
            conn.dataReceived(b"HTTP/1.1 %d X\r\n\r\n" % (code,))
            self.assertTrue(sink.done)
            self.assertEqual(pool.released, [conn])

    def test_interimSkipped(self) -> None:
        """
        1xx interim responses are skipped; the final response is reported.
        """
        conn, _, _ = connect()
        sink = send(conn)
        conn.dataReceived(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        assert sink.head is not None
        self.assertEqual(sink.head[0], 200)
        self.assertEqual(sink.body, [b"ok"])

    def test_connectionClose(self) -> None:
        """
        C{Connection: close} and HTTP/1.0 responses are not reused.
        """
        for response in (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        ):
            conn, transport, pool = connect()
            sink = send(conn)
            conn.dataReceived(response)
            self.assertTrue(sink.done)
            self.assertEqual(pool.released, [])
            self.assertEqual(pool.discarded, [conn])
            self.assertTrue(transport.disconnecting)

    def test_http10KeepAlive(self) -> None:
        """
        An HTTP/1.0 response that asks for keep-alive is reused.
        """
        conn, _, pool = connect()
        send(conn)
        conn.dataReceived(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(pool.released, [conn])


class BadResponseTests(SynchronousTestCase):
    """
    Anything that is not HTTP/1.1 fails the exchange with L{BadResponse}
    and drops the connection.
    """

    def assertBad(self, data: bytes, message: str) -> None:
        """
        C{data} fails the exchange with a message containing C{message}.
        """
        conn, transport, _ = connect()
        sink = send(conn)
        conn.dataReceived(data)
        assert sink.failure is not None, data
        self.assertIsInstance(sink.failure.value, BadResponse)
        self.assertIn(message, str(sink.failure.value))
        self.assertTrue(sink.started)
        self.assertTrue(transport.disconnecting)

    def test_garbage(self) -> None:
        """
        A status line that is not HTTP.
        """
        self.assertBad(b"NOT HTTP\r\n\r\n", "invalid status line")

    def test_badCode(self) -> None:
        """
        A status code that is not three digits.
        """
        self.assertBad(b"HTTP/1.1 2000 OK\r\n\r\n", "invalid status line")

    def test_badHeader(self) -> None:
        """
        A header line without a colon, or with space before it.
        """
        self.assertBad(b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", "invalid header line")
        self.assertBad(b"HTTP/1.1 200 OK\r\nX-A : 1\r\n\r\n", "invalid header line")

    def test_badLength(self) -> None:
        """
        A Content-Length that is not a number, or two that disagree.
        """
        self.assertBad(
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"
        )
        self.assertBad(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "conflicting Content-Length",
        )

    def test_badChunk(self) -> None:
        """
        A chunk size that is not hexadecimal, or data longer than its size.
        """
        self.assertBad(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "invalid chunk size",
        )
        self.assertBad(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            "longer than its size",
        )

    def test_headTooLarge(self) -> None:
        """
        A response head over 64 KiB.
        """
        self.assertBad(
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000, "larger than 64 KiB"
        )

    def test_switchingProtocols(self) -> None:
        """
        101 is refused: the proxy never asks for an upgrade.
        """
        self.assertBad(b"HTTP/1.1 101 Switching\r\n\r\n", "101")


class FailureTests(SynchronousTestCase):
    """
    A connection that ends early fails the exchange, saying whether any
    response byte had arrived.
    """

    def test_closedBeforeResponse(self) -> None:
        """
        Closed before any byte: C{started} is false, so it may be retried.
        """
        conn, _, pool = connect()
        sink = send(conn)
        conn.connectionLost(Failure(ConnectionLost()))
        assert sink.failure is not None
        self.assertIsInstance(sink.failure.value, ConnectionLost)
        self.assertFalse(sink.started)
        self.assertEqual(pool.closed, [conn])

    def test_truncatedBody(self) -> None:
        """
        A Content-Length body cut short fails with C{started} true.
        """
        conn, _, _ = connect()
        sink = send(conn)
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        conn.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(sink.failure)
        self.assertTrue(sink.started)
        self.assertFalse(sink.done)

    def test_idleClose(self) -> None:
        """
        An idle connection closing tells only the pool.
        """
        conn, _, pool = connect()
        conn.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(pool.closed, [conn])

    def test_unsolicitedData(self) -> None:
        """
        Bytes while no request is outstanding drop the connection.
        """
        conn, transport, _ = connect()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertTrue(transport.disconnecting)

    def test_extraBytes(self) -> None:
        """
        Bytes after a complete response (a confused server) drop the
        connection instead of being taken as the next response.
        """
        conn, transport, _ = connect()
        sink = send(conn)
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxEXTRA")
        self.assertTrue(sink.done)
        self.assertEqual(sink.body, [b"x"])
        self.assertTrue(transport.disconnecting)


class RequestBodyTests(SynchronousTestCase):
    """
    Request bodies are framed as declared and gate connection reuse.
    """

    def test_chunkedUpload(self) -> None:
        """
        A chunked upload is framed with chunk sizes and a last chunk.
        """
        conn, transport, pool = connect()
        send(conn, b"POST / HTTP/1.1\r\n\r\n", chunked=True, hasBody=True)
        transport.clear()
        conn.writeBody(b"hello")
        conn.writeBody(b"")
        conn.writeBody(b"x" * 17)
        conn.endBody()
        self.assertEqual(
            transport.value(), b"5\r\nhello\r\n11\r\n" + b"x" * 17 + b"\r\n0\r\n\r\n"
        )
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(pool.released, [conn])

    def test_lengthUpload(self) -> None:
        """
        A body of known length is written as is.
        """
        conn, transport, _ = connect()
        send(conn, b"PUT / HTTP/1.1\r\nContent-Length: 3\r\n\r\n", hasBody=True)
        transport.clear()
        conn.writeBody(b"abc")
        conn.endBody()
        self.assertEqual(transport.value(), b"abc")

    def test_earlyResponse(self) -> None:
        """
        A response that completes before the upload does is delivered, and
        the connection (mid-request) is dropped rather than reused.
        """
        conn, transport, pool = connect()
        sink = send(conn, b"POST / HTTP/1.1\r\n\r\n", chunked=True, hasBody=True)
        conn.writeBody(b"part")
        conn.dataReceived(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(sink.done)
        self.assertEqual(pool.released, [])
        self.assertTrue(transport.disconnecting)

    def test_waitsForBody(self) -> None:
        """
        A connection whose response is done is reused only once the request
        body has been sent too.
        """
        conn, _, pool = connect()
        send(conn, b"POST / HTTP/1.1\r\n\r\n", hasBody=True)
        self.assertEqual(pool.released, [])
        conn.endBody()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(pool.released, [conn])


def feedInPieces(conn: UpstreamConnection, data: bytes, size: int) -> None:
    """
    Deliver C{data} in reads of C{size} bytes.
    """
    for i in range(0, len(data), size):
        conn.dataReceived(data[i : i + size])


class SplitReadTests(SynchronousTestCase):
    """
    Every row of L{tests.test_upstream_framing.ROWS} parses the same whether
    it arrives in one read, one byte at a time, or in reads of 2, 3 and 7
    bytes: the limits and checks apply to the bytes, not to how they are
    split.
    """

    def outcome(
        self, row: Row, feed: Callable[[UpstreamConnection, bytes], None]
    ) -> tuple[object, ...]:
        """
        Feed C{row}'s bytes with C{feed}, check the parser's outcome against
        the row's and return a summary to compare across ways of feeding.
        """
        conn, transport, pool = connect()
        sink = send(conn, isHead=row.method == b"HEAD")
        feed(conn, row.raw)
        if row.then == "close" and not transport.disconnecting:
            conn.connectionLost(Failure(ConnectionDone()))
        failure = sink.failure
        if row.outcome == "refused":
            assert failure is not None, row.name
            self.assertIsInstance(failure.value, BadResponse)
            self.assertIn(row.word, str(failure.value))
            self.assertIsNone(sink.head, row.name)
            self.assertTrue(transport.disconnecting)
            return (str(failure.value),)
        if row.outcome == "aborted":
            assert failure is not None, row.name
            self.assertIsInstance(failure.value, BadResponse)
            self.assertIsNotNone(sink.head, row.name)
            self.assertTrue(transport.disconnecting)
            return (str(failure.value),)
        self.assertIsNone(failure, row.name)
        self.assertTrue(sink.done, row.name)
        assert sink.head is not None
        code, _, headers = sink.head
        self.assertEqual(code, row.code)
        self.assertEqual(b"".join(sink.body), row.body)
        lower = [(name.lower(), value) for name, value in headers]
        for name in row.absent:
            self.assertNotIn(name, [n for n, _ in lower], row.name)
        for pair in row.present:
            self.assertEqual(lower.count(pair), 1, (row.name, pair))
        if row.reused:
            self.assertEqual(pool.released, [conn], row.name)
            self.assertFalse(transport.disconnecting, row.name)
        else:
            # Whatever follows the response drops the connection (at once
            # if it came in the same read, else when it arrives on the
            # idle connection).
            self.assertTrue(transport.disconnecting or pool.closed == [conn], row.name)
        return (code, headers, b"".join(sink.body))

    def test_rows(self) -> None:
        """
        Each row, fed whole, byte by byte and in small pieces.
        """
        for row in ROWS:
            whole = self.outcome(row, lambda conn, data: conn.dataReceived(data))
            self.assertEqual(self.outcome(row, feedBytewise), whole, row.name)
            for size in (2, 3, 7):
                split = self.outcome(row, partial(feedInPieces, size=size))
                self.assertEqual(split, whole, (row.name, size))

    def test_headLimitAcrossReads(self) -> None:
        """
        A head of exactly 64 KiB is accepted and one byte more is refused,
        however it is split.
        """
        prefix = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: "
        fill = MAX_HEAD - len(prefix) - 4
        for size in (1, 1000, MAX_HEAD + 10):
            conn, _, _ = connect()
            sink = send(conn)
            feedInPieces(conn, prefix + b"a" * fill + b"\r\n\r\n", size)
            self.assertTrue(sink.done, size)
            conn, _, _ = connect()
            sink = send(conn)
            feedInPieces(conn, prefix + b"a" * (fill + 1) + b"\r\n\r\n", size)
            assert sink.failure is not None, size
            self.assertIn("larger than 64 KiB", str(sink.failure.value))

    def test_fieldLimit(self) -> None:
        """
        100 header fields are accepted, 101 refused; so are trailer fields.
        """
        fields = b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(99))
        conn, _, _ = connect()
        sink = send(conn)
        feedBytewise(conn, b"HTTP/1.1 200 OK\r\n" + fields + b"X-L: 0\r\n\r\n")
        self.assertEqual(sink.failure, None)
        conn, _, _ = connect()
        sink = send(conn)
        conn.dataReceived(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
            + fields
            + b"X-L: 0\r\nX-M: 1\r\n\r\n"
        )
        assert sink.failure is not None
        self.assertIn("more than 100 trailer fields", str(sink.failure.value))

    def test_bareLfRefusedAtOnce(self) -> None:
        """
        A head with bare LF line ends is refused as soon as the LF arrives,
        not after waiting for a CRLF CRLF that never comes; a CRLF split
        between two reads is not mistaken for one.
        """
        conn, _, _ = connect()
        sink = send(conn)
        conn.dataReceived(b"HTTP/1.1 200 OK\r")
        conn.dataReceived(b"\nX-A: 1\r")
        self.assertIsNone(sink.failure)
        conn.dataReceived(b"\nX-B: 2\n")
        assert sink.failure is not None
        self.assertIn("bare LF", str(sink.failure.value))

    def test_chunkedHeadWaitsForFirstSize(self) -> None:
        """
        A chunked response is reported once its first chunk size is valid,
        so a body that is not chunked fails before any of it is forwarded.
        """
        conn, _, _ = connect()
        sink = send(conn)
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.assertIsNone(sink.head)
        conn.dataReceived(b"5\r")
        self.assertIsNone(sink.head)
        conn.dataReceived(b"\n")
        self.assertIsNotNone(sink.head)
