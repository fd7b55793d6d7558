# -*- test-case-name: tests.test_controller -*-
"""
Tests for L{bluegreen.controller}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from bluegreen.controller import (
    Controller,
    Switch,
    SwitchRefused,
    UnknownEnvironment,
)
from tests._failover import BLUE, BOTH, GREEN


class CreateTests(SynchronousTestCase):
    """
    L{Controller.create} makes a controller with one environment live.
    """

    def test_active(self) -> None:
        """
        The environment named C{active} is live; the history is empty.
        """
        controller = Controller.create(BOTH, "blue", Clock())
        self.assertIs(controller.live, BLUE)
        self.assertEqual(controller.active, "blue")
        self.assertEqual(controller.history, [])

    def test_green(self) -> None:
        """
        Green can be the one live at start.
        """
        controller = Controller.create(BOTH, "green", Clock())
        self.assertIs(controller.live, GREEN)
        self.assertEqual(controller.active, "green")

    def test_environments(self) -> None:
        """
        The controller keeps every environment by name.
        """
        controller = Controller.create(BOTH, "green", Clock())
        self.assertEqual(dict(controller.environments), BOTH)

    def test_unknown(self) -> None:
        """
        An unknown C{active} name is refused with a message listing the
        known ones.
        """
        error = self.assertRaises(
            UnknownEnvironment, Controller.create, BOTH, "red", Clock()
        )
        self.assertEqual(
            str(error), "unknown environment 'red'; expected green or blue"
        )

    def test_unknownIsValueError(self) -> None:
        """
        L{UnknownEnvironment} is a L{ValueError}.
        """
        self.assertTrue(issubclass(UnknownEnvironment, ValueError))


class SwitchTests(SynchronousTestCase):
    """
    L{Controller.switch} changes the live environment and records it.
    """

    def setUp(self) -> None:
        """
        Make a controller with green live, timed by a L{Clock}.
        """
        self.clock = Clock()
        self.clock.advance(1000)
        self.controller = Controller.create(BOTH, "green", self.clock)

    def test_switch(self) -> None:
        """
        Switching makes the other environment live and returns the record,
        timed by the clock at the moment of the switch.
        """
        self.clock.advance(5)
        record = self.controller.switch("blue", "deploy 42")
        self.assertEqual(record, Switch(1005.0, "green", "blue", "deploy 42"))
        self.assertIs(self.controller.live, BLUE)
        self.assertEqual(self.controller.active, "blue")

    def test_defaultReason(self) -> None:
        """
        Without a reason the switch is recorded as a manual one.
        """
        record = self.controller.switch("blue")
        assert record is not None
        self.assertEqual(record.reason, "manual switch")

    def test_history(self) -> None:
        """
        Each switch is appended to the history, oldest first.
        """
        first = self.controller.switch("blue", "one")
        self.clock.advance(2.5)
        second = self.controller.switch("green", "two")
        self.assertEqual(self.controller.history, [first, second])
        self.assertEqual(
            self.controller.history,
            [
                Switch(1000.0, "green", "blue", "one"),
                Switch(1002.5, "blue", "green", "two"),
            ],
        )

    def test_alreadyLive(self) -> None:
        """
        Switching to the live environment is refused with L{SwitchRefused},
        changes nothing and records nothing.
        """
        error = self.assertRaises(
            SwitchRefused, self.controller.switch, "green", "no-op"
        )
        self.assertEqual(str(error), "green is already live")
        self.assertIs(self.controller.live, GREEN)
        self.assertEqual(self.controller.history, [])

    def test_unknown(self) -> None:
        """
        Switching to an unknown name raises L{UnknownEnvironment} and leaves
        the live environment and the history alone.
        """
        error = self.assertRaises(UnknownEnvironment, self.controller.switch, "red")
        self.assertEqual(
            str(error), "unknown environment 'red'; expected green or blue"
        )
        self.assertIs(self.controller.live, GREEN)
        self.assertEqual(self.controller.history, [])

    def test_logged(self) -> None:
        """
        A switch is logged as a warning naming both environments and the
        reason.
        """
        with capturedLogs() as events:
            self.controller.switch("blue", "deploy 42")
        self.assertEqual(
            [(formatEvent(e), e["log_level"]) for e in events],
            [("switched live environment green -> blue (deploy 42)", LogLevel.warn)],
        )

    def test_noOpNotLogged(self) -> None:
        """
        A refused switch to the live environment logs nothing.
        """
        with capturedLogs() as events:
            self.assertRaises(SwitchRefused, self.controller.switch, "green")
        self.assertEqual(list(events), [])


class StandbyTests(SynchronousTestCase):
    """
    L{Controller.standby} is the environment that is not live.
    """

    def test_standby(self) -> None:
        """
        With green live blue is on standby, and the other way round.
        """
        controller = Controller.create(BOTH, "green", Clock())
        self.assertIs(controller.standby(), BLUE)
        controller.switch("blue")
        self.assertIs(controller.standby(), GREEN)

    def test_noStandby(self) -> None:
        """
        With only one environment there is no standby.
        """
        controller = Controller.create({"green": GREEN}, "green", Clock())
        error = self.assertRaises(UnknownEnvironment, controller.standby)
        self.assertEqual(str(error), "there is no environment other than green")
