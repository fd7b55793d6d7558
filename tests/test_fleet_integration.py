# -*- test-case-name: tests.test_fleet_integration -*-
"""
Several real proxies sharing their state through a real C{redis-server}
(C{--coordinate}): each built by L{bluegreen.service.tap.makeService} in this
process, on its own free port, in front of the same test backends.

Measured figures (how long a switch took to reach every instance) are logged
at info level in the test log (C{_trial_temp/test.log}), as
C{measured: ...}.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from bluegreen.controller import SwitchRefused
from bluegreen.fleet.coordinator import Coordinator
from bluegreen.fleet.state import HISTORY_KEY, STATE_KEY
from tests._admin import call, listeningPort
from tests._backends import (
    BackendConnection,
    ProxyUnderTest,
    ReceivedRequest,
    portNumber,
    startBackend,
    startProxy,
)
from tests._logs import captureLogs
from tests._redis import RedisProcess, startRedis
from tests._util import PATIENCE, healthArguments, waitFor

_log = Logger()

#: Health settings of the failover test: fast, one failed check is enough.
HEALTH = (*healthArguments(0.2, 0.1, 0.5), "--fall", "1", "--rise", "1")


class Toggle:
    """
    A backend handler answering C{200}, or C{500} while L{failing}.

    @ivar failing: Answer C{500}.
    """

    def __init__(self, name: str) -> None:
        """
        @param name: The environment, in the body.
        """
        self.name = name
        self.failing = False

    def __call__(self, request: ReceivedRequest, conn: BackendConnection) -> None:
        """
        Answer.
        """
        if self.failing:
            conn.respond(500, b"Internal Server Error", body=b"failing\n")
        else:
            conn.respond(body=self.name.encode())


class FleetTests(TestCase):
    """
    Three (then four) proxies and one Redis.
    """

    def backends(self) -> tuple[Toggle, str, Toggle, str]:
        """
        GREEN and BLUE test backends.
        """
        green, blue = Toggle("green"), Toggle("blue")
        _g, greenURL = startBackend(self, "green", green)
        _b, blueURL = startBackend(self, "blue", blue)
        return green, greenURL, blue, blueURL

    def instance(
        self,
        redis: RedisProcess,
        greenURL: str,
        blueURL: str,
        *extra: str,
        health: bool = False,
    ) -> ProxyUnderTest:
        """
        One proxy coordinated through C{redis}.
        """
        return startProxy(
            self,
            greenURL,
            blueURL,
            "--coordinate",
            redis.url,
            "--redis-timeout",
            "1",
            *extra,
            health=health,
        )

    async def following(self, proxies: Sequence[ProxyUnderTest]) -> None:
        """
        Wait until every proxy has read the shared state.
        """
        await waitFor(
            lambda: all(coordinator(p).reachable for p in proxies),
            "every instance reads the shared state",
        )

    async def test_switchReachesAll(self) -> None:
        """
        A switch made through one instance reaches the other two (measured,
        bounded by L{PATIENCE}); every instance shows the same history; a
        fourth instance started later (with C{--active green}) reads the
        state and follows, and its own switch reaches the others.
        """
        redis = await startRedis(self)
        _green, greenURL, _blue, blueURL = self.backends()
        proxies = [self.instance(redis, greenURL, blueURL) for _ in range(3)]
        await self.following(proxies)
        started = time.monotonic()
        proxies[0].controller.switch("blue", "release 42")
        delay = await waitFor(
            lambda: all(p.controller.active == "blue" for p in proxies),
            "the switch reaches every instance",
            step=0.001,
        )
        _log.info(
            "measured: a switch through one instance reached all three in {ms:.1f} ms",
            ms=(time.monotonic() - started) * 1000,
        )
        self.assertLess(delay, PATIENCE)
        histories = [
            [(s.source, s.to, s.reason) for s in p.controller.history] for p in proxies
        ]
        self.assertEqual(histories, [[("green", "blue", "release 42")]] * 3)
        self.assertEqual(await redis.cli("HGET", STATE_KEY, "generation"), "1")

        late = self.instance(redis, greenURL, blueURL, "--active", "green")
        await self.following([late])
        self.assertEqual(late.controller.active, "blue")
        self.assertEqual(late.controller.history, proxies[0].controller.history)

        late.controller.switch("green", "rollback")
        everyone = [*proxies, late]
        await waitFor(
            lambda: all(
                p.controller.active == "green" and len(p.controller.history) == 2
                for p in everyone
            ),
            "the late instance's switch reaches the others",
        )
        self.assertEqual(
            {coordinator(p).state.generation for p in everyone},  # type: ignore[union-attr]
            {2},
        )

    async def test_failoverOnce(self) -> None:
        """
        GREEN fails for every instance (each checks it): exactly one switch
        is recorded, with one reason, and every instance shows it.
        """
        redis = await startRedis(self)
        green, greenURL, _blue, blueURL = self.backends()
        proxies = [
            self.instance(redis, greenURL, blueURL, *HEALTH, health=True)
            for _ in range(3)
        ]
        await self.following(proxies)
        await waitFor(
            lambda: all(p.service.health.health["blue"].up for p in proxies),
            "every instance has seen BLUE up",
        )
        green.failing = True
        await waitFor(
            lambda: all(
                p.controller.active == "blue"
                and p.service.health.health["green"].up is False
                and not coordinator(p).proposing
                for p in proxies
            ),
            "every instance has seen GREEN fail and is on BLUE",
        )
        self.assertEqual(await redis.cli("LLEN", HISTORY_KEY), "1")
        histories = {
            tuple((s.source, s.to, s.reason) for s in p.controller.history)
            for p in proxies
        }
        self.assertEqual(len(histories), 1, histories)
        [history] = histories
        self.assertEqual(len(history), 1)
        self.assertEqual(history[0][:2], ("green", "blue"))
        self.assertEqual(sum(coordinator(p).counts["won"] for p in proxies), 1)
        _log.info(
            "measured: failover seen by three instances: won {won}, lost {lost}, "
            "followed {followed}",
            **{
                key: sum(coordinator(p).counts[key] for p in proxies)
                for key in ("won", "lost", "followed")
            },
        )

    async def test_failoverAtOnce(self) -> None:
        """
        Every instance sees GREEN fail and switches before any hears of the
        others (Redis is frozen meanwhile, so their compare-and-sets wait):
        once Redis runs again one wins and two lose, exactly one switch is
        recorded, and every instance shows it.
        """
        redis = await startRedis(self)
        green, greenURL, _blue, blueURL = self.backends()
        # A frozen Redis must not be taken for a dead one here.
        slow = (*HEALTH, "--redis-timeout", str(PATIENCE))
        proxies = [
            self.instance(redis, greenURL, blueURL, *slow, health=True)
            for _ in range(3)
        ]
        await self.following(proxies)
        await waitFor(
            lambda: all(p.service.health.health["blue"].up for p in proxies),
            "every instance has seen BLUE up",
        )
        redis.pause()
        try:
            green.failing = True
            await waitFor(
                lambda: all(
                    p.controller.active == "blue" and coordinator(p).proposing
                    for p in proxies
                ),
                "every instance has failed over and proposed it",
            )
        finally:
            redis.resume()
        await waitFor(
            lambda: (
                not any(coordinator(p).proposing for p in proxies)
                and len({len(p.controller.history) for p in proxies} | {1}) == 1
            ),
            "every proposal is decided and the histories agree",
        )
        self.assertEqual(await redis.cli("LLEN", HISTORY_KEY), "1")
        self.assertEqual(
            sorted(
                (coordinator(p).counts["won"], coordinator(p).counts["lost"])
                for p in proxies
            ),
            [(0, 1), (0, 1), (1, 0)],
        )
        histories = {tuple(p.controller.history) for p in proxies}
        self.assertEqual(len(histories), 1, histories)
        self.assertEqual([p.controller.active for p in proxies], ["blue"] * 3)

    async def test_syncClaim(self) -> None:
        """
        The sync before a switch is claimed by one instance at a time in
        the real Redis; only its holder releases it.
        """
        redis = await startRedis(self)
        _green, greenURL, _blue, blueURL = self.backends()
        proxy = self.instance(redis, greenURL, blueURL)
        await self.following([proxy])
        backend = coordinator(proxy).backend
        self.assertIsNone(await backend.claim("x", PATIENCE))
        self.assertEqual(await backend.claim("y", PATIENCE), "x")
        await backend.release("y")
        self.assertEqual(await backend.claim("y", PATIENCE), "x")
        await backend.release("x")
        self.assertIsNone(await backend.claim("y", PATIENCE))
        self.assertEqual(await redis.cli("GET", "bluegreen:fleet:sync"), "y")

    async def test_redisOutage(self) -> None:
        """
        Redis killed: every instance keeps its live environment, says so in
        its status and metrics, logs it once, and refuses a manual switch.
        Redis back: every instance reads the state again (here: a state
        saved in Redis's snapshot that none of them knew).
        """
        logs = captureLogs(self)
        redis = await startRedis(self)
        _green, greenURL, _blue, blueURL = self.backends()
        admin = ("--admin", "tcp:0:interface=127.0.0.1")
        proxies = [self.instance(redis, greenURL, blueURL, *admin) for _ in range(3)]
        await self.following(proxies)
        # A state none of them has seen (no announcement), in the snapshot
        # the restarted Redis will load.
        await redis.cli("HSET", STATE_KEY, "live", "blue", "generation", "7")
        await redis.cli("SAVE")
        await redis.kill()
        await waitFor(
            lambda: all(coordinator(p).failedAttempts >= 3 for p in proxies),
            "every instance has tried to reconnect a few times",
        )
        self.assertEqual([p.controller.active for p in proxies], ["green"] * 3)
        downs = [e for e in logs.events if e.get("event") == "coordination-down"]
        self.assertEqual(len(downs), 3, downs)

        adminPort = portNumber(listeningPort(proxies[0].service, "admin"))
        base = f"http://127.0.0.1:{adminPort}"
        status = (await call(f"{base}/api/status")).json
        self.assertEqual(status["live"], "green")
        self.assertFalse(status["coordination"]["reachable"])
        self.assertIn("keeping green", status["coordination"]["note"])
        self.assertIsNotNone(status["coordination"]["error"])
        metrics = (await call(f"{base}/metrics")).data.decode()
        self.assertIn("bluegreen_coordination_up 0.0", metrics)
        error = self.assertRaises(
            SwitchRefused, proxies[1].controller.switch, "blue", "manual"
        )
        self.assertIn("coordination Redis", str(error))
        refused = await call(f"{base}/api/switch", "POST", payload={"to": "blue"})
        self.assertEqual(refused.code, 409)
        self.assertIn("coordination Redis", refused.json["error"])

        await redis.start()
        await self.following(proxies)
        self.assertEqual([p.controller.active for p in proxies], ["blue"] * 3)
        self.assertEqual(
            [coordinator(p).state.generation for p in proxies],  # type: ignore[union-attr]
            [7] * 3,
        )
        ups = [e for e in logs.events if e.get("event") == "coordination-up"]
        self.assertEqual(len(ups), 3, ups)
        metrics = (await call(f"{base}/metrics")).data.decode()
        self.assertIn("bluegreen_coordination_up 1.0", metrics)
        self.assertIn("bluegreen_coordination_generation 7.0", metrics)

        # An operator's switch through one instance's admin API.
        answer = await call(f"{base}/api/switch", "POST", payload={"to": "green"})
        self.assertEqual(answer.code, 200, answer.data)
        await waitFor(
            lambda: all(p.controller.active == "green" for p in proxies),
            "the admin API's switch reaches every instance",
        )
        status = (await call(f"{base}/api/status")).json
        self.assertTrue(status["coordination"]["reachable"])
        self.assertEqual(status["coordination"]["generation"], 8)
        self.assertEqual(
            [(s["from"], s["to"]) for s in status["history"]], [("blue", "green")]
        )


def coordinator(proxy: ProxyUnderTest) -> Coordinator:
    """
    The proxy's coordinator.
    """
    found = proxy.service.coordinator
    assert found is not None
    return found
