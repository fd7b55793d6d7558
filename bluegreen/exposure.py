# -*- test-case-name: tests.test_admin,tests.test_manhole -*-
"""
Whether a listening endpoint can be reached from other machines: the admin
API and the manholes refuse to listen beyond loopback without credentials.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
)


def isLoopback(host: str) -> bool:
    """
    Whether C{host} (an interface to listen on) is reachable only from this
    machine.

    @param host: An IP address, C{localhost}, or C{""} (every interface).
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


def exposedInterface(endpoint: object) -> str | None:
    """
    Say whether a server endpoint can be reached from other machines.

    Only TCP endpoints (C{tcp:}, C{tcp6:}, C{ssl:}) are judged; UNIX sockets
    (and other kinds) are local.

    @param endpoint: A parsed server endpoint.
    @return: L{None} if it listens on loopback only (or is not TCP);
        otherwise where it listens, e.g. C{"all interfaces"} or
        C{"interface 10.0.0.5"}.
    """
    if not isinstance(
        endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint, SSL4ServerEndpoint)
    ):
        return None
    interface = str(getattr(endpoint, "_interface", ""))
    if isLoopback(interface):
        return None
    if interface in ("", "0.0.0.0", "::"):
        return "all interfaces"
    return f"interface {interface}"
