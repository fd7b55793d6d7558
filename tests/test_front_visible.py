# -*- test-case-name: tests.test_front_visible -*-
"""
The front door, visible: C{GET /api/status} has a C{clients} section
(connections now, the limit, refusals by status and cause), C{/metrics} has
C{bluegreen_rejected_requests_total{status, cause}} and the client
connection gauges, and the dashboard draws the section.
"""

from __future__ import annotations

import json
import os
from typing import Any

from bluegreen.proxy.rejections import CAUSES, Rejections
from tests._backends import echo
from tests._proxytest import IntegrationTestCase
from tests._rawclient import connectRaw
from tests._util import waitFor

from ._admin import call
from .test_dashboard_sync import NODE, pageScript, runNode


class VisibleTests(IntegrationTestCase):
    """
    The admin API and metrics of a running proxy after a few refusals.
    """

    async def test_statusAndMetrics(self) -> None:
        """
        After a 405 and a 431 and with one idle client connected, the
        status and the metrics say so, every known cause at zero included.
        """
        _green, proxy = self.startProxyFor(
            echo("green"),
            "--admin",
            "tcp:0:interface=127.0.0.1",
            "--max-clients",
            "7",
            "--max-header-fields",
            "3",
            # The idle client is not cut by the head's deadline meanwhile.
            "--client-header-timeout",
            "3600",
        )
        admin = await proxy.service.whenListening("admin")
        base = f"http://127.0.0.1:{admin.getHost().port}"  # type: ignore[attr-defined]
        for method, headers in [
            (b"CONNECT", []),
            (b"GET", [(b"A", b"1"), (b"B", b"2"), (b"C", b"3")]),
        ]:
            client = await connectRaw(self, proxy.port)
            response = await client.request(method, b"/", headers)
            self.assertIn(response.code, (405, 431))
        await connectRaw(self, proxy.port)
        gate = proxy.service.gate
        assert gate is not None
        await waitFor(lambda: gate.current == 1, "one client connection left")
        status = (await call(base + "/api/status")).json
        clients = status["clients"]
        self.assertEqual(clients["connections"], 1)
        self.assertEqual(clients["limit"], 7)
        self.assertTrue(clients["accepting"])
        self.assertEqual(clients["rejected"], 2)
        self.assertEqual(clients["rejected 405 connect"], 1)
        self.assertEqual(clients["rejected 431 too_many_fields"], 1)
        self.assertEqual(clients["rejected 408 header_timeout"], 0)
        metrics = (await call(base + "/metrics")).data.decode()
        for line in [
            'bluegreen_rejected_requests_total{cause="connect",status="405"} 1.0',
            'bluegreen_rejected_requests_total{cause="too_many_fields",'
            'status="431"} 1.0',
            'bluegreen_rejected_requests_total{cause="request_line_too_long",'
            'status="414"} 0.0',
            "bluegreen_client_connections 1.0",
            "bluegreen_client_connections_limit 7.0",
            "bluegreen_client_accept_paused 0.0",
        ]:
            self.assertIn(line, metrics.splitlines())

    def test_othersCount(self) -> None:
        """
        A cause counted by another part (a 502 of the upstream framing
        checks) is in the table next to the known ones.
        """
        rejections = Rejections()
        rejections.count(502, "both_length_and_chunked")
        table = rejections.table()
        self.assertEqual(table[(502, "both_length_and_chunked")], 1)
        self.assertEqual(len(table), len(CAUSES) + 1)
        self.assertEqual(rejections.total(), 1)

    def test_dashboardDrawsClients(self) -> None:
        """
        The dashboard draws the C{clients} section as a list of its
        entries.
        """
        if NODE is None:
            self.skipTest("node is not installed")
        status: dict[str, Any] = {
            "version": "0",
            "now": 1714564812.0,
            "live": "green",
            "why": "start",
            "since": None,
            "mode": "serving",
            "history": [],
            "environments": {
                "green": {"url": "http://g", "live": True, "health": {}},
                "blue": {"url": "http://b", "live": False, "health": {}},
            },
            "syncing": None,
            "clients": {
                "connections": 3,
                "limit": 900,
                "accepting": True,
                "rejected": 1,
                "rejected 408 header_timeout": 1,
            },
        }
        fakeDOM = os.path.join(os.path.dirname(__file__), "_fakedom.js")
        drawn = json.loads(
            runNode([fakeDOM, pageScript(self), "extras"], json.dumps(status))
        )
        [section] = drawn["extras"]["children"]
        text = json.dumps(section)
        for word in ["Clients", "connections", "900", "rejected 408 header_timeout"]:
            self.assertIn(word, text)
