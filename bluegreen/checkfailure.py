# -*- test-case-name: tests.test_checkfailure,tests.test_cli -*-
"""
Describing a failed health check in a few words.

The health monitor says why a check failed with these words, and so does
C{bluegreen check} in the client: this module is light (no monitor, no
controller, no proxy) so the client can import it.
"""

from __future__ import annotations

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

#: The largest health response body read; a larger one fails the check.
MAX_BODY = 64 * 1024


class BodyTooLarge(Exception):
    """
    A health response body larger than L{MAX_BODY}.
    """


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
    if isinstance(error, BodyTooLarge):
        return f"body larger than {MAX_BODY} bytes"
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
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        # The agent's connect timeout, not the check's: no number to give.
        return "connect timeout"
    if isinstance(error, DNSLookupError):
        return "host name could not be resolved"
    if isinstance(error, (ConnectError, ConnectionLost)):
        return f"cannot connect ({error})"
    if isTLSError(error):
        return describeTLSError(error)
    return f"{type(error).__name__}: {error}"
