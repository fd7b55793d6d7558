# -*- test-case-name: tests.test_sync_capture -*-
"""
Applying another database's captured changes (L{bluegreen.sync.capture})
exactly, as one SQL script run by one C{sqlite3} child in one C{BEGIN
IMMEDIATE} transaction on the target:

  - the log rows the target's capture triggers make for what the script
    writes are removed before C{COMMIT} (no echo: see
    L{bluegreen.sync.capture});
  - a guard checks that the target's position for the source is still the
    one read before (another sync did not apply the same changes);
  - the changes, in order: inserts; updates and deletes by primary key, or
    for a table without one by the old row's values, one matching row at a
    time (C{rowid = (SELECT rowid ... LIMIT 1)}, C{IS} so that NULLs
    match), so a multiset keeps as many identical rows as were written;
  - the position, in the same transaction (each change applies once).

A change that meets a different row than the source had (the same key
changed on both sides, the same new key inserted on both sides, the row
gone) is a conflict: by default (C{keep-target}) the target keeps its row
and the source's version goes into C{_bluegreen_conflicts} with the
target's; with C{take-source} the source's version is written and the
target's is kept there; with C{newest}, whichever was changed last wins (the
source's change time against the target's last logged change of that row;
a row the target's log does not mention counts as older), the other is kept.
Nothing is lost either way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from attrs import field, frozen

from bluegreen.sync.capture import (
    APPLIED,
    CONFLICTS,
    LOG,
    NO_ECHO_AFTER,
    NO_ECHO_BEFORE,
    NOW_SQL,
)
from bluegreen.sync.report import (
    KEY_CONFLICT,
    TABLE_ONLY_ON_SOURCE,
    UNIQUE_CONFLICT,
)
from bluegreen.sync.schema import Table
from bluegreen.sync.sql import ident, literal, rowJSON

#: How many inserts into one table one statement applies.
BATCH = 500

#: The detail of a key conflict of two inserts.
INSERTED_ON_BOTH = "same key inserted on both sides, different content"

#: The detail of a UNIQUE conflict.
UNIQUE_TAKEN = "a UNIQUE value is taken by another row on the target"

#: The conflict policies of C{--on-conflict}.
POLICIES = ("keep-target", "take-source", "newest")

#: A change met a row the target changed (or deleted) since.
CHANGED_ON_BOTH = "changed_on_both"

#: An update of a row (of a table without a key) the target does not hold.
ROW_MISSING = "row_missing"

#: What a C{quote()} literal looks like (anything else in a log is refused,
#: so the log's text never becomes SQL of its own).
_LITERAL = re.compile(
    r"NULL|-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|-?Inf|"
    r"'(?:[^']|'')*'|X'(?:[0-9A-Fa-f]{2})*'",
    re.DOTALL,
)


@frozen
class Change:
    """
    One captured change.

    @ivar seq: Its sequence number in the source's log.
    @ivar table: The table.
    @ivar op: C{I}, C{U} or C{D}.
    @ivar old: The row before (column -> SQL literal), or L{None}.
    @ivar new: The row after, or L{None}.
    @ivar at: When it was made (POSIX time).
    """

    seq: int
    table: str
    op: str
    old: Mapping[str, str] | None = field(hash=False)
    new: Mapping[str, str] | None = field(hash=False)
    at: float = 0.0


class BadChange(ValueError):
    """
    A log row that is not a change the capture wrote.
    """


def _row(text: str | None, seq: int) -> dict[str, str] | None:
    """
    @return: A log row's C{old} or C{new}, every value checked.
    @raise BadChange: If it is not an object of SQL literals.
    """
    if text is None:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise BadChange(f"change {seq}: not a JSON object")
    for name, lit in value.items():
        if not isinstance(lit, str) or not _LITERAL.fullmatch(lit):
            raise BadChange(f"change {seq}: column {name!r} is not an SQL literal")
    return value


def parseChanges(rows: Iterable[Mapping[str, Any]]) -> list[Change]:
    """
    @param rows: Log rows as C{sqlite3 -json} gives them.
    @return: The changes.
    @raise BadChange: For a row the capture could not have written.
    """
    out = []
    for r in rows:
        seq = int(r["seq"])
        op = r["op"]
        if op not in ("I", "U", "D"):
            raise BadChange(f"change {seq}: unknown operation {op!r}")
        old, new = _row(r["old"], seq), _row(r["new"], seq)
        if (op != "I" and old is None) or (op != "D" and new is None):
            raise BadChange(f"change {seq}: {op} without its row")
        out.append(Change(seq, str(r["tbl"]), op, old, new, float(r["at"] or 0)))
    return out


def _match(row: Mapping[str, str], columns: Iterable[str], alias: str = "") -> str:
    """
    @return: C{alias.c IS value AND ...} over C{columns} (C{1} if none).
    """
    return " AND ".join(f"{alias}{ident(c)} IS {row[c]}" for c in columns) or "1"


class Script:
    """
    Builds the apply script for one batch of changes.

    @ivar tables: The target's tables.
    @ivar origin: The source's origin id.
    @ivar run: This run's id (its conflicts carry it).
    @ivar policy: One of L{POLICIES}.
    @ivar counts: Changes applied (or met as conflicts) by table.
    @ivar skippedColumns: Columns the target lacks, by table.
    """

    def __init__(
        self,
        tables: Mapping[str, Table],
        origin: str,
        run: str,
        policy: str = "keep-target",
    ) -> None:
        """
        @param tables: The target's tables.
        @param origin: The source's origin id.
        @param run: This run's id.
        @param policy: One of L{POLICIES}.
        @raise ValueError: For an unknown policy.
        """
        if policy not in POLICIES:
            raise ValueError(f"unknown conflict policy {policy!r}")
        self.tables = tables
        self.origin = origin
        self.run = run
        self.policy = policy
        self.counts: dict[str, int] = {}
        self.skippedColumns: dict[str, set[str]] = {}
        self._out: list[str] = []
        self._batch: list[Change] = []
        self._shape: tuple[str, tuple[str, ...], bool] | None = None

    def _conflict(
        self,
        change: Change,
        kind: str,
        key: str,
        target: str,
        detail: str,
        where: str,
        newer: str = "1",
    ) -> None:
        """
        Keep the source's version of C{change} (and the target's row) in the
        conflicts table when C{where} holds.

        @param newer: SQL: whether the source's change is newer than the
            target's row (for C{newest}).
        """
        source = change.new if change.new is not None else change.old
        resolution = {
            "take-source": "'took source'",
            "keep-target": "'kept target'",
        }.get(
            self.policy,
            f"CASE WHEN {newer} THEN 'took source (newer)' "
            "ELSE 'kept target (newer)' END",
        )
        if self.policy != "keep-target":
            self._out.append("DELETE FROM temp._bg_hit;")
        self._out.append(
            f"INSERT INTO {ident(CONFLICTS)}(at, run, origin, seq, tbl, op, kind, "
            f"key, source, target, detail, resolution) SELECT {NOW_SQL}, "
            f"{literal(self.run)}, {literal(self.origin)}, {change.seq}, "
            f"{literal(change.table)}, {literal(change.op)}, {literal(kind)}, {key}, "
            f"{literal(json.dumps(source))}, {target}, {literal(detail)}, "
            f"{resolution} WHERE {where};"
        )
        if self.policy != "keep-target":
            # changes(): rows the conflict's INSERT wrote, 1 if it was one.
            hit = (
                "changes()"
                if self.policy == "take-source"
                else f"changes() AND {newer}"
            )
            self._out.append(f"INSERT INTO temp._bg_hit SELECT {hit};")

    def _newer(self, change: Change, row: Mapping[str, str], key: list[str]) -> str:
        """
        @return: SQL: whether C{change} is newer than the target's last
            logged change of the row with C{row}'s key.
        """
        match = " AND ".join(
            f"json_extract(coalesce(new, old), {literal('$.' + json.dumps(k))}) = "
            f"{literal(row[k])}"
            for k in key
        )
        return (
            f"{change.at!r} > coalesce((SELECT max(at) FROM main.{ident(LOG)} "
            f"WHERE tbl = {literal(change.table)} AND {match}), 0)"
        )

    def add(self, change: Change) -> None:
        """
        Add the statements applying one change.

        @param change: The change.
        """
        table = self.tables.get(change.table)
        if table is None:
            self._flush()
            self._conflict(
                change,
                TABLE_ONLY_ON_SOURCE,
                "NULL",
                "NULL",
                "no such table on the target",
                "1",
            )
            return
        self.counts[change.table] = self.counts.get(change.table, 0) + 1
        mine = {c.name for c in table.columns}
        row = change.new if change.new is not None else change.old
        assert row is not None
        missing = set(row) - mine
        if missing:
            self.skippedColumns.setdefault(change.table, set()).update(missing)
        cols = [c.name for c in table.columns if c.name in row]
        key = list(table.key)
        keyed = bool(key) and all(k in row for k in key)
        if change.op == "I" and self.policy == "keep-target":
            shape = (table.name, tuple(cols), keyed)
            if shape != self._shape or len(self._batch) >= BATCH:
                self._flush()
                self._shape = shape
            self._batch.append(change)
            return
        self._flush()
        self._one(change, table, cols, keyed)

    def _one(self, change: Change, table: Table, cols: list[str], keyed: bool) -> None:
        """
        The statements applying one change.
        """
        T = ident(table.name)
        if keyed:
            self._keyed(change, table, T, list(table.key), cols)
        else:
            self._keyless(change, table, T, cols)

    def _flush(self) -> None:
        """
        The statements applying the inserts gathered into one table (one
        multi-row statement, or two with a key: the conflicts, then the
        rows whose key is free).
        """
        batch, shape = self._batch, self._shape
        self._batch, self._shape = [], None
        if not batch or shape is None:
            return
        name, columns, keyed = shape
        table = self.tables[name]
        cols = list(columns)
        key = list(table.key)
        exclude = (
            " AND NOT ("
            + " AND ".join(f"u.{ident(k)} IS v.{ident(k)}" for k in key)
            + ")"
            if keyed
            else ""
        )
        clash = self._clash(table, lambda c: f"v.{ident(c)}", cols, exclude)
        if len(batch) == 1 or (clash is not None and not keyed):
            for change in batch:
                self._one(change, table, cols, keyed)
            return
        T = ident(name)
        names = ", ".join(ident(c) for c in cols)
        values = ",\n".join(
            "(" + ", ".join([str(c.seq), *(c.new[k] for k in cols if c.new)]) + ")"
            for c in batch
        )
        if not keyed:
            self._out.append(
                f"INSERT INTO {T}({names}) SELECT {names} FROM (WITH v(_bg_seq, "
                f"{names}) AS (VALUES {values}) SELECT * FROM v ORDER BY _bg_seq);"
            )
            return
        everything = [c.name for c in table.columns]
        self._out.append(
            f"CREATE TEMP TABLE _bg_v AS WITH v(_bg_seq, {names}) AS "
            f"(VALUES {values}) SELECT * FROM v;"
        )
        at = " AND ".join(f"m.{ident(k)} IS v.{ident(k)}" for k in key)
        same = " AND ".join(f"m.{ident(c)} IS v.{ident(c)}" for c in cols) or "1"
        keyText = "json_array(" + ", ".join(f"quote(v.{ident(k)})" for k in key) + ")"
        free = ""
        if clash is not None:
            free = f" AND NOT ({clash})"
            self._out.append(
                f"INSERT INTO {ident(CONFLICTS)}(at, run, origin, seq, tbl, op, kind, "
                f"key, source, target, detail, resolution) SELECT {NOW_SQL}, "
                f"{literal(self.run)}, {literal(self.origin)}, v._bg_seq, "
                f"{literal(name)}, 'I', {literal(UNIQUE_CONFLICT)}, {keyText}, "
                f"{rowJSON('v', cols)}, NULL, {literal(UNIQUE_TAKEN)}, 'kept target' "
                f"FROM temp._bg_v v WHERE NOT EXISTS (SELECT 1 FROM {T} m WHERE "
                f"{at}) AND ({clash}) ORDER BY v._bg_seq;"
            )
        self._out.append(
            f"INSERT INTO {ident(CONFLICTS)}(at, run, origin, seq, tbl, op, kind, "
            f"key, source, target, detail, resolution) SELECT {NOW_SQL}, "
            f"{literal(self.run)}, {literal(self.origin)}, v._bg_seq, "
            f"{literal(name)}, 'I', {literal(KEY_CONFLICT)}, {keyText}, "
            f"{rowJSON('v', cols)}, {rowJSON('m', everything)}, "
            f"{literal(INSERTED_ON_BOTH)}, 'kept target' FROM temp._bg_v v "
            f"JOIN {T} m ON {at} WHERE NOT ({same}) ORDER BY v._bg_seq;"
        )
        self._out.append(
            f"INSERT INTO {T}({names}) SELECT {names} FROM temp._bg_v v WHERE "
            f"NOT EXISTS (SELECT 1 FROM {T} m WHERE {at}){free} ORDER BY v._bg_seq;"
        )
        self._out.append("DROP TABLE temp._bg_v;")

    def _clash(
        self,
        table: Table,
        value: Callable[[str], str],
        cols: Sequence[str],
        exclude: str = "",
    ) -> str | None:
        """
        @param value: The SQL of the new value of a column.
        @param exclude: More SQL leaving the row itself out (C{AND ...} on
            alias C{u}).
        @return: SQL: whether a UNIQUE index (other than the key) of the
            target already holds the new values in another row; L{None}
            when no index applies.
        """
        parts = []
        for unique in table.uniques:
            if not all(c in cols for c in unique):
                continue
            same = " AND ".join(f"u.{ident(c)} = {value(c)}" for c in unique)
            parts.append(
                f"EXISTS (SELECT 1 FROM {ident(table.name)} u WHERE {same}{exclude})"
            )
        return " OR ".join(parts) or None

    def _set(self, row: Mapping[str, str], cols: Sequence[str]) -> str:
        """
        @return: C{c = v, ...} of C{row}.
        """
        return ", ".join(f"{ident(c)} = {row[c]}" for c in cols)

    def _keyed(
        self, change: Change, table: Table, T: str, key: list[str], cols: list[str]
    ) -> None:
        """
        A change of a table with a primary key: matched by key, and the
        whole row compared to find conflicts.
        """
        everything = [c.name for c in table.columns]
        hit = "(SELECT n FROM temp._bg_hit) = 1"
        take = self.policy != "keep-target"
        if change.op == "I":
            new = change.new
            assert new is not None
            at = _match(new, key)
            keyText = literal(json.dumps([new[k] for k in key]))
            newer = self._newer(change, new, key) if self.policy == "newest" else "1"
            targetRow = (
                f"(SELECT {rowJSON('m', everything)} FROM {T} m "
                f"WHERE {_match(new, key, 'm.')})"
            )
            clash = self._clash(
                table, new.__getitem__, cols, f" AND NOT ({_match(new, key, 'u.')})"
            )
            free = ""
            if clash is not None:
                free = f" AND NOT ({clash})"
                self._conflict(
                    change,
                    UNIQUE_CONFLICT,
                    keyText,
                    "NULL",
                    UNIQUE_TAKEN,
                    f"NOT EXISTS (SELECT 1 FROM {T} WHERE {at}) AND ({clash})",
                    newer=newer,
                )
            self._conflict(
                change,
                KEY_CONFLICT,
                keyText,
                targetRow,
                INSERTED_ON_BOTH,
                f"EXISTS (SELECT 1 FROM {T} WHERE {at} AND NOT ({_match(new, cols)}))",
                newer=newer,
            )
            self._out.append(
                f"INSERT INTO {T}({', '.join(ident(c) for c in cols)}) SELECT "
                f"{', '.join(new[c] for c in cols)} WHERE NOT EXISTS "
                f"(SELECT 1 FROM {T} WHERE {at}){free};"
            )
            if take:
                self._out.append(
                    f"UPDATE {T} SET {self._set(new, cols)} WHERE {at} AND {hit};"
                )
            return
        old = change.old
        assert old is not None
        oldCols = [c for c in cols if c in old]
        at = _match(old, key)
        keyText = literal(json.dumps([old[k] for k in key]))
        newer = self._newer(change, old, key) if self.policy == "newest" else "1"
        targetRow = (
            f"(SELECT {rowJSON('m', everything)} FROM {T} m "
            f"WHERE {_match(old, key, 'm.')})"
        )
        if change.op == "U":
            new = change.new
            assert new is not None
            newAt = _match(new, key) if all(k in new for k in key) else at
            clash = self._clash(
                table, new.__getitem__, cols, f" AND NOT ({_match(old, key, 'u.')})"
            )
            free = ""
            if clash is not None:
                free = f" AND NOT ({clash})"
                self._conflict(
                    change,
                    UNIQUE_CONFLICT,
                    keyText,
                    targetRow,
                    UNIQUE_TAKEN,
                    f"EXISTS (SELECT 1 FROM {T} WHERE {at} AND "
                    f"{_match(old, oldCols)}) AND ({clash})",
                    newer=newer,
                )
            self._conflict(
                change,
                CHANGED_ON_BOTH,
                keyText,
                targetRow,
                "updated on the source; changed or deleted on the target",
                f"NOT EXISTS (SELECT 1 FROM {T} WHERE {at} AND {_match(old, oldCols)}) "
                f"AND NOT EXISTS (SELECT 1 FROM {T} WHERE {newAt} AND "
                f"{_match(new, cols)})",
                newer=newer,
            )
            self._out.append(
                f"UPDATE {T} SET {self._set(new, cols)} WHERE {at} AND "
                f"{_match(old, oldCols)}{free};"
            )
            if take:
                self._out.append(f"DELETE FROM {T} WHERE ({at} OR {newAt}) AND {hit};")
                self._out.append(
                    f"INSERT INTO {T}({', '.join(ident(c) for c in cols)}) SELECT "
                    f"{', '.join(new[c] for c in cols)} WHERE {hit};"
                )
            return
        self._conflict(
            change,
            CHANGED_ON_BOTH,
            keyText,
            targetRow,
            "deleted on the source; changed on the target",
            f"EXISTS (SELECT 1 FROM {T} WHERE {at} AND NOT ({_match(old, oldCols)}))",
            newer=newer,
        )
        self._out.append(f"DELETE FROM {T} WHERE {at} AND {_match(old, oldCols)};")
        if take:
            self._out.append(f"DELETE FROM {T} WHERE {at} AND {hit};")

    def _keyless(self, change: Change, table: Table, T: str, cols: list[str]) -> None:
        """
        A change of a table without a primary key (a multiset): one
        matching row at a time, by all its values.
        """
        if change.op == "I":
            new = change.new
            assert new is not None
            clash = self._clash(table, new.__getitem__, cols)
            free = ""
            if clash is not None:
                free = f" WHERE NOT ({clash})"
                self._conflict(
                    change, UNIQUE_CONFLICT, "NULL", "NULL", UNIQUE_TAKEN, clash
                )
            self._out.append(
                f"INSERT INTO {T}({', '.join(ident(c) for c in cols)}) SELECT "
                f"{', '.join(new[c] for c in cols)}{free};"
            )
            return
        old = change.old
        assert old is not None
        one = (
            f"rowid = (SELECT rowid FROM {T} WHERE "
            f"{_match(old, [c for c in cols if c in old])} LIMIT 1)"
        )
        if change.op == "D":
            # Deleted on both sides (or never there): nothing is lost.
            self._out.append(f"DELETE FROM {T} WHERE {one};")
            return
        new = change.new
        assert new is not None
        self._conflict(
            change,
            ROW_MISSING,
            "NULL",
            "NULL",
            "updated on the source; no row with its old values on the target",
            f"NOT EXISTS (SELECT 1 FROM {T} WHERE "
            f"{_match(old, [c for c in cols if c in old])})",
        )
        self._out.append(f"UPDATE {T} SET {self._set(new, cols)} WHERE {one};")
        if self.policy != "keep-target":
            self._out.append(
                f"INSERT INTO {T}({', '.join(ident(c) for c in cols)}) SELECT "
                f"{', '.join(new[c] for c in cols)} "
                "WHERE (SELECT n FROM temp._bg_hit) = 1;"
            )

    def render(self, expected: int, upTo: int, commit: bool) -> str:
        """
        @param expected: The target's position for the source, as read.
        @param upTo: The last change's sequence number (the new position).
        @param commit: Commit (else roll back: a dry run).
        @return: The whole script: one transaction.
        """
        self._flush()
        head = [
            "PRAGMA foreign_keys = OFF;",
            "BEGIN IMMEDIATE;",
            NO_ECHO_BEFORE,
            "CREATE TEMP TABLE _bg_guard(ok, CONSTRAINT "
            "position_moved_by_another_sync CHECK (ok));",
            f"INSERT INTO temp._bg_guard SELECT coalesce((SELECT seq FROM "
            f"{ident(APPLIED)} WHERE origin = {literal(self.origin)}), -1) = "
            f"{int(expected)};",
            "CREATE TEMP TABLE _bg_hit(n);",
        ]
        tail = [
            f"INSERT INTO {ident(APPLIED)}(origin, seq, at) VALUES "
            f"({literal(self.origin)}, {int(upTo)}, {NOW_SQL}) ON CONFLICT(origin) "
            "DO UPDATE SET seq = excluded.seq, at = excluded.at;",
            NO_ECHO_AFTER,
            "SELECT 'applied' AS done;",
            f"SELECT tbl, kind, op, seq, key, source, target, detail, resolution "
            f"FROM {ident(CONFLICTS)} WHERE run = {literal(self.run)} ORDER BY id;",
            "COMMIT;" if commit else "ROLLBACK;",
        ]
        return "\n".join([*head, *self._out, *tail]) + "\n"
