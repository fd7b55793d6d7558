# -*- test-case-name: tests.test_health_local -*-
"""
Tests for the health checks that cannot run because bluegreen itself is out
of descriptors or memory: logged once per streak as bluegreen's own error,
never counted against the environment (deterministic, see
L{tests._healthtest}), and on the real reactor with the descriptor limit
lowered.  L{bluegreen.checkfailure.localResourceError} itself is tested in
L{tests.test_checkfailure}.
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Sequence
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import (
    ConnectBindError,
    ConnectionRefusedError,
    getConnectError,
)
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseNeverReceived

from bluegreen.environment import Environment
from bluegreen.health import HealthMonitor, HealthSettings
from bluegreen.healthclient import healthClient
from tests._healthtest import BLUE, GREEN, FakeHTTP, MonitorMixin
from tests._util import PATIENCE

#: The reactor the real-socket test runs on (trial's).
reactor: Any = _reactor

#: What the monitor logs when GREEN's check runs out of descriptors.
EMFILE_LINE = (
    "health check of green could not run: bluegreen is out of file "
    "descriptors (EMFILE); not counted against green"
)


class LocalErrorMonitorTests(MonitorMixin):
    """
    A check that fails for a local shortage changes nothing: no failure, no
    success, no state change; the first of a streak is logged.
    """

    def setUp(self) -> None:
        """
        Capture the log.
        """
        super().setUp()
        self.logged: Sequence[LogEvent] = self.enterContext(capturedLogs())

    def realCheck(self) -> Deferred[Any]:
        """
        @return: A C{GET} of GREEN's backend through StubTreq (whose
            methods are made at run time, hence the L{Any}).
        """
        stub: Any = self.stub
        result: Deferred[Any] = stub.get("http://127.0.0.1:5002/")
        return result

    def lines(self) -> list[str]:
        """
        @return: The monitor's error lines, formatted.
        """
        return [
            formatEvent(event)
            for event in self.logged
            if event.get("log_level") == LogLevel.error
        ]

    def test_upStaysUp(self) -> None:
        """
        An up environment whose checks hit EMFILE stays up, even with
        C{fall=1}, for as long as the streak lasts; its counts and history
        do not move; one line is logged; the loop goes on at its interval.
        """
        outcome: list[Any] = [None]

        def respond() -> Deferred[Any]:
            if outcome[0] is None:
                return self.realCheck()
            return fail(outcome[0])

        http = FakeHTTP(respond)
        monitor = self.monitor(http=http, fall=1)
        monitor.startService()
        self.assertEqual(self.events, [("green", True, "status 200")])
        outcome[0] = ConnectBindError(errno.EMFILE, "Too many open files")
        self.advanceTo(25)
        state = monitor.health["green"]
        self.assertTrue(state.up)
        self.assertEqual((state.successes, state.failures), (1, 0))
        self.assertEqual(len(state.history), 1)
        self.assertEqual(self.events, [("green", True, "status 200")])
        self.assertEqual(self.lines(), [EMFILE_LINE])
        # Every 5 s (not the fast interval): at 0, 5, ..., 25.
        self.assertEqual(len(http.urls), 6)

    def test_newStreak(self) -> None:
        """
        A check that runs (pass or fail) ends the streak: the next shortage
        is logged again.
        """
        outcomes: list[BaseException | None] = [
            ConnectBindError(errno.EMFILE, "Too many open files"),
            ConnectBindError(errno.EMFILE, "Too many open files"),
            None,
            getConnectError((errno.ENOMEM, "Cannot allocate memory")),
        ]

        def respond() -> Deferred[Any]:
            outcome = outcomes.pop(0) if outcomes else None
            if outcome is None:
                return self.realCheck()
            return fail(outcome)

        monitor = self.monitor(http=FakeHTTP(respond))
        monitor.startService()
        self.assertEqual(monitor.health["green"].up, None)
        self.advanceTo(15)
        self.assertEqual(self.events, [("green", True, "status 200")])
        self.assertEqual(
            self.lines(),
            [
                EMFILE_LINE,
                "health check of green could not run: bluegreen is out of "
                "memory (ENOMEM); not counted against green",
            ],
        )

    def test_downStaysDown(self) -> None:
        """
        A down environment is not brought up by checks that cannot run
        (they are not successes either, with C{rise=1}).
        """
        self.green.code = 500
        outcome: list[BaseException | None] = [None]

        def respond() -> Deferred[Any]:
            if outcome[0] is None:
                return self.realCheck()
            return fail(outcome[0])

        monitor = self.monitor(http=FakeHTTP(respond), rise=1)
        monitor.startService()
        self.assertEqual(self.events, [("green", False, "status 500 (expected 200)")])
        outcome[0] = ResponseNeverReceived(
            [Failure(OSError(errno.ENOBUFS, "No buffer space available"))]
        )
        self.advanceTo(10)
        state = monitor.health["green"]
        self.assertIs(state.up, False)
        self.assertEqual((state.successes, state.failures), (0, 1))
        self.assertEqual(len(self.events), 1)

    def test_perEnvironment(self) -> None:
        """
        Each environment's streak is its own, named in its line.
        """
        monitor = self.monitor(
            (GREEN, BLUE),
            http=FakeHTTP(lambda: fail(ConnectBindError(errno.EMFILE, "Too many"))),
        )
        monitor.startService()
        self.advanceTo(10)
        self.assertEqual(
            sorted(self.lines()),
            [
                "health check of blue could not run: bluegreen is out of file "
                "descriptors (EMFILE); not counted against blue",
                EMFILE_LINE,
            ],
        )
        self.assertEqual(self.events, [])

    def test_otherFailuresCount(self) -> None:
        """
        A server's failure still counts (nothing else changed).
        """
        monitor = self.monitor(http=FakeHTTP(lambda: fail(ConnectionRefusedError())))
        monitor.startService()
        self.assertEqual(self.events, [("green", False, "connection refused")])
        self.assertEqual(self.lines(), [])


class RealDescriptorShortageTests(TestCase):
    """
    Against the errors Twisted really raises: with the descriptor limit
    lowered so that the next socket cannot be made, a check through the
    real health client (L{healthClient}) on the real reactor cannot run,
    and is logged, not counted.
    """

    def test_outOfDescriptors(self) -> Deferred[None]:
        """
        The check's connect fails with C{EMFILE} (L{ConnectBindError}, from
        C{twisted.internet.tcp}'s socket creation): GREEN is neither up nor
        down and has no check in its history; the line says why.
        """
        logged: Sequence[LogEvent] = self.enterContext(capturedLogs())
        http, pool = healthClient(reactor, PATIENCE, None)
        monitor = HealthMonitor(
            {"green": Environment.fromURL("green", "http://127.0.0.1:9")},
            HealthSettings(interval=4 * PATIENCE, timeout=PATIENCE),
            reactor,
            http,
            pool,
        )
        self.addCleanup(monitor.stopService)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # The lowest free descriptor number: with the limit there, the next
        # descriptor cannot be made (descriptors already open stay open).
        # The check's connect makes its socket before startService returns.
        lowest = os.dup(0)
        os.close(lowest)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
        try:
            monitor.startService()
            checked = monitor.check("green")
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        def verify(_: None) -> None:
            state = monitor.health["green"]
            self.assertIsNone(state.up)
            self.assertEqual(len(state.history), 0)
            self.assertEqual(
                [
                    formatEvent(event)
                    for event in logged
                    if event.get("log_level") == LogLevel.error
                ],
                [EMFILE_LINE],
            )

        return checked.addCallback(verify)
