# -*- test-case-name: tests.test_buffering,tests.test_spool,tests.test_bigbodies -*-
"""
A request body arriving from the client, and the client connection's
transport it pauses and resumes.

With request buffering (the default) a body is received whole, into memory
and then a temporary file, before the exchange takes an upstream connection,
so a slow uploader never holds one (see L{RequestBody.buffer}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.http import Request
from zope.interface import implementer

from bluegreen.proxy.spool import BodyStore, TempFiles
from bluegreen.proxy.upstream import UpstreamConnection

#: Bytes of request body kept so a request can be resent on a new connection
#: when a reused one turns out to have been closed by the server.
REPLAY_LIMIT = 64 * 1024

#: Bytes of request body held while waiting for an upstream connection
#: before the client is paused.
PENDING_LIMIT = 64 * 1024


@implementer(IPushProducer)
class RequestBody:
    """
    A request body arriving from the client, forwarded upstream.

    By default (L{stream}) it goes upstream as it comes: until an upstream
    connection is ready, chunks are held (pausing the client past
    L{PENDING_LIMIT}); the first L{REPLAY_LIMIT} bytes are kept so the
    request can be resent once on a fresh connection.

    Once L{buffer} is called it is received whole first, into a
    L{BodyStore}: memory, then a temporary file.  It is I{ready} (see
    L{whenReady}) when complete, or when a chunked body passes the buffered
    limit: then what was stored is sent, and the rest streams.

    @ivar request: The client's request.
    @ivar length: The declared length, or L{None} for a chunked upload.
    @ivar complete: C{True} once the client has sent the whole body.
    @ivar replayable: C{True} while all that was sent upstream is kept
        (at most L{REPLAY_LIMIT} bytes, or the whole buffered body), so it
        can be sent again.
    """

    def __init__(self, request: Request, length: int | None) -> None:
        """
        @param request: The client's request.
        @param length: The declared length, or L{None} for a chunked upload.
        """
        self.request = request
        self.length = length
        self.complete = False
        self.replayable = True
        self._sent: list[bytes] = []
        self._sentSize = 0
        self._pending: list[bytes] = []
        self._pendingSize = 0
        self._conn: UpstreamConnection | None = None
        self._discarding = False
        self._paused = False
        self._whenComplete: list[Callable[[], object]] = []
        # Buffered mode.
        self._store: BodyStore | None = None
        self._limit = 0
        self._ready = False
        self._whenReady: list[Callable[[], object]] = []
        self._offset = 0
        self._sending = False
        self._upstreamPaused = False

    def buffer(self, files: TempFiles, memoryLimit: int, limit: int) -> bool:
        """
        Receive the body whole before it is sent, if it is not too large.

        @param files: Where a temporary file comes from.
        @param memoryLimit: Bytes kept in memory.
        @param limit: A body declared larger streams as it comes; a chunked
            body is ready once it passes this size.
        @return: C{True} if the body is buffered (wait for L{whenReady}).
        """
        if self.complete or (self.length is not None and self.length > limit):
            return False
        store = BodyStore(files, memoryLimit)
        self._store = store
        self._limit = limit
        pending, self._pending, self._pendingSize = self._pending, [], 0
        for index, data in enumerate(pending):
            if not self._storeWrite(store, data):
                for rest in pending[index + 1 :]:
                    self._pending.append(rest)
                    self._pendingSize += len(rest)
                return False
        self._resumeClient()
        return True

    def _storeWrite(self, store: BodyStore, data: bytes) -> bool:
        """
        Add C{data} to the store; if the temporary file cannot be written
        (disk full, say), go back to streaming with everything received
        pending, in order.

        @return: C{True} if stored.
        """
        before = len(store)
        try:
            store.write(data)
        except OSError:
            Logger(namespace="bluegreen.proxy").failure(
                "cannot buffer a request body: sending it as it comes"
            )
            kept = len(store) - before
            self._store = None
            offset = 0
            while stored := store.read(offset):
                self._pending.append(stored)
                offset += len(stored)
            store.close()
            rest = data[kept:]
            if rest:
                self._pending.append(rest)
            conn = self._conn
            if conn is not None:
                # Sending the stored part of a body past the limit: send
                # what was not sent yet, then stream.
                unsent = b"".join(self._pending)[self._offset :]
                self._pending = []
                conn.writeBody(unsent)
                self._resumeClient()
            self._pendingSize = sum(len(piece) for piece in self._pending)
            return False
        return True

    def whenReady(self, f: Callable[[], object]) -> None:
        """
        Call C{f} once a buffered body can be sent (see L{buffer}).

        @param f: Called with no argument (at once if it is ready).
        """
        if self._ready or self._store is None:
            f()
        else:
            self._whenReady.append(f)

    def _becomeReady(self) -> None:
        if self._ready:
            return
        self._ready = True
        waiting, self._whenReady = self._whenReady, []
        for f in waiting:
            f()

    # From the client

    def dataReceived(self, data: bytes) -> None:
        """
        A chunk of the body arrived from the client.

        @param data: The chunk.
        """
        if self._discarding:
            return
        store = self._store
        if store is not None:
            if not self._storeWrite(store, data):
                self._becomeReady()
                return
            if len(store) > self._limit and not self.complete:
                # Too large to hold whole: send what is here, then stream.
                self.replayable = False
                self._pauseClient()
                self._becomeReady()
            return
        if self._conn is not None:
            self._remember(data)
            self._conn.writeBody(data)
        else:
            self._pending.append(data)
            self._pendingSize += len(data)
            if self._pendingSize > PENDING_LIMIT:
                self._pauseClient()

    def finished(self) -> None:
        """
        The client has sent the whole body.
        """
        self.complete = True
        if self._store is not None:
            if self._conn is not None:
                # Past the limit and sending what was stored: it ends the
                # body once it has sent the rest.
                self._sendStored()
            else:
                self._becomeReady()
        elif self._conn is not None:
            self._conn.unregisterBodyProducer()
            self._conn.endBody()
        waiting, self._whenComplete = self._whenComplete, []
        for f in waiting:
            f()

    def whenComplete(self, f: Callable[[], object]) -> None:
        """
        Call C{f} once the client has sent the whole body.

        @param f: Called with no argument (at once if the body is complete).
        """
        if self.complete:
            f()
        else:
            self._whenComplete.append(f)

    def _remember(self, data: bytes) -> None:
        if self.replayable:
            self._sentSize += len(data)
            if self._sentSize > REPLAY_LIMIT:
                self.replayable = False
                self._sent = []
            else:
                self._sent.append(data)

    # Toward the upstream

    def attach(self, conn: UpstreamConnection) -> None:
        """
        Send the body (what has arrived, then the rest as it comes) on C{conn}.

        @param conn: The upstream connection the request head went out on.
        """
        self._conn = conn
        conn.registerBodyProducer(self)
        if self._store is not None:
            self._offset = 0
            self._upstreamPaused = False
            self._sendStored()
            return
        for data in self._sent:
            conn.writeBody(data)
        pending, self._pending, self._pendingSize = self._pending, [], 0
        for data in pending:
            self._remember(data)
            conn.writeBody(data)
        if self.complete:
            conn.unregisterBodyProducer()
            conn.endBody()
        else:
            self._resumeClient()

    def _sendStored(self) -> None:
        """
        Write the stored body to the connection while it takes it; then end
        it, or (a body past the limit) stream the rest from the client.
        """
        store = self._store
        if self._sending or store is None:
            return
        self._sending = True
        try:
            while self._conn is not None and not self._upstreamPaused:
                data = store.read(self._offset)
                if not data:
                    break
                self._offset += len(data)
                self._conn.writeBody(data)
        finally:
            self._sending = False
        conn = self._conn
        if conn is None or self._upstreamPaused or self._offset < len(store):
            return
        if self.complete:
            self._conn = None
            conn.unregisterBodyProducer()
            conn.endBody()
        elif self._ready:
            # Past the limit: the rest goes upstream as it comes.
            self._store = None
            store.close()
            self._resumeClient()

    def detach(self) -> None:
        """
        Stop sending on the current connection (it failed).
        """
        self._conn = None

    def discard(self) -> None:
        """
        Drop the rest of the body (the exchange is over).
        """
        self._discarding = True
        self._conn = None
        self._pending = []
        self._sent = []
        store, self._store = self._store, None
        if store is not None:
            store.close()
        self._resumeClient()

    def _pauseClient(self) -> None:
        transport = clientTransport(self.request)
        if transport is not None and not self._paused:
            self._paused = True
            transport.pauseProducing()

    def _resumeClient(self) -> None:
        if not self._paused:
            return
        transport = clientTransport(self.request)
        self._paused = False
        if transport is not None:
            transport.resumeProducing()

    # IPushProducer, driven by the upstream transport's write buffer

    def pauseProducing(self) -> None:
        """
        Stop reading from the client (or sending the stored body).
        """
        if self._store is not None and self._conn is not None:
            self._upstreamPaused = True
        else:
            self._pauseClient()

    def resumeProducing(self) -> None:
        """
        Read from the client again (or send more of the stored body).
        """
        if self._store is not None and self._conn is not None:
            self._upstreamPaused = False
            self._sendStored()
        else:
            self._resumeClient()

    def stopProducing(self) -> None:
        """
        The upstream connection is gone; the exchange handles that.
        """


class ClientTransport(Protocol):
    """
    What the proxy does with a client connection's transport (a TCP or TLS
    transport provides it all): pause and resume reading, and cut it off.
    """

    def pauseProducing(self) -> None:
        """
        Stop reading.
        """

    def resumeProducing(self) -> None:
        """
        Read again.
        """

    def abortConnection(self) -> None:
        """
        Close at once, dropping what is buffered.
        """


def clientTransport(request: Request) -> ClientTransport | None:
    """
    The client connection's transport, or L{None} once it is gone.

    @param request: A request.
    @return: Its channel's transport.
    """
    channel = request.channel
    if channel is None:
        return None
    # HTTPChannel's type says only ITransport; a stream transport is more.
    return cast("ClientTransport | None", channel.transport)
