# -*- test-case-name: tests.test_failover_evidence -*-
# mypy: allow-untyped-calls
"""
Passive failures are evidence, not a verdict (issue 11), with real backend
processes: a route on which an environment hangs up without answering never
moves production while its health path answers, and when both environments
drop it nothing switches either.

The apps (L{tests._apps}) hang up on C{/_drop/NAME} (C{all}: both); the
proxy runs as in L{tests.test_failover_integration} (C{--fall 1}, C{--retry
connect}).  A crash still fails over at once with no failed GET:
L{tests.test_failover_integration.CrashUnderLoadTests.test_crashGET}.
"""

from __future__ import annotations

from twisted.logger import Logger

from tests._backends import ProxyUnderTest
from tests._util import waitFor
from tests.test_failover_integration import (
    FailoverTestCase,
    Outcome,
    describe,
    request,
)

#: Requests sent to the dropping route: the issue's figure.
HITS = 50

#: POSTs sent to a route both environments drop (the issue saw 3 switches
#: for 5).
POSTS = 5

_log = Logger()


class OneRouteTests(FailoverTestCase):
    """
    One route that fails while C{--health-path} answers.
    """

    async def post(self, proxy: ProxyUnderTest, path: str) -> Outcome:
        """
        C{POST path} (with a small body) through the proxy.
        """
        return await request(self.clientPool, proxy.url + path, "POST", b"hello")

    async def settled(self, proxy: ProxyUnderTest) -> None:
        """
        Wait until no check started by a passive failure is still running
        and both environments are up, so a switch it would cause is seen.
        """
        health = proxy.service.health
        await health.checkNow()
        await waitFor(
            lambda: health.isUp("green") and health.isUp("blue"),
            "both environments up",
        )

    async def test_greenDropsRouteNoSwitch(self) -> None:
        """
        GREEN hangs up on one route, hit L{HITS} times while its health path
        answers: zero switches; every GET is answered by BLUE through the
        retry, every POST gets the proxy's C{502} naming GREEN (it may have
        acted on it), and GREEN still serves everything else.
        """
        _, _, proxy = await self.startAll()
        gets = [await self.get(proxy, "/_drop/green") for _ in range(HITS)]
        posts = [await self.post(proxy, "/_drop/green") for _ in range(POSTS)]
        await self.settled(proxy)
        self.assertEqual(proxy.controller.history, [])
        self.assertEqual(proxy.controller.active, "green")
        self.assertEqual(
            [(o.status, o.env) for o in gets], [(200, "blue")] * HITS, describe(gets)
        )
        for outcome in posts:
            self.assertEqual(outcome.status, 502, describe([outcome]))
            self.assertIn(b"bluegreen: green (", outcome.body)
        state = proxy.service.health.health["green"]
        _log.info(
            "measured: {n} requests dropped by GREEN: {passive} passive failures,"
            " {switches} switches",
            n=HITS + POSTS,
            passive=state.passiveFailures,
            switches=len(proxy.controller.history),
        )
        self.assertGreaterEqual(state.passiveFailures, HITS + POSTS)
        await self.assertServedBy(proxy, "green")

    async def test_bothDropRouteNoSwitch(self) -> None:
        """
        Both environments hang up on one route: every request gets a
        C{502}, and nothing switches (no ping-pong).
        """
        _, _, proxy = await self.startAll()
        gets = [await self.get(proxy, "/_drop/all") for _ in range(HITS)]
        posts = [await self.post(proxy, "/_drop/all") for _ in range(POSTS)]
        await self.settled(proxy)
        self.assertEqual(proxy.controller.history, [])
        self.assertEqual(proxy.controller.active, "green")
        for outcome in gets + posts:
            self.assertEqual(outcome.status, 502, describe([outcome]))
        health = proxy.service.health.health
        self.assertGreaterEqual(health["green"].passiveFailures, HITS + POSTS)
        self.assertGreaterEqual(health["blue"].passiveFailures, HITS)
        await self.assertServedBy(proxy, "green")
