# -*- test-case-name: tests.test_proxy_integration,tests.test_failover_chain -*-
"""
The reverse proxy: a twisted.web resource that forwards every request to the
live environment, and the site that serves it.

Each request reads the controller's live environment once, so it goes wholly
to one environment even if a switch happens while it is in flight.  Bodies
stream both ways with backpressure: L{ProxyRequest} starts forwarding as soon
as a request's headers have arrived, and a slow client pauses the upstream
connection (see L{Exchange}).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from bluegreen.controller import Controller
from bluegreen.environment import Environment
from bluegreen.proxy.accesslog import AccessLog
from bluegreen.proxy.channel import ProxyChannel
from bluegreen.proxy.clients import ClientGate
from bluegreen.proxy.exchange import Exchange
from bluegreen.proxy.headers import clientHost, droppedBy
from bluegreen.proxy.interfaces import PassiveHealth, ProxyMetrics
from bluegreen.proxy.limits import ClientLimits
from bluegreen.proxy.pool import UpstreamPool
from bluegreen.proxy.rejections import Rejections
from bluegreen.proxy.request import ProxyRequest
from bluegreen.proxy.spool import TempFiles
from bluegreen.proxy.tunnels import Tunnels
from bluegreen.proxy.upgrade import wantsUpgrade

# Request headers the proxy writes itself.
_REWRITTEN = frozenset(
    (b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
)


class ProxySite(Site):
    """
    A L{Site} whose connections are L{ProxyChannel}s (with the client
    limits), whose requests are L{ProxyRequest}s, and which does not write
    twisted.web's own access log (the proxy logs each request itself).

    @ivar limits: The client limits and timeouts.
    @ivar rejections: Counts the requests refused (the resource's).
    @ivar gate: Counts client connections against C{--max-clients}, or
        L{None}.
    """

    protocol = ProxyChannel  # type: ignore[assignment]
    requestFactory = ProxyRequest  # type: ignore[assignment]
    protocol = ProxyChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: ProxyResource,
        reactor: IReactorTime,
        limits: ClientLimits | None = None,
        gate: ClientGate | None = None,
    ) -> None:
        """
        @param resource: The proxy.
        @param reactor: The reactor the site's connections run on.
        @param limits: The client limits (the defaults if L{None}).
        @param gate: Counts client connections, if given.
        """
        self.limits = ClientLimits() if limits is None else limits
        super().__init__(resource, reactor=reactor, timeout=self.limits.idleTimeout)
        self.reactor = reactor
        self.rejections = resource.rejections
        self.gate = gate
        # The open client connections (ProxyChannel adds and removes
        # itself), so a drain can find responses still open.
        self.channels: set[ProxyChannel] = set()
        if resource.tunnels is not None:
            resource.tunnels.channels = self.channels

    def log(self, request: Request) -> None:
        """
        Do nothing: see L{ProxyResource} for the access log.
        """


class ProxyResource(Resource):
    """
    Forwards every request to the controller's live environment.

    @ivar controller: Holds the live environment.
    @ivar pools: A connection pool per environment name.
    @ivar clock: Times responses.
    @ivar responseTimeout: Seconds from the whole request being received
        until the upstream's response headers must have arrived, and the
        longest silence allowed in a response body (not counting pauses a
        slow client causes); a stalled body aborts the client connection.
    @ivar preserveHost: Send the client's C{Host} (C{True}) or the
        environment's (C{False}).
    @ivar accessLog: Where each request is logged, or L{None}.
    @ivar health: Told of environments that proxied requests cannot reach
        (passive detection), and asked whether the standby is up.
    @ivar retry: Retry a request that could not reach its environment once
        on the standby (when it is up and nothing of the request can have
        been processed).
    @ivar metrics: Counts requests, upstream errors and retries, or L{None}.
    @ivar stampFlags: With C{--stamp-flags}: called with the name of the
        environment a request goes to, returns its flags (name to C{"on"} or
        C{"off"}, from a cache: it never waits), each sent upstream as
        C{X-Feature-<NAME>}; the client's own C{X-Feature-*} headers are then
        dropped, so they cannot be forged.  L{None}: no stamping.
    @ivar side: C{"live"} (the main listener) or C{"standby"} (the
        C{--preview} listener: every request goes to the environment that
        is not live, read once per request as the live one is).
    @ivar rejections: Counts the requests the proxy refuses itself (the
        client channel's 4xx, the upstream framing checks' 502s).
    @ivar buffers: Buffers bodies for slow clients (request and response
        buffering), or L{None}: bodies stream both ways with backpressure.
    """

    isLeaf = True

    #: Where upgrade requests (WebSockets...) go; L{None}: none are
    #: upgraded (their C{Upgrade} header is dropped as hop-by-hop).
    tunnels: Tunnels | None = None

    def __init__(
        self,
        controller: Controller,
        pools: dict[str, UpstreamPool],
        clock: IReactorTime,
        responseTimeout: float = 60.0,
        preserveHost: bool = True,
        accessLog: AccessLog | None = None,
        health: PassiveHealth | None = None,
        retry: bool = True,
        metrics: ProxyMetrics | None = None,
        stampFlags: Callable[[str], Mapping[str, str]] | None = None,
        side: str = "live",
        rejections: Rejections | None = None,
        buffers: TempFiles | None = None,
    ) -> None:
        super().__init__()
        self.side = side
        self.rejections = Rejections() if rejections is None else rejections
        self.buffers = buffers
        self.stampFlags = stampFlags
        self.health = health
        self.retry = retry
        self.metrics = metrics
        self.controller = controller
        self.pools = pools
        self.clock = clock
        self.responseTimeout = responseTimeout
        self.preserveHost = preserveHost
        self.accessLog = accessLog

    def render(self, request: ProxyRequest) -> int:
        """
        Start forwarding C{request}.

        @return: L{NOT_DONE_YET}: the exchange finishes the request.
        """
        environment = self.destination()
        tunnels = self.tunnels
        if tunnels is not None and wantsUpgrade(request):
            tunnels.start(self, request, environment)
            return NOT_DONE_YET
        exchange = Exchange(self, request, environment)
        request.exchange = exchange
        exchange.start(False)
        return NOT_DONE_YET

    def destination(self) -> Environment:
        """
        @return: Where a request goes now: the live environment, or the
            standby for the C{--preview} listener (C{side="standby"}).
        """
        controller = self.controller
        return controller.live if self.side == "live" else controller.standby()

    def buildHead(self, request: ProxyRequest, environment: Environment) -> bytes:
        """
        The upstream request line and headers for C{request}.

        Repeated headers keep their order; hop-by-hop headers (and those
        named by C{Connection}) are dropped; C{X-Forwarded-*} are set.

        @param request: The client's request.
        @param environment: Where it goes.
        @return: The request head, ending with an empty line.
        """
        headers = request.requestHeaders
        drop = droppedBy(headers.getRawHeaders(b"connection"))
        parts = [request.method, b" ", request.uri, b" HTTP/1.1\r\n"]
        append = parts.append
        host: bytes | None = None
        forwardedFor: list[bytes] = []
        stamp = self.stampFlags
        for name, values in headers.getAllRawHeaders():
            lower = name.lower()
            if lower in drop or lower.startswith(b"proxy-"):
                continue
            if stamp is not None and lower.startswith(b"x-feature-"):
                continue
            if lower in _REWRITTEN:
                if lower == b"host":
                    host = values[0]
                elif lower == b"x-forwarded-for":
                    forwardedFor.extend(values)
                continue
            for value in values:
                append(name)
                append(b": ")
                append(value)
                append(b"\r\n")
        upstreamHost = (
            host if host is not None and self.preserveHost else environment.hostHeader
        )
        append(b"Host: ")
        append(upstreamHost)
        client = clientHost(request.getClientAddress())
        if client is not None:
            forwardedFor.append(client)
        if forwardedFor:
            append(b"\r\nX-Forwarded-For: ")
            append(b", ".join(forwardedFor))
        append(
            b"\r\nX-Forwarded-Proto: https"
            if request.isSecure()
            else b"\r\nX-Forwarded-Proto: http"
        )
        if host is not None:
            append(b"\r\nX-Forwarded-Host: ")
            append(host)
        if stamp is not None:
            for flag, state in stamp(environment.name).items():
                # A name with ":" cannot be a header name: not stamped.
                if ":" not in flag:
                    append(b"\r\nX-Feature-%s: %s" % (flag.encode(), state.encode()))
        body = request.body
        if body is not None and body.length is None:
            append(b"\r\nTransfer-Encoding: chunked")
        append(b"\r\n\r\n")
        return b"".join(parts)
