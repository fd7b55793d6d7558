# -*- test-case-name: tests.test_proxy_integration -*-
# mypy: allow-untyped-calls
"""
HTTP/1.1 messages as the test backend and the raw client parse them: head
lines, framing, and bodies hashed as they stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Literal

from attrs import define, field

Headers = list[tuple[bytes, bytes]]

Framing = Literal["none", "length", "chunked", "close"]

#: Body bytes a parsed message keeps (beyond that only length and sha256).
KEEP_LIMIT = 1 << 20

MIB = 1 << 20


class ProtocolViolationError(Exception):
    """
    The peer sent bytes that are not valid HTTP/1.1 framing.
    """


def values(headers: Headers, name: bytes) -> list[bytes]:
    """
    Every value of a header, in order.

    @param headers: Header lines as received.
    @param name: The header name (any case).
    @return: Its values, in the order they were sent.
    """
    lower = name.lower()
    return [value for key, value in headers if key.lower() == lower]


def names(headers: Headers) -> list[bytes]:
    """
    The lower-case names of C{headers}, in order.
    """
    return [key.lower() for key, _ in headers]


def parseHead(head: bytes) -> tuple[list[bytes], Headers]:
    """
    Split a message head into its start line's parts and its headers.

    @param head: The head, without the final empty line.
    @return: C{(start-line parts, headers)}; the start line is split on the
        first two spaces.
    @raise ProtocolViolationError: If a header line has no colon.
    """
    lines = head.split(b"\r\n")
    start = lines[0].split(b" ", 2)
    headers: Headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProtocolViolationError(f"bad header line {line!r}")
        headers.append((name, value.strip(b" \t")))
    return start, headers


def framingOf(headers: Headers) -> tuple[Framing, int]:
    """
    How a message with C{headers} frames its body (ignoring bodiless cases).

    @return: C{("chunked", 0)}, C{("length", n)} or C{("close", 0)}.
    """
    encodings = values(headers, b"transfer-encoding")
    if encodings and encodings[-1].lower().endswith(b"chunked"):
        return "chunked", 0
    lengths = values(headers, b"content-length")
    if lengths:
        return "length", int(lengths[0])
    return "close", 0


_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class BodyDecoder:
    """
    De-frames one message body as bytes arrive.

    @ivar done: C{True} once the whole body has been read.
    @ivar chunkSizes: The chunk sizes seen (chunked bodies).
    @ivar trailers: Trailer lines seen (chunked bodies).
    """

    def __init__(
        self, framing: Framing, length: int, onData: Callable[[bytes], None]
    ) -> None:
        """
        @param framing: How the body is framed.
        @param length: The length for C{"length"} framing.
        @param onData: Called with each piece of de-framed body.
        """
        self.framing = framing
        self.onData = onData
        self.remaining = length
        self.done = framing == "none" or (framing == "length" and length == 0)
        self.chunkSizes: list[int] = []
        self.trailers: list[bytes] = []
        self._state = _SIZE
        self._buffer = b""

    def feed(self, data: bytes) -> bytes:
        """
        Consume body bytes.

        @return: The bytes that follow the end of the body (if it ended).
        @raise ProtocolViolationError: On bad chunk framing.
        """
        if self.done:
            return data
        if self.framing == "close":
            self.onData(data)
            return b""
        if self.framing == "length":
            take = data[: self.remaining]
            self.remaining -= len(take)
            if take:
                self.onData(take)
            if self.remaining == 0:
                self.done = True
            return data[len(take) :]
        return self._chunked(data)

    def _chunked(self, data: bytes) -> bytes:
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        position = 0
        size = len(buffer)
        while position < size and not self.done:
            if self._state == _DATA:
                take = min(self.remaining, size - position)
                self.onData(buffer[position : position + take])
                position += take
                self.remaining -= take
                if self.remaining == 0:
                    self._state = _DATA_END
                continue
            end = buffer.find(b"\r\n", position)
            if end < 0:
                self._buffer = buffer[position:]
                return b""
            line = buffer[position:end]
            position = end + 2
            if self._state == _SIZE:
                try:
                    chunkSize = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ProtocolViolationError(f"bad chunk size {line!r}") from None
                self.chunkSizes.append(chunkSize)
                if chunkSize == 0:
                    self._state = _TRAILER
                else:
                    self.remaining = chunkSize
                    self._state = _DATA
            elif self._state == _DATA_END:
                if line:
                    raise ProtocolViolationError(f"chunk too long: {line!r}")
                self._state = _SIZE
            elif line:
                self.trailers.append(line)
            else:
                self.done = True
        return buffer[position:]


@define(eq=False)
class Body:
    """
    A message body seen as it streams: length, sha256 and the first bytes.
    """

    keep: int = KEEP_LIMIT
    length: int = 0
    kept: bytearray = field(factory=bytearray)
    _hash: Any = field(factory=hashlib.sha256)

    def add(self, data: bytes) -> None:
        """
        Account for a piece of body.
        """
        self.length += len(data)
        self._hash.update(data)
        room = self.keep - len(self.kept)
        if room > 0:
            self.kept += data[:room]

    @property
    def sha256(self) -> str:
        """
        The hex sha256 of the body so far.
        """
        return str(self._hash.hexdigest())
