# -*- test-case-name: tests.test_dashboard_browser,tests.test_admin_browser -*-
"""
A headless Chromium for the tests, driven with the Chrome DevTools Protocol
over C{--remote-debugging-pipe} (NUL-separated JSON messages on the
browser's file descriptors 3 and 4): it runs as a child process of the
reactor (L{IReactorProcess.spawnProcess}), so the tests need no WebDriver,
no websocket library and no thread, and the browser is shut down and reaped
(its profile directory removed) when the test ends.

L{CHROMIUM} is C{$BLUEGREEN_CHROMIUM}, or the first of C{chromium},
C{chromium-browser}, C{google-chrome} on C{PATH}.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from ._util import PATIENCE

#: The reactor the test runs on (trial's real one).
reactor: Any = _reactor

#: Registers a cleanup: C{addCleanup(f, *args)}, as L{TestCase.addCleanup}.
AddCleanup = Callable[..., object]

#: Seconds a CDP command may take.
COMMAND_TIMEOUT = PATIENCE

#: The size of the browser window (and of the screenshot's width).
WIDTH, HEIGHT = 1280, 900

#: Installed in every page before its own script runs: collects Content
#: Security Policy violations and uncaught errors for the test to check.
WATCH = """
window.__violations = [];
window.__errors = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
window.addEventListener("error", function (e) {
  window.__errors.push(String(e.message));
});
window.addEventListener("unhandledrejection", function (e) {
  window.__errors.push("unhandled rejection: " + String(e.reason));
});
"""


def findChromium() -> str | None:
    """
    @return: The Chromium to use: C{$BLUEGREEN_CHROMIUM}, or the first of
        C{chromium}, C{chromium-browser}, C{google-chrome} on C{PATH}.
    """
    explicit = os.environ.get("BLUEGREEN_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found is not None:
            return found
    return None


CHROMIUM = findChromium()


class DevToolsError(Exception):
    """
    Chromium answered a command with an error, or went away.
    """


class Chromium(ProcessProtocol):
    """
    A headless Chromium child process, spoken to over its DevTools pipe.

    @ivar events: The DevTools events received, in order.
    @ivar output: The tail of its standard output and error (diagnostics).
    @ivar exited: Whether the process has ended.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.output = b""
        self.exited = False
        self._buffer = b""
        self._lastId = 0
        self._pending: dict[int, Deferred[dict[str, Any]]] = {}
        self._ended: list[Deferred[None]] = []

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """
        Messages arrive on fd 4; anything else is kept for diagnostics.
        """
        if childFD != 4:
            self.output = (self.output + data)[-32768:]
            return
        self._buffer += data
        while b"\0" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\0", 1)
            message = json.loads(raw)
            waiting = self._pending.pop(message.get("id", -1), None)
            if waiting is None:
                self.events.append(message)
            elif "error" in message:
                waiting.errback(DevToolsError(json.dumps(message["error"])))
            else:
                waiting.callback(message.get("result", {}))

    def processEnded(self, reason: Failure) -> None:
        """
        Fail the commands still waiting, and tell those waiting for the end.
        """
        self.exited = True
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.errback(DevToolsError(f"Chromium exited: {reason.value}"))
        ended, self._ended = self._ended, []
        for waiter in ended:
            waiter.callback(None)

    def whenEnded(self) -> Deferred[None]:
        """
        @return: A Deferred firing once the process has ended.
        """
        waiter: Deferred[None] = Deferred()
        if self.exited:
            waiter.callback(None)
        else:
            self._ended.append(waiter)
        return waiter

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str = ""
    ) -> Deferred[dict[str, Any]]:
        """
        Send a DevTools command.

        @param method: E.g. C{"Runtime.evaluate"}.
        @param params: Its parameters.
        @param session: The target session, or C{""} for the browser.
        @return: A Deferred firing with the command's result.
        """
        if self.exited or self.transport is None:
            raise DevToolsError(f"Chromium has exited; cannot send {method}")
        self._lastId += 1
        message: dict[str, Any] = {
            "id": self._lastId,
            "method": method,
            "params": params or {},
        }
        if session:
            message["sessionId"] = session
        result: Deferred[dict[str, Any]] = Deferred()
        self._pending[self._lastId] = result
        self.transport.writeToChild(3, json.dumps(message).encode("utf-8") + b"\0")
        return result.addTimeout(COMMAND_TIMEOUT, reactor)

    async def close(self) -> None:
        """
        Close the browser (killing it if it does not go) and wait for it.
        """
        if not self.exited:
            try:
                await self.send("Browser.close")
            except Exception:
                pass
        ended = self.whenEnded()
        timer = reactor.callLater(10, self._kill)
        await ended
        if timer.active():
            timer.cancel()

    def _kill(self) -> None:
        if not self.exited and self.transport is not None:
            self.transport.signalProcess("KILL")


class Page:
    """
    A page of a L{Chromium}: evaluate, wait, click, type, take screenshots.
    """

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """
        Send a DevTools command to this page.
        """
        return await self.browser.send(method, params, self.session)

    async def evaluate(self, expression: str) -> Any:
        """
        Evaluate a JavaScript expression in the page.

        @return: Its value (JSON-able values only).
        @raise DevToolsError: If it throws.
        """
        result = await self.call(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details["text"]
            raise DevToolsError(f"{expression!r} threw: {text}")
        return result["result"].get("value")

    async def waitFor(self, expression: str, within: float = PATIENCE) -> Any:
        """
        Wait until a JavaScript expression is truthy (an expression that
        throws, e.g. on an element not there yet, counts as false).

        @param within: The longest wait, in seconds (default L{PATIENCE}).
        @return: Its value.
        @raise AssertionError: If it is not within C{within} seconds; the
            message shows the page's text.
        """
        deadline = reactor.seconds() + within
        value: Any = None
        while reactor.seconds() < deadline:
            try:
                value = await self.evaluate(expression)
            except DevToolsError as e:
                value = e
            else:
                if value:
                    return value
            await deferLater(reactor, 0.05, lambda: None)
        text = await self.evaluate("document.body && document.body.innerText")
        raise AssertionError(
            f"not true within {within} s: {expression} (last value {value!r});"
            f" the page says:\n{text}"
        )

    async def goto(self, url: str) -> None:
        """
        Load C{url} and wait until it has loaded.
        """
        await self.call("Page.navigate", url=url)
        await self.waitFor(
            f"location.href === {json.dumps(url)}"
            " && document.readyState === 'complete'",
        )

    async def text(self, selector: str) -> str:
        """
        @return: The text of the element C{selector} picks.
        """
        value = await self.evaluate(
            f"document.querySelector({json.dumps(selector)}).textContent"
        )
        return str(value)

    async def click(self, selector: str) -> None:
        """
        Click the middle of an element with the mouse, as a person would.
        """
        box = await self.evaluate(
            "(function () {"
            f" var e = document.querySelector({json.dumps(selector)});"
            " if (!e) { return null; }"
            " e.scrollIntoView({block: 'center'});"
            " var r = e.getBoundingClientRect();"
            " return {x: r.left + r.width / 2, y: r.top + r.height / 2};"
            "}())"
        )
        assert box is not None, f"nothing matches {selector}"
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.call(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box["x"],
                y=box["y"],
                button="left",
                clickCount=1,
            )

    async def type(self, text: str) -> None:
        """
        Type C{text} into the focused element.
        """
        await self.call("Input.insertText", text=text)

    async def pressEnter(self) -> None:
        """
        Press the Enter key.
        """
        for kind in ("keyDown", "keyUp"):
            await self.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key="Enter",
                code="Enter",
                windowsVirtualKeyCode=13,
                **({"text": "\r"} if kind == "keyDown" else {}),
            )

    async def screenshot(self) -> bytes:
        """
        @return: A PNG of the whole page.
        """
        height = await self.evaluate(
            "Math.ceil(document.body.getBoundingClientRect().height)"
        )
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=int(height),
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = await self.call("Page.captureScreenshot", format="png")
        return base64.b64decode(shot["data"])


async def launch(addCleanup: AddCleanup, *arguments: str) -> Page:
    """
    Start a headless Chromium with a fresh profile, closed (and the profile
    removed) at cleanup.

    @param addCleanup: Registers a cleanup (e.g. L{TestCase.addCleanup}).
    @param arguments: More command-line switches (e.g.
        C{--host-resolver-rules=...}).
    @return: Its page, with L{WATCH} installed.
    """
    assert CHROMIUM is not None, (
        "BLUEGREEN_REQUIRE_CHROMIUM is set, but no Chromium was found "
        "(apt-get install -y chromium, or set BLUEGREEN_CHROMIUM)"
    )
    profile = tempfile.mkdtemp(prefix="bluegreen-chromium-")
    addCleanup(shutil.rmtree, profile, True)
    environment = {
        **os.environ,
        "HOME": profile,
        "XDG_CONFIG_HOME": os.path.join(profile, "config"),
        "XDG_CACHE_HOME": os.path.join(profile, "cache"),
    }
    browser = Chromium()
    reactor.spawnProcess(
        browser,
        CHROMIUM,
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--mute-audio",
            f"--window-size={WIDTH},{HEIGHT}",
            f"--user-data-dir={os.path.join(profile, 'data')}",
            "--remote-debugging-pipe",
            *arguments,
            "about:blank",
        ],
        env=environment,
        childFDs={0: "w", 1: "r", 2: "r", 3: "w", 4: "r"},
    )
    addCleanup(browser.close)
    try:
        targets = await browser.send("Target.getTargets")
    except Exception as e:
        output = browser.output.decode("utf-8", "replace")
        raise AssertionError(
            f"Chromium did not start ({e}); it said:\n{output}"
        ) from None
    [target] = [t for t in targets["targetInfos"] if t["type"] == "page"]
    attached = await browser.send(
        "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
    )
    page = Page(browser, attached["sessionId"])
    await page.call("Page.enable")
    await page.call("Runtime.enable")
    await page.call(
        "Emulation.setDeviceMetricsOverride",
        width=WIDTH,
        height=HEIGHT,
        deviceScaleFactor=1,
        mobile=False,
    )
    await page.call("Page.addScriptToEvaluateOnNewDocument", source=WATCH)
    return page
