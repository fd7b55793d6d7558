# -*- test-case-name: tests.test_manhole_sessions -*-
"""
Real telnet and SSH sessions (Twisted's telnet and SSH clients, and
OpenSSH's C{ssh}) with the manholes of a running proxy.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import stat
import struct
from collections.abc import Callable
from typing import Any

from twisted.conch.ssh.keys import Key
from twisted.conch.telnet import (
    ECHO,
    LINEMODE,
    NAWS,
    SGA,
    OptionRefused,
    TelnetProtocol,
    TelnetTransport,
)
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ProcessTerminated
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from bluegreen.manhole.telnet import TelnetLogin
from tests._backends import (
    captureLogs,
    echo,
    fetch,
    reactor,
    startProxyFor,
)
from tests._manhole import clientKey, hashed, shortDirectory, writeFile
from tests._util import PATIENCE, freePort, waitFor

# Real sessions

_ESCAPE = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()#][0-9A-Za-z]|\x1b[=>c78DM]")


def screenText(data: bytes) -> str:
    """
    Terminal output without its escape sequences.
    """
    return _ESCAPE.sub(b"", data.replace(b"\x1bE", b"\n")).decode("utf-8", "replace")


async def waitForText(read: Callable[[], str], text: str, count: int = 1) -> None:
    """
    Wait until C{read()} shows C{text} at least C{count} times.

    @raise AssertionError: If it has not within L{PATIENCE} seconds, with
        what was shown.
    """
    try:
        await waitFor(lambda: read().count(text) >= count, f"{text!r} x {count}")
    except AssertionError as e:
        raise AssertionError(f"{e}; shown: {read()!r}") from None


#: A session test waits for several things in turn, each within PATIENCE.
SESSION_TIMEOUT = 4 * PATIENCE


class TelnetClient(TelnetProtocol):
    """
    A telnet client that negotiates like a real one: it lets the server
    echo (ECHO) and suppress go-ahead (SGA), and agrees to send its window
    size (NAWS) and to use LINEMODE.

    @ivar output: Everything received (telnet commands removed).
    @ivar lost: Fires when the connection is lost.
    """

    def __init__(self) -> None:
        self.output = b""
        self.lost: Deferred[None] = Deferred()
        self.connected = False

    def connectionMade(self) -> None:
        """
        Connected.
        """
        self.connected = True

    def enableRemote(self, option: bytes) -> bool:
        """
        Let the server echo and suppress go-ahead.
        """
        return option in (ECHO, SGA)

    def enableLocal(self, option: bytes) -> bool:
        """
        Agree to NAWS (sending an 80x24 size next), SGA and LINEMODE.
        """
        if option == NAWS:
            reactor.callLater(0, self.sendSize)
        return option in (NAWS, SGA, LINEMODE)

    def sendSize(self) -> None:
        """
        Send the window size.
        """
        transport: Any = self.transport
        if self.connected:
            transport.requestNegotiation(NAWS, struct.pack("!HH", 80, 24))

    def dataReceived(self, data: bytes) -> None:
        """
        Keep what the server sent.
        """
        self.output += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fire L{lost}.
        """
        self.connected = False
        self.lost.callback(None)

    def text(self) -> str:
        """
        @return: The output so far, as a terminal would show it.
        """
        return screenText(self.output)

    def send(self, data: bytes) -> None:
        """
        Type C{data} (C{\\n} is sent as CR LF).
        """
        assert self.transport is not None
        self.transport.write(data)


class TelnetSessionTests(TestCase):
    """
    A real telnet session with the manhole of a running proxy.
    """

    timeout = SESSION_TIMEOUT

    def setUp(self) -> None:
        self.directory = shortDirectory(self)
        self.logs = captureLogs(self)
        self.passwd = writeFile(
            self.directory, "passwd", b"alice:" + hashed(b"s3cret") + b"\n"
        )
        self.socket = os.path.join(self.directory, "m.sock")
        _green, self.proxy = startProxyFor(
            self,
            echo("green"),
            "--manhole",
            f"unix:{self.socket}:mode=600",
            "--manhole-passwd",
            self.passwd,
        )

    async def connect(self, kind: type[TelnetClient] = TelnetClient) -> TelnetClient:
        """
        Open a telnet connection to the manhole, closed when the test ends.

        @param kind: The client protocol.
        """
        endpoint = UNIXClientEndpoint(reactor, self.socket)
        transport = await connectProtocol(endpoint, TelnetTransport(kind))
        client = transport.protocol
        assert isinstance(client, TelnetClient)

        async def close() -> None:
            if client.connected:
                transport.transport.abortConnection()
                await client.lost

        self.addCleanup(lambda: Deferred.fromCoroutine(close()))
        return client

    async def login(
        self, client: TelnetClient, password: bytes, attempt: int = 1
    ) -> None:
        """
        Answer the user name and password prompts.

        @param attempt: Which login attempt on the connection this is.
        """
        await waitForText(client.text, "Username: ", attempt)
        client.send(b"alice\n")
        await waitForText(client.text, "Password: ", attempt)
        client.send(password + b"\n")

    async def test_session(self) -> None:
        """
        An operator logs in, reads the live environment, switches it, and
        logs out with Ctrl-D; traffic follows the switch and the history
        names the manhole and the user.
        """
        self.assertEqual(stat.S_IMODE(os.stat(self.socket).st_mode), 0o600)
        client = await self.connect()
        await self.login(client, b"s3cret")
        await waitForText(client.text, "logged in as alice")
        await waitForText(client.text, ">>> ")
        self.assertNotIn("s3cret", client.text())
        client.send(b"controller.active\n")
        await waitForText(client.text, "'green'")
        client.send(b'switch("blue")\n')
        await waitForText(client.text, "reason='manual switch via manhole by alice'")
        controller = self.proxy.controller
        self.assertEqual(controller.active, "blue")
        self.assertEqual(
            controller.history[-1].reason, "manual switch via manhole by alice"
        )
        response = await fetch(self, self.proxy.port, b"GET", b"/")
        self.assertEqual(response.values(b"x-env"), [b"blue"])
        client.send(b"status()\n")
        await waitForText(
            client.text, "live: blue (manual switch via manhole by alice)"
        )
        client.send(b"help()\n")
        await waitForText(client.text, "switch(to, force=False)")
        client.send(b'switch("blue")\n')
        await waitForText(client.text, "SwitchRefused: blue is already live")
        client.send(b"\x04")
        await client.lost
        messages = [formatEvent(e) for e in self.logs.namespace("bluegreen.manhole")]
        self.assertEqual(
            [m for m in messages if "logged" in m],
            ["manhole: alice logged in (telnet)", "manhole: alice logged out (telnet)"],
        )
        self.assertEqual(self.logs.errors(), [])

    async def test_wrongPassword(self) -> None:
        """
        A wrong password is refused (after a delay) and the prompt comes
        back; the right one then logs in.
        """
        client = await self.connect()
        await self.login(client, b"guess")
        await waitForText(client.text, "Authentication failed")
        await waitForText(client.text, "Username: ", count=2)
        self.assertNotIn(">>> ", client.text())
        await self.login(client, b"s3cret", attempt=2)
        await waitForText(client.text, ">>> ")
        self.assertEqual(self.proxy.controller.active, "green")

    async def test_typeAhead(self) -> None:
        """
        A user name and password typed at once (before the client has
        stopped echoing) still log in.
        """
        client = await self.connect()
        await waitForText(client.text, "Username: ")
        client.send(b"alice\ns3cret\n")
        await waitForText(client.text, ">>> ")

    async def test_tooManyFailures(self) -> None:
        """
        The third wrong password closes the connection.
        """
        self.patch(TelnetLogin, "failureDelay", 0.01)
        client = await self.connect()
        for attempt in range(1, 4):
            await waitForText(client.text, "Username: ", count=attempt)
            client.send(b"alice\n")
            await waitForText(client.text, "Password: ", count=attempt)
            client.send(b"nope\n")
        await client.lost
        self.assertIn("Authentication failed; disconnecting", client.text())

    async def test_clientKeepsEcho(self) -> None:
        """
        A client that will not let the server echo (so it shows the
        password as typed) can still log in.
        """

        class EchoingClient(TelnetClient):
            def enableRemote(self, option: bytes) -> bool:
                return option == SGA

        client = await self.connect(EchoingClient)
        await self.login(client, b"s3cret")
        await waitForText(client.text, ">>> ")
        client.send(b"6 * 7\n")
        await waitForText(client.text, "42")
        # Twisted's telnet session asks again once logged in, and logs the
        # refusal (which the client sent before the line above).
        self.assertEqual(len(self.flushLoggedErrors(OptionRefused)), 1)

    async def test_stopCloses(self) -> None:
        """
        Stopping the service closes the sessions.
        """
        client = await self.connect()
        await self.login(client, b"s3cret")
        await waitForText(client.text, ">>> ")
        await self.proxy.stop()
        await client.lost


class Child(ProcessProtocol):
    """
    A child process whose output is collected.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[None] = Deferred()
        self.running = True
        self.reason: Failure | None = None

    def outReceived(self, data: bytes) -> None:
        """
        Keep stdout.
        """
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        """
        Fire L{ended} (with the reason, not as an error).
        """
        self.running = False
        self.reason = reason
        self.ended.callback(None)

    def text(self) -> str:
        """
        @return: The output so far, as a terminal would show it.
        """
        return screenText(self.output)


class Collect(Protocol):
    """
    Collects a command's output.

    @ivar reason: Why the command ended, once it has.
    """

    def __init__(self) -> None:
        self.data = b""
        self.ended: Deferred[None] = Deferred()
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        """
        Keep the output.
        """
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fire L{ended} (with the reason kept, not as an error).
        """
        self.reason = reason
        self.ended.callback(None)


class SSHSessionTests(TestCase):
    """
    Real SSH sessions with the manhole of a running proxy.
    """

    timeout = SESSION_TIMEOUT

    def setUp(self) -> None:
        self.directory = shortDirectory(self)
        self.logs = captureLogs(self)
        self.key, private, line = clientKey("alice@laptop")
        self.identity = writeFile(self.directory, "id", private)
        self.keys = writeFile(self.directory, "keys", line, 0o644)
        self.passwd = writeFile(self.directory, "passwd", b"bob:pw\n")
        self.hostKey = os.path.join(self.directory, "host_key")
        self.port = freePort()
        _green, self.proxy = startProxyFor(
            self,
            echo("green"),
            "--manhole-ssh",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--manhole-keys",
            self.keys,
            "--manhole-passwd",
            self.passwd,
            "--manhole-host-key",
            self.hostKey,
        )
        self.hostPublic = Key.fromFile(self.hostKey).public().toString("openssh")

    async def test_openssh(self) -> None:
        """
        OpenSSH logs in with a listed key (checking the host key from the
        created file), evaluates expressions and switches, recorded with the
        key's comment; Ctrl-D ends the session.
        """
        ssh = shutil.which("ssh")
        if ssh is None:
            raise SkipTest("no ssh client")
        knownHosts = writeFile(
            self.directory,
            "known_hosts",
            f"[127.0.0.1]:{self.port} ".encode() + self.hostPublic + b"\n",
        )
        child = Child()
        args = [
            ssh,
            "-tt",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={knownHosts}",
            "-o",
            "UpdateHostKeys=no",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"ConnectTimeout={math.ceil(PATIENCE)}",
            "-i",
            self.identity,
            "-p",
            str(self.port),
            "deploy@127.0.0.1",
        ]
        process = reactor.spawnProcess(
            child,
            ssh,
            args,
            env={"PATH": os.environ.get("PATH", ""), "HOME": self.directory},
        )

        async def stop() -> None:
            if child.running:
                process.signalProcess("KILL")
                await child.ended

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        await waitForText(child.text, "logged in as deploy (key alice@laptop)")
        await waitForText(child.text, ">>> ")
        process.write(b"controller.active\r")
        await waitForText(child.text, "'green'")
        process.write(b'switch("blue")\r')
        await waitForText(
            child.text, "manual switch via manhole by deploy (key alice@laptop)"
        )
        self.assertEqual(self.proxy.controller.active, "blue")
        process.write(b"\x04")
        await child.ended
        self.assertEqual(
            self.proxy.controller.history[-1].reason,
            "manual switch via manhole by deploy (key alice@laptop)",
        )
        messages = [formatEvent(e) for e in self.logs.namespace("bluegreen.manhole")]
        self.assertIn("manhole: deploy (key alice@laptop) logged in (SSH)", messages)
        self.assertEqual(self.logs.errors(), [])

    async def test_conchPassword(self) -> None:
        """
        Twisted's SSH client logs in with a password; a command (rather
        than a shell) is refused with exit status 1.
        """
        from twisted.conch.endpoints import SSHCommandClientEndpoint

        knownHosts = writeFile(
            self.directory, "known_hosts", b"127.0.0.1 " + self.hostPublic + b"\n"
        )
        endpoint = SSHCommandClientEndpoint.newConnection(
            reactor,
            b"controller.active",
            b"bob",
            b"127.0.0.1",
            self.port,
            password=b"pw",
            knownHosts=knownHosts,
        )

        protocol = Collect()
        await connectProtocol(endpoint, protocol)
        await protocol.ended
        assert protocol.reason is not None
        ended = protocol.reason.value
        assert isinstance(ended, ProcessTerminated), protocol.reason
        self.assertEqual(ended.exitCode, 1)
        self.assertEqual(self.proxy.controller.active, "green")
        messages = [formatEvent(e) for e in self.logs.namespace("bluegreen.manhole")]
        self.assertIn("manhole: bob logged in (SSH)", messages)
