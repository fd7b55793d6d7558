# -*- test-case-name: tests.test_checkfailure,tests.test_proxy_forwarding -*-
"""
Recognising and describing TLS failures, for the proxy's error pages and the
health checks' reasons.
"""

from __future__ import annotations

from OpenSSL.SSL import Error as SSLError


def isTLSError(error: object) -> bool:
    """
    Whether C{error} came from TLS: a handshake or certificate failure
    (C{OpenSSL.SSL.Error}, whose class is just called C{Error}) or a
    certificate that does not match the host (service_identity's
    C{VerificationError}).
    """
    name = type(error).__name__
    return (
        isinstance(error, SSLError)
        or "SSL" in name
        or "TLS" in name
        or "Verification" in name
    )


def describeTLSError(error: object) -> str:
    """
    Say what went wrong in TLS, e.g. C{"TLS error: certificate verify
    failed"} rather than OpenSSL's list of C{(library, function, reason)}.
    """
    if isinstance(error, SSLError) and error.args and isinstance(error.args[0], list):
        reasons = [
            str(item[-1])
            for item in error.args[0]
            if isinstance(item, tuple) and item and item[-1]
        ]
        if reasons:
            return "TLS error: " + "; ".join(reasons)
    return f"TLS error: {error}"
