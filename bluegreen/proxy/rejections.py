# -*- test-case-name: tests.test_front_limits,tests.test_front_visible -*-
"""
Requests the proxy refuses itself, counted by status and cause.

Every refusal is one call to L{Rejections.count} (the client channel's for
400/405/408/413/414/431, the upstream framing checks' for 502), so the
metrics (C{bluegreen_rejected_requests_total{status, cause}}), the status
and the dashboard read one table.  L{rejectionResponse} is the short answer
a client gets.
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import define, field
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bluegreen.proxy.clients import ClientGate
from bluegreen.proxy.headers import httpDate

#: The causes known in advance, each with its status: exported at zero from
#: the start, so that C{rate()} sees the first one.  Other causes (the
#: upstream framing checks' 502s) are counted as they come.
CAUSES: dict[str, int] = {
    "malformed": 400,
    "missing_host": 400,
    "repeated_host": 400,
    "invalid_host": 400,
    "invalid_target": 400,
    "connect": 405,
    "header_timeout": 408,
    "body_timeout": 408,
    "body_too_large": 413,
    "request_line_too_long": 414,
    "header_section_too_large": 431,
    "too_many_fields": 431,
    # The environment's response failed the framing checks (proxy/framing.py).
    "invalid_response": 502,
}

#: Reason phrases of the statuses the proxy refuses with.
PHRASES: dict[int, bytes] = {
    400: b"Bad Request",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
}

#: The methods a C{405} names as allowed (RFC 9110 section 15.5.6): what
#: the proxy forwards, which is every method but C{CONNECT}.
ALLOWED_METHODS = b"GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE"


@define
class Rejections:
    """
    How many requests the proxy refused, by status and cause.

    @ivar counts: C{(status, cause)} to count.
    """

    counts: dict[tuple[int, str], int] = field(factory=dict)

    def count(self, status: int, cause: str) -> None:
        """
        Count one refused request.

        @param status: The status it was answered with (or C{502} for an
            upstream response refused).
        @param cause: A short name, e.g. C{"header_timeout"} (see
            L{CAUSES}); for a 502, what was wrong with the response.
        """
        key = (status, cause)
        self.counts[key] = self.counts.get(key, 0) + 1

    def table(self) -> dict[tuple[int, str], int]:
        """
        @return: Every known cause (at zero if never seen) and every cause
            counted, with its count.
        """
        table = {(status, cause): 0 for cause, status in CAUSES.items()}
        table.update(self.counts)
        return table

    def total(self) -> int:
        """
        @return: All requests refused.
        """
        return sum(self.counts.values())


def rejectionResponse(
    status: int, text: str, now: float, headers: Iterable[tuple[bytes, bytes]] = ()
) -> bytes:
    """
    The whole response a refused client gets: a short text body and
    C{Connection: close}, as the proxy's own 502s are.

    @param status: The status.
    @param text: Why, in a few words.
    @param now: POSIX time, for C{Date}.
    @param headers: More header fields (e.g. C{Allow}).
    @return: The response bytes.
    """
    body = f"bluegreen: {text}\n".encode()
    lines = [
        b"HTTP/1.1 %d %s" % (status, PHRASES.get(status, b"Error")),
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Length: %d" % (len(body),),
        b"Connection: close",
        b"Date: " + httpDate(now),
    ]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class ClientMetrics:
    """
    The client side's metrics, a C{prometheus_client} collector registered
    with L{bluegreen.admin.metrics.Metrics}:

      - C{bluegreen_rejected_requests_total{status, cause}}: requests the
        proxy refused (L{Rejections});
      - C{bluegreen_client_connections}: client connections open now;
      - C{bluegreen_client_connections_limit}: C{--max-clients};
      - C{bluegreen_client_accept_paused}: 1 while the listening port is
        paused at the limit.
    """

    def __init__(self, rejections: Rejections, clients: ClientGate) -> None:
        """
        @param rejections: The refusals.
        @param clients: The client connections and their limit.
        """
        self.rejections = rejections
        self.clients = clients

    def describe(self) -> Iterable[Metric]:
        """
        @return: Nothing: the families are built at collect time.
        """
        return []

    def collect(self) -> Iterable[Metric]:
        """
        @return: The families, from the counts now.
        """
        rejected = CounterMetricFamily(
            "bluegreen_rejected_requests",
            "Requests the proxy refused itself, by status and cause.",
            labels=["status", "cause"],
        )
        for (status, cause), count in sorted(self.rejections.table().items()):
            rejected.add_metric([str(status), cause], count)
        clients = self.clients
        current = GaugeMetricFamily(
            "bluegreen_client_connections", "Client connections open now."
        )
        current.add_metric([], clients.current)
        limit = GaugeMetricFamily(
            "bluegreen_client_connections_limit",
            "Most client connections accepted at once (--max-clients).",
        )
        limit.add_metric([], clients.limit)
        paused = GaugeMetricFamily(
            "bluegreen_client_accept_paused",
            "1 while the proxy's port is not accepting (at --max-clients).",
        )
        paused.add_metric([], 1 if clients.paused else 0)
        return [rejected, current, limit, paused]


def clientStatus(rejections: Rejections, clients: ClientGate) -> dict[str, object]:
    """
    The C{clients} section of C{GET /api/status}, flat so that the
    dashboard shows it as it is.

    @param rejections: The refusals.
    @param clients: The client connections and their limit.
    @return: C{connections}, C{limit}, C{accepting}, C{rejected} (the total)
        and one C{"rejected <status> <cause>"} entry per cause.
    """
    status: dict[str, object] = {
        "connections": clients.current,
        "limit": clients.limit,
        "accepting": not clients.paused,
        "rejected": rejections.total(),
    }
    for (code, cause), count in sorted(rejections.table().items()):
        status[f"rejected {code} {cause}"] = count
    return status
