# -*- test-case-name: tests.test_admin,tests.test_manhole -*-
"""
Whether a listening endpoint can be reached from other machines: the admin
API and the manholes refuse to listen beyond loopback without credentials.

An endpoint keeps its interface to itself; what it shows, through public
API, is the reactor call it makes when asked to listen.  So the description
is parsed with L{serverFromString} onto a L{_Recorder}, a stand-in reactor
whose C{listen*} methods only note their C{interface} argument.
"""

from __future__ import annotations

import ipaddress

from attrs import define
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory


def isLoopback(host: str) -> bool:
    """
    Whether C{host} (an interface to listen on) is reachable only from this
    machine.

    @param host: An IP address, C{localhost}, or C{""} (every interface).
    @return: L{True} for a loopback address or C{localhost}.
    """
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        # Every interface (""), or a host name: it may not be local.
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class _Recorded(Exception):
    """
    Raised by L{_Recorder} instead of listening.
    """


@define
class _Recorder:
    """
    A stand-in reactor for an endpoint's C{listen}: notes the interface a
    TCP or TLS endpoint would listen on, and listens on nothing.

    @ivar interface: The C{interface} of the last C{listenTCP} or
        C{listenSSL}; L{None} if there was none.
    """

    interface: str | None = None

    def listenTCP(
        self,
        port: int,
        factory: IProtocolFactory,
        backlog: int = 50,
        interface: str = "",
    ) -> None:
        """
        Note C{interface}.

        @raise _Recorded: Always.
        """
        self.interface = interface
        raise _Recorded()

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: object,
        backlog: int = 50,
        interface: str = "",
    ) -> None:
        """
        Note C{interface}.

        @raise _Recorded: Always.
        """
        self.interface = interface
        raise _Recorded()


def exposedInterface(description: str) -> str | None:
    """
    Say whether a server endpoint can be reached from other machines.

    Only endpoints that listen on TCP (C{tcp:}, C{tcp6:}, C{ssl:}) are
    judged; UNIX sockets (and other kinds) are local.

    @param description: A server endpoint description, e.g.
        C{tcp:3091:interface=127.0.0.1}.
    @return: L{None} if it listens on loopback only (or not on TCP);
        otherwise where it listens, e.g. C{"all interfaces"} or
        C{"interface 10.0.0.5"}.
    @raise ValueError: If C{description} cannot be parsed.
    """
    recorder = _Recorder()
    endpoint = serverFromString(recorder, description)
    try:
        listening = endpoint.listen(Factory())
    except AttributeError:
        # It needs another kind of reactor (listenUNIX...): not TCP.
        return None
    # It has failed, with _Recorded.
    listening.addErrback(lambda _: None)
    interface = recorder.interface
    if interface is None or isLoopback(interface):
        return None
    if interface in ("", "0.0.0.0", "::"):
        return "all interfaces"
    return f"interface {interface}"
