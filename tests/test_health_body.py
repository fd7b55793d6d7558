# -*- test-case-name: tests.test_health_body -*-
"""
Tests for the health checks' body window (C{--health-max-body}) and body
rule (C{--health-expect-body}), deterministic over StubTreq on a L{Clock}
(see L{tests._healthtest}).
"""

from __future__ import annotations

from treq.testing import StubTreq
from twisted.internet.error import ConnectionClosed
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from bluegreen.health import DEFAULT_MAX_BODY, HealthSettings
from tests._healthtest import GREEN, Backend, MonitorMixin, Router


class ChunkedBackend(Backend):
    """
    A health endpoint that writes its body in the given chunks, with no
    C{Content-Length} (so HTTP/1.1 chunked), and finishes only if told to.

    @ivar chunks: The writes, in order.
    @ivar finish: Whether to end the response after them.
    @ivar ended: How each request ended: L{None} once finished, the
        reason its connection was lost otherwise (watched from its arrival,
        so a close in the same flush is seen).
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.chunks: list[bytes] = []
        self.finish = True
        self.ended: list[Failure | None] = []

    def render_GET(self, request: Request) -> bytes | int:
        """
        Write the chunks, then finish or stall.
        """
        self.requests.append(request)
        self.times.append(self.clock.seconds())
        request.notifyFinish().addBoth(self.ended.append)
        request.setResponseCode(self.code)
        for chunk in self.chunks:
            request.write(chunk)
        if self.finish:
            request.finish()
        return NOT_DONE_YET


class ChunkedMixin(MonitorMixin):
    """
    L{MonitorMixin} with a second client, C{chunkedStub}, whose GREEN is a
    L{ChunkedBackend}, C{chunked}.
    """

    def setUp(self) -> None:
        """
        Serve GREEN from a L{ChunkedBackend} too, for the tests that write
        chunks.
        """
        super().setUp()
        self.chunked = ChunkedBackend(self.clock)
        self.chunkedStub = StubTreq(Router({GREEN.port: self.chunked}))


class BodyWindowTests(ChunkedMixin):
    """
    A check reads at most C{maxBody} bytes of the body, then closes the
    connection; a longer body is not a failure.
    """

    def test_default(self) -> None:
        """
        The window is 64 KiB by default.
        """
        self.assertEqual(DEFAULT_MAX_BODY, 65536)
        self.assertEqual(HealthSettings().maxBody, 65536)
        self.assertIsNone(HealthSettings().expectBody)

    def test_exactlyTheWindow(self) -> None:
        """
        A body of exactly C{maxBody} bytes passes.
        """
        self.green.body = b"x" * 100
        monitor = self.monitor(maxBody=100)
        monitor.startService()
        self.stub.flush()
        self.assertEqual(self.events, [("green", True, "status 200")])

    def test_oneByteOver(self) -> None:
        """
        One byte more passes too (the last byte is not read), with its
        status recorded.
        """
        self.green.body = b"x" * (DEFAULT_MAX_BODY + 1)
        monitor = self.monitor()
        monitor.startService()
        self.stub.flush()
        self.assertEqual(self.events, [("green", True, "status 200")])
        last = monitor.health["green"].last
        assert last is not None
        self.assertEqual(last.status, 200)

    def test_noBody(self) -> None:
        """
        An empty body passes, with any window, 0 included.
        """
        for maxBody in (0, 100):
            self.green.body = b""
            self.events.clear()
            monitor = self.monitor(maxBody=maxBody)
            monitor.startService()
            self.stub.flush()
            self.assertEqual(self.events, [("green", True, "status 200")])
            self.stop(monitor)

    def test_zeroWindow(self) -> None:
        """
        With a window of 0 bytes, the check is decided on the status alone
        and does not wait for a body that never comes.
        """
        self.chunked.chunks = [b"a little"]
        self.chunked.finish = False
        monitor = self.monitor(http=self.chunkedStub, maxBody=0)
        monitor.startService()
        self.chunkedStub.flush()
        self.assertEqual(self.events, [("green", True, "status 200")])

    def test_chunked(self) -> None:
        """
        A chunked body over the window passes; a chunked body within it
        passes.
        """
        self.chunked.chunks = [b"x" * 60, b"y" * 60]
        monitor = self.monitor(http=self.chunkedStub, maxBody=100)
        monitor.startService()
        self.chunkedStub.flush()
        self.assertEqual(self.events, [("green", True, "status 200")])
        self.stop(monitor)
        self.events.clear()
        self.chunked.chunks = [b"x" * 30, b"y" * 30]
        monitor = self.monitor(http=self.chunkedStub, maxBody=100)
        monitor.startService()
        self.chunkedStub.flush()
        self.assertEqual(self.events, [("green", True, "status 200")])

    def test_stallAfterWindow(self) -> None:
        """
        A body that stalls once past the window: the check is decided
        without waiting for the rest (no clock advance at all), and its
        connection is closed, not drained.
        """
        self.chunked.chunks = [b"x" * 100, b"y"]
        self.chunked.finish = False
        monitor = self.monitor(http=self.chunkedStub, maxBody=100, timeout=2.0)
        monitor.startService()
        self.chunkedStub.flush()
        self.assertEqual(self.events, [("green", True, "status 200")])
        last = monitor.health["green"].last
        assert last is not None
        self.assertEqual(last.latency, 0.0)
        [lost] = self.chunked.ended
        assert lost is not None
        self.assertIsInstance(lost.value, ConnectionClosed)

    def test_stallAtWindow(self) -> None:
        """
        A body that stalls exactly at the window's end is decided at once
        too: the window is full, nothing more is read.
        """
        self.chunked.chunks = [b"x" * 100]
        self.chunked.finish = False
        monitor = self.monitor(http=self.chunkedStub, maxBody=100)
        monitor.startService()
        self.chunkedStub.flush()
        self.assertEqual(self.events, [("green", True, "status 200")])

    def test_stallWithinWindow(self) -> None:
        """
        A body that stalls before the window is full still times out (the
        check cannot know it is whole).
        """
        self.chunked.chunks = [b"x" * 99]
        self.chunked.finish = False
        monitor = self.monitor(http=self.chunkedStub, maxBody=100, timeout=0.5)
        monitor.startService()
        self.chunkedStub.flush()
        self.assertEqual(self.events, [])
        self.clock.advance(0.5)
        self.assertEqual(self.events, [("green", False, "timeout after 0.5 s")])

    def test_badStatusOverWindow(self) -> None:
        """
        The status rule is unchanged: a 500 with a big body fails for its
        status.
        """
        self.green.code = 500
        self.green.body = b"x" * (DEFAULT_MAX_BODY * 2)
        monitor = self.monitor()
        monitor.startService()
        self.stub.flush()
        self.assertEqual(self.events, [("green", False, "status 500 (expected 200)")])


class ExpectBodyTests(ChunkedMixin):
    """
    With C{expectBody}, a check passes only if the text is within the
    window (and the status is expected).
    """

    def test_found(self) -> None:
        """
        Text in the body passes.
        """
        self.green.body = b"<h1>meow.io</h1>"
        monitor = self.monitor(expectBody=b"meow")
        monitor.startService()
        self.stub.flush()
        self.assertEqual(self.events, [("green", True, "status 200")])

    def test_absent(self) -> None:
        """
        A 200 error page without the text fails, saying which text was
        looked for, and where; its status is recorded.
        """
        self.green.body = b"<h1>Internal error</h1>"
        monitor = self.monitor(expectBody=b"meow")
        monitor.startService()
        self.stub.flush()
        self.assertEqual(
            self.events,
            [("green", False, "body lacks 'meow' in its first 65536 bytes")],
        )
        last = monitor.health["green"].last
        assert last is not None
        self.assertEqual(last.status, 200)

    def test_atTheWindowsEnd(self) -> None:
        """
        Text ending at the window's last byte is found; one byte later, it
        is not.
        """
        self.green.body = b"x" * 96 + b"meow" + b"tail"
        monitor = self.monitor(expectBody=b"meow", maxBody=100)
        monitor.startService()
        self.stub.flush()
        self.assertEqual(self.events, [("green", True, "status 200")])
        self.stop(monitor)
        self.events.clear()
        self.green.body = b"x" * 97 + b"meow"
        monitor = self.monitor(expectBody=b"meow", maxBody=100)
        monitor.startService()
        self.stub.flush()
        self.assertEqual(
            self.events, [("green", False, "body lacks 'meow' in its first 100 bytes")]
        )

    def test_splitAcrossChunks(self) -> None:
        """
        Text split across two chunks is found.
        """
        self.chunked.chunks = [b"...me", b"ow..."]
        monitor = self.monitor(http=self.chunkedStub, expectBody=b"meow")
        monitor.startService()
        self.chunkedStub.flush()
        self.assertEqual(self.events, [("green", True, "status 200")])

    def test_utf8(self) -> None:
        """
        The text is looked for UTF-8 encoded, and said as given.
        """
        self.green.body = "<p>chaton \N{CAT FACE}</p>".encode()
        monitor = self.monitor(expectBody="\N{CAT FACE}".encode())
        monitor.startService()
        self.stub.flush()
        self.assertEqual(self.events, [("green", True, "status 200")])
        self.stop(monitor)
        self.events.clear()
        self.green.body = b"no cat"
        monitor = self.monitor(expectBody="\N{CAT FACE}".encode())
        monitor.startService()
        self.stub.flush()
        self.assertEqual(
            self.events,
            [("green", False, "body lacks '\N{CAT FACE}' in its first 65536 bytes")],
        )

    def test_statusFirst(self) -> None:
        """
        An unexpected status is the reason, even if the text is missing.
        """
        self.green.code = 503
        self.green.body = b"down"
        monitor = self.monitor(expectBody=b"meow")
        monitor.startService()
        self.stub.flush()
        self.assertEqual(self.events, [("green", False, "status 503 (expected 200)")])
