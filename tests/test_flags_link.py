# -*- test-case-name: tests.test_flags_link -*-
"""
Tests for the timing of L{bluegreen.flags.link} and L{bluegreen.flags.store}:
reconnection delays, command timeouts, polling and the refresh safety net,
with time driven by a L{Clock} while the connections are real (a real
C{redis-server}, or a port nothing listens on).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bluegreen.flags.link import INITIAL_DELAY, MAX_DELAY, Connection, RedisLink
from bluegreen.flags.model import RedisUnavailable
from bluegreen.flags.store import FlagStore
from bluegreen.flags.target import RedisTarget
from tests._util import freePort, waitFor

from ._backends import failOnLoggedErrors
from .test_flags import barrier, messages

reactor = IReactorTCP(_reactor)


def _nothing(connection: Connection) -> Awaitable[None]:
    """
    A preparation that does nothing.
    """
    return succeed(None)


class RetryPolicyTests(SynchronousTestCase):
    """
    L{RedisLink.retryDelay}: 0.5 s, doubling, at most 5 s.
    """

    def test_delays(self) -> None:
        """
        The wait before each attempt after N failed ones in a row.
        """
        link = RedisLink(
            RedisTarget.parse("redis://127.0.0.1:1/0"),
            reactor,
            Clock(),
            1.0,
            None,
            _nothing,
            lambda link: None,
            lambda link: None,
        )
        self.assertEqual((INITIAL_DELAY, MAX_DELAY), (0.5, 5.0))
        self.assertEqual(
            [link.retryDelay(n) for n in range(1, 8)],
            [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0],
        )


class ClockTests(TestCase):
    """
    A store whose time is a L{Clock}: its waits happen only when the test
    advances it.
    """

    timeout = 60

    def setUp(self) -> None:
        """
        Fail the test on any error logged.
        """
        self.logs = failOnLoggedErrors(self)
        self.clock = Clock()

    async def store(self, url: str, **kwargs: Any) -> FlagStore:
        """
        A started store on C{url} keeping time with L{clock}.
        """
        store = FlagStore(
            "blue", RedisTarget.parse(url), reactor, clock=self.clock, **kwargs
        )
        self.addCleanup(store.stop)
        await store.start()
        return store

    def retryEvents(self) -> list[dict[str, Any]]:
        """
        The waits before a new attempt L{ClientService} scheduled for the
        commands link, as it logged them (with their C{delay}).
        """
        return [
            event
            for event in self.logs.events
            if str(event.get("log_format", "")).startswith("Scheduling retry")
            and "commands" in repr(event.get("endpoint"))
        ]

    async def delays(self, count: int) -> list[float]:
        """
        Let C{count} attempts fail one after the other, advancing the clock
        by each wait as soon as it is scheduled.  (Commands have a long
        timeout here, so that the clock only ends the waits.)

        @return: The waits.
        """
        delays: list[float] = []
        for n in range(count):
            await waitFor(lambda: len(self.retryEvents()) > n, "a retry")  # noqa: B023
            delay = float(self.retryEvents()[n]["delay"])
            delays.append(delay)
            self.clock.advance(delay)
        return delays

    async def test_refusedBacksOff(self) -> None:
        """
        Refused connections are tried again after 0.5 s, 1 s, 2 s, 4 s,
        then every 5 s; the outage is logged once.
        """
        url = f"redis://127.0.0.1:{freePort()}/0"
        store = await self.store(url, watch=False, timeout=60.0)
        self.assertEqual(store.error, "connection refused")
        self.assertEqual(await self.delays(6), [0.5, 1.0, 2.0, 4.0, 5.0, 5.0])
        self.assertEqual(
            messages(self.logs, "unreachable"),
            [
                f"Redis for blue at {url} is unreachable: connection refused; "
                "serving cached flags"
            ],
        )

    async def test_wrongPasswordBacksOff(self) -> None:
        """
        Connections made but refused by Redis (a wrong password) count as
        failed attempts: the waits grow as for refused ones.
        """
        from ._redis import startRedis

        redis = await startRedis(self, password="s3cret")
        store = await self.store(
            f"redis://:wrong@127.0.0.1:{redis.port}/0", watch=False, timeout=60.0
        )
        self.assertTrue((store.error or "").startswith("authentication failed ("))
        self.assertEqual(await self.delays(5), [0.5, 1.0, 2.0, 4.0, 5.0])
        self.assertEqual(len(messages(self.logs, "unreachable")), 1)

    async def test_commandTimeout(self) -> None:
        """
        A command Redis does not answer fails after exactly the timeout,
        as the clock tells it, and drops the connection.
        """
        from ._redis import startRedis

        redis = await startRedis(self)
        store = await self.store(redis.url, watch=False, timeout=1.0)
        redis.pause()
        self.addCleanup(redis.resume)
        attempt = Deferred.fromCoroutine(store.set("RECENT", "ON", "alice"))
        self.clock.advance(0.999)
        self.assertNoResult(attempt)
        self.assertTrue(store.connected)
        self.clock.advance(0.001)
        error = self.failureResultOf(attempt, RedisUnavailable).value
        self.assertEqual(
            str(error), f"cannot reach Redis for blue at {redis.url}: timeout after 1 s"
        )
        self.assertFalse(store.connected)

    async def test_pollEverySecond(self) -> None:
        """
        Without keyspace notifications (C{CONFIG} not allowed), the flags
        are read every second: not before.
        """
        from ._redis import startRedis

        redis = await startRedis(self, extra=("--rename-command", "CONFIG", ""))
        store = await self.store(redis.url, timeout=30.0)
        self.assertFalse(store.watching)
        await redis.cli("SET", "RECENT", "ON")
        self.clock.advance(0.999)
        await barrier(redis, store)
        self.assertFalse(store.view("RECENT").on)
        self.clock.advance(0.001)
        await waitFor(lambda: store.view("RECENT").on, "RECENT read")

    async def test_refreshSafetyNet(self) -> None:
        """
        A change no notification told of is read by the full refresh, every
        C{refresh} seconds: not before.
        """
        from ._redis import startRedis

        redis = await startRedis(self)
        store = await self.store(redis.url, timeout=60.0, refresh=30.0)
        await waitFor(lambda: store.watching, "watching")
        # Notifications off behind the store's back: only the refresh is left.
        await redis.cli("CONFIG", "SET", "notify-keyspace-events", "")
        await redis.cli("SET", "RECENT", "ON")
        for _ in range(29):
            self.clock.advance(1)
        await barrier(redis, store)
        self.assertFalse(store.view("RECENT").on)
        self.clock.advance(1)
        await waitFor(lambda: store.view("RECENT").on, "RECENT read")
