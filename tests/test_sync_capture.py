# -*- test-case-name: tests.test_sync_capture -*-
"""
Tests for the exact C{migrate}: L{bluegreen.sync.capture} (triggers and
change log), L{bluegreen.sync.apply} and L{bluegreen.sync.exact}.  The app's
writes are real C{sqlite3} processes (each its own connection), the syncs
real C{sqlite3} children.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bluegreen.sync.apply import (
    CHANGED_ON_BOTH,
    BadChange,
    Script,
    parseChanges,
)
from bluegreen.sync.capture import Capture
from bluegreen.sync.locations import Location
from bluegreen.sync.process import ProcessRunner, Tools
from bluegreen.sync.report import (
    KEY_CONFLICT,
    TABLE_ONLY_ON_SOURCE,
    UNIQUE_CONFLICT,
    SyncReport,
)
from bluegreen.sync.syncer import Syncer
from tests._util import PATIENCE

from .test_sync import RowWriter, SyncTestsMixin, content, rows
from .test_sync_more import killing
from .test_sync_remote import RemoteTestCase

reactor: Any = _reactor

#: The workshop's meow.io tables: no primary keys (multisets), plus a keyed
#: table like the sample app's.
WORKSHOP = """
PRAGMA journal_mode=WAL;
CREATE TABLE votes(catId INTEGER, votes INTEGER);
CREATE TABLE cats(img TEXT);
CREATE TABLE facts(id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL,
                   photo BLOB, score REAL);
INSERT INTO cats VALUES ('tom.png');
INSERT INTO facts(text) VALUES ('one'), ('two');
"""

SQLITE3 = shutil.which("sqlite3") or "sqlite3"


def app(path: str, sql: str) -> None:
    """
    Write as the app does: its own C{sqlite3} process and connection,
    waiting on a busy database rather than failing.
    """
    subprocess.run(
        [SQLITE3, "-bail", "-cmd", f".timeout {int(PATIENCE * 1000)}", path],
        input=sql.encode("utf-8"),
        check=True,
        capture_output=True,
    )


def votes(path: str) -> list[tuple[Any, ...]]:
    """
    @return: The multiset of C{votes}, as (catId, votes, how many).
    """
    return rows(path, "SELECT catId, votes, count(*) FROM votes GROUP BY 1, 2")


class ExactTests(SyncTestsMixin, TestCase):
    """
    Syncs both ways between two databases written by an app.
    """

    timeout = 4 * PATIENCE

    def setUp(self) -> None:
        """
        Two databases with the workshop's tables, seeded (first sync each
        way).
        """
        super().setUp()
        for path in (self.source, self.target):
            app(path, WORKSHOP)

    async def both(self) -> tuple[SyncReport, SyncReport]:
        """
        Sync green -> blue, then blue -> green; both must be complete.
        """
        there = await self.syncer.sync(self.source, self.target, "migrate")
        back = await self.syncer.sync(self.target, self.source, "migrate")
        return there, back

    async def seed(self) -> None:
        """
        The first sync each way (capture installed, snapshot merged once).
        """
        there, back = await self.both()
        self.assertEqual(there.method, "seeded")
        self.assertEqual(back.method, "seeded")
        self.assertTrue(there.complete and back.complete, there.summary())

    async def test_identicalRows(self) -> None:
        """
        Three identical votes on green and two on blue between syncs: five
        on both sides after syncing both ways (a snapshot compare gives
        four); syncing again changes nothing.
        """
        await self.seed()
        app(self.source, "INSERT INTO votes VALUES (5, 1);" * 3)
        app(self.target, "INSERT INTO votes VALUES (5, 1);" * 2)
        there, back = await self.both()
        self.assertEqual((there.method, there.changes), ("changes", 3))
        self.assertEqual((back.method, back.changes), ("changes", 2))
        self.assertTrue(there.complete and back.complete, back.summary())
        self.assertEqual(votes(self.source), [(5, 1, 5)])
        self.assertEqual(votes(self.target), [(5, 1, 5)])
        again = await self.both()
        self.assertEqual([r.changes for r in again], [0, 0])
        self.assertEqual(content(self.source), content(self.target))

    async def test_noEcho(self) -> None:
        """
        What a sync applies is not captured in the target's log.
        """
        await self.seed()
        app(self.source, "INSERT INTO votes VALUES (1, 1);")
        await self.syncer.sync(self.source, self.target, "migrate")
        self.assertEqual(
            rows(self.target, "SELECT count(*) FROM _bluegreen_log"), [(0,)]
        )
        # The app's next write gets the next number, and travels back.
        app(self.target, "INSERT INTO votes VALUES (2, 2);")
        self.assertEqual(
            rows(self.target, "SELECT seq, tbl, op FROM _bluegreen_log"),
            [(1, "votes", "I")],
        )
        back = await self.syncer.sync(self.target, self.source, "migrate")
        self.assertEqual(back.changes, 1)
        self.assertEqual(votes(self.source), votes(self.target))

    async def test_updatesAndDeletes(self) -> None:
        """
        Updates and deletes on both sides, keyed and keyless, reach the
        other side; the databases converge.
        """
        await self.seed()
        app(
            self.source,
            "INSERT INTO votes VALUES (1, 1), (1, 1), (2, NULL);"
            "UPDATE facts SET text = 'ONE', score = 0.1 + 0.2 WHERE id = 1;"
            "UPDATE cats SET img = 'tom2.png';",
        )
        app(
            self.target,
            "DELETE FROM facts WHERE id = 2;"
            "INSERT INTO facts(id, text, photo) VALUES (10, 'blob', x'00ff00');",
        )
        await self.both()
        app(
            self.target,
            "DELETE FROM votes WHERE rowid IN "
            "(SELECT rowid FROM votes WHERE catId = 1 LIMIT 1);"
            "UPDATE votes SET votes = 7 WHERE catId = 2;",
        )
        await self.both()
        expected = [(1, 1, 1), (2, 7, 1)]
        self.assertEqual(votes(self.source), expected)
        self.assertEqual(votes(self.target), expected)
        for path in (self.source, self.target):
            self.assertEqual(
                rows(path, "SELECT id, text, hex(photo), score FROM facts ORDER BY id"),
                [(1, "ONE", "", 0.1 + 0.2), (10, "blob", "00FF00", None)],
            )
            self.assertEqual(rows(path, "SELECT img FROM cats"), [("tom2.png",)])
        self.assertEqual(content(self.source), content(self.target))

    async def test_conflicts(self) -> None:
        """
        The same key changed on both sides, and the same new id inserted on
        both: the target keeps its rows, the source's versions are kept in
        its conflicts table; the sync is incomplete (the CLI exits 1).
        """
        await self.seed()
        app(
            self.source,
            "UPDATE facts SET text = 'green' WHERE id = 1;"
            "INSERT INTO facts(text) VALUES ('green three');",
        )
        app(
            self.target,
            "UPDATE facts SET text = 'blue' WHERE id = 1;"
            "INSERT INTO facts(text) VALUES ('blue three');",
        )
        report = await self.syncer.sync(self.source, self.target, "migrate")
        self.assertFalse(report.complete)
        self.assertEqual(
            sorted((c.kind, c.key) for c in report.conflicts),
            [(CHANGED_ON_BOTH, ("1",)), (KEY_CONFLICT, ("3",))],
        )
        self.assertEqual(
            rows(self.target, "SELECT id, text FROM facts ORDER BY id"),
            [(1, "blue"), (2, "two"), (3, "blue three")],
        )
        kept = rows(
            self.target,
            "SELECT kind, tbl, op, source, target, resolution FROM "
            "_bluegreen_conflicts ORDER BY seq",
        )
        self.assertEqual(
            [
                (k, t, o, json.loads(s)["text"], json.loads(g)["text"], r)
                for k, t, o, s, g, r in kept
            ],
            [
                (CHANGED_ON_BOTH, "facts", "U", "'green'", "'blue'", "kept target"),
                (
                    KEY_CONFLICT,
                    "facts",
                    "I",
                    "'green three'",
                    "'blue three'",
                    "kept target",
                ),
            ],
        )
        again = await self.syncer.sync(self.source, self.target, "migrate")
        self.assertTrue(again.complete)
        self.assertEqual(
            len(rows(self.target, "SELECT * FROM _bluegreen_conflicts")), 2
        )

    async def test_uniqueConflicts(self) -> None:
        """
        A UNIQUE value taken by another row on the target (inserts in a
        batch, one insert, an update): a conflict kept, the rest applied,
        and the next sync is not stuck on it.
        """
        await self.seed()
        for path in (self.source, self.target):
            app(path, "CREATE TABLE pets(id INTEGER PRIMARY KEY, name TEXT UNIQUE);")
        await self.both()
        app(self.source, "INSERT INTO pets VALUES (1, 'tom'), (2, 'rex');")
        app(self.source, "INSERT INTO pets VALUES (3, 'max');")
        app(self.source, "UPDATE pets SET name = 'zed' WHERE id = 2;")
        app(self.target, "INSERT INTO pets VALUES (5, 'tom'), (6, 'max'), (7, 'zed');")
        report = await self.syncer.sync(self.source, self.target, "migrate")
        self.assertEqual(
            [(c.kind, c.key) for c in report.conflicts],
            [(UNIQUE_CONFLICT, (key,)) for key in ("1", "3", "2")],
        )
        self.assertEqual(
            rows(self.target, "SELECT id, name FROM pets ORDER BY id"),
            [(2, "rex"), (5, "tom"), (6, "max"), (7, "zed")],
        )
        again = await self.syncer.sync(self.source, self.target, "migrate")
        self.assertEqual((again.error, again.changes), (None, 0))

    async def test_takeSource(self) -> None:
        """
        With C{take-source} the source's version is written and the
        target's kept in the conflicts table.
        """
        await self.seed()
        app(self.source, "UPDATE facts SET text = 'green' WHERE id = 1;")
        app(self.target, "UPDATE facts SET text = 'blue' WHERE id = 1;")
        report = await self.syncer.sync(
            self.source, self.target, "migrate", onConflict="take-source"
        )
        self.assertEqual([c.kind for c in report.conflicts], [CHANGED_ON_BOTH])
        self.assertEqual(
            rows(self.target, "SELECT text FROM facts WHERE id = 1"), [("green",)]
        )
        [(target, resolution)] = rows(
            self.target, "SELECT target, resolution FROM _bluegreen_conflicts"
        )
        self.assertEqual(
            (json.loads(target)["text"], resolution), ("'blue'", "took source")
        )

    async def test_newest(self) -> None:
        """
        With C{newest} the row changed last wins, on either side; the other
        version is kept.
        """
        await self.seed()
        app(self.target, "UPDATE facts SET text = 'blue first' WHERE id = 1;")
        app(self.source, "UPDATE facts SET text = 'green later' WHERE id = 1;")
        app(self.source, "UPDATE facts SET text = 'green first' WHERE id = 2;")
        app(self.target, "UPDATE facts SET text = 'blue later' WHERE id = 2;")
        report = await self.syncer.sync(
            self.source, self.target, "migrate", onConflict="newest"
        )
        self.assertEqual(len(report.conflicts), 2, report.summary())
        self.assertEqual(
            rows(self.target, "SELECT id, text FROM facts ORDER BY id"),
            [(1, "green later"), (2, "blue later")],
        )
        self.assertEqual(
            rows(
                self.target,
                "SELECT json_extract(source, '$.id'), resolution FROM "
                "_bluegreen_conflicts ORDER BY seq",
            ),
            [("1", "took source (newer)"), ("2", "kept target (newer)")],
        )

    async def test_schemaChange(self) -> None:
        """
        A deploy adds a column (both sides) and a table (green only)
        between passes: the triggers are re-created, the new column's
        values travel, the new table's changes are kept as conflicts.
        """
        await self.seed()
        for path in (self.source, self.target):
            app(path, "ALTER TABLE votes ADD COLUMN who TEXT;")
        app(
            self.source,
            "CREATE TABLE extra(x); INSERT INTO votes VALUES (3, 1, 'ann');",
        )
        report = await self.syncer.sync(self.source, self.target, "migrate")
        self.assertIn(f"change capture refreshed in {self.source}", report.notes)
        # The insert came before the triggers were re-created: it is
        # captured by the old ones (without the new column) and travels.
        app(
            self.source,
            "INSERT INTO votes VALUES (4, 1, 'bob'); INSERT INTO extra VALUES (1);",
        )
        report = await self.syncer.sync(self.source, self.target, "migrate")
        self.assertEqual(
            rows(self.target, "SELECT catId, who FROM votes ORDER BY catId"),
            [(3, None), (4, "bob")],
        )
        self.assertEqual([c.kind for c in report.conflicts], [TABLE_ONLY_ON_SOURCE])
        self.assertEqual(
            rows(self.target, "SELECT tbl, source FROM _bluegreen_conflicts"),
            [("extra", '{"x": "1"}')],
        )

    async def test_killedMidApply(self) -> None:
        """
        The apply's C{sqlite3} killed before its C{COMMIT}: the target and
        its position are unchanged; the next sync applies everything once.
        """
        await self.seed()
        app(self.source, "INSERT INTO votes VALUES (8, 8);" * 50)
        before = content(self.target)
        position = rows(self.target, "SELECT seq FROM _bluegreen_applied")

        def apply(argv: tuple[str, ...], stdin: bytes) -> bool:
            return b"position_moved_by_another_sync" in stdin

        runner = killing(apply, 1.0, stall=True)
        report = await Syncer(reactor, runner).sync(self.source, self.target, "migrate")
        self.assertEqual(len(runner.killed), 1)
        self.assertIn("killed by signal KILL", report.error or "")
        self.assertEqual(content(self.target), before)
        self.assertEqual(
            rows(self.target, "SELECT seq FROM _bluegreen_applied"), position
        )
        again = await self.syncer.sync(self.source, self.target, "migrate")
        self.assertEqual(again.changes, 50)
        self.assertEqual(votes(self.target), [(8, 8, 50)])

    async def test_positionMoved(self) -> None:
        """
        Another sync applying the same changes between this one's read and
        its apply (the guard sees the position moved): nothing is applied
        twice, the sync fails saying so, the next one is a no-op.
        """
        await self.seed()
        app(self.source, "INSERT INTO votes VALUES (9, 9);")
        target = self.target
        raced: list[bool] = []

        class Racing(ProcessRunner):
            def run(self, argv: Any, stdin: bytes = b"", *a: Any, **kw: Any) -> Any:
                if b"position_moved_by_another_sync" in stdin and not raced:
                    raced.append(True)
                    app(target, "UPDATE _bluegreen_applied SET seq = seq + 1;")
                return super().run(argv, stdin, *a, **kw)

        runner = Racing(reactor, Tools.find())
        report = await Syncer(reactor, runner).sync(self.source, target, "migrate")
        self.assertIn("another sync applied changes", report.error or "")
        self.assertEqual(votes(target), [])
        again = await self.syncer.sync(self.source, target, "migrate")
        self.assertEqual((again.changes, again.error), (0, None))

    async def test_appWritingDuringSync(self) -> None:
        """
        The app writes to the target (with a busy timeout) while syncs
        apply: no error reaches it, nothing of either is lost.
        """
        await self.seed()
        writer = RowWriter(self.target, 1000, "app")
        writer.start()
        try:
            for i in range(5):
                app(self.source, f"INSERT INTO votes VALUES ({i}, 1);" * 200)
                report = await self.syncer.sync(self.source, self.target, "migrate")
                self.assertTrue(report.complete, report.summary())
        finally:
            await writer.stop()
        self.assertEqual(writer.errors, [])
        self.assertEqual(rows(self.target, "SELECT count(*) FROM votes"), [(1000,)])
        got = {r[0] for r in rows(self.target, "SELECT id FROM facts")}
        self.assertTrue(set(writer.written) <= got)
        back = await self.syncer.sync(self.target, self.source, "migrate")
        self.assertTrue(back.complete, back.summary())
        self.assertEqual(content(self.source), content(self.target))

    async def test_trimmedFallback(self) -> None:
        """
        The log is trimmed once applied (the newest row kept, so that a
        sequence number is never given twice); a target whose position was
        trimmed away (another target synced from the same source) falls
        back to a snapshot merge, reported.
        """
        await self.seed()
        app(self.source, "INSERT INTO votes VALUES (1, 2);")
        await self.syncer.sync(self.source, self.target, "migrate")
        # Trimmed, but the newest row stays: numbers are never given twice.
        app(self.source, "INSERT INTO votes VALUES (1, 2);")
        await self.syncer.sync(self.source, self.target, "migrate")
        self.assertEqual(rows(self.source, "SELECT seq FROM _bluegreen_log"), [(2,)])
        other = os.path.join(self.dir, "other.db")
        shutil.copy(self.target, other)
        app(self.source, "INSERT INTO votes VALUES (1, 3);")
        await self.syncer.sync(self.source, self.target, "migrate")
        report = await self.syncer.sync(self.source, other, "migrate")
        self.assertIn("log was trimmed past", " ".join(report.notes))
        self.assertEqual(report.method, "fallback")
        self.assertEqual(votes(other), votes(self.source))


class CommandLineTests(SyncTestsMixin, TestCase):
    """
    C{bluegreen sync conflicts}, C{--on-conflict} and their usage errors.
    """

    timeout = 2 * PATIENCE

    async def test_conflicts(self) -> None:
        """
        A sync meeting a conflict exits 1; C{bluegreen sync conflicts}
        lists it (exit 1), as JSON too; a database without any exits 0.
        """
        from .test_cli_admin import bluegreen

        for path in (self.source, self.target):
            app(path, WORKSHOP)
        args = ("sync", "--strategy", "migrate")
        for a, b in ((self.source, self.target), (self.target, self.source)):
            _, err, code = await bluegreen(*args, "--from", a, "--to", b)
            self.assertEqual((code, err), (0, ""))
        app(self.source, "UPDATE facts SET text = 'green' WHERE id = 2;")
        app(self.target, "UPDATE facts SET text = 'blue' WHERE id = 2;")
        out, err, code = await bluegreen(
            *args, "--from", self.source, "--to", self.target
        )
        self.assertEqual(code, 1)
        self.assertIn("CONFLICT changed_on_both: facts key (2)", out)
        out, err, code = await bluegreen("sync", "conflicts", self.target)
        self.assertEqual((code, err), (1, ""))
        self.assertIn("changed_on_both: facts key (2) change 1 (kept target)", out)
        self.assertIn("""source: {"id": "2", "text": "'green'""", out)
        self.assertIn("1 conflict kept in", out)
        out, err, code = await bluegreen("sync", "conflicts", "--json", self.target)
        [kept] = json.loads(out)
        self.assertEqual((kept["kind"], kept["key"]), (CHANGED_ON_BOTH, ["2"]))
        self.assertEqual(kept["target"]["text"], "'blue'")
        out, err, code = await bluegreen("sync", "conflicts", self.source)
        self.assertEqual((code, out), (0, f"{self.source}: no conflicts kept\n"))
        missing = os.path.join(self.dir, "typo.db")
        out, err, code = await bluegreen("sync", "conflicts", missing)
        self.assertEqual(code, 1)
        self.assertIn(f"database {missing} does not exist", err)
        self.assertFalse(os.path.exists(missing))

    async def test_usage(self) -> None:
        """
        Bad values and misplaced options are usage errors (exit 2) that say
        what is wrong.
        """
        from .test_cli_admin import bluegreen

        cases = [
            (
                (
                    "--from",
                    "a",
                    "--to",
                    "b",
                    "--strategy",
                    "migrate",
                    "--on-conflict",
                    "newest-ish",
                ),
                "--on-conflict 'newest-ish': expected keep-target or take-source "
                "or newest",
            ),
            (
                (
                    "--from",
                    "a",
                    "--to",
                    "b",
                    "--strategy",
                    "copy",
                    "--on-conflict",
                    "take-source",
                ),
                "--on-conflict is for migrate only",
            ),
            (("uninstall",), "uninstall takes one database"),
            (("conflicts", "a", "b"), "conflicts takes one database"),
            (("conflicts", "host:relative"), "must be absolute"),
            (
                ("uninstall", "a", "--dry-run"),
                "--dry-run and --on-conflict do not apply",
            ),
            (("conflicts", "a", "--from", "b"), "--from does not apply"),
        ]
        for argv, message in cases:
            _, err, code = await bluegreen("sync", *argv)
            self.assertEqual(code, 2, argv)
            self.assertIn(message, err)

    async def test_copyThenMigrate(self) -> None:
        """
        A target made by C{copy} becomes a database of its own (origin id,
        positions): the next C{migrate} both ways applies changes, updates
        included.
        """
        app(self.source, WORKSHOP)
        app(self.target, WORKSHOP)
        await self.syncer.sync(self.source, self.target, "migrate")
        os.remove(self.target)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(self.target + suffix):
                os.remove(self.target + suffix)
        copied = await self.syncer.sync(self.source, self.target, "copy")
        self.assertTrue(copied.complete, copied.summary())
        app(self.source, "INSERT INTO votes VALUES (1, 1);")
        app(self.target, "INSERT INTO votes VALUES (2, 2);")
        app(self.target, "UPDATE facts SET text = 'on the copy' WHERE id = 1;")
        report = await self.syncer.sync(self.source, self.target, "migrate")
        self.assertEqual((report.method, report.changes), ("changes", 1))
        back = await self.syncer.sync(self.target, self.source, "migrate")
        self.assertTrue(back.complete, back.summary())
        self.assertEqual((back.method, back.changes), ("changes", 2))
        self.assertEqual(votes(self.source), votes(self.target))
        self.assertEqual(content(self.source), content(self.target))

    async def test_sameOrigin(self) -> None:
        """
        A file copied by hand (same origin id on both sides) gets an origin
        of its own at the next sync, which says so.
        """
        app(self.source, WORKSHOP)
        app(self.target, WORKSHOP)
        await self.syncer.sync(self.source, self.target, "migrate")
        os.remove(self.target)
        shutil.copy(self.source, self.target)
        report = await self.syncer.sync(self.source, self.target, "migrate")
        self.assertIn("got an origin id of its own", " ".join(report.notes))
        self.assertTrue(report.complete, report.summary())


class CaptureTests(SyncTestsMixin, TestCase):
    """
    Installing, refreshing and removing the capture.
    """

    timeout = 2 * PATIENCE

    async def test_installAndUninstall(self) -> None:
        """
        The capture logs the app's writes with origin, sequence and old and
        new values (BLOB and NULL exact); C{bluegreen sync uninstall} takes
        everything away.
        """
        app(self.source, WORKSHOP)
        capture = Capture(self.syncer.hosts)
        where = Location.local(self.source)
        state, done = await capture.ensure(where)
        self.assertEqual(done, "installed")
        self.assertEqual((await capture.ensure(where))[1], None)
        app(
            self.source,
            "INSERT INTO facts(text, photo) VALUES ('it''s', x'00ff');"
            "UPDATE votes SET votes = 1; DELETE FROM cats;",
        )
        log = rows(
            self.source, "SELECT seq, origin, tbl, op, old, new FROM _bluegreen_log"
        )
        self.assertEqual(
            [
                (s, o, t, op, old and json.loads(old), new and json.loads(new))
                for s, o, t, op, old, new in log
            ],
            [
                (
                    1,
                    state.origin,
                    "facts",
                    "I",
                    None,
                    {"id": "3", "text": "'it''s'", "photo": "X'00FF'", "score": "NULL"},
                ),
                (2, state.origin, "cats", "D", {"img": "'tom.png'"}, None),
            ],
        )
        from .test_cli_admin import bluegreen

        out, err, code = await bluegreen("sync", "uninstall", self.source)
        self.assertEqual((code, err), (0, ""), out)
        self.assertEqual(
            rows(
                self.source,
                "SELECT name FROM sqlite_schema WHERE name LIKE '%bluegreen%'",
            ),
            [],
        )
        out, err, code = await bluegreen("sync", "uninstall", self.source)
        self.assertEqual(code, 0)
        self.assertIn("nothing to remove", out)


class ParseTests(SynchronousTestCase):
    """
    Log rows are checked before they become SQL.
    """

    def test_badLiteral(self) -> None:
        """
        A value that is not a C{quote()} literal is refused.
        """
        row = {
            "seq": 1,
            "tbl": "t",
            "op": "I",
            "old": None,
            "at": 0,
            "new": json.dumps({"a": "1); DROP TABLE t; --"}),
        }
        self.assertRaises(BadChange, parseChanges, [row])

    def test_literals(self) -> None:
        """
        Every kind of C{quote()} output is taken.
        """
        new = {"a": "NULL", "b": "-1.5e+300", "c": "'x''y'", "d": "X'00FF'", "e": "12"}
        [change] = parseChanges(
            [
                {
                    "seq": 1,
                    "tbl": "t",
                    "op": "I",
                    "old": None,
                    "new": json.dumps(new),
                    "at": 1,
                }
            ]
        )
        self.assertEqual(change.new, new)

    def test_policy(self) -> None:
        """
        An unknown conflict policy is refused.
        """
        self.assertRaises(ValueError, Script, {}, "o", "r", "newest-ish")


class RemoteExactTests(RemoteTestCase):
    """
    The exact sync between a local and a remote database (over ssh).
    """

    async def test_bothWays(self) -> None:
        """
        Identical rows, updates and deletes travel both ways between a local
        and a remote database; every C{sqlite3} on the remote side runs
        through ssh; C{bluegreen sync uninstall} works on the remote one.
        """
        local = os.path.join(self.local, "green.db")
        remote = self.at("blue.db")
        app(local, WORKSHOP)
        app(remote.path, WORKSHOP)
        syncer = self.syncer()
        for a, b in ((local, remote), (remote, local)):
            first = await syncer.sync(a, b, "migrate")
            self.assertEqual(first.method, "seeded", first.summary())
        app(local, "INSERT INTO votes VALUES (5, 1);" * 3 + "DELETE FROM cats;")
        app(remote.path, "INSERT INTO votes VALUES (5, 1);" * 2)
        app(remote.path, "UPDATE facts SET text = 'remote' WHERE id = 1;")
        there = await syncer.sync(local, remote, "migrate")
        back = await syncer.sync(remote, local, "migrate")
        self.assertEqual((there.changes, back.changes), (4, 3), back.summary())
        self.assertTrue(there.complete and back.complete)
        self.assertEqual(content(local), content(remote.path))
        self.assertEqual(votes(local), [(5, 1, 5)])
        self.assertTrue(self.usedSSH())
        self.assertNoLocalSqliteOnRemote()
        removed = await Capture(syncer.hosts).uninstall(remote)
        self.assertTrue(removed)
        self.assertEqual(
            rows(
                remote.path,
                "SELECT name FROM sqlite_schema WHERE name LIKE '%bluegreen%'",
            ),
            [],
        )
