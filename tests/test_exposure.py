# -*- test-case-name: tests.test_exposure -*-
"""
Tests for L{bluegreen.exposure}: where an endpoint description listens, and
whether other machines can reach it.
"""

from __future__ import annotations

from twisted.internet.ssl import KeyPair
from twisted.trial.unittest import SynchronousTestCase

from bluegreen.exposure import Listening, exposedInterface, isLoopback, listeningOn


class ExposureTests(SynchronousTestCase):
    """
    Loopback detection, and where descriptions listen.
    """

    def test_isLoopback(self) -> None:
        """
        Loopback addresses and C{localhost} are loopback; every interface,
        other addresses and host names are not.
        """
        for host in (
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
            "localhost",
            "LOCALHOST",
        ):
            self.assertTrue(isLoopback(host), host)
        for host in ("", "0.0.0.0", "::", "10.1.2.3", "::ffff:10.0.0.1", "example.com"):
            self.assertFalse(isLoopback(host), host)

    def test_exposedInterface(self) -> None:
        """
        TCP, TCP6 and TLS endpoints are exposed unless on loopback; UNIX
        sockets are not.
        """
        self.assertIsNone(exposedInterface("tcp:1:interface=127.0.0.1"))
        self.assertEqual(exposedInterface("tcp:1"), "all interfaces")
        self.assertEqual(exposedInterface("tcp6:1"), "all interfaces")
        self.assertIsNone(exposedInterface(r"tcp6:1:interface=\:\:1"))
        key = self.mktemp()
        with open(key, "wb") as f:
            f.write(KeyPair.generate().selfSignedCert(1, CN="x").dumpPEM())
        self.assertEqual(exposedInterface(f"ssl:1:privateKey={key}"), "all interfaces")
        self.assertEqual(
            exposedInterface(f"ssl:1:privateKey={key}:interface=10.0.0.1"),
            "interface 10.0.0.1",
        )
        self.assertIsNone(
            exposedInterface(f"ssl:1:privateKey={key}:interface=127.0.0.1")
        )
        self.assertIsNone(exposedInterface("unix:/tmp/x.sock"))
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_listeningOn(self) -> None:
        """
        Where a description would listen: a TCP port and its interface, or a
        UNIX socket's path; nothing listens.
        """
        self.assertEqual(
            listeningOn("tcp:3091:interface=127.0.0.1"),
            Listening(port=3091, interface="127.0.0.1"),
        )
        self.assertEqual(listeningOn("tcp6:80"), Listening(port=80, interface="::"))
        self.assertEqual(listeningOn("tcp:3091"), Listening(port=3091))
        self.assertEqual(
            listeningOn("unix:/run/bg.sock"), Listening(path="/run/bg.sock")
        )
        self.assertEqual(len(self.flushLoggedErrors()), 0)
