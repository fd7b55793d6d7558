# -*- test-case-name: tests.test_manhole,tests.test_manhole_sessions -*-
"""
The telnet manhole: a login (user name, then a password that is not
echoed), then the Python prompt.

A refused login is answered after L{TelnetLogin.failureDelay} seconds; after
L{TelnetLogin.maxAttempts} the connection is closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.conch.telnet import (
    ECHO,
    LINEMODE,
    NAWS,
    SGA,
    ITelnetProtocol,
    StatefulTelnetProtocol,
    TelnetBootstrapProtocol,
    TelnetTransport,
)
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

_log = Logger(namespace="bluegreen.manhole")


class TelnetLogin(StatefulTelnetProtocol):
    """
    Asks for a user name and a password (not echoed), then hands the
    connection to the session the portal gives.

    Unlike Twisted's L{twisted.conch.telnet.AuthenticatingTelnetProtocol}
    (whose refusal and hand-over are private methods), it answers a refusal
    after a delay and closes the connection after L{maxAttempts}; it copes
    with a password typed ahead (before the client has agreed to stop
    echoing) and with a client that refuses to stop echoing: the login goes
    on once the negotiation is over.

    @ivar portal: Checks the credentials and gives the session.
    @ivar clock: Times the delay after a refusal.
    @ivar failures: Refused logins so far on this connection.
    """

    state = "User"

    #: Refused logins after which the connection is closed.
    maxAttempts = 3

    #: Seconds before a refusal is answered.
    failureDelay = 1.0

    def __init__(self, portal: Portal, clock: IReactorTime) -> None:
        """
        @param portal: Checks the credentials and gives the session.
        @param clock: Times the delay after a refusal.
        """
        self.portal = portal
        self.clock = clock
        self.failures = 0
        self._username = b""
        self._echoOff: Deferred[object] | None = None
        self._pending: IDelayedCall | None = None
        self._lost = False

    def _telnet(self) -> TelnetTransport:
        """
        @return: The telnet connection this login runs on.
        """
        transport = self.transport
        assert isinstance(transport, TelnetTransport)
        return transport

    def connectionMade(self) -> None:
        """
        Ask for the user name.
        """
        self._telnet().write(b"Username: ")

    def lineReceived(self, line: bytes) -> None:
        """
        Take a line, without the CR (or CR NUL) some clients end it with.

        @param line: The line.
        """
        super().lineReceived(line.rstrip(b"\r\0"))

    def telnet_User(self, line: bytes) -> str:
        """
        Take the user name; ask the client to let us echo (that is, not to
        show the password), and ask for the password.

        @param line: The user name.
        @return: The next state.
        """
        transport = self._telnet()
        self._username = line
        self._echoOff = transport.will(ECHO)
        # Refused: the client shows the password as it is typed.
        self._echoOff.addErrback(lambda failure: None)
        transport.write(b"Password: ")
        return "Password"

    def telnet_Password(self, line: bytes) -> str:
        """
        Take the password; once echo is settled, turn it back to the
        client's and check the credentials.

        @param line: The password.
        @return: The next state (lines are ignored until the check is done).
        """
        transport = self._telnet()
        credentials = UsernamePassword(self._username, line)
        self._username = b""

        def echoOn(result: object) -> Deferred[object]:
            d: Deferred[object] = transport.wont(ECHO)
            return d

        def login(result: object) -> None:
            d = self.portal.login(credentials, None, ITelnetProtocol)
            d.addCallbacks(self._loggedIn, self._refused)

        echo = self._echoOff if self._echoOff is not None else succeed(None)
        self._echoOff = None
        echo.addCallback(echoOn).addBoth(login)
        return "Discard"

    def _loggedIn(
        self, result: tuple[object, ITelnetProtocol, Callable[[], None]]
    ) -> None:
        """
        Hand the connection over to the session.

        @param result: The portal's C{(interface, session, logout)}.
        """
        _, session, logout = result
        if self._lost:
            # Gone while the password was checked.
            logout()
            return
        transport = self._telnet()
        # A TelnetTransport is the session's transport (it is one, through
        # ProtocolTransportMixin) but does not declare ITransport.
        session.makeConnection(cast(ITransport, transport))
        transport.protocol = session

    def _refused(self, failure: Failure) -> None:
        """
        Count a refused login and answer it after L{failureDelay}.

        @param failure: Why.
        """
        if not failure.check(UnauthorizedLogin):
            _log.failure("manhole: telnet login failed", failure)
        self.failures += 1
        if not self._lost:
            self._pending = self.clock.callLater(self.failureDelay, self._answer)

    def _answer(self) -> None:
        """
        Say the login failed: ask again, or disconnect after L{maxAttempts}.
        """
        self._pending = None
        transport = self._telnet()
        if self.failures >= self.maxAttempts:
            # The transport sends each \n as CR LF.
            transport.write(b"\nAuthentication failed; disconnecting\n")
            transport.loseConnection()
            return
        transport.write(b"\nAuthentication failed\nUsername: ")
        self.state = "User"

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Cancel a pending answer.

        @param reason: Why.
        """
        self._lost = True
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        super().connectionLost(reason)


class TelnetSession(TelnetBootstrapProtocol):
    """
    A logged-in telnet connection: negotiates the terminal, then runs the
    manhole.  It calls C{logout} when the connection ends (the login has
    handed the connection over, so it no longer hears of it).

    @ivar logout: Called once the connection ends.
    """

    logout: Callable[[], None] | None = None

    def connectionMade(self) -> None:
        """
        Ask for the client's window size, line mode and no go-ahead, offer
        to echo, and start the manhole on the terminal.

        As Twisted's does, but a request the connection ended before the
        client answered (a client quitting at once, the service stopping)
        is not logged as an error.
        """
        transport = self.transport
        assert isinstance(transport, TelnetTransport)
        transport.negotiationMap[NAWS] = self.telnet_NAWS
        transport.negotiationMap[LINEMODE] = self.telnet_LINEMODE
        for option in (LINEMODE, NAWS, SGA):
            transport.do(option).addErrback(_unanswered, "DO", option)
        transport.will(ECHO).addErrback(_unanswered, "WILL", ECHO)
        self.protocol = self.protocolFactory(*self.protocolArgs, **self.protocolKwArgs)
        self.protocol.makeConnection(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        End the manhole session and log out.

        @param reason: Why.
        """
        try:
            super().connectionLost(reason)
        finally:
            if self.logout is not None:
                self.logout()


def _unanswered(failure: Failure, command: str, option: bytes) -> None:
    """
    Log a refused option request; one the connection ended before the
    client answered is expected.

    @param failure: Why the request failed.
    @param command: C{"DO"} or C{"WILL"}.
    @param option: The option.
    """
    if not failure.check(ConnectionDone, ConnectionLost):
        _log.failure(
            "manhole: telnet {command} {option!r} failed",
            failure,
            command=command,
            option=option,
        )


class TelnetFactory(ServerFactory):
    """
    Builds telnet connections that log in through C{portal}.

    @ivar portal: Checks the credentials and gives the sessions.
    @ivar clock: Times the delay after a refused login.
    """

    noisy = False

    def __init__(self, portal: Portal, clock: IReactorTime) -> None:
        """
        @param portal: Checks the credentials and gives the sessions.
        @param clock: Times the delay after a refused login.
        """
        self.portal = portal
        self.clock = clock

    def buildProtocol(self, addr: IAddress | None) -> TelnetTransport:
        """
        @param addr: The client's address.
        @return: A telnet connection whose application is the login.
        """
        protocol = TelnetTransport(TelnetLogin, self.portal, self.clock)
        protocol.factory = self
        return protocol
