# -*- test-case-name: tests.test_timetext -*-
"""
Times as people read them: how long ago, local wall-clock time, and the ISO
8601 UTC stamps of the admin API.

A neutral module (it imports nothing of bluegreen), so the client CLI, the
manhole and the admin site can share it without loading one another.
"""

from __future__ import annotations

import time


def ago(seconds: float) -> str:
    """
    Say how long ago something happened, to the unit that reads best.

    @param seconds: How many seconds ago (a negative value, from clocks
        that disagree a little, counts as now).
    @return: E.g. C{"5 s ago"}, C{"3 min ago"}, C{"2 h ago"},
        C{"4 days ago"}.
    """
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def localTime(when: float) -> str:
    """
    @param when: POSIX seconds.
    @return: C{when} in this machine's local time, e.g.
        C{"2024-05-01 14:00:00"}.
    """
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def isoTime(when: float) -> str:
    """
    @param when: POSIX seconds.
    @return: C{when} as ISO 8601 UTC to the millisecond, e.g.
        C{"2024-05-01T12:00:00.250Z"}.
    """
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
    return f"{stamp}.{int(when % 1 * 1000):03d}Z"
