# -*- test-case-name: tests.test_manhole_sessions -*-
"""
The manholes' realm: a logged-in user gets a Python prompt, on telnet or
SSH; logins and logouts are logged.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.conch.insults.insults import ServerProtocol
from twisted.conch.interfaces import IConchUser
from twisted.conch.telnet import ITelnetProtocol
from twisted.cred.portal import IRealm
from twisted.logger import Logger
from zope.interface import Interface, implementer

from bluegreen.manhole.auth import displayName
from bluegreen.manhole.namespace import Namespace
from bluegreen.manhole.prompt import manholeProtocol
from bluegreen.manhole.ssh import SSHUser
from bluegreen.manhole.telnet import TelnetSession

_log = Logger(namespace="bluegreen.manhole")


@implementer(IRealm)
class ManholeRealm:
    """
    Gives a logged-in user a manhole (telnet or SSH), logging the login and
    the logout.

    @ivar namespace: Makes each session's namespace.
    """

    def __init__(self, namespace: Namespace) -> None:
        """
        @param namespace: Makes each session's namespace.
        """
        self.namespace = namespace

    def requestAvatar(
        self, avatarId: bytes | tuple[()], mind: object, *interfaces: type[Interface]
    ) -> tuple[type[Interface], object, Callable[[], None]]:
        """
        @param avatarId: The user, as the checker named it (the checkers
            here never give the anonymous C{()}).
        @param mind: Unused.
        @param interfaces: What the login asks for: L{ITelnetProtocol} or
            L{IConchUser}.
        @return: A telnet session or an SSH user, and the logout.
        @raise NotImplementedError: For any other interface.
        """
        who = displayName(avatarId if isinstance(avatarId, bytes) else b"")
        interface: type[Interface]
        if ITelnetProtocol in interfaces:
            kind, interface = "telnet", ITelnetProtocol
        elif IConchUser in interfaces:
            kind, interface = "SSH", IConchUser
        else:
            raise NotImplementedError(interfaces)
        _log.info(
            "manhole: {user} logged in ({kind})",
            user=who,
            kind=kind,
            event="manhole-login",
        )
        done: list[bool] = []

        def logout() -> None:
            if not done:
                done.append(True)
                _log.info(
                    "manhole: {user} logged out ({kind})",
                    user=who,
                    kind=kind,
                    event="manhole-logout",
                )

        avatar: TelnetSession | SSHUser
        if interface is ITelnetProtocol:
            session = TelnetSession(
                ServerProtocol,
                manholeProtocol(),
                self.namespace.namespaceFor(who),
                self.namespace.banner(who),
            )
            session.logout = logout
            avatar = session
        else:
            avatar = SSHUser(self.namespace, who)
        return interface, avatar, logout
