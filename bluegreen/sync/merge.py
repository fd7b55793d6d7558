# -*- test-case-name: tests.test_sync,tests.test_sync_more -*-
"""
The merge at the heart of C{migrate} (and of C{copy}'s check that the
target took no writes): with the staged snapshot attached read-only as
C{g}, in one C{BEGIN IMMEDIATE} transaction on the target (a live app's
writers wait on their busy timeout), insert the rows the target lacks,
table by table, parents first.  Rows are matched by primary key (the rowid
alias, a composite key, a WITHOUT ROWID key); tables without a key are
compared as multisets over their columns, duplicates counted.  Conflicts
are reported, never dropped (the kinds are in L{bluegreen.sync.report}).

The whole merge is one C{sqlite3} child running one script, so a target
whose app keeps its write lock busy is retried (L{Merge.lockAttempts}
times, each waiting C{sqlite3}'s C{.timeout}): a failed attempt changed
nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from twisted.logger import Logger

from bluegreen.sync.errors import SyncError
from bluegreen.sync.hosts import Hosts, decodeArrays
from bluegreen.sync.locations import Location
from bluegreen.sync.process import ProcessFailed, ProcessResult
from bluegreen.sync.report import (
    COLUMN_ONLY_ON_SOURCE,
    COLUMN_ONLY_ON_TARGET,
    KEY_MISMATCH,
    TABLE_ONLY_ON_SOURCE,
    TABLE_ONLY_ON_TARGET,
    Conflict,
    Outcome,
)
from bluegreen.sync.schema import Table
from bluegreen.sync.sql import ident, keyJSON, literal, rowJSON, sameKey

#: How many times a merge that found the target locked is run: each attempt
#: waits C{sqlite3}'s C{.timeout} for the lock.
LOCK_ATTEMPTS = 6

#: What C{sqlite3} says when its busy timeout ran out (C{SQLITE_BUSY}).
_BUSY = b"database is locked"

_log = Logger()


def isBusy(error: ProcessFailed) -> bool:
    """
    @param error: How a C{sqlite3} child failed.
    @return: Whether it failed because another connection held the lock
        for longer than its busy timeout.
    """
    result = error.result
    return result.exitCode == 1 and _BUSY in result.stderr


async def runLocked(
    hosts: Hosts,
    target: Location,
    script: str,
    attempts: int,
    what: str,
    *options: str,
) -> ProcessResult:
    """
    Run one transaction's script on C{target}, again while it is locked.

    @param hosts: Runs C{sqlite3}.
    @param target: The database.
    @param script: The script (one transaction).
    @param attempts: How many times it is tried (each waits C{sqlite3}'s
        C{.timeout}).
    @param what: What it is, for the messages (C{the merge}).
    @param options: More C{sqlite3} options.
    @return: C{sqlite3}'s result.
    @raise SyncError: If the target stayed locked through every attempt.
    @raise ProcessFailed: If C{sqlite3} failed otherwise.
    """
    attempts = max(1, attempts)
    failure: ProcessFailed | None = None
    for attempt in range(1, attempts + 1):
        try:
            return await hosts.sqlite(target, script, *options)
        except ProcessFailed as e:
            if not isBusy(e):
                raise
            # An app committing back to back can win the lock at every
            # poll of sqlite3's busy handler; the transaction rolled
            # back, so running it again is safe.
            _log.warn(
                "sync: {target} stayed locked (attempt {attempt} of "
                "{attempts}): {error}",
                target=str(target),
                attempt=attempt,
                attempts=attempts,
                error=str(e),
            )
            failure = e
    raise SyncError(
        f"{target} stayed locked through {attempts} attempts "
        f"of {what} (is a writer holding it?): {failure}"
    )


class Merge:
    """
    One merge of the attached snapshot into the target: what it copied and
    found.

    @ivar hosts: Runs C{sqlite3}.
    @ivar target: The target database.
    @ivar outcome: Where the counts and conflicts go.
    @ivar lockAttempts: How many times the merge is tried while the target
        is locked.
    """

    def __init__(
        self,
        hosts: Hosts,
        target: Location,
        attach: str,
        outcome: Outcome,
        lockAttempts: int = LOCK_ATTEMPTS,
        before: Sequence[str] = (),
        after: Sequence[str] = (),
    ) -> None:
        """
        @param hosts: Runs C{sqlite3}.
        @param target: The target database.
        @param attach: The SQL that attaches the snapshot as C{g}.
        @param outcome: Where the counts and conflicts go (those found
            before a failure stay there).
        @param lockAttempts: See L{lockAttempts}.
        @param before: Statements run first in the merge's transaction
            (the exact sync's seeding notes where the change log ends).
        @param after: Statements run last in it, before the report (the
            seeding's position); the report is in C{temp._bg_report}.
        """
        self.hosts = hosts
        self.target = target
        self._attach = attach
        self.outcome = outcome
        self.lockAttempts = lockAttempts
        self._before = list(before)
        self._after = list(after)
        self._targetTables: dict[str, Table] = {}

    async def run(self, apply: bool) -> None:
        """
        Insert what the target lacks (or, unless C{apply}, find out what
        that is and roll back), recording conflicts and counts.

        @param apply: Commit the inserts (else roll them back).
        @raise SyncError: If the target stayed locked through every attempt,
            or C{sqlite3} printed no report.
        @raise ProcessFailed: If C{sqlite3} failed otherwise.
        """
        sourceTables = await self.hosts.tables(self.target, "g", self._attach)
        targetTables = await self.hosts.tables(self.target)
        self._targetTables = targetTables
        script = [
            self._attach,
            "PRAGMA foreign_keys = OFF;",
            "BEGIN IMMEDIATE;",
            "CREATE TEMP TABLE _bg_report(id INTEGER PRIMARY KEY, tbl, kind, "
            "key, source, target, n, detail);",
            "CREATE TEMP TABLE _bg_fk0 AS SELECT count(*) AS n "
            "FROM pragma_foreign_key_check(NULL, 'main');",
            *self._before,
        ]
        hasSequence = await self._hasSequence()
        for name in sorted(set(sourceTables) - set(targetTables)):
            self.outcome.conflicts.append(
                Conflict(name, TABLE_ONLY_ON_SOURCE, detail="its rows are not copied")
            )
        for name in sorted(set(targetTables) - set(sourceTables)):
            self.outcome.conflicts.append(
                Conflict(name, TABLE_ONLY_ON_TARGET, detail="left as it is")
            )
        done: set[str] = set()
        for index, name in enumerate(parentsFirst(sourceTables, targetTables)):
            script.extend(
                self._tableSQL(
                    index,
                    sourceTables[name],
                    targetTables[name],
                    done,
                    hasSequence,
                )
            )
            done.add(name)
        script.append(
            "CREATE TEMP TABLE _bg_guard(ok, CONSTRAINT "
            "no_new_foreign_key_orphans CHECK (ok));"
        )
        script.append(
            "INSERT INTO _bg_guard SELECT (SELECT count(*) FROM "
            "pragma_foreign_key_check(NULL, 'main')) <= (SELECT n FROM _bg_fk0);"
        )
        script.extend(self._after)
        script.append(
            "SELECT tbl, kind, key, source, target, n, detail "
            "FROM _bg_report ORDER BY id;"
        )
        script.append("COMMIT;" if apply else "ROLLBACK;")
        result = await self._execute("\n".join(script) + "\n")
        arrays = decodeArrays(result.stdout.decode("utf-8"))
        if not arrays:
            # Every merged table reports its counts: no rows means the
            # script did not run to its end, whatever the exit code said.
            err = result.stderr.decode("utf-8", "replace").strip()
            raise SyncError(
                f"the merge into {self.target} printed no report"
                + (f": {err[:1000]}" if err else "")
            )
        for row in arrays[0]:
            kind = row["kind"]
            if kind == "inserted":
                self.outcome.copied[row["tbl"]] = row["n"]
            elif kind == "target_only":
                self.outcome.targetOnly[row["tbl"]] = row["n"] or 0
            else:
                self.outcome.conflicts.append(
                    Conflict(
                        row["tbl"],
                        kind,
                        tuple(json.loads(row["key"])) if row["key"] else None,
                        json.loads(row["source"]) if row["source"] else None,
                        json.loads(row["target"]) if row["target"] else None,
                        row["detail"] or "",
                    )
                )

    async def _execute(self, script: str) -> ProcessResult:
        """
        Run the merge script, again while the target is locked.

        @param script: The script (one transaction).
        @return: C{sqlite3}'s result.
        @raise SyncError: If the target stayed locked through
            L{lockAttempts} attempts.
        """
        return await runLocked(
            self.hosts, self.target, script, self.lockAttempts, "the merge", "-json"
        )

    async def _hasSequence(self) -> bool:
        """
        @return: Whether the target has a C{sqlite_sequence} table.
        """
        rows = await self.hosts.query(
            self.target,
            "SELECT count(*) AS n FROM sqlite_schema WHERE name = 'sqlite_sequence';",
        )
        return bool(rows[0][0]["n"])

    def _tableSQL(
        self,
        index: int,
        source: Table,
        target: Table,
        done: set[str],
        hasSequence: bool,
    ) -> list[str]:
        """
        @return: The statements that merge one table.
        """
        name = source.name
        T = ident(name)
        sourceCols = [c.name for c in source.columns]
        targetCols = {c.name: c for c in target.columns}
        common = [c for c in sourceCols if c in targetCols]
        for column in sourceCols:
            if column not in targetCols:
                self.outcome.conflicts.append(
                    Conflict(
                        name,
                        COLUMN_ONLY_ON_SOURCE,
                        detail=f"column {column} is not copied",
                    )
                )
        blocking = []
        for column, info in targetCols.items():
            if column in sourceCols:
                continue
            block = info.notNull and info.default is None
            if block:
                blocking.append(column)
            self.outcome.conflicts.append(
                Conflict(
                    name,
                    COLUMN_ONLY_ON_TARGET,
                    detail=f"column {column}"
                    + (
                        " is NOT NULL without a default: table not merged"
                        if block
                        else " gets its default"
                    ),
                )
            )
        if blocking:
            return []
        if source.key != target.key:
            self.outcome.conflicts.append(
                Conflict(
                    name,
                    KEY_MISMATCH,
                    detail=f"key ({', '.join(source.key)}) on the source, "
                    f"({', '.join(target.key)}) on the target: table not merged",
                )
            )
            return []
        cols = ", ".join(ident(c) for c in common)
        sCols = ", ".join(f"s.{ident(c)}" for c in common)
        key = list(target.key)
        report = "INSERT INTO _bg_report(tbl, kind, key, source, target, n, detail) "
        lit = literal(name)
        out: list[str] = []
        cand = f"_bg_c{index}"
        if key:
            keyCols = ", ".join(f"s.{ident(k)} AS k{i}" for i, k in enumerate(key))
            inCand = " AND ".join(f"s.{ident(k)} IS c.k{i}" for i, k in enumerate(key))
            candFrom = f"{cand} c JOIN g.{T} s ON {inCand}"
            out.append(
                f"CREATE TEMP TABLE {cand} AS SELECT {keyCols} FROM g.{T} s "
                f"WHERE NOT EXISTS (SELECT 1 FROM main.{T} m "
                f"WHERE {sameKey('m', 's', key)});"
            )
            differ = " AND ".join(f"s.{ident(c)} IS m.{ident(c)}" for c in common)
            out.append(
                f"{report}SELECT {lit}, 'key_conflict', {keyJSON('s', key)}, "
                f"{rowJSON('s', common)}, {rowJSON('m', common)}, NULL, "
                f"'same key, different content' FROM g.{T} s JOIN main.{T} m "
                f"ON {sameKey('m', 's', key)} WHERE NOT ({differ});"
            )
            out.append(
                f"{report}SELECT {lit}, 'target_only', NULL, NULL, NULL, count(*), "
                f"NULL FROM main.{T} m WHERE NOT EXISTS (SELECT 1 FROM g.{T} s "
                f"WHERE {sameKey('s', 'm', key)});"
            )
            keyOut = keyJSON("s", key)
            delete = (
                f"DELETE FROM {cand} WHERE EXISTS (SELECT 1 FROM g.{T} s WHERE "
                + " AND ".join(
                    f"s.{ident(k)} IS {cand}.k{i}" for i, k in enumerate(key)
                )
                + " AND ({cond}));"
            )
        else:
            groupCols = ", ".join(ident(c) for c in common)
            join = " AND ".join(f"gs.{ident(c)} IS ms.{ident(c)}" for c in common)
            gs = (
                f"(SELECT min(rowid) AS _bg_r, count(*) AS _bg_n, {groupCols} "
                f"FROM g.{T} GROUP BY {groupCols})"
            )
            ms = (
                f"(SELECT count(*) AS _bg_n, {groupCols} FROM main.{T} "
                f"GROUP BY {groupCols})"
            )
            out.append(
                f"CREATE TEMP TABLE {cand} AS SELECT gs._bg_r AS _bg_r, "
                f"gs._bg_n - coalesce(ms._bg_n, 0) AS _bg_n FROM {gs} gs "
                f"LEFT JOIN {ms} ms ON {join} WHERE gs._bg_n > coalesce(ms._bg_n, 0);"
            )
            out.append(
                f"{report}SELECT {lit}, 'target_only', NULL, NULL, NULL, "
                f"coalesce(sum(ms._bg_n - coalesce(gs._bg_n, 0)), 0), NULL "
                f"FROM {ms} ms LEFT JOIN {gs} gs ON {join} "
                f"WHERE ms._bg_n > coalesce(gs._bg_n, 0);"
            )
            candFrom = f"{cand} c JOIN g.{T} s ON s.rowid = c._bg_r"
            keyOut = "NULL"
            delete = (
                f"DELETE FROM {cand} WHERE EXISTS (SELECT 1 FROM g.{T} s WHERE "
                f"s.rowid = {cand}._bg_r AND ({{cond}}));"
            )
        for unique in target.uniques:
            if not all(c in common for c in unique):
                continue
            cond = (
                f"EXISTS (SELECT 1 FROM main.{T} m WHERE "
                + " AND ".join(f"m.{ident(c)} = s.{ident(c)}" for c in unique)
                + ")"
            )
            match = " AND ".join(f"m.{ident(c)} = s.{ident(c)}" for c in unique)
            detail = literal(
                f"UNIQUE ({', '.join(unique)}) already taken on the target"
            )
            out.append(
                f"{report}SELECT {lit}, 'unique_conflict', {keyOut}, "
                f"{rowJSON('s', common)}, {rowJSON('m', common)}, NULL, {detail} "
                f"FROM {candFrom} JOIN main.{T} m ON {match};"
            )
            out.append(delete.format(cond=cond))
        for fk in target.foreignKeys:
            if not all(c in common for c in fk.columns):
                continue
            parentColumns: list[str] = []
            for i, to in enumerate(fk.parentColumns):
                if to is None:
                    parentKey = self._parentKey(fk.parent, target, i)
                    if parentKey is None:
                        break
                    to = parentKey
                parentColumns.append(to)
            else:
                P = ident(fk.parent)
                match = " AND ".join(
                    f"p.{ident(pc)} = s.{ident(cc)}"
                    for pc, cc in zip(parentColumns, fk.columns, strict=True)
                )
                notNull = " AND ".join(f"s.{ident(c)} IS NOT NULL" for c in fk.columns)
                cond = (
                    f"{notNull} AND NOT EXISTS (SELECT 1 FROM main.{P} p WHERE {match})"
                )
                if fk.parent == name or fk.parent not in done:
                    cond += f" AND NOT EXISTS (SELECT 1 FROM g.{P} p WHERE {match})"
                detail = literal(
                    f"REFERENCES {fk.parent}({', '.join(parentColumns)}): "
                    "no such parent row"
                )
                out.append(
                    f"{report}SELECT {lit}, 'fk_orphan', {keyOut}, "
                    f"{rowJSON('s', common)}, NULL, NULL, {detail} "
                    f"FROM {candFrom} WHERE {cond};"
                )
                out.append(delete.format(cond=cond))
        if key:
            out.append(
                f"{report}SELECT {lit}, 'inserted', NULL, NULL, NULL, count(*), NULL "
                f"FROM {cand};"
            )
            out.append(f"INSERT INTO main.{T}({cols}) SELECT {sCols} FROM {candFrom};")
            if target.rowidAlias and hasSequence:
                k = ident(key[0])
                out.append(
                    f"UPDATE main.sqlite_sequence SET seq = (SELECT max({k}) FROM "
                    f"main.{T}) WHERE name = {lit} AND seq < (SELECT max({k}) "
                    f"FROM main.{T});"
                )
        else:
            out.append(
                f"{report}SELECT {lit}, 'inserted', NULL, NULL, NULL, "
                f"coalesce(sum(_bg_n), 0), NULL FROM {cand};"
            )
            out.append(
                f"WITH RECURSIVE _bg_i(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                f"FROM _bg_i WHERE i < (SELECT max(_bg_n) FROM {cand})) "
                f"INSERT INTO main.{T}({cols}) SELECT {sCols} FROM {candFrom} "
                f"JOIN _bg_i ON _bg_i.i <= c._bg_n;"
            )
        return out

    def _parentKey(self, parent: str, child: Table, position: int) -> str | None:
        """
        The column a foreign key naming no parent columns refers to.
        """
        table = self._targetTables.get(parent)
        if table is None or position >= len(table.key):
            return None
        return table.key[position]


def parentsFirst(source: dict[str, Table], target: dict[str, Table]) -> list[str]:
    """
    @param source: The source's tables.
    @param target: The target's tables.
    @return: The tables both sides have, parents before children (by the
        target's foreign keys; cycles broken by name).
    """
    names = sorted(set(source) & set(target))
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order or name in visiting:
            return
        visiting.add(name)
        for fk in target[name].foreignKeys:
            if fk.parent in names and fk.parent != name:
                visit(fk.parent)
        visiting.discard(name)
        order.append(name)

    for name in names:
        visit(name)
    return order
