# -*- test-case-name: tests.test_flags -*-
"""
Tests for L{bluegreen.flags.store}: names, values and URLs (unit tests); the
C{--*-redis}, C{--flag} and C{--stamp-flags} options; and L{FlagStore} and
L{FlagService} against real C{redis-server} processes (L{tests._redis}),
killed, frozen and restarted mid-test, with the proxy still answering.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any, cast

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers

from bluegreen.flags.model import (
    CHANNEL,
    HISTORY,
    HISTORY_LIMIT,
    MAX_VALUE,
    NAME_RE,
    OUTSIDE,
    REGISTRY,
    FlagChange,
    FlagError,
    FlagView,
    NoRedis,
    RedisUnavailable,
    isOn,
    normalise,
    validateName,
    validateValue,
)
from bluegreen.flags.service import FlagService
from bluegreen.flags.store import FlagStore
from bluegreen.flags.target import RedisTarget, describeRedisFailure, readPasswordFile
from bluegreen.proxy.resource import ProxyResource
from bluegreen.service.tap import Options, ProxyService, makeService
from tests._util import freePort, raisesAsync, waitFor

from ._backends import (
    LogCapture,
    captureLogs,
    echo,
    failOnLoggedErrors,
    fetch,
    startProxyFor,
)
from ._redis import RedisProcess, startRedis

reactor = IReactorTCP(_reactor)

BASE = ["--green", "http://127.0.0.1:5002", "--blue", "http://127.0.0.1:5001"]


#: The flag L{barrier} sets through a change message.
BARRIER = "BARRIER"


async def barrier(redis: RedisProcess, *stores: FlagStore, db: int = 0) -> None:
    """
    Wait until every store has handled all that Redis sent it before now,
    so that a test can say something did I{not} happen without sleeping.

    A change message published now reaches each store after everything
    published before (one connection, in order); a read after that comes
    back after the reads those messages and notifications caused.  The
    stores (and their observers) see a change of L{BARRIER}.

    @param redis: The Redis of the stores.
    @param stores: The stores.
    @param db: Their database.
    """
    mark = uuid.uuid4().hex
    entry = {
        "when": time.time(),
        "env": "test",
        "flag": BARRIER,
        "new": mark,
        "old": None,
        "who": "test barrier",
        "db": db,
        "id": mark,
    }
    await redis.cli("PUBLISH", CHANNEL, json.dumps(entry))
    await waitFor(
        lambda: all(store.view(BARRIER).value == mark for store in stores),
        "barrier message",
    )
    for store in stores:
        await store.get(BARRIER)


def flagChanges(changes: list[FlagChange]) -> list[FlagChange]:
    """
    @return: C{changes} without those of L{BARRIER}.
    """
    return [change for change in changes if change.flag != BARRIER]


def retries(capture: LogCapture, role: str = "commands") -> int:
    """
    How many waits before a new attempt C{ClientService} logged for the
    stores' C{role} links (one per failed attempt or lost connection).
    """
    return len(messages(capture, f"to connect <Redis {role} connection to "))


def messages(capture: LogCapture, text: str) -> list[str]:
    """
    The formatted log messages containing C{text}.
    """
    return [m for m in (formatEvent(e) for e in capture.events) if text in m]


# Unit tests


class NameAndValueTests(SynchronousTestCase):
    """
    L{validateName}, L{validateValue}, L{normalise} and L{isOn}.
    """

    def test_goodNames(self) -> None:
        """
        Letters, digits, C{_ - . :}, 1 to 128 characters.
        """
        for name in ("RECENT", "a", "new_ui-2.beta:eu", "x" * 128, "007"):
            self.assertEqual(validateName(name), name)
            self.assertTrue(NAME_RE.fullmatch(name))

    def test_badNames(self) -> None:
        """
        Anything else is refused, and the message says why.
        """
        error = self.assertRaises(FlagError, validateName, "a b")
        self.assertEqual(
            str(error),
            "invalid flag name 'a b': use letters, digits, _ - . : "
            "(at most 128 characters)",
        )
        for name in ("", "x" * 129, "é", "RECENT\n", "a/b", "a*", "a\x00"):
            self.assertRaises(FlagError, validateName, name)
        self.assertRaises(FlagError, validateName, cast(Any, 7))

    def test_values(self) -> None:
        """
        Any text of at most 1024 bytes of UTF-8, counted in bytes.
        """
        for value in ("ON", "", "007", "x" * MAX_VALUE, "é" * 512, "a\nb"):
            self.assertEqual(validateValue(value), value)
        error = self.assertRaises(FlagError, validateValue, "x" * 2000)
        self.assertEqual(str(error), "value is 2000 bytes; at most 1024")
        error = self.assertRaises(FlagError, validateValue, "é" * 513)
        self.assertEqual(str(error), "value is 1026 bytes; at most 1024")
        self.assertRaises(FlagError, validateValue, "\udc80")
        self.assertRaises(FlagError, validateValue, cast(Any, 1))

    def test_normalise(self) -> None:
        """
        on/true/1/yes and off/false/0/no, in any case, become ON and OFF.
        """
        for word in ("on", "ON", "True", "1", "yes", " On "):
            self.assertEqual(normalise(word), "ON")
        for word in ("off", "OFF", "false", "0", "No"):
            self.assertEqual(normalise(word), "OFF")
        error = self.assertRaises(FlagError, normalise, "maybe")
        self.assertEqual(
            str(error), "'maybe' is not on or off (use --raw to store any value)"
        )

    def test_isOn(self) -> None:
        """
        Exactly C{"ON"} is on, as the application reads it.
        """
        self.assertTrue(isOn("ON"))
        for value in ("on", "OFF", "1", "", " ON", None):
            self.assertFalse(isOn(value))

    def test_errors(self) -> None:
        """
        L{NoRedis} is a L{FlagError} naming the option to give.
        """
        error = NoRedis("blue")
        self.assertIsInstance(error, FlagError)
        self.assertIsInstance(error, ValueError)
        self.assertEqual(
            str(error), "blue has no Redis (start bluegreen with --blue-redis URL)"
        )

    def test_changeAsJSON(self) -> None:
        """
        L{FlagChange.asJSON} has every field.
        """
        change = FlagChange(12.5, "blue", "RECENT", None, "ON", "alice")
        self.assertEqual(
            change.asJSON(),
            {
                "when": 12.5,
                "env": "blue",
                "flag": "RECENT",
                "old": None,
                "new": "ON",
                "who": "alice",
            },
        )
        json.dumps(change.asJSON())

    def test_describeFailure(self) -> None:
        """
        Connection failures are described in a few words.
        """
        self.assertEqual(
            describeRedisFailure(Failure(ConnectionRefusedError()), 1),
            "connection refused",
        )
        self.assertEqual(
            describeRedisFailure(ConnectError(osError=2), 1), "no such socket"
        )
        from twisted.internet.defer import TimeoutError as DeferredTimeout

        self.assertEqual(
            describeRedisFailure(DeferredTimeout(), 0.5), "timeout after 0.5 s"
        )


class RedisTargetTests(SynchronousTestCase):
    """
    L{RedisTarget.parse} and L{RedisTarget.describe}.
    """

    def test_tcp(self) -> None:
        """
        C{redis://host:port/db}.
        """
        target = RedisTarget.parse("redis://127.0.0.1:6380/2")
        self.assertEqual(
            (target.scheme, target.host, target.port, target.db, target.password),
            ("redis", "127.0.0.1", 6380, 2, None),
        )
        self.assertFalse(target.tls)
        self.assertEqual(target.describe(), "redis://127.0.0.1:6380/2")

    def test_defaults(self) -> None:
        """
        Port 6379 and database 0 when left out.
        """
        target = RedisTarget.parse("redis://redis.example")
        self.assertEqual(target.describe(), "redis://redis.example:6379/0")
        self.assertEqual(RedisTarget.parse("redis://h:1/").describe(), "redis://h:1/0")

    def test_password(self) -> None:
        """
        A password (and user) in the URL is used, never shown; one given
        separately applies to URLs without one.
        """
        target = RedisTarget.parse("redis://alice:s%40cret@h:6380/0", "other")
        self.assertEqual((target.username, target.password), ("alice", "s@cret"))
        self.assertEqual(target.describe(), "redis://alice@h:6380/0")
        self.assertNotIn("cret", repr(target))
        target = RedisTarget.parse("redis://:pw@h:6380/0")
        self.assertEqual((target.username, target.password), (None, "pw"))
        target = RedisTarget.parse("redis://h:6380/0", "fromfile")
        self.assertEqual(target.password, "fromfile")
        self.assertEqual(target.describe(), "redis://h:6380/0")

    def test_tls(self) -> None:
        """
        C{rediss://} is TLS.
        """
        target = RedisTarget.parse("rediss://redis.example:6380/1")
        self.assertTrue(target.tls)
        self.assertEqual(target.describe(), "rediss://redis.example:6380/1")

    def test_ipv6(self) -> None:
        """
        IPv6 addresses are in brackets.
        """
        target = RedisTarget.parse("redis://[::1]:6380/0")
        self.assertEqual(target.host, "::1")
        self.assertEqual(target.describe(), "redis://[::1]:6380/0")

    def test_unix(self) -> None:
        """
        C{unix:///path?db=N}.
        """
        target = RedisTarget.parse("unix:///run/redis/r.sock?db=3")
        self.assertEqual(
            (target.scheme, target.path, target.db), ("unix", "/run/redis/r.sock", 3)
        )
        self.assertEqual(target.describe(), "unix:///run/redis/r.sock?db=3")
        self.assertEqual(RedisTarget.parse("unix:///r.sock").db, 0)
        target = RedisTarget.parse("unix://:pw@/r.sock?db=1")
        self.assertEqual(target.password, "pw")
        self.assertEqual(target.describe(), "unix:///r.sock?db=1")

    def test_bad(self) -> None:
        """
        Anything else is refused with a clear message, without the password.
        """
        cases = {
            "http://h:1/0": "is not a Redis URL: use redis://[user:password@]"
            "host:port/db, rediss:// (TLS) or unix:///path?db=0",
            "redis://h:99999/0": "is not a valid URL",
            "redis://h:0/0": "is not a TCP port number",
            "redis://h:1/x": "'x' is not a database number",
            "redis://h:1/0?db=1": "unexpected query",
            "redis:///0": "has no host",
            "unix://r.sock": "absolute path",
            "unix:///r.sock?x=1": "unknown parameter 'x'",
            "unix:///r.sock?db=a": "is not a database number",
            "redis://h:1/0#f": "no #fragment",
            "6380": "is not a Redis URL",
        }
        for url, expected in cases.items():
            error = self.assertRaises(ValueError, RedisTarget.parse, url)
            self.assertIn(expected, str(error), url)
        error = self.assertRaises(
            ValueError, RedisTarget.parse, "http://alice:hunter2@h:1/0"
        )
        self.assertNotIn("hunter2", str(error))
        self.assertIn("'http://alice:***@h:1/0'", str(error))
        error = self.assertRaises(
            ValueError, RedisTarget.parse, "redis://:hunter2@h:1/x"
        )
        self.assertNotIn("hunter2", str(error))
        for url in ("redis://:hun/ter2@h:1/0", "redis://u:hun@ter2@h:1/x"):
            error = self.assertRaises(ValueError, RedisTarget.parse, url)
            self.assertNotIn("ter2", str(error))

    def test_passwordFile(self) -> None:
        """
        L{readPasswordFile} strips the content; a missing or empty file is
        refused.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("  s3cret\n")
        self.assertEqual(readPasswordFile(path), "s3cret")
        with open(path, "w") as f:
            f.write("\n")
        self.assertIn(
            "is empty", str(self.assertRaises(ValueError, readPasswordFile, path))
        )
        self.assertIn(
            "No such file",
            str(self.assertRaises(ValueError, readPasswordFile, path + ".missing")),
        )


class OptionsTests(SynchronousTestCase):
    """
    The flag options of C{twistd bluegreen}.
    """

    def parse(self, *args: str) -> Options:
        """
        Parse C{args} after the required options.
        """
        options = Options()
        options.parseOptions([*BASE, "--admin", "none", *args])
        return options

    def test_defaults(self) -> None:
        """
        Without a Redis there are no flags, which is not an error.
        """
        options = self.parse()
        self.assertEqual(options.config.redisTargets, {"green": None, "blue": None})
        self.assertEqual(list(options.config.flagNames), ["RECENT"])
        self.assertEqual(options.config.redisTimeout, 1.0)
        self.assertEqual(options.config.flagRefresh, 30.0)
        service = makeService(options)
        assert isinstance(service, ProxyService)
        self.assertIsNone(service.flags)
        self.assertIsNone(service.resource.stampFlags)

    def test_redis(self) -> None:
        """
        C{--blue-redis} alone gives blue flags (green has none); the service
        is a child of the proxy service.
        """
        options = self.parse(
            "--blue-redis",
            "redis://127.0.0.1:6380/0",
            "--flag",
            "NEW_UI",
            "--flag",
            "beta.eu",
            "--flag",
            "NEW_UI",
            "--redis-timeout",
            "0.5",
            "--flag-refresh",
            "10",
            "--stamp-flags",
        )
        self.assertEqual(list(options.config.flagNames), ["NEW_UI", "beta.eu"])
        self.assertEqual(
            options.config.redisTargets["blue"],
            RedisTarget.parse("redis://127.0.0.1:6380/0"),
        )
        service = makeService(options)
        assert isinstance(service, ProxyService)
        flags = service.flags
        assert flags is not None
        self.assertIn(flags, list(service))
        self.assertEqual(list(flags.stores), ["blue"])
        self.assertEqual(flags.environments, ("green", "blue"))
        store = flags.stores["blue"]
        self.assertEqual((store.timeout, store.refresh), (0.5, 10.0))
        self.assertEqual(store.configured, ("NEW_UI", "beta.eu"))
        self.assertEqual(service.resource.stampFlags, flags.flagsFor)

    def test_passwordFile(self) -> None:
        """
        C{--redis-password-file} applies to URLs without a password.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("s3cret\n")
        options = self.parse(
            "--green-redis",
            "redis://127.0.0.1:6380/0",
            "--blue-redis",
            "redis://:own@127.0.0.1:6381/0",
            "--redis-password-file",
            path,
        )
        green, blue = (options.config.redisTargets[c] for c in ("green", "blue"))
        assert green is not None and blue is not None
        self.assertEqual(green.password, "s3cret")
        self.assertEqual(blue.password, "own")

    def test_errors(self) -> None:
        """
        Bad values are refused, naming the option.
        """
        cases = [
            (
                ["--blue-redis", "http://h:1"],
                "--blue-redis: 'http://h:1' is not a Redis URL",
            ),
            (["--green-redis", "redis://h:1/x"], "--green-redis: 'redis://h:1/x': 'x'"),
            (["--flag", "a b"], "--flag: invalid flag name 'a b'"),
            (["--redis-timeout", "0"], "--redis-timeout: '0' is not a positive"),
            (["--flag-refresh", "x"], "--flag-refresh: 'x' is not a positive"),
            (["--stamp-flags"], "--stamp-flags: no environment has a Redis"),
            (
                ["--redis-password-file", "/nonexistent/pw"],
                "--redis-password-file: cannot read '/nonexistent/pw'",
            ),
        ]
        for args, expected in cases:
            error = self.assertRaises(usage.UsageError, self.parse, *args)
            self.assertTrue(str(error).startswith(expected), (args, str(error)))


class _Request:
    """
    Just enough of a request for L{ProxyResource.buildHead}.
    """

    method = b"GET"
    uri = b"/x"
    body = None

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        """
        @param headers: The request's header lines.
        """
        self.requestHeaders = Headers()
        for name, value in headers:
            self.requestHeaders.addRawHeader(name, value)

    def getClientAddress(self) -> None:
        """
        No client address.
        """
        return None

    def isSecure(self) -> bool:
        """
        Plain HTTP.
        """
        return False


class StampTests(SynchronousTestCase):
    """
    L{ProxyResource.buildHead} with C{stampFlags} (C{--stamp-flags}).
    """

    def head(self, stamp: Any, headers: list[tuple[bytes, bytes]]) -> bytes:
        """
        The upstream head for a request with C{headers}, going to blue.
        """
        from bluegreen.environment import Environment

        resource = ProxyResource(cast(Any, None), {}, Clock(), stampFlags=stamp)
        blue = Environment.fromURL("blue", "http://127.0.0.1:5001")
        return resource.buildHead(cast(Any, _Request(headers)), blue)

    def test_stamped(self) -> None:
        """
        The environment's flags are added; the client's X-Feature-* headers
        are dropped (they could be forged); names with C{:} are left out.
        """
        asked = []

        def flags(env: str) -> dict[str, str]:
            """
            The flags of C{env}, recorded.
            """
            asked.append(env)
            return {"RECENT": "on", "NEW_UI": "off", "a:b": "on"}

        head = self.head(
            flags,
            [
                (b"Host", b"app"),
                (b"X-Feature-RECENT", b"off"),
                (b"x-feature-admin", b"on"),
                (b"X-Other", b"1"),
            ],
        )
        self.assertEqual(asked, ["blue"])
        lines = head.split(b"\r\n")
        self.assertIn(b"X-Feature-RECENT: on", lines)
        self.assertIn(b"X-Feature-NEW_UI: off", lines)
        self.assertIn(b"X-Other: 1", lines)
        self.assertNotIn(b"X-Feature-RECENT: off", lines)
        self.assertNotIn(b"admin", head.lower())
        self.assertNotIn(b"a:b", head)
        self.assertTrue(head.endswith(b"\r\n\r\n"))

    def test_notStamped(self) -> None:
        """
        Without C{stampFlags} the client's headers pass unchanged.
        """
        head = self.head(None, [(b"X-Feature-RECENT", b"off")])
        self.assertIn(b"x-feature-recent: off", head.lower().split(b"\r\n"))


# Integration tests


class _RedisTestCase(TestCase):
    """
    Helpers for tests against real Redis servers.
    """

    timeout = 60

    def setUp(self) -> None:
        """
        Fail the test on any error logged.
        """
        self.logs = failOnLoggedErrors(self)

    async def store(
        self,
        redis: RedisProcess | str,
        env: str = "blue",
        password: str | None = None,
        **kwargs: Any,
    ) -> FlagStore:
        """
        A started L{FlagStore} on C{redis} (a server or a URL), stopped when
        the test ends.
        """
        url = redis if isinstance(redis, str) else redis.url
        store = FlagStore(env, RedisTarget.parse(url, password), reactor, **kwargs)
        self.addCleanup(store.stop)
        await store.start()
        return store

    async def service(
        self, targets: dict[str, str | None], **kwargs: Any
    ) -> FlagService:
        """
        A started L{FlagService}, stopped when the test ends.
        """
        service = FlagService(
            reactor,
            {
                env: None if url is None else RedisTarget.parse(url)
                for env, url in targets.items()
            },
            **kwargs,
        )
        service.startService()
        self.addCleanup(service.stopService)
        for store in service.stores.values():
            await store.start()
        return service


class StoreTests(_RedisTestCase):
    """
    L{FlagStore} against a real Redis.
    """

    async def test_setGetUnset(self) -> None:
        """
        A flag is a plain string key, exactly as the app reads it; the name
        is registered, the change recorded and published.
        """
        redis = await startRedis(self)
        store = await self.store(redis)
        self.assertTrue(store.connected)
        self.assertEqual(store.view("RECENT"), FlagView(None, False, False))
        change = await store.set("RECENT", "ON", "alice")
        self.assertEqual(
            (change.env, change.flag, change.old, change.new, change.who),
            ("blue", "RECENT", None, "ON", "alice"),
        )
        self.assertEqual(await redis.cli("GET", "RECENT"), "ON")
        self.assertEqual(await redis.cli("TYPE", "RECENT"), "string")
        self.assertEqual(await redis.cli("SMEMBERS", REGISTRY), "RECENT")
        self.assertEqual(await store.get("RECENT"), "ON")
        self.assertEqual(store.view("RECENT"), FlagView("ON", True, False))
        self.assertEqual(store.cached(), {"RECENT": "ON"})

        change = await store.set("RECENT", "OFF", "bob")
        self.assertEqual((change.old, change.new), ("ON", "OFF"))
        self.assertFalse(store.view("RECENT").on)

        change = await store.unset("RECENT", "carol")
        self.assertEqual((change.old, change.new), ("OFF", None))
        self.assertEqual(await redis.cli("EXISTS", "RECENT"), "0")
        self.assertIsNone(await store.get("RECENT"))
        self.assertEqual(store.view("RECENT"), FlagView(None, False, False))
        self.assertEqual(await redis.cli("SMEMBERS", REGISTRY), "RECENT")
        self.assertEqual(store.cached(), {})

        history = await store.history()
        self.assertEqual(
            [(c.old, c.new, c.who) for c in history],
            [("OFF", None, "carol"), ("ON", "OFF", "bob"), (None, "ON", "alice")],
        )
        entry = json.loads(await redis.cli("LINDEX", HISTORY, "2"))
        self.assertEqual(
            {k: entry[k] for k in ("env", "flag", "old", "new", "who")},
            {"env": "blue", "flag": "RECENT", "old": None, "new": "ON", "who": "alice"},
        )

    async def test_otherFlags(self) -> None:
        """
        Any valid name can be set; it joins the flags and survives as a
        name after unset.
        """
        redis = await startRedis(self)
        store = await self.store(redis)
        await store.set("new_ui-2.beta:eu", "yes please", "alice")
        self.assertEqual(await redis.cli("GET", "new_ui-2.beta:eu"), "yes please")
        self.assertEqual(store.names, ["RECENT", "new_ui-2.beta:eu"])
        await store.unset("new_ui-2.beta:eu", "alice")
        self.assertEqual(store.names, ["RECENT", "new_ui-2.beta:eu"])

    async def test_numericLookingValuesStayStrings(self) -> None:
        """
        Values are never converted: C{"007"} stays C{"007"}, C{"1.50"}
        stays C{"1.50"}.
        """
        redis = await startRedis(self)
        store = await self.store(redis)
        change = await store.set("RECENT", "007", "alice")
        self.assertEqual(await redis.cli("GET", "RECENT"), "007")
        self.assertEqual(await store.get("RECENT"), "007")
        self.assertEqual(store.view("RECENT").value, "007")
        await redis.cli("SET", "RECENT", "1.50")
        await waitFor(lambda: store.view("RECENT").value == "1.50", "1.50")
        change = await store.set("RECENT", "1", "bob")
        self.assertEqual(change.old, "1.50")
        self.assertEqual(store.view("RECENT").value, "1")
        self.assertFalse(store.view("RECENT").on)
        history = await store.history()
        self.assertEqual(history[0].new, "1")
        self.assertEqual(history[1].new, "007")

    async def test_invalidInput(self) -> None:
        """
        Invalid names and values are refused before anything is written.
        """
        redis = await startRedis(self)
        store = await self.store(redis)
        error = await raisesAsync(FlagError, store.set("a b", "ON", "alice"))
        self.assertEqual(
            str(error),
            "invalid flag name 'a b': use letters, digits, _ - . : "
            "(at most 128 characters)",
        )
        error = await raisesAsync(FlagError, store.set("RECENT", "x" * 2000, "alice"))
        self.assertEqual(str(error), "value is 2000 bytes; at most 1024")
        await raisesAsync(FlagError, store.unset("", "alice"))
        await raisesAsync(FlagError, store.get("x" * 129))
        await raisesAsync(FlagError, store.history(0))
        self.assertEqual(await redis.cli("DBSIZE"), "0")

    async def test_wrongType(self) -> None:
        """
        A key that is not a string is left alone.
        """
        redis = await startRedis(self)
        store = await self.store(redis)
        await redis.cli("RPUSH", "RECENT", "x")
        error = await raisesAsync(FlagError, store.set("RECENT", "ON", "alice"))
        self.assertEqual(
            str(error), "RECENT in Redis for blue is not a string key; not changed"
        )
        self.assertEqual(await redis.cli("LRANGE", "RECENT", "0", "-1"), "x")
        self.assertEqual(await redis.cli("EXISTS", HISTORY), "0")

    async def test_historyCapped(self) -> None:
        """
        The history keeps the newest 1000 changes, newest first.
        """
        redis = await startRedis(self)
        store = await self.store(redis)
        for i in range(HISTORY_LIMIT + 5):
            await store.set("RECENT", str(i), f"user{i}")
        self.assertEqual(await redis.cli("LLEN", HISTORY), str(HISTORY_LIMIT))
        history = await store.history(HISTORY_LIMIT)
        self.assertEqual(len(history), HISTORY_LIMIT)
        self.assertEqual(history[0].new, str(HISTORY_LIMIT + 4))
        self.assertEqual(history[0].old, str(HISTORY_LIMIT + 3))
        self.assertEqual(history[-1].new, "5")
        self.assertEqual(
            [c.new for c in await store.history(3)], ["1004", "1003", "1002"]
        )
        times = [c.when for c in history]
        self.assertEqual(times, sorted(times, reverse=True))

    async def test_outsideChangeSeenWithinOneSecond(self) -> None:
        """
        A C{redis-cli SET} shows in the cache at once (keyspace
        notifications, turned on by the store and logged), and observers are
        told, once.  The store here never polls nor refreshes, so only a
        notification can have told it.
        """
        redis = await startRedis(self)
        store = await self.store(redis, refresh=3600, pollInterval=3600)
        self.assertTrue(store.watching)
        self.assertEqual(
            messages(self.logs, "turned on keyspace notifications"),
            [
                f"Redis for blue at {redis.url}: turned on keyspace notifications "
                "(notify-keyspace-events 'K$gx', was '') so that changes made "
                "outside bluegreen show at once"
            ],
        )
        changes: list[FlagChange] = []
        store.subscribe(changes.append)
        await redis.cli("SET", "RECENT", "ON")
        await waitFor(lambda: store.view("RECENT").on, "RECENT on")
        await barrier(redis, store)
        self.assertEqual(
            [(c.flag, c.old, c.new, c.who) for c in flagChanges(changes)],
            [("RECENT", None, "ON", OUTSIDE)],
        )
        await redis.cli("DEL", "RECENT")
        await waitFor(lambda: store.view("RECENT").value is None, "RECENT gone")
        await redis.cli("SET", "RECENT", "ON", "PX", "100")
        await waitFor(lambda: store.view("RECENT").on, "RECENT on")
        await waitFor(lambda: store.view("RECENT").value is None, "RECENT expired")

    async def test_notificationsAlreadyOn(self) -> None:
        """
        When Redis already sends the events, CONFIG is left alone.
        """
        redis = await startRedis(self, extra=("--notify-keyspace-events", "KA"))
        store = await self.store(redis)
        self.assertTrue(store.watching)
        self.assertEqual(messages(self.logs, "keyspace notifications"), [])
        self.assertEqual(
            (await redis.cli("CONFIG", "GET", "notify-keyspace-events")).split("\n")[1],
            "AK",
        )
        await redis.cli("SET", "RECENT", "ON")
        await waitFor(lambda: store.view("RECENT").on, "RECENT on")

    async def test_pollingWithoutConfig(self) -> None:
        """
        If CONFIG is not allowed, the store says so once and reads the flags
        every second instead.
        """
        redis = await startRedis(self, extra=("--rename-command", "CONFIG", ""))
        store = await self.store(redis)
        self.assertTrue(store.connected)
        self.assertFalse(store.watching)
        await redis.cli("SET", "RECENT", "ON")
        await waitFor(lambda: store.view("RECENT").on, "RECENT on (polled)")
        await redis.cli("SET", "RECENT", "OFF")
        await waitFor(lambda: not store.view("RECENT").on, "RECENT off (polled)")
        logged = messages(self.logs, "does not allow CONFIG")
        self.assertEqual(len(logged), 1)
        self.assertIn(
            f"Redis for blue at {redis.url} does not allow CONFIG (unknown command "
            "'CONFIG'",
            logged[0],
        )
        self.assertIn("the flags are read every 1 s", logged[0])

    async def test_oneShot(self) -> None:
        """
        A one-shot store (C{watch=False}, the CLI's C{--redis}) reads and
        writes without subscribing or touching CONFIG.
        """
        redis = await startRedis(self)
        await redis.cli("SET", "RECENT", "ON")
        store = await self.store(redis, watch=False)
        self.assertEqual(store.view("RECENT"), FlagView("ON", True, False))
        self.assertFalse(store.watching)
        await store.set("NEW_UI", "OFF", "alice")
        self.assertEqual(await store.get("NEW_UI"), "OFF")
        self.assertEqual(
            await redis.cli("CONFIG", "GET", "notify-keyspace-events"),
            "notify-keyspace-events\n",
        )
        self.assertEqual(await redis.cli("CLIENT", "LIST", "TYPE", "pubsub"), "")
        self.assertEqual(messages(self.logs, "keyspace"), [])

    async def test_refreshSafetyNet(self) -> None:
        """
        Every C{refresh} seconds everything is read again, even a change no
        notification told of (here, one made in the registry by hand).
        """
        redis = await startRedis(self)
        store = await self.store(redis, refresh=0.3)
        await redis.cli("SET", "HANDMADE", "ON")
        await redis.cli("SADD", REGISTRY, "HANDMADE")
        await waitFor(lambda: store.view("HANDMADE").on, "HANDMADE read")
        self.assertIn("HANDMADE", store.names)

    async def test_otherBluegreenSeesChange(self) -> None:
        """
        A change made through one bluegreen shows in another within 1 s,
        with who made it; each tells its observers once.
        """
        redis = await startRedis(self)
        first = await self.service({"green": None, "blue": redis.url})
        second = await self.service({"green": None, "blue": redis.url})
        seenFirst: list[FlagChange] = []
        seenSecond: list[FlagChange] = []
        first.subscribe(seenFirst.append)
        second.subscribe(seenSecond.append)
        change = await first.set("blue", "RECENT", "ON", "alice")
        await waitFor(lambda: second.view("blue", "RECENT").on, "second sees it")
        await barrier(redis, first.stores["blue"], second.stores["blue"])
        self.assertEqual(flagChanges(seenFirst), [change])
        self.assertEqual(flagChanges(seenSecond), [change])
        change = await second.unset("blue", "RECENT", "bob")
        await waitFor(lambda: not first.view("blue", "RECENT").on, "first sees it")
        await barrier(redis, first.stores["blue"], second.stores["blue"])
        self.assertEqual(flagChanges(seenFirst)[-1], change)
        self.assertEqual(len(flagChanges(seenFirst)), 2)

    async def test_redisKilledAndRestarted(self) -> None:
        """
        Redis killed: views are stale (the last values), writes fail at once
        with a clear message, and the outage is logged once.  Restarted:
        the store reconnects by itself, reads everything again, subscribes
        again (a change after the restart is seen) and says it is back.
        """
        redis = await startRedis(self)
        store = await self.store(redis)
        await store.set("RECENT", "ON", "alice")
        await store.set("OTHER", "x", "alice")
        await redis.cli("SAVE")
        await redis.kill()
        await waitFor(lambda: store.error == "connection refused", "refused")
        self.assertFalse(store.connected)
        self.assertEqual(store.view("RECENT"), FlagView("ON", True, True))
        self.assertEqual(store.view("NEVER"), FlagView(None, False, True))
        message = f"cannot reach Redis for blue at {redis.url}: connection refused"
        for _ in range(20):
            # At once: failed before the reactor runs again.
            attempt = Deferred.fromCoroutine(store.set("RECENT", "OFF", "bob"))
            error = self.failureResultOf(attempt, RedisUnavailable).value
            self.assertEqual(str(error), message)
            store.view("RECENT")
        error = await raisesAsync(RedisUnavailable, store.get("RECENT"))
        self.assertEqual(str(error), message)
        await raisesAsync(RedisUnavailable, store.history())
        # Two more attempts fail meanwhile (after the loss's wait).
        await waitFor(lambda: retries(self.logs) >= 3, "attempts")
        self.assertEqual(
            messages(self.logs, "unreachable"),
            [
                f"Redis for blue at {redis.url} is unreachable: connection "
                "refused; serving cached flags"
            ],
        )
        self.assertEqual(messages(self.logs, "reachable again"), [])

        await redis.start()
        await waitFor(lambda: store.connected, "reconnected")
        self.assertEqual(store.view("RECENT"), FlagView("ON", True, False))
        self.assertEqual(len(messages(self.logs, "reachable again")), 1)
        self.assertIn(
            f"Redis for blue at {redis.url} is reachable again after ",
            messages(self.logs, "reachable again")[0],
        )
        await waitFor(lambda: store.watching, "resubscribed")
        # The restarted Redis had notifications off again: turned back on.
        self.assertEqual(len(messages(self.logs, "turned on keyspace")), 2)
        await redis.cli("SET", "RECENT", "OFF")
        await waitFor(lambda: store.view("RECENT").value == "OFF", "seen")
        change = await store.set("RECENT", "ON", "carol")
        self.assertEqual(change.old, "OFF")
        self.assertEqual(len(messages(self.logs, "unreachable")), 1)

    async def test_restartWithoutData(self) -> None:
        """
        A Redis restarted empty: the flags it lost read as unset.
        """
        redis = await startRedis(self)
        store = await self.store(redis)
        changes: list[FlagChange] = []
        store.subscribe(changes.append)
        await store.set("RECENT", "ON", "alice")
        await redis.restart()
        await waitFor(
            lambda: store.connected and store.view("RECENT").value is None,
            "re-read",
        )
        self.assertEqual(
            [(c.old, c.new, c.who) for c in changes],
            [(None, "ON", "alice"), ("ON", None, OUTSIDE)],
        )

    async def test_downAtStart(self) -> None:
        """
        A Redis down when the store starts: flags are off and stale, writes
        fail; once it starts, the store connects by itself.
        """
        port = freePort()
        url = f"redis://127.0.0.1:{port}/0"
        store = await self.store(url)
        self.assertFalse(store.connected)
        self.assertTrue(store.stale)
        self.assertEqual(store.error, "connection refused")
        self.assertEqual(store.view("RECENT"), FlagView(None, False, True))
        error = await raisesAsync(RedisUnavailable, store.set("RECENT", "ON", "alice"))
        self.assertEqual(
            str(error), f"cannot reach Redis for blue at {url}: connection refused"
        )
        redis = RedisProcess(self)
        redis.port = port
        self.addCleanup(redis.cleanup)
        await redis.start()
        await redis.cli("SET", "RECENT", "ON")
        await waitFor(lambda: store.connected, "connected")
        self.assertEqual(store.view("RECENT"), FlagView("ON", True, False))
        self.assertEqual(len(messages(self.logs, "unreachable")), 1)

    async def test_frozenRedisTimesOut(self) -> None:
        """
        A Redis that does not answer (stopped with SIGSTOP) fails calls
        after the timeout instead of hanging; it is dropped, and found again
        once it answers.
        """
        redis = await startRedis(self)
        store = await self.store(redis, timeout=0.5)
        await store.set("RECENT", "ON", "alice")
        redis.pause()
        error = await raisesAsync(RedisUnavailable, store.set("RECENT", "OFF", "bob"))
        self.assertEqual(
            str(error),
            f"cannot reach Redis for blue at {redis.url}: timeout after 0.5 s",
        )
        self.assertEqual(store.view("RECENT"), FlagView("ON", True, True))
        await waitFor(lambda: store.error == "timeout after 0.5 s", "error")
        # The loss, then two attempts that time out: one warning.
        await waitFor(lambda: retries(self.logs) >= 3, "attempts")
        self.assertEqual(
            messages(self.logs, "unreachable"),
            [
                f"Redis for blue at {redis.url} is unreachable: timeout after "
                "0.5 s; serving cached flags"
            ],
        )
        redis.resume()
        await waitFor(lambda: store.connected, "reconnected")
        # The write that timed out had reached Redis, which made it when it
        # woke up: a timeout says nothing of whether a change was made.
        actual = await redis.cli("GET", "RECENT")
        self.assertEqual(await store.get("RECENT"), actual)
        self.assertEqual(store.view("RECENT").value, actual)
        self.assertFalse(store.stale)

    async def test_passwordInURL(self) -> None:
        """
        A password in the URL is sent with AUTH.
        """
        redis = await startRedis(self, password="s3cret")
        url = f"redis://:s3cret@127.0.0.1:{redis.port}/0"
        store = await self.store(url)
        self.assertTrue(store.connected)
        await store.set("RECENT", "ON", "alice")
        self.assertEqual(await redis.cli("GET", "RECENT"), "ON")
        await redis.cli("SET", "RECENT", "OFF")
        await waitFor(lambda: not store.view("RECENT").on, "seen")
        self.assertNotIn("s3cret", repr(store))

    async def test_passwordFile(self) -> None:
        """
        The password of C{--redis-password-file} is used for a URL without
        one.
        """
        redis = await startRedis(self, password="s3cret")
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("s3cret\n")
        options = Options()
        options.parseOptions(
            [
                *BASE,
                "--admin",
                "none",
                "--blue-redis",
                redis.url,
                "--redis-password-file",
                path,
            ]
        )
        target = options.config.redisTargets["blue"]
        assert target is not None
        store = FlagStore("blue", target, reactor)
        self.addCleanup(store.stop)
        await store.start()
        await store.set("RECENT", "ON", "alice")
        self.assertEqual(await redis.cli("GET", "RECENT"), "ON")

    async def test_wrongPassword(self) -> None:
        """
        A wrong or missing password is reported as such, without the
        password.
        """
        redis = await startRedis(self, password="s3cret")
        store = await self.store(f"redis://:wrong-pw@127.0.0.1:{redis.port}/0")
        self.assertFalse(store.connected)
        self.assertTrue(
            store.error and store.error.startswith("authentication failed (")
        )
        error = await raisesAsync(RedisUnavailable, store.set("RECENT", "ON", "alice"))
        self.assertTrue(
            str(error).startswith(
                f"cannot reach Redis for blue at {redis.url}: authentication failed ("
            ),
            str(error),
        )
        self.assertNotIn("wrong-pw", str(error))
        self.assertNotIn("wrong-pw", "".join(messages(self.logs, "")))

        bare = await self.store(redis.url, env="green")
        self.assertEqual(
            bare.error,
            "authentication required (give the password in the URL or with "
            "--redis-password-file)",
        )

    async def test_unixSocket(self) -> None:
        """
        C{unix:///path?db=N} connects over the UNIX socket.
        """
        redis = await startRedis(self, unixSocket=True)
        store = await self.store(redis.unixURL.replace("db=0", "db=2"))
        self.assertTrue(store.connected)
        await store.set("RECENT", "ON", "alice")
        self.assertEqual(await redis.cli("-n", "2", "GET", "RECENT"), "ON")
        self.assertEqual(await redis.cli("GET", "RECENT"), "")
        await redis.cli("-n", "2", "SET", "RECENT", "OFF")
        await waitFor(lambda: not store.view("RECENT").on, "seen")
        # Another database's change (and message) is not this one's.
        await redis.cli("SET", "RECENT", "ON")
        other = await self.store(redis.url, env="green")
        await other.set("RECENT", "ON", "bob")
        await barrier(redis, store, db=2)
        self.assertFalse(store.view("RECENT").on)

    async def test_missingSocket(self) -> None:
        """
        A UNIX socket that does not exist is reported as such.
        """
        store = await self.store("unix:///nonexistent/redis.sock?db=0")
        self.assertEqual(store.error, "no such socket")

    async def test_tls(self) -> None:
        """
        C{rediss://} connects with TLS, checking the certificate.
        """
        from ._backends import makeCertificates

        directory = os.path.abspath(self.mktemp())
        certificates = makeCertificates(directory, {"redis": ["127.0.0.1"]})
        pem = os.path.join(directory, "redis.pem")
        with open(pem, "wb") as f:
            f.write(certificates.servers["redis"])
        tlsPort = freePort()
        redis = await startRedis(
            self,
            extra=(
                "--tls-port",
                str(tlsPort),
                "--tls-cert-file",
                pem,
                "--tls-key-file",
                pem,
                "--tls-auth-clients",
                "no",
            ),
        )
        from bluegreen.proxy.pool import loadTrustRoot

        store = await self.store(
            f"rediss://127.0.0.1:{tlsPort}/0",
            trustRoot=loadTrustRoot(certificates.caPath),
        )
        self.assertTrue(store.connected)
        await store.set("RECENT", "ON", "alice")
        self.assertEqual(await redis.cli("GET", "RECENT"), "ON")
        untrusted = await self.store(f"rediss://127.0.0.1:{tlsPort}/0", env="green")
        self.assertFalse(untrusted.connected)
        self.assertIn("TLS error", untrusted.error or "")


class ServiceTests(_RedisTestCase):
    """
    L{FlagService}: several environments, some without a Redis.
    """

    async def test_table(self) -> None:
        """
        The table lists every environment, with or without a Redis.
        """
        redis = await startRedis(self)
        service = await self.service(
            {"green": None, "blue": redis.url}, names=("RECENT", "NEW_UI")
        )
        await service.set("blue", "RECENT", "ON", "alice")
        await service.set("blue", "EXTRA", "7", "alice")
        table = service.table()
        updated = table["environments"]["blue"].pop("updated")
        self.assertIsInstance(updated, float)
        self.assertEqual(
            table,
            {
                "environments": {
                    "green": {
                        "redis": None,
                        "connected": False,
                        "stale": False,
                        "error": None,
                        "updated": None,
                        "flags": {},
                    },
                    "blue": {
                        "redis": redis.url,
                        "connected": True,
                        "stale": False,
                        "error": None,
                        "flags": {"RECENT": "ON", "EXTRA": "7"},
                    },
                },
                "names": ["EXTRA", "NEW_UI", "RECENT"],
            },
        )
        json.dumps(service.table())
        self.assertEqual(
            service.flagsFor("blue"), {"EXTRA": "off", "NEW_UI": "off", "RECENT": "on"}
        )
        self.assertEqual(service.flagsFor("green"), {})
        self.assertEqual(service.view("blue", "RECENT"), FlagView("ON", True, False))

    async def test_errors(self) -> None:
        """
        An environment without a Redis, an unknown one, a bad name.
        """
        redis = await startRedis(self)
        service = await self.service({"green": None, "blue": redis.url})
        error = self.assertRaises(NoRedis, service.view, "green", "RECENT")
        self.assertEqual(
            str(error), "green has no Redis (start bluegreen with --green-redis URL)"
        )
        await raisesAsync(NoRedis, service.set("green", "RECENT", "ON", "a"))
        await raisesAsync(NoRedis, service.unset("green", "RECENT", "a"))
        await raisesAsync(NoRedis, service.history("green"))
        error = self.assertRaises(FlagError, service.view, "red", "RECENT")
        self.assertEqual(
            str(error), "unknown environment 'red'; expected green or blue"
        )
        await raisesAsync(FlagError, service.set("blue", "RECENT", "é" * 600, "a"))

    async def test_historyOfAll(self) -> None:
        """
        The history of every environment, merged newest first; an
        unreachable Redis is left out.
        """
        green = await startRedis(self)
        blue = await startRedis(self)
        service = await self.service({"green": green.url, "blue": blue.url})
        await service.set("green", "RECENT", "ON", "a")
        await service.set("blue", "RECENT", "ON", "b")
        await service.unset("green", "RECENT", "c")
        history = await service.history(None)
        self.assertEqual(
            [(c.env, c.who) for c in history],
            [("green", "c"), ("blue", "b"), ("green", "a")],
        )
        self.assertEqual(len(await service.history(None, 2)), 2)
        self.assertEqual([c.who for c in await service.history("blue")], ["b"])
        await blue.kill()
        await waitFor(lambda: not service.stores["blue"].connected, "down")
        self.assertEqual([c.who for c in await service.history(None)], ["c", "a"])
        await green.kill()
        await waitFor(lambda: not service.stores["green"].connected, "down")
        await raisesAsync(RedisUnavailable, service.history(None))


class ProxyWithFlagsTests(_RedisTestCase):
    """
    The proxy with C{--stamp-flags}: it never waits on Redis.
    """

    async def test_stampedAndUnaffectedByOutage(self) -> None:
        """
        Requests carry the live environment's flags; with Redis down they
        are still answered at once, stamped from the cache.
        """
        self.logs = captureLogs(self)
        redis = await startRedis(self)
        _, proxy = startProxyFor(
            self,
            echo("green"),
            "--green-redis",
            redis.url,
            "--stamp-flags",
            "--flag",
            "RECENT",
            "--flag",
            "NEW_UI",
        )
        flags = proxy.service.flags
        assert flags is not None
        await flags.stores["green"].start()
        await flags.set("green", "RECENT", "ON", "alice")

        async def stamped(*headers: tuple[bytes, bytes]) -> dict[str, str]:
            """
            One request through the proxy: the X-Feature-* headers the
            backend received.
            """
            response = await fetch(self, proxy.port, b"GET", b"/", headers)
            self.assertEqual(response.code, 200)
            return {
                name.lower(): value
                for name, value in response.json()["headers"]
                if name.lower().startswith("x-feature-")
            }

        expected = {"x-feature-new_ui": "off", "x-feature-recent": "on"}
        self.assertEqual(await stamped(), expected)
        self.assertEqual(
            await stamped((b"X-Feature-RECENT", b"off"), (b"X-Feature-ADMIN", b"on")),
            expected,
        )
        await redis.kill()
        await waitFor(
            lambda: flags.stores["green"].error == "connection refused", "down"
        )
        # Stamped from the cache: flagsFor answers now, it never waits.
        self.assertEqual(flags.flagsFor("green"), {"NEW_UI": "off", "RECENT": "on"})
        for _ in range(5):
            self.assertEqual(await stamped(), expected)
        proxy.controller.switch("blue", "test", force=True)
        self.assertEqual(
            await stamped(
                (b"X-Feature-RECENT", b"on"),
            ),
            {},
        )


class ManholeFlagTests(_RedisTestCase):
    """
    The manhole's C{setFlag}/C{unsetFlag} change flags as the logged-in user.
    """

    async def test_setAndUnset(self) -> None:
        """
        C{setFlag} stores the value in the environment's Redis and records
        C{"manhole <user>"}; C{unsetFlag} removes it; both are in C{help()}.
        """
        from bluegreen.manhole.namespace import LiveObjects
        from bluegreen.manhole.service import Manhole, ManholeSettings

        redis = await startRedis(self)
        options = Options()
        options.parseOptions(
            [
                "--green",
                "http://127.0.0.1:1",
                "--blue",
                "http://127.0.0.1:2",
                "--admin",
                "none",
                "--port",
                "tcp:0:interface=127.0.0.1",
                "--blue-redis",
                redis.url,
            ]
        )
        service = makeService(options)
        assert isinstance(service, ProxyService) and service.flags is not None
        flags = service.flags
        flags.startService()
        self.addCleanup(flags.stopService)
        for store in flags.stores.values():
            await store.start()
        manhole = Manhole(
            ManholeSettings(None, None, None, None, ""),
            LiveObjects(
                service.controller,
                service.health,
                service.resource,
                service.pools,
                service,
                flags,
            ),
            _reactor,
        )
        namespace = manhole.namespaceFor("alice")
        self.assertIn("setFlag(env, name, value)", str(namespace["help"]()))
        change = await namespace["setFlag"]("blue", "RECENT", "ON")
        self.assertEqual((change.new, change.who), ("ON", "manhole alice"))
        self.assertEqual(await redis.cli("GET", "RECENT"), "ON")
        change = await namespace["unsetFlag"]("blue", "RECENT")
        self.assertEqual((change.old, change.new), ("ON", None))
        self.assertEqual(await redis.cli("EXISTS", "RECENT"), "0")
