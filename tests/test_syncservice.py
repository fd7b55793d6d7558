# -*- test-case-name: tests.test_syncservice -*-
"""
Tests for L{bluegreen.sync.service}, L{bluegreen.sync.api} and C{bluegreen
sync green blue}: a real service (L{bluegreen.service.tap.makeService}) with two
SQLite databases, synced by the real L{bluegreen.sync.syncer.Syncer} (real
C{sqlite3} and C{rsync} children), its admin API over real sockets and the
real C{bluegreen} script.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from typing import Any, cast

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bluegreen.controller import Controller
from bluegreen.environment import Environment
from bluegreen.service.tap import Options
from bluegreen.sync.process import ProcessRunner, Tools
from bluegreen.sync.service import SyncService, nextPassDelay
from bluegreen.sync.syncer import Syncer
from tests._util import PATIENCE, waitFor

from ._admin import Running, call, globalReactor, startService
from .test_cli_admin import bluegreen

#: The admin token of the services that have one.
TOKEN = "sync-t0ken"

SCHEMA = "CREATE TABLE facts(id INTEGER PRIMARY KEY, text TEXT NOT NULL);"


def shortDir(testCase: SynchronousTestCase) -> str:
    """
    @return: A new short temporary directory, removed after the test.
    """
    path = tempfile.mkdtemp(prefix="bgs")
    testCase.addCleanup(shutil.rmtree, path, True)
    return path


def makeDB(path: str, rows: list[tuple[int, str]]) -> None:
    """
    Create a WAL database at C{path} holding C{rows} in C{facts}.
    """
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    db.executemany("INSERT INTO facts VALUES (?, ?)", rows)
    db.commit()
    db.close()


def execute(path: str, sql: str, *args: Any) -> None:
    """
    Run one statement on C{path} and commit.
    """
    db = sqlite3.connect(path, timeout=PATIENCE)
    try:
        db.execute(sql, args)
        db.commit()
    finally:
        db.close()


def facts(path: str) -> list[tuple[int, str]]:
    """
    @return: The rows of C{facts}, by id.
    """
    db = sqlite3.connect(path, timeout=PATIENCE)
    try:
        return db.execute("SELECT id, text FROM facts ORDER BY id").fetchall()
    finally:
        db.close()


def parse(*args: str) -> Options:
    """
    @return: Parsed options with C{args} and the required ones.
    """
    options = Options()
    options.parseOptions(
        ["--green", "http://127.0.0.1:5002", "--blue", "http://127.0.0.1:5001", *args]
    )
    return options


class OptionsTests(SynchronousTestCase):
    """
    C{--green-db}, C{--blue-db}, C{--sync} and friends.
    """

    def setUp(self) -> None:
        self.dir = shortDir(self)
        self.green = os.path.join(self.dir, "g.db")
        self.blue = os.path.join(self.dir, "b.db")

    def error(self, *args: str) -> str:
        """
        @return: The usage error's message.
        """
        e = self.assertRaises(usage.UsageError, parse, *args)
        return str(e)

    def test_defaults(self) -> None:
        """
        Without databases there is no sync; with both, C{migrate}.
        """
        options = parse()
        self.assertEqual(options.config.syncMode, "none")
        self.assertEqual(options.config.databases, {})
        options = parse("--green-db", self.green, "--blue-db", self.blue)
        self.assertEqual(options.config.syncMode, "migrate")
        self.assertEqual(
            options.config.databases, {"green": self.green, "blue": self.blue}
        )
        self.assertEqual(options.config.mirrorInterval, 1.0)

    def test_explicit(self) -> None:
        """
        C{--sync mirror --mirror-interval 0.5}; C{--sync none} keeps the
        databases (syncs on demand only).
        """
        options = parse(
            "--green-db",
            self.green,
            "--blue-db",
            self.blue,
            "--sync",
            "mirror",
            "--mirror-interval",
            "0.5",
        )
        self.assertEqual(options.config.syncMode, "mirror")
        self.assertEqual(options.config.mirrorInterval, 0.5)
        options = parse(
            "--green-db", self.green, "--blue-db", self.blue, "--sync", "none"
        )
        self.assertEqual(options.config.syncMode, "none")

    def test_strategyNeedsBoth(self) -> None:
        """
        A strategy without both databases is a usage error naming them.
        """
        message = self.error("--green-db", self.green, "--sync", "migrate")
        self.assertEqual(message, "--sync migrate needs both --green-db and --blue-db")
        message = self.error("--sync", "mirror")
        self.assertIn("--green-db and --blue-db", message)

    def test_badValues(self) -> None:
        """
        An unknown strategy, a database in a missing directory, a bad
        interval, a stop command without a start command.
        """
        both = ("--green-db", self.green, "--blue-db", self.blue)
        self.assertIn(
            "--sync: 'sometimes' must be", self.error(*both, "--sync", "sometimes")
        )
        missing = os.path.join(self.dir, "nope", "b.db")
        self.assertIn(
            "--blue-db: ", self.error("--green-db", self.green, "--blue-db", missing)
        )
        self.assertIn("--blue-db: ", self.error("--blue-db", self.dir))
        self.assertIn(
            "--mirror-interval: '0' is not a positive number",
            self.error(*both, "--mirror-interval", "0"),
        )
        self.assertIn(
            "--blue-stop and --blue-start go together",
            self.error(*both, "--blue-stop", "true"),
        )

    def test_remoteLocation(self) -> None:
        """
        A C{host:/path} location is accepted as the sync module reads it.
        """
        options = parse("--green-db", "db.example:/srv/g.db", "--blue-db", self.blue)
        self.assertEqual(options.config.databases["green"], "db.example:/srv/g.db")


class Synced:
    """
    A running service with two databases.
    """

    def __init__(self, running: Running, green: str, blue: str) -> None:
        self.running = running
        self.green = green
        self.blue = blue

    @property
    def sync(self) -> SyncService:
        """
        The sync service.
        """
        sync = self.running.service.sync
        assert sync is not None
        return sync

    @property
    def base(self) -> str:
        """
        The admin API's base URL.
        """
        return self.running.base


async def startSynced(
    testCase: TestCase,
    *extra: str,
    green: list[tuple[int, str]] | None = None,
    blue: list[tuple[int, str]] | None = None,
    token: str | None = None,
) -> Synced:
    """
    Make the two databases and start a service syncing them.
    """
    directory = shortDir(testCase)
    paths = os.path.join(directory, "g.db"), os.path.join(directory, "b.db")
    makeDB(paths[0], green if green is not None else [(1, "one"), (2, "two")])
    makeDB(paths[1], blue if blue is not None else [(1, "one")])
    running = await startService(
        testCase, "--green-db", paths[0], "--blue-db", paths[1], *extra, token=token
    )
    return Synced(running, *paths)


def captureSyncEvents(testCase: TestCase) -> list[LogEvent]:
    """
    @return: The list the C{bluegreen.sync} log events go to during the test.
    """
    events: list[LogEvent] = []

    def observer(event: LogEvent) -> None:
        if event.get("log_namespace") == "bluegreen.sync":
            events.append(event)

    globalLogPublisher.addObserver(cast(ILogObserver, observer))
    testCase.addCleanup(globalLogPublisher.removeObserver, cast(ILogObserver, observer))
    return events


class APITests(TestCase):
    """
    C{GET} and C{POST /api/sync}, the status section and the metrics.
    """

    timeout = 2 * PATIENCE

    async def test_copyRows(self) -> None:
        """
        C{POST /api/sync} migrates the rows BLUE lacks and answers with the
        report; C{GET /api/sync} and the status show the last sync.
        """
        synced = await startSynced(self)
        answer = await call(
            synced.base + "/api/sync",
            "POST",
            payload={"from": "green", "to": "blue", "who": "test"},
        )
        self.assertEqual(answer.code, 200, answer.data)
        report = answer.json["report"]
        self.assertTrue(report["complete"])
        self.assertEqual(report["strategy"], "migrate")
        self.assertEqual(report["copied"], {"facts": 1})
        self.assertEqual(facts(synced.blue), [(1, "one"), (2, "two")])
        last = answer.json["sync"]["last"]["green->blue"]
        self.assertEqual(last["rows_copied"], 1)
        self.assertEqual(last["conflicts"], 0)
        self.assertTrue(last["complete"])
        self.assertIn("(test)", last["who"])
        status = (await call(synced.base + "/api/status")).json
        self.assertEqual(status["sync"]["last"]["green->blue"], last)
        self.assertEqual(status["sync"]["mode"], "migrate")
        got = (await call(synced.base + "/api/sync")).json
        self.assertEqual(got["last"], {"green->blue": last})
        self.assertEqual(got["running"], [])

    async def test_dryRun(self) -> None:
        """
        A dry run reports and changes nothing (and is not recorded).
        """
        synced = await startSynced(self)
        answer = await call(
            synced.base + "/api/sync",
            "POST",
            payload={"from": "green", "to": "blue", "dry_run": True},
        )
        self.assertEqual(answer.json["report"]["copied"], {"facts": 1})
        self.assertTrue(answer.json["report"]["dry_run"])
        self.assertEqual(facts(synced.blue), [(1, "one")])
        self.assertEqual(answer.json["sync"]["last"], {})

    async def test_conflicts(self) -> None:
        """
        A key on both sides with different content is reported: 200 with
        C{complete} false; the other rows are copied.
        """
        synced = await startSynced(
            self,
            green=[(1, "one"), (2, "two"), (3, "three")],
            blue=[(1, "one"), (2, "deux")],
        )
        answer = await call(
            synced.base + "/api/sync", "POST", payload={"from": "green", "to": "blue"}
        )
        self.assertEqual(answer.code, 200)
        report = answer.json["report"]
        self.assertFalse(report["complete"])
        self.assertEqual([c["kind"] for c in report["conflicts"]], ["key_conflict"])
        self.assertEqual(facts(synced.blue), [(1, "one"), (2, "deux"), (3, "three")])
        last = answer.json["sync"]["last"]["green->blue"]
        self.assertEqual((last["conflicts"], last["complete"]), (1, False))

    async def test_busy(self) -> None:
        """
        While an on-demand sync runs (or waits), another is refused with
        409; the first then finishes.
        """
        synced = await startSynced(self)
        lock = synced.sync.syncer.lock
        await lock.acquire()
        first = Deferred.fromCoroutine(
            call(
                synced.base + "/api/sync",
                "POST",
                payload={"from": "green", "to": "blue"},
            )
        )
        await waitFor(lambda: synced.sync.busy, "the first sync waiting")
        self.assertTrue(synced.sync.busy)
        running = (await call(synced.base + "/api/sync")).json["running"]
        self.assertEqual([(r["from"], r["to"]) for r in running], [("green", "blue")])
        second = await call(
            synced.base + "/api/sync", "POST", payload={"from": "blue", "to": "green"}
        )
        self.assertEqual(
            (second.code, second.error), (409, "a sync is already running")
        )
        lock.release()
        answer = await first
        self.assertEqual(answer.code, 200)
        self.assertTrue(answer.json["report"]["complete"])

    async def test_badRequests(self) -> None:
        """
        Unknown environments or strategies, a sync from itself, unknown
        fields: 400 with the reason.
        """
        synced = await startSynced(self)
        url = synced.base + "/api/sync"
        for payload, message in [
            ({"from": "red", "to": "blue"}, "unknown environment 'red'"),
            ({"from": "blue", "to": "blue"}, "cannot sync blue from itself"),
            ({"from": "green", "to": "blue", "strategy": "mirror"}, "mirror"),
            ({"from": "green", "to": "blue", "strategy": "rsync"}, "'rsync'"),
            ({"from": "green"}, "missing field 'to'"),
            ({"from": "green", "to": "blue", "force": True}, "unknown field"),
        ]:
            answer = await call(url, "POST", payload=payload)
            self.assertEqual(answer.code, 400, payload)
            self.assertIn(message, answer.error)
        self.assertEqual(facts(synced.blue), [(1, "one")])

    async def test_token(self) -> None:
        """
        With a token, C{POST /api/sync} needs it; C{GET} does not.
        """
        synced = await startSynced(self, token=TOKEN)
        url = synced.base + "/api/sync"
        payload = {"from": "green", "to": "blue"}
        refused = await call(url, "POST", payload=payload)
        self.assertEqual(refused.code, 401)
        self.assertEqual(facts(synced.blue), [(1, "one")])
        self.assertEqual((await call(url)).code, 200)
        answer = await call(
            url,
            "POST",
            payload=payload,
            headers={b"authorization": [b"Bearer " + TOKEN.encode()]},
        )
        self.assertEqual(answer.code, 200)
        self.assertEqual(facts(synced.blue), [(1, "one"), (2, "two")])

    async def test_noDatabases(self) -> None:
        """
        Without databases, C{GET /api/sync} says so and a sync is refused
        with the reason (409).
        """
        running = await startService(self)
        got = await call(running.base + "/api/sync")
        self.assertEqual(got.json["mode"], "none")
        answer = await call(
            running.base + "/api/sync", "POST", payload={"from": "green", "to": "blue"}
        )
        self.assertEqual(answer.code, 409)
        self.assertIn("--green-db and --blue-db", answer.error)

    async def test_metrics(self) -> None:
        """
        The sync metrics parse, with the syncs counted.
        """
        synced = await startSynced(
            self, green=[(1, "one"), (2, "two"), (3, "x")], blue=[(1, "one"), (3, "y")]
        )
        await call(
            synced.base + "/api/sync", "POST", payload={"from": "green", "to": "blue"}
        )
        text = (await call(synced.base + "/metrics")).data.decode("utf-8")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        way = ("direction", "green->blue")
        runs = "bluegreen_sync_runs_total"
        self.assertEqual(
            samples[runs, (way, ("result", "incomplete"), ("strategy", "migrate"))], 1
        )
        self.assertEqual(
            samples[runs, (way, ("result", "complete"), ("strategy", "migrate"))], 0
        )
        self.assertEqual(samples["bluegreen_sync_rows_copied_total", (way,)], 1)
        self.assertEqual(samples["bluegreen_sync_conflicts_total", (way,)], 1)
        self.assertGreater(samples["bluegreen_sync_duration_seconds", (way,)], 0)
        self.assertEqual(
            samples[
                "bluegreen_sync_rows_copied_total", (("direction", "blue->green"),)
            ],
            0,
        )
        self.assertNotIn(("bluegreen_sync_mirror_lag_seconds", ()), samples)


class CommandLineTests(TestCase):
    """
    C{bluegreen sync green blue}, through the admin API.
    """

    timeout = 2 * PATIENCE

    async def test_sync(self) -> None:
        """
        Exit 0 and the summary when complete; C{--json} prints the answer.
        """
        synced = await startSynced(self)
        out, err, code = await bluegreen(
            "sync", "green", "blue", "--dry-run", "--admin", synced.base
        )
        self.assertEqual(code, 0, err)
        self.assertIn("facts: would copy 1 row", out)
        self.assertEqual(facts(synced.blue), [(1, "one")])
        out, err, code = await bluegreen(
            "sync", "green", "blue", "--admin", synced.base, "--json"
        )
        self.assertEqual(code, 0, err)
        answer = json.loads(out)
        self.assertEqual(answer["report"]["copied"], {"facts": 1})
        self.assertEqual(facts(synced.blue), [(1, "one"), (2, "two")])

    async def test_conflict(self) -> None:
        """
        Exit 1 with the report when there were conflicts.
        """
        synced = await startSynced(self, blue=[(2, "deux")])
        out, err, code = await bluegreen(
            "sync", "green", "blue", "--strategy", "migrate", "--admin", synced.base
        )
        self.assertEqual(code, 1, err)
        self.assertIn("CONFLICT key_conflict: facts key (2)", out)
        self.assertIn("INCOMPLETE", out)

    async def test_refused(self) -> None:
        """
        A refusal (here: no token) exits 1 with the reason; bad usage exits 2.
        """
        synced = await startSynced(self, token=TOKEN)
        out, err, code = await bluegreen(
            "sync", "green", "blue", "--admin", synced.base
        )
        self.assertEqual(code, 1)
        self.assertIn("not authorized", err)
        out, err, code = await bluegreen(
            "sync", "green", "blue", "--from", synced.green, "--admin", synced.base
        )
        self.assertEqual(code, 2)
        self.assertIn("--from is for syncing paths", err)
        out, err, code = await bluegreen("sync", "green", "green")
        self.assertEqual((out, code), ("", 2))
        self.assertIn("cannot sync green from itself", err)


class MirrorTests(TestCase):
    """
    C{--sync mirror}: live -> standby every C{--mirror-interval}.
    """

    timeout = 2 * PATIENCE
    interval = 0.3

    async def test_mirror(self) -> None:
        """
        Rows written to the live database show up in the standby; the lag
        is reported.  (How soon: L{MirrorTimingTests}, on a clock.)
        """
        synced = await startSynced(
            self, "--sync", "mirror", "--mirror-interval", str(self.interval)
        )
        await waitFor(lambda: len(facts(synced.blue)) == 2, "the first pass")
        execute(synced.green, "INSERT INTO facts VALUES (3, 'three')")
        await waitFor(lambda: len(facts(synced.blue)) == 3, "the new row mirrored")
        status = (await call(synced.base + "/api/sync")).json
        mirror = status["mirror"]
        self.assertEqual(mirror["direction"], "green->blue")
        self.assertFalse(mirror["failing"])
        self.assertIsNotNone(mirror["lag"])
        self.assertLess(mirror["lag"], PATIENCE)
        self.assertIn(mirror["last_rows"], (0, 1))
        text = (await call(synced.base + "/metrics")).data.decode("utf-8")
        [lag] = [
            s
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "bluegreen_sync_mirror_lag_seconds"
        ]
        self.assertLess(lag.value, PATIENCE)

    async def test_failure(self) -> None:
        """
        A pass that meets a conflict (a row the standby holds differently)
        is reported in the status and logged once; the conflict is kept in
        the standby's conflicts table (the standby keeps its row) and the
        next passes, which apply only new changes, succeed again.
        """
        events = captureSyncEvents(self)
        synced = await startSynced(
            self,
            "--sync",
            "mirror",
            "--mirror-interval",
            str(self.interval),
            blue=[(1, "one"), (2, "deux")],
        )
        sync = synced.sync

        def named(name: str) -> list[LogEvent]:
            return [e for e in events if e.get("event") == name]

        await waitFor(lambda: named("sync-mirror-failed"), "a failed pass")
        [failed] = named("sync-mirror-failed")
        self.assertIn("key_conflict: facts key (2)", failed["why"])
        await waitFor(lambda: named("sync-mirror-recovered"), "recovery")
        mirror = (await call(synced.base + "/api/status")).json["sync"]["mirror"]
        self.assertFalse(mirror["failing"])
        self.assertTrue(mirror["running"])
        self.assertIsNotNone(sync.lag())
        self.assertEqual(facts(synced.blue), [(1, "one"), (2, "deux")])
        db = sqlite3.connect(synced.blue, timeout=PATIENCE)
        try:
            kept = db.execute(
                "SELECT kind, source, target FROM _bluegreen_conflicts"
            ).fetchall()
        finally:
            db.close()
        self.assertEqual(
            [(k, json.loads(s), json.loads(t)) for k, s, t in kept],
            [
                (
                    "key_conflict",
                    {"id": "2", "text": "'two'"},
                    {"id": "2", "text": "'deux'"},
                )
            ],
        )
        # A new row on the live side travels as a change.
        execute(synced.green, "INSERT INTO facts VALUES (3, 'three')")
        await waitFor(lambda: (3, "three") in facts(synced.blue), "the new row")
        self.assertEqual(len(named("sync-mirror-failed")), 1)

    async def test_followsLive(self) -> None:
        """
        After a switch the mirror runs from the new live environment.
        """
        synced = await startSynced(
            self, "--sync", "mirror", "--mirror-interval", str(self.interval)
        )
        await waitFor(lambda: len(facts(synced.blue)) == 2, "the first pass")
        synced.running.service.controller.switch("blue", "test")
        execute(synced.blue, "INSERT INTO facts VALUES (7, 'on blue')")
        await waitFor(lambda: (7, "on blue") in facts(synced.green), "blue's row")
        self.assertEqual(synced.sync.status()["mirror"]["direction"], "blue->green")

    async def test_stop(self) -> None:
        """
        Stopping the service stops the loop and waits for a running sync.
        """
        synced = await startSynced(
            self, "--sync", "mirror", "--mirror-interval", str(self.interval)
        )
        sync = synced.sync
        await waitFor(lambda: len(facts(synced.blue)) == 2, "the first pass")
        ended: list[str] = []
        d = sync.start("blue", "green", who="test")
        d.addCallback(lambda report: ended.append("sync"))
        stopped = sync.stopService()
        stopped.addCallback(lambda _: ended.append("stop"))
        await stopped
        self.assertEqual(ended, ["sync", "stop"])
        # No pass after the stop: MirrorTimingTests.test_stop, on a clock.
        self.assertFalse(sync.status()["mirror"]["running"])


class SwitchSyncTests(TestCase):
    """
    Switching and syncing are tied: a planned switch brings the target's
    database up to date first, and every switch brings over afterwards what
    the old live database took meanwhile.
    """

    timeout = 2 * PATIENCE

    async def test_plannedSwitchSyncsFirst(self) -> None:
        """
        C{POST /api/switch} to BLUE first migrates GREEN's rows to BLUE
        (the answer carries the report), and only then switches.
        """
        synced = await startSynced(self)
        answer = await call(synced.base + "/api/switch", "POST", payload={"to": "blue"})
        self.assertEqual(answer.code, 200, answer.data)
        self.assertEqual(answer.json["switched"]["to"], "blue")
        self.assertTrue(answer.json["sync"]["complete"])
        self.assertEqual(answer.json["sync"]["copied"], {"facts": 1})
        # Already there when the switch answered: nothing was left behind.
        self.assertEqual(facts(synced.blue), [(1, "one"), (2, "two")])
        status = (await call(synced.base + "/api/status")).json
        self.assertIsNone(status["syncing"])
        self.assertEqual(status["live"], "blue")

    async def test_conflictRefusesSwitch(self) -> None:
        """
        A planned switch whose sync finds a conflict is refused (409, the
        reason given) and traffic stays; with force it switches anyway.
        """
        synced = await startSynced(self, blue=[(1, "one"), (2, "deux")])
        answer = await call(synced.base + "/api/switch", "POST", payload={"to": "blue"})
        self.assertEqual(answer.code, 409, answer.data)
        self.assertEqual(
            answer.json["error"],
            "blue's database could not be brought up to date from green: "
            "1 conflict; use force to switch anyway",
        )
        status = (await call(synced.base + "/api/status")).json
        self.assertEqual(status["live"], "green")
        forced = await call(
            synced.base + "/api/switch",
            "POST",
            payload={"to": "blue", "force": True},
        )
        self.assertEqual(forced.code, 200, forced.data)
        # The conflict was kept in blue's conflicts table by the first sync:
        # the forced switch's sync has no new one.
        self.assertTrue(forced.json["sync"]["complete"])
        self.assertEqual(forced.json["switched"]["to"], "blue")

    async def test_afterSwitchBringsLateRows(self) -> None:
        """
        Rows the old live database takes around a switch reach the new live
        one by the pass after the switch (failover or not).
        """
        synced = await startSynced(self)
        controller = synced.running.service.controller
        # Switch without the planned sync (as a failover does), after a
        # write on GREEN the standby never saw.
        execute(synced.green, "INSERT INTO facts VALUES (3, 'three')")
        controller.switch("blue", "failover: green down: test")
        expected = [(1, "one"), (2, "two"), (3, "three")]
        # The rows are there once sqlite3 commits, the record once it has
        # exited: wait for both.
        await waitFor(
            lambda: (
                facts(synced.blue) == expected
                and "green->blue" in synced.sync.status()["last"]
            ),
            f"{expected} on blue, the sync recorded",
        )
        last = synced.sync.status()["last"]["green->blue"]
        self.assertTrue(last["complete"])
        self.assertIn("after switch", last["who"])


class NextPassDelayTests(SynchronousTestCase):
    """
    L{nextPassDelay} spaces mirror passes so a row reaches the standby
    within the interval.
    """

    def test_spacing(self) -> None:
        """
        Passes start every C{interval - pass} seconds: the wait after a pass
        is C{interval - 2 * pass}, and never negative (slow passes run back
        to back).  A row written just after a snapshot then waits one
        spacing plus one pass: the interval.
        """
        self.assertAlmostEqual(nextPassDelay(5.0, 1.25), 2.5)
        self.assertEqual(nextPassDelay(5.0, 3.0), 0.0)
        self.assertEqual(nextPassDelay(5.0, 0.0), 5.0)
        passSeconds = 1.25
        spacing = nextPassDelay(5.0, passSeconds) + passSeconds
        self.assertAlmostEqual(spacing + passSeconds, 5.0)


class MirrorTimingTests(TestCase):
    """
    The mirror loop's timing on a L{Clock}: a real L{SyncService} and
    L{Syncer} (real C{sqlite3} and C{rsync} children), whose passes start,
    and take, the time the test says.
    """

    timeout = 2 * PATIENCE
    interval = 1.0

    def setUp(self) -> None:
        """
        GREEN live with two rows, BLUE with one; a mirroring service on a
        clock, started.
        """
        directory = shortDir(self)
        self.green = os.path.join(directory, "g.db")
        self.blue = os.path.join(directory, "b.db")
        makeDB(self.green, [(1, "one"), (2, "two")])
        makeDB(self.blue, [(1, "one")])
        self.clock = Clock()
        environments = {
            name: Environment.fromURL(name, f"http://127.0.0.1:{port}")
            for name, port in (("green", 5002), ("blue", 5001))
        }
        controller = Controller.create(environments, "green", self.clock)
        # Children spawn with the global reactor; the service's timers and
        # the report's timings are on the clock.
        runner = ProcessRunner(cast(Any, globalReactor()), Tools.find())
        self.sync = SyncService(
            self.clock,
            Syncer(self.clock, runner),
            controller,
            {"green": self.green, "blue": self.blue},
            mode="mirror",
            mirrorInterval=self.interval,
        )
        self.sync.startService()
        self.addCleanup(self.sync.stopService)

    def passes(self) -> int:
        """
        @return: Mirror passes finished from GREEN to BLUE.
        """
        return sum(
            n
            for (way, strategy, _), n in self.sync.counts.items()
            if way == "green->blue" and strategy == "mirror"
        )

    async def runPass(self, seconds: float) -> None:
        """
        Start the pass that is due now and let it take C{seconds} by the
        clock.
        """
        done = self.passes()
        [due] = self.clock.getDelayedCalls()
        self.clock.advance(due.getTime() - self.clock.seconds())
        self.assertTrue(self.sync.status()["running"], "the pass did not start")
        self.clock.advance(seconds)
        await waitFor(lambda: self.passes() > done, "the pass")

    async def test_spacing(self) -> None:
        """
        The first pass runs at once; after a pass that took C{p} seconds
        the next one starts C{interval - 2p} later, so a row written just
        after a pass took its snapshot reaches the standby within the
        interval; the lag is the time since the last complete pass started.
        """
        passTime = 0.25
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [0.0])
        await self.runPass(passTime)
        self.assertEqual(facts(self.blue), [(1, "one"), (2, "two")])
        self.assertEqual(self.sync.lag(), passTime)
        written = self.clock.seconds() - passTime
        execute(self.green, "INSERT INTO facts VALUES (3, 'three')")
        self.assertEqual(
            [c.getTime() for c in self.clock.getDelayedCalls()],
            [passTime + nextPassDelay(self.interval, passTime)],
        )
        await self.runPass(passTime)
        self.assertEqual(facts(self.blue)[-1], (3, "three"))
        self.assertLessEqual(self.clock.seconds() - written, self.interval)
        self.assertEqual(self.sync.lag(), passTime)
        self.clock.advance(2.0)
        self.assertEqual(self.sync.lag(), passTime + 2.0)

    async def test_slowPasses(self) -> None:
        """
        Passes that take more than half the interval run back to back.
        """
        await self.runPass(0.75)
        self.assertEqual(
            [c.getTime() for c in self.clock.getDelayedCalls()], [self.clock.seconds()]
        )

    async def test_stop(self) -> None:
        """
        Once stopped, no pass is scheduled and none runs, however long the
        clock runs.
        """
        await self.runPass(0.1)
        await self.sync.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        counts = dict(self.sync.counts)
        self.clock.advance(10 * self.interval)
        self.assertEqual(self.sync.counts, counts)
        self.assertFalse(self.sync.status()["mirror"]["running"])
