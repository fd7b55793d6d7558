# -*- test-case-name: tests.test_cli -*-
"""
Tests for L{bluegreen.cli}, the C{bluegreen} console command.
"""

from __future__ import annotations

import io
import os
import sys
from contextlib import redirect_stderr, redirect_stdout

from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from bluegreen import __version__
from bluegreen.cli import main


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
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    d: Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
        consoleScript(), args, env=env
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
        An unknown option exits with status 2, saying so and showing the
        usage on stderr, without a traceback.
        """
        out, err, code = await runScript("--bogus")
        self.assertEqual((out, code), ("", 2))
        self.assertEqual(
            err,
            "bluegreen: option --bogus not recognized\nusage: bluegreen [--admin URL] "
            "[--token-file FILE] [--json] status|switch|check|flag\n",
        )


class MainTests(SynchronousTestCase):
    """
    L{main} run in this process.
    """

    def test_noArguments(self) -> None:
        """
        Without arguments, L{main} prints the usage and returns 0.
        """
        out = io.StringIO()
        with redirect_stdout(out):
            code = main([])
        self.assertEqual(code, 0)
        self.assertIn("--version", out.getvalue())

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
            "status|switch|check|flag\n",
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
