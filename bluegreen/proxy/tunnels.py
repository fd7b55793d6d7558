# -*- test-case-name: tests.test_tunnel,tests.test_tunnel_integration -*-
"""
The open tunnels (L{bluegreen.proxy.tunnel}), per environment: counted for
the status and metrics, drained after a switch, closed when the service
stops.

A switch changes where new requests and tunnels go; tunnels and responses
still open on the old environment (event streams, long polls) are closed
C{--drain-timeout} seconds later (at once after a failover, whose old
environment is down; never with C{never}), so their clients reconnect to the
new live environment instead of staying on a stale deploy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from attrs import define, field, frozen
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from bluegreen.controller import Switch
from bluegreen.environment import COLOURS, Environment
from bluegreen.proxy.channel import ProxyChannel
from bluegreen.proxy.request import ProxyRequest
from bluegreen.proxy.tunnel import Tunnel
from bluegreen.proxy.upgrade import TunnelProxy, stream
from bluegreen.timetext import isoTime

#: Switch kinds whose old environment is down: its tunnels close at once.
_DOWN_KINDS = frozenset(("failover", "recovered"))


@frozen
class TunnelSettings:
    """
    How tunnels are timed.

    @ivar idleTimeout: Seconds a tunnel may carry nothing before it is
        closed (C{--tunnel-idle-timeout}).
    @ivar drainTimeout: Seconds tunnels on the old environment stay open
        after a switch (C{--drain-timeout}); C{0}: closed at once; L{None}:
        never closed for a switch.
    """

    idleTimeout: float = 3600.0
    drainTimeout: float | None = 30.0


@frozen
class Draining:
    """
    Tunnels left on an environment that is no longer live.

    @ivar environment: Its name.
    @ivar since: When the switch happened (the clock's seconds).
    @ivar until: When they will be closed, or L{None} for never.
    """

    environment: str
    since: float
    until: float | None


@define(eq=False)
class Tunnels:
    """
    The registry of open tunnels, and their draining.

    @ivar clock: Times drains.
    @ivar settings: The timeouts.
    @ivar open: The open tunnels, by environment name.
    @ivar openedCount: How many tunnels have opened, by environment name.
    @ivar draining: Each environment whose tunnels are being drained.
    @ivar drained: How many tunnels were closed by drains, by environment.
    @ivar streamsDrained: How many responses still open were cut by drains,
        by environment.
    @ivar channels: The proxy's open client connections (its
        L{bluegreen.proxy.resource.ProxySite} shares them), where a drain
        finds the responses still open on the old environment.
    """

    clock: IReactorTime
    settings: TunnelSettings = TunnelSettings()
    open: dict[str, set[Tunnel]] = field(factory=dict)
    openedCount: dict[str, int] = field(factory=dict)
    draining: dict[str, Draining] = field(factory=dict)
    drained: dict[str, int] = field(factory=dict)
    streamsDrained: dict[str, int] = field(factory=dict)
    channels: set[ProxyChannel] = field(factory=set)
    _drainCalls: dict[str, IDelayedCall] = field(factory=dict)
    _pending: set[Tunnel] = field(factory=set)
    _log = Logger()

    @property
    def idleTimeout(self) -> float:
        """
        Seconds a tunnel may carry nothing before it is closed.
        """
        return self.settings.idleTimeout

    def start(
        self, proxy: TunnelProxy, request: ProxyRequest, environment: Environment
    ) -> Tunnel:
        """
        Send an upgrade request to C{environment} on a connection of its own.

        @param proxy: The proxy.
        @param request: The client's upgrade request.
        @param environment: The live environment.
        @return: The tunnel (open once the environment answers C{101}).
        """
        tunnel = Tunnel(proxy, self, request, environment)
        self._pending.add(tunnel)
        tunnel.whenGone().addCallback(lambda _: self._pending.discard(tunnel))
        tunnel.start()
        return tunnel

    # TunnelRegistry

    def opened(self, tunnel: Tunnel) -> None:
        """
        C{tunnel} switched protocols: count it.

        @param tunnel: The tunnel.
        """
        name = tunnel.environment.name
        self.open.setdefault(name, set()).add(tunnel)
        self.openedCount[name] = self.openedCount.get(name, 0) + 1

    def closed(self, tunnel: Tunnel) -> None:
        """
        C{tunnel} ended: forget it.

        @param tunnel: The tunnel.
        """
        name = tunnel.environment.name
        tunnels = self.open.get(name)
        if tunnels is not None:
            tunnels.discard(tunnel)

    # Draining

    def switched(self, record: Switch, kind: str) -> None:
        """
        The live environment changed (a controller's switch observer): drain
        the tunnels and responses left on the old one, and stop draining the
        new one's.

        @param record: The switch.
        @param kind: How it happened (C{"failover"} and C{"recovered"}: the
            old environment is down).
        """
        self._stopDraining(record.to)
        source = record.source
        if not (self.open.get(source) or self.streams(source)):
            return
        delay = 0.0 if kind in _DOWN_KINDS else self.settings.drainTimeout
        if delay is None:
            return
        now = self.clock.seconds()
        if delay <= 0:
            self._drain(source)
            return
        self._stopDraining(source)
        self.draining[source] = Draining(source, now, now + delay)
        self._drainCalls[source] = self.clock.callLater(delay, self._drain, source)
        self._log.info(
            "{count} tunnel(s) and {streams} response(s) on {environment} close "
            "in {delay:g} s (drain)",
            count=self.count(source),
            streams=len(self.streams(source)),
            environment=source,
            delay=delay,
        )

    def _drain(self, name: str) -> None:
        self._drainCalls.pop(name, None)
        self.draining.pop(name, None)
        tunnels = list(self.open.get(name, ()))
        if tunnels:
            self._log.info(
                "closing {count} tunnel(s) left on {environment} (drained)",
                count=len(tunnels),
                environment=name,
            )
        self.drained[name] = self.drained.get(name, 0) + len(tunnels)
        for tunnel in tunnels:
            tunnel.close("drained")
        streams = self.streams(name)
        if streams:
            self._log.info(
                "cutting {count} response(s) still open on {environment} (drained)",
                count=len(streams),
                environment=name,
            )
        self.streamsDrained[name] = self.streamsDrained.get(name, 0) + len(streams)
        for channel in streams:
            transport = channel.transport
            if transport is not None:
                # The exchange hears it as its client leaving.
                stream(transport).abortConnection()

    def streams(self, name: str) -> list[ProxyChannel]:
        """
        The client connections with a response still open on an environment
        (a server-sent event stream, a long poll, a slow download...), not
        counting tunnels.  Only responses already started count: a request
        still waiting for its answer gets that answer, or its C{504} after
        C{--response-timeout}, as usual.

        @param name: The environment.
        @return: Their channels.
        """
        found = []
        for channel in self.channels:
            if channel.tunnel is not None:
                continue
            for request in channel.requests:
                if not request.startedWriting or request.finished:
                    continue
                environment = getattr(request.exchange, "environment", None)
                if isinstance(environment, Environment) and environment.name == name:
                    found.append(channel)
                    break
        return found

    def _stopDraining(self, name: str) -> None:
        self.draining.pop(name, None)
        call = self._drainCalls.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    # Reporting

    def count(self, name: str) -> int:
        """
        @param name: An environment.
        @return: How many tunnels are open to it.
        """
        return len(self.open.get(name, ()))

    def status(self) -> dict[str, Any]:
        """
        The C{tunnels} section of C{GET /api/status}.

        @return: Open tunnels per environment, the timeouts, and what is
            draining until when (ISO 8601 UTC, and seconds from now).
        """
        now = self.clock.seconds()
        return {
            "open": {name: self.count(name) for name in COLOURS},
            "idle_timeout": self.settings.idleTimeout,
            "drain_timeout": self.settings.drainTimeout,
            "draining": [
                {
                    "environment": d.environment,
                    "tunnels": self.count(d.environment),
                    "responses": len(self.streams(d.environment)),
                    "since": isoTime(d.since),
                    "until": None if d.until is None else isoTime(d.until),
                    "closes_in": None if d.until is None else max(0.0, d.until - now),
                }
                for d in sorted(self.draining.values(), key=lambda d: d.environment)
            ],
        }

    def closeAll(self) -> Deferred[object]:
        """
        Close every tunnel and pending upgrade (the service is stopping).

        @return: A Deferred firing once their connections are closed.
        """
        for name in list(self._drainCalls):
            self._stopDraining(name)
        tunnels = list(self._pending)
        for tunnel in tunnels:
            tunnel.close("shutdown")
        d: Deferred[object] = DeferredList([t.whenGone() for t in tunnels]).addCallback(
            lambda _: None
        )
        return d


class TunnelMetrics:
    """
    The tunnel metrics: a collector for
    L{bluegreen.admin.metrics.Metrics.register}.

    @ivar tunnels: The registry.
    """

    def __init__(self, tunnels: Tunnels) -> None:
        """
        @param tunnels: The registry.
        """
        self.tunnels = tunnels

    def describe(self) -> Iterable[Metric]:
        """
        The metric families, without samples.
        """
        return list(_families())

    def collect(self) -> Iterable[Metric]:
        """
        The metric families with their current samples.
        """
        openNow, opened, drained, cut = _families()
        tunnels = self.tunnels
        for name in COLOURS:
            openNow.add_metric([name], tunnels.count(name))
            opened.add_metric([name], tunnels.openedCount.get(name, 0))
            drained.add_metric([name], tunnels.drained.get(name, 0))
            cut.add_metric([name], tunnels.streamsDrained.get(name, 0))
        return [openNow, opened, drained, cut]


def _families() -> tuple[
    GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily, CounterMetricFamily
]:
    return (
        GaugeMetricFamily(
            "bluegreen_tunnels_open",
            "Upgraded connections (WebSockets...) open, per environment.",
            labels=["environment"],
        ),
        CounterMetricFamily(
            "bluegreen_tunnels_opened",
            "Upgraded connections opened, per environment.",
            labels=["environment"],
        ),
        CounterMetricFamily(
            "bluegreen_tunnels_drained",
            "Tunnels closed because their environment was switched away from.",
            labels=["environment"],
        ),
        CounterMetricFamily(
            "bluegreen_responses_drained",
            "Responses still open (event streams, long polls) cut because "
            "their environment was switched away from.",
            labels=["environment"],
        ),
    )
