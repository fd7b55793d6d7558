# -*- test-case-name: tests.test_sync -*-
"""
What one sync did: the L{Conflict}s it could not carry over and its
L{SyncReport}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import Factory, define, field, frozen

KEY_CONFLICT = "key_conflict"
UNIQUE_CONFLICT = "unique_conflict"
FK_ORPHAN = "fk_orphan"
TABLE_ONLY_ON_SOURCE = "table_only_on_source"
TABLE_ONLY_ON_TARGET = "table_only_on_target"
COLUMN_ONLY_ON_SOURCE = "column_only_on_source"
COLUMN_ONLY_ON_TARGET = "column_only_on_target"
KEY_MISMATCH = "key_mismatch"


@frozen
class Conflict:
    """
    Something the sync could not carry over.

    @ivar table: The table.
    @ivar kind: L{KEY_CONFLICT}, L{UNIQUE_CONFLICT}, etc.
    @ivar key: The row's key values (SQL literals), or L{None}.
    @ivar source: The source's row (column -> SQL literal), or L{None}.
    @ivar target: The target's row, or L{None}.
    @ivar detail: More words (the index, the column, the parent).
    """

    table: str
    kind: str
    key: tuple[str, ...] | None = None
    source: dict[str, str] | None = field(default=None, hash=False)
    target: dict[str, str] | None = field(default=None, hash=False)
    detail: str = ""

    def describe(self) -> str:
        """
        @return: One line for the human summary.
        """
        return describeConflict(self.asJSON())

    def asJSON(self) -> dict[str, Any]:
        """
        @return: The conflict as JSON-able values.
        """
        return {
            "table": self.table,
            "kind": self.kind,
            "key": list(self.key) if self.key is not None else None,
            "source": self.source,
            "target": self.target,
            "detail": self.detail,
        }


@frozen
class SyncReport:
    """
    The outcome of one sync.

    @ivar strategy: C{copy} or C{migrate}.
    @ivar source: The source database.
    @ivar target: The target database.
    @ivar dryRun: Whether nothing was to change.
    @ivar copied: Rows copied (or, in a dry run, to be copied) by table.
    @ivar targetOnly: Rows only the target holds, by table (informational
        for C{migrate}; a refusal for C{copy}).
    @ivar conflicts: What could not be carried over.
    @ivar error: Why the sync failed or was refused, or L{None}.
    @ivar backup: Where C{copy} kept the target's old file.
    @ivar seconds: How long it took.
    @ivar method: How C{migrate} did it: C{changes} (the source's captured
        changes applied), C{seeded} (first sync of the pair: a snapshot
        merged) or C{fallback} (the position could not be served: a
        snapshot merged); L{None} for C{copy}.
    @ivar changes: Captured changes applied (C{method} C{changes}).
    @ivar notes: What else happened (capture installed, why a fallback).
    """

    strategy: str
    source: str
    target: str
    dryRun: bool
    copied: dict[str, int] = field(factory=dict, hash=False)
    targetOnly: dict[str, int] = field(factory=dict, hash=False)
    conflicts: tuple[Conflict, ...] = ()
    error: str | None = None
    backup: str | None = None
    seconds: float = 0.0
    method: str | None = None
    changes: int = 0
    notes: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """
        Whether everything was (or would be) copied: no conflict, no error.
        """
        return self.error is None and not self.conflicts

    def asJSON(self) -> dict[str, Any]:
        """
        @return: The report as JSON-able values.
        """
        return {
            "strategy": self.strategy,
            "source": self.source,
            "target": self.target,
            "dry_run": self.dryRun,
            "complete": self.complete,
            "copied": self.copied,
            "rows_copied": sum(self.copied.values()),
            "target_only": self.targetOnly,
            "conflicts": [c.asJSON() for c in self.conflicts],
            "error": self.error,
            "backup": self.backup,
            "seconds": round(self.seconds, 3),
            "method": self.method,
            "changes": self.changes,
            "notes": list(self.notes),
        }

    def brief(self) -> dict[str, Any]:
        """
        The report in short, for a line in another answer (a switch's): no
        rows, no paths.

        @return: JSON-able values: C{strategy}, C{dry_run}, C{complete},
            C{copied} (rows by table), C{rows_copied}, C{conflicts} (how
            many), C{conflict_kinds} (how many of each kind), C{error},
            C{seconds}.
        """
        kinds: dict[str, int] = {}
        for conflict in self.conflicts:
            kinds[conflict.kind] = kinds.get(conflict.kind, 0) + 1
        return {
            "strategy": self.strategy,
            "dry_run": self.dryRun,
            "complete": self.complete,
            "copied": dict(self.copied),
            "rows_copied": sum(self.copied.values()),
            "conflicts": len(self.conflicts),
            "conflict_kinds": kinds,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }

    def describe(self) -> str:
        """
        @return: The report in one line (see L{describeReport}).
        """
        return describeReport(self.asJSON())

    def summary(self) -> str:
        """
        @return: The report for humans, one fact a line.
        """
        verb = "would copy" if self.dryRun else "copied"
        lines = [
            f"{self.strategy} {self.source} -> {self.target}"
            + (" (dry run)" if self.dryRun else "")
        ]
        for name, count in sorted(self.copied.items()):
            lines.append(f"  {name}: {verb} {count} row{'s' if count != 1 else ''}")
        for name, count in sorted(self.targetOnly.items()):
            if count:
                lines.append(f"  {name}: {count} row(s) only on the target (kept)")
        if self.backup:
            lines.append(f"  old target kept as {self.backup}")
        if self.method == "changes":
            lines.append(
                f"  {self.changes} change{'s' if self.changes != 1 else ''} "
                "applied from the source's log"
            )
        for note in self.notes:
            lines.append(f"  {note}")
        for conflict in self.conflicts:
            lines.append(f"  CONFLICT {conflict.describe()}")
        if self.error:
            lines.append(f"  FAILED: {self.error}")
        total = sum(self.copied.values())
        state = "complete" if self.complete else "INCOMPLETE"
        lines.append(
            f"{state}: {verb} {total} row{'s' if total != 1 else ''}, "
            f"{len(self.conflicts)} conflict{'s' if len(self.conflicts) != 1 else ''}"
            f" in {self.seconds:.2f}s"
        )
        return "\n".join(lines) + "\n"


def _plural(count: int, word: str) -> str:
    """
    @return: C{1 row}, C{2 rows}...
    """
    return f"{count} {word}{'' if count == 1 else 's'}"


def describeConflict(conflict: Mapping[str, Any]) -> str:
    """
    One conflict in one line, from its JSON form (L{Conflict.asJSON}).

    @param conflict: The conflict's JSON.
    @return: E.g. C{key_conflict: facts key (2): same key, different
        content}.
    """
    where = str(conflict.get("table"))
    key = conflict.get("key")
    if key is not None:
        where += f" key ({', '.join(str(k) for k in key)})"
    text = f"{conflict.get('kind')}: {where}"
    if conflict.get("detail"):
        text += f": {conflict['detail']}"
    return text


def describeReport(report: Mapping[str, Any]) -> str:
    """
    A sync report in one line, from its JSON form: a L{SyncReport.asJSON}
    or L{SyncReport.brief} (the admin API's sync and switch answers carry
    the former as C{"report"} and C{"sync"}), so a client can print what a
    sync copied without importing the server.

    @param report: The report's JSON.
    @return: E.g. C{migrate: copied 3 rows (facts 2, votes 1), no
        conflicts}, C{migrate INCOMPLETE: copied 1 row (facts 1), 1 conflict
        (key_conflict: facts key (2): same key, different content)} or
        C{copy FAILED: ...; copied 0 rows}.
    """
    verb = "would copy" if report.get("dry_run") else "copied"
    copied: Mapping[str, int] = report.get("copied") or {}
    total = int(report.get("rows_copied", sum(copied.values())))
    tables = ", ".join(f"{name} {n}" for name, n in sorted(copied.items()) if n)
    rows = f"{verb} {_plural(total, 'row')}" + (f" ({tables})" if tables else "")
    conflicts = report.get("conflicts") or []
    count = len(conflicts) if isinstance(conflicts, list) else int(conflicts)
    strategy = report.get("strategy", "sync")
    if report.get("error"):
        return f"{strategy} FAILED: {report['error']}; {rows}"
    if not count:
        return f"{strategy}: {rows}, no conflicts"
    first = ""
    if isinstance(conflicts, list):
        first = " (" + describeConflict(conflicts[0])
        first += f"; and {count - 1} more)" if count > 1 else ")"
    return f"{strategy} INCOMPLETE: {rows}, {_plural(count, 'conflict')}{first}"


@define
class Outcome:
    """
    What a strategy copied and found so far: the report is built from it
    also when a step fails.

    @ivar copied: Rows copied (or, in a dry run, to be copied) by table.
    @ivar targetOnly: Rows only the target holds, by table.
    @ivar conflicts: What could not be carried over.
    @ivar backup: Where C{copy} kept the target's old file (a path on the
        target's host).
    @ivar method: See L{SyncReport.method}.
    @ivar changes: See L{SyncReport.changes}.
    @ivar notes: See L{SyncReport.notes}.
    """

    copied: dict[str, int] = Factory(dict)
    targetOnly: dict[str, int] = Factory(dict)
    conflicts: list[Conflict] = Factory(list)
    backup: str | None = None
    method: str | None = None
    changes: int = 0
    notes: list[str] = Factory(list)
