# -*- test-case-name: tests.test_cli_admin -*-
"""
Tests for the C{bluegreen status|switch|check} commands: the installed
console script run as a process against a real service's admin API, and
the text it prints.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bluegreen.cli.common import DEFAULT_ADMIN, settingsFrom, useColour
from bluegreen.cli.main import Options, formatCheck, formatStatus, formatSwitch
from tests._util import freePort

from ._admin import Running, startService
from .test_cli import consoleScript

#: ANSI escape sequences start with this.
ESC = "\x1b["


async def bluegreen(
    *args: str, env: dict[str, str] | None = None
) -> tuple[str, str, int]:
    """
    Run the C{bluegreen} console script with a clean environment (C{PATH},
    C{PYTHONPATH} and C{env}: no C{BLUEGREEN_*} of the caller's).

    @param args: Its arguments.
    @param env: More environment variables.
    @return: Its stdout, stderr and exit code.
    """
    environ = {"PATH": os.environ.get("PATH", os.defpath)}
    if "PYTHONPATH" in os.environ:
        environ["PYTHONPATH"] = os.environ["PYTHONPATH"]
    environ.update(env or {})
    d: Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
        consoleScript(), args, env=environ
    )
    out, err, code = await d
    return out.decode("utf-8"), err.decode("utf-8"), code


def assertFailed(
    testCase: SynchronousTestCase,
    result: tuple[str, str, int],
    error: str,
    code: int = 1,
) -> None:
    """
    Assert that a command printed nothing on stdout, exactly C{error} on
    stderr, and exited with status C{code}.

    @param result: What L{bluegreen} returned.
    """
    testCase.assertEqual(result, ("", error, code))


class _Output(ProcessProtocol):
    """
    Collects a process's output until it ends.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[bytes] = Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(self.output)


async def onTerminal(*args: str, env: dict[str, str] | None = None) -> str:
    """
    Run the C{bluegreen} console script on a pseudo-terminal.

    @return: Everything it wrote (stdout and stderr).
    """
    environ = {"PATH": os.environ.get("PATH", os.defpath), "TERM": "xterm"}
    if "PYTHONPATH" in os.environ:
        environ["PYTHONPATH"] = os.environ["PYTHONPATH"]
    environ.update(env or {})
    protocol = _Output()
    script = consoleScript()
    cast(IReactorProcess, reactor).spawnProcess(
        protocol, script, [script, *args], env=environ, usePTY=True
    )
    output = await protocol.ended
    return output.decode("utf-8")


def tokenFile(testCase: TestCase, token: str) -> str:
    """
    @return: The path of a new file holding C{token} and a newline.
    """
    path = os.path.abspath(testCase.mktemp())
    with open(path, "w") as f:
        f.write(token + "\n")
    return path


class StatusCommandTests(TestCase):
    """
    C{bluegreen status}.
    """

    def assertCannotReach(self, result: tuple[str, str, int], url: str) -> None:
        """
        Assert that the command printed nothing, said on stderr in one line
        that nothing listens at C{url}, and exited with status 1.

        @param result: The command's output, errors and status.
        """
        assertFailed(
            self,
            result,
            f"bluegreen: cannot reach bluegreen admin at {url}: connection refused\n",
        )

    async def test_human(self) -> None:
        """
        It says which environment is live and why, each one's health and
        that there were no switches; without a terminal, in no colour.
        """
        running = await startService(self, blue=False)
        out, err, code = await bluegreen("--admin", running.base, "status")
        self.assertEqual((err, code), ("", 0))
        lines = out.splitlines()
        self.assertEqual(lines[0], f"live: GREEN  {running.green.url}")
        self.assertEqual(lines[1], "why:  start")
        self.assertEqual(lines[3], "health:")
        self.assertEqual(lines[4], f"  green  up      {running.green.url}  (live)")
        self.assertRegex(
            lines[5],
            r"^         status 200 in \d+ ms; 1 passed in a row; checked "
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\d+ s ago\)$",
        )
        self.assertEqual(lines[6], f"  blue   down    {running.blue.url}")
        self.assertRegex(
            lines[7], r"^         connection refused in \d+ ms; 1 failed in a row; "
        )
        self.assertEqual(lines[-1], "no switches yet")
        self.assertNotIn(ESC, out)

    async def test_colourOnTerminal(self) -> None:
        """
        On a terminal the live environment is named in its colour, unless
        C{NO_COLOR} is set.
        """
        running = await startService(self)
        out = await onTerminal("--admin", running.base, "status")
        self.assertIn(f"live: {ESC}1;32mGREEN{ESC}0m  ", out)
        out = await onTerminal("--admin", running.base, "status", env={"NO_COLOR": "1"})
        self.assertTrue(out.startswith("live: GREEN  "), out)
        self.assertNotIn(ESC, out)

    async def test_history(self) -> None:
        """
        The last switches are listed, newest first.
        """
        running = await startService(self)
        controller = running.service.controller
        controller.switch("blue", "first")
        controller.switch("green", "second")
        out, err, code = await bluegreen("status", "--admin", running.base)
        self.assertEqual((err, code), ("", 0))
        lines = out.splitlines()
        self.assertEqual(lines[-3], "last switches:")
        self.assertTrue(lines[-2].endswith("  blue -> green  second"), lines[-2])
        self.assertTrue(lines[-1].endswith("  green -> blue  first"), lines[-1])
        self.assertIn("why:  second; since ", out)

    async def test_json(self) -> None:
        """
        C{--json} prints the API's status object (before or after the
        command's name).
        """
        running = await startService(self)
        for args in (
            ["--admin", running.base, "status", "--json"],
            ["--json", "--admin", running.base, "status"],
        ):
            out, err, code = await bluegreen(*args)
            self.assertEqual((err, code), ("", 0))
            status = json.loads(out)
            self.assertEqual(
                (status["live"], status["environments"]["blue"]["url"]),
                ("green", running.blue.url),
            )

    async def test_environmentVariable(self) -> None:
        """
        C{BLUEGREEN_ADMIN} says where the admin API is; C{--admin} wins over
        it.
        """
        running = await startService(self)
        out, err, code = await bluegreen(
            "status", env={"BLUEGREEN_ADMIN": running.base}
        )
        self.assertEqual((err, code), ("", 0))
        self.assertTrue(out.startswith("live: GREEN"))
        dead = f"http://127.0.0.1:{freePort()}"
        out, err, code = await bluegreen(
            "status", "--admin", running.base, env={"BLUEGREEN_ADMIN": dead}
        )
        self.assertEqual((err, code), ("", 0))

    async def test_notRunning(self) -> None:
        """
        When nothing listens there, it says so in one line on stderr and
        exits with status 1, without a traceback.
        """
        url = f"http://127.0.0.1:{freePort()}"
        self.assertCannotReach(await bluegreen("--admin", url, "status"), url)

    async def test_notRunningFromEnvironment(self) -> None:
        """
        The same with the URL from C{BLUEGREEN_ADMIN}.
        """
        url = f"http://127.0.0.1:{freePort()}"
        self.assertCannotReach(
            await bluegreen("status", env={"BLUEGREEN_ADMIN": url}), url
        )

    async def test_notBluegreen(self) -> None:
        """
        Something that is not the admin API (here, a backend) is reported
        as such.
        """
        running = await startService(self)
        out, err, code = await bluegreen("--admin", running.green.url, "status")
        self.assertEqual((out, code), ("", 1))
        self.assertEqual(
            err,
            f"bluegreen: unexpected answer from {running.green.url}/api/status: "
            "HTTP 200 (text/html); is it bluegreen's admin API?\n",
        )

    async def test_unixSocket(self) -> None:
        """
        C{--admin unix:PATH} talks to an admin API on a UNIX socket; a
        socket that is not there is reported.
        """
        # Short: trial's temporary paths can exceed AF_UNIX's 108 bytes.
        directory = tempfile.mkdtemp(prefix="bg-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "admin.sock")
        await startService(self, "--admin", f"unix:{path}")
        out, err, code = await bluegreen("--admin", f"unix:{path}", "status")
        self.assertEqual((err, code), ("", 0))
        self.assertTrue(out.startswith("live: GREEN"))
        missing = os.path.join(directory, "missing.sock")
        out, err, code = await bluegreen("--admin", f"unix:{missing}", "status")
        self.assertEqual(
            (err, code),
            (
                f"bluegreen: cannot reach bluegreen admin at unix:{missing}: "
                "no such file or directory\n",
                1,
            ),
        )


class SwitchCommandTests(TestCase):
    """
    C{bluegreen switch}.
    """

    async def test_switch(self) -> None:
        """
        It switches and says so; the history says it came through the
        admin API.
        """
        running = await startService(self)
        out, err, code = await bluegreen("--admin", running.base, "switch", "blue")
        self.assertEqual(
            (out, err, code),
            (
                "switched to BLUE (was green): manual switch via admin API from "
                "127.0.0.1\n",
                "",
                0,
            ),
        )
        self.assertEqual(running.service.controller.live.name, "blue")

    async def test_alreadyLive(self) -> None:
        """
        A refused switch exits with status 1, the reason on stderr.
        """
        running = await startService(self)
        assertFailed(
            self,
            await bluegreen("--admin", running.base, "switch", "green"),
            "bluegreen: switch refused: green is already live\n",
        )

    async def test_down(self) -> None:
        """
        A switch to an environment that is down is refused, saying why;
        with C{--force} (anywhere on the line) it is made.
        """
        running = await startService(self, blue=False)
        assertFailed(
            self,
            await bluegreen("--admin", running.base, "switch", "blue"),
            "bluegreen: switch refused: blue is down (connection refused); "
            "use force to switch anyway\n",
        )
        out, err, code = await bluegreen(
            "switch", "blue", "--force", "--admin", running.base
        )
        self.assertEqual(
            (out, err, code),
            (
                "switched to BLUE (was green): manual switch via admin API from "
                "127.0.0.1, forced\n",
                "",
                0,
            ),
        )

    async def test_json(self) -> None:
        """
        With C{--json} it prints the API's answer.
        """
        running = await startService(self)
        out, err, code = await bluegreen(
            "--admin", running.base, "switch", "-f", "blue", "--json"
        )
        self.assertEqual((err, code), ("", 0))
        answer = json.loads(out)
        self.assertEqual(
            (answer["switched"]["to"], answer["status"]["live"]), ("blue", "blue")
        )


class CheckCommandTests(TestCase):
    """
    C{bluegreen check}.
    """

    async def test_check(self) -> None:
        """
        It runs the checks now and shows the health they found.
        """
        running = await startService(self, blue=False)
        running.blue.start()
        out, err, code = await bluegreen("--admin", running.base, "check")
        self.assertEqual((err, code), ("", 0))
        lines = out.splitlines()
        self.assertEqual(lines[0], "health checks done:")
        self.assertEqual(lines[3], f"  blue   up      {running.blue.url}")
        self.assertTrue(lines[4].lstrip().startswith("status 200 in "), lines[4])
        self.assertEqual(lines[-1], f"live: GREEN  {running.green.url}")

    async def test_json(self) -> None:
        """
        With C{--json} it prints the status after the checks.
        """
        running = await startService(self)
        out, err, code = await bluegreen("check", "--json", "--admin", running.base)
        self.assertEqual((err, code), ("", 0))
        self.assertEqual(json.loads(out)["live"], "green")


class TokenTests(TestCase):
    """
    C{--token-file} and C{BLUEGREEN_TOKEN_FILE}.
    """

    async def startWithToken(self) -> Running:
        """
        Start a service whose admin API needs the token C{t0ken}.
        """
        return await startService(self, token="t0ken")

    async def test_noToken(self) -> None:
        """
        Without a token, a change is refused (status 1) with a hint.
        """
        running = await self.startWithToken()
        assertFailed(
            self,
            await bluegreen("--admin", running.base, "switch", "blue"),
            "bluegreen: not authorized: missing Authorization: Bearer <token> "
            "(give --token-file FILE or set BLUEGREEN_TOKEN_FILE)\n",
        )
        self.assertEqual(running.service.controller.live.name, "green")

    async def test_tokenFile(self) -> None:
        """
        C{--token-file} gives the token.
        """
        running = await self.startWithToken()
        out, err, code = await bluegreen(
            "--admin",
            running.base,
            "--token-file",
            tokenFile(self, "t0ken"),
            "switch",
            "blue",
        )
        self.assertEqual((err, code), ("", 0))
        self.assertTrue(out.startswith("switched to BLUE"), out)
        self.assertEqual(running.service.controller.live.name, "blue")

    async def test_environmentVariables(self) -> None:
        """
        C{BLUEGREEN_ADMIN} and C{BLUEGREEN_TOKEN_FILE} are enough.
        """
        running = await self.startWithToken()
        out, err, code = await bluegreen(
            "check",
            env={
                "BLUEGREEN_ADMIN": running.base,
                "BLUEGREEN_TOKEN_FILE": tokenFile(self, "t0ken"),
            },
        )
        self.assertEqual((err, code), ("", 0))
        self.assertTrue(out.startswith("health checks done:"), out)

    async def test_wrongToken(self) -> None:
        """
        A wrong token is refused (status 1).
        """
        running = await self.startWithToken()
        out, err, code = await bluegreen(
            "--admin",
            running.base,
            "switch",
            "blue",
            "--token-file",
            tokenFile(self, "nope"),
        )
        self.assertEqual(
            (out, err, code),
            ("", "bluegreen: not authorized: wrong token (check the token file)\n", 1),
        )


class UsageTests(TestCase):
    """
    Usage errors exit with status 2, saying what is wrong and the usage.
    """

    async def assertUsage(
        self,
        args: list[str],
        message: str,
        usage: str,
        env: dict[str, str] | None = None,
    ) -> None:
        """
        Assert that C{bluegreen args} is a usage error with C{message}.
        """
        out, err, code = await bluegreen(*args, env=env)
        self.assertEqual(
            (out, err, code), ("", f"bluegreen: {message}\nusage: {usage}\n", 2)
        )

    async def test_noEnvironment(self) -> None:
        """
        C{switch} needs an environment.
        """
        await self.assertUsage(
            ["switch"],
            "switch: which environment? green or blue",
            "bluegreen switch green|blue [--force] [--json]",
        )

    async def test_unknownEnvironment(self) -> None:
        """
        Only green and blue exist.
        """
        await self.assertUsage(
            ["switch", "purple"],
            "switch: unknown environment 'purple'; expected green or blue",
            "bluegreen switch green|blue [--force] [--json]",
        )

    async def test_extraArgument(self) -> None:
        """
        C{status} and C{check} take no arguments.
        """
        await self.assertUsage(
            ["status", "now"],
            "status: unexpected argument 'now'",
            "bluegreen status [--json]",
        )
        await self.assertUsage(
            ["check", "green"],
            "check: unexpected argument 'green'",
            "bluegreen check [--json]",
        )

    async def test_unknownCommand(self) -> None:
        """
        An unknown command is named.
        """
        await self.assertUsage(
            ["stats"],
            "unknown command 'stats'; expected status, switch, check, promote, "
            "deployed, flag, sync or demo",
            "bluegreen [--admin URL] [--token-file FILE] [--json] "
            "status|switch|check|promote|deployed|flag|sync|demo",
        )

    async def test_unknownOption(self) -> None:
        """
        An unknown option of a command: one line naming it and pointing to
        C{--help}.
        """
        assertFailed(
            self,
            await bluegreen("status", "--force"),
            "bluegreen: option --force not recognized; see --help\n",
            code=2,
        )

    async def test_badURL(self) -> None:
        """
        C{--admin} (or C{BLUEGREEN_ADMIN}) must be an http(s) URL or a UNIX
        socket.
        """
        await self.assertUsage(
            ["--admin", "127.0.0.1:3091", "status"],
            "--admin: '127.0.0.1:3091' is not an http:// or https:// URL "
            f"(e.g. {DEFAULT_ADMIN}) or unix:/PATH",
            "bluegreen status [--json]",
        )
        await self.assertUsage(
            ["status"],
            "BLUEGREEN_ADMIN: 'ftp://x' is not an http:// or https:// URL "
            f"(e.g. {DEFAULT_ADMIN}) or unix:/PATH",
            "bluegreen status [--json]",
            env={"BLUEGREEN_ADMIN": "ftp://x"},
        )

    async def test_missingTokenFile(self) -> None:
        """
        A token file that cannot be read is named, with where it came from.
        """
        path = os.path.abspath(self.mktemp())
        await self.assertUsage(
            ["--token-file", path, "status"],
            f"--token-file: cannot read {path!r}: No such file or directory",
            "bluegreen status [--json]",
        )
        await self.assertUsage(
            ["status"],
            f"BLUEGREEN_TOKEN_FILE: cannot read {path!r}: No such file or directory",
            "bluegreen status [--json]",
            env={"BLUEGREEN_TOKEN_FILE": path},
        )

    async def test_badTimeout(self) -> None:
        """
        C{--timeout} is a positive number of seconds.
        """
        await self.assertUsage(
            ["check", "--timeout", "0"],
            "--timeout: '0' is not a positive number of seconds",
            "bluegreen check [--json]",
        )


class SettingsTests(SynchronousTestCase):
    """
    L{settingsFrom}: options, then environment variables, then defaults.
    """

    def settings(self, args: list[str], environ: dict[str, str] | None = None) -> Any:
        """
        Parse C{args} and work out the settings.
        """
        options = Options()
        options.parseOptions(args)
        return settingsFrom(options, environ or {})

    def test_defaults(self) -> None:
        """
        By default: the loopback admin API on port 3091, no token, text,
        30 s.
        """
        settings = self.settings(["status"])
        self.assertEqual(
            (settings.admin, settings.base, settings.socket, settings.token),
            (DEFAULT_ADMIN, DEFAULT_ADMIN, None, None),
        )
        self.assertEqual((settings.json, settings.timeout), (False, 30.0))

    def test_precedence(self) -> None:
        """
        The command's option wins over the global one, which wins over the
        environment variable.
        """
        environ = {"BLUEGREEN_ADMIN": "http://env:1"}
        self.assertEqual(self.settings(["status"], environ).admin, "http://env:1")
        self.assertEqual(
            self.settings(["--admin", "http://global:2", "status"], environ).admin,
            "http://global:2",
        )
        self.assertEqual(
            self.settings(
                ["--admin", "http://global:2", "status", "--admin", "http://cmd:3"],
                environ,
            ).admin,
            "http://cmd:3",
        )

    def test_basePath(self) -> None:
        """
        A base URL may have a path (behind a reverse proxy); a trailing
        slash is dropped.
        """
        settings = self.settings(["--admin", "https://ops.example/bg/", "status"])
        self.assertEqual(settings.base, "https://ops.example/bg")

    def test_unix(self) -> None:
        """
        C{unix:PATH} is a UNIX socket.
        """
        settings = self.settings(["--admin", "unix:/run/bg-admin.sock", "check"])
        self.assertEqual(
            (settings.socket, settings.base), ("/run/bg-admin.sock", "http://localhost")
        )

    def test_unixNoPath(self) -> None:
        """
        C{unix:} needs a path.
        """
        error = self.assertRaises(
            usage.UsageError, self.settings, ["--admin", "unix:", "status"]
        )
        self.assertEqual(str(error), "--admin: 'unix:' has no socket path")

    def test_badPort(self) -> None:
        """
        A URL with a bad port is refused.
        """
        error = self.assertRaises(
            usage.UsageError, self.settings, ["--admin", "http://h:99999", "status"]
        )
        self.assertEqual(str(error), "--admin: 'http://h:99999' has a bad port")


class _Terminal(io.StringIO):
    """
    A stream that says it is a terminal.
    """

    def isatty(self) -> bool:
        return True


#: A status as the admin API gives it (times fixed).
STATUS: dict[str, Any] = {
    "version": "0.1.0",
    "now": 1_000_060.0,
    "live": "blue",
    "why": "failover: green down: connection refused",
    "since": 1_000_000.0,
    "mode": "serving",
    "environments": {
        "green": {
            "url": "http://127.0.0.1:5002",
            "live": False,
            "health": {
                "state": "down",
                "up": False,
                "successes": 0,
                "failures": 3,
                "lastCheck": {
                    "ok": False,
                    "reason": "connection refused",
                    "when": 1_000_058.0,
                    "at": "",
                    "latency": 0.0012,
                    "status": None,
                    "passive": False,
                },
            },
        },
        "blue": {
            "url": "http://127.0.0.1:5001",
            "live": True,
            "health": {
                "state": "unknown",
                "up": None,
                "successes": 0,
                "failures": 0,
                "lastCheck": None,
            },
        },
    },
    "history": [
        {
            "when": 1_000_000.0,
            "at": "",
            "from": "green",
            "to": "blue",
            "reason": "failover: green down: connection refused",
        }
    ],
}


def local(when: float) -> str:
    """
    @return: C{when} as the text output shows it (local time).
    """
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


class FormatTests(SynchronousTestCase):
    """
    The text output.
    """

    def test_status(self) -> None:
        """
        The whole status, in plain text.
        """
        self.assertEqual(
            formatStatus(STATUS),
            "live: BLUE  http://127.0.0.1:5001\n"
            "why:  failover: green down: connection refused; since "
            f"{local(1_000_000)} (60 s ago)\n"
            "\n"
            "health:\n"
            "  green  down    http://127.0.0.1:5002\n"
            "         connection refused in 1 ms; 3 failed in a row; checked "
            f"{local(1_000_058)} (2 s ago)\n"
            "  blue   unknown http://127.0.0.1:5001  (live)\n"
            "         not checked yet\n"
            "\n"
            "last switches:\n"
            f"  {local(1_000_000)}  green -> blue  failover: green down: "
            "connection refused\n",
        )

    def test_colour(self) -> None:
        """
        In colour, the environments' names are in their colours, and
        "down" in red.
        """
        text = formatStatus(STATUS, colour=True)
        self.assertTrue(text.startswith("live: \x1b[1;34mBLUE\x1b[0m  "), text)
        self.assertIn("  \x1b[1;32mgreen\x1b[0m  \x1b[1;31mdown   \x1b[0m ", text)

    def test_outage(self) -> None:
        """
        An outage is called out.
        """
        text = formatStatus({**STATUS, "mode": "outage"})
        self.assertIn("\nOUTAGE: both environments are down\n", text)

    def test_switch(self) -> None:
        """
        A switch in one line.
        """
        answer = {"switched": {"from": "green", "to": "blue", "reason": "why not"}}
        self.assertEqual(
            formatSwitch(answer), "switched to BLUE (was green): why not\n"
        )
        self.assertEqual(
            formatSwitch(answer, colour=True),
            "switched to \x1b[1;34mBLUE\x1b[0m (was green): why not\n",
        )

    def test_check(self) -> None:
        """
        The check's outcome: the health, then what is live.
        """
        text = formatCheck(STATUS)
        self.assertTrue(text.startswith("health checks done:\n  green  down"), text)
        self.assertTrue(text.endswith("\nlive: BLUE  http://127.0.0.1:5001\n"), text)

    def test_useColour(self) -> None:
        """
        Colour only on a terminal, and not with C{NO_COLOR} or
        C{TERM=dumb}.
        """
        self.assertTrue(useColour(_Terminal(), {}))
        self.assertFalse(useColour(io.StringIO(), {}))
        self.assertFalse(useColour(_Terminal(), {"NO_COLOR": "1"}))
        self.assertFalse(useColour(_Terminal(), {"TERM": "dumb"}))
        self.assertTrue(useColour(_Terminal(), {"NO_COLOR": ""}))
