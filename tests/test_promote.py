# -*- test-case-name: tests.test_promote -*-
"""
Unit tests of the deployment workflow: revisions in the controller and the
state file, the promotion checks' gate in L{Controller.plannedSwitch}, the
automatic promotion on a L{Clock}, and the text and metrics they show.
"""

from __future__ import annotations

import json
import os
from typing import Any

from treq.client import HTTPClient
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent

from bluegreen import statefile
from bluegreen.controller import Controller, SwitchRefused, UnknownEnvironment
from bluegreen.promote.api import RevisionMetrics
from bluegreen.promote.cli import formatVerification, promotionLines
from bluegreen.promote.promoter import Promoter
from bluegreen.promote.settings import PromotionSettings
from bluegreen.promote.verify import (
    MissingShell,
    Outcome,
    Verification,
    Verifier,
    findShell,
)
from bluegreen.promote.wiring import urlOf
from tests._failover import BOTH, ControllerMixin
from tests.test_dashboard_sync import NODE, NOON, pageScript, runNode


class RevisionTests(ControllerMixin):
    """
    L{Controller.deployed} and the revisions in the history and state file.
    """

    def test_deployed(self) -> None:
        """
        A reported revision is kept with its message and time, and the switch
        that makes its environment live records it.
        """
        controller = self.make()
        self.bothUp()
        controller.deployed("blue", "a1b2c3", "fix votes")
        self.assertEqual(
            controller.revisions["blue"],
            statefile.Revision("a1b2c3", "fix votes", 1000),
        )
        record = controller.switch("blue")
        self.assertEqual(record.revision, "a1b2c3")
        # GREEN never reported one.
        self.assertEqual(controller.switch("green").revision, "")

    def test_unknown(self) -> None:
        """
        A revision for an environment that does not exist is refused.
        """
        controller = self.make()
        self.assertRaises(UnknownEnvironment, controller.deployed, "red", "x")
        self.assertEqual(controller.revisions, {})

    def test_observers(self) -> None:
        """
        C{onDeployed} observers are told the environment's name.
        """
        controller = self.make()
        told: list[str] = []
        controller.onDeployed.append(told.append)
        controller.deployed("green", "r1")
        self.assertEqual(told, ["green"])

    def test_stateFile(self) -> None:
        """
        Revisions, and those of the history, survive a restart.
        """
        path = self.mktemp()
        controller = self.make(stateFile=path)
        self.bothUp()
        controller.deployed("blue", "a1b2c3", "fix votes")
        controller.switch("blue")
        with open(path) as f:
            saved = json.load(f)
        self.assertEqual(
            saved["revisions"],
            {"blue": {"revision": "a1b2c3", "message": "fix votes", "when": 1000}},
        )
        again = self.make(stateFile=path)
        self.assertEqual(again.revisions, controller.revisions)
        self.assertEqual(again.history[-1].revision, "a1b2c3")

    def test_stateFileMalformed(self) -> None:
        """
        A malformed revision entry makes the state file unreadable (and
        says which).
        """
        path = self.mktemp()
        with open(path, "w") as f:
            json.dump(
                {"version": 1, "live": "green", "revisions": {"blue": {"x": 1}}}, f
            )
        error = self.assertRaises(
            statefile.StateError, statefile.load, path, ("green", "blue")
        )
        self.assertEqual(
            str(error), f"{path}: a revision entry is malformed: 'blue': {{'x': 1}}"
        )
        with open(path, "w") as f:
            json.dump({"version": 1, "live": "green", "revisions": []}, f)
        error = self.assertRaises(
            statefile.StateError, statefile.load, path, ("green", "blue")
        )
        self.assertEqual(str(error), f"{path}: 'revisions' is not an object")


class VerifyGateTests(ControllerMixin):
    """
    L{Controller.verify} guards a planned switch.
    """

    def test_refused(self) -> None:
        """
        A failing check refuses the switch: the live environment stays.
        """
        controller = self.make()
        self.bothUp()
        asked: list[str] = []

        def verify(name: str) -> Deferred[None]:
            asked.append(name)
            return fail(SwitchRefused(f"{name} failed its promotion checks: x"))

        controller.verify = verify
        d = Deferred.fromCoroutine(controller.plannedSwitch("blue"))
        error = self.failureResultOf(d, SwitchRefused).value
        self.assertEqual(str(error), "blue failed its promotion checks: x")
        self.assertEqual((asked, controller.active), (["blue"], "green"))

    def test_forceSkips(self) -> None:
        """
        A forced switch runs no checks.
        """
        controller = self.make()
        self.bothUp()
        controller.verify = lambda name: fail(SwitchRefused("no"))
        d = Deferred.fromCoroutine(controller.plannedSwitch("blue", force=True))
        self.successResultOf(d)
        self.assertEqual(controller.active, "blue")

    def test_passed(self) -> None:
        """
        Passing checks let the switch through.
        """
        controller = self.make()
        self.bothUp()
        controller.verify = lambda name: succeed(None)
        self.successResultOf(Deferred.fromCoroutine(controller.plannedSwitch("blue")))
        self.assertEqual(controller.active, "blue")


class PromoterTests(ControllerMixin):
    """
    L{Promoter} on a L{Clock}.
    """

    def promoter(self, **settings: Any) -> Promoter:
        """
        A promoter of C{self.controller} with C{settings}.
        """
        verifier = Verifier(
            self.clock,  # type: ignore[arg-type]
            HTTPClient(Agent(self.clock)),
            PromotionSettings(**settings),
            self.controller,
        )
        promoter = Promoter(self.controller, verifier, self.clock)
        self.addCleanup(promoter.stop)
        return promoter

    def test_promote(self) -> None:
        """
        C{promote} switches to the standby, naming who and the revision.
        """
        self.make()
        self.bothUp()
        self.controller.deployed("blue", "a1b2c3", "fix votes")
        promoter = self.promoter()
        record, report = self.successResultOf(
            Deferred.fromCoroutine(promoter.promote("test"))
        )
        self.assertEqual(
            (record.to, record.reason, record.revision, report),
            ("blue", "promoted via test: a1b2c3 (fix votes)", "a1b2c3", None),
        )

    def test_autoPromote(self) -> None:
        """
        With C{autoPromote}, a revision reported on the standby goes live
        that many seconds later; a newer report restarts the wait.
        """
        self.make()
        self.bothUp()
        promoter = self.promoter(autoPromote=30.0, command="true")
        self.controller.verify = lambda name: succeed(None)
        self.controller.deployed("blue", "r1")
        self.assertEqual(promoter.pending, ("blue", "r1", 1030.0))
        self.clock.advance(20)
        self.controller.deployed("blue", "r2")
        self.clock.advance(20)
        self.assertEqual(self.controller.active, "green")
        self.clock.advance(10)
        self.assertEqual(
            (self.controller.active, self.controller.history[-1].reason),
            ("blue", "promoted via auto-promotion after 30 s: r2, 1 check passed"),
        )
        self.assertIsNone(promoter.pending)
        self.assertNoTimers()

    def test_autoPromoteIgnoresLive(self) -> None:
        """
        A revision reported on the live environment is not promoted.
        """
        self.make()
        self.bothUp()
        promoter = self.promoter(autoPromote=30.0, command="true")
        self.controller.deployed("green", "r1")
        self.assertIsNone(promoter.pending)
        self.assertNoTimers()

    def test_autoPromoteRefused(self) -> None:
        """
        A failing check leaves the live environment (and logs why).
        """
        self.make()
        self.bothUp()
        self.promoter(autoPromote=5.0, command="false")
        self.controller.verify = lambda name: fail(SwitchRefused("checks failed"))
        self.controller.deployed("blue", "r1")
        self.clock.advance(5)
        self.assertEqual(self.controller.active, "green")
        self.assertIn(
            "auto-promotion of r1 refused: checks failed",
            self.logged(LogLevel.warn),
        )

    def test_stopCancels(self) -> None:
        """
        Stopping cancels a pending automatic promotion.
        """
        self.make()
        self.bothUp()
        promoter = self.promoter(autoPromote=5.0, command="true")
        self.controller.deployed("blue", "r1")
        self.successResultOf(promoter.stop())
        self.assertNoTimers()
        self.controller.deployed("blue", "r2")
        self.assertNoTimers()


class ShowTests(SynchronousTestCase):
    """
    What the workflow shows: text, metrics, URLs.
    """

    def test_failures(self) -> None:
        """
        A verification names each failed check and what it got.
        """
        result = Verification(
            "blue",
            "http://127.0.0.1:3092",
            1.0,
            (
                Outcome("GET /", True, "status 200", "200"),
                Outcome("GET /a", False, "status 500", "200"),
                Outcome("command 'x'", False, "exited with code 3", "exit 0"),
            ),
        )
        self.assertFalse(result.passed)
        self.assertEqual(
            result.failures(),
            "GET /a expected 200, got status 500; command 'x' expected exit 0, "
            "got exited with code 3",
        )
        self.assertEqual(
            formatVerification(result.asJSON()),
            [
                "  ok    GET /: status 200",
                "  FAIL  GET /a: expected 200, got status 500",
                "  FAIL  command 'x': expected exit 0, got exited with code 3",
            ],
        )

    def test_promotionLines(self) -> None:
        """
        C{bluegreen status} shows the preview and each revision.
        """
        status = {
            "promotion": {"preview": "http://127.0.0.1:3092", "previewShows": "blue"},
            "environments": {
                "green": {"revision": None},
                "blue": {"revision": {"revision": "a1", "message": "fix"}},
            },
        }
        self.assertEqual(
            promotionLines(status),
            ["", "preview: http://127.0.0.1:3092 (shows blue)", "blue runs a1 (fix)"],
        )
        self.assertEqual(promotionLines({}), [])

    def test_urlOf(self) -> None:
        """
        A listening address becomes a URL reachable from this machine.
        """
        self.assertEqual(
            [
                urlOf(IPv4Address("TCP", "0.0.0.0", 3092)),
                urlOf(IPv4Address("TCP", "127.0.0.1", 3092)),
                urlOf(IPv6Address("TCP", "::", 3092)),
                urlOf(UNIXAddress(b"/run/x.sock")),
            ],
            [
                "http://127.0.0.1:3092",
                "http://127.0.0.1:3092",
                "http://[::1]:3092",
                None,
            ],
        )

    def test_revisionMetrics(self) -> None:
        """
        C{bluegreen_revision_info} has a sample per reported revision.
        """
        clock = Clock()

        controller = Controller.create(BOTH, "green", clock)
        controller.deployed("blue", "a1b2c3")
        [family] = RevisionMetrics(controller).collect()
        self.assertEqual(
            [(s.name, s.labels, s.value) for s in family.samples],
            [("bluegreen_revision_info", {"env": "blue", "revision": "a1b2c3"}, 1)],
        )

    def test_findShell(self) -> None:
        """
        C{--verify-command} needs C{sh} and C{setsid}: a missing one is named.
        """
        tools = findShell(lambda name: f"/bin/{name}")
        self.assertEqual((tools.sh, tools.setsid), ("/bin/sh", "/bin/setsid"))
        error = self.assertRaises(
            MissingShell, findShell, lambda name: None if name == "setsid" else "/x"
        )
        self.assertEqual(str(error), "setsid not found on PATH")


class DashboardTests(SynchronousTestCase):
    """
    The dashboard draws the workflow (in node against the stand-in DOM of
    C{tests/_fakedom.js}, as L{tests.test_dashboard_sync} does).
    """

    if NODE is None:
        skip = "node is not installed"

    def test_drawn(self) -> None:
        """
        The preview line, the last checks, the promote button and the
        revision of a switch; the C{promotion} section is not also drawn as
        a generic one.
        """
        now = NOON + 30
        status = {
            "version": "1",
            "now": now,
            "live": "green",
            "why": "start",
            "since": NOON,
            "mode": "serving",
            "history": [
                {
                    "when": NOON,
                    "at": "",
                    "from": "blue",
                    "to": "green",
                    "reason": "promoted via admin API from 127.0.0.1: a1b2c3",
                    "revision": "a1b2c3",
                }
            ],
            "environments": {
                "green": {"url": "http://g", "live": True, "health": {}},
                "blue": {"url": "http://b", "live": False, "health": {}},
            },
            "promotion": {
                "preview": "http://127.0.0.1:3092",
                "previewShows": "blue",
                "checks": ["GET / = 200"],
                "autoPromote": None,
                "pending": None,
                "last": Verification(
                    "blue",
                    "http://127.0.0.1:3092",
                    NOON + 20,
                    (Outcome("GET /", False, "status 500", "200"),),
                ).asJSON(),
            },
        }
        fakeDOM = os.path.join(os.path.dirname(__file__), "_fakedom.js")
        ids = ["preview", "verification", "promote", "history", "extras"]
        drawn = json.loads(
            runNode([fakeDOM, pageScript(self), *ids], json.dumps(status))
        )
        self.assertEqual(
            (drawn["preview"]["text"], drawn["preview"]["hidden"]),
            ("Preview: http://127.0.0.1:3092 shows BLUE", False),
        )
        self.assertEqual(
            drawn["verification"]["text"],
            "Promotion checks of BLUE 10 s ago: FAILED: GET / expected 200, got "
            "status 500",
        )
        self.assertEqual(drawn["promote"]["text"], "Promote BLUE\u2026")
        [row] = drawn["history"]["body"]
        self.assertEqual(
            row["children"][-1]["text"],
            "promoted via admin API from 127.0.0.1: a1b2c3 [a1b2c3]",
        )
        self.assertEqual(drawn["extras"]["children"], [])
