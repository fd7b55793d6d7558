# -*- test-case-name: tests.test_sync -*-
"""
Tests for L{bluegreen.sync.syncer} and C{bluegreen sync}: real C{sqlite3} and
C{rsync} children, fixtures built with Python's C{sqlite3} module in
temporary directories.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bluegreen.sync.process import ProcessRunner, Tools
from bluegreen.sync.report import (
    COLUMN_ONLY_ON_SOURCE,
    FK_ORPHAN,
    KEY_CONFLICT,
    TABLE_ONLY_ON_SOURCE,
    UNIQUE_CONFLICT,
    Conflict,
    SyncReport,
    describeReport,
)
from bluegreen.sync.syncer import Syncer
from tests._util import PATIENCE, waitFor

from .test_cli_admin import bluegreen

reactor: Any = _reactor

SCHEMA = """
CREATE TABLE facts(id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL,
                   created_at TEXT DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE votes(id INTEGER PRIMARY KEY, fact_id INTEGER REFERENCES facts(id),
                   up INTEGER);
CREATE TABLE cats(id INTEGER PRIMARY KEY, name TEXT UNIQUE, photo BLOB);
CREATE TABLE pairs(a TEXT, b INTEGER, v, PRIMARY KEY(a, b));
CREATE TABLE wr(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE tags(tag, n);
"""

BIG = bytes(range(256)) * 40  # larger than a page


def build(path: str, mode: str, script: str = "") -> None:
    """
    Create the workshop-like schema at C{path} in journal C{mode} and run
    C{script}.
    """
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA journal_mode={mode}")
    # A fixture needs no durability: without an fsync a commit, thousands
    # of one-row inserts take a moment rather than a minute on a busy disk.
    db.execute("PRAGMA synchronous=OFF")
    db.executescript(SCHEMA)
    db.executemany(
        "INSERT INTO facts(id, text, created_at) VALUES (?, ?, '2024-01-01')",
        [(1, "one"), (2, "deux ☃")],
    )
    db.execute("INSERT INTO cats VALUES (1, 'tom', ?)", (BIG,))
    db.execute("INSERT INTO pairs VALUES ('x', 1, NULL)")
    db.execute("INSERT INTO wr VALUES ('k1', 1)")
    db.execute("INSERT INTO tags VALUES ('a', 1)")
    db.commit()
    db.executescript(script)
    db.commit()
    db.close()


def content(path: str) -> dict[str, tuple[int, str]]:
    """
    @return: Row count and an order-independent hash of each application
        table (the change capture's C{_bluegreen_} tables left out).
    """
    db = sqlite3.connect(path)
    out: dict[str, tuple[int, str]] = {}
    names = [
        r[0]
        for r in db.execute(
            "SELECT name FROM sqlite_schema WHERE type='table' "
            "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_bluegreen\\_%' "
            "ESCAPE '\\'"
        )
    ]
    for name in names:
        rows = sorted(repr(r) for r in db.execute(f'SELECT * FROM "{name}"'))
        out[name] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
    db.close()
    return out


def rows(path: str, sql: str) -> list[Any]:
    """
    @return: The rows of C{sql} on C{path}.
    """
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


class RowWriter:
    """
    An application writing to a database in a thread, one committed
    C{facts} row at a time, ids counting up from C{first}.

    @ivar written: The ids committed, in order (without gaps).
    @ivar errors: The exceptions met (a busy database, ...).
    """

    def __init__(self, path: str, first: int, text: str) -> None:
        self.path = path
        self.first = first
        self.text = text
        self.written: list[int] = []
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._done: Deferred[None] | None = None

    def start(self) -> None:
        """
        Start writing.
        """
        self._done = deferToThread(self._run)

    def stop(self) -> Deferred[None]:
        """
        Stop writing.

        @return: Fires once the thread has ended.
        """
        self._stop.set()
        assert self._done is not None
        return self._done

    def _run(self) -> None:
        # The merge holds the write lock for one transaction: the app waits
        # for it as long as the suite is patient.
        db = sqlite3.connect(self.path, timeout=PATIENCE)
        n = self.first
        while not self._stop.is_set():
            try:
                db.execute("INSERT INTO facts(id, text) VALUES (?, ?)", (n, self.text))
                db.commit()
                self.written.append(n)
                n += 1
            except Exception as e:
                self.errors.append(e)
                self._stop.wait(0.01)
        db.close()


class SyncTestsMixin:
    """
    Helpers for the sync tests.
    """

    def setUp(self) -> None:
        """
        A directory with a source and a target.
        """
        test: Any = self
        self.dir = os.path.abspath(test.mktemp())
        os.makedirs(self.dir)
        self.source = os.path.join(self.dir, "green.db")
        self.target = os.path.join(self.dir, "blue.db")
        self.syncer = Syncer(reactor, ProcessRunner(reactor, Tools.find()))

    def sync(self, strategy: str, **kw: Any) -> Deferred[SyncReport]:
        """
        Sync the target from the source.
        """
        return self.syncer.sync(self.source, self.target, strategy, **kw)

    def assertClean(self, sourceSidecars: bool = False) -> None:
        """
        Integrity ok, no stray sidecar or staging file.

        @param sourceSidecars: Allow the source's C{-wal}/C{-shm} (left by a
            reader that was killed, as a live app leaves them).
        """
        test: Any = self
        test.assertEqual(rows(self.target, "PRAGMA integrity_check"), [("ok",)])
        left = sorted(
            f
            for f in os.listdir(self.dir)
            if (f.endswith(("-wal", "-shm")) or ".sync-" in f)
            and not (sourceSidecars and f.startswith("green.db-"))
        )
        test.assertEqual(left, [])
        for name, seq in rows(self.target, "SELECT name, seq FROM sqlite_sequence"):
            (top,) = rows(self.target, f"SELECT max(rowid) FROM {name}")[0]
            test.assertGreaterEqual(seq, top or 0)


class MigrateTests(SyncTestsMixin, TestCase):
    """
    The C{migrate} strategy.
    """

    timeout = 2 * PATIENCE

    def _merged(self, mode: str) -> Deferred[None]:
        async def go() -> None:
            build(
                self.source,
                mode,
                "INSERT INTO facts(id, text) VALUES (3, 'green'), (4, 'x' || 'y');"
                "INSERT INTO votes VALUES (1, 3, 1);"
                "INSERT INTO cats VALUES (2, 'felix', zeroblob(9000));"
                "INSERT INTO pairs VALUES ('x', 2, 'é'), ('y', 1, NULL);"
                "INSERT INTO wr VALUES ('k2', NULL);"
                "INSERT INTO tags VALUES ('a', 1), ('a', 1), (NULL, NULL);",
            )
            build(
                self.target,
                mode,
                "INSERT INTO facts(id, text) VALUES (10, 'blue only');",
            )
            report = await self.sync("migrate")
            self.assertEqual(report.conflicts, ())
            self.assertIsNone(report.error)
            self.assertTrue(report.complete)
            self.assertEqual(
                report.copied,
                {"facts": 2, "votes": 1, "cats": 1, "pairs": 2, "wr": 1, "tags": 3},
            )
            self.assertEqual(report.targetOnly["facts"], 1)
            src, dst = content(self.source), content(self.target)
            for name in ("votes", "cats", "pairs", "wr", "tags"):
                self.assertEqual(src[name], dst[name], name)
            self.assertEqual(
                rows(self.target, "SELECT id FROM facts ORDER BY id"),
                [(1,), (2,), (3,), (4,), (10,)],
            )
            self.assertEqual(
                rows(self.target, "SELECT count(*) FROM tags WHERE tag='a'"), [(3,)]
            )
            self.assertEqual(
                rows(self.target, "SELECT photo FROM cats WHERE id=2"),
                [(b"\0" * 9000,)],
            )
            self.assertClean()
            again = await self.sync("migrate")
            self.assertTrue(again.complete)
            self.assertEqual(sum(again.copied.values()), 0)
            self.assertEqual(content(self.target), dst)
            self.assertClean()

        return Deferred.fromCoroutine(go())

    def test_mergeWal(self) -> Deferred[None]:
        """
        Every kind of table is merged (WAL databases), twice inserts nothing
        the second time.
        """
        return self._merged("wal")

    def test_mergeDelete(self) -> Deferred[None]:
        """
        The same with rollback-journal databases.
        """
        return self._merged("delete")

    def test_conflicts(self) -> Deferred[None]:
        """
        Every conflict kind is reported, nothing of it is copied, and a dry
        run reports the same while changing nothing.
        """

        async def go() -> None:
            build(
                self.source,
                "wal",
                "INSERT INTO facts(id, text) VALUES (3, 'green three');"
                "INSERT INTO cats VALUES (5, 'garfield', NULL);"
                "INSERT INTO votes VALUES (7, 99, 1);"
                "ALTER TABLE wr ADD COLUMN extra;"
                "CREATE TABLE newer(x); INSERT INTO newer VALUES (1);",
            )
            build(
                self.target,
                "wal",
                "INSERT INTO facts(id, text) VALUES (3, 'blue three');"
                "INSERT INTO cats VALUES (6, 'garfield', NULL);",
            )
            before = content(self.target)
            dry = await self.sync("migrate", dryRun=True)
            self.assertEqual(content(self.target), before)
            report = await self.sync("migrate")
            for r in (dry, report):
                kinds = sorted((c.kind, c.table) for c in r.conflicts)
                self.assertEqual(
                    kinds,
                    [
                        (COLUMN_ONLY_ON_SOURCE, "wr"),
                        (FK_ORPHAN, "votes"),
                        (KEY_CONFLICT, "facts"),
                        (TABLE_ONLY_ON_SOURCE, "newer"),
                        (UNIQUE_CONFLICT, "cats"),
                    ],
                )
                self.assertFalse(r.complete)
            byKind: dict[str, Any] = {c.kind: c for c in report.conflicts}
            self.assertEqual(byKind[KEY_CONFLICT].key, ("3",))
            self.assertEqual(byKind[KEY_CONFLICT].source["text"], "'green three'")
            self.assertEqual(byKind[KEY_CONFLICT].target["text"], "'blue three'")
            self.assertEqual(
                rows(self.target, "SELECT text FROM facts WHERE id=3"),
                [("blue three",)],
            )
            self.assertEqual(rows(self.target, "SELECT count(*) FROM votes"), [(0,)])
            self.assertEqual(
                rows(self.target, "SELECT id FROM cats ORDER BY id"), [(1,), (6,)]
            )
            self.assertClean()
            text = report.summary()
            self.assertIn("CONFLICT unique_conflict: cats key (5)", text)
            self.assertIn("INCOMPLETE", text)
            json.dumps(report.asJSON())

        return Deferred.fromCoroutine(go())

    def test_writerDuringMerge(self) -> Deferred[None]:
        """
        An app writing to the target while the merge runs loses nothing and
        sees no busy error.
        """

        async def go() -> None:
            many = ";".join(
                f"INSERT INTO votes(id, fact_id, up) VALUES ({i}, 1, {i})"
                for i in range(1000, 21000)
            )
            build(self.source, "wal", many + ";")
            build(self.target, "wal")
            writer = RowWriter(self.target, 100, "app")
            writer.start()
            report = await self.sync("migrate")
            report2 = await self.sync("migrate")
            await writer.stop()
            written = writer.written
            self.assertEqual(writer.errors, [])
            self.assertTrue(report.complete, report.summary())
            self.assertEqual(report.copied["votes"], 20000)
            # A failed second pass has no counts: say why it failed.
            self.assertTrue(report2.complete, report2.summary())
            # The second pass applies the source's changes since the first
            # (none): no snapshot, nothing copied.
            self.assertEqual(report2.method, "changes")
            self.assertEqual(sum(report2.copied.values()), 0)
            got = {r[0] for r in rows(self.target, "SELECT id FROM facts")}
            self.assertTrue(set(written) <= got)
            self.assertGreater(len(written), 0)
            self.assertClean()

        return Deferred.fromCoroutine(go())

    def test_interrupted(self) -> Deferred[None]:
        """
        A sync whose child is killed (here: cancelled mid-way) leaves the
        target unchanged and removes its files.
        """

        async def go() -> None:
            many = ";".join(
                f"INSERT INTO tags VALUES ({i}, randomblob(2000))" for i in range(20000)
            )
            build(self.source, "wal", many + ";")
            build(self.target, "delete")
            before = content(self.target)
            d = self.sync("migrate")
            await waitFor(
                lambda: any(".sync-" in name for name in os.listdir(self.dir)),
                "the snapshot",
            )
            d.cancel()
            try:
                await d
            except Exception:
                pass
            await self.syncer.runner.quiesce()
            self.assertEqual(content(self.target), before)
            self.assertClean(sourceSidecars=True)

        return Deferred.fromCoroutine(go())


class CorruptingRunner(ProcessRunner):
    """
    Flips bytes in whatever C{rsync} just wrote.
    """

    def run(self, argv: Any, *a: Any, **kw: Any) -> Deferred[Any]:
        """
        Run, then corrupt C{rsync}'s destination.
        """
        d = super().run(argv, *a, **kw)
        if argv[0].endswith("rsync"):

            def corrupt(result: Any) -> Any:
                with open(argv[-1], "r+b") as f:
                    f.seek(4096 + 100)
                    f.write(b"\xff" * 200)
                return result

            d.addCallback(corrupt)
        return d


class CopyTests(SyncTestsMixin, TestCase):
    """
    The C{copy} strategy.
    """

    timeout = 2 * PATIENCE

    def test_copy(self) -> Deferred[None]:
        """
        The target becomes the source's content; the old file is kept; the
        stop and start commands run; WAL mode is kept.
        """

        async def go() -> None:
            build(self.source, "delete", "INSERT INTO facts(text) VALUES ('new');")
            build(self.target, "wal")
            marks = os.path.join(self.dir, "marks")
            report = await self.sync(
                "copy",
                stopCommand=f"echo stop >> {marks}",
                startCommand=f"echo start >> {marks}",
            )
            self.assertTrue(report.complete, report.summary())
            self.assertEqual(content(self.target), content(self.source))
            self.assertEqual(open(marks).read(), "stop\nstart\n")
            self.assertIsNotNone(report.backup)
            assert report.backup is not None
            self.assertTrue(os.path.exists(report.backup))
            os.rename(report.backup, os.path.join(self.dir, "kept"))
            self.assertEqual(rows(self.target, "PRAGMA journal_mode"), [("wal",)])
            self.assertClean()

        return Deferred.fromCoroutine(go())

    def test_refuseTargetAhead(self) -> Deferred[None]:
        """
        A target holding rows the source lacks is left alone, with the
        reason and a suggestion of migrate.
        """

        async def go() -> None:
            build(self.source, "wal")
            build(self.target, "wal", "INSERT INTO facts(text) VALUES ('mine');")
            before = content(self.target)
            report = await self.sync("copy")
            self.assertFalse(report.complete)
            assert report.error is not None
            self.assertIn("facts: 1 row(s) only on the target", report.error)
            self.assertIn("use --strategy migrate", report.error)
            self.assertEqual(content(self.target), before)
            self.assertClean()

        return Deferred.fromCoroutine(go())

    def test_appStillRunning(self) -> Deferred[None]:
        """
        With the target app holding the database open (WAL), the swap is
        refused and the target is untouched.
        """

        async def go() -> None:
            build(self.source, "wal")
            build(self.target, "wal")
            app = sqlite3.connect(self.target)
            app.execute("SELECT count(*) FROM facts").fetchall()
            self.addCleanup(app.close)
            report = await self.sync("copy")
            assert report.error is not None
            self.assertIn("is the target app still running", report.error)
            self.assertEqual(
                sorted(f for f in os.listdir(self.dir) if ".sync-" in f), []
            )

        return Deferred.fromCoroutine(go())

    def test_corruptStaged(self) -> Deferred[None]:
        """
        A staged copy that does not match the snapshot is refused.
        """

        async def go() -> None:
            build(self.source, "delete")
            build(self.target, "delete")
            before = content(self.target)
            runner = CorruptingRunner(reactor, Tools.find())
            self.syncer = Syncer(reactor, runner)
            report = await self.sync("copy")
            assert report.error is not None
            self.assertIn("differs from the snapshot", report.error)
            self.assertEqual(content(self.target), before)
            self.assertClean()

        return Deferred.fromCoroutine(go())


class CommandLineTests(SyncTestsMixin, TestCase):
    """
    C{bluegreen sync} as a process.
    """

    timeout = 2 * PATIENCE

    def test_migrate(self) -> Deferred[None]:
        """
        Exit 0 and a summary when everything was copied; 1 with the report
        on conflicts.
        """

        async def go() -> None:
            build(self.source, "wal", "INSERT INTO facts(id, text) VALUES (5, 'g');")
            build(self.target, "wal")
            args = ("sync", "--from", self.source, "--to", self.target)
            out, err, code = await bluegreen(*args, "--strategy", "migrate")
            self.assertEqual((code, err), (0, ""))
            self.assertIn("facts: copied 1 row\n", out)
            self.assertIn("complete: copied 1 row, 0 conflicts", out)
            # The same row changed on both sides since: a conflict.
            for path, text in ((self.target, "b"), (self.source, "g2")):
                db = sqlite3.connect(path)
                db.execute("UPDATE facts SET text=? WHERE id=5", (text,))
                db.commit()
                db.close()
            out, err, code = await bluegreen(
                *args, "--strategy", "migrate", "--json", "--dry-run"
            )
            self.assertEqual(code, 1)
            answer = json.loads(out)
            self.assertFalse(answer["complete"])
            self.assertEqual(answer["conflicts"][0]["kind"], "changed_on_both")
            self.assertEqual(
                rows(self.target, "SELECT text FROM facts WHERE id=5"), [("b",)]
            )

        return Deferred.fromCoroutine(go())

    def test_usage(self) -> Deferred[None]:
        """
        Exit 2 with the synopsis on a usage error.
        """

        async def go() -> None:
            _out, err, code = await bluegreen(
                "sync", "--from", "a", "--to", "b", "--strategy", "mirror"
            )
            self.assertEqual(code, 2)
            self.assertIn("unknown strategy 'mirror'", err)
            self.assertIn("usage: bluegreen sync", err)

        return Deferred.fromCoroutine(go())


class DescribeTests(SynchronousTestCase):
    """
    L{SyncReport.describe}, L{SyncReport.brief} and L{describeReport}: a
    report in one line, also from its JSON (as a client gets it).
    """

    def report(self, **kw: Any) -> SyncReport:
        """
        @return: A C{migrate} report with C{kw}.
        """
        return SyncReport(strategy="migrate", source="g.db", target="b.db", **kw)

    def test_lines(self) -> None:
        """
        Complete, with conflicts, failed, dry run: the rows by table, the
        conflicts (the first one named) and the error, in one line; the
        same from the report's JSON.
        """
        conflict = Conflict(
            "facts", KEY_CONFLICT, ("2",), detail="same key, different content"
        )
        for report, line in [
            (
                self.report(dryRun=False, copied={"facts": 2, "votes": 1, "x": 0}),
                "migrate: copied 3 rows (facts 2, votes 1), no conflicts",
            ),
            (
                self.report(dryRun=False, copied={"facts": 1}, conflicts=(conflict,)),
                "migrate INCOMPLETE: copied 1 row (facts 1), 1 conflict "
                "(key_conflict: facts key (2): same key, different content)",
            ),
            (
                self.report(dryRun=False, conflicts=(conflict, conflict)),
                "migrate INCOMPLETE: copied 0 rows, 2 conflicts "
                "(key_conflict: facts key (2): same key, different content; "
                "and 1 more)",
            ),
            (
                self.report(dryRun=False, error="database is locked"),
                "migrate FAILED: database is locked; copied 0 rows",
            ),
            (
                self.report(dryRun=True, copied={"facts": 1}),
                "migrate: would copy 1 row (facts 1), no conflicts",
            ),
        ]:
            self.assertEqual(report.describe(), line)
            self.assertEqual(
                describeReport(json.loads(json.dumps(report.asJSON()))), line
            )

    def test_brief(self) -> None:
        """
        The brief form counts rows and conflicts (by kind), without rows or
        paths, and reads as one line too.
        """
        conflict = Conflict("facts", KEY_CONFLICT, ("2",))
        report = self.report(
            dryRun=False,
            copied={"facts": 1},
            conflicts=(conflict, conflict),
            seconds=0.12345,
        )
        brief = report.brief()
        self.assertEqual(
            brief,
            {
                "strategy": "migrate",
                "dry_run": False,
                "complete": False,
                "copied": {"facts": 1},
                "rows_copied": 1,
                "conflicts": 2,
                "conflict_kinds": {KEY_CONFLICT: 2},
                "error": None,
                "seconds": 0.123,
            },
        )
        self.assertEqual(json.loads(json.dumps(brief)), brief)
        self.assertEqual(
            describeReport(brief),
            "migrate INCOMPLETE: copied 1 row (facts 1), 2 conflicts",
        )
