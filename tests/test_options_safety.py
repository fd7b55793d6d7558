# -*- test-case-name: tests.test_options_safety -*-
"""
Tests for the start-up refusals that keep the admin API and the
environments safe (L{bluegreen.service.options}, L{bluegreen.admin.token}):
a token file others could read, C{--admin-host} values that are not a
name, GREEN and BLUE at the same origin; each one line naming the option,
also from a real C{twistd bluegreen}.
"""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bluegreen.admin.guard import AdminNames
from bluegreen.admin.token import readPrivateToken, readToken
from bluegreen.service.options import Options
from tests.test_options import BLUE_URL, GREEN_URL, REQUIRED, parse
from tests.test_tap import childEnvironment, twistd


def tokenFile(testCase: SynchronousTestCase, mode: int, name: str = "") -> str:
    """
    @param mode: The file's mode.
    @param name: The file's name, in a new directory (default: any).
    @return: The path of a new token file of that mode.
    """
    path = os.path.abspath(testCase.mktemp())
    if name:
        os.makedirs(path)
        path = os.path.join(path, name)
    with open(path, "w") as f:
        f.write("t0ken\n")
    os.chmod(path, mode)
    return path


def refusal(*args: str) -> str:
    """
    @return: The message of the usage error C{args} (after the required
        options) end in.
    """
    try:
        Options().parseOptions([*REQUIRED, *args])
    except usage.UsageError as e:
        return str(e)
    raise AssertionError(f"{args} were accepted")


class TokenFileModeTests(SynchronousTestCase):
    """
    C{--admin-token-file} must be its owner's alone, as ssh's private keys.
    """

    def test_refused(self) -> None:
        """
        A token file its group or other users may read or write is refused
        with the C{chmod} to run.
        """
        for mode, who in [
            (0o644, "readable by others"),
            (0o604, "readable by others"),
            (0o640, "readable by its group"),
            (0o440, "readable by its group"),
            (0o602, "writable by others"),
            (0o620, "writable by its group"),
            (0o610, "open to its group or others"),
        ]:
            path = tokenFile(self, mode)
            self.assertEqual(
                refusal("--admin-token-file", path),
                f"--admin-token-file: {path!r} is {who} (mode {mode:04o}); run: "
                f"chmod 600 {path}",
            )

    def test_example(self) -> None:
        """
        The usual case, a file written with umask 022.
        """
        path = tokenFile(self, 0o644)
        self.assertEqual(
            refusal("--admin-token-file", path),
            f"--admin-token-file: {path!r} is readable by others (mode 0644); "
            f"run: chmod 600 {path}",
        )

    def test_quotedPath(self) -> None:
        """
        The C{chmod} command can be pasted into a shell as it is.
        """
        path = tokenFile(self, 0o644, "my token")
        self.assertTrue(
            refusal("--admin-token-file", path).endswith(f"run: chmod 600 '{path}'")
        )

    def test_private(self) -> None:
        """
        A file only its owner may read (0600, 0400, 0700) is used.
        """
        for mode in (0o600, 0o400, 0o700):
            path = tokenFile(self, mode)
            self.assertEqual(
                parse("--admin-token-file", path).config.adminToken, b"t0ken"
            )
            self.assertEqual(readPrivateToken(path), b"t0ken")

    def test_commandReadsAny(self) -> None:
        """
        The C{bluegreen} command's C{--token-file} (L{readToken}) is not
        refused for its mode: it is the operator's own copy of a secret they
        already hold.
        """
        self.assertEqual(readToken(tokenFile(self, 0o644)), b"t0ken")


class AdminHostOptionTests(SynchronousTestCase):
    """
    C{--admin-host}: more names the admin API answers to.
    """

    def test_default(self) -> None:
        """
        By default, none: only loopback and the admin API's own address.
        """
        self.assertEqual(parse().config.adminNames, AdminNames())

    def test_repeatable(self) -> None:
        """
        Each C{--admin-host} adds a name (normalised).
        """
        config = parse(
            "--admin-host", "Ops.Example", "--admin-host", "[2001:db8::1]"
        ).config
        self.assertEqual(
            config.adminNames.names, frozenset({"ops.example", "2001:db8::1"})
        )

    def test_bad(self) -> None:
        """
        A value with a port or scheme, or empty, is refused naming the
        option.
        """
        for value in ("ops.example:3091", "http://ops.example", "", "a b"):
            self.assertEqual(
                refusal("--admin-host", value),
                f"--admin-host: {value!r} is not a host name or IP address; give "
                "a name or address only, without scheme or port (e.g. "
                "--admin-host ops.example)",
            )


class SameOriginTests(SynchronousTestCase):
    """
    GREEN and BLUE must be two apps.
    """

    def test_refused(self) -> None:
        """
        C{--green} and C{--blue} with the same scheme, host and port,
        compared normalised, are refused.
        """
        for blue in (
            GREEN_URL,
            GREEN_URL + "/",
            GREEN_URL.upper(),
            " " + GREEN_URL,
        ):
            error = self.assertRaises(
                usage.UsageError,
                Options().parseOptions,
                ["--green", GREEN_URL, "--blue", blue, "--admin", "none"],
            )
            self.assertEqual(
                str(error),
                f"--blue: {blue!r} is the same origin as --green "
                f"({GREEN_URL}); GREEN and BLUE must be two different apps",
            )

    def test_defaultPort(self) -> None:
        """
        A default port written out is the same origin.
        """
        error = self.assertRaises(
            usage.UsageError,
            Options().parseOptions,
            ["--green", "http://h", "--blue", "http://H:80/", "--admin", "none"],
        )
        self.assertIn("is the same origin as --green (http://h:80)", str(error))

    def test_different(self) -> None:
        """
        Another port, host or scheme is another app.
        """
        for blue in (
            "http://127.0.0.1:5003",
            "http://127.0.0.2:5002",
            "https://127.0.0.1:5002",
        ):
            options = Options()
            options.parseOptions(["--green", GREEN_URL, "--blue", blue])
            self.assertEqual(options.config.environments["blue"].url, blue)
        self.assertNotEqual(GREEN_URL, BLUE_URL)


class TwistdTests(TestCase):
    """
    The refusals from a real C{twistd bluegreen}: status 1, one line on
    standard error, nothing started.
    """

    async def test_oneLine(self) -> None:
        """
        A world-readable token file and the same origin twice each end
        twistd with one line.
        """
        path = tokenFile(self, 0o644)
        for args, line in (
            (
                [*REQUIRED, "--admin-token-file", path],
                f"bluegreen: --admin-token-file: {path!r} is readable by others "
                f"(mode 0644); run: chmod 600 {path}",
            ),
            (
                ["--green", GREEN_URL, "--blue", GREEN_URL + "/"],
                f"bluegreen: --blue: '{GREEN_URL}/' is the same origin as --green "
                f"({GREEN_URL}); GREEN and BLUE must be two different apps",
            ),
        ):
            command = [*twistd(), "-n", "--pidfile=", "bluegreen", *args]
            d: Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
                command[0], command[1:], env=childEnvironment()
            )
            out, err, code = await d
            self.assertEqual(
                (out.decode(), err.decode(), code), ("", f"{line}; see --help\n", 1)
            )
