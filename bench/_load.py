#!/usr/bin/env python
"""
A small Twisted HTTP load generator, used by C{bench/run.py} when C{wrk} is missing.

It keeps C{CONNECTIONS} keep-alive HTTP/1.1 connections busy for C{DURATION}
seconds, each sending C{GET PATH} and waiting for the whole response before
sending the next one (no pipelining, like C{wrk}), records the latency of
every response and prints one JSON object on standard output::

    {"requests": ..., "seconds": ..., "rps": ..., "p50_ms": ..., "p99_ms": ...,
     "errors": ..., "error_detail": "..."}

Responses must carry a C{Content-Length} or be chunked.  Non-2xx/3xx
responses, lost connections and failed connection attempts count as errors;
a lost connection is replaced by a new one.

Run as C{python bench/_load.py HOST PORT CONNECTIONS DURATION [PATH]}.  Being
Python, it needs much more CPU per request than C{wrk}, so absolute numbers
measured with it are lower; use it the same way for every target and compare
ratios.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from typing import cast

from twisted.internet.interfaces import IReactorTCP, IReactorTime, ITCPTransport
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.python.failure import Failure

MAX_HEAD = 65536
"""The largest response head accepted, in bytes."""


class ResponseError(Exception):
    """
    A response could not be parsed.
    """


class _Reactor(IReactorTCP, IReactorTime):
    """
    The reactor interfaces L{LoadFactory} uses (for type checking only).
    """


class Stats:
    """
    Results shared by all connections of a run.

    @ivar running: whether new requests may still be sent.
    @ivar latencies: the latency of every completed response, in seconds.
    @ivar errors: error descriptions and how often each happened.
    """

    def __init__(self) -> None:
        self.running = True
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()


def parseHead(head: bytes) -> tuple[int, int | None, bool, bool]:
    """
    Parse a response head.

    @param head: the status line and headers, without the blank line.
    @return: the status code, the C{Content-Length} (or L{None}), whether the
        body is chunked and whether the server will close the connection.
    @raise ResponseError: if the status line is malformed.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ResponseError(f"bad status line {lines[0][:80]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise ResponseError(f"bad status line {lines[0][:80]!r}") from None
    length = None
    chunked = False
    close = parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value.endswith(b"chunked")
        elif name == b"connection":
            close = b"close" in value or (close and b"keep-alive" not in value)
    return status, length, chunked, close


def chunkedBodyEnd(buffer: bytes, start: int) -> int:
    """
    Find the end of a chunked body.

    @param buffer: bytes received so far.
    @param start: where the body starts in C{buffer}.
    @return: the offset just past the body, or -1 if it is incomplete.
    @raise ResponseError: if a chunk size is malformed.
    """
    position = start
    while True:
        lineEnd = buffer.find(b"\r\n", position)
        if lineEnd < 0:
            return -1
        sizeText = buffer[position:lineEnd].split(b";", 1)[0].strip()
        try:
            size = int(sizeText, 16)
        except ValueError:
            raise ResponseError(f"bad chunk size {sizeText[:20]!r}") from None
        if size == 0:
            # Last chunk: skip any trailers up to the final blank line.
            end = buffer.find(b"\r\n\r\n", lineEnd)
            return -1 if end < 0 else end + 4
        position = lineEnd + 2 + size + 2
        if position > len(buffer):
            return -1


class LoadProtocol(Protocol):
    """
    Send one request at a time on a keep-alive connection, for as long as the
    run lasts.

    @ivar _sentAt: when the outstanding request was sent.
    @ivar _buffer: response bytes not yet parsed.
    @ivar _done: whether the protocol stopped on purpose (closing is no error).
    """

    factory: LoadFactory

    def __init__(self, stats: Stats, request: bytes) -> None:
        """
        @param stats: where to record results.
        @param request: the raw request to send, again and again.
        """
        self._stats = stats
        self._request = request
        self._sentAt = 0.0
        self._buffer = b""
        self._done = False

    def _transport(self) -> ITCPTransport:
        """
        @return: the connection's transport: a TCP one, since L{LoadFactory}
            connects with C{connectTCP}.
        """
        assert self.transport is not None
        return cast(ITCPTransport, self.transport)

    def connectionMade(self) -> None:
        """
        Send the first request.
        """
        self._send()

    def _send(self) -> None:
        """
        Send the request if the run is still going, else hang up.
        """
        if not self._stats.running:
            self._done = True
            self._transport().loseConnection()
            return
        self._sentAt = time.perf_counter()
        self._transport().write(self._request)

    def dataReceived(self, data: bytes) -> None:
        """
        Parse the response; once complete, record it and send the next request.

        @param data: the bytes just received.
        """
        self._buffer += data
        buffer = self._buffer
        headEnd = buffer.find(b"\r\n\r\n")
        if headEnd < 0:
            if len(buffer) > MAX_HEAD:
                self._fail("response head too large")
            return
        try:
            status, length, chunked, close = parseHead(buffer[:headEnd])
            bodyStart = headEnd + 4
            if chunked:
                end = chunkedBodyEnd(buffer, bodyStart)
            elif length is not None:
                end = bodyStart + length if len(buffer) >= bodyStart + length else -1
            else:
                raise ResponseError("response without Content-Length")
        except (ResponseError, ValueError) as e:
            self._fail(str(e))
            return
        if end < 0:
            return
        latency = time.perf_counter() - self._sentAt
        if not self._stats.running:
            self._send()
            return
        self._stats.latencies.append(latency)
        if not 200 <= status < 400:
            self._stats.errors[f"HTTP status {status}"] += 1
        self._buffer = buffer[end:]
        if self._buffer:
            self._fail("unexpected bytes after the response")
        elif close:
            self._stats.errors["server closed the connection"] += 1
            self._done = True
            self._transport().loseConnection()
            self.factory.replace()
        else:
            self._send()

    def _fail(self, reason: str) -> None:
        """
        Record an error and drop the connection (a new one replaces it).

        @param reason: what went wrong.
        """
        self._stats.errors[reason] += 1
        self._done = True
        self._transport().abortConnection()
        self.factory.replace()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Count an unexpected disconnection as an error and reconnect.

        @param reason: why the connection was lost.
        """
        if self._done or not self._stats.running:
            return
        self._stats.errors[f"connection lost: {reason.getErrorMessage()}"] += 1
        self.factory.replace()


class LoadFactory(ClientFactory[LoadProtocol]):
    """
    Open connections to the target and replace any that fail.
    """

    def __init__(
        self, reactor: _Reactor, host: str, port: int, path: str, stats: Stats
    ) -> None:
        """
        @param reactor: the reactor to connect with.
        @param host: the target's host.
        @param port: the target's port.
        @param path: the path to request.
        @param stats: where to record results.
        """
        self._reactor = reactor
        self._host = host
        self._port = port
        self._stats = stats
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "User-Agent: bluegreen-bench\r\n\r\n"
        ).encode("ascii")

    def connect(self) -> None:
        """
        Open one more connection to the target.
        """
        self._reactor.connectTCP(self._host, self._port, self)

    def replace(self, delay: float = 0.0) -> None:
        """
        Open a connection to replace one that was lost, if the run goes on.

        @param delay: seconds to wait first.
        """
        if self._stats.running:
            self._reactor.callLater(delay, self.connect)

    def buildProtocol(self, addr: object) -> LoadProtocol:
        """
        @param addr: the target's address.
        @return: a protocol sending requests to it.
        """
        protocol = LoadProtocol(self._stats, self._request)
        protocol.factory = self
        return protocol

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        """
        Count a failed connection attempt and retry a little later.

        @param connector: the failed connector.
        @param reason: why it failed.
        """
        self._stats.errors[f"connect failed: {reason.getErrorMessage()}"] += 1
        self.replace(0.1)


def percentile(ordered: list[float], fraction: float) -> float:
    """
    Nearest-rank percentile.

    @param ordered: values sorted in increasing order, not empty.
    @param fraction: the percentile wanted, as a fraction (0.99 for p99).
    @return: the smallest value with at least C{fraction} of all values at or
        below it.
    """
    rank = min(max(math.ceil(fraction * len(ordered)), 1), len(ordered))
    return ordered[rank - 1]


def summarize(stats: Stats, seconds: float) -> dict[str, object]:
    """
    Summarize a run.

    @param stats: the run's results.
    @param seconds: how long the run lasted.
    @return: the JSON-able summary described in the module docstring.
    """
    ordered = sorted(stats.latencies)
    errors = sum(stats.errors.values())
    return {
        "requests": len(ordered),
        "seconds": seconds,
        "rps": len(ordered) / seconds,
        "p50_ms": percentile(ordered, 0.50) * 1000 if ordered else None,
        "p99_ms": percentile(ordered, 0.99) * 1000 if ordered else None,
        "errors": errors,
        "error_detail": "; ".join(f"{n} x {what}" for what, n in stats.errors.items()),
    }


def main(argv: list[str]) -> None:
    """
    Run the load and print the summary as JSON.

    @param argv: C{[HOST, PORT, CONNECTIONS, DURATION]} and optionally C{PATH}.
    """
    from twisted.internet import reactor

    host, port, connections, duration, *rest = argv
    path = rest[0] if rest else "/"
    stats = Stats()
    factory = LoadFactory(cast(_Reactor, reactor), host, int(port), path, stats)
    started = time.perf_counter()

    def stop() -> None:
        stats.running = False
        print(json.dumps(summarize(stats, time.perf_counter() - started)))
        reactor.stop()

    for _ in range(int(connections)):
        factory.connect()
    reactor.callLater(float(duration), stop)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
