# -*- test-case-name: tests.test_timetext -*-
"""
Tests for L{bluegreen.timetext}: times as people read them.
"""

from __future__ import annotations

import os
import time

from twisted.trial.unittest import SynchronousTestCase

from bluegreen.timetext import ago, isoTime, localTime

#: 2024-05-01 12:00:00 UTC.
NOON = 1714564800.0


class AgoTests(SynchronousTestCase):
    """
    L{ago}.
    """

    def test_units(self) -> None:
        """
        Seconds up to 90 s, minutes up to 90 min, hours up to 36 h, then
        days; a time in the future (clocks that disagree) is now.
        """
        for seconds, expected in [
            (-3, "0 s ago"),
            (0, "0 s ago"),
            (12.4, "12 s ago"),
            (89, "89 s ago"),
            (90, "2 min ago"),
            (89 * 60, "89 min ago"),
            (90 * 60, "2 h ago"),
            (35 * 3600, "35 h ago"),
            (36 * 3600, "2 days ago"),
        ]:
            self.assertEqual(ago(seconds), expected, seconds)


class TimeTests(SynchronousTestCase):
    """
    L{localTime} and L{isoTime}.
    """

    def setUp(self) -> None:
        # Python reads TZ only when told to: set it for the test, then put
        # back the machine's.
        old = os.environ.get("TZ")
        os.environ["TZ"] = "UTC"
        time.tzset()

        def restore() -> None:
            if old is None:
                del os.environ["TZ"]
            else:
                os.environ["TZ"] = old
            time.tzset()

        self.addCleanup(restore)

    def test_localTime(self) -> None:
        """
        The local time, to the second.
        """
        self.assertEqual(localTime(NOON + 0.9), "2024-05-01 12:00:00")

    def test_isoTime(self) -> None:
        """
        ISO 8601 UTC, to the millisecond.
        """
        self.assertEqual(isoTime(NOON + 0.25), "2024-05-01T12:00:00.250Z")
        self.assertEqual(isoTime(NOON), "2024-05-01T12:00:00.000Z")
