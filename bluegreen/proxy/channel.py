# -*- test-case-name: tests.test_tunnel,tests.test_tunnel_integration -*-
"""
The proxy's client connections: an L{HTTPChannel} that can hand its
connection over to something else once HTTP is done with it.

An accepted upgrade (C{101 Switching Protocols}, e.g. a WebSocket) ends HTTP
on the connection: from then on its bytes belong to the tunnel
(L{bluegreen.proxy.tunnel}), not to the HTTP parser.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel


class TunnelEnd(Protocol):
    """
    What takes a client connection over (a tunnel): it is given every byte
    the client sends from then on.
    """

    def clientData(self, data: bytes) -> None:
        """
        Bytes from the client.

        @param data: The bytes.
        """


class ProxyChannel(HTTPChannel):
    """
    The channel of the proxy's client connections.

    @ivar tunnel: (The tunnel's hook.)  What the connection was handed over
        to by L{takeOver}, or L{None} while it speaks HTTP.
    """

    # --- The tunnel's hook (bluegreen.proxy.tunnel) -------------------------

    tunnel: TunnelEnd | None = None
    #: The site (L{twisted.web.server.Site.buildProtocol} sets it).
    site: Any = None

    def takeOver(self, tunnel: TunnelEnd) -> bytes:
        """
        Stop parsing HTTP: every byte the client sends from now on goes to
        C{tunnel}.  The request being handled stays unfinished; its
        C{connectionLost} still tells when the connection ends.

        @param tunnel: The new owner of the connection's bytes.
        @return: What the client sent after the request and before now
            (the channel held it, as it holds a pipelined request).
        """
        self.tunnel = tunnel
        # HTTPChannel's private buffer, the one Twisted name read here (see
        # WRAPPED_PRIVATES in tests/test_layout.py): a public "hand the
        # connection over" API would replace it (Twisted's own websocket
        # support uses a private one, and drops these bytes).
        private: Any = self
        held: list[bytes] = private._dataBuffer
        early = b"".join(held)
        del held[:]
        # The channel pauses reading while it holds too much: the tunnel
        # does its own flow control from here.
        transport = self.transport
        if transport is not None:
            transport.resumeProducing()  # type: ignore[attr-defined]
        return early

    def connectionMade(self) -> None:
        """
        Join the site's open connections (if it keeps them: a drain looks
        for responses still open there).
        """
        super().connectionMade()
        channels = getattr(self.site, "channels", None)
        if channels is not None:
            channels.add(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Leave the site's open connections.

        @param reason: Why.
        """
        channels = getattr(self.site, "channels", None)
        if channels is not None:
            channels.discard(self)
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        """
        Parse HTTP, or hand the bytes to the tunnel that took over.

        @param data: Bytes from the client.
        """
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.clientData(data)
            return
        super().dataReceived(data)

    # --- end of the tunnel's hook -------------------------------------------
