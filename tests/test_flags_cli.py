# -*- test-case-name: tests.test_flags_cli -*-
"""
Tests for C{bluegreen flag ...} (L{bluegreen.flags.cli},
L{bluegreen.flags.format}): the installed console script run as a process,
through a real service's admin API and straight to real C{redis-server}
processes, and the text it prints.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase

from bluegreen.cli.common import Failed
from bluegreen.flags.cli import whoAmI
from bluegreen.flags.format import (
    formatChange,
    formatGet,
    formatHistory,
    formatList,
    showValue,
)
from bluegreen.flags.target import RedisTarget
from tests._util import freePort, waitFor

from ._redis import startRedis
from .test_cli_admin import ESC, assertFailed, bluegreen, onTerminal, tokenFile
from .test_flags_api import TOKEN, startFlagged, table

#: Who runs the commands.
USER = {"USER": "alice"}


async def flag(flagged: Any, *args: str, **env: str) -> tuple[str, str, int]:
    """
    Run C{bluegreen flag ARGS} against C{flagged}'s admin API.
    """
    return await bluegreen("--admin", flagged.base, "flag", *args, env={**USER, **env})


class AdminTests(TestCase):
    """
    The commands through the admin API.
    """

    async def test_setGetUnset(self) -> None:
        """
        C{flag set RECENT on --env blue} stores C{ON} (what the workshop's
        app reads with C{GET RECENT}); C{get} shows it; C{unset} removes
        it; each says what it did.
        """
        flagged = await startFlagged(self)
        redis = flagged.redis["blue"]
        out, err, code = await flag(flagged, "set", "RECENT", "on", "--env", "blue")
        self.assertEqual(
            (out, err, code), ("RECENT = ON in blue (was not set)\n", "", 0)
        )
        self.assertEqual(await redis.cli("GET", "RECENT"), "ON")
        out, err, code = await flag(flagged, "get", "RECENT", "--env", "blue")
        self.assertEqual((out, err, code), ("RECENT in blue: ON (on)\n", "", 0))
        out, err, code = await flag(flagged, "set", "RECENT", "false", "--env=blue")
        self.assertEqual((out, err, code), ("RECENT = OFF in blue (was ON)\n", "", 0))
        out, err, code = await flag(flagged, "set", "RECENT", "OFF", "-e", "blue")
        self.assertEqual(out, "RECENT = OFF in blue (unchanged)\n")
        out, err, code = await flag(flagged, "unset", "RECENT", "--env", "blue")
        self.assertEqual(
            (out, err, code), ("RECENT removed from blue (was OFF)\n", "", 0)
        )
        self.assertEqual(await redis.cli("EXISTS", "RECENT"), "0")
        out, err, code = await flag(flagged, "get", "RECENT")
        self.assertEqual(
            out,
            "RECENT in blue: not set (off)\n\n"
            "green: no Redis (start bluegreen with --green-redis URL)\n",
        )

    async def test_getNeverRegistered(self) -> None:
        """
        C{flag get FOO} through the service reads the key from Redis, also
        one bluegreen never wrote (C{redis-cli SET FOO 007}), and shows the
        value unchanged.
        """
        flagged = await startFlagged(self)
        await flagged.redis["blue"].cli("SET", "FOO", "007")
        out, err, code = await flag(flagged, "get", "FOO", "--env", "blue")
        self.assertEqual((out, err, code), ("FOO in blue: 007 (off)\n", "", 0))
        out, err, code = await flag(flagged, "get", "FOO")
        self.assertEqual(
            (out, err, code),
            (
                "FOO in blue: 007 (off)\n\n"
                "green: no Redis (start bluegreen with --green-redis URL)\n",
                "",
                0,
            ),
        )
        out, err, code = await flag(flagged, "get", "FOO", "--env", "blue", "--json")
        self.assertEqual(code, 0)
        self.assertIn('"value": "007"', out)

    async def test_raw(self) -> None:
        """
        C{--raw VALUE} stores any string as it is: numbers stay strings.
        """
        flagged = await startFlagged(self)
        out, err, code = await flag(
            flagged, "set", "LIMIT", "--raw", "007", "--env", "blue"
        )
        self.assertEqual(
            (out, err, code), ("LIMIT = 007 in blue (was not set)\n", "", 0)
        )
        self.assertEqual(await flagged.redis["blue"].cli("GET", "LIMIT"), "007")
        out, err, code = await flag(
            flagged, "set", "MOTTO", "--raw", "two words", "--env", "blue"
        )
        self.assertEqual(out, 'MOTTO = "two words" in blue (was not set)\n')
        out, err, code = await flag(flagged, "get", "LIMIT", "--env", "blue", "--json")
        self.assertEqual(code, 0)
        self.assertIn('"value": "007"', out)

    async def test_list(self) -> None:
        """
        C{flag list} is a table of flag x environment; C{--env} picks one.
        """
        flagged = await startFlagged(self, green=True)
        await flag(flagged, "set", "RECENT", "on", "--env", "blue")
        await flag(flagged, "set", "RECENT", "off", "--env", "green")
        await flag(flagged, "set", "BETA", "--raw", "yes", "--env", "green")
        out, err, code = await flag(flagged, "list")
        self.assertEqual(
            (out, err, code),
            (
                "FLAG    GREEN  BLUE\nBETA    yes    -\nRECENT  OFF    ON\n",
                "",
                0,
            ),
        )
        # Every known flag has a row (BETA was set in GREEN only).
        out, err, code = await flag(flagged, "list", "--env", "blue")
        self.assertEqual(out, "FLAG    BLUE\nBETA    -\nRECENT  ON\n")

    async def test_listJSON(self) -> None:
        """
        C{--json} prints the API's table.
        """
        import json

        flagged = await startFlagged(self)
        await flag(flagged, "set", "RECENT", "on", "--env", "blue")
        out, err, code = await flag(flagged, "list", "--json")
        self.assertEqual((err, code), ("", 0))
        self.assertEqual(json.loads(out), table(flagged))

    async def test_all(self) -> None:
        """
        C{--env all} changes every environment that has a Redis.
        """
        flagged = await startFlagged(self, green=True)
        out, err, code = await flag(flagged, "set", "RECENT", "on", "--env", "all")
        self.assertEqual(
            (out, err, code),
            (
                "RECENT = ON in green (was not set)\n"
                "RECENT = ON in blue (was not set)\n",
                "",
                0,
            ),
        )
        for redis in flagged.redis.values():
            self.assertEqual(await redis.cli("GET", "RECENT"), "ON")

    async def test_allPartly(self) -> None:
        """
        With C{--env all}, an environment whose Redis is down is reported
        (and the exit status is 1), the others are changed.
        """
        flagged = await startFlagged(self, green=True)
        green = flagged.redis["green"]
        await green.kill()
        await waitFor(
            lambda: (
                table(flagged)["environments"]["green"]["error"] == "connection refused"
            ),
            "a refused reconnection",
        )
        out, err, code = await flag(flagged, "set", "RECENT", "on", "--env", "all")
        described = RedisTarget.parse(green.url).describe()
        self.assertEqual(
            (out, err, code),
            (
                "RECENT = ON in blue (was not set)\n",
                f"bluegreen: green: cannot reach Redis for green at {described}: "
                "connection refused\n",
                1,
            ),
        )
        self.assertEqual(await flagged.redis["blue"].cli("GET", "RECENT"), "ON")

    async def test_history(self) -> None:
        """
        C{flag history} shows the changes, newest first, with who made
        them: the admin API and the CLI user.
        """
        flagged = await startFlagged(self)
        await flag(flagged, "set", "RECENT", "on", "--env", "blue")
        await flag(flagged, "unset", "RECENT", "--env", "blue", USER="bob")
        out, err, code = await flag(flagged, "history")
        self.assertEqual((err, code), ("", 0))
        lines = out.splitlines()
        self.assertEqual(len(lines), 2)
        self.assertRegex(
            lines[0],
            r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  blue  RECENT  ON -> -  "
            r"admin API from 127\.0\.0\.1 \(CLI user bob\)$",
        )
        self.assertRegex(
            lines[1],
            r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  blue  RECENT  - -> ON  "
            r"admin API from 127\.0\.0\.1 \(CLI user alice\)$",
        )
        out, err, code = await flag(flagged, "history", "--limit", "1")
        self.assertEqual(len(out.splitlines()), 1)

    async def test_redisDown(self) -> None:
        """
        With the environment's Redis down, a change fails with the reason
        (exit status 1); reads show the last known values, marked stale.
        """
        flagged = await startFlagged(self)
        await flag(flagged, "set", "RECENT", "on", "--env", "blue")
        await flagged.redis["blue"].kill()
        # Once the service has tried to reconnect, it knows why it cannot.
        await waitFor(
            lambda: (
                table(flagged)["environments"]["blue"]["error"] == "connection refused"
            ),
            "a refused reconnection",
        )
        out, err, code = await flag(flagged, "set", "RECENT", "off", "--env", "blue")
        self.assertEqual((out, code), ("", 1))
        described = RedisTarget.parse(flagged.redis["blue"].url).describe()
        self.assertEqual(
            err,
            f"bluegreen: cannot reach Redis for blue at {described}: "
            "connection refused\n",
        )
        out, err, code = await flag(flagged, "list")
        self.assertEqual((err, code), ("", 0))
        lines = out.splitlines()
        self.assertEqual(
            lines[:3],
            [
                "FLAG    BLUE*",
                "RECENT  ON",
                "* stale: the last known values (see below)",
            ],
        )
        self.assertEqual(
            lines[4], "green: no Redis (start bluegreen with --green-redis URL)"
        )
        self.assertRegex(
            lines[5],
            r"^blue: STALE: connection refused; values as last read \d{4}-\d\d-\d\d "
            r"\d\d:\d\d:\d\d \(\d+ s ago\)$",
        )
        out, err, code = await flag(flagged, "get", "RECENT", "--env", "blue")
        self.assertEqual(out.splitlines()[0], "RECENT in blue: ON (on) [stale]")

    async def test_noRedis(self) -> None:
        """
        A change in an environment without a Redis fails, saying so.
        """
        flagged = await startFlagged(self)
        assertFailed(
            self,
            await flag(flagged, "set", "RECENT", "on", "--env", "green"),
            "bluegreen: green has no Redis (start bluegreen with --green-redis URL)\n",
        )
        _out, err, code = await flag(flagged, "list", "--env", "green")
        self.assertEqual(code, 1)
        self.assertEqual(
            err,
            "bluegreen: green has no Redis (start bluegreen with --green-redis URL)\n",
        )

    async def test_noService(self) -> None:
        """
        Without a running service, the commands say so and how to do
        without it.
        """
        port = freePort()
        out, err, code = await bluegreen(
            "--admin", f"http://127.0.0.1:{port}", "flag", "list"
        )
        self.assertEqual(
            (out, err, code),
            (
                "",
                f"bluegreen: cannot reach bluegreen admin at http://127.0.0.1:{port}: "
                "connection refused (is bluegreen running? without it, give "
                "--redis URL to reach an environment's Redis directly)\n",
                1,
            ),
        )

    async def test_token(self) -> None:
        """
        With a token, a change needs C{--token-file} (or
        C{BLUEGREEN_TOKEN_FILE}); reads do not.
        """
        flagged = await startFlagged(self, token=TOKEN)
        assertFailed(
            self,
            await flag(flagged, "set", "RECENT", "on", "--env", "blue"),
            "bluegreen: not authorized: missing Authorization: Bearer <token> "
            "(give --token-file FILE or set BLUEGREEN_TOKEN_FILE)\n",
        )
        path = tokenFile(self, TOKEN)
        _out, err, code = await flag(
            flagged, "set", "RECENT", "on", "--env", "blue", BLUEGREEN_TOKEN_FILE=path
        )
        self.assertEqual((err, code), ("", 0))
        _out, err, code = await flag(flagged, "list")
        self.assertEqual((err, code), ("", 0))

    async def test_colour(self) -> None:
        """
        On a terminal, the environments are in their colours.
        """
        flagged = await startFlagged(self)
        await flag(flagged, "set", "RECENT", "on", "--env", "blue")
        output = await onTerminal("--admin", flagged.base, "flag", "list")
        self.assertIn(ESC + "1;34mBLUE", output)
        output = await onTerminal(
            "--admin", flagged.base, "flag", "list", env={"NO_COLOR": "1"}
        )
        self.assertNotIn(ESC, output)


class DirectTests(TestCase):
    """
    The commands straight to Redis (C{--redis URL}), without a service.
    """

    async def test_commands(self) -> None:
        """
        set, get, list, unset and history work on the one Redis; C{--env}
        names it; changes are recorded as the CLI user's.
        """
        redis = await startRedis(self)

        async def run(*args: str) -> tuple[str, str, int]:
            return await bluegreen(
                "flag", *args, "--redis", redis.url, "--env", "blue", env=USER
            )

        out, err, code = await run("set", "RECENT", "on")
        self.assertEqual(
            (out, err, code), ("RECENT = ON in blue (was not set)\n", "", 0)
        )
        self.assertEqual(await redis.cli("GET", "RECENT"), "ON")
        await run("set", "LIMIT", "--raw", "10")
        out, err, code = await run("get", "RECENT")
        self.assertEqual((out, err, code), ("RECENT in blue: ON (on)\n", "", 0))
        out, err, code = await run("list")
        self.assertEqual(
            (out, err, code), ("FLAG    BLUE\nLIMIT   10\nRECENT  ON\n", "", 0)
        )
        out, err, code = await run("unset", "RECENT")
        self.assertEqual(out, "RECENT removed from blue (was ON)\n")
        out, err, code = await run("history")
        lines = out.splitlines()
        self.assertEqual(len(lines), 3, out)
        self.assertRegex(lines[0], r"  blue  RECENT  ON -> -  CLI user alice$")
        self.assertRegex(lines[1], r"  blue  LIMIT   - -> 10  CLI user alice$")
        self.assertRegex(lines[2], r"  blue  RECENT  - -> ON  CLI user alice$")

    async def test_getNeverRegistered(self) -> None:
        """
        C{flag get FOO --redis URL} reads a key bluegreen never wrote
        (C{redis-cli SET FOO 007}) and shows the value unchanged.
        """
        redis = await startRedis(self)
        await redis.cli("SET", "FOO", "007")
        out, err, code = await bluegreen(
            "flag", "get", "FOO", "--redis", redis.url, "--env", "blue", env=USER
        )
        self.assertEqual((out, err, code), ("FOO in blue: 007 (off)\n", "", 0))

    async def test_down(self) -> None:
        """
        A Redis that cannot be reached: the reason, exit status 1.
        """
        port = freePort()
        url = f"redis://127.0.0.1:{port}/0"
        described = RedisTarget.parse(url).describe()
        for args in (["set", "RECENT", "on"], ["list"], ["get", "RECENT"]):
            out, err, code = await bluegreen(
                "flag", *args, "--redis", url, "--env", "blue", env=USER
            )
            self.assertEqual(
                (out, err, code),
                (
                    "",
                    f"bluegreen: cannot reach Redis for blue at {described}: "
                    "connection refused\n",
                    1,
                ),
                args,
            )

    async def test_killed(self) -> None:
        """
        A Redis that was killed is reported the same way.
        """
        redis = await startRedis(self)
        await redis.kill()
        out, err, code = await bluegreen(
            "flag", "set", "RECENT", "on", "--redis", redis.url, "--env", "blue"
        )
        self.assertEqual((out, code), ("", 1))
        self.assertIn("cannot reach Redis for blue at ", err)


class UsageTests(TestCase):
    """
    Usage errors: exit status 2, the reason and the usage on stderr.
    """

    async def assertUsage(self, args: list[str], message: str, synopsis: str) -> None:
        """
        Run C{bluegreen ARGS}: it must fail with C{message} and show
        C{synopsis}.
        """
        assertFailed(
            self,
            await bluegreen(*args),
            f"bluegreen: {message}\nusage: {synopsis}\n",
            code=2,
        )

    async def test_errors(self) -> None:
        """
        Missing or wrong commands, arguments and options are named.
        """
        flagUsage = "bluegreen flag set|get|list|unset|history [options]"
        setUsage = (
            "bluegreen flag set NAME on|off|--raw VALUE --env green|blue|all "
            "[--redis URL] [--json]"
        )
        await self.assertUsage(
            ["flag"], "flag: which command? set, get, list, unset or history", flagUsage
        )
        await self.assertUsage(
            ["flag", "toggle"],
            "flag: unknown command 'toggle'; expected set, get, list, unset or history",
            flagUsage,
        )
        await self.assertUsage(
            ["flag", "set", "RECENT", "--env", "blue"],
            "flag set: which value? on or off (e.g. flag set RECENT on), or "
            "--raw VALUE",
            setUsage,
        )
        await self.assertUsage(
            ["flag", "set", "RECENT", "on"],
            "flag set: which environment? --env green, blue or all",
            setUsage,
        )
        await self.assertUsage(
            ["flag", "set", "RECENT", "on", "--env", "red"],
            "--env: unknown environment 'red'; expected green, blue or all",
            setUsage,
        )
        await self.assertUsage(
            ["flag", "set", "RECENT", "on", "--env", "all", "--redis", "redis://x"],
            "--env all: --redis reaches one environment's Redis; name it with "
            "--env green or --env blue",
            setUsage,
        )
        await self.assertUsage(
            ["flag", "list", "--redis", "redis://127.0.0.1:1/0"],
            "flag list: with --redis, say whose Redis it is: --env green or --env blue",
            "bluegreen flag list [--env green|blue|all] [--redis URL] [--json]",
        )
        out, err, code = await bluegreen(
            "flag", "set", "RECENT", "maybe", "--env", "blue"
        )
        self.assertEqual((out, code), ("", 2))
        self.assertIn("'maybe'", err)
        self.assertIn("(use --raw to store any value)", err)
        out, err, code = await bluegreen(
            "flag", "set", "bad name", "on", "--env", "blue"
        )
        self.assertEqual((out, code), ("", 2))
        self.assertTrue(err.startswith("bluegreen: flag set: "), err)
        out, err, code = await bluegreen("flag", "history", "--limit", "0")
        self.assertEqual(code, 2)
        self.assertIn("--limit: '0' is not a whole number from 1 to 1000", err)

    async def test_help(self) -> None:
        """
        C{bluegreen --help} lists C{flag}; C{bluegreen flag --help} its
        commands.
        """
        out, err, code = await bluegreen("--help")
        self.assertEqual(code, 0)
        self.assertIn("flag", out)
        out, err, code = await bluegreen("flag", "--help")
        self.assertEqual((err, code), ("", 0))
        for command in ("set", "get", "list", "unset", "history"):
            self.assertIn(command, out)


class FormatTests(SynchronousTestCase):
    """
    The text the commands print.
    """

    TABLE: dict[str, Any] = {
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
                "redis": "redis://127.0.0.1:6380/0",
                "connected": False,
                "stale": True,
                "error": "cannot reach Redis for blue at redis://127.0.0.1:6380/0: "
                "connection refused",
                "updated": 1000.0,
                "flags": {"RECENT": "ON", "MOTTO": "a b"},
            },
        },
        "names": ["MOTTO", "RECENT"],
    }

    def test_showValue(self) -> None:
        """
        Plain values are shown as they are, others quoted; unset is C{-}.
        """
        self.assertEqual(
            [showValue(v) for v in (None, "ON", "007", "", "a b", "-", "x\ny")],
            ["-", "ON", "007", '""', '"a b"', '"-"', '"x\\ny"'],
        )
        self.assertEqual(showValue("x" * 50, 10), "x" * 9 + "\u2026")

    def test_list(self) -> None:
        """
        Stale columns are starred and explained; environments without a
        Redis are named below.
        """
        self.assertEqual(
            formatList(self.TABLE, "all", now=1030.0).splitlines()[:4],
            [
                "FLAG    BLUE*",
                'MOTTO   "a b"',
                "RECENT  ON",
                "* stale: the last known values (see below)",
            ],
        )
        notes = formatList(self.TABLE, "all", now=1030.0).splitlines()[5:]
        self.assertEqual(
            notes[0], "green: no Redis (start bluegreen with --green-redis URL)"
        )
        self.assertTrue(
            notes[1].startswith(
                "blue: STALE: cannot reach Redis for blue at redis://127.0.0.1:6380/0: "
                "connection refused; values as last read "
            ),
            notes[1],
        )
        self.assertTrue(notes[1].endswith(" (30 s ago)"), notes[1])

    def test_listNoRedis(self) -> None:
        """
        Asked for an environment without a Redis, the list fails.
        """
        error = self.assertRaises(Failed, formatList, self.TABLE, "green")
        self.assertEqual(
            str(error), "green has no Redis (start bluegreen with --green-redis URL)"
        )

    def test_get(self) -> None:
        """
        One line per environment with a Redis.
        """
        self.assertEqual(
            formatGet(self.TABLE, "RECENT", "blue", now=1030.0).splitlines()[0],
            "RECENT in blue: ON (on) [stale]",
        )

    def test_change(self) -> None:
        """
        What a change did.
        """
        change = {"env": "blue", "flag": "RECENT"}
        self.assertEqual(
            [
                formatChange({**change, "old": old, "new": new})
                for old, new in (
                    (None, "ON"),
                    ("ON", "OFF"),
                    ("ON", "ON"),
                    ("ON", None),
                    (None, None),
                )
            ],
            [
                "RECENT = ON in blue (was not set)\n",
                "RECENT = OFF in blue (was ON)\n",
                "RECENT = ON in blue (unchanged)\n",
                "RECENT removed from blue (was ON)\n",
                "RECENT was not set in blue\n",
            ],
        )

    def test_history(self) -> None:
        """
        Nothing recorded says so.
        """
        self.assertEqual(formatHistory([]), "no flag changes recorded\n")

    def test_whoAmI(self) -> None:
        """
        The CLI user is C{$USER}, else C{$LOGNAME}.
        """
        self.assertEqual(whoAmI({"USER": "alice"}), "CLI user alice")
        self.assertEqual(whoAmI({"LOGNAME": "bob"}), "CLI user bob")
        self.assertTrue(whoAmI({}).startswith("CLI user "))
