# -*- test-case-name: tests.test_tunnel,tests.test_tunnel_integration -*-
"""
What a tunnel (L{bluegreen.proxy.tunnel}) is built on: which requests ask
to upgrade (L{wantsUpgrade}), what it needs of the proxy (L{TunnelProxy}),
and each side's transport as it uses it (L{StreamTransport},
L{PauseReads}).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol as TypingProtocol
from typing import cast

from twisted.internet.interfaces import IPushProducer, IReactorTime
from zope.interface import implementer

from bluegreen.controller import Controller
from bluegreen.environment import Environment
from bluegreen.proxy.accesslog import AccessLog
from bluegreen.proxy.channel import ProxyChannel
from bluegreen.proxy.interfaces import PassiveHealth, ProxyMetrics
from bluegreen.proxy.pool import UpstreamPool
from bluegreen.proxy.request import ProxyRequest


class StreamTransport(TypingProtocol):
    """
    What a tunnel does with each side's transport (a TCP or TLS transport
    provides it all).
    """

    def write(self, data: bytes) -> None:
        """
        Send bytes.
        """

    def loseConnection(self) -> None:
        """
        Close once what was written is sent.
        """

    def abortConnection(self) -> None:
        """
        Close at once.
        """

    def pauseProducing(self) -> None:
        """
        Stop reading.
        """

    def resumeProducing(self) -> None:
        """
        Read again.
        """

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """
        Let the transport pause C{producer} while its write buffer is full.
        """

    def unregisterProducer(self) -> None:
        """
        Undo L{registerProducer}.
        """


def stream(transport: object) -> StreamTransport:
    """
    A connected protocol's transport, as a tunnel uses it.

    @param transport: A TCP or TLS transport (L{ITransport} declares only
        part of what they provide).
    @return: The same object.
    """
    return cast(StreamTransport, transport)


class TunnelProxy(TypingProtocol):
    """
    What a tunnel needs of the proxy (L{bluegreen.proxy.resource.ProxyResource}
    provides it): see there for each attribute.
    """

    @property
    def controller(self) -> Controller:
        """
        Holds the live environment, and names the standby.
        """

    @property
    def pools(self) -> Mapping[str, UpstreamPool]:
        """
        A pool per environment (a tunnel uses only its endpoint).
        """

    @property
    def clock(self) -> IReactorTime:
        """
        Times the response head, idle tunnels and closes.
        """

    @property
    def responseTimeout(self) -> float:
        """
        Seconds allowed for the response head.
        """

    @property
    def accessLog(self) -> AccessLog | None:
        """
        Where each tunnel is logged, or L{None}.
        """

    @property
    def health(self) -> PassiveHealth | None:
        """
        Told of environments that cannot be reached, or L{None}.
        """

    @property
    def retry(self) -> bool:
        """
        Retry on the standby when the live environment refuses the connection.
        """

    @property
    def metrics(self) -> ProxyMetrics | None:
        """
        Counts requests and upstream errors, or L{None}.
        """

    def buildHead(self, request: ProxyRequest, environment: Environment) -> bytes:
        """
        @param request: The client's request.
        @param environment: Where it goes.
        @return: The upstream request line and end-to-end headers.
        """


def wantsUpgrade(request: ProxyRequest) -> bool:
    """
    Whether C{request} asks to switch protocols (RFC 9110 section 7.8): an
    HTTP/1.1 request without a body, with an C{Upgrade} header and
    C{upgrade} among its C{Connection} tokens, on a connection that can be
    handed over (a L{ProxyChannel}).

    @param request: The client's request.
    @return: C{True} if it goes through a L{Tunnel}.
    """
    if request.body is not None or request.clientproto != b"HTTP/1.1":
        return False
    if not isinstance(request.channel, ProxyChannel):
        return False
    headers = request.requestHeaders
    if not headers.getRawHeaders(b"upgrade"):
        return False
    return any(
        token.strip().lower() == b"upgrade"
        for value in headers.getRawHeaders(b"connection", [])
        for token in value.split(b",")
    )


@implementer(IPushProducer)
class PauseReads:
    """
    One side's reading, as the producer the other side's transport pauses
    while its write buffer is full.
    """

    def __init__(self, transport: object) -> None:
        self.transport = stream(transport)

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """
        The consumer is going away; the tunnel hears it from connectionLost.
        """
