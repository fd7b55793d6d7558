#!/usr/bin/env python3
"""
Take the README's screenshot of the dashboard (C{docs/dashboard.png}).

It uses the set-up of C{tests/test_dashboard_browser.py}: two local apps, a
bluegreen service in front of them with fast health checks (every 0.1 s,
so the strips of the last 50 checks fill up in seconds), and headless
Chromium.  It plays a short story: GREEN is live; GREEN fails and traffic
fails over to BLUE; GREEN recovers; an operator switches back to GREEN with
the dashboard's button.  Then it captures the whole page.

Usage, from the repository (Chromium installed, e.g. by C{./dev test} or
C{.ci/run} as root, or C{apt-get install -y chromium})::

    .venv/bin/python tools/screenshot.py [OUTPUT]   # default docs/dashboard.png
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from twisted.internet.defer import Deferred, ensureDeferred  # noqa: E402
from twisted.internet.task import deferLater, react  # noqa: E402

from tests._chromium import CHROMIUM, launch  # noqa: E402
from tests.test_dashboard_browser import (  # noqa: E402
    App,
    closeStreams,
    startBluegreen,
)


async def story(reactor: Any, output: str) -> None:
    """
    Play the story and save the screenshot to C{output}.
    """
    cleanups: list[tuple[Callable[..., object], tuple[object, ...]]] = []

    def addCleanup(f: Callable[..., object], *args: object) -> None:
        cleanups.append((f, args))

    def sleep(seconds: float) -> Deferred[None]:
        return deferLater(reactor, seconds, lambda: None)

    live = "document.getElementById('live-name').textContent === '{}'"
    try:
        green = App("green")
        service, url = startBluegreen(
            addCleanup,
            green,
            App("blue"),
            "--health-interval",
            "0.1",
            "--fast-interval",
            "0.1",
        )
        page = await launch(addCleanup)
        addCleanup(closeStreams, service, page)
        await page.goto(url)
        await page.waitFor(
            live.format("GREEN")
            + " && document.querySelector('#env-blue').dataset.state === 'up'",
            within=10,
        )
        await sleep(1.5)
        green.failing = True
        await page.waitFor(live.format("BLUE"), within=10)
        await sleep(0.5)
        green.failing = False
        await page.waitFor(
            "document.querySelector('#env-green').dataset.state === 'up'", within=10
        )
        await page.click("#switch")
        await page.waitFor("document.getElementById('dialog').open", within=5)
        await page.click("#dialog-confirm")
        await page.waitFor(
            "!document.getElementById('dialog').open && " + live.format("GREEN"),
            within=10,
        )
        await sleep(3)
        await page.evaluate("document.activeElement.blur()")
        image = await page.screenshot()
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "wb") as f:
            f.write(image)
        print(f"wrote {output} ({len(image)} bytes)")
    finally:
        for f, args in reversed(cleanups):
            result = f(*args)
            if inspect.isawaitable(result):
                await result


def main(reactor: Any, *argv: str) -> Deferred[None]:
    """
    Take the screenshot.
    """
    output = argv[0] if argv else os.path.join(ROOT, "docs", "dashboard.png")
    return ensureDeferred(story(reactor, output))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="Render the dashboard in headless Chromium and save a PNG."
    )
    parser.add_argument(
        "output",
        nargs="?",
        default=os.path.join(ROOT, "docs", "dashboard.png"),
        help="where to write the PNG (default: docs/dashboard.png)",
    )
    arguments = parser.parse_args()
    if CHROMIUM is None:
        sys.exit(
            "screenshot.py: no Chromium found (apt-get install -y chromium, "
            "or set BLUEGREEN_CHROMIUM)"
        )
    react(main, [arguments.output])
