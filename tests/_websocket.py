# -*- test-case-name: tests.test_tunnel_integration -*-
"""
A small RFC 6455 WebSocket server and client on raw Twisted protocols, for
the tunnel tests: the server plays GREEN and BLUE (echoing each text
message prefixed with its name), the client does the handshake and sends
masked frames, as a browser does.

Text commands the server understands: C{stream N} (send N bytes of binary
frames, as fast as the connection takes them, then the text C{done}); any
other text is echoed as C{<name>:<text>}.  A binary message is answered with
C{<name>:got <length> <sha256>}.  Pings are answered with pongs; a close
frame with a close frame, then the server closes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

#: RFC 6455 section 1.3.
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10

#: Bytes per frame of a C{stream} command.
STREAM_CHUNK = 64 * 1024


def acceptKey(key: bytes) -> bytes:
    """
    @param key: A C{Sec-WebSocket-Key}.
    @return: Its C{Sec-WebSocket-Accept}.
    """
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def mask(payload: bytes, key: bytes) -> bytes:
    """
    XOR C{payload} with the 4-byte C{key} (fast for megabytes).
    """
    n = len(payload)
    if not n:
        return b""
    repeated = (key * (n // 4 + 1))[:n]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(n, "big")


def frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    """
    One final frame.

    @param masked: C{True} for a client's frame.
    """
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, bit | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, bit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + mask(payload, key)


class FrameParser:
    """
    Splits bytes into C{(opcode, payload)} frames.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """
        @return: The frames now complete.
        """
        self.buffer += data
        frames: list[tuple[int, bytes]] = []
        while True:
            b = self.buffer
            if len(b) < 2:
                return frames
            opcode, second = b[0] & 0x0F, b[1]
            n, offset = second & 0x7F, 2
            if n == 126:
                if len(b) < 4:
                    return frames
                n, offset = struct.unpack("!H", b[2:4])[0], 4
            elif n == 127:
                if len(b) < 10:
                    return frames
                n, offset = struct.unpack("!Q", b[2:10])[0], 10
            key = b""
            if second & 0x80:
                key, offset = bytes(b[offset : offset + 4]), offset + 4
            if len(b) < offset + n:
                return frames
            payload = bytes(b[offset : offset + n])
            del b[: offset + n]
            frames.append((opcode, mask(payload, key) if key else payload))


def parseHead(head: bytes) -> tuple[bytes, dict[bytes, list[bytes]]]:
    """
    @return: The first line and the headers (lower-case names).
    """
    lines = head.split(b"\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return lines[0], headers


@implementer(IPushProducer)
class WebSocketServer(Protocol):
    """
    One connection to the test WebSocket server.
    """

    factory: WebSocketServerFactory
    transport: Any

    def __init__(self) -> None:
        self.head = b""
        self.upgraded = False
        self.parser = FrameParser()
        self.streamLeft = 0
        self.paused = False
        self.pauses = 0
        self.streamed = 0

    def connectionMade(self) -> None:
        self.factory.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, rest = self.head[:end], self.head[end + 4 :]
            self.head = b""
            self.handshake(head)
            data = rest
            if not self.upgraded:
                return
        for opcode, payload in self.parser.feed(data):
            self.frameReceived(opcode, payload)

    def handshake(self, head: bytes) -> None:
        line, headers = parseHead(head)
        self.factory.requests.append((line, headers))
        name = self.factory.name
        key = headers.get(b"sec-websocket-key", [b""])[0]
        mode = self.factory.mode
        if mode == "refuse" or (mode == "upgrade" and b"upgrade" not in headers):
            body = f"{name}: no upgrade here\n".encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            return
        self.upgraded = True
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
            + acceptKey(key)
            + b"\r\n\r\n"
        )

    def frameReceived(self, opcode: int, payload: bytes) -> None:
        name = self.factory.name.encode()
        if opcode == TEXT:
            if payload.startswith(b"stream "):
                self.streamLeft = int(payload[7:])
                self.transport.registerProducer(self, True)
                self.resumeProducing()
                return
            self.send(TEXT, name + b":" + payload)
        elif opcode == BINARY:
            digest = hashlib.sha256(payload).hexdigest().encode()
            self.send(TEXT, name + b":got %d " % len(payload) + digest)
        elif opcode == PING:
            self.send(PONG, payload)
        elif opcode == CLOSE:
            self.send(CLOSE, payload)
            self.transport.loseConnection()

    def send(self, opcode: int, payload: bytes) -> None:
        self.transport.write(frame(opcode, payload, masked=False))

    # Streaming, paced by the connection (IPushProducer)

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        while self.streamLeft and not self.paused:
            n = min(STREAM_CHUNK, self.streamLeft)
            self.streamLeft -= n
            self.streamed += n
            self.send(BINARY, streamBytes(self.streamed - n, n))
        if not self.streamLeft and not self.paused:
            self.transport.unregisterProducer()
            self.send(TEXT, b"done")
            self.streamLeft = -1

    def stopProducing(self) -> None:
        self.streamLeft = 0

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.connections.remove(self)
        self.factory.lost += 1
        waiting, self.factory.waitingLost = self.factory.waitingLost, []
        for d in waiting:
            d.callback(None)


def streamBytes(offset: int, n: int) -> bytes:
    """
    The bytes C{offset} to C{offset + n} of a C{stream} (a repeating,
    position-dependent pattern, so a lost or reordered chunk shows).
    """
    start = offset // 4
    words = range(start, start + n // 4 + 2)
    data = b"".join(struct.pack("!I", w & 0xFFFFFFFF) for w in words)
    skip = offset - start * 4
    return data[skip : skip + n]


class WebSocketServerFactory(Factory):
    """
    The test WebSocket server.

    @ivar name: Prefixes its echoes.
    @ivar mode: C{"upgrade"} (upgrade requests that ask for it),
        C{"refuse"} (answer 200 to everything) or C{"always"} (answer 101 to
        every request, even one that did not ask).
    @ivar requests: Each request's first line and headers.
    @ivar connections: The open connections.
    @ivar lost: How many connections have closed.
    """

    protocol = WebSocketServer  # type: ignore[assignment]
    noisy = False

    def __init__(self, name: str, mode: str = "upgrade") -> None:
        self.name = name
        self.mode = mode
        self.requests: list[tuple[bytes, dict[bytes, list[bytes]]]] = []
        self.connections: list[WebSocketServer] = []
        self.lost = 0
        self.waitingLost: list[Deferred[None]] = []

    def stop(self) -> None:
        """
        Close every connection.
        """
        for conn in list(self.connections):
            conn.transport.abortConnection()


class WebSocketClient(Protocol):
    """
    A WebSocket client on a raw connection (to the proxy).

    @ivar status: The handshake answer's status line, once in.
    @ivar headers: Its headers.
    @ivar body: What followed a non-101 answer's head.
    """

    transport: Any

    def __init__(self, path: bytes = b"/chat", upgrade: bool = True) -> None:
        self.path = path
        self.upgrade = upgrade
        self.key = base64.b64encode(os.urandom(16))
        self.buffer = b""
        self.status: bytes | None = None
        self.headers: dict[bytes, list[bytes]] = {}
        self.body = b""
        self.parser = FrameParser()
        self.messages: deque[tuple[int, bytes]] = deque()
        self.waiting: deque[Deferred[tuple[int, bytes]]] = deque()
        self.answered: Deferred[bytes] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self.received = 0
        self.onBinary: Callable[[bytes], None] | None = None

    def connectionMade(self) -> None:
        headers = b"Host: proxy.test\r\n"
        if self.upgrade:
            headers += (
                b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + self.key + b"\r\n"
            )
        self.transport.write(b"GET " + self.path + b" HTTP/1.1\r\n" + headers + b"\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.status is None:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.buffer[:end], self.buffer[end + 4 :]
            self.buffer = b""
            self.status, self.headers = parseHead(head)
            self.answered.callback(self.status)
        if not self.status.startswith(b"HTTP/1.1 101"):
            self.body += data
            return
        for opcode, payload in self.parser.feed(data):
            if opcode == BINARY and self.onBinary is not None:
                self.onBinary(payload)
            elif self.waiting:
                self.waiting.popleft().callback((opcode, payload))
            else:
                self.messages.append((opcode, payload))

    def send(self, opcode: int, payload: bytes) -> None:
        """
        Send one masked frame.
        """
        self.transport.write(frame(opcode, payload, masked=True))

    def receive(self) -> Deferred[tuple[int, bytes]]:
        """
        @return: The next frame's C{(opcode, payload)}.
        """
        if self.messages:
            return succeed(self.messages.popleft())
        d: Deferred[tuple[int, bytes]] = Deferred()
        self.waiting.append(d)
        return d

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(None)
