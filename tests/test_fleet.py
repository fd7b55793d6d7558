# -*- test-case-name: tests.test_fleet -*-
"""
Tests of L{bluegreen.fleet}: the coordinator's logic on a L{Clock} with an
in-memory Redis (L{FakeRedis}, the compare-and-set and announcements as
the Lua script makes them), the records, the metrics and the options.
The real Redis is in C{tests.test_fleet_integration}.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bluegreen.controller import Controller, Switch, SwitchRefused
from bluegreen.environment import Environment
from bluegreen.flags.link import LinkDown
from bluegreen.fleet.coordinator import Coordinator
from bluegreen.fleet.metrics import FleetMetrics
from bluegreen.fleet.state import BadRecord, FleetState, SharedSwitch
from bluegreen.service.options import Options
from tests._logs import captureLogs


class FakeRedis:
    """
    The shared state in memory, with the semantics of
    L{bluegreen.fleet.script}.

    @ivar up: C{False} while unreachable.
    @ivar held: While not L{None}, compare-and-sets wait for it (a frozen
        Redis).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.live: str | None = None
        self.generation = 0
        self.history: list[str] = []
        self.backends: list[FakeBackend] = []
        self.up = True
        self.held: Deferred[None] | None = None
        self.claimed: str | None = None

    def down(self) -> None:
        """
        Become unreachable.
        """
        self.up = False
        for backend in self.backends:
            backend.onDown()

    def back(self) -> None:
        """
        Become reachable again.
        """
        self.up = True
        for backend in self.backends:
            if backend.started:
                backend.onReady()

    def publish(self, text: str) -> None:
        """
        Announce to every subscriber (on the next turn, as a network would).
        """
        for backend in self.backends:
            if backend.started:
                self.clock.callLater(0, backend.onMessage, text)


class FakeBackend:
    """
    One instance's connections to a L{FakeRedis}.
    """

    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.started = False
        self.onReady: Callable[[], None] = lambda: None
        self.onDown: Callable[[], None] = lambda: None
        self.onMessage: Callable[[str], None] = lambda text: None
        redis.backends.append(self)

    @property
    def ready(self) -> bool:
        return self.started and self.redis.up

    @property
    def error(self) -> str | None:
        return None if self.redis.up else "connection refused"

    def describe(self) -> str:
        return "redis://fake:6379/0"

    def start(self) -> None:
        self.started = True
        if self.redis.up:
            self.redis.clock.callLater(0, self.onReady)
        else:
            self.onDown()

    def stop(self) -> Deferred[None]:
        self.started = False
        return Deferred.fromCoroutine(self._nothing())

    async def _nothing(self) -> None:
        return None

    async def read(self, active: str) -> FleetState:
        if not self.redis.up:
            raise LinkDown("connection refused")
        redis = self.redis
        if redis.live is None:
            redis.live = active
        history = tuple(SharedSwitch.decode(text) for text in redis.history)
        return FleetState(redis.live, redis.generation, history)

    async def propose(self, expected: int, record: SharedSwitch) -> tuple[bool, int]:
        redis = self.redis
        if redis.held is not None:
            await redis.held
        if not redis.up:
            raise LinkDown("connection lost")
        if redis.generation != expected or redis.live == record.to:
            return False, redis.generation
        redis.generation += 1
        redis.live = record.to
        redis.history.append(record.encode())
        redis.publish(record.encode())
        return True, redis.generation

    async def claim(self, instance: str, seconds: float) -> str | None:
        if not self.redis.up:
            raise LinkDown("connection refused")
        if self.redis.claimed is not None:
            return self.redis.claimed
        self.redis.claimed = instance
        return None

    async def release(self, instance: str) -> None:
        if self.redis.claimed == instance:
            self.redis.claimed = None


class Instance:
    """
    One instance: a controller with its own view of health, and its
    coordinator.
    """

    def __init__(
        self,
        redis: FakeRedis,
        clock: Clock,
        fallback: str = "none",
        name: str = "",
        failback: str = "manual",
    ) -> None:
        self.health: dict[str, bool | None] = {"green": True, "blue": True}
        environments = {
            colour: Environment.fromURL(colour, f"http://127.0.0.1:{port}")
            for colour, port in (("green", 5002), ("blue", 5001))
        }
        self.controller = Controller.create(
            environments,
            "green",
            clock,
            isUp=self.health.get,
            failback=failback,
            failbackDelay=30.0,
        )
        self.coordinator = Coordinator(
            self.controller, FakeBackend(redis), clock, fallback, name or None
        )
        self.synced: list[Switch] = []
        self.controller.onSwitch.append(
            self.coordinator.ifWon(lambda record, kind: self.synced.append(record))
        )
        self.presynced: list[tuple[str, str]] = []
        self.presync: Deferred[None] = Deferred()
        self.controller.beforeSwitch = self.coordinator.exclusive(self.beforeSwitch)
        self.coordinator.startService()

    def beforeSwitch(self, source: str, target: str) -> Deferred[None]:
        """
        A sync before a planned switch, finished by firing L{presync}.
        """
        self.presynced.append((source, target))
        return self.presync

    def fail(self, name: str) -> None:
        """
        This instance's checks see C{name} go down.
        """
        self.health[name] = False
        self.controller.healthChanged(name, False, f"{name}: status 500")

    def recover(self, name: str) -> None:
        """
        This instance's checks see C{name} come back up.
        """
        self.health[name] = True
        self.controller.healthChanged(name, True, "status 200")


def backend(instance: Instance) -> FakeBackend:
    """
    The instance's fake backend.
    """
    found = instance.coordinator.backend
    assert isinstance(found, FakeBackend)
    return found


def settle(clock: Clock) -> None:
    """
    Deliver every announcement due now (and those they cause).
    """
    for _ in range(10):
        clock.advance(0)


class CoordinatorTests(TestCase):
    """
    L{Coordinator} with three instances sharing a L{FakeRedis}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.redis = FakeRedis(self.clock)

    def instances(self, count: int = 3, fallback: str = "none") -> list[Instance]:
        started = [
            Instance(self.redis, self.clock, fallback, f"i{n}") for n in range(count)
        ]
        settle(self.clock)
        return started

    def test_startReadsState(self) -> None:
        """
        The first instance records its live environment; a later one,
        started with another, adopts the shared state and history.
        """
        [first] = self.instances(1)
        self.assertTrue(first.coordinator.reachable)
        self.assertEqual(self.redis.live, "green")
        first.controller.switch("blue", "release")
        settle(self.clock)
        late = Instance(self.redis, self.clock)
        self.assertEqual(late.controller.active, "green")  # before the read
        settle(self.clock)
        self.assertEqual(late.controller.active, "blue")
        self.assertEqual(late.controller.history, first.controller.history)
        self.assertEqual(late.controller.why, "release")

    def test_switchFollowed(self) -> None:
        """
        A switch made by one instance is recorded (generation 1) and the
        others follow it without running the sync tied to it.
        """
        a, b, c = self.instances()
        a.controller.switch("blue", "release")
        settle(self.clock)
        self.assertEqual([i.controller.active for i in (a, b, c)], ["blue"] * 3)
        self.assertEqual(self.redis.generation, 1)
        self.assertEqual([len(i.synced) for i in (a, b, c)], [1, 0, 0])
        self.assertEqual(b.coordinator.counts["followed"], 1)
        self.assertEqual(
            b.coordinator.status()["last_switch"], "generation 1 by i0 (manual)"
        )
        self.assertEqual(b.controller.history, a.controller.history)

    def test_failoverAtOnce(self) -> None:
        """
        All three see GREEN fail and switch before any proposal is decided:
        one wins, the others adopt its record; one sync runs.
        """
        a, b, c = self.instances()
        self.redis.held = Deferred()
        for instance in (a, b, c):
            self.clock.advance(0.1)
            instance.fail("green")
            self.assertEqual(instance.controller.active, "blue")
        self.assertTrue(all(i.coordinator.proposing for i in (a, b, c)))
        held, self.redis.held = self.redis.held, None
        held.callback(None)
        settle(self.clock)
        self.assertEqual(len(self.redis.history), 1)
        [record] = a.controller.history
        for instance in (a, b, c):
            self.assertEqual(instance.controller.history, [record])
            self.assertEqual(instance.controller.active, "blue")
            self.assertFalse(instance.coordinator.proposing)
        self.assertEqual(record.reason, "failover: green down: green: status 500")
        self.assertEqual([len(i.synced) for i in (a, b, c)], [1, 0, 0])
        self.assertEqual(
            [
                (i.coordinator.counts["won"], i.coordinator.counts["lost"])
                for i in (a, b, c)
            ],
            [(1, 0), (0, 1), (0, 1)],
        )

    def test_failbackOnce(self) -> None:
        """
        With C{--failback auto}, every instance sees GREEN back: the one that
        claims the sync syncs and fails back, the others are refused the
        sync (failback postponed) and follow it, cancelling theirs.
        """
        a, b, c = (
            Instance(self.redis, self.clock, name=f"i{n}", failback="auto")
            for n in range(3)
        )
        settle(self.clock)
        for instance in (a, b, c):
            instance.fail("green")
        settle(self.clock)
        self.assertEqual(self.redis.generation, 1)
        for instance in (a, b, c):
            instance.recover("green")
            self.assertEqual(instance.controller.mode, "failback-pending")
        self.clock.advance(30)
        settle(self.clock)
        self.assertEqual([len(i.presynced) for i in (a, b, c)], [1, 0, 0])
        self.assertEqual(a.presynced, [("blue", "green")])
        a.presync.callback(None)
        settle(self.clock)
        self.assertEqual(self.redis.generation, 2)
        self.assertIsNone(self.redis.claimed)
        for instance in (a, b, c):
            self.assertEqual(instance.controller.active, "green")
            self.assertEqual(instance.controller.mode, "serving")
            self.assertEqual(len(instance.controller.history), 2)
        self.clock.advance(300)
        settle(self.clock)
        self.assertEqual([len(i.presynced) for i in (a, b, c)], [1, 0, 0])
        self.assertEqual(self.redis.generation, 2)

    def test_unreachableKeepsColour(self) -> None:
        """
        Redis unreachable: no failover, a manual switch is refused (saying
        why), the outage is logged once; once Redis is back the state is
        read and the failover still due is proposed.
        """
        logs = captureLogs(self)
        [a] = self.instances(1)
        self.redis.down()
        self.redis.down()
        a.fail("green")
        self.assertEqual(a.controller.active, "green")
        error = self.assertRaises(SwitchRefused, a.controller.switch, "blue")
        self.assertIn("cannot be reached (connection refused)", str(error))
        self.assertIn("--coordinate-fallback none", str(error))
        status = a.coordinator.status()
        self.assertFalse(status["reachable"])
        self.assertEqual(status["note"], "shared state unreachable: keeping green")
        self.assertEqual(status["since"], 1000)
        downs = [e for e in logs.events if e.get("event") == "coordination-down"]
        self.assertEqual(len(downs), 1)
        self.clock.advance(5)
        self.redis.back()
        settle(self.clock)
        self.assertTrue(a.coordinator.reachable)
        self.assertEqual(a.controller.active, "blue")
        self.assertEqual(self.redis.generation, 1)
        [up] = [e for e in logs.events if e.get("event") == "coordination-up"]
        self.assertEqual(up["down"], "5.0")

    def test_fallbackLocal(self) -> None:
        """
        With C{--coordinate-fallback local} an instance fails over alone
        (running its sync), and proposes the switch when Redis is back.
        """
        a, b = self.instances(2, fallback="local")
        self.redis.down()
        a.fail("green")
        self.assertEqual(a.controller.active, "blue")
        self.assertEqual(len(a.synced), 1)
        self.assertEqual(b.controller.active, "green")
        self.redis.back()
        settle(self.clock)
        self.assertEqual(self.redis.generation, 1)
        self.assertEqual([a.controller.active, b.controller.active], ["blue"] * 2)
        self.assertEqual(b.controller.history, a.controller.history)

    def test_fallbackLocalOvertaken(self) -> None:
        """
        A switch made alone is dropped if the shared state moved meanwhile:
        the instance adopts it (here GREEN is up again by then: had it still
        been down, the failover would have been proposed anew).
        """
        [a] = self.instances(1, fallback="local")
        self.redis.down()
        a.fail("green")
        self.redis.generation, self.redis.live = 4, "green"
        a.health["green"] = True
        self.redis.back()
        settle(self.clock)
        self.assertEqual(a.controller.active, "green")
        self.assertEqual(a.coordinator.state, FleetState("green", 4, ()))

    def test_missedAnnouncements(self) -> None:
        """
        An announcement skipping generations makes the instance follow it at
        once and read the whole state again; a bad one is ignored.
        """
        a, b = self.instances(2)
        backend(b).started = False  # hears nothing
        a.controller.switch("blue", "one")
        settle(self.clock)
        a.controller.switch("green", "two")
        settle(self.clock)
        backend(b).started = True
        a.controller.switch("blue", "three")
        settle(self.clock)
        self.assertEqual(b.controller.active, "blue")
        self.assertEqual(
            [s.reason for s in b.controller.history], ["one", "two", "three"]
        )
        b.coordinator.backend.onMessage("not json")
        self.assertEqual(b.coordinator.state.generation, 3)  # type: ignore[union-attr]

    def test_lostWhileProposing(self) -> None:
        """
        A proposal that gets no answer (Redis gone) is kept and proposed
        again once Redis is back.
        """
        [a] = self.instances(1)
        self.redis.held = Deferred()
        a.controller.switch("blue", "release")
        self.redis.up = False
        held, self.redis.held = self.redis.held, None
        held.callback(None)
        self.redis.down()
        self.assertEqual(a.coordinator.counts["unsent"], 1)
        self.redis.back()
        settle(self.clock)
        self.assertEqual(self.redis.live, "blue")
        self.assertEqual(self.redis.generation, 1)

    def test_metrics(self) -> None:
        """
        The collector reports reachability, generation and outcomes.
        """
        a, b = self.instances(2)
        a.controller.switch("blue")
        settle(self.clock)
        metrics = {m.name: m for m in FleetMetrics(b.coordinator).collect()}
        self.assertEqual(metrics["bluegreen_coordination_up"].samples[0].value, 1)
        self.assertEqual(
            metrics["bluegreen_coordination_generation"].samples[0].value, 1
        )
        followed = [
            s.value
            for s in metrics["bluegreen_coordination_switches"].samples
            if s.labels == {"result": "followed"} and s.name.endswith("_total")
        ]
        self.assertEqual(followed, [1])


class RecordTests(SynchronousTestCase):
    """
    L{SharedSwitch} as written in Redis.
    """

    def test_roundTrip(self) -> None:
        """
        A record reads back as written (times exactly).
        """
        record = SharedSwitch(
            3, 1764668400.123456, "green", "blue", "why", "manual", "h:1"
        )
        self.assertEqual(SharedSwitch.decode(record.encode()), record)
        self.assertEqual(
            record.asSwitch(), Switch(1764668400.123456, "green", "blue", "why")
        )

    def test_bad(self) -> None:
        """
        Text that is not a record is refused, saying so.
        """
        for text in ("nope", "{}", '{"generation": true}'):
            self.assertRaises(BadRecord, SharedSwitch.decode, text)


class OptionsTests(SynchronousTestCase):
    """
    C{--coordinate} and C{--coordinate-fallback}.
    """

    def parse(self, *extra: str) -> Options:
        options = Options()
        options.parseOptions(
            [
                "--green",
                "http://127.0.0.1:5002",
                "--blue",
                "http://127.0.0.1:5001",
                *extra,
            ]
        )
        return options

    def error(self, *extra: str) -> str:
        return str(self.assertRaises(usage.UsageError, self.parse, *extra))

    def test_default(self) -> None:
        """
        Without C{--coordinate} there is no coordination.
        """
        self.assertIsNone(self.parse().config.coordinate)

    def test_urls(self) -> None:
        """
        The flag URLs are accepted.
        """
        for url, shown in (
            ("redis://10.0.0.5:6380/2", "redis://10.0.0.5:6380/2"),
            ("rediss://r.example/0", "rediss://r.example:6379/0"),
            ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
        ):
            config = self.parse("--coordinate", url).config
            assert config.coordinate is not None
            self.assertEqual(config.coordinate.target.describe(), shown)
            self.assertEqual(config.coordinate.fallback, "none")
        config = self.parse(
            "--coordinate", "redis://h:1/0", "--coordinate-fallback", "local"
        ).config
        assert config.coordinate is not None
        self.assertEqual(config.coordinate.fallback, "local")

    def test_badURL(self) -> None:
        """
        A bad URL is refused, naming the option (the password hidden).
        """
        self.assertEqual(
            self.error("--coordinate", "http://u:secret@h:1/0"),
            "--coordinate: 'http://u:***@h:1/0' is not a Redis URL: use "
            "redis://[user:password@]host:port/db, rediss:// (TLS) or "
            "unix:///path?db=0",
        )
        self.assertIn(
            "is not a database number", self.error("--coordinate", "redis://h:1/x")
        )

    def test_badFallback(self) -> None:
        """
        A fallback other than none or local is refused; local needs
        C{--coordinate}.
        """
        self.assertEqual(
            self.error("--coordinate", "redis://h:1/0", "--coordinate-fallback", "yes"),
            "--coordinate-fallback: 'yes' must be 'none' (keep the last known "
            "live environment) or 'local' (switch alone)",
        )
        self.assertEqual(
            self.error("--coordinate-fallback", "local"),
            "--coordinate-fallback: only with --coordinate redis://host:port/db",
        )
