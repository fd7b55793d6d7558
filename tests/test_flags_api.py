# -*- test-case-name: tests.test_flags_api -*-
"""
Tests for L{bluegreen.flags.api}: the feature flag endpoints of the admin
API, served by a real service (built by L{bluegreen.service.tap.makeService}) with a
real L{bluegreen.flags.service.FlagService} in front of real C{redis-server}
processes, and the flags in the status, the metrics and the manhole.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

from attrs import define
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from bluegreen.flags.model import MAX_VALUE
from bluegreen.flags.target import RedisTarget
from tests._util import PATIENCE, waitFor

from ._admin import Answer, Running, call, captureEvents, globalReactor, startService
from ._redis import startRedis

#: The admin token of the services that have one.
TOKEN = "fl4gs-t0ken"


@define
class Flagged:
    """
    A running service with a Redis for some environments.

    @ivar running: The service and its admin API.
    @ivar redis: The Redis of each environment that has one.
    """

    running: Running
    redis: dict[str, Any]

    @property
    def base(self) -> str:
        """
        The admin API's base URL.
        """
        return self.running.base

    def url(self, name: str, query: str = "") -> str:
        """
        @return: The URL of flag C{name} (quoted), with C{query}.
        """
        return f"{self.base}/api/flags/{quote(name, safe='')}{query}"


async def startFlagged(
    testCase: TestCase,
    *extra: str,
    green: bool = False,
    blue: bool = True,
    token: str | None = None,
) -> Flagged:
    """
    Start a Redis for each environment asked for, and a service using
    them; wait until it has read every one.

    @param green: Give GREEN a Redis.
    @param blue: Give BLUE a Redis.
    @param token: Guard the admin API with this token.
    """
    redis: dict[str, Any] = {}
    args: list[str] = []
    for name, wanted in (("green", green), ("blue", blue)):
        if wanted:
            redis[name] = await startRedis(testCase)
            args += [f"--{name}-redis", redis[name].url]
    running = await startService(testCase, *args, *extra, token=token)
    flagged = Flagged(running, redis)
    await waitFor(
        lambda: all(
            info["connected"]
            for name, info in table(flagged)["environments"].items()
            if name in redis
        ),
        "the flag service to connect",
    )
    return flagged


def table(flagged: Flagged) -> dict[str, Any]:
    """
    @return: The flag service's table, straight from the service.
    """
    flags = flagged.running.service.flags
    assert flags is not None
    result: dict[str, Any] = flags.table()
    return result


async def put(flagged: Flagged, name: str, body: Any, token: str | None = None) -> Any:
    """
    C{PUT /api/flags/{name}} with a JSON body.
    """
    headers = {} if token is None else {b"authorization": [f"Bearer {token}".encode()]}
    return await call(flagged.url(name), "PUT", headers=headers, payload=body)


async def delete(
    flagged: Flagged, name: str, query: str = "?env=blue", token: str | None = None
) -> Any:
    """
    C{DELETE /api/flags/{name}?env=...}.
    """
    headers = {} if token is None else {b"authorization": [f"Bearer {token}".encode()]}
    return await call(flagged.url(name, query), "DELETE", headers=headers)


class TableTests(TestCase):
    """
    C{GET /api/flags} and C{GET /api/flags/{name}}.
    """

    async def test_table(self) -> None:
        """
        The table has every environment: those with a Redis say where it
        is, that it is connected and what is set; the others have none.
        """
        flagged = await startFlagged(self)
        await flagged.redis["blue"].cli("SET", "RECENT", "ON")
        await waitFor(
            lambda: table(flagged)["environments"]["blue"]["flags"] == {"RECENT": "ON"},
            "RECENT in the cache",
        )
        answer = await call(flagged.base + "/api/flags")
        self.assertEqual(answer.code, 200)
        body = answer.json
        self.assertEqual(body, table(flagged))
        self.assertEqual(list(body["environments"]), ["green", "blue"])
        blue = body["environments"]["blue"]
        self.assertEqual(
            (blue["redis"], blue["connected"], blue["stale"], blue["flags"]),
            (
                RedisTarget.parse(flagged.redis["blue"].url).describe(),
                True,
                False,
                {"RECENT": "ON"},
            ),
        )
        green = body["environments"]["green"]
        self.assertEqual((green["redis"], green["flags"]), (None, {}))
        self.assertIn("RECENT", body["names"])

    async def test_status(self) -> None:
        """
        C{GET /api/status} has the table as its C{flags} section.
        """
        flagged = await startFlagged(self)
        status = (await call(flagged.base + "/api/status")).json
        self.assertEqual(status["flags"], table(flagged))

    async def test_one(self) -> None:
        """
        C{GET /api/flags/{name}} gives the flag's value in each environment
        with a Redis (C{None} if not set), or in C{?env=}.
        """
        flagged = await startFlagged(self, green=True)
        await put(flagged, "RECENT", {"env": "blue", "value": "ON"})
        answer = await call(flagged.url("RECENT"))
        self.assertEqual(
            answer.json,
            {
                "flag": "RECENT",
                "environments": {
                    "green": {"value": None, "on": False, "stale": False},
                    "blue": {"value": "ON", "on": True, "stale": False},
                },
            },
        )
        answer = await call(flagged.url("RECENT", "?env=blue"))
        self.assertEqual(
            answer.json["environments"],
            {"blue": {"value": "ON", "on": True, "stale": False}},
        )

    async def test_oneNeverRegistered(self) -> None:
        """
        C{GET /api/flags/{name}} reads the key from Redis, also one
        bluegreen never wrote nor registered (set with C{redis-cli}), and
        gives its value unchanged; from the cache, stale, with Redis down.
        """
        flagged = await startFlagged(self)
        redis = flagged.redis["blue"]
        await redis.cli("SET", "FOO", "007")
        answer = await call(flagged.url("FOO"))
        self.assertEqual(
            answer.json,
            {
                "flag": "FOO",
                "environments": {"blue": {"value": "007", "on": False, "stale": False}},
            },
        )
        self.assertNotIn("FOO", table(flagged)["names"])
        await redis.kill()
        await waitFor(
            lambda: table(flagged)["environments"]["blue"]["stale"], "stale values"
        )
        answer = await call(flagged.url("FOO", "?env=blue"))
        self.assertEqual(
            answer.json["environments"],
            {"blue": {"value": None, "on": False, "stale": True}},
        )

    async def test_oneNoRedis(self) -> None:
        """
        Without C{?env=}, environments without a Redis are left out; asked
        for by name, one is a 409 saying so.
        """
        flagged = await startFlagged(self)
        answer = await call(flagged.url("RECENT"))
        self.assertEqual(list(answer.json["environments"]), ["blue"])
        answer = await call(flagged.url("RECENT", "?env=green"))
        self.assertEqual(
            (answer.code, answer.error),
            (409, "green has no Redis (start bluegreen with --green-redis URL)"),
        )

    async def test_badQuery(self) -> None:
        """
        Unknown query parameters, unknown environments and invalid names are
        400s with the reason.
        """
        flagged = await startFlagged(self)
        answer = await call(flagged.base + "/api/flags?env=blue")
        self.assertEqual(
            (answer.code, answer.error),
            (400, "unknown query parameter 'env' (expected: none)"),
        )
        answer = await call(flagged.url("RECENT", "?env=red"))
        self.assertEqual(
            (answer.code, answer.error),
            (400, "unknown environment 'red'; expected green or blue"),
        )
        answer = await call(flagged.url("RECENT", "?env=blue&env=green"))
        self.assertEqual(
            (answer.code, answer.error),
            (400, "query parameter 'env' given more than once"),
        )
        answer = await call(flagged.url("no spaces"))
        self.assertEqual(answer.code, 400)
        self.assertIn("no spaces", answer.error)

    async def test_noFlagService(self) -> None:
        """
        Without any Redis, the endpoints still answer: the table says no
        environment has one, and a change is a 409 saying so.
        """
        running = await startService(self)
        self.assertIsNone(running.service.flags)
        answer = await call(running.base + "/api/flags")
        self.assertEqual(answer.code, 200)
        self.assertEqual(
            {name: info["redis"] for name, info in answer.json["environments"].items()},
            {"green": None, "blue": None},
        )
        self.assertEqual(answer.json["names"], [])
        answer = await call(
            running.base + "/api/flags/RECENT",
            "PUT",
            payload={"env": "blue", "value": "ON"},
        )
        self.assertEqual(
            (answer.code, answer.error),
            (409, "blue has no Redis (start bluegreen with --blue-redis URL)"),
        )
        answer = await call(running.base + "/api/flags/history")
        self.assertEqual(answer.json, {"history": []})
        status = (await call(running.base + "/api/status")).json
        self.assertNotIn("flags", status)


class ChangeTests(TestCase):
    """
    C{PUT} and C{DELETE /api/flags/{name}}.
    """

    async def test_set(self) -> None:
        """
        C{PUT} stores the value as the plain string key the workshop's app
        reads (C{GET RECENT} -> C{ON}), answers with the change and the
        new table, and records who made it.
        """
        flagged = await startFlagged(self)
        events = captureEvents(self)
        answer = await put(flagged, "RECENT", {"env": "blue", "value": "ON"})
        self.assertEqual(answer.code, 200)
        change = answer.json["change"]
        self.assertEqual(
            {key: change[key] for key in ("env", "flag", "old", "new", "who")},
            {
                "env": "blue",
                "flag": "RECENT",
                "old": None,
                "new": "ON",
                "who": "admin API from 127.0.0.1",
            },
        )
        self.assertEqual(
            answer.json["flags"]["environments"]["blue"]["flags"], {"RECENT": "ON"}
        )
        self.assertEqual(await flagged.redis["blue"].cli("GET", "RECENT"), "ON")
        self.assertEqual(await flagged.redis["blue"].cli("TYPE", "RECENT"), "string")
        flags = flagged.running.service.flags
        assert flags is not None
        self.assertEqual(flags.view("blue", "RECENT").on, True)
        [logged] = [e for e in events if e.get("event") == "admin-flag"]
        self.assertEqual(
            (logged["flag"], logged["env"], logged["old"], logged["new"]),
            ("RECENT", "blue", "unset", "'ON'"),
        )

    async def test_valueAsGiven(self) -> None:
        """
        Values are stored exactly as given: not normalised, numbers kept as
        strings (C{007} stays C{007}).
        """
        flagged = await startFlagged(self)
        for value in ("on", "007", "1.50", "", "two words", "caf\u00e9"):
            answer = await put(flagged, "X", {"env": "blue", "value": value})
            self.assertEqual((answer.code, answer.json["change"]["new"]), (200, value))
            self.assertEqual(await flagged.redis["blue"].cli("GET", "X"), value)
            self.assertEqual(
                answer.json["flags"]["environments"]["blue"]["flags"]["X"], value
            )

    async def test_normalise(self) -> None:
        """
        With C{"normalise": true}, C{on}/C{true}/C{1}... become C{ON} and
        C{off}/C{false}/C{0}... C{OFF}; anything else is a 400.
        """
        flagged = await startFlagged(self)
        for value, stored in (("true", "ON"), ("1", "ON"), ("no", "OFF")):
            answer = await put(
                flagged, "RECENT", {"env": "blue", "value": value, "normalise": True}
            )
            self.assertEqual(answer.json["change"]["new"], stored)
        answer = await put(
            flagged, "RECENT", {"env": "blue", "value": "maybe", "normalise": True}
        )
        self.assertEqual(
            (answer.code, answer.error),
            (
                400,
                "'maybe' is not on or off (leave out \"normalise\" to store any "
                "value as it is)",
            ),
        )
        self.assertEqual(await flagged.redis["blue"].cli("GET", "RECENT"), "OFF")

    async def test_who(self) -> None:
        """
        A C{who} in the body is added to the history's who, in
        parentheses; an unprintable one is refused.
        """
        flagged = await startFlagged(self)
        answer = await put(
            flagged,
            "RECENT",
            {"env": "blue", "value": "ON", "who": "CLI user alice"},
        )
        self.assertEqual(
            answer.json["change"]["who"], "admin API from 127.0.0.1 (CLI user alice)"
        )
        answer = await put(
            flagged, "RECENT", {"env": "blue", "value": "ON", "who": "a\nb"}
        )
        self.assertEqual(
            (answer.code, answer.error),
            (400, "field 'who' must be at most 200 printable characters"),
        )

    async def test_invalid(self) -> None:
        """
        Invalid names and values, unknown environments and bad bodies are
        400s with the reason, and change nothing.
        """
        flagged = await startFlagged(self)
        cases: list[tuple[str, Any, str | None]] = [
            (
                "bad name",
                {"env": "blue", "value": "ON"},
                "invalid flag name 'bad name': use letters, digits, _ - . : "
                "(at most 128 characters)",
            ),
            ("X" * 129, {"env": "blue", "value": "ON"}, None),
            (
                "RECENT",
                {"env": "blue", "value": "x" * (MAX_VALUE + 1)},
                f"value is {MAX_VALUE + 1} bytes; at most {MAX_VALUE}",
            ),
            (
                "RECENT",
                {"env": "red", "value": "ON"},
                "unknown environment 'red'; expected green or blue",
            ),
            ("RECENT", {"env": "blue"}, "missing field 'value'"),
            (
                "RECENT",
                {"env": "blue", "value": 1},
                "field 'value' must be a string, not number",
            ),
            (
                "RECENT",
                {"env": "blue", "value": "ON", "ttl": 5},
                "unknown field 'ttl' (expected: 'env', 'value', 'normalise', 'who')",
            ),
        ]
        for name, body, message in cases:
            answer = await put(flagged, name, body)
            self.assertEqual(answer.code, 400, (name, body))
            if message is not None:
                self.assertEqual(answer.error, message)
            else:
                self.assertTrue(answer.error, (name, body))
        self.assertEqual(await flagged.redis["blue"].cli("DBSIZE"), "0")

    async def test_contentType(self) -> None:
        """
        A body must be JSON, said so: as for C{POST /api/switch}.
        """
        flagged = await startFlagged(self)

        async def put(body: bytes, contentType: bytes) -> Answer:
            return await call(
                flagged.url("RECENT"),
                "PUT",
                body=body,
                headers={b"content-type": [contentType]},
            )

        answer = await put(b'{"env": "blue", "value": "ON"}', b"text/plain")
        self.assertEqual(answer.code, 415)
        answer = await put(b"{", b"application/json")
        self.assertEqual(answer.code, 400)
        self.assertTrue(answer.error.startswith("malformed JSON: "), answer.error)

    async def test_noRedis(self) -> None:
        """
        A change in an environment without a Redis is a 409 saying how to
        give it one.
        """
        flagged = await startFlagged(self)
        answer = await put(flagged, "RECENT", {"env": "green", "value": "ON"})
        self.assertEqual(
            (answer.code, answer.error),
            (409, "green has no Redis (start bluegreen with --green-redis URL)"),
        )
        answer = await delete(flagged, "RECENT", "?env=green")
        self.assertEqual(answer.code, 409)

    async def test_delete(self) -> None:
        """
        C{DELETE ?env=} removes the key; the change says what it was.
        """
        flagged = await startFlagged(self)
        await put(flagged, "RECENT", {"env": "blue", "value": "ON"})
        answer = await delete(flagged, "RECENT")
        self.assertEqual(answer.code, 200)
        change = answer.json["change"]
        self.assertEqual(
            (change["env"], change["flag"], change["old"], change["new"]),
            ("blue", "RECENT", "ON", None),
        )
        self.assertEqual(await flagged.redis["blue"].cli("EXISTS", "RECENT"), "0")
        self.assertNotIn(
            "RECENT", answer.json["flags"]["environments"]["blue"]["flags"]
        )

    async def test_deleteNeedsEnv(self) -> None:
        """
        C{DELETE} without C{?env=} is a 400.
        """
        flagged = await startFlagged(self)
        answer = await delete(flagged, "RECENT", "")
        self.assertEqual(
            (answer.code, answer.error),
            (400, "missing query parameter 'env' (e.g. ?env=blue)"),
        )

    async def test_token(self) -> None:
        """
        With a token, changes need it; reads do not.
        """
        flagged = await startFlagged(self, token=TOKEN)
        answer = await put(flagged, "RECENT", {"env": "blue", "value": "ON"})
        self.assertEqual(
            (answer.code, answer.error),
            (401, "missing Authorization: Bearer <token>"),
        )
        answer = await put(flagged, "RECENT", {"env": "blue", "value": "ON"}, "nope")
        self.assertEqual((answer.code, answer.error), (401, "wrong token"))
        answer = await delete(flagged, "RECENT")
        self.assertEqual(answer.code, 401)
        self.assertEqual(await flagged.redis["blue"].cli("EXISTS", "RECENT"), "0")
        answer = await put(flagged, "RECENT", {"env": "blue", "value": "ON"}, TOKEN)
        self.assertEqual(answer.code, 200)
        self.assertEqual((await call(flagged.base + "/api/flags")).code, 200)
        answer = await call(flagged.base + "/api/flags/history")
        self.assertEqual(answer.code, 200)

    async def test_methods(self) -> None:
        """
        Other methods are 405s with C{Allow}.
        """
        flagged = await startFlagged(self)
        answer = await call(flagged.url("RECENT"), "POST")
        self.assertEqual(answer.code, 405)
        self.assertEqual(
            answer.headers.getRawHeaders(b"allow"), [b"DELETE, GET, PUT, HEAD"]
        )
        answer = await call(flagged.base + "/api/flags", "PUT")
        self.assertEqual(answer.code, 405)
        self.assertEqual(answer.headers.getRawHeaders(b"allow"), [b"GET, HEAD"])

    async def test_notFound(self) -> None:
        """
        Paths below a flag, and C{/api/flags/}, are 404s.
        """
        flagged = await startFlagged(self)
        for path in ("/api/flags/", "/api/flags/RECENT/x", "/api/flags/history/x"):
            answer = await call(flagged.base + path)
            self.assertEqual(answer.code, 404, path)
            self.assertTrue(answer.error.startswith(f"not found: {path} (try "))


class HistoryTests(TestCase):
    """
    C{GET /api/flags/history}.
    """

    async def test_history(self) -> None:
        """
        The changes, newest first, at most C{limit}, of one environment or
        all.
        """
        flagged = await startFlagged(self, green=True)
        await put(flagged, "RECENT", {"env": "blue", "value": "ON"})
        await put(flagged, "RECENT", {"env": "green", "value": "OFF"})
        await put(flagged, "RECENT", {"env": "blue", "value": "OFF", "who": "bob"})
        answer = await call(flagged.base + "/api/flags/history?env=blue")
        self.assertEqual(answer.code, 200)
        self.assertEqual(
            [(c["env"], c["old"], c["new"], c["who"]) for c in answer.json["history"]],
            [
                ("blue", "ON", "OFF", "admin API from 127.0.0.1 (bob)"),
                ("blue", None, "ON", "admin API from 127.0.0.1"),
            ],
        )
        answer = await call(flagged.base + "/api/flags/history")
        self.assertEqual(
            [(c["env"], c["new"]) for c in answer.json["history"]],
            [("blue", "OFF"), ("green", "OFF"), ("blue", "ON")],
        )
        answer = await call(flagged.base + "/api/flags/history?limit=1")
        self.assertEqual(len(answer.json["history"]), 1)

    async def test_badLimit(self) -> None:
        """
        A limit that is not a whole number from 1 to 1000 is a 400.
        """
        flagged = await startFlagged(self)
        for limit in ("0", "1001", "x", "-1", "1.5"):
            answer = await call(flagged.base + f"/api/flags/history?limit={limit}")
            self.assertEqual(
                (answer.code, answer.error),
                (400, f"limit must be a whole number from 1 to 1000, not {limit!r}"),
            )

    async def test_noRedis(self) -> None:
        """
        The history of an environment without a Redis is a 409.
        """
        flagged = await startFlagged(self)
        answer = await call(flagged.base + "/api/flags/history?env=green")
        self.assertEqual(answer.code, 409)


class RedisDownTests(TestCase):
    """
    The API when an environment's Redis goes away and comes back.
    """

    async def test_downAndBack(self) -> None:
        """
        With Redis down, reads answer the last known values, marked stale;
        changes are 503s saying which Redis cannot be reached; once it is
        back, changes work again and the values are fresh.
        """
        flagged = await startFlagged(self)
        redis = flagged.redis["blue"]
        await put(flagged, "RECENT", {"env": "blue", "value": "ON"})
        await redis.kill()
        await waitFor(
            lambda: table(flagged)["environments"]["blue"]["stale"], "stale values"
        )
        body = (await call(flagged.base + "/api/flags")).json
        blue = body["environments"]["blue"]
        self.assertEqual(
            (blue["connected"], blue["stale"], blue["flags"]),
            (False, True, {"RECENT": "ON"}),
        )
        one = (await call(flagged.url("RECENT", "?env=blue"))).json
        self.assertEqual(
            one["environments"]["blue"], {"value": "ON", "on": True, "stale": True}
        )
        answer = await put(flagged, "RECENT", {"env": "blue", "value": "OFF"})
        self.assertEqual(answer.code, 503)
        self.assertRegex(
            answer.error,
            r"^cannot reach Redis for blue at redis://127\.0\.0\.1:\d+(/0)?: ",
        )
        answer = await delete(flagged, "RECENT")
        self.assertEqual(answer.code, 503)
        answer = await call(flagged.base + "/api/flags/history")
        self.assertEqual(answer.code, 503)
        await redis.restart()
        await waitFor(
            lambda: table(flagged)["environments"]["blue"]["connected"],
            "the flag service to reconnect",
        )
        answer = await put(flagged, "RECENT", {"env": "blue", "value": "OFF"})
        self.assertEqual(answer.code, 200)
        self.assertEqual(await redis.cli("GET", "RECENT"), "OFF")


class MetricsTests(TestCase):
    """
    The flag metrics on C{/metrics}.
    """

    async def test_metrics(self) -> None:
        """
        Each flag is 1 (ON) or 0, each environment with a Redis has its
        changes counted, whether its Redis is up and whether its cache is
        stale.
        """
        flagged = await startFlagged(self)
        await put(flagged, "RECENT", {"env": "blue", "value": "ON"})
        await put(flagged, "BETA", {"env": "blue", "value": "yes"})
        text = (await call(flagged.base + "/metrics")).data.decode("utf-8")
        for line in (
            'bluegreen_flag_on{environment="blue",flag="RECENT"} 1.0',
            'bluegreen_flag_on{environment="blue",flag="BETA"} 0.0',
            'bluegreen_flag_redis_up{environment="blue"} 1.0',
            'bluegreen_flag_cache_stale{environment="blue"} 0.0',
        ):
            self.assertIn(line, text.splitlines())
        [changes] = [
            line
            for line in text.splitlines()
            if line.startswith('bluegreen_flag_changes_total{environment="blue"}')
        ]
        self.assertGreaterEqual(float(changes.split()[-1]), 2.0)
        self.assertNotIn(
            'environment="green"',
            "".join(
                line for line in text.splitlines() if line.startswith("bluegreen_flag")
            ),
        )
        await flagged.redis["blue"].kill()
        await waitFor(
            lambda: table(flagged)["environments"]["blue"]["stale"], "stale values"
        )
        text = (await call(flagged.base + "/metrics")).data.decode("utf-8")
        self.assertIn('bluegreen_flag_redis_up{environment="blue"} 0.0', text)
        self.assertIn('bluegreen_flag_cache_stale{environment="blue"} 1.0', text)
        self.assertIn('bluegreen_flag_on{environment="blue",flag="RECENT"} 1.0', text)


class ManholeTests(TestCase):
    """
    The manhole's namespace.
    """

    async def test_flags(self) -> None:
        """
        The manhole has the flag service as C{flags}, listed by C{help()}.
        """
        passwd = os.path.abspath(self.mktemp())
        with open(passwd, "w") as f:
            f.write("admin:secret\n")
        os.chmod(passwd, 0o600)
        flagged = await startFlagged(
            self,
            "--manhole",
            "tcp:0:interface=127.0.0.1",
            "--manhole-passwd",
            passwd,
        )
        service = flagged.running.service
        assert service.manhole is not None
        namespace = service.manhole.namespaceFor("admin")
        self.assertIs(namespace["flags"], service.flags)
        self.assertIn("flags", str(service.manhole.namespace.help("admin")))


class ChangeByOthersTests(TestCase):
    """
    Changes made without the API show in it.
    """

    async def test_redisCli(self) -> None:
        """
        A value set with C{redis-cli} shows in C{GET /api/flags} within a
        second or so, as a string.
        """
        flagged = await startFlagged(self)
        await flagged.redis["blue"].cli("SET", "RECENT", "10")
        found: list[Any] = []

        async def poll() -> None:
            for _ in range(int(PATIENCE / 0.05)):
                body = (await call(flagged.base + "/api/flags")).json
                value = body["environments"]["blue"]["flags"].get("RECENT")
                if value is not None:
                    found.append(value)
                    return
                await deferLater(globalReactor(), 0.05, lambda: None)

        await poll()
        self.assertEqual(found, ["10"])
        self.assertEqual(json.loads(json.dumps(found)), ["10"])
