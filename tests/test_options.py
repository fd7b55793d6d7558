# -*- test-case-name: tests.test_options -*-
"""
Tests for L{bluegreen.service.options}: every option of C{twistd bluegreen}
checked, and turned into a L{bluegreen.service.config.Config}.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from contextlib import redirect_stdout

from cryptography.hazmat.primitives import serialization
from twisted.internet.ssl import optionsForClientTLS
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from bluegreen import __version__
from bluegreen.environment import Environment
from bluegreen.service.tap import (
    Options,
)
from tests._certificates import selfSigned

GREEN_URL = "http://127.0.0.1:5002"
BLUE_URL = "http://127.0.0.1:5001"
#: The required URLs, and no admin API: tests never listen on its default
#: port 3091 (those that want one ask for it).
REQUIRED = ["--green", GREEN_URL, "--blue", BLUE_URL, "--admin", "none"]

#: What C{twistd} prints for a usage error in the C{--port} value C{bogus:1}.
BOGUS_PORT = (
    "--port: 'bogus:1' is not a valid endpoint "
    "(e.g. 3090, tcp:3090:interface=127.0.0.1, unix:/run/bg.sock): "
)


def parse(*args: str) -> Options:
    """
    Parse C{twistd bluegreen} options: the two required URLs, then C{args}
    (a later option overrides an earlier one).

    @param args: More command-line arguments.
    @return: The parsed options.
    """
    options = Options()
    options.parseOptions([*REQUIRED, *args])
    return options


def makeCertificate(commonName: str) -> bytes:
    """
    Make a self-signed CA certificate.

    @param commonName: The certificate's subject CN.
    @return: The certificate, PEM-encoded.
    """
    _key, certificate = selfSigned(commonName)
    return certificate.public_bytes(serialization.Encoding.PEM)


def bad(option: str, value: str) -> list[str]:
    """
    @return: The required options, then C{option value}.
    """
    return [*REQUIRED, option, value]


def _badNumbers() -> list[tuple[str, list[str], str]]:
    """
    @return: The rows of L{BAD_OPTIONS} for the options that take seconds
        or a count.
    """
    rows = []
    for option in ("connect-timeout", "response-timeout", "idle-timeout"):
        stem = "".join(w.title() for w in option.split("-"))
        stem = stem[0].lower() + stem[1:]
        for suffix, value in (
            ("Negative", "-1"),
            ("Zero", "0"),
            ("Word", "abc"),
            ("NaN", "nan"),
            ("Infinite", "inf"),
        ):
            rows.append(
                (
                    stem + suffix,
                    bad(f"--{option}", value),
                    f"--{option}: {value!r} is not a positive number of seconds",
                )
            )
    for suffix, value in (
        ("Zero", "0"),
        ("Negative", "-1"),
        ("Word", "abc"),
        ("Fraction", "2.5"),
        # A superscript digit is not a number (and not a crash).
        ("NotASCIIDigit", "\N{SUPERSCRIPT THREE}"),
    ):
        rows.append(
            (
                "maxConnections" + suffix,
                bad("--max-connections", value),
                f"--max-connections: {value!r} is not a whole number >= 1",
            )
        )
    return rows


#: Bad command lines and exactly what is said about each: (test name,
#: arguments, message).  Each row is reported as a test of its own,
#: C{OptionErrorTests.test_<name>}.
BAD_OPTIONS: list[tuple[str, list[str], str]] = [
    (
        "missingGreen",
        ["--blue", BLUE_URL],
        "--green is required: the URL of the GREEN environment, "
        "e.g. --green http://127.0.0.1:5002",
    ),
    (
        "missingBlue",
        ["--green", GREEN_URL],
        "--blue is required: the URL of the BLUE environment, "
        "e.g. --blue http://127.0.0.1:5001",
    ),
    # With neither URL, the error is about --green, the first.
    (
        "missingBoth",
        [],
        "--green is required: the URL of the GREEN environment, "
        "e.g. --green http://127.0.0.1:5002",
    ),
    (
        "urlScheme",
        bad("--green", "ftp://127.0.0.1:5002"),
        "--green: 'ftp://127.0.0.1:5002' must start with http:// or "
        "https:// (e.g. http://127.0.0.1:5002)",
    ),
    (
        "urlNoHost",
        bad("--blue", "http://:5001"),
        "--blue: 'http://:5001' has no host name",
    ),
    (
        "urlPath",
        bad("--blue", "http://127.0.0.1:5001/x"),
        "--blue: 'http://127.0.0.1:5001/x' must be an origin only (scheme, "
        "host and port): the proxy forwards each request's own path unchanged",
    ),
    # User information is refused without echoing the password.
    (
        "urlUserInfo",
        bad("--green", "http://admin:hunter2@127.0.0.1:5002"),
        "--green: the URL for host '127.0.0.1' must not contain user "
        "information (user:password@)",
    ),
    (
        "urlBadPort",
        bad("--green", "http://127.0.0.1:99999"),
        "--green: 'http://127.0.0.1:99999' is not a valid URL (Port out of "
        "range 0-65535)",
    ),
    (
        "urlEmpty",
        bad("--blue", ""),
        "--blue: an empty URL; expected e.g. http://127.0.0.1:5002",
    ),
    (
        "active",
        bad("--active", "red"),
        "--active: unknown environment 'red'; expected green or blue",
    ),
    # Environment names are lower case.
    (
        "activeCase",
        bad("--active", "GREEN"),
        "--active: unknown environment 'GREEN'; expected green or blue",
    ),
    (
        "portZero",
        bad("--port", "0"),
        "--port: '0' is not a TCP port number (1-65535)",
    ),
    (
        "portTooBig",
        bad("--port", "70000"),
        "--port: '70000' is not a TCP port number (1-65535)",
    ),
    (
        "portEmpty",
        bad("--port", " "),
        "--port: empty; give a port number or endpoint string",
    ),
    (
        "portEndpointTooBig",
        bad("--port", "tcp:70000"),
        "--port: 'tcp:70000': 70000 is not a TCP port number (0-65535)",
    ),
    (
        "portEndpointNegative",
        bad("--port", "tcp:-1:interface=127.0.0.1"),
        "--port: 'tcp:-1:interface=127.0.0.1': -1 is not a TCP port number (0-65535)",
    ),
    (
        "portUnixNoPath",
        bad("--port", "unix:"),
        "--port: 'unix:' has no socket path (e.g. unix:/run/bg.sock)",
    ),
    *_badNumbers(),
    (
        "upstreamHostHeader",
        bad("--upstream-host-header", "other"),
        "--upstream-host-header: 'other' must be 'client' or 'target'",
    ),
    *(
        (
            "healthMaxBody" + suffix,
            bad("--health-max-body", value),
            f"--health-max-body: {value!r} is not a whole number of bytes >= 0 "
            "(e.g. 65536, 64K, 1M)",
        )
        for suffix, value in (
            ("Negative", "-1"),
            ("Word", "lots"),
            ("Fraction", "1.5K"),
            ("Empty", ""),
            ("SuffixOnly", "K"),
            ("OtherSuffix", "1G"),
            ("Spaced", "64 K"),
            ("NotASCIIDigit", "\N{SUPERSCRIPT THREE}"),
        )
    ),
    (
        "healthExpectBodyEmpty",
        bad("--health-expect-body", ""),
        "--health-expect-body: the text is empty (leave the option out to "
        "check the status only)",
    ),
    (
        "healthExpectBodyOverWindow",
        [*bad("--health-expect-body", "meow.io"), "--health-max-body", "4"],
        "--health-expect-body: 'meow.io' is 7 bytes, more than "
        "--health-max-body (4) lets a check read",
    ),
    (
        "healthExpectBodyZeroWindow",
        [*bad("--health-expect-body", "\N{CAT FACE}"), "--health-max-body", "0"],
        "--health-expect-body: '\N{CAT FACE}' is 4 bytes, more than "
        "--health-max-body (0) lets a check read",
    ),
]

#: Bad command lines whose message ends with Twisted's own words: (test
#: name, arguments, our part of the message (its start), a part of
#: Twisted's explanation).
BAD_OPTION_PREFIXES: list[tuple[str, list[str], str, str]] = [
    (
        "portWord",
        bad("--port", "abc"),
        "--port: 'abc' is not a valid endpoint (e.g. 3090, "
        "tcp:3090:interface=127.0.0.1, unix:/run/bg.sock): ",
        "Unknown endpoint type: 'abc'",
    ),
    # A superscript digit is not a port number (and not a crash).
    (
        "portNotASCIIDigit",
        bad("--port", "\N{SUPERSCRIPT THREE}"),
        "--port: '\N{SUPERSCRIPT THREE}' is not a valid endpoint",
        "Unknown endpoint type",
    ),
    (
        "portEndpointNotANumber",
        bad("--port", "tcp:notaport"),
        "--port: 'tcp:notaport' is not a valid endpoint (e.g. 3090, "
        "tcp:3090:interface=127.0.0.1, unix:/run/bg.sock): ",
        "'notaport'",
    ),
    (
        "portUnknownType",
        bad("--port", "bogus:1"),
        BOGUS_PORT,
        "Unknown endpoint type: 'bogus'",
    ),
]


class OptionErrorTests(SynchronousTestCase):
    """
    Every bad option is a usage error whose message names the option and
    says what is wrong with it.

    The rows of L{BAD_OPTIONS} and L{BAD_OPTION_PREFIXES} become this
    class's C{test_<name>} methods (see the end of this module's table
    code); the bad options that need files are tested below.
    """

    def assertUsageError(self, args: list[str], message: str) -> None:
        """
        Assert that parsing C{args} fails with exactly C{message}.

        @param args: The whole command line after C{bluegreen}.
        @param message: The expected message.
        """
        error = self.assertRaises(usage.UsageError, Options().parseOptions, args)
        self.assertEqual(str(error), message, f"bluegreen {args}")

    def assertBad(self, option: str, value: str, message: str) -> None:
        """
        Assert that C{option value}, with valid required options, fails with
        exactly C{message}.

        @param option: The option, e.g. C{--port}.
        @param value: Its bad value.
        @param message: The expected message.
        """
        self.assertUsageError(bad(option, value), message)

    def assertUsageErrorPrefix(self, args: list[str], prefix: str, reason: str) -> None:
        """
        Like L{assertUsageError} where the message ends with Twisted's own
        words: the message must start with C{prefix} and contain C{reason}.

        @param args: The whole command line after C{bluegreen}.
        @param prefix: Our part of the message.
        @param reason: Twisted's explanation, or part of it.
        """
        error = self.assertRaises(usage.UsageError, Options().parseOptions, args)
        self.assertTrue(str(error).startswith(prefix), str(error))
        self.assertIn(reason, str(error)[len(prefix) :])

    def test_upstreamCAMissing(self) -> None:
        """
        A C{--upstream-ca} file that does not exist is refused.
        """
        path = os.path.abspath(self.mktemp())
        self.assertBad(
            "--upstream-ca",
            path,
            f"--upstream-ca: cannot read {path}: No such file or directory",
        )

    def test_upstreamCANotPEM(self) -> None:
        """
        A C{--upstream-ca} file that holds no PEM certificate is refused.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("not a certificate\n")
        self.assertBad(
            "--upstream-ca",
            path,
            f"--upstream-ca: {path} does not hold a PEM certificate",
        )

    def test_accessLogMissingDirectory(self) -> None:
        """
        An C{--access-log} in a directory that does not exist is refused.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "access.log")
        self.assertBad(
            "--access-log",
            path,
            f"--access-log: {path!r} is not a file in an existing directory",
        )

    def test_accessLogDirectory(self) -> None:
        """
        An C{--access-log} that is a directory is refused.
        """
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        self.assertBad(
            "--access-log",
            path,
            f"--access-log: {path!r} is not a file in an existing directory",
        )


def _tableTest(check: Callable[[OptionErrorTests], None], name: str, doc: str) -> None:
    """
    Add C{check} to L{OptionErrorTests} as C{test_<name>}.
    """
    check.__name__ = f"test_{name}"
    check.__doc__ = doc
    setattr(OptionErrorTests, check.__name__, check)


def _addTableTests() -> None:
    """
    Make a test of each row of L{BAD_OPTIONS} and L{BAD_OPTION_PREFIXES}.
    """
    for name, args, message in BAD_OPTIONS:

        def exact(
            self: OptionErrorTests, args: list[str] = args, message: str = message
        ) -> None:
            self.assertUsageError(args, message)

        _tableTest(exact, name, f"C{{bluegreen {' '.join(args)}}}: C{{{message}}}.")
    for name, args, prefix, reason in BAD_OPTION_PREFIXES:

        def prefixed(
            self: OptionErrorTests,
            args: list[str] = args,
            prefix: str = prefix,
            reason: str = reason,
        ) -> None:
            self.assertUsageErrorPrefix(args, prefix, reason)

        _tableTest(
            prefixed, name, f"C{{bluegreen {' '.join(args)}}}: C{{{prefix}...}}."
        )


_addTableTests()


class HealthBodyOptionTests(SynchronousTestCase):
    """
    C{--health-max-body} and C{--health-expect-body} become the health
    settings' C{maxBody} and C{expectBody}.
    """

    def test_defaults(self) -> None:
        """
        By default the window is 64 KiB and no text is required.
        """
        health = parse().config.health
        self.assertEqual((health.maxBody, health.expectBody), (65536, None))

    def test_maxBody(self) -> None:
        """
        Bytes, or K (1024) and M (1024 * 1024) in either case; 0 is allowed
        (the status alone decides).
        """
        for value, expected in (
            ("65536", 65536),
            ("0", 0),
            ("64K", 65536),
            ("64k", 65536),
            ("1M", 1048576),
            ("2m", 2097152),
            (" 512 ", 512),
        ):
            self.assertEqual(
                parse("--health-max-body", value).config.health.maxBody, expected
            )

    def test_expectBody(self) -> None:
        """
        The text is kept UTF-8 encoded; it may fill the window exactly.
        """
        health = parse(
            "--health-expect-body", "\N{CAT FACE} meow", "--health-max-body", "9"
        ).config.health
        self.assertEqual(health.expectBody, "\N{CAT FACE} meow".encode())
        self.assertEqual(health.maxBody, 9)


class OptionTests(SynchronousTestCase):
    """
    Good options are accepted and turned into what L{makeService} needs.
    """

    def test_defaults(self) -> None:
        """
        With only the URLs given, bluegreen listens on port 3090 on every
        interface with green live, and the documented defaults.
        """
        options = parse()
        self.assertEqual(
            {
                **{
                    key: getattr(options.config, key)
                    for key in (
                        "endpoint",
                        "connectTimeout",
                        "responseTimeout",
                        "idleTimeout",
                        "maxConnections",
                        "trustRoot",
                    )
                },
                **{
                    key: options[key]
                    for key in ("active", "upstream-host-header", "access-log")
                },
            },
            {
                "endpoint": "tcp:3090",
                "active": "green",
                "upstream-host-header": "client",
                "connectTimeout": 5.0,
                "responseTimeout": 60.0,
                "idleTimeout": 4.0,
                "maxConnections": 100,
                "access-log": "-",
                "trustRoot": None,
            },
        )

    def test_environments(self) -> None:
        """
        The URLs become the two environments.
        """
        self.assertEqual(
            parse().config.environments,
            {
                "green": Environment.fromURL("green", GREEN_URL),
                "blue": Environment.fromURL("blue", BLUE_URL),
            },
        )

    def test_barePort(self) -> None:
        """
        A bare port number listens on every interface over TCP.
        """
        self.assertEqual(parse("--port", "3090").config.endpoint, "tcp:3090")

    def test_barePortSpaces(self) -> None:
        """
        Spaces around a bare port number are ignored.
        """
        self.assertEqual(parse("--port", " 8080 ").config.endpoint, "tcp:8080")

    def test_shortPort(self) -> None:
        """
        C{-p} is short for C{--port}.
        """
        self.assertEqual(parse("-p", "65535").config.endpoint, "tcp:65535")

    def test_tcpEndpoint(self) -> None:
        """
        A TCP endpoint string is used as it is.
        """
        self.assertEqual(
            parse("--port", "tcp:3090:interface=127.0.0.1").config.endpoint,
            "tcp:3090:interface=127.0.0.1",
        )

    def test_tcp6Endpoint(self) -> None:
        """
        An IPv6 TCP endpoint string is used as it is.
        """
        self.assertEqual(
            parse("--port", r"tcp6:3090:interface=\:\:1").config.endpoint,
            r"tcp6:3090:interface=\:\:1",
        )

    def test_tcpEndpointAnyPort(self) -> None:
        """
        A C{tcp:0} endpoint (any free port) is allowed, as in Twisted.
        """
        self.assertEqual(parse("--port", "tcp:0").config.endpoint, "tcp:0")

    def test_unixEndpoint(self) -> None:
        """
        A UNIX socket endpoint string is used as it is.
        """
        self.assertEqual(
            parse("--port", "unix:/run/bluegreen.sock").config.endpoint,
            "unix:/run/bluegreen.sock",
        )

    def test_values(self) -> None:
        """
        Every option's value is converted.
        """
        options = parse(
            "--active",
            "blue",
            "--upstream-host-header",
            "target",
            "--connect-timeout",
            "1.5",
            "--response-timeout",
            "30",
            "--idle-timeout",
            "0.25",
            "--max-connections",
            "7",
        )
        self.assertEqual(
            (
                options["active"],
                options["upstream-host-header"],
                options.config.connectTimeout,
                options.config.responseTimeout,
                options.config.idleTimeout,
                options.config.maxConnections,
            ),
            ("blue", "target", 1.5, 30.0, 0.25, 7),
        )

    def test_upstreamCA(self) -> None:
        """
        A PEM CA certificate given with C{--upstream-ca} becomes a trust root
        that TLS client options accept.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(makeCertificate("bluegreen test CA"))
        trustRoot = parse("--upstream-ca", path).config.trustRoot
        self.assertIsNotNone(trustRoot)
        optionsForClientTLS("example.com", trustRoot=trustRoot)

    def test_accessLogFile(self) -> None:
        """
        An C{--access-log} file in an existing directory is accepted (and
        not yet created).
        """
        path = os.path.join(os.path.abspath(self.mktemp()))
        self.assertEqual(parse("--access-log", path)["access-log"], path)
        self.assertFalse(os.path.exists(path))

    def test_version(self) -> None:
        """
        C{--version} prints the version and exits successfully.
        """
        out = io.StringIO()
        with redirect_stdout(out):
            error = self.assertRaises(SystemExit, Options().parseOptions, ["--version"])
        self.assertEqual(
            (error.code, out.getvalue()), (0, f"bluegreen {__version__}\n")
        )


class RefusalTestCase(SynchronousTestCase):
    """
    The tests of options that the required options plus some are refused.
    """

    def assertRefused(self, args: list[str], message: str) -> None:
        """
        Assert that the required options plus C{args} fail with exactly
        C{message}.
        """
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, [*REQUIRED, *args]
        )
        self.assertEqual(str(error), message)


class AdminOptionTests(RefusalTestCase):
    """
    C{--admin} and C{--admin-token-file}: where the admin API listens, and
    the token its changes need.
    """

    def tokenFile(self, content: bytes) -> str:
        """
        @param content: What the file holds.
        @return: The path of a new file holding C{content}.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, 0o600)
        return path

    def test_default(self) -> None:
        """
        By default the admin API listens on port 3091 of 127.0.0.1, without
        a token.
        """
        options = Options()
        options.parseOptions(["--green", GREEN_URL, "--blue", BLUE_URL])
        self.assertEqual(
            (options.config.adminEndpoint, options.config.adminToken),
            ("tcp:3091:interface=127.0.0.1", None),
        )

    def test_none(self) -> None:
        """
        C{--admin none} turns the admin API off.
        """
        self.assertIsNone(parse("--admin", "none").config.adminEndpoint)

    def test_loopback(self) -> None:
        """
        Without a token, the admin API may listen on any loopback address
        (IPv4, IPv6, C{localhost}) or on a UNIX socket.
        """
        for value in [
            "tcp:4000:interface=127.0.0.1",
            "tcp:4000:interface=127.1.2.3",
            r"tcp6:4000:interface=\:\:1",
            r"tcp6:4000:interface=\:\:ffff\:127.0.0.1",
            "tcp:4000:interface=localhost",
            "tcp:0:interface=127.0.0.1",
            "unix:/run/bluegreen-admin.sock",
        ]:
            self.assertEqual(parse("--admin", value).config.adminEndpoint, value)

    def test_allInterfacesNeedsToken(self) -> None:
        """
        An admin API on every interface without a token is refused, naming
        C{--admin} and C{--admin-token-file}.
        """
        self.assertRefused(
            ["--admin", "tcp:3091"],
            "--admin: 'tcp:3091' listens on all interfaces, so other machines "
            "could switch traffic: give --admin-token-file FILE, or listen on "
            "loopback only (e.g. --admin tcp:3091:interface=127.0.0.1)",
        )

    def test_barePortNeedsToken(self) -> None:
        """
        A bare port number means every interface (as for C{--port}), so it
        needs a token too.
        """
        self.assertRefused(
            ["--admin", "3091"],
            "--admin: '3091' listens on all interfaces, so other machines "
            "could switch traffic: give --admin-token-file FILE, or listen on "
            "loopback only (e.g. --admin tcp:3091:interface=127.0.0.1)",
        )

    def test_otherExposedInterfaces(self) -> None:
        """
        Every interface over IPv6, an address of the machine or a host name
        are not loopback: each needs a token.
        """
        for value, where in [
            ("tcp6:3091", "all interfaces"),
            ("tcp:3091:interface=0.0.0.0", "all interfaces"),
            ("tcp:3091:interface=10.0.0.5", "interface 10.0.0.5"),
            ("tcp:3091:interface=admin.example", "interface admin.example"),
        ]:
            error = self.assertRaises(
                usage.UsageError,
                Options().parseOptions,
                [*REQUIRED, "--admin", value],
            )
            self.assertTrue(
                str(error).startswith(f"--admin: {value!r} listens on {where}, "),
                str(error),
            )
            self.assertIn("--admin-token-file", str(error))

    def test_exposedWithToken(self) -> None:
        """
        With a token, the admin API may listen on every interface.
        """
        path = self.tokenFile(b"s3cret\n")
        options = parse("--admin", "tcp:3091", "--admin-token-file", path)
        self.assertEqual(
            (options.config.adminEndpoint, options.config.adminToken),
            ("tcp:3091", b"s3cret"),
        )

    def test_tokenWithoutAdmin(self) -> None:
        """
        A token file is still read (and checked) with C{--admin none}.
        """
        options = parse("--admin-token-file", self.tokenFile(b"  tok  \r\n"))
        self.assertEqual(options.config.adminToken, b"tok")

    def test_tokenFileMissing(self) -> None:
        """
        A token file that does not exist is refused.
        """
        path = os.path.abspath(self.mktemp())
        self.assertRefused(
            ["--admin-token-file", path],
            f"--admin-token-file: cannot read {path!r}: No such file or directory",
        )

    def test_tokenFileDirectory(self) -> None:
        """
        A directory is not a token file.
        """
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        self.assertRefused(
            ["--admin-token-file", path],
            f"--admin-token-file: cannot read {path!r}: Is a directory",
        )

    def test_tokenFileEmpty(self) -> None:
        """
        An empty token file (or one of only white space) is refused.
        """
        for content in (b"", b" \n\n"):
            path = self.tokenFile(content)
            self.assertRefused(
                ["--admin-token-file", path],
                f"--admin-token-file: {path!r} is empty",
            )

    def test_tokenFileBadCharacters(self) -> None:
        """
        A token that could not be sent in an C{Authorization} header (inner
        spaces, control characters, non-ASCII) is refused.
        """
        for content in (
            b"two words",
            b"tab\there",
            "caf\N{LATIN SMALL LETTER E WITH ACUTE}".encode(),
        ):
            path = self.tokenFile(content)
            self.assertRefused(
                ["--admin-token-file", path],
                f"--admin-token-file: {path!r} must hold one token of printable "
                "ASCII characters without spaces",
            )

    def test_badEndpoint(self) -> None:
        """
        A C{--admin} that is not an endpoint is refused, with C{--admin}
        examples.
        """
        error = self.assertRaises(
            usage.UsageError,
            Options().parseOptions,
            [*REQUIRED, "--admin", "bogus:1"],
        )
        self.assertTrue(
            str(error).startswith(
                "--admin: 'bogus:1' is not a valid endpoint (e.g. "
                "tcp:3091:interface=127.0.0.1, unix:/run/bg-admin.sock): "
            ),
            str(error),
        )

    def test_badAdminPorts(self) -> None:
        """
        Out-of-range ports, an empty value and a UNIX socket without a path
        are refused, naming C{--admin}.
        """
        for value, message in [
            (
                "tcp:70000:interface=127.0.0.1",
                "--admin: 'tcp:70000:interface=127.0.0.1': 70000 is not a TCP "
                "port number (0-65535)",
            ),
            ("0", "--admin: '0' is not a TCP port number (1-65535)"),
            ("", "--admin: empty; give a port number or endpoint string"),
            ("unix:", "--admin: 'unix:' has no socket path (e.g. unix:/run/bg.sock)"),
        ]:
            self.assertRefused(["--admin", value], message)

    def test_proxiedPort(self) -> None:
        """
        The admin API never shares the proxied port (or socket).
        """
        self.assertRefused(
            ["--port", "4000", "--admin", "tcp:4000:interface=127.0.0.1"],
            "--admin: 'tcp:4000:interface=127.0.0.1' is the proxied port "
            "(--port 4000); the admin API needs its own",
        )
        self.assertRefused(
            ["--port", "unix:/run/bg.sock", "--admin", "unix:/run/bg.sock"],
            "--admin: 'unix:/run/bg.sock' is the proxied port "
            "(--port unix:/run/bg.sock); the admin API needs its own",
        )

    def test_bothOnAnyPort(self) -> None:
        """
        Port 0 (any free port) for both is not the same port.
        """
        options = parse(
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--admin",
            "tcp:0:interface=127.0.0.1",
        )
        self.assertEqual(options.config.adminEndpoint, "tcp:0:interface=127.0.0.1")


class ManholeOptionTests(RefusalTestCase):
    """
    The C{--manhole*} options: both manholes are off by default, the telnet
    one needs a password file and loopback (or a UNIX socket), the SSH one
    needs keys or passwords.
    """

    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.passwd = os.path.join(directory, "passwd")
        with open(self.passwd, "w") as f:
            f.write("alice:s3cret\n")
        os.chmod(self.passwd, 0o600)
        self.keys = os.path.join(directory, "keys")
        with open(self.keys, "w") as f:
            f.write(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDZcpNlqVMf0VzLRhWgi6bmq"
                "WcIHsUlCRaGUvyFQYnd2 alice@laptop\n"
            )
        self.hostKey = os.path.join(directory, "host_key")

    def test_off(self) -> None:
        """
        Without C{--manhole} or C{--manhole-ssh} there is no manhole, and
        the other manhole options are not looked at.
        """
        self.assertIsNone(parse().config.manhole)
        self.assertIsNone(parse("--manhole-passwd", "/nonexistent").config.manhole)

    def test_telnet(self) -> None:
        """
        The telnet manhole may listen on loopback (IPv4, IPv6, C{localhost})
        or a UNIX socket; C{--manhole-keys} is not used by it.
        """
        for value in [
            "tcp:6023:interface=127.0.0.1",
            r"tcp6:6023:interface=\:\:1",
            "tcp:6023:interface=localhost",
            "unix:/run/bluegreen/manhole.sock:mode=600",
        ]:
            settings = parse(
                "--manhole",
                value,
                "--manhole-passwd",
                self.passwd,
                "--manhole-keys",
                self.keys,
            ).config.manhole
            assert settings is not None
            self.assertEqual(
                (settings.telnet, settings.ssh, settings.passwd, settings.keys),
                (value, None, self.passwd, None),
            )

    def test_telnetNeedsPasswd(self) -> None:
        """
        The telnet manhole needs a password file.
        """
        self.assertRefused(
            ["--manhole", "tcp:6023:interface=127.0.0.1"],
            "--manhole: the telnet manhole needs --manhole-passwd FILE "
            "(user:password lines)",
        )
        self.assertRefused(
            ["--manhole", "tcp:6023:interface=127.0.0.1", "--manhole-keys", self.keys],
            "--manhole: the telnet manhole needs --manhole-passwd FILE "
            "(user:password lines); --manhole-keys is for --manhole-ssh",
        )

    def test_telnetExposed(self) -> None:
        """
        A telnet manhole that other machines could reach is refused, naming
        where it would listen.
        """
        for value, where in [
            ("6023", "all interfaces"),
            ("tcp:6023", "all interfaces"),
            ("tcp:6023:interface=0.0.0.0", "all interfaces"),
            ("tcp6:6023", "all interfaces"),
            ("tcp:6023:interface=10.0.0.5", "interface 10.0.0.5"),
        ]:
            self.assertRefused(
                ["--manhole", value, "--manhole-passwd", self.passwd],
                f"--manhole: {value!r} listens on {where}; the telnet manhole "
                "sends passwords and Python code unencrypted, so it may listen "
                "only on loopback or a UNIX socket (e.g. --manhole "
                "tcp:6023:interface=127.0.0.1 or --manhole "
                "unix:/run/bluegreen/manhole.sock:mode=600); use --manhole-ssh "
                "to reach it from other machines",
            )

    def test_badEndpoint(self) -> None:
        """
        A manhole endpoint that is not one is refused.
        """
        self.assertRefused(
            ["--manhole", "bogus:1", "--manhole-passwd", self.passwd],
            "--manhole: 'bogus:1' is not a valid endpoint (e.g. "
            "tcp:6023:interface=127.0.0.1, unix:/run/bluegreen/manhole.sock): "
            "Unknown endpoint type: 'bogus'",
        )
        self.assertRefused(
            ["--manhole-ssh", "tcp:70000", "--manhole-passwd", self.passwd],
            "--manhole-ssh: 'tcp:70000': 70000 is not a TCP port number (0-65535)",
        )

    def test_passwdUnusable(self) -> None:
        """
        A password file that is missing, open to other users or malformed is
        refused.
        """
        missing = self.passwd + ".missing"
        self.assertRefused(
            ["--manhole", "tcp:6023:interface=127.0.0.1", "--manhole-passwd", missing],
            f"--manhole-passwd: cannot read {missing!r}: No such file or directory",
        )
        os.chmod(self.passwd, 0o644)
        self.assertRefused(
            ["--manhole-ssh", "tcp:6022", "--manhole-passwd", self.passwd],
            f"--manhole-passwd: {self.passwd!r} has mode 0644, so other users "
            "could read or change the manhole passwords: chmod 600 it",
        )
        os.chmod(self.passwd, 0o600)
        with open(self.passwd, "w") as f:
            f.write("alice\n")
        self.assertRefused(
            ["--manhole-ssh", "tcp:6022", "--manhole-passwd", self.passwd],
            f"--manhole-passwd: {self.passwd!r} line 1: expected user:password",
        )

    def test_ssh(self) -> None:
        """
        The SSH manhole may listen on every interface, with keys, passwords
        or both; its host key defaults to the user's state directory.
        """
        from bluegreen.manhole.auth import defaultHostKeyPath

        for logins in [
            ["--manhole-keys", self.keys],
            ["--manhole-passwd", self.passwd],
            ["--manhole-keys", self.keys, "--manhole-passwd", self.passwd],
        ]:
            settings = parse("--manhole-ssh", "6022", *logins).config.manhole
            assert settings is not None
            self.assertEqual(
                (settings.telnet, settings.ssh, settings.hostKey),
                (None, "tcp:6022", defaultHostKeyPath()),
            )
        settings = parse(
            "--manhole-ssh",
            "tcp:6022",
            "--manhole-keys",
            self.keys,
            "--manhole-host-key",
            self.hostKey,
        ).config.manhole
        assert settings is not None
        self.assertEqual((settings.keys, settings.hostKey), (self.keys, self.hostKey))
        # Parsing the options creates no key.
        self.assertFalse(os.path.exists(self.hostKey))

    def test_sshNeedsLogins(self) -> None:
        """
        The SSH manhole needs keys or passwords.
        """
        self.assertRefused(
            ["--manhole-ssh", "tcp:6022:interface=127.0.0.1"],
            "--manhole-ssh: the SSH manhole needs --manhole-keys FILE "
            "(authorized_keys) or --manhole-passwd FILE (user:password lines)",
        )

    def test_keysUnusable(self) -> None:
        """
        An authorized keys file that holds no key is refused.
        """
        with open(self.keys, "w") as f:
            f.write("# nobody yet\n")
        self.assertRefused(
            ["--manhole-ssh", "tcp:6022", "--manhole-keys", self.keys],
            f"--manhole-keys: {self.keys!r} has no public key",
        )

    def test_hostKeyDirectory(self) -> None:
        """
        A host key path that is a directory is refused.
        """
        directory = os.path.dirname(self.hostKey)
        self.assertRefused(
            [
                "--manhole-ssh",
                "tcp:6022",
                "--manhole-keys",
                self.keys,
                "--manhole-host-key",
                directory,
            ],
            f"--manhole-host-key: {directory!r} is a directory; give the key's file",
        )
