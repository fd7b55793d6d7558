# -*- test-case-name: tests.test_manhole -*-
"""
Tests for L{bluegreen.manhole.service} and L{bluegreen.manhole.namespace}:
the manholes in the service tree and what a session sees; the telnet
login's timing (with a L{Clock}) and the SSH terminal's size.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
from collections.abc import Callable
from typing import Any, cast

from twisted.conch.ssh.keys import Key
from twisted.conch.telnet import (
    DO,
    DONT,
    ECHO,
    IAC,
    LINEMODE,
    NAWS,
    SGA,
    WILL,
    WONT,
    ITelnetProtocol,
    OptionRefused,
    TelnetProtocol,
    TelnetTransport,
)
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from bluegreen.controller import SwitchRefused
from bluegreen.manhole.auth import (
    PasswordFileChecker,
)
from bluegreen.manhole.namespace import Text
from bluegreen.manhole.service import Manhole
from bluegreen.manhole.ssh import SSHShell
from bluegreen.manhole.telnet import TelnetLogin, TelnetSession
from bluegreen.service.tap import (
    Options,
    ProxyService,
    ServiceReactor,
    StartupError,
    makeService,
)
from tests._backends import (
    reactor,
)
from tests._manhole import shortDirectory, writeFile
from tests._util import freePort

#: The required options (no admin API).
REQUIRED = [
    "--green",
    "http://127.0.0.1:5002",
    "--blue",
    "http://127.0.0.1:5001",
    "--admin",
    "none",
    "--access-log",
    "none",
]

#: Every name the namespace has from the start.
NAMES = [
    "controller",
    "proxy",
    "health",
    "pools",
    "service",
    "reactor",
    "pprint",
    "switch",
    "status",
    "help",
]


def parse(*args: str) -> Options:
    """
    Parse the required options plus C{args}.
    """
    options = Options()
    options.parseOptions([*REQUIRED, *args])
    return options


class ManholeServiceTests(SynchronousTestCase):
    """
    L{makeService} adds the manholes when asked, and their namespace holds
    the live objects.
    """

    def setUp(self) -> None:
        self.directory = shortDirectory(self)
        self.passwd = writeFile(self.directory, "passwd", b"alice:s3cret\n")
        self.socket = os.path.join(self.directory, "m.sock")

    def make(self, *args: str) -> tuple[ProxyService, MemoryReactorClock]:
        """
        Build the service on a memory reactor.
        """
        memory = MemoryReactorClock()
        service = makeService(parse(*args), cast(ServiceReactor, memory))
        assert isinstance(service, ProxyService)
        return service, memory

    def sshOptions(self, hostKey: str) -> list[str]:
        """
        The options of an SSH manhole on port 6022 of 127.0.0.1, with the
        test's password file and C{hostKey}.
        """
        return [
            "--manhole-ssh",
            "tcp:6022:interface=127.0.0.1",
            "--manhole-passwd",
            self.passwd,
            "--manhole-host-key",
            hostKey,
        ]

    def telnet(self) -> tuple[ProxyService, Manhole]:
        """
        Build the service with a telnet manhole on a UNIX socket.
        """
        service, _ = self.make(
            "--manhole", f"unix:{self.socket}", "--manhole-passwd", self.passwd
        )
        assert service.manhole is not None
        return service, service.manhole

    def test_off(self) -> None:
        """
        By default there is no manhole.
        """
        service, _ = self.make()
        self.assertIsNone(service.manhole)
        self.assertFalse(any(isinstance(child, Manhole) for child in service))

    def test_listeners(self) -> None:
        """
        Each manhole listens where its option says, beside the proxy.
        """
        port = freePort()
        service, memory = self.make(
            "--port",
            "tcp:4567:interface=127.0.0.1",
            "--manhole",
            f"unix:{self.socket}",
            "--manhole-ssh",
            f"tcp:{port}:interface=127.0.0.1",
            "--manhole-passwd",
            self.passwd,
            "--manhole-host-key",
            os.path.join(self.directory, "host_key"),
        )
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(
            [(p[0], p[3]) for p in memory.tcpServers],
            [(4567, "127.0.0.1"), (port, "127.0.0.1")],
        )
        self.assertEqual([u[0] for u in memory.unixServers], [self.socket])
        self.assertIsInstance(service.manhole, Manhole)

    def test_hostKeyCreated(self) -> None:
        """
        Building the SSH manhole creates its host key, mode 0600.
        """
        path = os.path.join(self.directory, "keys", "host_key")
        service, _ = self.make(
            *self.sshOptions(path),
        )
        assert service.manhole is not None
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(service.manhole.hostKey, Key.fromFile(path))
        self.assertTrue(service.manhole.createdKey)

    def test_hostKeyUnusable(self) -> None:
        """
        A host key readable by others stops start-up with a clear message.
        """
        path = writeFile(self.directory, "host_key", b"x", 0o644)
        error = self.assertRaises(
            StartupError,
            self.make,
            *self.sshOptions(path),
        )
        self.assertEqual(
            error.code,
            f"bluegreen: --manhole-host-key: {path!r} has mode 0644, so other "
            "users could read the SSH host key: chmod 600 it",
        )

    def test_namespace(self) -> None:
        """
        A session's namespace holds the live objects under plain names.
        """
        service, manhole = self.telnet()
        namespace = manhole.namespaceFor("alice")
        self.assertEqual(list(namespace), NAMES)
        self.assertIs(namespace["controller"], service.controller)
        self.assertIs(namespace["proxy"], service.resource)
        self.assertIs(namespace["health"], service.health)
        self.assertIs(namespace["pools"], service.pools)
        self.assertIs(namespace["service"], service)
        self.assertIsNot(manhole.namespaceFor("bob"), namespace)

    def test_switch(self) -> None:
        """
        C{switch(to)} switches and records who did it from the manhole.
        """
        service, manhole = self.telnet()
        with capturedLogs() as events:
            record = manhole.namespaceFor("alice")["switch"]("blue")
        self.assertEqual(service.controller.active, "blue")
        self.assertEqual(record.reason, "manual switch via manhole by alice")
        self.assertEqual(service.controller.history[-1], record)
        self.assertIn(
            "manhole: alice switches to blue", [formatEvent(e) for e in events]
        )
        record = manhole.namespaceFor("bob")["switch"]("green", force=True)
        self.assertEqual(record.reason, "manual switch via manhole by bob, forced")

    def test_switchRefused(self) -> None:
        """
        A refused switch raises L{SwitchRefused} (shown at the prompt) and
        is logged.
        """
        service, manhole = self.telnet()
        with capturedLogs() as events:
            error = self.assertRaises(
                SwitchRefused, manhole.namespaceFor("alice")["switch"], "green"
            )
        self.assertEqual(str(error), "green is already live")
        self.assertIn(
            "manhole: switch to green by alice refused: green is already live",
            [formatEvent(e) for e in events],
        )
        self.assertEqual(service.controller.history, [])

    def test_help(self) -> None:
        """
        C{help()} lists every name, and shows as plain text at the prompt.
        """
        _, manhole = self.telnet()
        text = manhole.namespaceFor("alice")["help"]()
        self.assertIsInstance(text, Text)
        self.assertEqual(repr(text), str(text))
        self.assertIn("logged in as alice", text)
        listed = re.findall(r"^  (\w+)", text, re.MULTILINE)
        self.assertEqual(sorted(listed), sorted(NAMES))

    def test_add(self) -> None:
        """
        L{Manhole.add} puts more objects in new sessions, listed by help().
        """
        _, manhole = self.telnet()
        flags = object()
        manhole.add("flags", flags, "the Redis feature flags")
        namespace = manhole.namespaceFor("alice")
        self.assertIs(namespace["flags"], flags)
        self.assertIn("  flags ", namespace["help"]())
        self.assertIn("the Redis feature flags", namespace["help"]())
        self.assertRaises(ValueError, manhole.add, "not a name", 1, "")

    def test_status(self) -> None:
        """
        C{status()} says what is live and each environment's health.
        """
        _, manhole = self.telnet()
        status = manhole.namespaceFor("alice")["status"]
        self.assertEqual(
            status(),
            "live: green (start); mode: serving\n"
            "  green  unknown  http://127.0.0.1:5002  not checked yet  <- live\n"
            "  blue   unknown  http://127.0.0.1:5001  not checked yet\n"
            "no switch yet",
        )
        manhole.namespace.switch("alice", "blue")
        lines = status().splitlines()
        self.assertTrue(lines[-1].startswith("last switch: "), lines)
        self.assertIn(
            "green -> blue (manual switch via manhole by alice); 1 in all", lines[-1]
        )


class _OneSession:
    """
    A realm giving each telnet login a plain L{TelnetProtocol}, counting
    logouts.
    """

    def __init__(self) -> None:
        self.sessions: list[TelnetProtocol] = []
        self.logouts = 0

    def requestAvatar(
        self, avatarId: object, mind: object, *interfaces: object
    ) -> tuple[object, TelnetProtocol, Callable[[], None]]:
        session = TelnetProtocol()
        self.sessions.append(session)

        def logout() -> None:
            self.logouts += 1

        return ITelnetProtocol, session, logout


@implementer(ICredentialsChecker)
class _PendingChecker:
    """
    A checker whose answers the test gives.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self.pending: list[Deferred[bytes | tuple[()]]] = []

    def requestAvatarId(self, credentials: object) -> Deferred[bytes | tuple[()]]:
        d: Deferred[bytes | tuple[()]] = Deferred()
        self.pending.append(d)
        return d


class TelnetLoginTests(SynchronousTestCase):
    """
    L{TelnetLogin}'s timing, driven by a L{Clock}: a refusal is answered
    after L{TelnetLogin.failureDelay}, the last one closes the connection.
    """

    def setUp(self) -> None:
        directory = shortDirectory(self)
        passwd = writeFile(directory, "passwd", b"alice:s3cret\n")
        self.realm = _OneSession()
        self.clock = Clock()
        self.connect(PasswordFileChecker(passwd, None))

    def connect(self, checker: ICredentialsChecker) -> None:
        """
        Connect a login checking with C{checker} to L{wire}.
        """
        portal = Portal(cast(Any, self.realm), [checker])
        self.telnet = TelnetTransport(TelnetLogin, portal, self.clock)
        self.wire = StringTransport()
        self.telnet.makeConnection(self.wire)

    def shown(self) -> bytes:
        """
        @return: What the client was sent so far, telnet commands removed.
        """
        return re.sub(rb"\xff[\xfb-\xfe].", b"", self.wire.value())

    def attempt(self, password: bytes) -> None:
        """
        Log in as alice, agreeing to the server's echo changes.
        """
        self.telnet.dataReceived(b"alice\r\n" + IAC + DO + ECHO)
        self.telnet.dataReceived(password + b"\r\n" + IAC + DONT + ECHO)

    def test_refusalDelayed(self) -> None:
        """
        A wrong password is answered only after the delay, then the user
        name is asked for again; the right one then logs in.
        """
        self.attempt(b"wrong")
        self.clock.advance(TelnetLogin.failureDelay * 0.99)
        self.assertEqual(self.shown(), b"Username: Password: ")
        self.clock.advance(TelnetLogin.failureDelay * 0.01)
        self.assertEqual(
            self.shown(),
            b"Username: Password: \r\nAuthentication failed\r\nUsername: ",
        )
        self.attempt(b"s3cret")
        self.assertEqual(len(self.realm.sessions), 1)
        self.assertIs(self.telnet.protocol, self.realm.sessions[0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lastAttemptDisconnects(self) -> None:
        """
        The last allowed wrong password closes the connection, after the
        delay.
        """
        for _ in range(TelnetLogin.maxAttempts):
            self.attempt(b"wrong")
            self.assertFalse(self.wire.disconnecting)
            self.clock.advance(TelnetLogin.failureDelay)
        self.assertTrue(self.wire.disconnecting)
        self.assertTrue(
            self.shown().endswith(b"\r\nAuthentication failed; disconnecting\r\n")
        )

    def test_lostCancelsAnswer(self) -> None:
        """
        A connection lost while a refusal waits leaves no timer behind.
        """
        self.attempt(b"wrong")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.telnet.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lostWhileChecking(self) -> None:
        """
        A login that succeeds after the connection was lost is logged out at
        once, not handed a dead connection.
        """
        checker = _PendingChecker()
        self.connect(checker)
        self.attempt(b"s3cret")
        self.telnet.connectionLost(Failure(ConnectionDone()))
        checker.pending[0].callback(b"alice")
        self.assertEqual(self.realm.logouts, 1)
        self.assertFalse(self.realm.sessions[0].transport)


class TelnetSessionTests(SynchronousTestCase):
    """
    L{TelnetSession} negotiates the terminal; the connection ending first is
    no error.
    """

    def setUp(self) -> None:
        self.telnet = TelnetTransport(TelnetSession, Protocol)
        self.wire = StringTransport()
        self.telnet.makeConnection(self.wire)

    def test_requests(self) -> None:
        """
        The session asks for line mode, the window size and no go-ahead,
        and offers to echo.
        """
        self.assertEqual(
            self.wire.value(),
            IAC + DO + LINEMODE + IAC + DO + NAWS + IAC + DO + SGA + IAC + WILL + ECHO,
        )

    def test_lostBeforeAnswers(self) -> None:
        """
        A connection that ends before the client answered logs nothing.
        """
        with capturedLogs() as events:
            self.telnet.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(events, [])

    def test_refusedLogged(self) -> None:
        """
        A request the client refuses is logged, as Twisted's session does.
        """
        self.telnet.dataReceived(IAC + WONT + LINEMODE)
        self.assertEqual(len(self.flushLoggedErrors(OptionRefused)), 1)


class SSHShellTests(SynchronousTestCase):
    """
    The SSH session channel's terminal handling.
    """

    def test_ptySize(self) -> None:
        """
        The terminal size comes from the pty request; a client that sends
        0 (no local terminal) gets 80x24.
        """
        shell = SSHShell(cast(Any, None))
        shell.getPty(b"xterm", (50, 132, 0, 0), [])
        self.assertEqual((shell.width, shell.height), (132, 50))
        shell.getPty(b"xterm", (0, 0, 0, 0), [])
        self.assertEqual((shell.width, shell.height), (80, 24))


class ManholeListenTests(TestCase):
    """
    The manhole listeners with the real reactor.
    """

    def test_portInUse(self) -> None:
        """
        If C{--manhole} (or C{--manhole-ssh}) is in use, starting the service
        raises a L{StartupError} naming the option and the socket error.
        """
        directory = shortDirectory(self)
        passwd = writeFile(directory, "passwd", b"alice:pw\n")
        for option, extra in [
            ("manhole", []),
            ("manhole-ssh", ["--manhole-host-key", os.path.join(directory, "hk")]),
        ]:
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen()
                value = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
                service = makeService(
                    parse(
                        "--port",
                        "tcp:0:interface=127.0.0.1",
                        f"--{option}",
                        value,
                        "--manhole-passwd",
                        passwd,
                        *extra,
                    ),
                    reactor,
                )
                error = self.assertRaises(StartupError, service.privilegedStartService)
            self.assertEqual(
                error.code,
                f"bluegreen: cannot listen on --{option} {value}: "
                f"[Errno {errno.EADDRINUSE}] {os.strerror(errno.EADDRINUSE)}",
            )
