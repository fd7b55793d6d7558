# -*- test-case-name: tests.test_front_descriptors -*-
"""
Descriptors: C{--max-clients} pauses the listening port at the limit and
resumes below it (L{bluegreen.proxy.clients.ClientGate}, with a fake port
and a L{Clock}, then over real sockets); the open-file limit is raised at
start (a real C{twistd} under C{ulimit -Sn 256}); and an upstream connect
that fails for want of descriptors is answered 503, logged once per streak,
counted, and never reported against the environment.
"""

from __future__ import annotations

import os
import re
import resource
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from bluegreen.proxy.clients import PAUSE_LOG_INTERVAL, ClientGate
from bluegreen.proxy.limits import DESCRIPTOR_RESERVE, defaultMaxClients
from bluegreen.service.descriptors import raiseDescriptorLimit
from tests._backends import echo
from tests._logs import captureLogs
from tests._processes import spawn, twistdArguments, twistdPath
from tests._proxytest import IntegrationTestCase
from tests._rawclient import connectRaw
from tests._util import waitFor
from tests._waiting import stalled, withTimeout


class FakePort:
    """
    A listening port that records whether it reads.
    """

    def __init__(self) -> None:
        self.reading = True
        self.numberAccepts = 100

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


class GateTests(SynchronousTestCase):
    """
    L{ClientGate} with a fake port and a clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.port = FakePort()
        self.gate = ClientGate(3, self.clock)
        self.gate.attach(self.port)
        self.logs = captureLogs(self)  # type: ignore[arg-type]

    def warnings(self) -> list[str]:
        return [
            formatEvent(e)
            for e in self.logs.events
            if e.get("log_level") == LogLevel.warn
        ]

    def test_pauseAtLimitResumeBelow(self) -> None:
        """
        The port stops reading when the third connection opens and reads
        again as soon as one closes; one warning is logged.
        """
        self.gate.opened()
        self.gate.opened()
        self.assertTrue(self.port.reading)
        self.gate.opened()
        self.assertFalse(self.port.reading)
        self.assertTrue(self.gate.paused)
        self.gate.closed()
        self.assertTrue(self.port.reading)
        self.assertFalse(self.gate.paused)
        self.assertEqual(self.gate.pauses, 1)
        [line] = self.warnings()
        self.assertIn("at --max-clients 3", line)

    def test_warningRateLimited(self) -> None:
        """
        Reaching the limit again within a minute is not logged again; after
        it, it is.
        """
        for _ in range(3):
            self.gate.opened()
            self.gate.closed()
            self.gate.opened()
            self.gate.closed()
        self.gate.opened()
        self.gate.opened()
        for _ in range(5):
            self.gate.opened()
            self.gate.closed()
        self.assertEqual(len(self.warnings()), 1)
        self.clock.advance(PAUSE_LOG_INTERVAL)
        self.gate.opened()
        self.assertEqual(len(self.warnings()), 2)
        self.assertEqual(self.gate.pauses, 6)

    def test_batchCappedNearLimit(self) -> None:
        """
        Near the limit, the port's accept batch is lowered to the room left
        on the next turn of the reactor (after the port's own update).
        """
        self.gate.opened()
        self.assertEqual(self.port.numberAccepts, 100)
        self.clock.advance(0)
        self.assertEqual(self.port.numberAccepts, 2)
        self.gate.closed()
        self.clock.advance(0)
        self.assertEqual(self.port.numberAccepts, 2)
        self.port.numberAccepts = 1
        self.clock.advance(0)
        self.assertEqual(self.port.numberAccepts, 1)

    def test_setLimit(self) -> None:
        """
        A new limit pauses or resumes the port at once.
        """
        self.gate.opened()
        self.gate.opened()
        self.gate.setLimit(2)
        self.assertFalse(self.port.reading)
        self.gate.setLimit(5)
        self.assertTrue(self.port.reading)
        self.clock.advance(0)
        self.assertEqual(self.port.numberAccepts, 3)

    def test_detach(self) -> None:
        """
        Once detached, the port is left alone and no call is pending.
        """
        self.gate.opened()
        self.gate.detach()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.gate.opened()
        self.gate.opened()
        self.assertTrue(self.port.reading)

    def test_unpausablePort(self) -> None:
        """
        A port that cannot pause is counted, not paused, and said so.
        """
        gate = ClientGate(1, self.clock)
        gate.attach(object())
        gate.opened()
        gate.opened()
        self.assertEqual(gate.current, 2)
        self.assertFalse(gate.paused)
        self.assertIn("cannot be paused", self.warnings()[0])

    def test_defaultMaxClients(self) -> None:
        """
        The default is the open-file limit less both pools and the reserve,
        and at least 1.
        """
        self.assertEqual(defaultMaxClients(1024, 100), 1024 - 200 - DESCRIPTOR_RESERVE)
        self.assertEqual(defaultMaxClients(100, 100), 1)


class MaxClientsTests(IntegrationTestCase):
    """
    C{--max-clients} over real sockets.
    """

    async def test_sixthWaitsUntilOneCloses(self) -> None:
        """
        With C{--max-clients 5} and five idle connections open, a sixth is
        not accepted (its request is not served) until one of the five
        closes; then it is served.
        """
        # Idle connections are not cut by the head's deadline meanwhile,
        # however slow the machine.
        green, proxy = self.startProxyFor(
            echo("green"), "--max-clients", "5", "--client-header-timeout", "3600"
        )
        gate = proxy.service.gate
        assert gate is not None
        self.assertEqual(gate.limit, 5)
        idle = [await connectRaw(self, proxy.port) for _ in range(5)]
        await waitFor(lambda: gate.current == 5, "five accepted connections")
        self.assertTrue(gate.paused)
        sixth = await connectRaw(self, proxy.port)
        answered = sixth.request(b"GET", b"/sixth")
        # Whatever time passes, it is not accepted while the five are open.
        await stalled(lambda: gate.current, "the connection count")
        self.assertEqual(gate.current, 5)
        self.assertFalse(answered.called)
        self.assertEqual(green.requests, [])
        idle[0].abort()
        response = await withTimeout(answered, "the sixth to be served")
        self.assertEqual(response.code, 200)
        self.assertEqual(gate.current, 5)
        self.assertEqual([r.target for r in green.requests], [b"/sixth"])
        for client in idle[1:]:
            client.abort()
        sixth.abort()
        await waitFor(lambda: gate.current == 0, "every connection closed")
        self.assertFalse(gate.paused)


class DescriptorLimitTests(IntegrationTestCase):
    """
    The open-file limit, raised at start.
    """

    def test_raiseInProcess(self) -> None:
        """
        L{raiseDescriptorLimit} leaves the soft limit at the hard one.
        """
        raised = raiseDescriptorLimit()
        assert raised is not None
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.assertEqual(raised.after, soft)
        if hard != resource.RLIM_INFINITY:
            self.assertEqual(soft, hard)

    async def test_raisedAtStart(self) -> None:
        """
        C{twistd bluegreen} started with a soft limit of 256 runs with its
        soft limit at the hard one, says so, and derives C{--max-clients}
        from it.
        """
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard <= 256:
            self.skipTest("the hard open-file limit is not above 256")
        if not os.access(twistdPath(), os.X_OK):
            self.skipTest("no twistd next to the test's Python")
        child = spawn(
            self,
            "twistd",
            "/bin/sh",
            [
                "-c",
                'ulimit -Sn 256 && exec "$0" "$@"',
                twistdPath(),
                *twistdArguments(
                    "http://127.0.0.1:9",
                    "http://127.0.0.1:10",
                    "--admin",
                    "none",
                    "--access-log",
                    "none",
                ),
            ],
        )
        line = await child.waitForLine(r"open-file limit: (\d+) \(soft limit was 256")
        limit = int(line.group(1))
        clients = await child.waitForLine(
            r"accepting at most (\d+) client connections \(derived"
        )
        self.assertEqual(int(clients.group(1)), defaultMaxClients(limit, 100))
        assert child.transport is not None
        with open(f"/proc/{child.transport.pid}/limits") as f:
            limits = f.read()
        match = re.search(r"Max open files\s+(\d+)\s+(\d+|unlimited)", limits)
        assert match is not None, limits
        self.assertEqual(int(match.group(1)), limit)
        if hard != resource.RLIM_INFINITY:
            self.assertEqual(limit, hard)


class RecordingHealth:
    """
    The passive side of a health monitor, recording what it is told.
    """

    def __init__(self) -> None:
        self.reported: list[tuple[str, str]] = []

    def reportPassive(self, name: str, reason: str) -> None:
        self.reported.append((name, reason))

    def isUp(self, name: str) -> bool:
        return True


class LocalErrorTests(IntegrationTestCase):
    """
    The proxy out of descriptors when connecting upstream.
    """

    async def test_outOfDescriptors(self) -> None:
        """
        With the open-file limit at the lowest free descriptor, requests
        get a 503 saying bluegreen is out of descriptors, logged once for
        the streak, counted as C{local}, and never reported to the health
        monitor; once descriptors are back, requests are served and that
        is logged.
        """
        green, proxy = self.startProxyFor(echo("green"))
        health = RecordingHealth()
        resource_: Any = proxy.resource
        resource_.health = health
        client = await connectRaw(self, proxy.port)
        gate = proxy.service.gate
        assert gate is not None
        await waitFor(lambda: gate.current == 1, "the connection accepted")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lowest = os.dup(0)
        os.close(lowest)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
        try:
            first = await withTimeout(client.request(b"GET", b"/a"), "the first")
            second = await withTimeout(client.request(b"GET", b"/b"), "the second")
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for response in (first, second):
            self.assertEqual(response.code, 503, response.text)
            self.assertIn("out of file descriptors (EMFILE)", response.text)
        self.assertEqual(health.reported, [])
        self.assertEqual(proxy.pools["green"].localErrors, 2)
        warned = [
            formatEvent(e) for e in self.logs.events if e.get("event") == "local-error"
        ]
        self.assertEqual(len(warned), 1, warned)
        self.assertIn("not the environment's", warned[0])
        metrics = proxy.service.metrics
        assert metrics is not None
        self.assertIn(
            b'bluegreen_upstream_errors_total{environment="green",kind="local"} 2.0',
            metrics.expose(),
        )
        third = await client.request(b"GET", b"/c")
        self.assertEqual(third.code, 200)
        self.assertEqual(
            len([e for e in self.logs.events if e.get("event") == "local-error-over"]),
            1,
        )
        self.assertEqual([r.target for r in green.requests], [b"/c"])
