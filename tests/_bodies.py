# -*- test-case-name: tests.test_proxy_integration -*-
# mypy: allow-untyped-calls
"""
Generated bodies of any size: a pattern to send and check, a pull producer
for it, and a backend handler streaming it.
"""

from __future__ import annotations

import hashlib
import random
import socket
import struct
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.interfaces import IPullProducer
from zope.interface import implementer

from tests._backends import BackendConnection, Handler, ReceivedRequest
from tests._rawclient import setBuffer

# Generated bodies


class PatternSource:
    """
    A deterministic body of C{size} bytes, generated block by block (never
    held whole), hashed as it is generated.

    Each block is a fixed pseudo-random block with its index in its first
    eight bytes, so misordered, lost or repeated blocks change the hash.

    @ivar produced: Bytes generated so far.
    """

    _BASE = random.Random(20240911).randbytes(1 << 20)

    def __init__(self, size: int) -> None:
        self.size = size
        self.produced = 0
        self._index = 0
        self._hash = hashlib.sha256()

    @property
    def done(self) -> bool:
        """
        C{True} once all C{size} bytes have been generated.
        """
        return self.produced >= self.size

    def read(self, n: int) -> bytes:
        """
        The next block, at most C{n} bytes (at most 1 MiB).
        """
        n = min(n, self.size - self.produced, len(self._BASE))
        if n <= 0:
            return b""
        header = struct.pack(">Q", self._index)
        block = header + self._BASE[8:n] if n >= 8 else header[:n]
        self._index += 1
        self.produced += n
        self._hash.update(block)
        return block

    @property
    def sha256(self) -> str:
        """
        The hex sha256 of what has been generated (the whole body once
        L{done}).
        """
        return str(self._hash.hexdigest())

    @classmethod
    def digest(cls, size: int, block: int) -> str:
        """
        The sha256 of the body C{PatternSource(size)} yields in C{block}-byte
        reads.
        """
        source = cls(size)
        while not source.done:
            source.read(block)
        return source.sha256


@implementer(IPullProducer)
class SourceProducer:
    """
    Writes a L{PatternSource} to a transport, one block each time the
    transport asks for more (a pull producer: nothing is written while the
    transport's buffer is full).

    @ivar written: Bytes written so far.
    @ivar stopped: C{True} if the transport stopped the producer.
    """

    def __init__(
        self,
        transport: Any,
        source: PatternSource,
        block: int = 64 * 1024,
        onWrite: Callable[[int], None] | None = None,
        onDone: Callable[[], None] | None = None,
    ) -> None:
        self.transport = transport
        self.source = source
        self.block = block
        self.onWrite = onWrite
        self.onDone = onDone
        self.written = 0
        self.stopped = False

    def start(self) -> None:
        """
        Register with the transport, which then pulls the blocks.
        """
        self.transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        """
        Write the next block.
        """
        if self.stopped or self.source.done:
            return
        data = self.source.read(self.block)
        self.written += len(data)
        self.transport.write(data)
        if self.onWrite is not None:
            self.onWrite(self.written)
        if self.source.done:
            self.transport.unregisterProducer()
            if self.onDone is not None:
                self.onDone()

    def stopProducing(self) -> None:
        """
        The connection is gone.
        """
        self.stopped = True


@define(eq=False)
class DownloadStats:
    """
    What a L{generated} handler wrote.

    @ivar sources: The body of each response, in order.
    @ivar producers: The producer of each response, in order.
    """

    sources: list[PatternSource] = field(factory=list)
    producers: list[SourceProducer] = field(factory=list)


def generated(
    size: int,
    block: int = 64 * 1024,
    stats: DownloadStats | None = None,
    onWrite: Callable[[int], None] | None = None,
    sendBuffer: int | None = None,
) -> Handler:
    """
    Answer with a generated body of C{size} bytes and a C{Content-Length},
    written one C{block} at a time by a pull producer.

    @param sendBuffer: If given, the connection's kernel send buffer size
        (C{SO_SNDBUF}), so that little of the body waits in the backend's
        kernel instead of in its producer.
    """

    def handle(request: ReceivedRequest, conn: BackendConnection) -> None:
        if sendBuffer is not None:
            setBuffer(conn.transport, socket.SO_SNDBUF, sendBuffer)
        source = PatternSource(size)
        conn.startResponse(
            headers=[(b"Content-Type", b"application/octet-stream")], length=size
        )
        producer = SourceProducer(conn.transport, source, block, onWrite, conn.finish)
        if stats is not None:
            stats.sources.append(source)
            stats.producers.append(producer)
        producer.start()

    return handle
