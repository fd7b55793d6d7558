# -*- test-case-name: tests.test_manhole,tests.test_manhole_sessions -*-
"""
The SSH manhole: each session channel of a logged-in user runs the Python
prompt; commands (C{ssh host COMMAND}) are refused.

C{twisted.conch.manhole_ssh} imports the global reactor, so it is imported
only when the factory is built or a session starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from twisted.conch.avatar import ConchUser
from twisted.conch.insults.insults import ServerProtocol
from twisted.conch.interfaces import ISession
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.session import SSHSession, SSHSessionProcessProtocol
from twisted.conch.ssh.transport import DISCONNECT_BY_APPLICATION, SSHServerTransport
from twisted.cred.portal import Portal
from twisted.internet.error import ConnectionDone, ProcessTerminated
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from bluegreen.manhole.namespace import Namespace
from bluegreen.manhole.prompt import manholeProtocol

if TYPE_CHECKING:
    from twisted.conch.manhole_ssh import ConchFactory

_log = Logger(namespace="bluegreen.manhole")


class SSHTransport(SSHServerTransport):
    """
    The SSH server side of a connection, logging an ordinary disconnection
    (a user logging out) as such rather than as an error.
    """

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        """
        The client disconnected, saying why.

        @param reasonCode: One of the C{DISCONNECT_*} codes.
        @param description: The client's words.
        """
        if reasonCode == DISCONNECT_BY_APPLICATION:
            _log.info("SSH client disconnected: {description}", description=description)
        else:
            super().receiveError(reasonCode, description)


def sshFactory(portal: Portal, hostKey: Key) -> ConchFactory:
    """
    The factory of SSH manhole connections.

    @param portal: Checks the credentials and gives L{SSHUser}s.
    @param hostKey: The server's private host key.
    @return: The factory.
    """
    from twisted.conch.manhole_ssh import ConchFactory

    factory = ConchFactory(portal)
    factory.protocol = SSHTransport
    kind = hostKey.sshType()
    # Instance attributes: ConchFactory's are class dicts shared by all.  It
    # annotates them as bytes to bytes, but the transport uses Key values.
    factory.publicKeys = cast("dict[bytes, bytes]", {kind: hostKey.public()})
    factory.privateKeys = cast("dict[bytes, bytes]", {kind: hostKey})
    factory.noisy = False
    return factory


class SSHUser(ConchUser):
    """
    A logged-in SSH user: may open session channels, each a manhole.

    @ivar namespace: Makes each session's namespace.
    @ivar who: The user, for the namespace and the logs.
    """

    def __init__(self, namespace: Namespace, who: str) -> None:
        """
        @param namespace: Makes each session's namespace.
        @param who: The user, for the namespace and the logs.
        """
        super().__init__()
        self.namespace = namespace
        self.who = who
        self.channelLookup[b"session"] = SSHSession

    def __conform__(self, interface: type[Interface]) -> SSHShell | None:
        """
        A new L{SSHShell} for each session channel.

        @param interface: What the channel asks the user for.
        @return: A shell for L{ISession}; L{None} otherwise.
        """
        if interface is ISession:
            return SSHShell(self)
        return None


@implementer(ISession)
class SSHShell:
    """
    One SSH session channel: a manhole on a terminal.  Commands
    (C{ssh host COMMAND}) are refused with a message and exit status 1.

    @ivar user: The logged-in user.
    @ivar width: The terminal's columns.
    @ivar height: The terminal's rows.
    """

    width = 80
    height = 24

    def __init__(self, user: SSHUser) -> None:
        """
        @param user: The logged-in user.
        """
        self.user = user
        self._proto: SSHSessionProcessProtocol | None = None
        self._terminal: ServerProtocol | None = None

    def getPty(self, term: bytes, windowSize: tuple[int, ...], modes: object) -> None:
        """
        Remember the terminal's size; a client that does not know it
        (sending 0) gets 80x24.

        @param term: The terminal type.
        @param windowSize: C{(rows, columns, xpixel, ypixel)}.
        @param modes: The terminal modes.
        """
        rows, columns = windowSize[:2]
        self.height, self.width = rows or 24, columns or 80

    def openShell(self, proto: SSHSessionProcessProtocol) -> None:
        """
        Start the manhole on the channel.

        @param proto: The channel's process protocol.
        """
        from twisted.conch.manhole_ssh import TerminalSessionTransport

        namespace, who = self.user.namespace, self.user.who
        self._terminal = ServerProtocol(
            manholeProtocol(), namespace.namespaceFor(who), namespace.banner(who)
        )
        self._proto = proto
        TerminalSessionTransport(
            proto, self._terminal, self.user, self.width, self.height
        )

    def execCommand(self, proto: SSHSessionProcessProtocol, command: bytes) -> None:
        """
        Refuse a command: say so on stderr and exit with status 1 (once the
        request has been answered).

        @param proto: The channel's process protocol.
        @param command: The command.
        """

        def refuse() -> None:
            proto.errReceived(
                b"bluegreen manhole: commands are not supported; log in "
                b"without one for a Python prompt\r\n"
            )
            proto.processEnded(Failure(ProcessTerminated(exitCode=1)))

        self.user.namespace.clock.callLater(0, refuse)

    def windowChanged(self, newWindowSize: tuple[int, ...]) -> None:
        """
        Tell the manhole the terminal's new size.

        @param newWindowSize: C{(rows, columns, xpixel, ypixel)}.
        """
        rows, columns = newWindowSize[:2]
        terminal = self._terminal
        if terminal is not None and terminal.terminalProtocol is not None:
            terminal.terminalProtocol.terminalSize(columns, rows)

    def eofReceived(self) -> None:
        """
        The client has no more input: end the session.
        """
        if self._proto is not None:
            self._proto.loseConnection()

    def closed(self) -> None:
        """
        The channel is closed: end the manhole.
        """
        terminal, self._terminal = self._terminal, None
        if terminal is not None:
            terminal.connectionLost(Failure(ConnectionDone()))
