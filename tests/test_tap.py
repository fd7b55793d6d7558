# -*- test-case-name: tests.test_tap -*-
"""
Tests for L{bluegreen.service.tap}: the C{twistd bluegreen} options, the service
tree, and the plugin run by a real C{twistd}.
"""

from __future__ import annotations

import datetime
import errno
import io
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from typing import Any, cast

from attrs import evolve
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorProcess,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ProcessProtocol, ServerFactory
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from bluegreen import __version__
from bluegreen.admin.api import AdminSite
from bluegreen.environment import Environment
from bluegreen.proxy.resource import ProxyResource, ProxySite
from bluegreen.service.listener import Listener
from bluegreen.service.tap import (
    Options,
    ProxyService,
    ServiceReactor,
    StartupError,
    makeService,
)
from tests._util import PATIENCE, freePort, waitFor

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


class _Reactor(IReactorProcess, IReactorTime):
    """
    The reactor interfaces the process tests use (for type checking only).
    """


def globalReactor() -> _Reactor:
    """
    @return: The global reactor, which runs the processes.
    """
    return cast(_Reactor, reactor)


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


def accepts(port: int) -> bool:
    """
    @param port: A TCP port on 127.0.0.1.
    @return: Whether something accepts connections on it.
    """
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


@contextmanager
def takenPort() -> Iterator[tuple[int, str]]:
    """
    A port of 127.0.0.1 that something else listens on, for the duration.

    @return: A context manager giving the port and its endpoint
        description, C{tcp:PORT:interface=127.0.0.1}.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port: int = taken.getsockname()[1]
        yield port, f"tcp:{port}:interface=127.0.0.1"


def answers(port: int) -> bool:
    """
    @param port: A TCP port on 127.0.0.1 where an HTTP server may listen.
    @return: Whether it answers a malformed request (with C{400}), which
        the proxy does itself once its reactor runs.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as s:
            s.sendall(b"NOT HTTP\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.1 ")
    except OSError:
        return False


def makeCertificate(commonName: str) -> bytes:
    """
    Make a self-signed CA certificate.

    @param commonName: The certificate's subject CN.
    @return: The certificate, PEM-encoded.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
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


class AdminOptionTests(SynchronousTestCase):
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
        return path

    def assertRefused(self, args: list[str], message: str) -> None:
        """
        Assert that the required options plus C{args} fail with exactly
        C{message}.
        """
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, [*REQUIRED, *args]
        )
        self.assertEqual(str(error), message)

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


class MakeServiceTests(SynchronousTestCase):
    """
    L{makeService} builds the service tree on the given reactor.
    """

    def make(self, *args: str) -> tuple[ProxyService, MemoryReactorClock]:
        """
        Build the service for C{args} on a memory reactor.

        @param args: Options besides the required URLs.
        @return: The service and its reactor.
        """
        memory = MemoryReactorClock()
        service = makeService(parse(*args), cast(ServiceReactor, memory))
        assert isinstance(service, ProxyService)
        return service, memory

    def test_service(self) -> None:
        """
        The result is an L{IService} named nothing in particular, not yet
        running.
        """
        service, _ = self.make()
        self.assertTrue(IService.providedBy(service))
        self.assertFalse(service.running)

    def test_listensWhenStarted(self) -> None:
        """
        Starting the service listens on the C{--port} endpoint, serving the
        proxy site; nothing listens before.
        """
        service, memory = self.make("--port", "tcp:4567:interface=127.0.0.1")
        self.assertEqual(memory.tcpServers, [])
        service.startService()
        self.addCleanup(service.stopService)
        [(port, factory, _, interface)] = memory.tcpServers
        self.assertEqual((port, interface), (4567, "127.0.0.1"))
        assert isinstance(factory, ProxySite)
        self.assertIs(factory.resource, service.resource)

    def test_barePortAllInterfaces(self) -> None:
        """
        A bare port listens on every interface.
        """
        service, memory = self.make("--port", "4568")
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(
            [(port, interface) for port, _, _, interface in memory.tcpServers],
            [(4568, "")],
        )

    def test_controller(self) -> None:
        """
        The controller has both environments with C{--active} live, and the
        proxy resource uses it.
        """
        service, _ = self.make("--active", "blue")
        self.assertEqual(service.controller.active, "blue")
        self.assertEqual(
            dict(service.controller.environments),
            {
                "green": Environment.fromURL("green", GREEN_URL),
                "blue": Environment.fromURL("blue", BLUE_URL),
            },
        )
        self.assertIsInstance(service.resource, ProxyResource)
        self.assertIs(service.resource.controller, service.controller)

    def test_controllerClock(self) -> None:
        """
        The controller times switches with the reactor's clock.
        """
        service, memory = self.make()
        memory.advance(12.5)
        record = service.controller.switch("blue")
        assert record is not None
        self.assertEqual(record.when, 12.5)

    def test_pools(self) -> None:
        """
        There is one pool per environment, configured from the options.
        """
        service, memory = self.make(
            "--connect-timeout",
            "2",
            "--max-connections",
            "9",
            "--idle-timeout",
            "3",
        )
        self.assertIs(service.resource.pools, service.pools)
        self.assertEqual(
            {
                name: (
                    pool.environment,
                    pool.connectTimeout,
                    pool.maxConnections,
                    pool.idleTimeout,
                    pool.reactor is memory,
                )
                for name, pool in service.pools.items()
            },
            {
                "green": (service.controller.environments["green"], 2.0, 9, 3.0, True),
                "blue": (service.controller.environments["blue"], 2.0, 9, 3.0, True),
            },
        )

    def test_resource(self) -> None:
        """
        The proxy resource gets the response timeout and keeps the client's
        C{Host} by default.
        """
        service, _ = self.make("--response-timeout", "7")
        self.assertEqual(
            (service.resource.responseTimeout, service.resource.preserveHost),
            (7.0, True),
        )

    def test_targetHost(self) -> None:
        """
        C{--upstream-host-header target} makes the proxy send the
        environment's C{Host}.
        """
        service, _ = self.make("--upstream-host-header", "target")
        self.assertFalse(service.resource.preserveHost)

    def test_accessLogNone(self) -> None:
        """
        C{--access-log none} means no access log.
        """
        service, _ = self.make("--access-log", "none")
        self.assertIsNone(service.accessLog)
        self.assertIsNone(service.resource.accessLog)

    def test_accessLogFile(self) -> None:
        """
        An C{--access-log} file is opened (created) by L{makeService} and
        used by the proxy resource.
        """
        path = os.path.abspath(self.mktemp())
        service, _ = self.make("--access-log", path)
        assert service.accessLog is not None
        self.addCleanup(service.accessLog.close)
        self.assertTrue(os.path.isfile(path))
        self.assertIsNotNone(service.accessLog)
        self.assertIs(service.resource.accessLog, service.accessLog)

    def test_accessLogCannotOpen(self) -> None:
        """
        If the access log cannot be opened after all (its directory went
        away since the options were checked), L{makeService} raises a
        L{StartupError} naming the option and the file.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "access.log")
        config = evolve(parse().config, accessLog=path)
        error = self.assertRaises(
            StartupError, makeService, config, MemoryReactorClock()
        )
        self.assertEqual(
            error.code,
            f"bluegreen: --access-log: cannot open {path!r}: No such file or directory",
        )

    def test_startLogs(self) -> None:
        """
        Starting logs the version and the live environment.
        """
        service, _ = self.make("--active", "blue")
        with capturedLogs() as events:
            service.startService()
        self.addCleanup(service.stopService)
        self.assertIn(
            f"bluegreen {__version__}: live environment blue ({BLUE_URL}, start)",
            [formatEvent(event) for event in events],
        )

    def test_stopService(self) -> None:
        """
        Stopping the service stops its children (the listener and the
        health monitor) and fires once the pools are closed.
        """
        service, _ = self.make()
        service.startService()
        self.assertEqual([child.running for child in service], [1, 1])
        self.successResultOf(service.stopService())
        self.assertFalse(service.running)
        self.assertEqual([child.running for child in service], [0, 0])


class AdminServiceTests(SynchronousTestCase):
    """
    L{makeService} adds the admin API's listener when C{--admin} is not
    C{none}.
    """

    def make(self, *args: str) -> tuple[ProxyService, MemoryReactorClock]:
        """
        Build the service for C{args} on a memory reactor.
        """
        memory = MemoryReactorClock()
        service = makeService(parse(*args), cast(ServiceReactor, memory))
        assert isinstance(service, ProxyService)
        return service, memory

    def test_none(self) -> None:
        """
        With C{--admin none} there is no admin API: one listener only.
        """
        service, memory = self.make("--port", "tcp:4567:interface=127.0.0.1")
        self.assertIsNone(service.admin)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual([port for port, *_ in memory.tcpServers], [4567])

    def test_listens(self) -> None:
        """
        The admin API listens on C{--admin}, serving an L{AdminResource} on
        the service's controller and health monitor.
        """
        service, memory = self.make(
            "--port",
            "tcp:4567:interface=127.0.0.1",
            "--admin",
            "tcp:4568:interface=127.0.0.1",
        )
        service.startService()
        self.addCleanup(service.stopService)
        [proxy, admin] = memory.tcpServers
        self.assertEqual((proxy[0], admin[0], admin[3]), (4567, 4568, "127.0.0.1"))
        site = admin[1]
        assert isinstance(site, AdminSite)
        self.assertIs(site.admin, service.admin)
        assert service.admin is not None
        self.assertIs(service.admin.controller, service.controller)
        self.assertIs(service.admin.health, service.health)
        self.assertIsNone(service.admin.token)

    def test_token(self) -> None:
        """
        The token read from C{--admin-token-file} guards the admin API.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("tok3n\n")
        service, _ = self.make(
            "--admin", "tcp:4568:interface=127.0.0.1", "--admin-token-file", path
        )
        assert service.admin is not None
        self.assertEqual(service.admin.token, b"tok3n")

    def test_stops(self) -> None:
        """
        Stopping the service stops the admin listener too.
        """
        service, _ = self.make("--admin", "tcp:4568:interface=127.0.0.1")
        service.startService()
        self.assertEqual([child.running for child in service], [1, 1, 1])
        self.successResultOf(service.stopService())
        self.assertEqual([child.running for child in service], [0, 0, 0])


class StartupErrorTests(SynchronousTestCase):
    """
    L{StartupError} ends C{twistd} with one line and status 1.
    """

    def test_exits(self) -> None:
        """
        It is a L{SystemExit} whose code is the message with a C{bluegreen:}
        prefix (which Python prints, exiting with status 1).
        """
        error = StartupError("--port 1: no")
        self.assertIsInstance(error, SystemExit)
        self.assertEqual(error.code, "bluegreen: --port 1: no")

    def test_isException(self) -> None:
        """
        It is also an L{Exception}, so twistd's clean-up on a failed start
        (which catches L{Exception}) runs.
        """
        self.assertIsInstance(StartupError("x"), Exception)


class ListenTests(TestCase):
    """
    Listening with the real reactor.
    """

    def test_portInUse(self) -> None:
        """
        If C{--port} is in use, starting the service raises a L{StartupError}
        naming the option, its value and the socket error, and listens on
        nothing.
        """
        with takenPort() as (port, value):
            service = makeService(parse("--port", value, "--access-log", "none"))
            error = self.assertRaises(StartupError, service.privilegedStartService)
        self.assertEqual(
            error.code,
            f"bluegreen: cannot listen on --port {value}: "
            f"[Errno {errno.EADDRINUSE}] {os.strerror(errno.EADDRINUSE)}",
        )
        self.assertFalse(accepts(port))

    async def test_listensAndStops(self) -> None:
        """
        Started on the global reactor, the service accepts connections on
        C{--port}; once stopped it no longer does.
        """
        port = freePort()
        service = makeService(
            parse("--port", f"tcp:{port}:interface=127.0.0.1", "--access-log", "none")
        )
        service.startService()
        try:
            self.assertTrue(accepts(port))
        finally:
            await service.stopService()
        self.assertFalse(accepts(port))


@implementer(IStreamServerEndpoint)
class SlowEndpoint:
    """
    An endpoint that listens when told to: L{listen} answers a L{Deferred}
    fired later by the test.

    @ivar listening: The L{Deferred}s L{listen} answered, in order.
    """

    def __init__(self) -> None:
        self.listening: list[Deferred[IListeningPort]] = []

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        @return: A L{Deferred} the test fires.
        """
        d: Deferred[IListeningPort] = Deferred()
        self.listening.append(d)
        return d


class ListenerTests(SynchronousTestCase):
    """
    L{Listener}: listening through the endpoint's public C{listen}, with
    the port published as C{port} and by L{Listener.whenListening}.
    """

    def test_synchronous(self) -> None:
        """
        An endpoint that listens at once (TCP) gives the port as soon as
        the service starts; stopping closes it.
        """
        memory = MemoryReactorClock()
        listener = Listener(
            TCP4ServerEndpoint(memory, 0), ServerFactory(), "tcp:0", "admin"
        )
        waiting = listener.whenListening()
        self.assertNoResult(waiting)
        listener.privilegedStartService()
        listener.startService()
        port = self.successResultOf(waiting)
        self.assertIs(listener.port, port)
        self.assertIs(self.successResultOf(listener.whenListening()), port)
        self.assertEqual(len(memory.tcpServers), 1)
        self.successResultOf(listener.stopService())
        self.assertIsNone(listener.port)

    def test_later(self) -> None:
        """
        An endpoint that listens later gives the port when it does.
        """
        endpoint = SlowEndpoint()
        listener = Listener(endpoint, ServerFactory(), "slow:1")
        listener.startService()
        waiting = listener.whenListening()
        self.assertNoResult(waiting)
        port = MemoryReactorClock().listenTCP(0, ServerFactory())
        endpoint.listening[0].callback(port)
        self.assertIs(self.successResultOf(waiting), port)
        self.assertIs(listener.port, port)

    def test_failsLater(self) -> None:
        """
        An endpoint that fails to listen later fails those waiting for the
        port.
        """
        endpoint = SlowEndpoint()
        listener = Listener(endpoint, ServerFactory(), "slow:1")
        listener.startService()
        waiting = listener.whenListening()
        endpoint.listening[0].errback(CannotListenError("", 1, OSError("no")))
        self.failureResultOf(waiting, CannotListenError)
        self.assertIsNone(listener.port)

    def test_stoppedBeforeListening(self) -> None:
        """
        Stopped before its endpoint listens, the listener cancels the
        listening.
        """
        endpoint = SlowEndpoint()
        listener = Listener(endpoint, ServerFactory(), "slow:1")
        listener.startService()
        waiting = listener.whenListening()
        self.successResultOf(listener.stopService())
        self.assertTrue(endpoint.listening[0].called)
        self.failureResultOf(waiting, CancelledError)


class AdminListenTests(TestCase):
    """
    The admin listener with the real reactor.
    """

    async def test_adminPortInUse(self) -> None:
        """
        If C{--admin} is in use, starting the service raises a
        L{StartupError} naming C{--admin}, and the proxy port it had already
        bound is closed again.
        """
        proxyPort = freePort()
        with takenPort() as (port, value):
            service = makeService(
                parse(
                    "--port",
                    f"tcp:{proxyPort}:interface=127.0.0.1",
                    "--admin",
                    value,
                    "--access-log",
                    "none",
                )
            )
            error = self.assertRaises(StartupError, service.privilegedStartService)
        self.assertEqual(
            error.code,
            f"bluegreen: cannot listen on --admin {value}: "
            f"[Errno {errno.EADDRINUSE}] {os.strerror(errno.EADDRINUSE)}",
        )
        # The proxy's port closes on the next turns of the reactor.
        await waitFor(lambda: not accepts(proxyPort), "the proxy's port closed")
        self.assertFalse(accepts(proxyPort))
        self.assertFalse(accepts(port))

    async def test_listensAndStops(self) -> None:
        """
        Started on the global reactor, the admin API accepts connections on
        C{--admin}; once stopped it no longer does.
        """
        port = freePort()
        service = makeService(
            parse(
                "--port",
                "tcp:0:interface=127.0.0.1",
                "--admin",
                f"tcp:{port}:interface=127.0.0.1",
                "--access-log",
                "none",
            )
        )
        service.startService()
        try:
            self.assertTrue(accepts(port))
        finally:
            await service.stopService()
        self.assertFalse(accepts(port))


def twistd() -> list[str]:
    """
    @return: The command that runs C{twistd} from this environment.
    """
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.isfile(script):
        return [script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def childEnvironment() -> dict[str, str]:
    """
    @return: The environment variables for a child process: C{PATH}, and
        C{PYTHONPATH} if the tests have one.
    """
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


class Child(ProcessProtocol):
    """
    A child process whose output is collected.

    @ivar output: Everything written to stdout and stderr, in order.
    @ivar reason: Why it ended, once it has.
    """

    def __init__(self) -> None:
        self.output = b""
        self.reason: Failure | None = None
        self._waiting: list[Deferred[Failure]] = []

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """
        Collect output.
        """
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        """
        Remember why the process ended and tell those waiting.
        """
        self.reason = reason
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(reason)

    def whenEnded(self) -> Deferred[Failure]:
        """
        @return: A Deferred that fires with the reason the process ended.
        """
        if self.reason is not None:
            return succeed(self.reason)
        d: Deferred[Failure] = Deferred()
        self._waiting.append(d)
        return d

    def text(self) -> str:
        """
        @return: The output so far, decoded.
        """
        return self.output.decode("utf-8", "replace")


class ProcessTestMixin(TestCase):
    """
    Runs real processes, killing any still running when a test ends.
    """

    def spawn(self, args: list[str]) -> Child:
        """
        Start a process in a new temporary directory.

        @param args: The command line.
        @return: The child.
        """
        child = Child()
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        transport = globalReactor().spawnProcess(
            child, args[0], args, env=childEnvironment(), path=directory
        )

        def kill() -> Deferred[Failure] | None:
            if child.reason is not None:
                return None
            transport.signalProcess("KILL")
            return child.whenEnded()

        self.addCleanup(kill)
        return child

    async def ended(self, child: Child) -> Failure:
        """
        Wait for C{child} to end, failing the test if it takes longer than
        L{PATIENCE}.

        @param child: A spawned child.
        @return: Why it ended.
        """
        try:
            await waitFor(lambda: child.reason is not None, "the process ending")
        except AssertionError as e:
            self.fail(f"{e}:\n{child.text()}")
        assert child.reason is not None
        return child.reason

    async def runToEnd(self, args: list[str]) -> tuple[int | None, str]:
        """
        Run a process to its end.

        @param args: The command line.
        @return: Its exit code (L{None} if a signal ended it) and output.
        """
        child = self.spawn(args)
        reason = await self.ended(child)
        ended = reason.value
        assert isinstance(ended, (ProcessDone, ProcessTerminated)), reason
        code: int | None = ended.exitCode
        return code, child.text()


class TwistdTests(ProcessTestMixin):
    """
    C{twistd bluegreen} run as a real process.
    """

    async def test_portInUse(self) -> None:
        """
        If C{--port} is in use, twistd exits with status 1 after printing one
        line naming the option and the error (no traceback), and leaves
        nothing listening.
        """
        with takenPort() as (port, value):
            code, output = await self.runToEnd(
                [*twistd(), "-n", "--pidfile=", "bluegreen", "--port", value, *REQUIRED]
            )
        self.assertEqual(code, 1, output)
        self.assertIn(
            f"bluegreen: cannot listen on --port {value}: "
            f"[Errno {errno.EADDRINUSE}] Address already in use\n",
            output,
        )
        self.assertNotIn("Traceback", output)
        self.assertFalse(accepts(port))

    async def test_portInUsePidfile(self) -> None:
        """
        If C{--port} is in use, twistd still removes its pidfile.
        """
        pidfile = os.path.abspath(self.mktemp())
        with takenPort() as (port, _):
            code, output = await self.runToEnd(
                [
                    *twistd(),
                    "-n",
                    f"--pidfile={pidfile}",
                    "bluegreen",
                    "--port",
                    f"tcp:{port}:interface=127.0.0.1",
                    *REQUIRED,
                ]
            )
        self.assertEqual(code, 1, output)
        self.assertIn("cannot listen on --port", output)
        self.assertFalse(os.path.exists(pidfile))

    async def test_portInUseDaemon(self) -> None:
        """
        Started as a daemon, twistd tells the shell that started it that it
        could not listen, exits with status 1, and the daemon logs the line,
        removes its pidfile and exits.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        pidfile = os.path.join(directory, "twistd.pid")
        logfile = os.path.join(directory, "twistd.log")

        def killDaemon() -> None:
            # In case of a regression that leaves the daemon running.
            try:
                with open(pidfile) as f:
                    os.kill(int(f.read()), signal.SIGKILL)
            except (OSError, ValueError):
                pass

        self.addCleanup(killDaemon)
        with takenPort() as (_port, value):
            code, output = await self.runToEnd(
                [
                    *twistd(),
                    f"--pidfile={pidfile}",
                    f"--logfile={logfile}",
                    "bluegreen",
                    "--port",
                    value,
                    *REQUIRED,
                ]
            )
            self.assertEqual(code, 1, output)
            self.assertIn("An error has occurred: ", output)
            self.assertIn("cannot listen on --port", output)
            line = (
                f"bluegreen: cannot listen on --port {value}: "
                f"[Errno {errno.EADDRINUSE}] Address already in use\n"
            )

            def logged() -> bool:
                with open(logfile) as f:
                    return line in f.read() and not os.path.exists(pidfile)

            await waitFor(logged, "the daemon's log line and its pidfile gone")
        with open(logfile) as f:
            log = f.read()
        self.assertIn(line, log)
        self.assertNotIn("Traceback", log)
        self.assertFalse(os.path.exists(pidfile))

    async def test_missingGreen(self) -> None:
        """
        Without C{--green}, twistd exits with status 1 and says so.
        """
        code, output = await self.runToEnd(
            [*twistd(), "-n", "--pidfile=", "bluegreen", "--blue", BLUE_URL]
        )
        self.assertEqual(code, 1, output)
        self.assertIn(
            ": --green is required: the URL of the GREEN environment, "
            "e.g. --green http://127.0.0.1:5002; see --help\n",
            output,
        )
        self.assertNotIn("Traceback", output)

    async def test_wrongOptionOneLine(self) -> None:
        """
        A wrong option (a bad value, or an option that does not exist) makes
        twistd exit with status 1 after one line on standard error naming
        the option and pointing to C{--help}; nothing on standard output
        (twistd alone would print its whole usage there first).
        """
        for args, line in (
            (["--fall", "x"], "bluegreen: --fall: 'x' is not a whole number >= 1"),
            (["--nope"], "bluegreen: option --nope not recognized"),
        ):
            command = [*twistd(), "-n", "--pidfile=", "bluegreen", *REQUIRED, *args]
            d: Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
                command[0], command[1:], env=childEnvironment()
            )
            out, err, code = await d
            self.assertEqual(
                (out.decode(), err.decode(), code),
                ("", f"{line}; see --help\n", 1),
                f"twistd bluegreen {' '.join(args)}",
            )

    async def test_badPort(self) -> None:
        """
        A bad C{--port} makes twistd exit with status 1 and say why.
        """
        code, output = await self.runToEnd(
            [*twistd(), "-n", "--pidfile=", "bluegreen", "--port", "bogus:1", *REQUIRED]
        )
        self.assertEqual(code, 1, output)
        self.assertIn(BOGUS_PORT, output)
        self.assertNotIn("Traceback", output)

    async def test_pollReactor(self) -> None:
        """
        C{twistd --reactor=poll bluegreen} runs on the poll reactor (the
        plugin does not install a reactor first) and listens on C{--port};
        on SIGTERM it shuts down cleanly and stops listening.

        twistd then ends itself with the signal it received (see
        C{twisted.application.app._exitWithSignal}), so the exit status is
        "terminated by SIGTERM", which service managers count as a clean
        stop, rather than 0.
        """
        port = freePort()
        child = self.spawn(
            [
                *twistd(),
                "--reactor=poll",
                "-n",
                "--pidfile=",
                "bluegreen",
                "--port",
                f"tcp:{port}:interface=127.0.0.1",
                "--access-log",
                "none",
                *REQUIRED,
            ]
        )

        def listening() -> bool:
            if child.reason is not None:
                self.fail(f"twistd ended before listening:\n{child.text()}")
            # An answer means the reactor runs, so its SIGTERM handler is in
            # place (a port merely accepting is listened on before that).
            return answers(port)

        await waitFor(listening, f"twistd listening on {port}:\n{child.text()}")
        cast(Any, child.transport).signalProcess("TERM")
        reason = await self.ended(child)
        output = child.text()
        ended = reason.value
        assert isinstance(ended, ProcessTerminated), output
        self.assertEqual(
            (ended.exitCode, ended.signal),
            (None, signal.SIGTERM),
            output,
        )
        self.assertIn("reactor class: twisted.internet.pollreactor.PollReactor", output)
        self.assertIn("Received SIGTERM, shutting down.", output)
        self.assertIn("Server Shut Down.", output)
        self.assertIn(
            f"bluegreen {__version__}: live environment green ({GREEN_URL}, start)",
            output,
        )
        self.assertNotIn("Traceback", output)
        self.assertFalse(accepts(port))


class AdminTwistdTests(ProcessTestMixin):
    """
    C{twistd bluegreen} with the admin API options.
    """

    async def test_exposedWithoutToken(self) -> None:
        """
        An admin API on every interface without a token stops twistd with
        status 1 and one line saying why (no traceback), before listening.
        """
        port = freePort()
        code, output = await self.runToEnd(
            [
                *twistd(),
                "-n",
                "--pidfile=",
                "bluegreen",
                *REQUIRED,
                "--port",
                f"tcp:{port}:interface=127.0.0.1",
                "--admin",
                "tcp:0",
            ]
        )
        self.assertEqual(code, 1, output)
        self.assertIn(
            "--admin: 'tcp:0' listens on all interfaces, so other machines could "
            "switch traffic: give --admin-token-file FILE, or listen on loopback "
            "only (e.g. --admin tcp:3091:interface=127.0.0.1); see --help\n",
            output,
        )
        self.assertNotIn("Traceback", output)
        self.assertFalse(accepts(port))

    async def test_adminPortInUse(self) -> None:
        """
        If C{--admin} is in use, twistd exits with status 1 after one line
        naming C{--admin}, and leaves the proxy port closed.
        """
        proxyPort = freePort()
        with takenPort() as (_port, value):
            code, output = await self.runToEnd(
                [
                    *twistd(),
                    "-n",
                    "--pidfile=",
                    "bluegreen",
                    *REQUIRED,
                    "--port",
                    f"tcp:{proxyPort}:interface=127.0.0.1",
                    "--admin",
                    value,
                ]
            )
        self.assertEqual(code, 1, output)
        self.assertIn(
            f"bluegreen: cannot listen on --admin {value}: "
            f"[Errno {errno.EADDRINUSE}] Address already in use\n",
            output,
        )
        self.assertNotIn("Traceback", output)
        self.assertFalse(accepts(proxyPort))


class PluginImportTests(ProcessTestMixin):
    """
    The plugin module is imported by every C{twistd} run, so it must stay
    light.
    """

    async def test_light(self) -> None:
        """
        Importing the plugin module (and reading the plugin's name) in a
        fresh interpreter imports neither the reactor nor L{bluegreen.service.tap}.
        """
        program = (
            "import json, sys\n"
            "from twisted.plugins import bluegreen_plugin\n"
            "assert bluegreen_plugin.bluegreen.tapname == 'bluegreen'\n"
            "print(json.dumps([m for m in ('twisted.internet.reactor', "
            "'bluegreen.service.tap') if m in sys.modules]))\n"
        )
        code, output = await self.runToEnd([sys.executable, "-c", program])
        self.assertEqual(code, 0, output)
        self.assertEqual(json.loads(output), [])

    async def test_tapImportsNoReactor(self) -> None:
        """
        Parsing the options (as twistd does before it installs the reactor
        chosen with C{--reactor}) does not import the reactor either.
        """
        program = (
            "import sys\n"
            "from bluegreen.service.tap import Options\n"
            f"Options().parseOptions({REQUIRED!r})\n"
            "print('twisted.internet.reactor' in sys.modules)\n"
        )
        code, output = await self.runToEnd([sys.executable, "-c", program])
        self.assertEqual((code, output), (0, "False\n"))


class HealthEndpointTests(SynchronousTestCase):
    """
    The health checks connect like the proxy does.
    """

    def test_direct(self) -> None:
        """
        An IP address is connected to directly (a L{HostnameEndpoint} would
        report a refused connection only after its 0.3 s attempt delay,
        slowing every check of a dead environment), https is wrapped in TLS,
        and the check timeout is the connect timeout.
        """
        from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
        from twisted.web.client import URI

        from bluegreen.service.tap import _DirectEndpoints

        endpoints = _DirectEndpoints(MemoryReactorClock(), 2.0, None)
        v4 = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:5002/"))
        self.assertIsInstance(v4, TCP4ClientEndpoint)
        self.assertEqual(v4._timeout, 2.0)  # type: ignore[attr-defined]
        v6 = endpoints.endpointForURI(URI.fromBytes(b"http://[::1]:5002/health"))
        self.assertIsInstance(v6, TCP6ClientEndpoint)
        tls = endpoints.endpointForURI(URI.fromBytes(b"https://localhost:8443/"))
        self.assertEqual(type(tls).__name__, "_WrapperEndpoint")


class ManholeOptionTests(SynchronousTestCase):
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

    def assertRefused(self, args: list[str], message: str) -> None:
        """
        Assert that the required options plus C{args} fail with exactly
        C{message}.
        """
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, [*REQUIRED, *args]
        )
        self.assertEqual(str(error), message)

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
        from bluegreen.manhole.service import defaultHostKeyPath

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
