# -*- test-case-name: tests.test_dashboard,tests.test_dashboard_sync -*-
"""
The dashboard on the admin port: C{GET /}, and the live status it reads,
C{GET /api/events}.

C{GET /} answers with C{dashboard.html}, one self-contained page (its style
and script inline, nothing fetched from elsewhere) under a strict
C{Content-Security-Policy}: the page's own C{<style>} and C{<script>} blocks
are allowed by their sha256, requests may go to this origin only, and
nothing else may load (see L{contentSecurityPolicy}).

C{GET /api/events} is a stream of server-sent events (C{text/event-stream}):

    - C{event: status}: the C{GET /api/status} object (one line of JSON),
      at once, then whenever it changes (sampled every L{EVENTS_INTERVAL}
      seconds, so at most once per interval; the C{now} field alone does not
      count as a change);
    - C{event: ping}: C{{"now": ...}}, when nothing was sent for
      L{EVENTS_HEARTBEAT} seconds, so the page knows it is still connected.

A stream ends when its client goes.  A client that does not read is never
buffered for: while its connection's send buffer is full, updates are
skipped (the next one carries the latest status), and after
L{STALLED_AFTER} seconds of that its connection is cut.  At most
L{MAX_STREAMS} streams are open at once; more are refused with 503.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import json
import re
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from bluegreen.admin.jsonapi import errorAnswer, refuseUnlessGet

#: The page, in this package.
PAGE = "dashboard.html"

#: Seconds between two looks at the status for the event streams.
EVENTS_INTERVAL = 1.0

#: Seconds without an event after which a stream gets a C{ping}.
EVENTS_HEARTBEAT = 3.0

#: Seconds a stream's client may leave its send buffer full before its
#: connection is cut.
STALLED_AFTER = 30.0

#: Event streams open at once; more are refused with 503.
MAX_STREAMS = 32

#: Milliseconds a browser waits before reconnecting a dropped stream.
RETRY_MILLISECONDS = 1000

#: Where the page is, as a path in the source tree.
_PACKAGE_PATH = __package__.replace(".", "/")

_log = Logger(namespace="bluegreen.admin")


def _sources(page: bytes, tag: bytes) -> str:
    """
    @return: The CSP sources allowing the page's inline C{<tag>} blocks (by
        hash), or C{'none'} if it has none.
    """
    page = re.sub(rb"<!--.*?-->", b"", page, flags=re.DOTALL)
    blocks = re.findall(rb"<" + tag + rb">(.*?)</" + tag + rb">", page, re.DOTALL)
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(block).digest()).decode() + "'"
        for block in blocks
    ]
    return " ".join(hashes) or "'none'"


def contentSecurityPolicy(page: bytes) -> str:
    """
    The policy the page is served with: nothing may load or run but the
    page's own C{<script>} and C{<style>} blocks (allowed by hash, so an
    injected one would not run), requests go to this origin only, images
    only as C{data:} URLs (the favicon), no C{<base>}, no form submissions,
    no framing.

    @param page: The page.
    @return: The C{Content-Security-Policy} header value.
    """
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {_sources(page, b'script')}",
            f"style-src {_sources(page, b'style')}",
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


@functools.cache
def loadPage() -> tuple[bytes, str]:
    """
    Read the page from the package (once).

    @return: The page and its C{Content-Security-Policy}.
    @raise OSError: If the page is not installed.
    """
    page = importlib.resources.files(__package__).joinpath(PAGE).read_bytes()
    return page, contentSecurityPolicy(page)


class DashboardPage(Resource):
    """
    C{GET /}: the dashboard page.
    """

    isLeaf = True

    def render(self, request: Request) -> bytes:
        """
        Answer with the page and its security headers.
        """
        refused = refuseUnlessGet(request)
        if refused is not None:
            return refused
        try:
            page, policy = loadPage()
        except OSError as e:
            _log.error("the dashboard page cannot be read: {error}", error=str(e))
            return errorAnswer(
                request,
                500,
                f"the dashboard page ({_PACKAGE_PATH}/{PAGE}) is missing from "
                "this installation",
            )
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Content-Security-Policy", policy.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"X-Frame-Options", b"DENY")
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        return page


@implementer(IPushProducer)
class _Stream:
    """
    One open C{GET /api/events}: the producer of its request, so it knows
    when its client's send buffer is full.

    @ivar request: The request, never finished by us.
    @ivar sent: The status last sent (without C{now}), or L{None}.
    @ivar lastWrite: When something was last written.
    @ivar pausedSince: Since when the connection's send buffer is full, or
        L{None} while it is not.
    @ivar cut: Whether the connection was cut for not reading.
    """

    def __init__(
        self,
        request: Request,
        clock: IReactorTime,
        onStop: Callable[[_Stream], None],
    ) -> None:
        """
        @param request: The request to stream on.
        @param clock: Tells the time.
        @param onStop: Called with the stream when it ends.
        """
        self.request = request
        self.clock = clock
        self.onStop = onStop
        self.sent: str | None = None
        self.lastWrite = 0.0
        self.pausedSince: float | None = None
        self.cut = False

    def update(self, key: str, data: bytes, now: float) -> None:
        """
        Send the status if it changed since the last one sent, else a ping
        if the stream has been quiet for L{EVENTS_HEARTBEAT} seconds;
        nothing while the client is not reading.

        @param key: The status without C{now}, to compare.
        @param data: The status as one line of JSON.
        @param now: The time.
        """
        if self.pausedSince is not None:
            if now - self.pausedSince >= STALLED_AFTER and not self.cut:
                self._cut()
            return
        if key != self.sent:
            self.sent = key
            self._write(b"event: status\ndata: " + data + b"\n\n", now)
        elif now - self.lastWrite >= EVENTS_HEARTBEAT:
            ping = json.dumps({"now": now}).encode("ascii")
            self._write(b"event: ping\ndata: " + ping + b"\n\n", now)

    def _write(self, event: bytes, now: float) -> None:
        self.request.write(event)
        self.lastWrite = now

    def _cut(self) -> None:
        """
        Drop the connection of a client that stopped reading (unsent data
        and all).
        """
        _log.info(
            "admin API: cutting an event stream whose client stopped reading",
            event="admin-events-stalled",
        )
        self.cut = True
        transport = getattr(self.request.channel, "transport", None)
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self.request.loseConnection()

    # IPushProducer

    def pauseProducing(self) -> None:
        """
        The client's send buffer is full: skip updates.
        """
        if self.pausedSince is None:
            self.pausedSince = self.clock.seconds()

    def resumeProducing(self) -> None:
        """
        The client reads again: the next update sends the latest status.
        """
        self.pausedSince = None

    def stopProducing(self) -> None:
        """
        The connection is gone.
        """
        self.onStop(self)


class StatusEvents(Resource):
    """
    C{GET /api/events}: the status as server-sent events.

    One L{LoopingCall} samples the status every L{EVENTS_INTERVAL} seconds
    for all the streams, and runs only while there is one.

    @ivar streams: The open streams.
    """

    isLeaf = True

    def __init__(self, status: Callable[[], dict[str, Any]], clock: IReactorTime):
        """
        @param status: Makes the status object (C{GET /api/status}).
        @param clock: Tells the time and runs the sampling loop.
        """
        super().__init__()
        self.status = status
        self.clock = clock
        self.streams: list[_Stream] = []
        self._loop: LoopingCall | None = None
        self._failing = False

    @property
    def sampling(self) -> bool:
        """
        Whether the sampling loop runs (it does while a stream is open).
        """
        return self._loop is not None

    def _snapshot(self) -> tuple[str, bytes]:
        """
        @return: The status without C{now} (to compare) and the whole
            status as one line of JSON.
        """
        status = self.status()
        data = json.dumps(status, ensure_ascii=False, separators=(",", ":"))
        key = json.dumps(
            {name: value for name, value in status.items() if name != "now"},
            sort_keys=True,
        )
        return key, data.encode("utf-8")

    def render(self, request: Request) -> bytes | int:
        """
        Start a stream (or answer C{HEAD} with its headers).
        """
        refused = refuseUnlessGet(request)
        if refused is not None:
            return refused
        if request.method == b"GET" and len(self.streams) >= MAX_STREAMS:
            return errorAnswer(
                request, 503, f"too many event streams open (at most {MAX_STREAMS})"
            )
        try:
            key, data = self._snapshot()
        except Exception:
            _log.failure("admin API: the status for an event stream failed")
            return errorAnswer(request, 500, "internal error (see the log)")
        request.setHeader(b"Content-Type", b"text/event-stream")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"X-Accel-Buffering", b"no")
        if request.method == b"HEAD":
            return b""
        stream = _Stream(request, self.clock, self._remove)
        self.streams.append(stream)
        request.registerProducer(stream, True)
        request.notifyFinish().addBoth(lambda _: self._remove(stream))
        request.write(b"retry: %d\n\n" % (RETRY_MILLISECONDS,))
        stream.update(key, data, self.clock.seconds())
        if self._loop is None:
            self._loop = LoopingCall(self._tick)
            self._loop.clock = self.clock
            self._loop.start(EVENTS_INTERVAL, now=False).addErrback(self._loopFailed)
        return NOT_DONE_YET

    def _loopFailed(self, reason: Failure) -> None:
        _log.failure("admin API: the event stream loop failed", reason)

    def _tick(self) -> None:
        """
        Send the status to every stream that has not seen it.
        """
        try:
            key, data = self._snapshot()
        except Exception:
            if not self._failing:
                _log.failure("admin API: the status for the event streams failed")
            self._failing = True
            return
        self._failing = False
        now = self.clock.seconds()
        for stream in list(self.streams):
            stream.update(key, data, now)

    def _remove(self, stream: _Stream) -> None:
        """
        Forget a stream whose client went (or whose request ended); stop
        sampling when none is left.
        """
        if stream not in self.streams:
            return
        self.streams.remove(stream)
        if stream.request.channel is not None:
            stream.request.unregisterProducer()
        if not self.streams and self._loop is not None:
            loop, self._loop = self._loop, None
            if loop.running:
                loop.stop()
