# -*- test-case-name: tests.test_accesslog -*-
"""
Tests for L{bluegreen.proxy.accesslog}: lines in batches into the service's
log, one JSON object per request, and nothing lost on close.
"""

from __future__ import annotations

import io
import json
from typing import Any, cast

from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import Request
from twisted.web.test.requesthelper import DummyRequest

from bluegreen.proxy.accesslog import BATCH_LINES, FLUSH_INTERVAL, AccessLog
from bluegreen.service.logs import jsonLinesObserver


def request(path: bytes) -> Request:
    """
    A GET of C{path}, as much of a request as the access log reads.
    """
    dummy = DummyRequest(path.lstrip(b"/").split(b"/"))
    dummy.uri = path
    dummy.method = b"GET"
    dummy.clientproto = b"HTTP/1.1"
    return cast(Request, dummy)


class BatchTests(SynchronousTestCase):
    """
    C{--access-log -}: lines reach the service's log in batches.
    """

    def setUp(self) -> None:
        """
        A batched access log whose events are kept in C{self.events}.
        """
        self.events: list[dict[str, Any]] = []
        self.clock = Clock()
        self.log = AccessLog(
            Logger(
                namespace="bluegreen.access",
                observer=cast(ILogObserver, self.events.append),
            ),
            batched=True,
        )
        self.log.start(self.clock)
        self.addCleanup(self.log.close)

    def test_interval(self) -> None:
        """
        Lines are held until the flush interval, then logged as one event:
        a header line and one line per request, each with its time; the
        event's C{records} hold each request's fields.
        """
        self.log.record(request(b"/a"), "green", 200, 12, 0.0015)
        self.log.record(request(b"/b?x=1"), "blue", 404, 0, 0.25)
        self.assertEqual(self.events, [])
        self.clock.advance(FLUSH_INTERVAL)
        self.assertEqual(len(self.events), 1)
        event = self.events[0]
        text = formatEvent(event).splitlines()
        self.assertEqual(text[0], "access log, 2 requests:")
        self.assertRegex(
            text[1],
            r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \S+ "
            r'"GET /a HTTP/1.1" 200 12 green 1\.5ms$',
        )
        self.assertTrue(text[2].endswith('"GET /b?x=1 HTTP/1.1" 404 0 blue 250.0ms'))
        self.assertEqual(
            [(r["path"], r["status"], r["environment"]) for r in event["records"]],
            [("/a", 200, "green"), ("/b?x=1", 404, "blue")],
        )
        self.clock.advance(FLUSH_INTERVAL)
        self.assertEqual(len(self.events), 1, "nothing new, no event")

    def test_tail(self) -> None:
        """
        A tunnel's line ends with its own words, and its record holds its
        extra fields, in the same batch as other requests.
        """
        self.log.record(request(b"/chat"), "green", 101, 21, 2.0, "tunnel up=27", up=27)
        self.log.flush()
        text = formatEvent(self.events[0]).splitlines()
        self.assertTrue(text[1].endswith(" 101 21 green 2000.0ms tunnel up=27"))
        self.assertEqual(self.events[0]["records"][0]["up"], 27)

    def test_full(self) -> None:
        """
        L{BATCH_LINES} lines are logged at once, without waiting.
        """
        for n in range(BATCH_LINES):
            self.log.record(request(b"/%d" % n), "green", 200, 1, 0.001)
        self.assertEqual(len(self.events), 1)
        self.assertEqual(self.events[0]["count"], BATCH_LINES)

    def test_closeFlushes(self) -> None:
        """
        Closing (the service stopping) logs the lines held: none is lost.
        """
        self.log.record(request(b"/last"), "green", 200, 1, 0.001)
        self.log.close()
        self.assertEqual([e["count"] for e in self.events], [1])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_json(self) -> None:
        """
        With C{--log-format json} a batch is written as one JSON object per
        request, with the request's own time.
        """
        stream = io.StringIO()
        observer = jsonLinesObserver(stream)
        self.log.record(request(b"/a"), "green", 200, 12, 0.0015)
        self.log.record(request(b"/b"), "blue", 502, 40, 0.5)
        self.log.flush()
        observer(self.events[0])
        records = [json.loads(line) for line in stream.getvalue().splitlines()]
        self.assertEqual(
            [(r["namespace"], r["path"], r["status"], r["bytes"]) for r in records],
            [("bluegreen.access", "/a", 200, 12), ("bluegreen.access", "/b", 502, 40)],
        )
        self.assertRegex(records[0]["time"], r"^\d{4}-\d\d-\d\dT")
        self.assertEqual(records[1]["level"], "info")
