# -*- test-case-name: tests.test_controller -*-
"""
The switch: which environment is live.

The live environment is one reference to an immutable
L{bluegreen.environment.Environment}.  The proxy reads it exactly once per
request, so switching is a single assignment on the reactor thread: a request
goes wholly to one environment, requests in flight finish where they started,
and the next request, even on the same keep-alive connection, follows the
switch.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import define, field, frozen
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .environment import COLOURS, Environment


class UnknownEnvironment(ValueError):
    """
    A name that is neither C{green} nor C{blue}.
    """


@frozen
class Switch:
    """
    One change of the live environment.

    @ivar when: POSIX time of the switch.
    @ivar source: Name of the environment that was live before.
    @ivar to: Name of the environment that is live after.
    @ivar reason: Why, in words an operator can read.
    """

    when: float
    source: str
    to: str
    reason: str


@define
class Controller:
    """
    Holds the live environment and switches it.

    @ivar environments: Every environment, by name.
    @ivar live: The live environment (read it once per request).
    @ivar history: The switches made so far, oldest first.
    """

    environments: Mapping[str, Environment]
    live: Environment
    clock: IReactorTime
    history: list[Switch] = field(factory=list)
    _log = Logger()

    @classmethod
    def create(
        cls,
        environments: Mapping[str, Environment],
        active: str,
        clock: IReactorTime,
    ) -> Controller:
        """
        Make a controller with C{active} live.

        @param environments: The environments by name.
        @param active: The name of the environment that is live at start.
        @param clock: Supplies the time of each switch.
        @return: The controller.
        @raise UnknownEnvironment: If C{active} is not in C{environments}.
        """
        if active not in environments:
            raise UnknownEnvironment(_unknown(active, environments))
        return cls(environments=environments, live=environments[active], clock=clock)

    @property
    def active(self) -> str:
        """
        The name of the live environment.
        """
        return self.live.name

    def standby(self) -> Environment:
        """
        @return: The environment that is not live.
        """
        for name in COLOURS:
            if name in self.environments and name != self.live.name:
                return self.environments[name]
        raise UnknownEnvironment("there is no standby environment")

    def switch(self, to: str, reason: str = "manual switch") -> Switch | None:
        """
        Make C{to} the live environment.

        @param to: C{"green"} or C{"blue"}.
        @param reason: Recorded in the history and the log.
        @return: The recorded L{Switch}, or L{None} if C{to} was already live.
        @raise UnknownEnvironment: If C{to} names no environment.
        """
        target = self.environments.get(to)
        if target is None:
            raise UnknownEnvironment(_unknown(to, self.environments))
        previous = self.live
        if target is previous:
            return None
        # The one assignment that moves traffic.
        self.live = target
        record = Switch(self.clock.seconds(), previous.name, target.name, reason)
        self.history.append(record)
        self._log.warn(
            "switched live environment {source} -> {to} ({reason})",
            source=previous.name,
            to=target.name,
            reason=reason,
        )
        return record


def _unknown(name: str, environments: Mapping[str, Environment]) -> str:
    known = " or ".join(environments)
    return f"unknown environment {name!r}; expected {known}"
