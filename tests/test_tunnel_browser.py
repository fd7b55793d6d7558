# -*- test-case-name: tests.test_tunnel_browser -*-
"""
A real browser's WebSocket through the proxy: headless Chromium (driven as
in L{tests._chromium}) opens a WebSocket to the proxy, which the test
WebSocket server behind it (L{tests._websocket}) echoes; after a switch and
the drain, the browser's reconnect lands on the new live environment.

Skipped when no Chromium is installed, unless C{BLUEGREEN_REQUIRE_CHROMIUM}
is set.
"""

from __future__ import annotations

import os

from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import TestCase

from ._admin import listeningPort
from ._backends import listen, portNumber, startProxy
from ._chromium import CHROMIUM, launch, reactor
from ._waiting import withTimeout
from ._websocket import WebSocketClient, WebSocketServerFactory

#: Opens a WebSocket to the page's own origin, sends "hello" and keeps every
#: message and the close in window globals the test reads.
OPEN = """
window.__messages = [];
window.__closed = false;
window.__socket = new WebSocket("ws://" + location.host + "/chat");
window.__socket.onopen = function () { window.__socket.send("hello"); };
window.__socket.onmessage = function (e) { window.__messages.push(e.data); };
window.__socket.onclose = function () { window.__closed = true; };
true
"""


class BrowserWebSocketTests(TestCase):
    """
    Chromium's WebSocket, through the proxy.
    """

    if CHROMIUM is None and not os.environ.get("BLUEGREEN_REQUIRE_CHROMIUM"):
        skip = (
            "no Chromium found (install Debian's chromium: apt-get install -y "
            "chromium; .ci/run does), or set BLUEGREEN_CHROMIUM"
        )

    timeout = 120

    async def test_webSocket(self) -> None:
        """
        The browser's handshake is accepted (its socket opens), its message
        is echoed by GREEN; a switch with C{--drain-timeout 0} closes the
        socket, and the page's new socket is echoed by BLUE.
        """
        green = WebSocketServerFactory("green")
        blue = WebSocketServerFactory("blue")
        for factory in (green, blue):
            self.addCleanup(factory.stop)
        proxy = startProxy(
            self,
            f"http://127.0.0.1:{listen(self, green)}",
            f"http://127.0.0.1:{listen(self, blue)}",
            "--drain-timeout",
            "0",
        )
        page = await launch(self.addCleanup)
        await page.goto(proxy.url + "/")
        self.assertIn(
            "green: no upgrade here", await page.evaluate("document.body.innerText")
        )
        await page.evaluate(OPEN)
        self.assertEqual(
            await page.waitFor("window.__messages.length && window.__messages[0]"),
            "green:hello",
        )
        # (The browser may also have asked for /favicon.ico.)
        upgrades = [line for line, headers in green.requests if b"upgrade" in headers]
        self.assertEqual(upgrades, [b"GET /chat HTTP/1.1"])
        proxy.controller.switch("blue")
        await page.waitFor("window.__closed")
        await page.evaluate(OPEN)
        self.assertEqual(
            await page.waitFor("window.__messages.length && window.__messages[0]"),
            "blue:hello",
        )
        self.assertEqual(await page.evaluate("window.__errors"), [])

    async def test_dashboardDraining(self) -> None:
        """
        The dashboard's "Tunnels" section shows the open tunnels, and after
        a switch what is draining until when.
        """
        green = WebSocketServerFactory("green")
        blue = WebSocketServerFactory("blue")
        for factory in (green, blue):
            self.addCleanup(factory.stop)
        proxy = startProxy(
            self,
            f"http://127.0.0.1:{listen(self, green)}",
            f"http://127.0.0.1:{listen(self, blue)}",
            "--drain-timeout",
            "600",
            "--admin",
            "tcp:0:interface=127.0.0.1",
        )
        admin = portNumber(listeningPort(proxy.service, "admin"))
        client = WebSocketClient()
        await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.port), client
        )
        self.addCleanup(lambda: client.transport.abortConnection())
        await withTimeout(client.answered, "the handshake's answer")
        page = await launch(self.addCleanup)
        await page.goto(f"http://127.0.0.1:{admin}/")
        section = "document.getElementById('extra-tunnels').innerText"
        text = await page.waitFor(f"{section}.indexOf('GREEN 1') >= 0 && {section}")
        self.assertIn("60 min", text)
        self.assertIn("10 min", text)
        proxy.controller.switch("blue")
        text = await page.waitFor(
            f"{section}.indexOf('draining GREEN') >= 0 && {section}"
        )
        self.assertRegex(
            text, r"1 tunnel, 0 responses, closed at \d\d:\d\d:\d\d \(in 10 min\)"
        )
        self.assertEqual(await page.evaluate("window.__errors"), [])
