# -*- test-case-name: tests.test_failover_chain,tests.test_metrics -*-
"""
What the proxy reports to, as small interfaces: the request counters
(L{bluegreen.admin.metrics.Metrics} provides them) and the health monitor's
passive side (L{bluegreen.health.HealthMonitor} provides it).

The proxy depends only on these, so it imports neither the admin package nor
the health monitor, and a test can hand it a few lines of fake.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred


class ProxyMetrics(Protocol):
    """
    Counters the proxy adds to on its hot path (each call must be cheap).
    """

    def request(
        self, environment: str, method: bytes, status: int, size: int, seconds: float
    ) -> None:
        """
        Count a proxied request that ended.

        @param environment: The environment that served it.
        @param method: Its method.
        @param status: The status sent, or C{0} if the client left before
            any response was sent.
        @param size: Response body bytes sent.
        @param seconds: Its duration.
        """

    def upstreamError(self, environment: str, kind: str) -> None:
        """
        Count a failure to get a response from an environment.

        @param environment: The environment.
        @param kind: One of L{bluegreen.proxy.failures.FAILURE_KINDS}.
        """

    def retry(self, source: str, to: str, kind: str) -> None:
        """
        Count a request sent again.

        @param source: The environment it was sent to first.
        @param to: The environment it is sent to now.
        @param kind: C{"standby"} (another environment) or
            C{"stale_connection"} (the same one, on a new connection).
        """


class PassiveHealth(Protocol):
    """
    The health monitor, as the proxy sees it: told of environments that
    proxied requests cannot reach, and asked whether the standby is up.
    """

    def reportPassive(self, name: str, reason: str, path: str = "") -> None:
        """
        A proxied request could not reach C{name}: evidence for the
        monitor to check it, not a failed check.

        @param name: The environment.
        @param reason: What the proxy saw.
        @param path: The request's path (without its query).
        """

    def isUp(self, name: str) -> bool:
        """
        @param name: An environment.
        @return: C{True} if C{name} is known to be up.
        """

    def confirming(self, name: str) -> Deferred[None] | None:
        """
        @param name: An environment.
        @return: A Deferred firing when the check that a passive failure of
            C{name} started is recorded, or L{None} if none is running.
        """
