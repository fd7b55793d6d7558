# -*- test-case-name: tests.test_upstream -*-
"""
A lean HTTP/1.1 client connection for the proxy's upstream side.

L{twisted.web.client.Agent} is general and correct but spends most of a
proxied request's time in machinery a reverse proxy does not need (it measured
only about 1.2 times the stock proxy's throughput here).  This protocol does
exactly one thing: send one request at a time over a persistent connection and
hand the response to a L{ResponseSink} as it arrives, with the framing rules of
RFC 9112 (Content-Length, chunked, read-until-close, bodiless responses).

It never buffers a body: response data goes to the sink as it arrives and the
sink applies backpressure by pausing this connection's transport.
"""

from __future__ import annotations

from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IPushProducer, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

# BadResponse is imported from here by the proxy's other modules.
from bluegreen.proxy.framing import (
    BARE_LF,
    MAX_CHUNK_LINE,
    MAX_FIELDS,
    MAX_HEAD,
    parseChunkSize,
    parseHead,
    parseTrailerLine,
)
from bluegreen.proxy.framing import BadResponse as BadResponse

#: Statuses whose responses never have a body (RFC 9110 section 6.4.1).
_NO_BODY = frozenset((204, 304))

_HEAD_TOO_LARGE = f"response head is larger than {MAX_HEAD // 1024} KiB"

# Body framing of the response being read.
_LENGTH, _CHUNKED, _UNTIL_CLOSE, _NONE = range(4)

# Chunked decoder states.
_C_SIZE, _C_DATA, _C_DATA_END, _C_TRAILER = range(4)


class ResponseSink(TypingProtocol):
    """
    What the connection reports a response to.
    """

    def responseHead(
        self, code: int, phrase: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """
        The status line and headers (interim 1xx responses are skipped).
        """

    def responseData(self, data: bytes) -> None:
        """
        Some of the body, de-framed.
        """

    def responseDone(self) -> None:
        """
        The whole body has arrived.
        """

    def responseFailed(self, reason: Failure, started: bool) -> None:
        """
        The exchange failed.

        @param started: C{True} if any byte of the response had arrived (so
            the request must not be retried anywhere).
        """


class ConnectionOwner(TypingProtocol):
    """
    What a connection returns itself to (the pool that lent it): the pool
    knows connections only through this, so neither module imports the other
    both ways.
    """

    def release(self, conn: UpstreamConnection) -> None:
        """
        Take back a connection whose exchange is complete and reusable.

        @param conn: The connection.
        """

    def discard(self, conn: UpstreamConnection) -> None:
        """
        Close a connection that cannot be reused.

        @param conn: The connection.
        """

    def connectionClosed(self, conn: UpstreamConnection) -> None:
        """
        Forget a connection that has closed.

        @param conn: The connection.
        """


class UpstreamConnection(Protocol):
    """
    One persistent HTTP/1.1 connection to an environment.

    The pool lends a connection to one exchange at a time; the exchange calls
    L{sendHead}, then L{writeBody}/L{endBody} if it has a body, and receives
    the response through its L{ResponseSink}.  The connection returns itself to
    the pool once both the request and the response are complete and the
    connection can be reused.

    @ivar reused: C{True} once the connection has carried a request, so a
        failure before any response byte may just mean the server closed an
        idle connection (and the request can safely be sent again).
    """

    transport: ITransport

    def __init__(self, pool: ConnectionOwner) -> None:
        """
        @param pool: The pool that owns this connection.
        """
        self.pool = pool
        self.reused = False
        self.idleSince = 0.0
        self._sink: ResponseSink | None = None
        self._buffer = b""
        self._head = bytearray()
        self._headBytes = 0
        self._trailerBytes = 0
        self._trailerFields = 0
        self._pendingHead: tuple[int, bytes, list[tuple[bytes, bytes]]] | None = None
        self._inHead = False
        self._started = False
        self._framing = _NONE
        self._remaining = 0
        self._chunkState = _C_SIZE
        self._keepAlive = True
        self._headRequest = False
        self._chunkedUpload = False
        self._requestDone = True
        self._responseDone = True
        self._closed = False
        self._paused = False

    # Connection lifecycle

    def connectionMade(self) -> None:
        """
        Connected: the pool hands the connection out.
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Finish or fail the exchange in progress and leave the pool.

        A body framed by the connection's end completes here; any other
        exchange in progress fails.
        """
        self._closed = True
        sink, self._sink = self._sink, None
        self.pool.connectionClosed(self)
        if sink is None:
            return
        if self._framing == _UNTIL_CLOSE and not self._inHead:
            self._responseDone = True
            sink.responseDone()
        else:
            sink.responseFailed(reason, self._started)

    def abort(self) -> None:
        """
        Drop the connection at once (the exchange using it was abandoned).
        """
        self._sink = None
        self._keepAlive = False
        if not self._closed:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # Request side

    def sendHead(
        self,
        head: bytes,
        sink: ResponseSink,
        isHead: bool,
        chunked: bool,
        hasBody: bool,
    ) -> None:
        """
        Start an exchange by writing the request head.

        @param head: The request line and headers, ending with an empty line.
        @param sink: Receives the response.
        @param isHead: C{True} for a C{HEAD} request (the response has no body).
        @param chunked: C{True} if the body will be sent with chunked framing.
        @param hasBody: C{True} if L{writeBody}/L{endBody} will follow.
        """
        self._sink = sink
        self._buffer = b""
        self._head.clear()
        self._headBytes = 0
        self._pendingHead = None
        self._inHead = True
        self._started = False
        self._framing = _NONE
        self._keepAlive = True
        self._headRequest = isHead
        self._chunkedUpload = chunked
        self._requestDone = not hasBody
        self._responseDone = False
        self.transport.write(head)

    def writeBody(self, data: bytes) -> None:
        """
        Send some of the request body.

        @param data: Body bytes (framed here when the upload is chunked).
        """
        if self._closed or not data:
            return
        if self._chunkedUpload:
            self.transport.writeSequence([b"%x\r\n" % (len(data),), data, b"\r\n"])
        else:
            self.transport.write(data)

    def endBody(self) -> None:
        """
        The request body is complete.
        """
        if self._closed:
            return
        if self._chunkedUpload:
            self.transport.write(b"0\r\n\r\n")
        self._requestDone = True
        self._maybeRelease()

    def registerBodyProducer(self, producer: IPushProducer) -> None:
        """
        Let the transport pause C{producer} while its write buffer is full.
        """
        self.transport.registerProducer(producer, True)  # type: ignore[attr-defined]

    def unregisterBodyProducer(self) -> None:
        """
        Undo L{registerBodyProducer}.
        """
        if not self._closed:
            self.transport.unregisterProducer()  # type: ignore[attr-defined]

    # Flow control for the response (the exchange is the consumer's producer)

    def pauseProducing(self) -> None:
        """
        Stop reading the response (the client is slow).
        """
        if not self._closed:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        """
        Read the response again.
        """
        if not self._closed:
            self._paused = False
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    # Response side

    def dataReceived(self, data: bytes) -> None:
        """
        Parse response bytes as they arrive.
        """
        if self._sink is None:
            # Bytes outside any exchange: the server is confused.  The
            # connection cannot be trusted any more.
            self.abort()
            return
        self._started = True
        try:
            if self._inHead:
                data = self._headData(data)
                if not data or self._sink is None:
                    return
            self._bodyData(data)
        except BadResponse as e:
            # Never reused: what follows on this connection cannot be
            # trusted to start a response.
            self._keepAlive = False
            sink, self._sink = self._sink, None
            self.abort()
            if sink is not None:
                sink.responseFailed(Failure(e), True)

    def _headData(self, data: bytes) -> bytes:
        """
        Collect a head (or several: interim 1xx heads come first); return
        what follows the final one.
        """
        buffer = self._head
        while not buffer:
            # The usual case, a whole head in one read: no copy into the
            # buffer.
            end = data.find(b"\r\n\r\n")
            if end < 0 or self._headBytes + end + 4 > MAX_HEAD:
                break
            self._headBytes += end + 4
            if self._parseHead(data[:end]):
                return data[end + 4 :]
            data = data[end + 4 :]
        # Only the new bytes are searched (a head split in many reads costs
        # no more than one read).
        old = len(buffer)
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n", max(0, old - 3))
            if end < 0:
                if self._headBytes + len(buffer) > MAX_HEAD:
                    raise BadResponse(_HEAD_TOO_LARGE)
                if buffer.count(b"\n", old) != buffer.count(b"\r\n", max(0, old - 1)):
                    # Refused at once, rather than waiting for a CRLF CRLF
                    # that may never come (RFC 9112 section 2.2 allows it).
                    raise BadResponse(BARE_LF)
                return b""
            self._headBytes += end + 4
            if self._headBytes > MAX_HEAD:
                raise BadResponse(_HEAD_TOO_LARGE)
            head = bytes(buffer[:end])
            del buffer[: end + 4]
            old = 0
            if self._parseHead(head):
                rest = bytes(buffer)
                buffer.clear()
                return rest

    def _parseHead(self, data: bytes) -> bool:
        """
        Parse one response head; return C{False} for an interim response.
        """
        head = parseHead(data)
        code = head.code
        if code < 200:
            if code == 101:
                # The proxy never asks for an upgrade.
                raise BadResponse("unexpected 101 Switching Protocols")
            # Interim responses (100, 102, 103) are not forwarded, as nginx
            # does by default: twisted.web has no way to send one.
            return False
        headers = head.headers
        if code == 204:
            # RFC 9110 sections 8.6 and 6.1: never Content-Length nor
            # Transfer-Encoding on a 204.
            headers = [
                (name, value)
                for name, value in headers
                if name.lower() not in (b"content-length", b"transfer-encoding")
            ]
        self._keepAlive = head.keepAlive
        length = head.length
        if self._headRequest or code in _NO_BODY:
            self._framing = _NONE
        elif head.chunked:
            self._framing = _CHUNKED
            self._chunkState = _C_SIZE
            self._trailerBytes = 0
            self._trailerFields = 0
        elif length is not None:
            self._framing = _LENGTH
            self._remaining = length
        else:
            self._framing = _UNTIL_CLOSE
            self._keepAlive = False
        self._inHead = False
        if self._framing == _CHUNKED:
            # Told once the first chunk-size line is valid, so that a body
            # that is not chunked at all still gets the client a 502 (no
            # byte of the head would have been sent before it anyway).
            self._pendingHead = (code, head.phrase, headers)
            return True
        sink = self._sink
        assert sink is not None
        sink.responseHead(code, head.phrase, headers)
        if self._framing == _NONE or (self._framing == _LENGTH and length == 0):
            self._finishResponse()
        return True

    def _bodyData(self, data: bytes) -> None:
        framing = self._framing
        if framing == _LENGTH:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                self._deliver(data)
                return
            extra = data[remaining:]
            self._remaining = 0
            if remaining:
                self._deliver(data[:remaining])
            if extra:
                # More than the length said: the connection is not reused,
                # and the extra bytes never become a response.
                self._keepAlive = False
            if self._sink is not None:
                self._finishResponse()
            if extra:
                self.abort()
        elif framing == _CHUNKED:
            self._chunkedData(data)
        elif framing == _UNTIL_CLOSE:
            self._deliver(data)
        else:
            # Bytes after a bodiless response.
            self.abort()

    def _deliver(self, data: bytes) -> None:
        sink = self._sink
        if sink is not None:
            sink.responseData(data)

    def _chunkedData(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        position = 0
        size = len(buffer)
        while position < size and self._sink is not None:
            state = self._chunkState
            if state == _C_DATA:
                take = min(self._remaining, size - position)
                self._remaining -= take
                self._deliver(buffer[position : position + take])
                position += take
                if self._remaining == 0:
                    self._chunkState = _C_DATA_END
                continue
            if state == _C_DATA_END:
                # RFC 9112 section 7.1: exactly CRLF after the chunk data.
                if size - position < 2:
                    if buffer[position:] != b"\r":
                        raise BadResponse("chunk data is longer than its size")
                    self._buffer = buffer[position:]
                    return
                if buffer[position : position + 2] != b"\r\n":
                    raise BadResponse("chunk data is longer than its size")
                position += 2
                self._chunkState = _C_SIZE
                continue
            end = buffer.find(b"\r\n", position)
            if end < 0:
                if size - position > MAX_CHUNK_LINE:
                    raise BadResponse("chunk framing line is too long")
                self._buffer = buffer[position:]
                return
            if end - position > MAX_CHUNK_LINE:
                raise BadResponse("chunk framing line is too long")
            line = buffer[position:end]
            position = end + 2
            if state == _C_SIZE:
                chunkSize = parseChunkSize(line)
                pending, self._pendingHead = self._pendingHead, None
                if pending is not None:
                    self._sink.responseHead(*pending)
                    if self._sink is None:
                        return
                if chunkSize == 0:
                    self._chunkState = _C_TRAILER
                else:
                    self._remaining = chunkSize
                    self._chunkState = _C_DATA
            elif line:
                # Trailer fields are checked, then dropped (hop-by-hop for
                # our purposes), within the head's limits.
                parseTrailerLine(line)
                self._trailerBytes += len(line) + 2
                self._trailerFields += 1
                if self._trailerBytes > MAX_HEAD:
                    raise BadResponse(
                        f"trailer section is larger than {MAX_HEAD // 1024} KiB"
                    )
                if self._trailerFields > MAX_FIELDS:
                    raise BadResponse(f"more than {MAX_FIELDS} trailer fields")
            else:
                if position < size:
                    # Bytes after the response: never read as another one.
                    self._keepAlive = False
                self._finishResponse()
                if position < size:
                    self.abort()
                return

    def _finishResponse(self) -> None:
        self._responseDone = True
        sink, self._sink = self._sink, None
        if sink is None:
            return
        if not self._requestDone:
            # The server answered before the whole upload was sent: the
            # connection is mid-request and cannot carry another one.
            sink.responseDone()
            self.abort()
            return
        # Release before telling the sink, so a follow-up request made from
        # the sink's callback can reuse this connection.
        self._maybeRelease()
        sink.responseDone()

    def _maybeRelease(self) -> None:
        if not (self._requestDone and self._responseDone) or self._closed:
            return
        if self._keepAlive and self._sink is None:
            self.reused = True
            if self._paused:
                # Paused by a slow client in the read that ended the
                # response: an idle connection must read (to notice a close,
                # and to hear the next response).
                self.resumeProducing()
            self.pool.release(self)
        else:
            self.pool.discard(self)
