# -*- test-case-name: tests.test_sync_service_exact -*-
"""
The exact sync in the running service: the capture installed at start, the
mirror tailing the log (updates and deletes too), the admin API's conflict
policy, the status and the metrics.
"""

from __future__ import annotations

import sqlite3
from typing import Any, cast

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests._util import PATIENCE, waitFor

from ._admin import call
from .test_syncservice import captureSyncEvents, execute, facts, startSynced


def tables(path: str) -> list[str]:
    """
    @return: The change capture's tables in C{path}.
    """
    db = sqlite3.connect(path, timeout=PATIENCE)
    try:
        return [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND "
                "name LIKE '^_bluegreen^_%' ESCAPE '^' ORDER BY name"
            )
        ]
    finally:
        db.close()


class ServiceTests(TestCase):
    """
    The exact sync through the service.
    """

    timeout = 2 * PATIENCE

    async def test_captureAtStart(self) -> None:
        """
        The service installs the change capture in both databases when it
        starts, and says so in the log.
        """
        events = captureSyncEvents(self)
        synced = await startSynced(self)
        expected = [
            "_bluegreen_applied",
            "_bluegreen_conflicts",
            "_bluegreen_log",
            "_bluegreen_state",
        ]
        await waitFor(
            lambda: tables(synced.green) == tables(synced.blue) == expected,
            "the capture in both databases",
        )
        await waitFor(
            lambda: len([e for e in events if e.get("event") == "sync-capture"]) == 2,
            "two log lines",
        )

    async def test_mirrorTailsLog(self) -> None:
        """
        The mirror carries inserts, updates and deletes, as changes (no
        snapshot after the first pass); the status and the metrics count
        them.
        """
        synced = await startSynced(self, "--sync", "mirror", "--mirror-interval", "0.3")
        await waitFor(lambda: len(facts(synced.blue)) == 2, "the first pass")
        execute(synced.green, "UPDATE facts SET text = 'ONE' WHERE id = 1")
        execute(synced.green, "DELETE FROM facts WHERE id = 2")
        execute(synced.green, "INSERT INTO facts VALUES (3, 'three')")
        await waitFor(
            lambda: facts(synced.blue) == [(1, "ONE"), (3, "three")], "the changes"
        )
        # The pass is recorded once its children have ended.
        await waitFor(
            lambda: synced.sync.changesApplied["green->blue"] >= 3,
            "the pass recorded",
        )
        status = (await call(synced.base + "/api/status")).json["sync"]
        self.assertEqual(status["last"]["green->blue"]["method"], "changes")
        self.assertIsInstance(status["mirror"]["last_changes"], int)
        text = (await call(synced.base + "/metrics")).data.decode("utf-8")
        applied: dict[str, Any] = {}
        for family in text_string_to_metric_families(text):
            if family.name == "bluegreen_sync_changes_applied":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        applied[sample.labels["direction"]] = sample.value
        self.assertGreaterEqual(applied["green->blue"], 3)
        lagged = [
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "bluegreen_sync_mirror_lag_changes"
            for sample in family.samples
        ]
        # Present once a pass ran; its value moves with every pass.
        self.assertEqual(len(lagged), 1)
        self.assertGreaterEqual(lagged[0], 0)

    async def test_onConflict(self) -> None:
        """
        C{POST /api/sync} takes C{on_conflict}; a bad value is a 400 that
        says which are good.
        """
        synced = await startSynced(self)
        bad = await call(
            synced.base + "/api/sync",
            "POST",
            payload={"from": "green", "to": "blue", "on_conflict": "newest-ish"},
        )
        self.assertEqual(bad.code, 400, bad.data)
        self.assertIn(
            "unknown conflict policy 'newest-ish'; expected keep-target or take-source",
            bad.json["error"],
        )
        first = await call(
            synced.base + "/api/sync", "POST", payload={"from": "green", "to": "blue"}
        )
        self.assertTrue(first.json["report"]["complete"], first.data)
        execute(synced.green, "UPDATE facts SET text = 'green' WHERE id = 1")
        execute(synced.blue, "UPDATE facts SET text = 'blue' WHERE id = 1")
        answer = await call(
            synced.base + "/api/sync",
            "POST",
            payload={"from": "green", "to": "blue", "on_conflict": "take-source"},
        )
        report = answer.json["report"]
        self.assertEqual(report["method"], "changes")
        self.assertEqual([c["kind"] for c in report["conflicts"]], ["changed_on_both"])
        self.assertEqual(facts(synced.blue), [(1, "green"), (2, "two")])

    async def test_oldSideAfterSwitch(self) -> None:
        """
        A change made on the old side after a switch (a request finishing
        there) reaches the new live side with the pass after the switch,
        as a change: an update, not only new rows.
        """
        synced = await startSynced(self)
        await call(
            synced.base + "/api/sync", "POST", payload={"from": "green", "to": "blue"}
        )
        controller = synced.running.service.controller
        controller.switch("blue", "failover: green down: test")
        sync = synced.sync

        def hookDone() -> bool:
            last = sync.status()["last"].get("green->blue") or {}
            return last.get("who") == "after switch" and not sync.status()["running"]

        await waitFor(hookDone, "the sync after the switch")
        execute(synced.green, "UPDATE facts SET text = 'late' WHERE id = 2")
        answer = await call(
            synced.base + "/api/sync", "POST", payload={"from": "green", "to": "blue"}
        )
        self.assertEqual(answer.json["report"]["method"], "changes")
        self.assertEqual(facts(synced.blue), [(1, "one"), (2, "late")])


class DashboardTests(SynchronousTestCase):
    """
    The dashboard's sync section shows the changes the mirror applied.
    """

    def test_mirrorChanges(self) -> None:
        """
        With the exact sync, the mirror's note counts the changes its last
        pass applied.
        """
        from .test_dashboard_sync import NOON, describeSync, syncStatus

        mirror = {
            "interval": 1.0,
            "running": True,
            "direction": "green->blue",
            "lag": 0.5,
            "last_rows": 2,
            "last_changes": 3,
            "last_pass": None,
            "failing": False,
            "failures": 0,
            "error": None,
        }
        view = describeSync(syncStatus(mode="mirror", mirror=mirror), NOON)
        self.assertEqual(
            view["notes"],
            [
                {
                    "kind": "",
                    "text": "Mirror GREEN \u2192 BLUE (every 1 s): lag 0.5 s; the "
                    "last pass applied 3 changes.",
                }
            ],
        )


class LagChangesTests(SynchronousTestCase):
    """
    L{SyncService.lagChanges} outside the mirror.
    """

    def test_noMirror(self) -> None:
        """
        Without the mirror there is no lag in changes.
        """
        from twisted.internet.task import Clock

        from bluegreen.controller import Controller
        from bluegreen.environment import Environment
        from bluegreen.sync.process import ProcessRunner, Tools
        from bluegreen.sync.service import SyncService
        from bluegreen.sync.syncer import Syncer

        clock = Clock()
        environments = {
            name: Environment.fromURL(name, f"http://127.0.0.1:{port}")
            for name, port in (("green", 5002), ("blue", 5001))
        }
        controller = Controller.create(environments, "green", clock)
        sync = SyncService(
            clock,
            Syncer(clock, ProcessRunner(cast(Any, clock), Tools.find())),
            controller,
            {"green": "g.db", "blue": "b.db"},
            mode="migrate",
        )
        self.assertIsNone(sync.lagChanges())
