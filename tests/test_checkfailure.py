# -*- test-case-name: tests.test_checkfailure -*-
"""
Tests for L{bluegreen.checkfailure}: a failed health check in a few words.
"""

from __future__ import annotations

import errno
import os

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer
from twisted.internet.defer import CancelledError
from twisted.internet.error import (
    ConnectBindError,
    ConnectError,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
    getConnectError,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from bluegreen.checkfailure import describeCheckFailure, localResourceError


class DescribeCheckFailureTests(SynchronousTestCase):
    """
    L{describeCheckFailure} says why a check failed, in a few words.
    """

    def describe(self, error: BaseException, timeout: float = 2.0) -> str:
        """
        Describe C{error} as the failure of a check with C{timeout}.
        """
        return describeCheckFailure(Failure(error), timeout)

    def test_timeout(self) -> None:
        """
        The check's own timeout (L{defer.TimeoutError}, from C{addTimeout})
        gives the timeout in seconds.
        """
        self.assertEqual(self.describe(defer.TimeoutError()), "timeout after 2 s")
        self.assertEqual(
            self.describe(defer.TimeoutError(), 0.5), "timeout after 0.5 s"
        )

    def test_cancelled(self) -> None:
        """
        A bare L{CancelledError} is a timeout too.
        """
        self.assertEqual(self.describe(CancelledError()), "timeout after 2 s")

    def test_neverReceivedCancelled(self) -> None:
        """
        A request cancelled after it was sent fails with
        L{ResponseNeverReceived} around L{CancelledError}: a timeout.
        """
        error = ResponseNeverReceived([Failure(CancelledError())])
        self.assertEqual(self.describe(error, 3), "timeout after 3 s")

    def test_neverReceivedClosed(self) -> None:
        """
        A connection closed cleanly before any response byte.
        """
        error = ResponseNeverReceived([Failure(ConnectionDone())])
        self.assertEqual(self.describe(error), "connection closed before a response")

    def test_neverReceivedLost(self) -> None:
        """
        A connection reset before any response byte.
        """
        error = ResponseNeverReceived([Failure(ConnectionLost())])
        self.assertEqual(self.describe(error), "connection reset before a response")

    def test_responseFailedClosed(self) -> None:
        """
        A connection closed cleanly in the middle of a response.
        """
        error = ResponseFailed([Failure(ConnectionDone())])
        self.assertEqual(self.describe(error), "connection closed during the response")

    def test_responseFailedLost(self) -> None:
        """
        A connection reset in the middle of a response.
        """
        error = ResponseFailed([Failure(ConnectionLost())])
        self.assertEqual(self.describe(error), "connection reset during the response")

    def test_tlsHandshake(self) -> None:
        """
        An OpenSSL error inside L{ResponseNeverReceived} (an untrusted
        certificate) is a TLS error, with OpenSSL's reasons and not its
        tuples.
        """
        error = ResponseNeverReceived(
            [Failure(SSL.Error([("SSL routines", "", "certificate verify failed")]))]
        )
        self.assertEqual(self.describe(error), "TLS error: certificate verify failed")

    def test_tlsSeveralReasons(self) -> None:
        """
        Several OpenSSL reasons are all given.
        """
        error = SSL.Error(
            [
                ("SSL routines", "", "sslv3 alert handshake failure"),
                ("SSL routines", "", "no shared cipher"),
            ]
        )
        self.assertEqual(
            self.describe(error),
            "TLS error: sslv3 alert handshake failure; no shared cipher",
        )

    def test_tlsOther(self) -> None:
        """
        An OpenSSL error without a reason list is given as it is.
        """
        self.assertEqual(
            self.describe(SSL.Error("unexpected EOF")), "TLS error: unexpected EOF"
        )

    def test_tlsHostMismatch(self) -> None:
        """
        A certificate for another host (service_identity's
        L{VerificationError}, as the connection is aborted with it) is a TLS
        error.
        """
        error = ResponseNeverReceived([Failure(VerificationError(errors=[]))])
        self.assertTrue(self.describe(error).startswith("TLS error: "))

    def test_refused(self) -> None:
        """
        A refused connection.
        """
        self.assertEqual(self.describe(ConnectionRefusedError()), "connection refused")

    def test_connectTimeout(self) -> None:
        """
        The agent's connect timeout (L{twisted.internet.error.TimeoutError})
        has its own duration, not the check's: none is given.
        """
        self.assertEqual(self.describe(TimeoutError()), "connect timeout")

    def test_dns(self) -> None:
        """
        A host name that does not resolve.
        """
        self.assertEqual(
            self.describe(DNSLookupError("no.such.host")),
            "host name could not be resolved",
        )

    def test_otherConnectError(self) -> None:
        """
        Other connection failures say what they are.
        """
        self.assertEqual(
            self.describe(ConnectError(string="No route to host")),
            "cannot connect (An error occurred while connecting: No route to host.)",
        )

    def test_unexpected(self) -> None:
        """
        Anything else is given by class name and message.
        """
        self.assertEqual(self.describe(RuntimeError("boom")), "RuntimeError: boom")


class LocalResourceErrorTests(SynchronousTestCase):
    """
    L{localResourceError} tells bluegreen's own shortages from the server's
    failures.
    """

    def test_connectBindError(self) -> None:
        """
        C{twisted.internet.tcp} reports a socket it could not create as
        L{ConnectBindError} with the errno in C{osError}.
        """
        error = ConnectBindError(errno.EMFILE, "Too many open files")
        self.assertEqual(
            localResourceError(error), "bluegreen is out of file descriptors (EMFILE)"
        )

    def test_connectErrors(self) -> None:
        """
        A connect that fails later is mapped by L{getConnectError}, with the
        errno in C{osError} too; every local errno is recognised.
        """
        expected = {
            errno.EMFILE: "bluegreen is out of file descriptors (EMFILE)",
            errno.ENFILE: (
                "the system bluegreen runs on is out of file descriptors (ENFILE)"
            ),
            errno.ENOMEM: "bluegreen is out of memory (ENOMEM)",
            errno.ENOBUFS: "bluegreen is out of buffer space (memory) (ENOBUFS)",
        }
        for number, text in expected.items():
            error = getConnectError((number, os.strerror(number)))
            self.assertEqual(localResourceError(error), text)

    def test_osError(self) -> None:
        """
        A bare L{OSError} (e.g. from C{socket.socket()}) counts too.
        """
        error = OSError(errno.ENFILE, "Too many open files in system")
        self.assertEqual(
            localResourceError(error),
            "the system bluegreen runs on is out of file descriptors (ENFILE)",
        )

    def test_wrapped(self) -> None:
        """
        Inside the agent's L{ResponseNeverReceived} or L{ResponseFailed}.
        """
        inner = Failure(OSError(errno.ENOBUFS, "No buffer space available"))
        for wrapper in (ResponseNeverReceived, ResponseFailed):
            self.assertEqual(
                localResourceError(wrapper([inner])),
                "bluegreen is out of buffer space (memory) (ENOBUFS)",
            )

    def test_notLocal(self) -> None:
        """
        The server's failures, and errnos that are not shortages, are not.
        """
        for error in (
            ConnectionRefusedError(),
            ConnectError(string="No route to host"),
            getConnectError((errno.EHOSTUNREACH, "No route to host")),
            OSError(errno.ECONNRESET, "reset"),
            ConnectionLost(),
            ResponseNeverReceived([Failure(ConnectionLost())]),
            RuntimeError("boom"),
        ):
            self.assertIsNone(localResourceError(error), error)
