#!/usr/bin/env python
"""
The benchmark's fast backend: a minimal HTTP/1.1 server.

It answers C{GET /big...} with a 4 MiB body, written only as fast as the
client reads it (the slow readers of C{bench/hostile.py}), and every other
request with the same small C{200 OK} response, and does as
little work as possible so that it leaves the CPU to the proxy being measured.
It parses requests only as far as keep-alive requires: the end of the head
(C{CRLF CRLF}), a C{Content-Length} body to skip, C{HEAD} requests (no body)
and whether the connection must be closed afterwards (C{Connection: close},
HTTP/1.0 without C{Connection: keep-alive}).  Pipelined requests and requests
split across reads are handled by buffering.  Chunked request bodies are not
supported (nothing in the benchmark sends one).

Run as C{python bench/backend.py PORT}; it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import sys

from _serve import serve
from twisted.internet.protocol import Factory, Protocol

BODY = b"hello world\n"

_HEAD = b"".join(
    [
        b"HTTP/1.1 200 OK\r\n",
        b"Content-Type: text/plain\r\n",
        b"Content-Length: %d\r\n" % len(BODY),
    ]
)
RESPONSE = _HEAD + b"\r\n" + BODY
RESPONSE_HEAD = _HEAD + b"\r\n"
RESPONSE_CLOSE = _HEAD + b"Connection: close\r\n\r\n" + BODY
RESPONSE_HEAD_CLOSE = _HEAD + b"Connection: close\r\n\r\n"
BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)

#: The body of C{GET /big...}: what slow readers read (bench/hostile.py).
BIG_SIZE = 4 * 1024 * 1024
_BIG_PIECE = b"x" * 65536
BIG_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n" + (
    b"Content-Length: %d\r\n\r\n" % BIG_SIZE
)

MAX_HEAD = 65536
"""The largest request head accepted, in bytes, before the connection is
dropped."""


def headerValue(head: bytes, name: bytes) -> bytes | None:
    """
    Find a header in a lower-cased request head.

    @param head: the request head, lower-cased, without the final blank line.
    @param name: the lower-case header name, without the colon.
    @return: the first value of that header, stripped, or L{None}.
    """
    start = head.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    end = head.find(b"\r\n", start)
    return (head[start:] if end < 0 else head[start:end]).strip()


class FastHTTP(Protocol):
    """
    Answer every HTTP request on a connection with L{RESPONSE}.

    @ivar _buffer: received bytes not yet parsed.
    @ivar _skip: bytes of the current request body still to be discarded.
    @ivar _reply: the response to send once the body has been skipped.
    @ivar _close: whether to close the connection after that response.
    @ivar _big: bytes of a big body still to write (requests that follow
        wait in C{_buffer}).
    @ivar _bigClose: whether to close the connection after the big body.
    """

    _buffer = b""
    _skip = 0
    _reply = b""
    _close = False
    _big = 0
    _bigClose = False

    def dataReceived(self, data: bytes) -> None:
        """
        Parse every complete request in the buffer and answer them in one
        write.

        @param data: the bytes just received.
        """
        if self._close and not self._skip:
            return
        if self._big:
            # Requests after a /big one wait until its body is written.
            self._buffer += data
            return
        buffer = self._buffer + data if self._buffer else data
        replies = []
        while True:
            if self._skip:
                skipped = min(self._skip, len(buffer))
                buffer = buffer[skipped:]
                self._skip -= skipped
                if self._skip:
                    break
                replies.append(self._reply)
                if self._close:
                    break
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            buffer = buffer[end + 4 :]
            reply, length, close = self._parse(head)
            if reply is BIG_HEAD:
                replies.append(reply)
                self._startBig(close)
                self._buffer = buffer
                break
            if length:
                self._skip, self._reply, self._close = length, reply, close
                continue
            replies.append(reply)
            if close:
                self._close = True
                break
        transport = self.transport
        assert transport is not None
        if replies:
            transport.write(b"".join(replies))
        if self._big:
            transport.registerProducer(self, False)
            return
        if self._close and not self._skip:
            transport.loseConnection()
            self._buffer = b""
        elif len(buffer) > MAX_HEAD:
            transport.write(BAD_REQUEST)
            transport.loseConnection()
            self._buffer = b""
        else:
            self._buffer = buffer

    def _startBig(self, close: bool) -> None:
        """
        Start writing a L{BIG_SIZE} body, as fast as the peer reads it.
        """
        self._big = BIG_SIZE
        self._bigClose = close

    def resumeProducing(self) -> None:
        """
        The transport wants more of the big body (a pull producer: memory
        stays at one piece per connection however slow the reader).
        """
        transport = self.transport
        assert transport is not None
        piece = _BIG_PIECE[: min(self._big, len(_BIG_PIECE))]
        self._big -= len(piece)
        transport.write(piece)
        if self._big:
            return
        transport.unregisterProducer()  # type: ignore[attr-defined]
        if self._bigClose:
            transport.loseConnection()
            return
        pending, self._buffer = self._buffer, b""
        self.dataReceived(pending)

    def stopProducing(self) -> None:
        """
        The connection is gone.
        """
        self._big = 0

    @staticmethod
    def _parse(head: bytes) -> tuple[bytes, int, bool]:
        """
        Work out how to answer one request.

        @param head: the lower-cased request head, without the blank line.
        @return: the response to send, the length of the request body to skip
            first, and whether to close the connection after the response.
        """
        lineEnd = head.find(b"\r\n")
        requestLine = head if lineEnd < 0 else head[:lineEnd]
        connection = headerValue(head, b"connection") or b""
        if requestLine.endswith(b"http/1.0"):
            close = b"keep-alive" not in connection
        else:
            close = b"close" in connection
        rawLength = headerValue(head, b"content-length")
        length = 0
        if rawLength is not None:
            try:
                length = int(rawLength)
            except ValueError:
                return BAD_REQUEST, 0, True
            if length < 0:
                return BAD_REQUEST, 0, True
        # Only an HTTP/1.1 close gets an explicit "Connection: close": HTTP/1.0
        # closes by default, and the stock ReverseProxyResource (which talks
        # HTTP/1.0) would copy that hop-by-hop header to its own client, making
        # wrk reconnect after every response.
        announce = close and not requestLine.endswith(b"http/1.0")
        if requestLine.startswith(b"get /big"):
            return BIG_HEAD, 0, close
        if requestLine.startswith(b"head "):
            reply = RESPONSE_HEAD_CLOSE if announce else RESPONSE_HEAD
        else:
            reply = RESPONSE_CLOSE if announce else RESPONSE
        return reply, length, close


def main(argv: list[str]) -> None:
    """
    Serve L{FastHTTP} on 127.0.0.1 until killed.

    @param argv: C{[PORT]}.
    """
    (port,) = argv
    serve(port, Factory.forProtocol(FastHTTP))


if __name__ == "__main__":
    main(sys.argv[1:])
