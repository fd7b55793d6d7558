# -*- test-case-name: tests.test_exposure,tests.test_manhole -*-
"""
Where a server endpoint description listens, and whether that can be
reached from other machines: the admin API and the manholes refuse to
listen beyond loopback without credentials.

An endpoint keeps its port and interface to itself; what it shows, through
public API, is the reactor call it makes when asked to listen.  So the
description is parsed with L{serverFromString} onto a L{_Recorder}, a
stand-in reactor whose C{listen*} methods only note their arguments.
"""

from __future__ import annotations

import ipaddress

from attrs import define, frozen
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


@frozen
class Listening:
    """
    Where a server endpoint would listen.

    @ivar port: The TCP port (C{tcp:}, C{tcp6:}, C{ssl:}), or L{None} for a
        UNIX socket.
    @ivar interface: The interface of a TCP port (C{""} or C{"::"}: every
        one).
    @ivar path: The path of a UNIX socket, or L{None} for TCP.
    """

    port: int | None = None
    interface: str = ""
    path: str | None = None


class _Recorded(Exception):
    """
    Raised by L{_Recorder} instead of listening.
    """


@define
class _Recorder:
    """
    A stand-in reactor for an endpoint's C{listen}: notes where it would
    listen, and listens nowhere.

    @ivar listening: Where the last C{listen*} call would have listened.
    """

    listening: Listening | None = None

    def listenTCP(
        self,
        port: int,
        factory: IProtocolFactory,
        backlog: int = 50,
        interface: str = "",
    ) -> None:
        """
        Note C{port} and C{interface}.

        @raise _Recorded: Always.
        """
        self.listening = Listening(port=port, interface=interface)
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
        Note C{port} and C{interface}, as L{listenTCP} does (TLS listens on a
        TCP port all the same).

        @raise _Recorded: Always.
        """
        self.listenTCP(port, factory, backlog, interface)

    def listenUNIX(
        self,
        address: str,
        factory: IProtocolFactory,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> None:
        """
        Note C{address}, the socket's path.

        @raise _Recorded: Always.
        """
        self.listening = Listening(path=address)
        raise _Recorded()


def listeningOn(description: str) -> Listening | None:
    """
    Say where a server endpoint would listen, without listening.

    @param description: A server endpoint description, e.g.
        C{tcp:3091:interface=127.0.0.1} or C{unix:/run/bg.sock}.
    @return: Where; L{None} for a kind of endpoint that listens neither on
        TCP nor on a UNIX socket.
    @raise ValueError: If C{description} cannot be parsed.
    """
    recorder = _Recorder()
    try:
        endpoint = serverFromString(recorder, description)
    except (IndexError, KeyError) as e:
        if description.startswith("systemd:"):
            # Twisted reads the sockets systemd hands over when it is first
            # imported, and looks them up by index or name here.
            raise ValueError(
                "systemd handed over no listening socket with that index or "
                "name (run it from a .socket unit with FileDescriptorName=, "
                "or under systemd-socket-activate --fdname=NAME)"
            ) from None
        raise ValueError(str(e)) from None
    try:
        listening = endpoint.listen(Factory())
    except AttributeError:
        # It needs another kind of reactor (adoptStreamPort...).
        return None
    # It has failed, with _Recorded.
    listening.addErrback(lambda _: None)
    return recorder.listening


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
    where = listeningOn(description)
    if where is None or where.port is None or isLoopback(where.interface):
        return None
    if where.interface in ("", "0.0.0.0", "::"):
        return "all interfaces"
    return f"interface {where.interface}"
