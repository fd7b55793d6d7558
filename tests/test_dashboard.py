# -*- test-case-name: tests.test_dashboard -*-
"""
Tests for L{bluegreen.admin.dashboard}: the page at C{GET /} of the admin API, its
security headers, the health history in the status, and the server-sent
events of C{GET /api/events}.

Most tests talk to a real service (L{tests.test_admin.startService}) over
real sockets; the event stream's timing (pings, stalled clients, the
sampling loop) is tested with a fake request and a L{Clock}.  The page in a
real browser is L{tests.test_dashboard_browser}.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import json
import re
from typing import Any, cast

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.test.requesthelper import DummyRequest

import bluegreen.admin.dashboard as dashboard
from bluegreen.admin.dashboard import (
    EVENTS_HEARTBEAT,
    EVENTS_INTERVAL,
    STALLED_AFTER,
    StatusEvents,
    contentSecurityPolicy,
)
from bluegreen.health import HISTORY, CheckResult
from tests._util import waitFor

from ._admin import (
    Running,
    assertBrokenStatus,
    assertHeadOnly,
    call,
    captureEvents,
    globalReactor,
    startService,
)


def packagedPage() -> bytes:
    """
    @return: C{bluegreen/admin/dashboard.html} as installed.
    """
    page = importlib.resources.files("bluegreen.admin").joinpath("dashboard.html")
    return page.read_bytes()


def sha256Source(text: bytes) -> str:
    """
    @return: The CSP source allowing an inline block of C{text}.
    """
    return "'sha256-" + base64.b64encode(hashlib.sha256(text).digest()).decode() + "'"


class PageTests(TestCase):
    """
    C{GET /}: the page and its headers.
    """

    async def test_page(self) -> None:
        """
        C{GET /} answers with the packaged page as UTF-8 HTML, not cached,
        not to be framed or sniffed, under the policy of
        L{contentSecurityPolicy}.
        """
        running = await startService(self)
        answer = await call(running.base + "/")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.data, packagedPage())
        headers = answer.headers
        self.assertEqual(
            headers.getRawHeaders(b"content-type"), [b"text/html; charset=utf-8"]
        )
        self.assertEqual(
            headers.getRawHeaders(b"content-security-policy"),
            [contentSecurityPolicy(packagedPage()).encode("ascii")],
        )
        self.assertEqual(headers.getRawHeaders(b"cache-control"), [b"no-store"])
        self.assertEqual(headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
        self.assertEqual(headers.getRawHeaders(b"x-frame-options"), [b"DENY"])
        self.assertEqual(headers.getRawHeaders(b"referrer-policy"), [b"no-referrer"])

    async def test_head(self) -> None:
        """
        C{HEAD /} answers with the headers alone.
        """
        await assertHeadOnly(self, "/", b"text/html; charset=utf-8")

    async def test_noToken(self) -> None:
        """
        The page needs no token, even when changes do (it asks for one
        when switching).
        """
        running = await startService(self, token="t0ken")
        answer = await call(running.base + "/")
        self.assertEqual(answer.code, 200)

    async def test_methodNotAllowed(self) -> None:
        """
        Other methods than C{GET} and C{HEAD} get a JSON 405 with C{Allow}.
        """
        running = await startService(self)
        for method in ("POST", "PUT", "DELETE"):
            answer = await call(running.base + "/", method)
            self.assertEqual(
                (answer.code, answer.error), (405, f"method {method} not allowed on /")
            )
            self.assertEqual(answer.headers.getRawHeaders(b"allow"), [b"GET, HEAD"])

    async def test_otherPaths(self) -> None:
        """
        Only C{/} is the page: other paths are still JSON 404s.
        """
        running = await startService(self)
        for path in ("/index.html", "//", "/dashboard.html"):
            answer = await call(running.base + path)
            self.assertEqual(answer.code, 404, path)
            self.assertTrue(answer.error.startswith(f"not found: {path}"), path)

    async def test_missing(self) -> None:
        """
        An installation without the page answers C{GET /} with a JSON 500
        that says so, and logs it.
        """
        running = await startService(self)
        events = captureEvents(self)

        def missing() -> tuple[bytes, str]:
            raise FileNotFoundError(2, "No such file or directory")

        self.patch(dashboard, "loadPage", missing)
        answer = await call(running.base + "/")
        self.assertEqual(
            (answer.code, answer.error),
            (
                500,
                "the dashboard page (bluegreen/admin/dashboard.html) is missing from "
                "this installation",
            ),
        )
        self.assertEqual(
            [e["log_format"] for e in events],
            ["the dashboard page cannot be read: {error}"],
        )


class PolicyTests(SynchronousTestCase):
    """
    The page is self-contained and its policy allows exactly what it has.
    """

    def test_blocksAllowedByHash(self) -> None:
        """
        The page has one inline C{<script>} and one C{<style>}, and the
        policy allows each by its sha256, and nothing inline besides.
        """
        page = packagedPage()
        [script] = re.findall(rb"<script>(.*?)</script>", page, re.DOTALL)
        [style] = re.findall(rb"<style>(.*?)</style>", page, re.DOTALL)
        policy = contentSecurityPolicy(page)
        directives = dict(
            d.strip().split(" ", 1) for d in policy.split(";") if d.strip()
        )
        self.assertEqual(
            directives,
            {
                "default-src": "'none'",
                "script-src": sha256Source(script),
                "style-src": sha256Source(style),
                "connect-src": "'self'",
                "img-src": "data:",
                "base-uri": "'none'",
                "form-action": "'none'",
                "frame-ancestors": "'none'",
            },
        )
        self.assertNotIn("unsafe", policy)

    def test_selfContained(self) -> None:
        """
        The page loads nothing from elsewhere (no CDN): no C{src} or
        stylesheet links, no URL but the SVG namespace of its favicon; and
        it has nothing the policy would block: no other C{<script>} or
        C{<style>} tags, no inline event handlers, no C{style} attributes.
        """
        page = packagedPage().decode("utf-8")
        self.assertEqual(page.count("<script"), 1)
        self.assertEqual(page.count("<style"), 1)
        self.assertNotRegex(page, r"(?i)\ssrc\s*=")
        self.assertNotRegex(page, r"(?i)rel\s*=\s*\"?stylesheet")
        self.assertNotRegex(page, r"(?i)\son[a-z]+\s*=\s*[\"']")
        self.assertNotRegex(page, r"(?i)<[a-z][^>]*\sstyle\s*=")
        self.assertNotIn("innerHTML", page)
        self.assertEqual(
            set(re.findall(r"(?i)(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s'\"]*", page)),
            {"http://www.w3.org/2000/svg"},
        )

    def test_noBlocks(self) -> None:
        """
        A page without inline blocks allows no script or style at all; tags
        in HTML comments do not count.
        """
        policy = contentSecurityPolicy(b"<!-- <script>x</script> --><p>hello</p>")
        self.assertIn("script-src 'none'", policy)
        self.assertIn("style-src 'none'", policy)


class StatusHistoryTests(TestCase):
    """
    The status gives each environment's last checks, for the strip.
    """

    async def test_checks(self) -> None:
        """
        Each environment's health has its checks, oldest first, each with
        its result, time, reason, latency and whether it was passive.
        """
        running = await startService(self, blue=False)
        monitor = running.service.health
        monitor.reportPassive("green", "connection reset by the backend")
        # The passive failure starts a check: wait for it.
        await monitor.checkNow(["green"])
        status = (await call(running.base + "/api/status")).json
        green = status["environments"]["green"]["health"]["checks"]
        blue = status["environments"]["blue"]["health"]["checks"]
        self.assertEqual(
            [(c["ok"], c["reason"], c["passive"]) for c in green],
            [
                (True, "status 200", False),
                (False, "connection reset by the backend", True),
                (True, "status 200", False),
            ],
        )
        self.assertEqual(
            [(c["ok"], c["reason"]) for c in blue], [(False, "connection refused")]
        )
        self.assertEqual(
            status["environments"]["green"]["health"]["passiveFailures"], 1
        )
        for check in green + blue:
            self.assertEqual(
                sorted(check), ["latency", "ok", "passive", "reason", "when"]
            )
        whens = [c["when"] for c in green]
        self.assertEqual(whens, sorted(whens))

    async def test_lastFifty(self) -> None:
        """
        Only the last L{HISTORY} (50) checks are given.
        """
        self.assertEqual(HISTORY, 50)
        running = await startService(self)
        monitor = running.service.health
        for i in range(HISTORY + 10):
            monitor.record("blue", CheckResult(True, f"check {i}", 1000.0 + i, 0.01))
        status = (await call(running.base + "/api/status")).json
        checks = status["environments"]["blue"]["health"]["checks"]
        self.assertEqual(len(checks), HISTORY)
        self.assertEqual(checks[0]["reason"], "check 10")
        self.assertEqual(checks[-1]["reason"], f"check {HISTORY + 9}")


@define
class Event:
    """
    A server-sent event as received.

    @ivar name: Its C{event} field (C{"message"} without one).
    @ivar data: Its C{data} lines, joined.
    @ivar retry: Its C{retry} field, if any.
    """

    name: str
    data: str
    retry: int | None = None

    @property
    def json(self) -> Any:
        """
        The data, parsed.
        """
        return json.loads(self.data)


@define(eq=False)
class EventClient(Protocol):
    """
    Reads C{GET /api/events} off a raw connection: the response head, the
    chunked body, and the events in it.

    @ivar head: The response head, once it has arrived.
    @ivar events: The events so far.
    @ivar closed: Fires when the connection is closed.
    """

    head: bytes | None = None
    events: list[Event] = field(factory=list)
    closed: Deferred[None] = field(factory=Deferred)
    _buffer: bytes = b""
    _text: bytes = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(
            b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Accept: text/event-stream\r\n\r\n"
        )

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if self.head is None:
            if b"\r\n\r\n" not in self._buffer:
                return
            self.head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        while True:
            line, separator, rest = self._buffer.partition(b"\r\n")
            if not separator:
                break
            size = int(line.split(b";", 1)[0], 16)
            if len(rest) < size + 2:
                break
            self._text += rest[:size]
            self._buffer = rest[size + 2 :]
        while b"\n\n" in self._text:
            block, self._text = self._text.split(b"\n\n", 1)
            name, lines, retry = "message", [], None
            for raw in block.decode("utf-8").split("\n"):
                key, _, value = raw.partition(": ")
                if key == "event":
                    name = value
                elif key == "data":
                    lines.append(value)
                elif key == "retry":
                    retry = int(value)
            self.events.append(Event(name, "\n".join(lines), retry))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(None)

    def header(self, name: bytes) -> list[bytes]:
        """
        @return: The values of a response header.
        """
        assert self.head is not None
        return [
            line.split(b":", 1)[1].strip()
            for line in self.head.split(b"\r\n")[1:]
            if line.split(b":", 1)[0].strip().lower() == name.lower()
        ]

    def find(self, name: str, start: int = 0) -> int | None:
        """
        @return: The index in L{events} of the first event called C{name} at
            or after index C{start}, or L{None} if there is none yet.
        """
        for index in range(start, len(self.events)):
            if self.events[index].name == name:
                return index
        return None

    async def waitForEvent(self, name: str, start: int = 0) -> int:
        """
        Wait for an event called C{name} at or after index C{start}.

        @return: Its index in L{events}.
        """
        await waitFor(lambda: self.find(name, start) is not None, f"a {name!r} event")
        index = self.find(name, start)
        assert index is not None
        return index


async def openEvents(testCase: TestCase, running: Running) -> EventClient:
    """
    Open C{GET /api/events}; the connection is closed when the test ends,
    before the service stops, and the cleanup waits until the admin API
    has forgotten the stream.
    """
    client = EventClient()
    endpoint = TCP4ClientEndpoint(globalReactor(), "127.0.0.1", running.adminPort)
    await connectProtocol(endpoint, client)

    async def close() -> None:
        if client.transport is not None:
            client.transport.loseConnection()
        await client.closed
        await streamsGone(running)

    testCase.addCleanup(close)
    return client


async def streamsGone(running: Running) -> None:
    """
    Wait until the admin API has no event stream open.
    """
    await waitFor(
        lambda: not running.admin.events.streams, "the event streams to close"
    )


class EventsTests(TestCase):
    """
    C{GET /api/events} over real sockets.
    """

    async def test_stream(self) -> None:
        """
        The stream starts with a C{retry} and the status at once, then
        sends the status again after it changes.
        """
        running = await startService(self)
        client = await openEvents(self, running)
        first = await client.waitForEvent("status")
        self.assertTrue(
            client.head is not None and client.head.startswith(b"HTTP/1.1 200 ")
        )
        self.assertEqual(client.header(b"content-type"), [b"text/event-stream"])
        self.assertEqual(client.header(b"cache-control"), [b"no-store"])
        self.assertEqual(client.events[0].retry, 1000)
        status = client.events[first].json
        expected = (await call(running.base + "/api/status")).json
        del status["now"], expected["now"]
        self.assertEqual(status, expected)

        # How soon (at the next sample) is EventsTimingTests.test_onlyChanges.
        running.service.controller.switch("blue", "deploy 42")
        second = await client.waitForEvent("status", first + 1)
        status = client.events[second].json
        self.assertEqual((status["live"], status["why"]), ("blue", "deploy 42"))

    async def test_disconnect(self) -> None:
        """
        When the client goes, the stream is forgotten and the sampling loop
        stops.
        """
        running = await startService(self)
        client = await openEvents(self, running)
        await client.waitForEvent("status")
        events = running.admin.events
        self.assertEqual(len(events.streams), 1)
        self.assertTrue(events.sampling)
        assert client.transport is not None
        client.transport.loseConnection()
        await streamsGone(running)
        self.assertFalse(events.sampling)

    async def test_tooMany(self) -> None:
        """
        Past L{dashboard.MAX_STREAMS} open streams, more are refused with a
        JSON 503.
        """
        self.patch(dashboard, "MAX_STREAMS", 1)
        running = await startService(self)
        client = await openEvents(self, running)
        await client.waitForEvent("status")
        answer = await call(running.base + "/api/events")
        self.assertEqual(
            (answer.code, answer.error),
            (503, "too many event streams open (at most 1)"),
        )

    async def test_head(self) -> None:
        """
        C{HEAD /api/events} answers with the stream's headers, no stream.
        """
        running = await startService(self)
        answer = await call(running.base + "/api/events", "HEAD")
        self.assertEqual((answer.code, answer.data), (200, b""))
        self.assertEqual(
            answer.headers.getRawHeaders(b"content-type"), [b"text/event-stream"]
        )
        self.assertEqual(running.admin.events.streams, [])

    async def test_refused(self) -> None:
        """
        Other methods get a JSON 405, longer paths a JSON 404.
        """
        running = await startService(self)
        answer = await call(running.base + "/api/events", "POST", payload={})
        self.assertEqual(
            (answer.code, answer.error),
            (405, "method POST not allowed on /api/events"),
        )
        self.assertEqual(answer.headers.getRawHeaders(b"allow"), [b"GET, HEAD"])
        answer = await call(running.base + "/api/events/more")
        self.assertEqual(
            (answer.code, answer.error), (404, "not found: /api/events/more")
        )

    async def test_brokenStatus(self) -> None:
        """
        If the status cannot be made, the stream is not started: JSON 500,
        logged.
        """
        running = await assertBrokenStatus(self, "/api/events")
        self.assertEqual(running.admin.events.streams, [])


class _Transport:
    """
    A transport that records being aborted.
    """

    aborted = 0

    def abortConnection(self) -> None:
        self.aborted += 1


class _Channel:
    """
    A channel with a L{_Transport}.
    """

    def __init__(self) -> None:
        self.transport = _Transport()


class FakeRequest(DummyRequest):
    """
    A request that keeps its push producer (instead of looping on it as
    L{DummyRequest} does) and has a channel whose transport can be aborted.
    """

    def __init__(self, method: bytes = b"GET") -> None:
        super().__init__([])
        self.method = method
        self.path = b"/api/events"
        self.channel: _Channel | None = _Channel()
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: Any) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def clientGone(self) -> None:
        """
        The connection is lost, as a real request sees it.
        """
        self.channel = None
        self.processingFailed(Failure(ConnectionDone()))

    def events(self) -> list[str]:
        """
        @return: The event names written so far (C{retry} for the first
            write).
        """
        names = []
        for chunk in self.written:
            match = re.match(rb"(?:event: (\w+)|retry: )", chunk)
            assert match is not None, chunk
            names.append((match.group(1) or b"retry").decode())
        return names


class EventsTimingTests(SynchronousTestCase):
    """
    L{StatusEvents} with a fake clock and requests.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.state: dict[str, Any] = {"live": "green", "now": 0.0}

        def status() -> dict[str, Any]:
            return {**self.state, "now": self.clock.seconds()}

        self.events = StatusEvents(status, self.clock)

    def start(self) -> FakeRequest:
        """
        Open a stream.
        """
        request = FakeRequest()
        self.assertEqual(self.events.render(cast(Request, request)), NOT_DONE_YET)
        self.assertIs(request.producer.request, request)
        return request

    def test_onlyChanges(self) -> None:
        """
        The status is sent at once, then at the next sample after a change
        (C{now} changing does not count), and a ping after
        L{EVENTS_HEARTBEAT} seconds of silence.
        """
        request = self.start()
        self.assertEqual(request.events(), ["retry", "status"])
        self.clock.advance(EVENTS_INTERVAL)
        self.assertEqual(request.events(), ["retry", "status"])
        self.state["live"] = "blue"
        self.clock.advance(EVENTS_INTERVAL)
        self.assertEqual(request.events(), ["retry", "status", "status"])
        self.assertEqual(
            json.loads(request.written[-1].split(b"data: ")[1])["live"], "blue"
        )
        for _ in range(int(EVENTS_HEARTBEAT / EVENTS_INTERVAL) - 1):
            self.clock.advance(EVENTS_INTERVAL)
        self.assertEqual(request.events(), ["retry", "status", "status"])
        self.clock.advance(EVENTS_INTERVAL)
        self.assertEqual(request.events(), ["retry", "status", "status", "ping"])
        self.assertEqual(
            request.written[-1],
            b'event: ping\ndata: {"now": %r}\n\n' % (self.clock.seconds(),),
        )

    def test_oneLine(self) -> None:
        """
        The status is one line of JSON, whatever its strings hold.
        """
        self.state["why"] = "line one\nline two \u2028 \u00e9"
        request = self.start()
        [_, event] = request.written
        self.assertTrue(event.startswith(b"event: status\ndata: {"))
        self.assertTrue(event.endswith(b"}\n\n"))
        self.assertEqual(event.count(b"\n"), 3)
        self.assertEqual(
            json.loads(event.split(b"data: ", 1)[1])["why"], self.state["why"]
        )

    def test_paused(self) -> None:
        """
        While the client's buffer is full nothing is written; when it
        drains, the next sample sends the latest status.
        """
        request = self.start()
        request.producer.pauseProducing()
        self.state["live"] = "blue"
        self.clock.advance(EVENTS_INTERVAL)
        self.state["live"] = "green"
        self.clock.advance(EVENTS_INTERVAL)
        self.state["live"] = "blue"
        self.clock.advance(EVENTS_HEARTBEAT)
        self.assertEqual(request.events(), ["retry", "status"])
        request.producer.resumeProducing()
        self.clock.advance(EVENTS_INTERVAL)
        self.assertEqual(request.events(), ["retry", "status", "status"])
        self.assertEqual(
            json.loads(request.written[-1].split(b"data: ")[1])["live"], "blue"
        )

    def test_stalled(self) -> None:
        """
        A client that does not read for L{STALLED_AFTER} seconds has its
        connection aborted, once.
        """
        request = self.start()
        assert request.channel is not None
        transport = request.channel.transport
        request.producer.pauseProducing()
        self.clock.pump([EVENTS_INTERVAL] * int(STALLED_AFTER / EVENTS_INTERVAL - 1))
        self.assertEqual(transport.aborted, 0)
        self.clock.pump([EVENTS_INTERVAL] * 3)
        self.assertEqual(transport.aborted, 1)
        request.clientGone()
        self.assertEqual(self.events.streams, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_loopOnlyWithStreams(self) -> None:
        """
        The sampling loop runs while a stream is open, and stops when the
        last client goes.
        """
        self.assertEqual(self.clock.getDelayedCalls(), [])
        first, second = self.start(), self.start()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        first.clientGone()
        self.assertEqual(self.events.streams, [second.producer])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        second.clientGone()
        self.assertEqual(self.events.streams, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        third = self.start()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        third.clientGone()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failingStatus(self) -> None:
        """
        A status that fails while streaming is logged once, not at every
        sample; the streams stay open and get the status when it works
        again.
        """
        request = self.start()
        broken = [True]

        def status() -> dict[str, Any]:
            if broken[0]:
                raise RuntimeError("broken provider")
            return {"live": "blue", "now": self.clock.seconds()}

        self.events.status = status
        self.clock.pump([EVENTS_INTERVAL] * 5)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        broken[0] = False
        self.clock.advance(EVENTS_INTERVAL)
        self.assertEqual(request.events(), ["retry", "status", "status"])
        request.clientGone()
