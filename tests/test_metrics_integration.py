# -*- test-case-name: tests.test_metrics_integration -*-
# mypy: allow-untyped-calls
"""
Tests of L{bluegreen.admin.metrics} in the real service: real backends, real
clients, and C{GET /metrics} over a real socket.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from bluegreen import __version__
from bluegreen.admin.metrics import CONTENT_TYPE
from bluegreen.service.tap import ProxyService
from tests._admin import listeningPort, runService, serviceArguments
from tests._backends import (
    BackendConnection,
    IncompleteResponseError,
    ReceivedRequest,
    closeAfterFirst,
    closedPortURL,
    closeWithoutResponse,
    connectRaw,
    echo,
    failOnLoggedErrors,
    fetch,
    portNumber,
    rawThen,
    resetWithoutResponse,
    route,
    silent,
    startBackend,
    startProxy,
    withTimeout,
)
from tests._metrics import Scrape, labels, retryLabels, scrape
from tests._util import waitFor

#: The Host the admin API answers to (a loopback address; the raw client
#: sends the proxy's test name by default).
ADMIN_HOST = b"127.0.0.1"


def portOf(service: ProxyService, option: str) -> int:
    """
    @param option: C{"admin"} for the admin API, C{"port"} for the proxy.
    @return: The port number of the service's C{--option} listener.
    """
    return portNumber(listeningPort(service, option))


def notFound(request: ReceivedRequest, conn: BackendConnection) -> None:
    """
    Answer 404.
    """
    conn.respond(404, b"Not Found", body=b"no such page\n")


class EndToEndTests(TestCase):
    """
    The real service (C{makeService}, its health monitor and admin API),
    real backends, real clients, and C{GET /metrics} over a real socket.
    """

    async def test_scrape(self) -> None:
        """
        Requests served, a 404 from the backend, a refused upstream retried
        on the standby, a forced switch through the admin API, a refused
        upstream without retry (502), and the health checks are all counted
        exactly, as the Prometheus text parser reads them.
        """
        failOnLoggedErrors(self)
        _, greenURL = startBackend(
            self, "green", route({b"/missing": notFound}, echo("green"))
        )
        blueURL = closedPortURL()
        service = runService(
            self.addCleanup,
            serviceArguments(
                greenURL, blueURL, "--health-interval", "300", "--fast-interval", "300"
            ),
        )
        port, admin = portOf(service, "port"), portOf(service, "admin")
        states = service.health.health
        await waitFor(
            lambda: all(state.up is not None for state in states.values()),
            "the first health checks",
        )
        self.assertEqual((states["green"].up, states["blue"].up), (True, False))

        bodies: dict[str, int] = {"green": 0, "blue": 0}

        async def request(
            method: bytes, target: bytes, code: int, body: bytes | None = None
        ) -> None:
            response = await fetch(self, port, method, target, body=body)
            self.assertEqual(response.code, code, response.text)
            served = "blue" if code == 502 else "green"
            bodies[served] += response.body.length

        for _ in range(3):
            await request(b"GET", b"/", 200)
        await request(b"GET", b"/missing", 404)
        await request(b"POST", b"/form", 200, b"a=1")
        await request(b"HEAD", b"/", 200)
        await request(b"PURGE", b"/cache", 200)

        switch = await fetch(
            self,
            admin,
            b"POST",
            b"/api/switch",
            [(b"Content-Type", b"application/json")],
            b'{"to": "blue", "force": true}',
            host=ADMIN_HOST,
        )
        self.assertEqual(switch.code, 200, switch.text)
        self.assertEqual(service.controller.live.name, "blue")

        # Blue refuses: retried on GREEN, which is up.
        await request(b"GET", b"/", 200)
        # Without the retry, the client gets blue's 502.
        service.resource.retry = False
        await request(b"GET", b"/", 502)

        response = await fetch(self, admin, b"GET", b"/metrics", host=ADMIN_HOST)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.values(b"content-type"), [CONTENT_TYPE])
        result = Scrape(response.text)

        self.assertEqual(
            result.nonZero("bluegreen_requests_total"),
            {
                labels(environment="green", method="GET", status_class="2xx"): 4,
                labels(environment="green", method="GET", status_class="4xx"): 1,
                labels(environment="green", method="POST", status_class="2xx"): 1,
                labels(environment="green", method="HEAD", status_class="2xx"): 1,
                labels(environment="green", method="other", status_class="2xx"): 1,
                labels(environment="blue", method="GET", status_class="5xx"): 1,
            },
        )
        for name, count in (("green", 8), ("blue", 1)):
            env = {"environment": name}
            self.assertEqual(
                result("bluegreen_request_duration_seconds_count", env), count
            )
            self.assertEqual(
                result(
                    "bluegreen_request_duration_seconds_bucket",
                    {"environment": name, "le": "+Inf"},
                ),
                count,
            )
            self.assertGreater(result("bluegreen_request_duration_seconds_sum", env), 0)
            self.assertEqual(
                result("bluegreen_response_bytes_total", env), bodies[name]
            )
        self.assertGreater(bodies["green"], 0)
        self.assertEqual(
            result.nonZero("bluegreen_upstream_errors_total"),
            {labels(environment="blue", kind="refused"): 2},
        )
        self.assertEqual(
            result.nonZero("bluegreen_retries_total"),
            {retryLabels("blue", "green", "standby"): 1},
        )
        self.assertEqual(
            result.series("bluegreen_live_environment"),
            {
                frozenset({("environment", "green")}): 0,
                frozenset({("environment", "blue")}): 1,
            },
        )
        self.assertEqual(
            result.series("bluegreen_environment_up"),
            {
                frozenset({("environment", "green")}): 1,
                frozenset({("environment", "blue")}): 0,
            },
        )
        self.assertEqual(
            result.nonZero("bluegreen_health_checks_total"),
            {
                labels(environment="green", result="success"): 1,
                labels(environment="blue", result="failure"): 1,
            },
        )
        for name in ("green", "blue"):
            self.assertEqual(
                result(
                    "bluegreen_health_check_duration_seconds_count",
                    {"environment": name},
                ),
                1,
            )
        self.assertEqual(
            result.nonZero("bluegreen_switches_total"), {labels(reason="manual"): 1}
        )
        self.assertEqual(result("bluegreen_build_info", {"version": __version__}), 1)

    async def test_adminEndpoint(self) -> None:
        """
        C{/metrics} on the admin API needs no token (even when the API has
        one), answers C{HEAD} without a body, and refuses other methods with
        the API's JSON errors.
        """
        _, greenURL = startBackend(self, "green", echo("green"))
        _, blueURL = startBackend(self, "blue", echo("blue"))
        token = self.mktemp()
        with open(token, "w") as f:
            f.write("s3cret\n")
        os.chmod(token, 0o600)
        service = runService(
            self.addCleanup,
            serviceArguments(greenURL, blueURL, "--admin-token-file", token),
        )
        admin = portOf(service, "admin")

        get = await fetch(self, admin, b"GET", b"/metrics", host=ADMIN_HOST)
        self.assertEqual(get.code, 200)
        self.assertIn(b"bluegreen_live_environment", get.content)
        head = await fetch(self, admin, b"HEAD", b"/metrics", host=ADMIN_HOST)
        self.assertEqual(head.code, 200)
        self.assertEqual(head.body.length, 0)
        self.assertEqual(head.values(b"content-type"), [CONTENT_TYPE])
        post = await fetch(self, admin, b"POST", b"/metrics", host=ADMIN_HOST)
        self.assertEqual(post.code, 405)
        self.assertEqual(post.values(b"allow"), [b"GET, HEAD"])
        self.assertEqual(post.json(), {"error": "method POST not allowed on /metrics"})
        below = await fetch(self, admin, b"GET", b"/metrics/x", host=ADMIN_HOST)
        self.assertEqual(below.code, 404)


class ExchangeMetricsTests(TestCase):
    """
    What the proxy counts when upstreams misbehave (real proxy and backends,
    no health checks, no retry on the standby).
    """

    def setUp(self) -> None:
        self.backend, greenURL = startBackend(
            self,
            "green",
            route(
                {
                    b"/close": closeAfterFirst(closeWithoutResponse),
                    b"/reset": resetWithoutResponse,
                    b"/garbage": rawThen(b"NOT HTTP\r\n\r\n"),
                    b"/silent": silent,
                    b"/short": rawThen(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"
                    ),
                },
                echo("green"),
            ),
        )
        self.proxy = startProxy(
            self, greenURL, closedPortURL(), "--response-timeout", "0.5"
        )
        metrics = self.proxy.service.metrics
        assert metrics is not None
        self.metrics = metrics

    async def test_upstreamFailures(self) -> None:
        """
        A stale pooled connection is retried on a new one (a retry, not an
        error); a connection closed or reset before any response, an invalid
        response and a response timeout are errors of their kinds.
        """
        port = self.proxy.port
        ok = await fetch(self, port, b"GET", b"/")
        self.assertEqual(ok.code, 200)
        # The pooled connection is reused and closed by the backend: sent
        # again on a new connection, which is closed too.
        closed = await fetch(self, port, b"GET", b"/close")
        self.assertEqual(closed.code, 502)
        reset = await fetch(self, port, b"GET", b"/reset")
        self.assertEqual(reset.code, 502)
        garbage = await fetch(self, port, b"GET", b"/garbage")
        self.assertEqual(garbage.code, 502)
        timeout = await fetch(self, port, b"GET", b"/silent")
        self.assertEqual(timeout.code, 504)
        result = scrape(self.metrics)
        self.assertEqual(
            result.nonZero("bluegreen_upstream_errors_total"),
            {
                labels(environment="green", kind="closed"): 1,
                labels(environment="green", kind="reset"): 1,
                labels(environment="green", kind="invalid_response"): 1,
                labels(environment="green", kind="timeout_response"): 1,
            },
        )
        self.assertEqual(
            result.nonZero("bluegreen_retries_total"),
            {retryLabels("green", "green", "stale_connection"): 1},
        )
        self.assertEqual(
            result.nonZero("bluegreen_requests_total"),
            {
                labels(environment="green", method="GET", status_class="2xx"): 1,
                labels(environment="green", method="GET", status_class="5xx"): 4,
            },
        )
        # No health checks run here.
        self.assertEqual(set(result.series("bluegreen_environment_up").values()), {-1})

    async def test_cutOff(self) -> None:
        """
        A response the upstream cuts off half way counts under its status,
        and as an upstream error.
        """
        with self.assertRaises(IncompleteResponseError):
            await fetch(self, self.proxy.port, b"GET", b"/short")
        await waitFor(
            lambda: scrape(self.metrics).nonZero("bluegreen_requests_total"),
            "the request to be counted",
        )
        result = scrape(self.metrics)
        self.assertEqual(
            result.nonZero("bluegreen_requests_total"),
            {labels(environment="green", method="GET", status_class="2xx"): 1},
        )
        self.assertEqual(
            result.nonZero("bluegreen_upstream_errors_total"),
            {labels(environment="green", kind="closed"): 1},
        )
        self.assertEqual(
            result("bluegreen_response_bytes_total", {"environment": "green"}), 5
        )

    async def test_clientClosed(self) -> None:
        """
        A client that leaves before the response is counted as
        C{client_closed}, not as an upstream error.
        """
        client = await connectRaw(self, self.proxy.port)
        pending = client.request(b"GET", b"/silent")
        pending.addErrback(lambda _: None)
        await withTimeout(
            self.backend.when(lambda: bool(self.backend.requests)),
            "the request reaching the backend",
        )
        client.abort()
        await client.lost
        key = labels(environment="green", method="GET", status_class="client_closed")
        await waitFor(
            lambda: scrape(self.metrics).nonZero("bluegreen_requests_total"),
            "the request to be counted",
        )
        result = scrape(self.metrics)
        self.assertEqual(result.nonZero("bluegreen_requests_total"), {key: 1})
        self.assertEqual(result.nonZero("bluegreen_upstream_errors_total"), {})
        self.assertEqual(
            result("bluegreen_response_bytes_total", {"environment": "green"}), 0
        )
