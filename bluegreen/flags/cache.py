# -*- test-case-name: tests.test_flags -*-
"""
L{FlagCache}: what one environment's flags are known to be, never waiting
on Redis, and who is told of their changes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bluegreen.flags.model import (
    NAME_RE,
    OUTSIDE,
    ChangeObserver,
    FlagChange,
    FlagView,
    isOn,
)
from bluegreen.observers import tellObservers


class FlagCache:
    """
    The flags of one environment as last read from or written to its Redis.

    Reads from Redis race with changes: each change bumps a sequence
    number, and a read begun before a change (its L{mark}) does not undo it.

    @ivar env: The environment.
    @ivar updated: When the cache was last known to match Redis (POSIX
        time), or L{None} if never.
    """

    _log = Logger()

    def __init__(self, env: str, names: Iterable[str], clock: IReactorTime) -> None:
        """
        @param env: The environment.
        @param names: The flags configured with C{--flag} (valid names).
        @param clock: Tells the time of changes.
        """
        self.env = env
        self.updated: float | None = None
        self._clock = clock
        self._names: set[str] = set(names)
        self._values: dict[str, str] = {}
        self._view = MappingProxyType(self._values)
        self._observers: list[ChangeObserver] = []
        self._seq = 0
        self._touched: dict[str, int] = {}
        self._seen: deque[str] = deque(maxlen=256)

    @property
    def names(self) -> list[str]:
        """
        The flags: the configured names, those learnt (the registry, changes)
        and any seen with a value, sorted.
        """
        return sorted(self._names | self._values.keys())

    @property
    def values(self) -> Mapping[str, str]:
        """
        The values of the flags that are set: a read-only view, not a copy.
        """
        return self._view

    def knows(self, name: str) -> bool:
        """
        @return: Whether C{name} is one of the flags.
        """
        return name in self._names or name in self._values

    def view(self, name: str, stale: bool) -> FlagView:
        """
        @param name: A flag.
        @param stale: Whether the values may be out of date.
        @return: The flag's view; a flag never seen is off.
        """
        value = self._values.get(name)
        return FlagView(value, isOn(value), stale)

    def subscribe(self, observer: ChangeObserver) -> None:
        """
        Call C{observer(change)} with every change.
        """
        self._observers.append(observer)

    def learn(self, names: Iterable[str]) -> list[str]:
        """
        Add flag names (invalid ones are ignored).

        @return: The names that were not known.
        """
        new = [n for n in names if n not in self._names and NAME_RE.fullmatch(n)]
        self._names.update(new)
        return new

    @property
    def mark(self) -> int:
        """
        The sequence number to give L{found} for a read that begins now.
        """
        return self._seq

    def apply(self, change: FlagChange, changeId: str) -> bool:
        """
        Apply a change made through bluegreen (ours or another's), once:
        the same change arrives both as our reply and as a message.

        @param change: The change.
        @param changeId: Its id (C{""}: none, always applied).
        @return: C{False} if it was applied already.
        """
        if changeId and changeId in self._seen:
            return False
        if changeId:
            self._seen.append(changeId)
        self._seq += 1
        self._touched[change.flag] = self._seq
        self._set(change.flag, change.new)
        self.updated = self._clock.seconds()
        self._emit(change)
        return True

    def found(self, values: Mapping[str, str | None], mark: int, report: bool) -> None:
        """
        Apply values read from Redis, except those of flags changed since
        the read began.

        @param values: The values read (L{None}: not set).
        @param mark: L{mark} when the read began.
        @param report: Tell the observers of the values that differ (as
            changes made L{OUTSIDE} bluegreen).
        """
        now = self._clock.seconds()
        for name, value in values.items():
            if self._touched.get(name, 0) > mark:
                continue
            old = self._values.get(name)
            self._set(name, value)
            if old != value and report:
                self._emit(FlagChange(now, self.env, name, old, value, OUTSIDE))
        self.updated = now

    def _set(self, name: str, value: str | None) -> None:
        """
        Cache a value (L{None}: not set).
        """
        if value is None:
            self._values.pop(name, None)
        else:
            self._values[name] = value

    def _emit(self, change: FlagChange) -> None:
        """
        Tell every observer of C{change}.
        """
        # A copy: an observer may unsubscribe while being told.
        tellObservers(list(self._observers), self._log, "flag", change)
