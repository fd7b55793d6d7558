# -*- test-case-name: tests.test_admin_guard,tests.test_admin_browser -*-
"""
Which requests the admin site answers at all: the defence against DNS
rebinding and against foreign web pages in an operator's browser.

A page from C{http://evil.example} cannot read or change the loopback admin
API directly (the browser's same-origin policy), but it can make
C{evil.example} resolve to C{127.0.0.1} (DNS rebinding): the browser then
sends its requests to the admin API with C{Host: evil.example:3091}, and
treats the answers as the page's own.  So (RFC 9110 section 7.4, "Rejecting
Misdirected Requests"):

  - every request must name this admin API in its C{Host} (RFC 9110
    section 7.2; the authority of an absolute-form target wins over
    C{Host}, RFC 9112 section 3.2.2): C{localhost}, a loopback address
    (C{127.0.0.0/8}, C{[::1]}), the address the connection came in on, or a
    name given with C{--admin-host}, each with any port or none.  Anything
    else, and a missing or repeated C{Host} on HTTP/1.1, gets 421.  Names
    are compared without case; a trailing dot is not dropped (C{localhost.}
    is another name, which a resolver may send to DNS), and IP addresses
    are compared as addresses.  An HTTP/1.0 request without C{Host} is
    answered: it names no host, so nothing can have been rebound.
  - a request that can change something (any method but C{GET}, C{HEAD},
    C{OPTIONS} and C{TRACE}) carrying C{Origin} must come from this very
    site: the same scheme, host and port as the request's own (C{Origin:
    null} is foreign).  Without C{Origin} (curl, the C{bluegreen} command)
    nothing more is asked.  Anything else gets 403.

The same rules hold on a UNIX socket (whose address has no name, so only
the loopback names and C{--admin-host} count): a browser-facing proxy in
front of the socket would otherwise pass rebound requests through.  The
C{bluegreen} command sends C{Host: localhost} there.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from attrs import frozen
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress

from bluegreen.admin.jsonapi import AdminError

#: Methods that change nothing (RFC 9110 section 9.2.1): no C{Origin} check.
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})

#: The host names of this machine that nobody else can point anywhere.
LOOPBACK_NAMES = frozenset({"localhost"})

#: A reg-name of RFC 3986 (what is allowed in a host that is no IP literal).
_REG_NAME = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=%]+")

#: The longest part of a client's header quoted back in a message.
_QUOTED = 200


class BadHost(ValueError):
    """
    A host name or address that cannot be one (for C{--admin-host}).
    """


def hostName(text: str) -> str:
    """
    Normalise a host as the checks compare it: an IP address in its
    compressed form (without brackets), a name in lower case.

    @param text: A host name, an IPv4 address or an IPv6 address (with or
        without brackets), without port.
    @return: The normalised host.
    @raise BadHost: If C{text} is neither a host name nor an IP address.
    """
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return ipaddress.ip_address(inner).compressed
    except ValueError:
        pass
    if inner != text or not _REG_NAME.fullmatch(text):
        raise BadHost(f"{text!r} is not a host name or IP address")
    return text.lower()


def splitAuthority(authority: str) -> tuple[str, int | None]:
    """
    Split a C{Host} value (C{uri-host [":" port]}, RFC 9110 section 7.2).

    @param authority: The value.
    @return: The normalised host (see L{hostName}) and the port (L{None}
        when there is none, or it is empty).
    @raise BadHost: If the value is not a host and an optional port.
    """
    if authority.startswith("["):
        host, bracket, rest = authority.partition("]")
        host += bracket
        if not bracket:
            raise BadHost(f"{authority!r} has no closing ]")
    else:
        host, _, port = authority.partition(":")
        rest = authority[len(host) :]
    if rest and not rest.startswith(":"):
        raise BadHost(f"{authority!r} is not host[:port]")
    port = rest[1:]
    if port and not (port.isascii() and port.isdigit() and int(port) < 65536):
        raise BadHost(f"{authority!r} has a bad port")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise BadHost(
                f"{authority!r}: only an IPv6 address goes in brackets"
            ) from None
    if ":" in host and not host.startswith("["):
        raise BadHost(f"{authority!r}: an IPv6 address needs brackets")
    return hostName(host), int(port) if port else None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """
    @return: C{text} as an IP address (an IPv4-mapped IPv6 one as IPv4), or
        L{None} if it is not one.
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


@frozen
class AdminNames:
    """
    The names the admin site answers to, beyond the loopback ones and the
    address a connection came in on.

    @ivar names: The C{--admin-host} names, normalised (L{hostName}).
    """

    names: frozenset[str] = frozenset()

    @classmethod
    def fromOptions(cls, values: Iterable[str]) -> AdminNames:
        """
        @param values: The C{--admin-host} values.
        @return: The names.
        @raise BadHost: For a value that is not a host name or address.
        """
        return cls(frozenset(hostName(value.strip()) for value in values))

    def allows(self, host: str, local: IAddress | None) -> bool:
        """
        @param host: A normalised host (L{splitAuthority}).
        @param local: The address the connection came in on.
        @return: Whether C{host} names this admin site.
        """
        if host in LOOPBACK_NAMES or host in self.names:
            return True
        address = _address(host)
        if address is None:
            return False
        if address.is_loopback:
            return True
        if isinstance(local, (IPv4Address, IPv6Address)):
            return address == _address(local.host.partition("%")[0])
        return False


def _quoted(value: bytes) -> str:
    """
    @return: A client's header value, for a message (cut if very long).
    """
    text = value.decode("latin-1")
    return repr(text if len(text) <= _QUOTED else text[:_QUOTED] + "...")


def _target(uri: bytes) -> bytes | None:
    """
    @return: The authority of an absolute-form request target
        (C{http://host:port/path}), or L{None} for the usual origin-form.
    """
    scheme, separator, rest = uri.partition(b"://")
    if not separator or scheme.lower() not in (b"http", b"https"):
        return None
    return re.split(b"[/?#]", rest, maxsplit=1)[0]


#: The names the admin site always answers to, for messages.
_ALWAYS = "localhost, 127.0.0.1, [::1] and its own address"


def hostRefusal(
    names: AdminNames,
    hosts: Sequence[bytes],
    uri: bytes,
    version: bytes,
    local: IAddress | None,
) -> AdminError | None:
    """
    Decide whether a request names this admin site.

    @param names: The C{--admin-host} names.
    @param hosts: The request's C{Host} header values.
    @param uri: Its request target.
    @param version: Its HTTP version (C{b"HTTP/1.1"}).
    @param local: The address its connection came in on.
    @return: L{None} if it does, else the 421 to answer.
    """
    target = _target(uri)
    if target is not None:
        hosts = [target]
    elif not hosts:
        if version == b"HTTP/1.0":
            return None
        return AdminError(
            421,
            "no Host header; a request to the admin API must name it "
            f"({_ALWAYS}, or a name given with --admin-host)",
        )
    elif len(hosts) > 1:
        return AdminError(
            421,
            "more than one Host header; a request to the admin API names it "
            f"once ({_ALWAYS}, or a name given with --admin-host)",
        )
    value = hosts[0]
    try:
        host, _ = splitAuthority(value.decode("ascii").strip(" \t"))
    except (UnicodeDecodeError, BadHost):
        return AdminError(
            421,
            f"Host {_quoted(value)} is not a host and optional port; the admin "
            f"API answers {_ALWAYS}, and the names given with --admin-host",
        )
    if names.allows(host, local):
        return None
    return AdminError(
        421,
        f"Host {_quoted(value)} is not this admin API; to reach it by that "
        f"name, start bluegreen with --admin-host {host}",
    )


def _origin(text: str) -> tuple[str, str, int] | None:
    """
    @return: An C{Origin} value's scheme, normalised host and port (the
        scheme's default if none), or L{None} if it is not a serialised
        origin (RFC 6454 section 6.2).
    """
    scheme, separator, authority = text.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in ("http", "https"):
        return None
    if re.search(r"[/?#@\s]", authority):
        return None
    try:
        host, port = splitAuthority(authority)
    except BadHost:
        return None
    return scheme, host, port or (443 if scheme == "https" else 80)


def originRefusal(
    method: bytes,
    origins: Sequence[bytes],
    hosts: Sequence[bytes],
    secure: bool,
) -> AdminError | None:
    """
    Decide whether a request that may change something comes from a page of
    this admin site (or from no page at all).

    @param method: The request's method.
    @param origins: Its C{Origin} header values.
    @param hosts: Its C{Host} header values (already accepted).
    @param secure: Whether it came over TLS.
    @return: L{None} if it may go on, else the 403 to answer.
    """
    if method in SAFE_METHODS or not origins:
        return None
    scheme = "https" if secure else "http"
    own = None
    if len(hosts) == 1:
        try:
            host, port = splitAuthority(hosts[0].decode("ascii").strip(" \t"))
        except (UnicodeDecodeError, BadHost):
            pass
        else:
            own = scheme, host, port or (443 if secure else 80)
    site = "unknown" if own is None else hosts[0].decode("ascii").strip(" \t")
    if len(origins) > 1:
        return AdminError(403, "more than one Origin header; refused")
    given = origins[0].decode("latin-1").strip(" \t")
    if own is not None and _origin(given) == own:
        return None
    return AdminError(
        403,
        f"Origin {_quoted(origins[0])} is not this admin site "
        f"({scheme}://{site}): a page from another site cannot change anything "
        "here",
    )
