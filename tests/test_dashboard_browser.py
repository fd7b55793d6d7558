# -*- test-case-name: tests.test_dashboard_browser -*-
"""
The dashboard in a real headless Chromium, against a real bluegreen service
in front of real backends.

Chromium is driven with the Chrome DevTools Protocol (see
L{tests._chromium}).

The tests are skipped when no Chromium is installed, unless
C{BLUEGREEN_REQUIRE_CHROMIUM} is set (C{.ci/run} installs Debian's
C{chromium} and sets it when it can); C{BLUEGREEN_CHROMIUM} names another
binary.  With
C{BLUEGREEN_SCREENSHOT=PATH} the test also saves its screenshot of the
dashboard there (C{tools/screenshot.py} does this for C{docs/dashboard.png}).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import struct
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from bluegreen.service.tap import ProxyService

from ._admin import listeningPort, runService, serviceArguments
from ._chromium import CHROMIUM, WIDTH, AddCleanup, Page, launch, reactor
from ._redis import startRedis
from ._util import healthArguments, waitFor
from .test_dashboard_sync import lastSync

#: Health settings of the service under test.
INTERVAL, FAST_INTERVAL, TIMEOUT = 0.3, 0.2, 0.5


def pageConstant(name: str) -> int:
    """
    @return: The value of C{var NAME = N;} in the dashboard's script.
    """
    page = importlib.resources.files("bluegreen.admin").joinpath("dashboard.html")
    found = re.search(rb"var " + name.encode() + rb" = (\d+);", page.read_bytes())
    assert found is not None, name
    return int(found.group(1))


#: Seconds of silence after which the page says it may be out of date.
STALE_AFTER = pageConstant("STALE_AFTER")

#: The admin token of the service under test.
TOKEN = "dashboard-s3cret"


class App(Resource):
    """
    An environment's app: its name, or a 500 while it is failing.
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.failing = False

    def render_GET(self, request: Request) -> bytes:
        """
        Answer with the name, or fail.
        """
        if self.failing:
            request.setResponseCode(500)
            return f"{self.name} is failing\n".encode()
        return f"{self.name}\n".encode()


def serve(addCleanup: AddCleanup, app: App) -> str:
    """
    Serve C{app} on a free port of 127.0.0.1 until cleanup.

    @return: Its URL.
    """
    site: Any = Site(app)
    site.noisy = False
    port: IListeningPort = reactor.listenTCP(0, site, interface="127.0.0.1")
    addCleanup(port.stopListening)
    address = cast(IPv4Address, port.getHost())
    return f"http://127.0.0.1:{address.port}"


def startBluegreen(
    addCleanup: AddCleanup, green: App, blue: App, *extra: str
) -> tuple[ProxyService, str]:
    """
    Serve GREEN and BLUE and start a bluegreen service in front of them,
    with fast health checks and its admin API on a free port, until
    cleanup.

    @param extra: More options.
    @return: The service and the dashboard's URL.
    """
    greenURL, blueURL = serve(addCleanup, green), serve(addCleanup, blue)
    service = runService(
        addCleanup,
        serviceArguments(
            greenURL,
            blueURL,
            *healthArguments(INTERVAL, FAST_INTERVAL, TIMEOUT),
            *extra,
        ),
    )
    address = cast(IPv4Address, listeningPort(service, "admin").getHost())
    return service, f"http://127.0.0.1:{address.port}/"


async def closeStreams(service: ProxyService, page: Page) -> None:
    """
    Leave the dashboard, and wait until the service has closed its event
    stream (so that stopping the service leaves nothing behind).
    """
    await page.call("Page.navigate", url="about:blank")
    assert service.admin is not None
    events = service.admin.events
    await waitFor(lambda: not events.streams, "the dashboard's event stream to close")


def pngSize(data: bytes) -> tuple[int, int]:
    """
    @return: The width and height of a PNG image.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


class DashboardBrowserTests(TestCase):
    """
    The dashboard, seen and used in Chromium.
    """

    if CHROMIUM is None and not os.environ.get("BLUEGREEN_REQUIRE_CHROMIUM"):
        skip = (
            "no Chromium found (install Debian's chromium: apt-get install -y "
            "chromium; .ci/run does), or set BLUEGREEN_CHROMIUM"
        )

    timeout = 120

    async def test_dashboard(self) -> None:
        """
        The page shows GREEN live; when GREEN fails, it shows BLUE live
        after the failover.  Its switch button asks for confirmation and for
        the token, and shows why a switch to a down GREEN is refused; once
        GREEN is back, the switch is made and shown.  Nothing on the page
        breaks the Content Security Policy or throws.
        """
        tokenFile = os.path.abspath(self.mktemp())
        with open(tokenFile, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(tokenFile, 0o600)
        green = App("green")
        service, url = startBluegreen(
            self.addCleanup, green, App("blue"), "--admin-token-file", tokenFile
        )
        controller = service.controller
        page = await launch(self.addCleanup)
        self.addCleanup(closeStreams, service, page)
        await page.goto(url)

        # GREEN is live, in its colour and in words.
        await page.waitFor(
            "document.getElementById('live-name').textContent === 'GREEN'"
            " && document.body.dataset.connection === 'live'"
            " && document.querySelector('#env-green').dataset.state === 'up'"
            " && document.querySelector('#env-blue').dataset.state === 'up'",
        )
        self.assertEqual(
            await page.evaluate("document.getElementById('banner').className"),
            "banner env-green",
        )
        self.assertEqual(
            await page.evaluate(
                "getComputedStyle(document.getElementById('banner')).backgroundColor"
            ),
            "rgb(23, 117, 58)",
        )
        self.assertEqual(await page.text(".live-name"), "GREEN is live")
        self.assertEqual(await page.text("#env-green .role"), "LIVE")
        self.assertEqual(await page.text("#env-blue .role"), "standby")
        self.assertEqual(await page.text("#switch"), "Switch to BLUE\u2026")
        self.assertEqual(
            await page.evaluate("document.title"), "GREEN live \u00b7 bluegreen"
        )

        # While nothing changes, the live regions are left alone (rewriting
        # them at every update would have screen readers repeat them).
        await page.evaluate(
            "window.__announced = 0;"
            " var watch = new MutationObserver(function (m) {"
            "   window.__announced += m.length; });"
            " ['.live-name', '#connection', '#mode'].forEach(function (s) {"
            "   watch.observe(document.querySelector(s),"
            "     {childList: true, subtree: true, characterData: true}); })"
        )
        await deferLater(reactor, 2.5, lambda: None)
        self.assertEqual(await page.evaluate("window.__announced"), 0)

        # GREEN fails: the page shows BLUE live soon after the failover.
        # (How soon the service sends it is EventsTimingTests, on a Clock.)
        green.failing = True
        await page.waitFor(
            "document.getElementById('live-name').textContent === 'BLUE'",
        )
        self.assertEqual(controller.live.name, "blue")
        await page.waitFor(
            "document.querySelector('#env-green').dataset.state === 'down'"
            " && document.querySelectorAll('#env-green .strip li.fail').length > 0",
        )
        self.assertEqual(await page.text("#env-green .state"), "\u2717 DOWN")
        self.assertEqual(
            await page.evaluate("document.getElementById('banner').className"),
            "banner env-blue",
        )
        rows = await page.evaluate(
            "Array.from(document.querySelectorAll('#history tbody tr'))"
            ".map(r => Array.from(r.cells).map(c => c.textContent))"
        )
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][1:3], ["GREEN", "BLUE"])
        self.assertIn("failover: green down: status 500", rows[0][3])

        # The switch button asks first; Cancel does nothing.
        self.assertEqual(await page.text("#switch"), "Switch to GREEN\u2026")
        await page.click("#switch")
        await page.waitFor("document.getElementById('dialog').open")
        self.assertEqual(
            await page.text("#dialog-title"), "Switch live traffic to GREEN?"
        )
        warning = await page.text("#dialog-warning")
        self.assertIn("GREEN is DOWN", warning)
        await page.click("#dialog-cancel")
        await page.waitFor("!document.getElementById('dialog').open")
        self.assertEqual(controller.live.name, "blue")

        # Confirming asks for the token (401); a wrong one is refused.
        await page.click("#switch")
        await page.waitFor("document.getElementById('dialog').open")
        await page.click("#dialog-confirm")
        await page.waitFor("!document.getElementById('token-row').hidden")
        self.assertIn("needs its admin token", await page.text("#token-hint"))
        self.assertEqual(
            await page.evaluate("document.activeElement.id"), "token", "focus"
        )
        await page.type("not-the-token")
        await page.click("#dialog-confirm")
        await page.waitFor(
            "document.getElementById('token-hint').textContent"
            ".indexOf('wrong token') >= 0",
        )
        self.assertIsNone(
            await page.evaluate("sessionStorage.getItem('bluegreen.adminToken')")
        )

        # The right token (submitted with Enter): GREEN is down, so the API
        # refuses with 409, and the page shows its reason.
        await page.evaluate("document.getElementById('token').value = ''")
        await page.click("#token")
        await page.type(TOKEN)
        await page.pressEnter()
        error = await page.waitFor(
            "!document.getElementById('dialog-error').hidden"
            " && document.getElementById('dialog-error').textContent",
        )
        self.assertEqual(
            error,
            "Refused: green is down (status 500 (expected 200)); use force to "
            "switch anyway",
        )
        self.assertEqual(controller.live.name, "blue")
        self.assertEqual(
            await page.evaluate("sessionStorage.getItem('bluegreen.adminToken')"),
            TOKEN,
        )
        await page.click("#dialog-cancel")

        # GREEN recovers; switching to it now works, with the kept token.
        green.failing = False
        await page.waitFor(
            "document.querySelector('#env-green').dataset.state === 'up'",
        )
        await page.click("#switch")
        await page.waitFor("document.getElementById('dialog').open")
        self.assertTrue(
            await page.evaluate("document.getElementById('dialog-warning').hidden")
        )
        self.assertTrue(
            await page.evaluate("document.getElementById('token-row').hidden")
        )
        await page.click("#dialog-confirm")
        await page.waitFor(
            "!document.getElementById('dialog').open"
            " && document.getElementById('live-name').textContent === 'GREEN'",
        )
        self.assertEqual(controller.live.name, "green")
        self.assertEqual(
            controller.history[-1].reason,
            "manual switch via admin API from 127.0.0.1",
        )
        self.assertRegex(
            await page.text("#notice"), r"^Switched to GREEN at \d\d:\d\d:\d\d\.$"
        )
        rows = await page.evaluate(
            "Array.from(document.querySelectorAll('#history tbody tr'))"
            ".map(r => Array.from(r.cells).map(c => c.textContent))"
        )
        self.assertEqual(
            [row[1:] for row in rows],
            [
                ["BLUE", "GREEN", "manual switch via admin API from 127.0.0.1"],
                ["GREEN", "BLUE", rows[1][3]],
            ],
        )

        # The screenshot (for the README, with BLUEGREEN_SCREENSHOT).
        await page.evaluate("document.activeElement.blur()")
        image = await page.screenshot()
        width, height = pngSize(image)
        self.assertEqual(width, WIDTH)
        self.assertGreater(height, 400)
        for path in (self.mktemp() + ".png", os.environ.get("BLUEGREEN_SCREENSHOT")):
            if path:
                with open(path, "wb") as f:
                    f.write(image)

        # Sections added to the status later (flags, sync) appear too.
        assert service.admin is not None
        service.admin.addStatus("flags", lambda: {"new-checkout": True})
        await page.waitFor(
            "document.querySelector('#extra-flags dd') !== null"
            " && document.querySelector('#extra-flags dd').textContent === 'on'",
        )
        self.assertEqual(await page.text("#extra-flags h2"), "Flags")
        self.assertEqual(await page.text("#extra-flags dt"), "new-checkout")

        # The sync service's section is drawn as its own table, not as a
        # generic section (its text: tests.test_dashboard_sync).
        when = reactor.seconds() - 12
        sync: dict[str, Any] = {
            "mode": "migrate",
            "databases": {"green": "/srv/g.db", "blue": "/srv/b.db"},
            "running": [],
            "last": {
                "green->blue": lastSync(when=when),
            },
            "mirror": None,
        }
        service.admin.addStatus("sync", lambda: sync)
        row = json.dumps("#sync-table tbody tr[data-direction='green->blue']")
        await page.waitFor(
            f"document.querySelector({row}) !== null"
            " && !document.getElementById('sync').hidden"
        )
        cells = await page.evaluate(
            f"Array.from(document.querySelector({row}).cells).map(c => c.textContent)"
        )
        self.assertEqual(
            cells[:5], ["GREEN \u2192 BLUE", "migrate", "complete", "12", "0"]
        )
        self.assertRegex(
            cells[5], r"^\d+ s ago \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\), took 0\.8 s$"
        )
        self.assertIsNone(await page.evaluate("document.getElementById('extra-sync')"))

        self.assertEqual(await page.evaluate("window.__violations"), [])
        self.assertEqual(await page.evaluate("window.__errors"), [])
        exceptions = [
            e
            for e in page.browser.events
            if e.get("method") == "Runtime.exceptionThrown"
        ]
        self.assertEqual(exceptions, [])

    async def test_flags(self) -> None:
        """
        The flags are a flag x environment grid of switches: a click asks
        for the token, then sets the flag in the environment's Redis; a
        change made with C{redis-cli} shows; with Redis down the values are
        marked stale and a click says why it failed.
        """
        redis = await startRedis(self)
        tokenFile = os.path.abspath(self.mktemp())
        with open(tokenFile, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(tokenFile, 0o600)
        service, url = startBluegreen(
            self.addCleanup,
            App("green"),
            App("blue"),
            "--admin-token-file",
            tokenFile,
            "--blue-redis",
            redis.url,
        )
        page = await launch(self.addCleanup)
        self.addCleanup(closeStreams, service, page)
        await page.goto(url)
        toggle = "#flag-grid tr[data-flag=RECENT] td[data-env=blue] button"
        await page.waitFor(
            f"document.querySelector({json.dumps(toggle)}) !== null"
            " && !document.getElementById('flags').hidden",
        )
        self.assertEqual(await page.text(toggle), "OFF")
        self.assertEqual(
            await page.text("#flag-grid tr[data-flag=RECENT] td[data-env=blue]"),
            "OFFnot set",
        )
        self.assertEqual(
            await page.text("#flag-grid tr[data-flag=RECENT] td[data-env=green]"),
            "\u2014",
        )
        self.assertEqual(
            await page.text("#flag-notes li"),
            "GREEN has no Redis (start bluegreen with --green-redis URL).",
        )
        # The generic section is not drawn for the flag table.
        self.assertIsNone(await page.evaluate("document.getElementById('extra-flags')"))

        # Switch RECENT on in BLUE: the token is asked for, then it is set.
        await page.click(toggle)
        await page.waitFor("document.getElementById('token-dialog').open")
        await page.type(TOKEN)
        await page.pressEnter()
        await page.waitFor(
            f"document.querySelector({json.dumps(toggle)}).textContent === 'ON'",
        )
        self.assertEqual(await redis.cli("GET", "RECENT"), "ON")
        self.assertEqual(
            await page.evaluate(
                f"document.querySelector({json.dumps(toggle)})"
                ".getAttribute('aria-checked')"
            ),
            "true",
        )
        self.assertEqual(await page.text("#notice"), "Set RECENT = ON in BLUE.")
        assert service.flags is not None
        [change] = await service.flags.history("blue")
        self.assertEqual(change.who, "admin API from 127.0.0.1 (dashboard)")

        # A change made with redis-cli shows.
        await redis.cli("SET", "RECENT", "OFF")
        await page.waitFor(
            f"document.querySelector({json.dumps(toggle)}).textContent === 'OFF'",
        )

        # Redis down: stale, and a click says why it cannot be changed.
        await redis.kill()
        await page.waitFor(
            "document.querySelector('#flag-grid th[data-env=blue] .stale-tag')"
            " !== null",
        )
        await page.click(toggle)
        await page.waitFor(
            "document.getElementById('notice').className === 'notice error'",
        )
        self.assertRegex(
            await page.text("#notice"),
            r"^Cannot set RECENT in BLUE: cannot reach Redis for blue at "
            r"redis://127\.0\.0\.1:\d+/0: ",
        )
        self.assertEqual(await page.evaluate("window.__violations"), [])
        self.assertEqual(await page.evaluate("window.__errors"), [])

    async def test_silence(self) -> None:
        """
        When updates stop coming, the page says that what it shows may be
        out of date, and for how long it has heard nothing.
        """
        service, url = startBluegreen(self.addCleanup, App("green"), App("blue"))
        page = await launch(self.addCleanup)
        self.addCleanup(closeStreams, service, page)
        await page.goto(url)
        await page.waitFor("document.body.dataset.connection === 'live'")
        self.assertFalse(
            await page.evaluate("document.body.classList.contains('stale')")
        )

        def broken() -> dict[str, Any]:
            raise RuntimeError("the status is broken")

        assert service.admin is not None
        service.admin.events.status = broken
        await page.waitFor(
            "document.body.classList.contains('stale')"
            " && document.body.dataset.connection === 'lost'",
        )
        self.assertRegex(await page.text("#connection"), r"^no update for \d+ s$")
        self.assertEqual(
            await page.evaluate(
                "getComputedStyle(document.querySelector('.stale-note')).display"
            ),
            "block",
        )
        self.assertGreaterEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
