# -*- test-case-name: tests.test_metrics,tests.test_proxy_errors -*-
"""
The ways an upstream exchange fails, in the proxy's words: the status and
short reason a client is sent, and the kind the metrics count.
"""

from __future__ import annotations

from twisted.python.failure import Failure

from bluegreen.checkfailure import connectionFailureKind, localResourceError
from bluegreen.proxy.pool import PoolClosed
from bluegreen.proxy.upstream import BadResponse
from bluegreen.tls import describeTLSError

#: The kinds of upstream failure, as the metrics name them:
#:   - C{refused}: the connection was refused;
#:   - C{timeout_connect}: no connection within C{--connect-timeout};
#:   - C{timeout_response}: no response head within C{--response-timeout};
#:   - C{dns}: the host name could not be resolved;
#:   - C{unreachable}: any other failure to connect (no route to host...);
#:   - C{tls}: the TLS handshake or the certificate check failed;
#:   - C{closed}: the upstream closed the connection (before or during the
#:     response);
#:   - C{reset}: the connection was reset or otherwise lost;
#:   - C{invalid_response}: the response was not valid HTTP/1.1;
#:   - C{shutdown}: bluegreen is shutting down (the pool is closed);
#:   - C{local}: bluegreen itself ran out of descriptors or memory
#:     (C{EMFILE}, C{ENFILE}, C{ENOBUFS}, C{ENOMEM}) while connecting: says
#:     nothing about the environment (see L{isLocalFailure});
#:   - C{other}: anything else.
#: L{classifyFailure} says which (but for C{timeout_response}).
FAILURE_KINDS = (
    "refused",
    "timeout_connect",
    "timeout_response",
    "dns",
    "unreachable",
    "tls",
    "closed",
    "reset",
    "invalid_response",
    "shutdown",
    "local",
    "other",
)


def classifyFailure(
    reason: Failure, connectTimeout: float | None = None
) -> tuple[int, str, str]:
    """
    Turn an upstream failure into a status, a short reason and a kind.

    @param reason: Why the upstream exchange failed.
    @param connectTimeout: The connect timeout, for the message.
    @return: C{(502, 503 or 504, reason, kind)} (503 for a local failure
        and for shutting down); the kind is one of
        L{FAILURE_KINDS} (but never C{timeout_response}, which is no
        failure of the connection: see L{bluegreen.proxy.exchange.Exchange}).
    """
    error = reason.value
    local = localResourceError(error)
    if local is not None:
        return 503, f"was not contacted: {local}", "local"
    if isinstance(error, BadResponse):
        return 502, f"sent an invalid response: {error}", "invalid_response"
    if isinstance(error, PoolClosed):
        return (
            503,
            "is not accepting requests (bluegreen is shutting down)",
            "shutdown",
        )
    kind = connectionFailureKind(error)
    if kind == "timeout_connect":
        after = f" within {connectTimeout:g} s" if connectTimeout else ""
        return 504, f"did not accept a connection{after} (connect timeout)", kind
    if kind == "refused":
        return 502, "refused the connection", kind
    if kind == "dns":
        return 502, f"host name could not be resolved ({error})", kind
    if kind in ("closed", "reset"):
        return 502, "closed the connection before responding", kind
    if kind == "unreachable":
        text = str(getattr(error, "osError", None) or error)
        return 502, f"could not be reached ({text.strip()})", kind
    if kind == "tls":
        return 502, f"TLS handshake failed ({describeTLSError(error)})", kind
    return 502, f"failed ({type(error).__name__}: {error})", "other"


def describeFailure(
    reason: Failure, connectTimeout: float | None = None
) -> tuple[int, str]:
    """
    Turn an upstream failure into a status and a short reason.

    @param reason: Why the upstream exchange failed.
    @param connectTimeout: The connect timeout, for the message.
    @return: C{(502, 503 or 504, reason)}: see L{classifyFailure}.
    """
    status, text, _ = classifyFailure(reason, connectTimeout)
    return status, text


def isLocalFailure(reason: Failure) -> bool:
    """
    Say whether an upstream failure is bluegreen's own: it ran out of
    descriptors or memory (the health checks' classifier,
    L{localResourceError}).  Such a failure is answered 503 and never
    reported against the environment.

    @param reason: Why the upstream exchange failed.
    @return: C{True} for a local failure.
    """
    return localResourceError(reason.value) is not None
