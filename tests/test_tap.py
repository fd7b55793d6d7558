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
from contextlib import redirect_stdout
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bluegreen import __version__
from bluegreen.admin.api import AdminSite
from bluegreen.environment import Environment
from bluegreen.proxy.resource import ProxyResource, ProxySite
from bluegreen.service.tap import Options, ProxyService, StartupError, makeService
from tests._util import freePort

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


class OptionErrorTests(SynchronousTestCase):
    """
    Every bad option is a usage error whose message names the option and
    says what is wrong with it.
    """

    def assertUsageError(self, args: list[str], message: str) -> None:
        """
        Assert that parsing C{args} fails with exactly C{message}.

        @param args: The whole command line after C{bluegreen}.
        @param message: The expected message.
        """
        error = self.assertRaises(usage.UsageError, Options().parseOptions, args)
        self.assertEqual(str(error), message)

    def assertBad(self, option: str, value: str, message: str) -> None:
        """
        Assert that C{option value}, with valid required options, fails with
        exactly C{message}.

        @param option: The option, e.g. C{--port}.
        @param value: Its bad value.
        @param message: The expected message.
        """
        self.assertUsageError([*REQUIRED, option, value], message)

    def assertBadPrefix(
        self, option: str, value: str, prefix: str, reason: str
    ) -> None:
        """
        Like L{assertBad} where the message ends with Twisted's own words:
        the message must start with C{prefix} and contain C{reason}.

        @param option: The option, e.g. C{--port}.
        @param value: Its bad value.
        @param prefix: Our part of the message.
        @param reason: Twisted's explanation, or part of it.
        """
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, [*REQUIRED, option, value]
        )
        self.assertTrue(str(error).startswith(prefix), str(error))
        self.assertIn(reason, str(error)[len(prefix) :])

    def test_missingGreen(self) -> None:
        """
        C{--green} is required.
        """
        self.assertUsageError(
            ["--blue", BLUE_URL],
            "--green is required: the URL of the GREEN environment, "
            "e.g. --green http://127.0.0.1:5002",
        )

    def test_missingBlue(self) -> None:
        """
        C{--blue} is required.
        """
        self.assertUsageError(
            ["--green", GREEN_URL],
            "--blue is required: the URL of the BLUE environment, "
            "e.g. --blue http://127.0.0.1:5001",
        )

    def test_missingBoth(self) -> None:
        """
        With neither URL, the error is about C{--green}, the first.
        """
        self.assertUsageError(
            [],
            "--green is required: the URL of the GREEN environment, "
            "e.g. --green http://127.0.0.1:5002",
        )

    def test_urlScheme(self) -> None:
        """
        An C{ftp://} URL is refused.
        """
        self.assertBad(
            "--green",
            "ftp://127.0.0.1:5002",
            "--green: 'ftp://127.0.0.1:5002' must start with http:// or "
            "https:// (e.g. http://127.0.0.1:5002)",
        )

    def test_urlNoHost(self) -> None:
        """
        A URL without a host is refused.
        """
        self.assertBad(
            "--blue", "http://:5001", "--blue: 'http://:5001' has no host name"
        )

    def test_urlPath(self) -> None:
        """
        A URL with a path is refused.
        """
        self.assertBad(
            "--blue",
            "http://127.0.0.1:5001/x",
            "--blue: 'http://127.0.0.1:5001/x' must be an origin only (scheme, "
            "host and port): the proxy forwards each request's own path unchanged",
        )

    def test_urlUserInfo(self) -> None:
        """
        A URL with user information is refused without echoing the password.
        """
        self.assertBad(
            "--green",
            "http://admin:hunter2@127.0.0.1:5002",
            "--green: the URL for host '127.0.0.1' must not contain user "
            "information (user:password@)",
        )

    def test_urlBadPort(self) -> None:
        """
        A URL whose port is out of range is refused.
        """
        self.assertBad(
            "--green",
            "http://127.0.0.1:99999",
            "--green: 'http://127.0.0.1:99999' is not a valid URL (Port out of "
            "range 0-65535)",
        )

    def test_urlEmpty(self) -> None:
        """
        An empty URL is refused.
        """
        self.assertBad(
            "--blue", "", "--blue: an empty URL; expected e.g. http://127.0.0.1:5002"
        )

    def test_active(self) -> None:
        """
        C{--active} must name green or blue.
        """
        self.assertBad(
            "--active",
            "red",
            "--active: unknown environment 'red'; expected green or blue",
        )

    def test_activeCase(self) -> None:
        """
        C{--active} names are lower case.
        """
        self.assertBad(
            "--active",
            "GREEN",
            "--active: unknown environment 'GREEN'; expected green or blue",
        )

    def test_portWord(self) -> None:
        """
        A C{--port} that is neither a number nor an endpoint is refused.
        """
        self.assertBadPrefix(
            "--port",
            "abc",
            "--port: 'abc' is not a valid endpoint (e.g. 3090, "
            "tcp:3090:interface=127.0.0.1, unix:/run/bg.sock): ",
            "Unknown endpoint type: 'abc'",
        )

    def test_portZero(self) -> None:
        """
        A bare port 0 is refused.
        """
        self.assertBad("--port", "0", "--port: '0' is not a TCP port number (1-65535)")

    def test_portTooBig(self) -> None:
        """
        A bare port above 65535 is refused.
        """
        self.assertBad(
            "--port", "70000", "--port: '70000' is not a TCP port number (1-65535)"
        )

    def test_portNotASCIIDigit(self) -> None:
        """
        A superscript digit is not a port number (and not a crash).
        """
        self.assertBadPrefix(
            "--port",
            "\N{SUPERSCRIPT THREE}",
            "--port: '\N{SUPERSCRIPT THREE}' is not a valid endpoint",
            "Unknown endpoint type",
        )

    def test_portEmpty(self) -> None:
        """
        An empty C{--port} is refused.
        """
        self.assertBad(
            "--port", " ", "--port: empty; give a port number or endpoint string"
        )

    def test_portEndpointNotANumber(self) -> None:
        """
        A C{tcp:} endpoint whose port is not a number is refused.
        """
        self.assertBadPrefix(
            "--port",
            "tcp:notaport",
            "--port: 'tcp:notaport' is not a valid endpoint (e.g. 3090, "
            "tcp:3090:interface=127.0.0.1, unix:/run/bg.sock): ",
            "'notaport'",
        )

    def test_portEndpointTooBig(self) -> None:
        """
        A C{tcp:} endpoint whose port is above 65535 is refused.
        """
        self.assertBad(
            "--port",
            "tcp:70000",
            "--port: 'tcp:70000': 70000 is not a TCP port number (0-65535)",
        )

    def test_portEndpointNegative(self) -> None:
        """
        A C{tcp:} endpoint with a negative port is refused.
        """
        self.assertBad(
            "--port",
            "tcp:-1:interface=127.0.0.1",
            "--port: 'tcp:-1:interface=127.0.0.1': -1 is not a TCP port number "
            "(0-65535)",
        )

    def test_portUnixNoPath(self) -> None:
        """
        A C{unix:} endpoint without a path is refused.
        """
        self.assertBad(
            "--port",
            "unix:",
            "--port: 'unix:' has no socket path (e.g. unix:/run/bg.sock)",
        )

    def test_portUnknownType(self) -> None:
        """
        An unknown endpoint type is refused.
        """
        self.assertBadPrefix(
            "--port", "bogus:1", BOGUS_PORT, "Unknown endpoint type: 'bogus'"
        )

    def test_connectTimeoutNegative(self) -> None:
        """
        C{--connect-timeout -1} is refused.
        """
        self.assertBad(
            "--connect-timeout",
            "-1",
            "--connect-timeout: '-1' is not a positive number of seconds",
        )

    def test_connectTimeoutZero(self) -> None:
        """
        C{--connect-timeout 0} is refused.
        """
        self.assertBad(
            "--connect-timeout",
            "0",
            "--connect-timeout: '0' is not a positive number of seconds",
        )

    def test_connectTimeoutWord(self) -> None:
        """
        C{--connect-timeout abc} is refused.
        """
        self.assertBad(
            "--connect-timeout",
            "abc",
            "--connect-timeout: 'abc' is not a positive number of seconds",
        )

    def test_connectTimeoutNaN(self) -> None:
        """
        C{--connect-timeout nan} is refused.
        """
        self.assertBad(
            "--connect-timeout",
            "nan",
            "--connect-timeout: 'nan' is not a positive number of seconds",
        )

    def test_connectTimeoutInfinite(self) -> None:
        """
        C{--connect-timeout inf} is refused.
        """
        self.assertBad(
            "--connect-timeout",
            "inf",
            "--connect-timeout: 'inf' is not a positive number of seconds",
        )

    def test_responseTimeoutNegative(self) -> None:
        """
        C{--response-timeout -1} is refused.
        """
        self.assertBad(
            "--response-timeout",
            "-1",
            "--response-timeout: '-1' is not a positive number of seconds",
        )

    def test_responseTimeoutZero(self) -> None:
        """
        C{--response-timeout 0} is refused.
        """
        self.assertBad(
            "--response-timeout",
            "0",
            "--response-timeout: '0' is not a positive number of seconds",
        )

    def test_responseTimeoutWord(self) -> None:
        """
        C{--response-timeout abc} is refused.
        """
        self.assertBad(
            "--response-timeout",
            "abc",
            "--response-timeout: 'abc' is not a positive number of seconds",
        )

    def test_responseTimeoutNaN(self) -> None:
        """
        C{--response-timeout nan} is refused.
        """
        self.assertBad(
            "--response-timeout",
            "nan",
            "--response-timeout: 'nan' is not a positive number of seconds",
        )

    def test_responseTimeoutInfinite(self) -> None:
        """
        C{--response-timeout inf} is refused.
        """
        self.assertBad(
            "--response-timeout",
            "inf",
            "--response-timeout: 'inf' is not a positive number of seconds",
        )

    def test_idleTimeoutNegative(self) -> None:
        """
        C{--idle-timeout -1} is refused.
        """
        self.assertBad(
            "--idle-timeout",
            "-1",
            "--idle-timeout: '-1' is not a positive number of seconds",
        )

    def test_idleTimeoutZero(self) -> None:
        """
        C{--idle-timeout 0} is refused.
        """
        self.assertBad(
            "--idle-timeout",
            "0",
            "--idle-timeout: '0' is not a positive number of seconds",
        )

    def test_idleTimeoutWord(self) -> None:
        """
        C{--idle-timeout abc} is refused.
        """
        self.assertBad(
            "--idle-timeout",
            "abc",
            "--idle-timeout: 'abc' is not a positive number of seconds",
        )

    def test_idleTimeoutNaN(self) -> None:
        """
        C{--idle-timeout nan} is refused.
        """
        self.assertBad(
            "--idle-timeout",
            "nan",
            "--idle-timeout: 'nan' is not a positive number of seconds",
        )

    def test_idleTimeoutInfinite(self) -> None:
        """
        C{--idle-timeout inf} is refused.
        """
        self.assertBad(
            "--idle-timeout",
            "inf",
            "--idle-timeout: 'inf' is not a positive number of seconds",
        )

    def test_maxConnectionsZero(self) -> None:
        """
        C{--max-connections 0} is refused.
        """
        self.assertBad(
            "--max-connections",
            "0",
            "--max-connections: '0' is not a whole number >= 1",
        )

    def test_maxConnectionsNegative(self) -> None:
        """
        C{--max-connections -1} is refused.
        """
        self.assertBad(
            "--max-connections",
            "-1",
            "--max-connections: '-1' is not a whole number >= 1",
        )

    def test_maxConnectionsWord(self) -> None:
        """
        C{--max-connections abc} is refused.
        """
        self.assertBad(
            "--max-connections",
            "abc",
            "--max-connections: 'abc' is not a whole number >= 1",
        )

    def test_maxConnectionsFraction(self) -> None:
        """
        C{--max-connections 2.5} is refused.
        """
        self.assertBad(
            "--max-connections",
            "2.5",
            "--max-connections: '2.5' is not a whole number >= 1",
        )

    def test_maxConnectionsNotASCIIDigit(self) -> None:
        """
        A superscript digit is not a number of connections (and not a
        crash).
        """
        self.assertBad(
            "--max-connections",
            "\N{SUPERSCRIPT THREE}",
            "--max-connections: '\N{SUPERSCRIPT THREE}' is not a whole number >= 1",
        )

    def test_upstreamHostHeader(self) -> None:
        """
        C{--upstream-host-header} is C{client} or C{target}.
        """
        self.assertBad(
            "--upstream-host-header",
            "other",
            "--upstream-host-header: 'other' must be 'client' or 'target'",
        )

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
                key: options[key]
                for key in (
                    "endpoint",
                    "active",
                    "upstream-host-header",
                    "connectTimeout",
                    "responseTimeout",
                    "idleTimeout",
                    "maxConnections",
                    "access-log",
                    "trustRoot",
                )
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
            parse()["environments"],
            {
                "green": Environment.fromURL("green", GREEN_URL),
                "blue": Environment.fromURL("blue", BLUE_URL),
            },
        )

    def test_barePort(self) -> None:
        """
        A bare port number listens on every interface over TCP.
        """
        self.assertEqual(parse("--port", "3090")["endpoint"], "tcp:3090")

    def test_barePortSpaces(self) -> None:
        """
        Spaces around a bare port number are ignored.
        """
        self.assertEqual(parse("--port", " 8080 ")["endpoint"], "tcp:8080")

    def test_shortPort(self) -> None:
        """
        C{-p} is short for C{--port}.
        """
        self.assertEqual(parse("-p", "65535")["endpoint"], "tcp:65535")

    def test_tcpEndpoint(self) -> None:
        """
        A TCP endpoint string is used as it is.
        """
        self.assertEqual(
            parse("--port", "tcp:3090:interface=127.0.0.1")["endpoint"],
            "tcp:3090:interface=127.0.0.1",
        )

    def test_tcp6Endpoint(self) -> None:
        """
        An IPv6 TCP endpoint string is used as it is.
        """
        self.assertEqual(
            parse("--port", r"tcp6:3090:interface=\:\:1")["endpoint"],
            r"tcp6:3090:interface=\:\:1",
        )

    def test_tcpEndpointAnyPort(self) -> None:
        """
        A C{tcp:0} endpoint (any free port) is allowed, as in Twisted.
        """
        self.assertEqual(parse("--port", "tcp:0")["endpoint"], "tcp:0")

    def test_unixEndpoint(self) -> None:
        """
        A UNIX socket endpoint string is used as it is.
        """
        self.assertEqual(
            parse("--port", "unix:/run/bluegreen.sock")["endpoint"],
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
                options["connectTimeout"],
                options["responseTimeout"],
                options["idleTimeout"],
                options["maxConnections"],
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
        trustRoot = parse("--upstream-ca", path)["trustRoot"]
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
            (options["adminEndpoint"], options["adminToken"]),
            ("tcp:3091:interface=127.0.0.1", None),
        )

    def test_none(self) -> None:
        """
        C{--admin none} turns the admin API off.
        """
        self.assertIsNone(parse("--admin", "none")["adminEndpoint"])

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
            self.assertEqual(parse("--admin", value)["adminEndpoint"], value)

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
            (options["adminEndpoint"], options["adminToken"]), ("tcp:3091", b"s3cret")
        )

    def test_tokenWithoutAdmin(self) -> None:
        """
        A token file is still read (and checked) with C{--admin none}.
        """
        options = parse("--admin-token-file", self.tokenFile(b"  tok  \r\n"))
        self.assertEqual(options["adminToken"], b"tok")

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
        self.assertEqual(options["adminEndpoint"], "tcp:0:interface=127.0.0.1")


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
        service = makeService(parse(*args), memory)
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
        options = parse()
        path = os.path.join(os.path.abspath(self.mktemp()), "access.log")
        options["access-log"] = path
        error = self.assertRaises(
            StartupError, makeService, options, MemoryReactorClock()
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
        service = makeService(parse(*args), memory)
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
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            value = f"tcp:{port}:interface=127.0.0.1"
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
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            value = f"tcp:{port}:interface=127.0.0.1"
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
        for _ in range(100):
            if not accepts(proxyPort):
                break
            await deferLater(globalReactor(), 0.01, lambda: None)
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

    async def ended(self, child: Child, timeout: float = 30.0) -> Failure:
        """
        Wait for C{child} to end, failing the test if it takes too long.

        @param child: A spawned child.
        @param timeout: Seconds to wait.
        @return: Why it ended.
        """
        delay = 0.0
        while child.reason is None:
            if delay >= timeout:
                self.fail(f"still running after {timeout}s:\n{child.text()}")
            await deferLater(globalReactor(), 0.05, lambda: None)
            delay += 0.05
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
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            value = f"tcp:{port}:interface=127.0.0.1"
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
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
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
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            value = f"tcp:{port}:interface=127.0.0.1"
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
            log = ""
            for _ in range(200):
                with open(logfile) as f:
                    log = f.read()
                if line in log and not os.path.exists(pidfile):
                    break
                await deferLater(globalReactor(), 0.05, lambda: None)
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
            "e.g. --green http://127.0.0.1:5002\n",
            output,
        )
        self.assertNotIn("Traceback", output)

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
        waited = 0.0
        while not accepts(port):
            if child.reason is not None:
                self.fail(f"twistd ended before listening:\n{child.text()}")
            if waited > 30:
                self.fail(f"twistd not listening after 30s:\n{child.text()}")
            await deferLater(globalReactor(), 0.05, lambda: None)
            waited += 0.05
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
            "only (e.g. --admin tcp:3091:interface=127.0.0.1)\n",
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
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            value = f"tcp:{port}:interface=127.0.0.1"
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
        self.assertIsNone(parse()["manholeSettings"])
        self.assertIsNone(parse("--manhole-passwd", "/nonexistent")["manholeSettings"])

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
            )["manholeSettings"]
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
            settings = parse("--manhole-ssh", "6022", *logins)["manholeSettings"]
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
        )["manholeSettings"]
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
