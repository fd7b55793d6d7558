# -*- test-case-name: tests.test_checkfailure,tests.test_cli,tests.test_proxy_errors -*-
"""
Describing a failed health check in a few words.

The health monitor says why a check failed with these words, and so does
C{bluegreen check} in the client: this module is light (no monitor, no
controller, no proxy) so the client can import it.  The proxy sorts its
upstream failures with the same L{connectionFailureKind}, in its own words.
"""

from __future__ import annotations

import errno

from twisted.internet.defer import CancelledError
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import (
    ConnectError,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from bluegreen.tls import describeTLSError, isTLSError

#: The errors that say bluegreen itself, not the server, ran out of
#: something, with what ran out (Twisted's own list of the accept errors
#: that are the listening process's fault, for the connecting side).
_LOCAL_ERRORS: dict[int, str] = {
    errno.EMFILE: "bluegreen is out of file descriptors",
    errno.ENFILE: "the system bluegreen runs on is out of file descriptors",
    errno.ENOMEM: "bluegreen is out of memory",
    errno.ENOBUFS: "bluegreen is out of buffer space (memory)",
}


def _errnoOf(error: object) -> int | None:
    """
    @return: The errno an exception carries: an L{OSError}'s C{errno}, or a
        Twisted L{ConnectError}'s C{osError} (which
        C{twisted.internet.tcp} fills with the errno when making or
        connecting the socket fails, as C{ConnectBindError(errno, text)} or
        C{getConnectError((errno, text))}); else L{None}.
    """
    if isinstance(error, ConnectError) and isinstance(error.osError, int):
        return error.osError
    if isinstance(error, OSError) and isinstance(error.errno, int):
        return error.errno
    return None


def localResourceError(error: object) -> str | None:
    """
    Say whether a check failed because bluegreen's own process or host ran
    out of descriptors or memory: that says nothing about the server.

    @param error: Why a check failed (its request or its body read);
        failures the HTTP client wraps (L{ResponseNeverReceived},
        L{ResponseFailed}) are looked into.
    @return: E.g. C{"bluegreen is out of file descriptors (EMFILE)"}, or
        L{None} when the failure is not a local one.
    """
    errors: list[object] = [error]
    if isinstance(error, (ResponseNeverReceived, ResponseFailed)):
        errors.extend(reason.value for reason in error.reasons)
    for each in errors:
        number = _errnoOf(each)
        if number in _LOCAL_ERRORS:
            return f"{_LOCAL_ERRORS[number]} ({errno.errorcode[number]})"
    return None


#: Twisted's connection errors by kind, the first that matches winning (the
#: timeout and refused are kinds of ConnectError).
_CONNECTION_FAILURES: tuple[tuple[str, type[Exception]], ...] = (
    ("timeout_connect", TimeoutError),
    ("refused", ConnectionRefusedError),
    ("dns", DNSLookupError),
    ("closed", ConnectionDone),
    ("reset", ConnectionLost),
    ("unreachable", ConnectError),
)


def connectionFailureKind(error: object) -> str | None:
    """
    Say which way a connection to a server failed, as the metrics name it
    (L{bluegreen.proxy.failures.FAILURE_KINDS}).

    @param error: Why a connection, or an exchange on it, failed.
    @return: C{"timeout_connect"} (Twisted's connect timeout), C{"refused"},
        C{"dns"}, C{"closed"} (closed cleanly), C{"reset"} (otherwise lost),
        C{"unreachable"} (any other failure to connect) or C{"tls"}; or
        L{None} for anything else.
    """
    for kind, errors in _CONNECTION_FAILURES:
        if isinstance(error, errors):
            return kind
    return "tls" if isTLSError(error) else None


def describeCheckFailure(reason: Failure, timeout: float) -> str:
    """
    Say in a few words why a check failed.

    @param reason: The failure of the check's request or body read.
    @param timeout: The check timeout, for the message.
    @return: E.g. C{"connection refused"}, C{"timeout after 2 s"}.
    """
    error = reason.value
    if isinstance(error, (DeferredTimeoutError, CancelledError)):
        return f"timeout after {timeout:g} s"
    if isinstance(error, (ResponseNeverReceived, ResponseFailed)):
        inner = [r.value for r in error.reasons]
        if any(isinstance(e, CancelledError) for e in inner):
            return f"timeout after {timeout:g} s"
        tls = [e for e in inner if isTLSError(e)]
        if tls:
            return describeTLSError(tls[0])
        where = (
            "before a response"
            if isinstance(error, ResponseNeverReceived)
            else ("during the response")
        )
        if any(isinstance(e, ConnectionDone) for e in inner):
            return f"connection closed {where}"
        return f"connection reset {where}"
    kind = connectionFailureKind(error)
    if kind == "refused":
        return "connection refused"
    if kind == "timeout_connect":
        # The agent's connect timeout, not the check's: no number to give.
        return "connect timeout"
    if kind == "dns":
        return "host name could not be resolved"
    if kind in ("unreachable", "reset"):
        return f"cannot connect ({error})"
    if kind == "tls":
        return describeTLSError(error)
    # Also a connection closed cleanly ("closed"): said as it is.
    return f"{type(error).__name__}: {error}"
