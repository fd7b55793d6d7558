# -*- test-case-name: tests.test_sync_more -*-
"""
More tests for L{bluegreen.sync.syncer}: concurrent writers on the source,
children killed mid-way, schema drift, failing stop and start commands, the
workshop app's own schema, foreign-key cycles, idempotence after conflicts
and large or wide tables.  Real C{sqlite3} and C{rsync} children, as in
L{tests.test_sync}.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from bluegreen.sync.capture import Capture
from bluegreen.sync.locations import Location
from bluegreen.sync.process import ProcessRunner, Tools
from bluegreen.sync.report import (
    COLUMN_ONLY_ON_TARGET,
    FK_ORPHAN,
    KEY_CONFLICT,
    KEY_MISMATCH,
    TABLE_ONLY_ON_TARGET,
    UNIQUE_CONFLICT,
    SyncReport,
)
from bluegreen.sync.syncer import Syncer
from tests._util import PATIENCE, waitFor

from .test_sync import (
    RowWriter,
    SyncTestsMixin,
    build,
    content,
    reactor,
    rows,
)


def make(path: str, mode: str, script: str) -> None:
    """
    Create a database at C{path} in journal C{mode} with C{script}.
    """
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA journal_mode={mode}")
    # A fixture needs no durability: without an fsync a commit, thousands
    # of one-row inserts take a moment rather than a minute on a busy disk.
    db.execute("PRAGMA synchronous=OFF")
    db.executescript(script)
    db.commit()
    db.close()


def staging(directory: str) -> list[str]:
    """
    @return: The sync's leftovers in C{directory} (snapshot, staged file,
        rsync's temporary file, their journals).
    """
    return sorted(f for f in os.listdir(directory) if ".sync-" in f)


class Mixin(SyncTestsMixin):
    """
    L{SyncTestsMixin} for databases that may lack C{sqlite_sequence}.
    """

    def assertClean(self, sourceSidecars: bool = False) -> None:
        """
        As L{SyncTestsMixin.assertClean}; C{sqlite_sequence} is optional.
        """
        test: Any = self
        if rows(
            self.target, "SELECT 1 FROM sqlite_schema WHERE name='sqlite_sequence'"
        ):
            super().assertClean(sourceSidecars)
            return
        test.assertEqual(rows(self.target, "PRAGMA integrity_check"), [("ok",)])
        left = sorted(
            f
            for f in os.listdir(self.dir)
            if (f.endswith(("-wal", "-shm")) or ".sync-" in f)
            and not (sourceSidecars and f.startswith("green.db-"))
        )
        test.assertEqual(left, [])


class KillingRunner(ProcessRunner):
    """
    A runner that kills (C{SIGKILL}, the whole process group) the first
    child C{select} picks, C{after} seconds after it started, and can slow
    C{rsync} down or make the merge wait before its C{COMMIT}.

    @ivar select: Picks the child to kill from its argv and stdin.
    @ivar after: Seconds before the kill.
    @ivar bwlimit: C{rsync --bwlimit} (KiB/s), or 0.
    @ivar stall: Whether to add a long statement before the merge's
        C{COMMIT} (so the kill lands after the inserts, before the commit).
    @ivar sig: The signal sent.
    @ivar killed: The argv of the child killed.
    """

    select: Callable[[tuple[str, ...], bytes], bool]
    after: float = 0.5
    bwlimit: int = 0
    stall: bool = False
    sig: int = signal.SIGKILL
    killed: list[tuple[str, ...]]

    def run(self, argv: Any, stdin: bytes = b"", *a: Any, **kw: Any) -> Any:
        """
        Run, and kill the child if it is the one selected.
        """
        args = tuple(argv)
        if self.bwlimit and args[0].endswith("/rsync"):
            args = (args[0], f"--bwlimit={self.bwlimit}", *args[1:])
        if self.stall and b"BEGIN IMMEDIATE" in stdin and b"\nCOMMIT;" in stdin:
            stdin = stdin.replace(
                b"\nCOMMIT;",
                b"\nWITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                b"WHERE x < 1000000000) SELECT count(*) FROM c;\nCOMMIT;",
            )
        before = self.running
        d = super().run(args, stdin, *a, **kw)
        if not self.killed and self.select(args, stdin):
            (child,) = self.running - before
            self.killed.append(args)

            def kill() -> None:
                if child.transport is not None and child.transport.pid is not None:
                    try:
                        os.killpg(child.transport.pid, self.sig)
                    except ProcessLookupError:
                        pass

            call = self.reactor.callLater(self.after, kill)

            def cancel(_: object) -> None:
                if call.active():
                    call.cancel()

            child.ended.addCallback(cancel)
        return d


def killing(
    select: Callable[[tuple[str, ...], bytes], bool],
    after: float = 0.5,
    bwlimit: int = 0,
    stall: bool = False,
    sig: int = signal.SIGKILL,
) -> KillingRunner:
    """
    @return: A L{KillingRunner} (its attributes set after attrs' C{__init__}).
    """
    runner = KillingRunner(reactor, Tools.find())
    for name, value in (
        ("select", select),
        ("after", after),
        ("bwlimit", bwlimit),
        ("stall", stall),
        ("sig", sig),
        ("killed", []),
    ):
        object.__setattr__(runner, name, value)
    return runner


class ConcurrencyTests(Mixin, TestCase):
    """
    A writer on the source while the snapshot is taken.
    """

    timeout = 4 * PATIENCE

    def test_writerOnSource(self) -> Deferred[None]:
        """
        An app inserting into the source (one commit per row) while migrate
        runs sees no busy error; the target receives a consistent prefix of
        its writes (ids contiguous), and the next run brings the rest:
        nothing is lost.
        """

        async def go() -> None:
            filler = ";".join(
                f"INSERT INTO tags VALUES ({i}, randomblob(500))" for i in range(5000)
            )
            build(self.source, "wal", filler + ";")
            build(self.target, "wal")
            writer = RowWriter(self.source, 1000, "live")

            def prefix() -> int:
                live = sorted(
                    r[0]
                    for r in rows(self.target, "SELECT id FROM facts WHERE id>=1000")
                )
                self.assertEqual(live, list(range(1000, 1000 + len(live))))
                return len(live)

            writer.start()
            try:
                await waitFor(lambda: len(writer.written) >= 5, "the app's first rows")
                first = await self.sync("migrate")
                seen = prefix()
                second = await self.sync("migrate")
                self.assertGreater(prefix(), seen)
            finally:
                await writer.stop()
            written = writer.written
            self.assertEqual(writer.errors, [])
            self.assertTrue(first.complete, first.summary())
            self.assertTrue(second.complete, second.summary())
            self.assertGreater(first.copied["facts"], 0)
            third = await self.sync("migrate")
            self.assertTrue(third.complete, third.summary())
            got = {r[0] for r in rows(self.target, "SELECT id FROM facts")}
            self.assertEqual(set(written) - got, set())
            self.assertEqual(content(self.target), content(self.source))
            self.assertClean(sourceSidecars=True)

        return Deferred.fromCoroutine(go())


class LockedTargetTests(Mixin, TestCase):
    """
    A target whose app holds the write lock: the merge waits its busy
    timeout and tries again, and says so when the lock never came.
    """

    timeout = 2 * PATIENCE

    def setUp(self) -> None:
        """
        A source with one row the target lacks; an app connection holding
        the target's write lock.
        """
        super().setUp()
        build(self.source, "wal", "INSERT INTO votes VALUES (5000, 1, 1);")
        build(self.target, "wal")
        self.app = sqlite3.connect(self.target, isolation_level=None)
        self.app.execute("BEGIN IMMEDIATE")
        self.addCleanup(self.app.close)

    def release(self) -> None:
        """
        The app commits and goes away.
        """
        self.app.execute("ROLLBACK")
        self.app.close()

    def syncerWaiting(self, attempts: int) -> Syncer:
        """
        @return: A syncer whose C{sqlite3} waits 0.1 s for a lock, in
            C{attempts} merge attempts.
        """
        runner = ProcessRunner(reactor, Tools.find(), sqliteTimeout=100)
        return Syncer(reactor, runner, lockAttempts=attempts)

    async def test_lockedThroughout(self) -> None:
        """
        A lock held through every attempt fails the sync with SQLite's own
        message; nothing changed.
        """
        self.syncer = self.syncerWaiting(3)
        report = await self.sync("migrate")
        self.release()
        assert report.error is not None
        self.assertIn("stayed locked through 3 attempts", report.error)
        self.assertIn("database is locked", report.error)
        self.assertFalse(report.complete)
        self.assertEqual(rows(self.target, "SELECT count(*) FROM votes"), [(0,)])
        self.assertClean()

    async def test_lockReleased(self) -> None:
        """
        A lock released after a failed attempt: the next attempt merges.
        """
        retries: list[LogEvent] = []

        def observer(event: LogEvent) -> None:
            if "stayed locked" in (event.get("log_format") or ""):
                retries.append(event)

        globalLogPublisher.addObserver(cast(ILogObserver, observer))
        self.addCleanup(globalLogPublisher.removeObserver, cast(ILogObserver, observer))
        # Attempts enough to outlast the test's patience: the release, not
        # the attempts running out, must end the wait.
        self.syncer = self.syncerWaiting(int(10 * PATIENCE) + 1)
        d = self.sync("migrate")
        await waitFor(lambda: retries, "a failed attempt")
        self.release()
        report = await d
        self.assertTrue(report.complete, report.summary())
        self.assertEqual(report.copied["votes"], 1)
        self.assertEqual(rows(self.target, "SELECT id FROM votes"), [(5000,)])
        self.assertClean()


class KilledTests(Mixin, TestCase):
    """
    C{rsync} or C{sqlite3} killed mid-way leaves the target unchanged and
    the sync's files removed.
    """

    timeout = 4 * PATIENCE

    def _killed(
        self, runner: KillingRunner, mode: str, strategy: str = "migrate"
    ) -> Deferred[SyncReport]:
        async def go() -> SyncReport:
            many = ";".join(
                f"INSERT INTO tags VALUES ({i}, randomblob(1000))" for i in range(3000)
            )
            build(self.source, mode, many + ";")
            build(self.target, mode, "INSERT INTO facts(text) VALUES ('blue');")
            # The change capture is installed first (it is part of the
            # database from then on); what the failed sync must not touch
            # is the database as it was then.
            capture = Capture(self.syncer.hosts)
            for path in (self.source, self.target):
                await capture.ensure(Location.local(path))
            before = content(self.target)
            with open(self.target, "rb") as f:
                raw = f.read()
            self.syncer = Syncer(reactor, runner)
            report = await self.sync(strategy)
            self.assertEqual(len(runner.killed), 1)
            assert report.error is not None
            if runner.sig == signal.SIGKILL:
                self.assertIn("killed by signal KILL", report.error)
            else:
                # rsync catches TERM, cleans up and exits with code 20.
                self.assertIn("exited with code 20", report.error)
            self.assertFalse(report.complete)
            self.assertEqual(staging(self.dir), [])
            # A merge killed in rollback mode leaves a hot journal, which the
            # next connection (here, content()'s) rolls back.
            self.assertEqual(content(self.target), before)
            if mode == "delete":
                self.assertFalse(os.path.exists(self.target + "-journal"))
                with open(self.target, "rb") as f:
                    self.assertEqual(f.read(), raw)
            self.assertClean(sourceSidecars=True)
            return report

        return Deferred.fromCoroutine(go())

    def test_rsyncKilled(self) -> Deferred[None]:
        """
        C{rsync} killed mid-transfer (slowed down with C{--bwlimit}): the
        target is untouched and neither the staged file nor rsync's
        temporary file is left.
        """
        runner = killing(lambda argv, _: argv[0].endswith("/rsync"), 0.5, bwlimit=500)
        d = self._killed(runner, "delete")
        return d.addCallback(lambda r: self.assertIn("rsync", r.error or ""))

    def test_rsyncTerminated(self) -> Deferred[None]:
        """
        C{rsync} stopped with C{SIGTERM} (as the runner's timeout and
        cancellation do first) cleans up after itself: nothing is left.
        """
        runner = killing(
            lambda argv, _: argv[0].endswith("/rsync"),
            0.5,
            bwlimit=500,
            sig=signal.SIGTERM,
        )
        return self._killed(runner, "delete").addCallback(lambda _: None)

    def test_rsyncKilledCopy(self) -> Deferred[None]:
        """
        The same for C{copy} (WAL).
        """
        runner = killing(lambda argv, _: argv[0].endswith("/rsync"), 0.5, bwlimit=500)
        return self._killed(runner, "wal", "copy").addCallback(lambda _: None)

    def test_sqliteKilledMidMerge(self) -> Deferred[None]:
        """
        The merge's C{sqlite3} killed after its inserts, before its
        C{COMMIT} (rollback journal): nothing of it is left on the target.
        """

        def merge(argv: tuple[str, ...], stdin: bytes) -> bool:
            return b"BEGIN IMMEDIATE" in stdin and b"\nCOMMIT;" in stdin

        return self._killed(killing(merge, 1.0, stall=True), "delete").addCallback(
            lambda _: None
        )

    def test_sqliteKilledMidMergeWal(self) -> Deferred[None]:
        """
        The same with WAL databases.
        """

        def merge(argv: tuple[str, ...], stdin: bytes) -> bool:
            return b"BEGIN IMMEDIATE" in stdin and b"\nCOMMIT;" in stdin

        return self._killed(killing(merge, 1.0, stall=True), "wal").addCallback(
            lambda _: None
        )


class DriftTests(Mixin, TestCase):
    """
    Schema drift between the sides.
    """

    timeout = 2 * PATIENCE

    def test_tableOnlyOnTarget(self) -> Deferred[None]:
        """
        A table only the target has is reported and left alone; the other
        tables are merged; copy refuses.
        """

        async def go() -> None:
            build(self.source, "wal", "INSERT INTO facts(id, text) VALUES (3, 'g');")
            build(
                self.target,
                "wal",
                "CREATE TABLE audit(x); INSERT INTO audit VALUES ('kept');",
            )
            report = await self.sync("migrate")
            self.assertEqual(
                [(c.kind, c.table) for c in report.conflicts],
                [(TABLE_ONLY_ON_TARGET, "audit")],
            )
            self.assertFalse(report.complete)
            self.assertEqual(report.copied["facts"], 1)
            self.assertEqual(rows(self.target, "SELECT x FROM audit"), [("kept",)])
            copy = await self.sync("copy")
            assert copy.error is not None
            self.assertIn("table_only_on_target: audit", copy.error)
            self.assertEqual(rows(self.target, "SELECT x FROM audit"), [("kept",)])
            self.assertClean()

        return Deferred.fromCoroutine(go())

    def test_keyMismatch(self) -> Deferred[None]:
        """
        Tables whose primary keys differ between the sides are reported and
        not merged (a composite key against a single one, a key against
        none); the other tables are.
        """

        async def go() -> None:
            make(
                self.source,
                "wal",
                "CREATE TABLE k(a, b, v, PRIMARY KEY(a));"
                "CREATE TABLE n(a, b);"
                "CREATE TABLE ok(id INTEGER PRIMARY KEY, v);"
                "INSERT INTO k VALUES (1, 1, 'x'); INSERT INTO n VALUES (1, 2);"
                "INSERT INTO ok VALUES (1, 'y');",
            )
            make(
                self.target,
                "wal",
                "CREATE TABLE k(a, b, v, PRIMARY KEY(a, b));"
                "CREATE TABLE n(a PRIMARY KEY, b);"
                "CREATE TABLE ok(id INTEGER PRIMARY KEY, v);",
            )
            report = await self.sync("migrate")
            self.assertEqual(
                sorted((c.kind, c.table) for c in report.conflicts),
                [(KEY_MISMATCH, "k"), (KEY_MISMATCH, "n")],
            )
            byTable = {c.table: c for c in report.conflicts}
            self.assertIn(
                "key (a) on the source, (a, b) on the target", byTable["k"].detail
            )
            self.assertEqual(report.copied, {"ok": 1})
            self.assertEqual(rows(self.target, "SELECT count(*) FROM k"), [(0,)])
            self.assertEqual(rows(self.target, "SELECT count(*) FROM n"), [(0,)])
            self.assertClean()

        return Deferred.fromCoroutine(go())

    def test_notNullOnlyOnTarget(self) -> Deferred[None]:
        """
        A NOT NULL column without a default that only the target has: the
        table is skipped and reported; a nullable or defaulted target-only
        column gets its default.
        """

        async def go() -> None:
            make(
                self.source,
                "delete",
                "CREATE TABLE strict(id INTEGER PRIMARY KEY, v);"
                "CREATE TABLE loose(id INTEGER PRIMARY KEY, v);"
                "INSERT INTO strict VALUES (1, 'a');"
                "INSERT INTO loose VALUES (1, 'b');",
            )
            make(
                self.target,
                "delete",
                "CREATE TABLE strict(id INTEGER PRIMARY KEY, v, must NOT NULL);"
                "CREATE TABLE loose(id INTEGER PRIMARY KEY, v, "
                "opt, dflt NOT NULL DEFAULT 7);",
            )
            report = await self.sync("migrate")
            kinds = sorted((c.kind, c.table, c.detail) for c in report.conflicts)
            self.assertEqual(
                kinds,
                [
                    (COLUMN_ONLY_ON_TARGET, "loose", "column dflt gets its default"),
                    (COLUMN_ONLY_ON_TARGET, "loose", "column opt gets its default"),
                    (
                        COLUMN_ONLY_ON_TARGET,
                        "strict",
                        "column must is NOT NULL without a default: table not merged",
                    ),
                ],
            )
            self.assertNotIn("strict", report.copied)
            self.assertEqual(report.copied["loose"], 1)
            self.assertEqual(rows(self.target, "SELECT count(*) FROM strict"), [(0,)])
            self.assertEqual(
                rows(self.target, "SELECT * FROM loose"), [(1, "b", None, 7)]
            )
            self.assertClean()

        return Deferred.fromCoroutine(go())


class CommandTests(Mixin, TestCase):
    """
    Failing stop and start commands in C{copy}.
    """

    timeout = 2 * PATIENCE

    def setUp(self) -> None:
        super().setUp()
        self.marks = os.path.join(self.dir, "marks")

    def marked(self) -> str:
        """
        @return: What the stop and start commands wrote.
        """
        try:
            with open(self.marks) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def test_stopFails(self) -> Deferred[None]:
        """
        A stop command that fails: a clear error naming it, its exit code
        and stderr; the target untouched, no backup, start not run.
        """

        async def go() -> None:
            build(self.source, "wal", "INSERT INTO facts(text) VALUES ('new');")
            build(self.target, "wal")
            before = content(self.target)
            report = await self.sync(
                "copy",
                stopCommand="echo cannot stop >&2; exit 3",
                startCommand=f"echo start >> {self.marks}",
            )
            assert report.error is not None
            self.assertIn("exit 3", report.error)
            self.assertIn("exited with code 3", report.error)
            self.assertIn("cannot stop", report.error)
            self.assertIsNone(report.backup)
            self.assertEqual(report.copied, {})
            self.assertEqual(self.marked(), "")
            self.assertEqual(content(self.target), before)
            self.assertEqual([f for f in os.listdir(self.dir) if "pre-sync" in f], [])
            self.assertClean()

        return Deferred.fromCoroutine(go())

    def test_startFails(self) -> Deferred[None]:
        """
        A start command that fails after the swap: the swap stands (the
        target holds the source's content, the old file is kept as the
        backup the report names), and the report fails naming the start
        command, so the operator knows the app is down.
        """

        async def go() -> None:
            build(self.source, "wal", "INSERT INTO facts(text) VALUES ('new');")
            build(self.target, "wal")
            old = content(self.target)
            report = await self.sync(
                "copy",
                stopCommand=f"echo stop >> {self.marks}",
                startCommand="echo no port >&2; exit 4",
            )
            assert report.error is not None
            self.assertIn("exited with code 4", report.error)
            self.assertIn("no port", report.error)
            self.assertFalse(report.complete)
            self.assertEqual(self.marked(), "stop\n")
            self.assertEqual(content(self.target), content(self.source))
            assert report.backup is not None
            self.assertEqual(content(report.backup), old)
            os.rename(report.backup, os.path.join(self.dir, "kept"))
            self.assertClean()

        return Deferred.fromCoroutine(go())

    def test_startFailsAfterRefusal(self) -> Deferred[None]:
        """
        When the swap is refused after the stop (the app left a C{-wal}),
        the start command still runs; if it fails too, the report still
        says why the swap was refused.
        """

        async def go() -> None:
            build(self.source, "wal")
            build(self.target, "wal")
            app = sqlite3.connect(self.target)
            app.execute("SELECT count(*) FROM facts").fetchall()
            self.addCleanup(app.close)
            report = await self.sync(
                "copy",
                stopCommand=f"echo stop >> {self.marks}",
                startCommand=f"echo start >> {self.marks}; exit 5",
            )
            self.assertEqual(self.marked(), "stop\nstart\n")
            assert report.error is not None
            self.assertIn("is the target app still running", report.error)
            self.assertEqual(staging(self.dir), [])

        return Deferred.fromCoroutine(go())


WORKSHOP = """
CREATE TABLE facts(info TEXT);
CREATE TABLE votes(catId INT, votes INT);
CREATE TABLE cats(img TEXT);
"""


class ShapeTests(Mixin, TestCase):
    """
    The workshop's schema, foreign-key cycles, conflicts twice, size.
    """

    timeout = 6 * PATIENCE

    def test_workshopSchema(self) -> Deferred[None]:
        """
        The workshop app's original schema (rowid tables without keys) is
        merged as multisets, duplicates counted; twice inserts nothing.
        """

        async def go() -> None:
            for path in (self.source, self.target):
                make(
                    path,
                    "wal",
                    WORKSHOP + "INSERT INTO facts VALUES ('cats purr');"
                    "INSERT INTO cats VALUES ('a.jpg');"
                    "INSERT INTO votes VALUES (1, 0);",
                )
            db = sqlite3.connect(self.source)
            db.executescript(
                "INSERT INTO facts VALUES ('cats sleep'), ('cats sleep'), (NULL);"
                "INSERT INTO cats VALUES ('b.jpg'), ('a.jpg');"
                "INSERT INTO votes VALUES (2, 1), (2, 1);"
            )
            db.close()
            db = sqlite3.connect(self.target)
            db.executescript("INSERT INTO facts VALUES ('blue fact');")
            db.close()
            report = await self.sync("migrate")
            self.assertTrue(report.complete, report.summary())
            self.assertEqual(report.copied, {"facts": 3, "cats": 2, "votes": 2})
            self.assertEqual(report.targetOnly, {"facts": 1, "cats": 0, "votes": 0})
            self.assertEqual(
                sorted(
                    rows(self.target, "SELECT info FROM facts"), key=lambda r: repr(r)
                ),
                sorted(
                    [
                        ("cats purr",),
                        ("cats sleep",),
                        ("cats sleep",),
                        (None,),
                        ("blue fact",),
                    ],
                    key=lambda r: repr(r),
                ),
            )
            src, dst = content(self.source), content(self.target)
            self.assertEqual(src["cats"], dst["cats"])
            self.assertEqual(src["votes"], dst["votes"])
            again = await self.sync("migrate")
            self.assertTrue(again.complete)
            self.assertEqual(sum(again.copied.values()), 0)
            self.assertEqual(content(self.target), dst)
            self.assertClean()

        return Deferred.fromCoroutine(go())

    def test_foreignKeyCycle(self) -> Deferred[None]:
        """
        Tables referring to each other are merged whole; a foreign key
        naming only its parent table (the parent's key implied) still finds
        orphans.
        """

        async def go() -> None:
            schema = (
                "CREATE TABLE a(id INTEGER PRIMARY KEY, b_id REFERENCES b(id));"
                "CREATE TABLE b(id INTEGER PRIMARY KEY, a_id REFERENCES a(id));"
                "CREATE TABLE parent(id INTEGER PRIMARY KEY);"
                "CREATE TABLE child(id INTEGER PRIMARY KEY, p REFERENCES parent);"
            )
            make(
                self.source,
                "wal",
                schema + "INSERT INTO a VALUES (1, 1); INSERT INTO b VALUES (1, 1);"
                "INSERT INTO a VALUES (2, NULL); INSERT INTO b VALUES (2, 2);"
                "INSERT INTO parent VALUES (1);"
                "INSERT INTO child VALUES (1, 1), (2, 99);",
            )
            make(self.target, "wal", schema)
            report = await self.sync("migrate")
            self.assertEqual(
                [(c.kind, c.table, c.key) for c in report.conflicts],
                [(FK_ORPHAN, "child", ("2",))],
            )
            self.assertEqual(report.copied, {"a": 2, "b": 2, "parent": 1, "child": 1})
            self.assertEqual(
                rows(self.target, "SELECT * FROM a ORDER BY id"), [(1, 1), (2, None)]
            )
            self.assertEqual(rows(self.target, "PRAGMA foreign_key_check"), [])
            self.assertClean()

        return Deferred.fromCoroutine(go())

    def test_conflictsTwice(self) -> Deferred[None]:
        """
        A second run after conflicts inserts nothing and reports nothing
        new: the first run's conflicts were kept in the target's conflicts
        table (the source's rows with the target's).
        """

        async def go() -> None:
            build(
                self.source,
                "wal",
                "INSERT INTO facts(id, text) VALUES (3, 'green three'), (4, 'ok');"
                "INSERT INTO cats VALUES (5, 'garfield', NULL);"
                "INSERT INTO votes VALUES (7, 99, 1);",
            )
            build(
                self.target,
                "wal",
                "INSERT INTO facts(id, text) VALUES (3, 'blue three');"
                "INSERT INTO cats VALUES (6, 'garfield', NULL);",
            )
            first = await self.sync("migrate")
            after = content(self.target)
            second = await self.sync("migrate")

            def kinds(report: SyncReport) -> list[Any]:
                return sorted(
                    (c.kind, c.table, c.key, c.detail) for c in report.conflicts
                )

            self.assertEqual(
                [k[:2] for k in kinds(first)],
                [
                    (FK_ORPHAN, "votes"),
                    (KEY_CONFLICT, "facts"),
                    (UNIQUE_CONFLICT, "cats"),
                ],
            )
            self.assertEqual(kinds(second), [])
            self.assertEqual(first.copied["facts"], 1)
            self.assertEqual(sum(second.copied.values()), 0)
            self.assertTrue(second.complete)
            self.assertEqual(
                rows(
                    self.target,
                    "SELECT kind, tbl FROM _bluegreen_conflicts ORDER BY kind",
                ),
                [
                    (FK_ORPHAN, "votes"),
                    (KEY_CONFLICT, "facts"),
                    (UNIQUE_CONFLICT, "cats"),
                ],
            )
            self.assertEqual(content(self.target), after)
            self.assertClean()

        return Deferred.fromCoroutine(go())

    def test_hundredThousandRows(self) -> Deferred[None]:
        """
        A 100,000-row migrate completes; the next one inserts nothing.
        """

        async def go() -> None:
            schema = (
                "CREATE TABLE big(id INTEGER PRIMARY KEY, at TEXT, body TEXT UNIQUE);"
                "CREATE TABLE bag(x, y);"
            )
            make(
                self.source,
                "wal",
                schema + "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                "FROM c WHERE i < 100000) INSERT INTO big SELECT i, "
                "'2024-01-01', printf('%080d', i) FROM c;"
                "INSERT INTO bag SELECT id % 10, id % 7 FROM big;",
            )
            make(self.target, "wal", schema)
            report = await self.sync("migrate")
            self.assertTrue(report.complete, report.summary())
            self.assertEqual(report.copied, {"big": 100000, "bag": 100000})
            self.assertEqual(content(self.target), content(self.source))
            again = await self.sync("migrate")
            self.assertEqual(sum(again.copied.values()), 0)
            self.assertClean()

        return Deferred.fromCoroutine(go())

    def _wide(self, strategy: str, width: int) -> Deferred[None]:
        """
        Sync a table of C{width} columns (beside the key) with C{strategy}:
        the source holds rows 1 and 2, the target row 1 with a different
        last column (and, for C{copy}, that row is then removed).
        """

        async def go() -> None:
            names = [f"c{i}" for i in range(width)]
            columns = ", ".join(names)
            schema = f"CREATE TABLE wide(id INTEGER PRIMARY KEY, {columns});"
            schema += "CREATE TABLE narrow(id INTEGER PRIMARY KEY, v);"
            values = ", ".join(str(i) for i in range(width))
            other = ", ".join(str(i) for i in range(width - 1)) + ", 'other'"
            make(
                self.source,
                "delete",
                schema + f"INSERT INTO wide VALUES (1, {values});"
                f"INSERT INTO wide VALUES (2, {values});"
                "INSERT INTO narrow VALUES (1, 'x');",
            )
            make(
                self.target, "delete", schema + f"INSERT INTO wide VALUES (1, {other});"
            )
            if strategy == "copy":
                before = content(self.target)
                refused = await self.sync("copy")
                assert refused.error is not None, refused.summary()
                self.assertIn("refusing to copy", refused.error)
                self.assertIn("key_conflict: wide key (1)", refused.error)
                self.assertEqual(content(self.target), before)
                make(self.target, "delete", "DELETE FROM wide;")
                report = await self.sync("copy")
                self.assertTrue(report.complete, report.summary())
                self.assertEqual(report.copied, {"wide": 2, "narrow": 1})
                self.assertEqual(content(self.target), content(self.source))
                self.assertClean()
                return
            report = await self.sync("migrate")
            self.assertIsNone(report.error, report.summary())
            self.assertEqual(report.copied, {"wide": 1, "narrow": 1})
            [conflict] = report.conflicts
            self.assertEqual(conflict.kind, KEY_CONFLICT)
            self.assertEqual(conflict.key, ("1",))
            expected = {"id": "1", **{c: str(i) for i, c in enumerate(names)}}
            assert conflict.source is not None and conflict.target is not None
            self.assertEqual(list(conflict.source), ["id", *names])
            self.assertEqual(conflict.source, expected)
            self.assertEqual(conflict.target, {**expected, names[-1]: "'other'"})
            self.assertEqual(
                rows(self.target, "SELECT count(*) FROM wide WHERE id = 2"), [(1,)]
            )
            self.assertEqual(
                rows(self.target, f"SELECT {names[-1]} FROM wide WHERE id = 1"),
                [("other",)],
            )
            # Reported once; the source's version is kept in the target.
            again = await self.sync("migrate")
            self.assertEqual(sum(again.copied.values()), 0)
            self.assertEqual(again.conflicts, ())
            [(kept,)] = rows(self.target, "SELECT source FROM _bluegreen_conflicts")
            self.assertEqual(json.loads(kept), expected)
            self.assertClean()

        return Deferred.fromCoroutine(go())

    def test_wideTable(self) -> Deferred[None]:
        """
        A table of 70 columns (beyond the ~63 that one C{json_object} call's
        127 arguments allow) migrates; its key conflict carries every
        column, in column order.
        """
        return self._wide("migrate", 70)

    def test_wideTableCopy(self) -> Deferred[None]:
        """
        C{copy} onto an existing target with a 70-column table: its check
        that the target took no writes (a dry-run merge) names the
        conflict, and once the target holds nothing extra the copy goes
        through.
        """
        return self._wide("copy", 70)

    def test_veryWideTable(self) -> Deferred[None]:
        """
        A table of 200 columns migrates too.
        """
        return self._wide("migrate", 200)

    def test_veryWideTableCopy(self) -> Deferred[None]:
        """
        And copies.
        """
        return self._wide("copy", 200)
