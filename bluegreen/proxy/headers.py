# -*- test-case-name: tests.test_proxy_forwarding -*-
"""
Header rules shared by both directions of a proxied exchange: which headers
are hop-by-hop, the C{Date} a response gets when the upstream sent none, and
the client's address as C{X-Forwarded-For} names it.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.interfaces import IAddress
from twisted.web.http import datetimeToString

#: Hop-by-hop headers (RFC 9110 section 7.6.1), never forwarded; lower case.
HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
    )
)


def droppedBy(connectionValues: Sequence[bytes] | None) -> frozenset[bytes]:
    """
    The lower-case header names a message's C{Connection} header makes
    hop-by-hop, plus the standard ones.

    @param connectionValues: The message's C{Connection} header values.
    @return: The lower-case names not to forward.
    """
    if not connectionValues:
        return HOP_BY_HOP
    tokens = {
        token.strip().lower()
        for value in connectionValues
        for token in value.split(b",")
    }
    return HOP_BY_HOP | tokens


class _DateCache:
    """
    The current HTTP date, formatted at most once a second.
    """

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self, seconds: float) -> bytes:
        """
        @param seconds: The POSIX time.
        @return: Its second as an HTTP date.
        """
        second = int(seconds)
        if second != self._second:
            self._second = second
            self._value = datetimeToString(second)
        return self._value


_dates = _DateCache()


def httpDate(seconds: float) -> bytes:
    """
    Format a time as an HTTP C{Date} (cached: a busy proxy formats it once a
    second, not once a response).

    @param seconds: The POSIX time.
    @return: E.g. C{b"Sun, 06 Nov 1994 08:49:37 GMT"}.
    """
    return _dates.now(seconds)


def clientHost(address: IAddress | None) -> bytes | None:
    """
    The client's host, as C{X-Forwarded-For} names it.

    @param address: The client connection's address.
    @return: The host, or L{None} for an address without one (a UNIX socket).
    """
    host = getattr(address, "host", None)
    if isinstance(host, str):
        return host.encode("ascii")
    return None
