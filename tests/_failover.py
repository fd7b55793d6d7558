# -*- test-case-name: tests.test_failover_unit -*-
"""
What the deterministic failover tests share: the environments, a stand-in
for the monitor's answers, log capture and a controller on a L{Clock}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from bluegreen.controller import Controller, Switch
from bluegreen.environment import Environment

GREEN = Environment.fromURL("green", "http://127.0.0.1:5002")
BLUE = Environment.fromURL("blue", "http://127.0.0.1:5001")
BOTH = {"green": GREEN, "blue": BLUE}

#: What the controller logs when it switches, for the given reason.
SWITCHED = "switched live environment {} -> {} ({})"


class Health:
    """
    The health monitor's answer to C{isUp}, kept in a dictionary: C{None}
    before an environment's first check, then C{True} or C{False}.

    @ivar up: The state of each environment.
    """

    def __init__(self) -> None:
        self.up: dict[str, bool | None] = {"green": None, "blue": None}

    def __call__(self, name: str) -> bool | None:
        """
        @return: What is known of C{name}.
        """
        return self.up[name]


class LogMixin(SynchronousTestCase):
    """
    Captures what bluegreen logs during each test.
    """

    def setUp(self) -> None:
        """
        Start capturing the log.
        """
        self.events: Sequence[LogEvent] = self.enterContext(capturedLogs())

    def logged(self, level: LogLevel) -> list[str]:
        """
        @return: The text of each event bluegreen logged at C{level}, in
            order.
        """
        return [
            formatEvent(event)
            for event in self.events
            if event["log_level"] == level
            and event.get("log_namespace", "").startswith("bluegreen.")
        ]


class ControllerMixin(LogMixin):
    """
    Builds controllers on a L{Clock} whose health is a L{Health}.
    """

    def setUp(self) -> None:
        """
        Make a clock at 1000 s, and health with neither environment checked.
        """
        super().setUp()
        self.clock = Clock()
        self.clock.advance(1000)
        self.health = Health()
        self.controller: Controller

    def make(
        self, active: str = "green", stateFile: str | None = None, **settings: Any
    ) -> Controller:
        """
        Make C{self.controller}, stopped at cleanup.

        @param active: The C{--active} environment.
        @param stateFile: The C{--state} file.
        @param settings: Further controller settings.
        """
        self.controller = Controller.create(
            BOTH,
            active,
            self.clock,
            stateFile=stateFile,
            isUp=self.health,
            **settings,
        )
        self.addCleanup(self.controller.stop)
        return self.controller

    def change(self, name: str, up: bool, reason: str | None = None) -> None:
        """
        Report a change of state as the monitor does: the new state is
        visible through C{isUp} before the observer is told.

        @param name: The environment.
        @param up: Its new state.
        @param reason: The check result (C{"status 200"} or C{"status 500"}
            by default).
        """
        self.health.up[name] = up
        if reason is None:
            reason = "status 200" if up else "status 500"
        self.controller.healthChanged(name, up, reason)

    def bothUp(self) -> None:
        """
        Both environments pass their first checks.
        """
        self.change("green", True)
        self.change("blue", True)

    def assertState(self, active: str, mode: str, switches: int) -> None:
        """
        Assert which environment is live, the mode and the number of
        switches made.
        """
        controller = self.controller
        self.assertEqual(
            (controller.active, controller.mode, len(controller.history)),
            (active, mode, switches),
        )
        self.assertIs(controller.live, BOTH[active])

    def assertSecondFailoverFromBlue(self, when: float) -> None:
        """
        BLUE, live after a first switch, fails (connection refused): assert
        that GREEN is live again, by a second switch at C{when}.
        """
        self.change("blue", False, "connection refused")
        self.assertState("green", "serving", 2)
        self.assertEqual(
            self.controller.history[1],
            Switch(when, "blue", "green", "failover: blue down: connection refused"),
        )

    def assertNoTimers(self) -> None:
        """
        Assert that nothing is scheduled on the clock.
        """
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def tick(self, seconds: float) -> None:
        """
        Advance the clock by C{seconds}, at most a second at a time (one big
        step would run a L{LoopingCall} only once).
        """
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(1.0, end - self.clock.seconds()))
