# -*- test-case-name: tests.test_failover_state -*-
"""
Deterministic tests of the controller's C{--state} file and of planned
switches (a database sync first), on a L{Clock}.
"""

from __future__ import annotations

import os
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel

import bluegreen.statefile as statefile
from bluegreen.controller import Controller, SwitchRefused
from tests._failover import (
    BOTH,
    ControllerMixin,
)


class StateFileTests(ControllerMixin):
    """
    With C{--state}, the live colour and the history survive a restart.
    """

    def setUp(self) -> None:
        """
        Make a directory for the state file.
        """
        super().setUp()
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "state.json")

    def test_firstStart(self) -> None:
        """
        Without a file yet, the start is from C{--active}, quietly, and the
        file is not created until a switch.
        """
        self.make(stateFile=self.path)
        self.assertState("green", "serving", 0)
        self.assertEqual(self.controller.why, "start")
        self.assertEqual(self.logged(LogLevel.error), [])
        self.assertFalse(os.path.exists(self.path))

    def test_eachSwitchSaved(self) -> None:
        """
        Every switch, automatic or manual, is saved.
        """
        self.make(stateFile=self.path, failback="auto", failbackDelay=30.0)
        self.bothUp()
        self.change("green", False)
        saved = statefile.load(self.path, ("green", "blue"))
        assert saved is not None
        self.assertEqual(saved.live, "blue")
        self.assertEqual(
            saved.history,
            (
                statefile.SwitchRecord(
                    1000.0, "green", "blue", "failover: green down: status 500"
                ),
            ),
        )
        self.change("green", True)
        self.clock.advance(30)
        saved = statefile.load(self.path, ("green", "blue"))
        assert saved is not None
        self.assertEqual(saved.live, "green")
        self.assertEqual(len(saved.history), 2)
        self.controller.switch("blue", "by hand")
        saved = statefile.load(self.path, ("green", "blue"))
        assert saved is not None
        self.assertEqual((saved.live, saved.history[-1].reason), ("blue", "by hand"))

    def test_restart(self) -> None:
        """
        A controller made from the file of an earlier one has its live
        colour and history, and says where they came from.
        """
        self.make(stateFile=self.path)
        self.bothUp()
        self.change("green", False)
        before = list(self.controller.history)
        self.controller.stop()
        restarted = Controller.create(BOTH, "green", Clock(), stateFile=self.path)
        self.assertEqual(restarted.active, "blue")
        self.assertEqual(restarted.history, before)
        self.assertEqual(restarted.why, f"restored from {self.path}")
        self.assertEqual(restarted.preferred, "green")
        restarted.switch("green")
        saved = statefile.load(self.path, ("green", "blue"))
        assert saved is not None
        self.assertEqual(len(saved.history), 2)

    def test_restartAutoFailback(self) -> None:
        """
        Restored on the other colour with C{--failback auto}, the preferred
        environment's first good check starts the failback delay.
        """
        statefile.save(self.path, "blue", [])
        self.make(stateFile=self.path, failback="auto", failbackDelay=30.0)
        self.assertState("blue", "serving", 0)
        self.change("blue", True)
        self.change("green", True)
        self.assertState("blue", "failback-pending", 0)
        self.clock.advance(30)
        self.assertState("green", "serving", 1)

    def assertCorrupt(self, content: bytes, error: str) -> None:
        """
        A state file holding C{content} is reported as an error ending with
        C{error}, and the controller starts from C{--active}.
        """
        with open(self.path, "wb") as f:
            f.write(content)
        self.make("green", stateFile=self.path)
        self.assertState("green", "serving", 0)
        self.assertEqual(self.controller.why, "start")
        self.assertEqual(
            self.logged(LogLevel.error),
            [f"state file ignored, starting with green live: {error}"],
        )

    def test_corrupt(self) -> None:
        """
        Invalid JSON is logged, not raised.
        """
        self.assertCorrupt(
            b'{"version": 1, "live": "bl',
            f"{self.path} is not valid JSON (Unterminated string starting at: "
            "line 1 column 24 (char 23))",
        )

    def test_binary(self) -> None:
        """
        Binary garbage is logged, not raised.
        """
        self.assertCorrupt(
            b"\x00\xff\xfe",
            f"{self.path} is not valid JSON (not UTF-8: invalid start byte at byte 1)",
        )

    def test_unknownColour(self) -> None:
        """
        A file naming an environment that does not exist is logged.
        """
        self.assertCorrupt(
            b'{"version": 1, "live": "red", "history": []}',
            f"{self.path}: 'live' is 'red', expected one of ('green', 'blue')",
        )

    def test_unreadable(self) -> None:
        """
        A file that cannot be read (here a directory) is logged.
        """
        os.mkdir(self.path)
        self.make("blue", stateFile=self.path)
        self.assertState("blue", "serving", 0)
        self.assertEqual(
            self.logged(LogLevel.error),
            [
                "state file ignored, starting with blue live: "
                f"cannot read {self.path}: Is a directory"
            ],
        )

    def test_corruptReplaced(self) -> None:
        """
        After a corrupt file was ignored, the next switch replaces it.
        """
        with open(self.path, "w") as f:
            f.write("garbage")
        self.make(stateFile=self.path)
        self.controller.switch("blue")
        saved = statefile.load(self.path, ("green", "blue"))
        assert saved is not None
        self.assertEqual(saved.live, "blue")

    def test_saveFails(self) -> None:
        """
        A switch whose state cannot be saved still happens; the failure is
        logged as an error.
        """
        path = os.path.join(self.directory, "missing", "state.json")
        self.make(stateFile=path)
        self.bothUp()
        self.change("green", False)
        self.assertState("blue", "serving", 1)
        [error] = self.logged(LogLevel.error)
        self.assertTrue(
            error.startswith(f"cannot save state to {path}: [Errno 2] "), error
        )


class PlannedSwitchTests(ControllerMixin):
    """
    With database sync, planned switches (an operator's, an automatic
    failback) wait for the target's database to be brought up to date.
    """

    def makeSynced(self, **settings: Any) -> list[tuple[str, str, Deferred[Any]]]:
        """
        A controller whose C{beforeSwitch} records its calls and lets the
        test fire them.
        """
        calls: list[tuple[str, str, Deferred[Any]]] = []

        def beforeSwitch(source: str, target: str) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            calls.append((source, target, d))
            return d

        self.make(**settings)
        self.controller.beforeSwitch = beforeSwitch
        return calls

    def test_operatorWaitsForSync(self) -> None:
        """
        C{plannedSwitch} syncs live -> target, then switches; meanwhile
        C{syncing} says what is happening.
        """
        calls = self.makeSynced()
        self.bothUp()
        d = Deferred.fromCoroutine(self.controller.plannedSwitch("blue", "op"))
        [(source, target, sync)] = calls
        self.assertEqual((source, target), ("green", "blue"))
        self.assertState("green", "serving", 0)
        self.assertEqual(
            self.controller.syncing,
            "bringing blue's database up to date from green",
        )
        report = SimpleReport(complete=True)
        sync.callback(report)
        record, got = self.successResultOf(d)
        self.assertIs(got, report)
        self.assertEqual(record.to, "blue")
        self.assertIsNone(self.controller.syncing)
        self.assertState("blue", "serving", 1)

    def test_incompleteRefused(self) -> None:
        """
        An incomplete sync refuses the switch (the reason says why), unless
        forced.
        """
        calls = self.makeSynced()
        self.bothUp()
        d = Deferred.fromCoroutine(self.controller.plannedSwitch("blue"))
        calls[0][2].callback(SimpleReport(complete=False, conflicts=(1, 2)))
        error = self.failureResultOf(d, SwitchRefused)
        self.assertEqual(
            error.getErrorMessage(),
            "blue's database could not be brought up to date from green: "
            "2 conflicts; use force to switch anyway",
        )
        self.assertState("green", "serving", 0)
        forced = Deferred.fromCoroutine(
            self.controller.plannedSwitch("blue", force=True)
        )
        calls[1][2].callback(SimpleReport(complete=False, error="disk full"))
        self.successResultOf(forced)
        self.assertState("blue", "serving", 1)

    def test_refusedBeforeSync(self) -> None:
        """
        A switch that would be refused anyway (already live, target down)
        is refused before any sync starts.
        """
        calls = self.makeSynced()
        self.change("green", True)
        self.change("blue", False)
        d = Deferred.fromCoroutine(self.controller.plannedSwitch("blue"))
        self.failureResultOf(d, SwitchRefused)
        self.assertEqual(calls, [])

    def test_failbackSyncsFirst(self) -> None:
        """
        An automatic failback syncs the preferred environment's database
        first, then switches.
        """
        calls = self.makeSynced(failback="auto", failbackDelay=30.0)
        self.bothUp()
        self.change("green", False)
        self.assertState("blue", "serving", 1)
        self.change("green", True)
        self.clock.advance(30)
        [(source, target, sync)] = calls
        self.assertEqual((source, target), ("blue", "green"))
        self.assertState("blue", "failback-pending", 1)
        sync.callback(SimpleReport(complete=True))
        self.assertState("green", "serving", 2)
        self.assertNoTimers()

    def test_failbackPostponed(self) -> None:
        """
        An incomplete sync postpones the failback by another delay (logged),
        and it is tried again.
        """
        calls = self.makeSynced(failback="auto", failbackDelay=30.0)
        self.bothUp()
        self.change("green", False)
        self.change("green", True)
        self.clock.advance(30)
        calls[0][2].callback(SimpleReport(complete=False, conflicts=(1,)))
        self.assertState("blue", "failback-pending", 1)
        self.assertIn(
            "failback to green postponed 30 s: its database could not be "
            "brought up to date from blue: 1 conflict",
            self.logged(LogLevel.warn),
        )
        self.clock.advance(30)
        calls[1][2].callback(SimpleReport(complete=True))
        self.assertState("green", "serving", 2)

    def test_failbackCancelledDuringSync(self) -> None:
        """
        If the preferred environment fails again while its database is
        being synced, the failback does not happen.
        """
        calls = self.makeSynced(failback="auto", failbackDelay=30.0)
        self.bothUp()
        self.change("green", False)
        self.change("green", True)
        self.clock.advance(30)
        self.change("green", False)
        calls[0][2].callback(SimpleReport(complete=True))
        self.assertState("blue", "serving", 1)
        self.assertNoTimers()


@frozen
class SimpleReport:
    """
    The part of a sync report the controller reads.
    """

    complete: bool
    conflicts: tuple[object, ...] = ()
    error: str | None = None
