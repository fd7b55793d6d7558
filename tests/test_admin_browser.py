# -*- test-case-name: tests.test_admin_browser -*-
"""
The admin API against foreign pages, in a real browser (headless Chromium,
see L{tests._chromium}): a page from another site, and a DNS-rebinding page
(C{evil.example} resolved to 127.0.0.1 by C{--host-resolver-rules}), try to
switch with C{fetch}; nothing switches, and the requests that reach the
admin API are refused by it (421 or 403), not only by the browser.

Skipped when no Chromium is installed, unless
C{BLUEGREEN_REQUIRE_CHROMIUM} is set (as L{tests.test_dashboard_browser}).
"""

from __future__ import annotations

import json
import os
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import LogEvent
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from ._admin import (
    QUIET_HEALTH,
    Backend,
    captureEvents,
    listeningPort,
    runService,
    serviceArguments,
    settled,
)
from ._admin import Running as RunningService
from ._chromium import CHROMIUM, launch, reactor
from ._util import freePort, waitFor

#: Resolves the attacker's name to this machine, as its DNS would once
#: rebound.
REBIND = "--host-resolver-rules=MAP evil.example 127.0.0.1"

#: Run in the attacker's page: try to switch with a JSON C{fetch} to C{url}
#: (C{mode}: C{cors}, or C{no-cors} with a "simple" text body, which needs no
#: preflight); the outcome as text.
ATTEMPT = """
(async function (url, mode) {
  var init = mode === "cors"
    ? {method: "POST", mode: "cors", body: JSON.stringify({to: "blue"}),
       headers: {"Content-Type": "application/json"}}
    : {method: "POST", mode: "no-cors", body: JSON.stringify({to: "blue"}),
       headers: {"Content-Type": "text/plain"}};
  try {
    var response = await fetch(url, init);
    return response.type + " " + response.status + " " + await response.text();
  } catch (e) {
    return "failed: " + e;
  }
})(%s, %s)
"""


class Attacker(Resource):
    """
    The attacker's page: any path, nothing but text; each answer closes its
    connection (so the browser's next request to the name makes a new one,
    as after a DNS change).
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Connection", b"close")
        request.setHeader(b"Content-Type", b"text/html")
        return b"<!DOCTYPE html><title>cute cats</title><p>cats"


def serveAttacker(
    testCase: TestCase, port: int = 0
) -> tuple[WrappingFactory, IListeningPort]:
    """
    Serve L{Attacker} on 127.0.0.1:C{port} (any free one for 0).

    @return: The factory (which knows every connection, see L{leave}) and
        the listening port.
    """
    site: Any = Site(Attacker())
    site.noisy = False
    factory = WrappingFactory(site)
    listening: IListeningPort = reactor.listenTCP(port, factory, interface="127.0.0.1")
    testCase.addCleanup(listening.stopListening)
    return factory, listening


async def leave(factory: WrappingFactory, listening: IListeningPort) -> None:
    """
    Stop serving the attacker's page and cut every connection to it, so
    that none the browser opened ahead survives the "DNS change".
    """
    await maybeDeferred(listening.stopListening)
    for protocol in list(factory.protocols):
        protocol.transport.abortConnection()


def portOf(listening: IListeningPort) -> int:
    """
    @return: The port C{listening} listens on.
    """
    return cast(IPv4Address, listening.getHost()).port


async def startAdmin(testCase: TestCase, adminPort: int) -> RunningService:
    """
    Start two backends and a service with its admin API on C{adminPort}.
    """
    backends = Backend("green"), Backend("blue")
    for backend in backends:
        backend.start()
        testCase.addCleanup(backend.stop)
    service = runService(
        testCase.addCleanup,
        serviceArguments(
            backends[0].url,
            backends[1].url,
            *QUIET_HEALTH,
            "--admin",
            f"tcp:{adminPort}:interface=127.0.0.1",
        ),
    )
    running = RunningService(
        service, portOf(listeningPort(service, "admin")), *backends
    )
    await settled(running)
    return running


def refusals(events: list[LogEvent]) -> list[str]:
    """
    @return: The admin site's refusals of foreign requests so far.
    """
    return [e["error"] for e in events if e.get("event") == "admin-foreign"]


class ForeignPageTests(TestCase):
    """
    Foreign pages in Chromium cannot switch.
    """

    if CHROMIUM is None and not os.environ.get("BLUEGREEN_REQUIRE_CHROMIUM"):
        skip = (
            "no Chromium found (install Debian's chromium: apt-get install -y "
            "chromium; .ci/run does), or set BLUEGREEN_CHROMIUM"
        )

    timeout = 120

    async def test_rebinding(self) -> None:
        """
        DNS rebinding: the page is loaded from C{http://evil.example:PORT}
        while the attacker serves that port, then the name's port is the
        admin API's, so the page's JSON C{fetch("/api/switch")} is
        same-origin for the browser (no preflight, the answer readable).
        The admin API answers 421 for the foreign C{Host}, and nothing
        switches.
        """
        events = captureEvents(self)
        adminPort = freePort()
        site, attacker = serveAttacker(self, adminPort)
        page = await launch(self.addCleanup, REBIND)
        origin = f"http://evil.example:{adminPort}"
        await page.goto(origin + "/")
        await leave(site, attacker)
        running = await startAdmin(self, adminPort)
        outcome = await page.evaluate(
            ATTEMPT % (json.dumps(origin + "/api/switch"), json.dumps("cors"))
        )
        self.assertTrue(outcome.startswith("basic 421 "), outcome)
        self.assertIn("--admin-host evil.example", outcome)
        status = await page.evaluate(
            "fetch('/api/status').then(r => r.status + ' ' + r.statusText)"
        )
        self.assertEqual(status, "421 Misdirected Request")
        self.assertEqual(running.service.controller.live.name, "green")
        found = refusals(events)
        self.assertGreaterEqual(len(found), 2, found)
        for message in found:
            self.assertTrue(message.startswith("Host 'evil.example:"), found)

    async def test_otherSite(self) -> None:
        """
        A page from another site (another port): its JSON C{fetch} needs a
        CORS preflight, which the admin API never grants, so it is never
        sent; the "simple" one the browser does send (no-cors, text) carries
        the page's C{Origin} and gets 403; through the attacker's rebound
        name, the preflight and the simple request get 421.  Nothing
        switches.
        """
        events = captureEvents(self)
        running = await startAdmin(self, 0)
        _, attacker = serveAttacker(self)
        page = await launch(self.addCleanup, REBIND)
        await page.goto(f"http://evil.example:{portOf(attacker)}/")
        direct = f"http://127.0.0.1:{running.adminPort}/api/switch"
        rebound = f"http://evil.example:{running.adminPort}/api/switch"
        outcomes = [
            await page.evaluate(ATTEMPT % (json.dumps(url), json.dumps(mode)))
            for url, mode in [
                (direct, "cors"),
                (direct, "no-cors"),
                (rebound, "cors"),
                (rebound, "no-cors"),
            ]
        ]
        self.assertTrue(outcomes[0].startswith("failed: "), outcomes)
        self.assertEqual(outcomes[1], "opaque 0 ", outcomes)
        self.assertTrue(outcomes[2].startswith("failed: "), outcomes)
        self.assertEqual(outcomes[3], "opaque 0 ", outcomes)
        # Chromium sends a request answered 421 once more, on a new
        # connection (RFC 9110 section 15.5.20 allows it), hence at least.
        await waitFor(lambda: len(refusals(events)) >= 3, "the refusals")
        found = refusals(events)
        self.assertTrue(found[0].startswith("Origin 'http://evil.example:"), found)
        for message in found[1:]:
            self.assertTrue(message.startswith("Host 'evil.example:"), found)
        self.assertEqual(running.service.controller.live.name, "green")
        self.assertEqual(len(running.service.controller.history), 0)
