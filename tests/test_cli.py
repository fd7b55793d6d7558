# -*- test-case-name: tests.test_cli -*-
"""
Tests for L{bluegreen.cli.main}, the C{bluegreen} console command.
"""

from __future__ import annotations

import io
import json
import os
import sys
from contextlib import redirect_stderr, redirect_stdout

from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from bluegreen import __version__
from bluegreen.cli.common import SYNOPSIS
from bluegreen.cli.main import COMMANDS, main


def childEnvironment() -> dict[str, str]:
    """
    @return: The environment of a child process: C{PATH}, and C{PYTHONPATH}
        if the tests have one.
    """
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def consoleScript() -> str:
    """
    @return: The installed C{bluegreen} console script of this environment.
    @raise SkipTest: If it is not installed.
    """
    script = os.path.join(os.path.dirname(sys.executable), "bluegreen")
    if not os.path.isfile(script):
        raise SkipTest(f"the bluegreen console script is not installed ({script})")
    return script


async def runScript(*args: str) -> tuple[str, str, int]:
    """
    Run the C{bluegreen} console script.

    @param args: Its arguments.
    @return: Its stdout, stderr and exit code.
    """
    d: Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
        consoleScript(), args, env=childEnvironment()
    )
    out, err, code = await d
    return out.decode("utf-8"), err.decode("utf-8"), code


class ConsoleScriptTests(TestCase):
    """
    The installed C{bluegreen} command.
    """

    async def test_version(self) -> None:
        """
        C{bluegreen --version} prints the version and exits with status 0.
        """
        out, err, code = await runScript("--version")
        self.assertEqual((out, err, code), (f"bluegreen {__version__}\n", "", 0))

    async def test_unknownOption(self) -> None:
        """
        An unknown option exits with status 2 (a usage error) after one line
        on stderr naming it and pointing to C{--help}, without a traceback.
        """
        for args in [["--bogus"], ["status", "--nope"]]:
            out, err, code = await runScript(*args)
            self.assertEqual(
                (out, err, code),
                (
                    "",
                    f"bluegreen: option {args[-1]} not recognized; see --help\n",
                    2,
                ),
                f"bluegreen {' '.join(args)}",
            )

    async def test_noCommand(self) -> None:
        """
        C{bluegreen} alone is a usage error: it exits with status 2 after a
        usage on stderr that names every command.
        """
        out, err, code = await runScript()
        self.assertEqual((out, code), ("", 2))
        self.assertTrue(err.startswith(f"Usage: {SYNOPSIS}\n"), err)
        for command in COMMANDS:
            self.assertRegex(err, f"\n    {command} +[A-Z]")


class ClientImportTests(TestCase):
    """
    The client imports no server module: C{bluegreen status} stays quick
    and needs nothing of the service.
    """

    async def test_noServerModules(self) -> None:
        """
        Importing L{bluegreen.cli.main} and parsing C{status} in a fresh
        interpreter loads neither C{twisted.web.server} nor the health
        checks, the controller, the admin site, the proxy, the service, the
        manholes, or the flag and sync components (the token reader alone is
        shared).
        """
        program = (
            "import json, sys\n"
            "import bluegreen.cli.main\n"
            "bluegreen.cli.main.Options().parseOptions(['status'])\n"
            "server = ('twisted.web.server', 'bluegreen.health', "
            "'bluegreen.healthclient', 'bluegreen.controller')\n"
            "parts = ('bluegreen.proxy', 'bluegreen.service', 'bluegreen.manhole', "
            "'bluegreen.admin.', 'bluegreen.flags.', 'bluegreen.sync.')\n"
            "print(json.dumps(sorted(m for m in sys.modules if m in server "
            "or (m.startswith(parts) and m != 'bluegreen.admin.token'))))\n"
        )
        d: Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
            sys.executable, ["-c", program], env=childEnvironment()
        )
        out, err, code = await d
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out), [])


class MainTests(SynchronousTestCase):
    """
    L{main} run in this process.
    """

    def test_noArguments(self) -> None:
        """
        Without arguments, L{main} prints the usage on stderr and returns 2.
        """
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main([])
        self.assertEqual((code, out.getvalue()), (2, ""))
        self.assertIn("--version", err.getvalue())

    def test_usageError(self) -> None:
        """
        A usage error returns 2 and is reported on stderr.
        """
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["extra"])
        self.assertEqual((code, out.getvalue()), (2, ""))
        self.assertTrue(err.getvalue().startswith("bluegreen: "), err.getvalue())
        self.assertIn(
            "usage: bluegreen [--admin URL] [--token-file FILE] [--json] "
            "status|switch|check|promote|deployed|flag|sync|demo\n",
            err.getvalue(),
        )

    def test_version(self) -> None:
        """
        C{--version} prints the version and exits with status 0.
        """
        out = io.StringIO()
        with redirect_stdout(out):
            error = self.assertRaises(SystemExit, main, ["--version"])
        self.assertEqual(
            (error.code, out.getvalue()), (0, f"bluegreen {__version__}\n")
        )

    def test_versionValue(self) -> None:
        """
        The version printed is 0.1.0.
        """
        self.assertEqual(__version__, "0.1.0")

    def test_argv(self) -> None:
        """
        Without an argument list, L{main} reads C{sys.argv}.
        """
        self.patch(sys, "argv", ["bluegreen", "--bogus"])
        err = io.StringIO()
        with redirect_stderr(err):
            code = main()
        self.assertEqual(code, 2)
        self.assertIn("--bogus", err.getvalue())


class StatusSectionsTests(SynchronousTestCase):
    """
    C{bluegreen status} shows the flags and the database sync when the
    service has them.
    """

    def test_flagsAndSync(self) -> None:
        """
        A line per environment's flags (stale ones say why), the sync mode,
        the mirror's lag and the last sync each way, and a sync in progress.
        """
        from bluegreen.cli.main import formatStatus

        status = {
            "now": 1000.0,
            "live": "green",
            "why": "start",
            "mode": "serving",
            "syncing": "bringing blue's database up to date from green",
            "environments": {},
            "history": [],
            "flags": {
                "environments": {
                    "green": {"redis": "redis://h:1/0", "flags": {"RECENT": "ON"}},
                    "blue": {
                        "redis": "redis://h:2/0",
                        "flags": {},
                        "stale": True,
                        "error": "connection refused",
                    },
                }
            },
            "sync": {
                "mode": "mirror",
                "mirror": {"direction": "green->blue", "lag": 2.25, "failing": False},
                "last": {
                    "green->blue": {
                        "when": 990.0,
                        "strategy": "migrate",
                        "complete": False,
                        "rows_copied": 3,
                        "conflicts": 1,
                    }
                },
            },
        }
        text = formatStatus(status)
        self.assertIn(
            "flags:\n"
            "  blue   none set  (STALE: connection refused)\n"
            "  green  RECENT=ON\n",
            text,
        )
        self.assertIn(
            "database sync: mirror\n"
            "  mirror green->blue: lag 2.2 s\n"
            "  green->blue: migrate INCOMPLETE, 3 rows, 1 conflicts (10 s ago)\n",
            text,
        )
        self.assertIn("now: bringing blue's database up to date from green", text)


class SwitchOutputTests(SynchronousTestCase):
    """
    What C{bluegreen switch} prints.
    """

    switched = {"from": "blue", "to": "green", "reason": "manual switch"}

    def test_withoutSync(self) -> None:
        """
        Without database sync, one line says what was switched.
        """
        from bluegreen.cli.main import formatSwitch

        self.assertEqual(
            formatSwitch({"switched": self.switched}),
            "switched to GREEN (was blue): manual switch\n",
        )

    def test_sync(self) -> None:
        """
        With database sync, a line first says what the sync before the
        switch copied, table by table, and its conflicts.
        """
        from bluegreen.cli.main import formatSwitch

        answer = {
            "switched": self.switched,
            "sync": {
                "strategy": "migrate",
                "copied": {"votes": 1, "cats": 2},
                "rows_copied": 3,
                "conflicts": [],
                "error": None,
            },
        }
        self.assertEqual(
            formatSwitch(answer),
            "synced blue -> green first: 3 rows copied (cats 2, votes 1), "
            "0 conflicts\n"
            "switched to GREEN (was blue): manual switch\n",
        )

    def test_syncForced(self) -> None:
        """
        A forced switch after an incomplete sync says what went wrong.
        """
        from bluegreen.cli.main import formatSwitch

        answer = {
            "switched": self.switched,
            "sync": {
                "copied": {},
                "rows_copied": 1,
                "conflicts": [{"kind": "key_conflict"}],
                "error": "database is locked",
            },
        }
        self.assertEqual(
            formatSwitch(answer).splitlines()[0],
            "synced blue -> green first: 1 row copied, 1 conflict; FAILED: "
            "database is locked",
        )
