# -*- test-case-name: tests.test_util -*-
"""
Tests for L{tests._util}, the helpers every integration test relies on.
"""

from __future__ import annotations

import fcntl
import os
import socket

from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests._util import (
    RESERVATIONS,
    RESERVED_PORTS,
    _ephemeralRange,
    _given,
    _patience,
    freePort,
    raisesAsync,
    waitFor,
)


class PatienceTests(SynchronousTestCase):
    """
    L{_patience} reads the one real-time setting of the suite.
    """

    def test_default(self) -> None:
        """
        Without C{BLUEGREEN_TEST_PATIENCE} the patience is 30 seconds.
        """
        self.assertEqual(_patience({}), 30.0)

    def test_set(self) -> None:
        """
        C{BLUEGREEN_TEST_PATIENCE} sets it, in seconds.
        """
        self.assertEqual(_patience({"BLUEGREEN_TEST_PATIENCE": "90"}), 90.0)

    def test_bad(self) -> None:
        """
        A value that is not a positive number is refused by name.
        """
        for text in ("0", "-3"):
            error = self.assertRaises(
                ValueError, _patience, {"BLUEGREEN_TEST_PATIENCE": text}
            )
            self.assertIn("BLUEGREEN_TEST_PATIENCE must be > 0", str(error))
        self.assertRaises(ValueError, _patience, {"BLUEGREEN_TEST_PATIENCE": "x"})


class FreePortTests(SynchronousTestCase):
    """
    L{freePort} hands out bindable ports outside the ephemeral range.
    """

    def test_bindable(self) -> None:
        """
        The port can be bound at once, and is neither reserved nor ephemeral.
        """
        low, _ = _ephemeralRange()
        port = freePort()
        self.assertNotIn(port, RESERVED_PORTS)
        self.assertLess(port, low)
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))

    def test_neverTwice(self) -> None:
        """
        One test run never gets the same port twice.
        """
        ports = [freePort() for _ in range(200)]
        self.assertEqual(len(set(ports)), len(ports))

    def test_reservedElsewhere(self) -> None:
        """
        A port another process has reserved is not handed out, even though
        nothing listens on it yet: its lock file is locked.
        """
        port = freePort()
        path = os.path.join(RESERVATIONS, f"{port}.lock")
        with open(path, "a") as other:
            self.assertRaises(
                OSError, fcntl.flock, other, fcntl.LOCK_EX | fcntl.LOCK_NB
            )
        # Forget it in this process's own bookkeeping, as another worker
        # (which holds the lock) never knew it: the lock alone must refuse.
        _given.discard(port)
        error = self.assertRaises(RuntimeError, freePort, [port])
        self.assertEqual(str(error), "no free TCP port among the candidates")

    def test_noneFree(self) -> None:
        """
        When every candidate is taken, the error says so.
        """
        port = freePort()
        error = self.assertRaises(RuntimeError, freePort, [port])
        self.assertEqual(str(error), "no free TCP port among the candidates")

    def test_busySkipped(self) -> None:
        """
        A port something listens on is not handed out.
        """
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            busy = s.getsockname()[1]
            self.assertNotIn(busy, [freePort() for _ in range(50)])


class WaitForTests(TestCase):
    """
    L{waitFor} polls a condition on the reactor.
    """

    async def test_true(self) -> None:
        """
        A condition that becomes true ends the wait.
        """
        calls = []

        def condition() -> bool:
            calls.append(1)
            return len(calls) >= 3

        await waitFor(condition, "three calls")
        self.assertEqual(len(calls), 3)

    async def test_never(self) -> None:
        """
        A condition that stays false fails the wait, naming what was awaited.
        """
        error = await raisesAsync(
            AssertionError, waitFor(lambda: False, "the moon", within=0.05)
        )
        self.assertEqual(str(error), "the moon: not within 0.05 s")
