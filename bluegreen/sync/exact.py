# -*- test-case-name: tests.test_sync_capture -*-
"""
The C{migrate} strategy, exact: bring the target up to date by applying
the source's captured changes (L{bluegreen.sync.capture}) since the
position the target last applied (L{bluegreen.sync.apply}).

Each sync:

  1. installs the capture in both databases if missing, and re-creates
     their triggers if the schema changed (one transaction each);
  2. gives the target an origin of its own if it is a copy of the source
     (the C{copy} strategy makes one);
  3. when the target has no position for the source (the first sync of the
     pair: the two may have diverged before capture existed), or the
     position cannot be served (the log was trimmed past it, or the source
     file was replaced by an older one), merges a snapshot as the snapshot
     C{migrate} always did (L{bluegreen.sync.migrate}, reported as
     C{seeded} or C{fallback}) and records the snapshot's position in the
     same transaction;
  4. otherwise reads the changes after the position (in one read
     transaction on the source) and applies them in one transaction on the
     target, position included;
  5. trims the source's log up to what the target applied.
"""

from __future__ import annotations

import json
import uuid

from twisted.logger import Logger

from bluegreen.sync.apply import POLICIES, BadChange, Script, parseChanges
from bluegreen.sync.capture import (
    APPLIED,
    CONFLICTS,
    LOG,
    NO_ECHO_AFTER,
    NO_ECHO_BEFORE,
    NOW_SQL,
    STATE,
    Capture,
    CaptureState,
)
from bluegreen.sync.errors import SyncError
from bluegreen.sync.hosts import Hosts, decodeArrays
from bluegreen.sync.locations import Location
from bluegreen.sync.merge import LOCK_ATTEMPTS, Merge, runLocked
from bluegreen.sync.migrate import Migrate
from bluegreen.sync.process import ProcessFailed, ProcessResult
from bluegreen.sync.report import Conflict, Outcome
from bluegreen.sync.sql import ident, literal
from bluegreen.sync.transfer import Transfer

_log = Logger()

#: What a failed guard says: another sync applied the same changes.
_MOVED = b"position_moved_by_another_sync"


def fetchSQL(position: int) -> str:
    """
    @param position: The target's position.
    @return: One read transaction: the source log's floor and top, then its
        changes after C{position}, in order.
    """
    return (
        "BEGIN;\n"
        f"SELECT coalesce((SELECT v FROM {ident(STATE)} WHERE k = 'floor'), 0) "
        f"AS floor, coalesce((SELECT max(seq) FROM {ident(LOG)}), 0) AS top;\n"
        f"SELECT seq, tbl, op, old, new, at FROM {ident(LOG)} WHERE seq > "
        f"{int(position)} ORDER BY seq;\n"
        "COMMIT;\n"
    )


def unservable(position: int | None, source: CaptureState) -> str | None:
    """
    @param position: The target's position for the source, or L{None}.
    @param source: The source's capture.
    @return: Why the source's log cannot bring the target up to date from
        C{position}, or L{None} if it can.
    """
    if position is None:
        return "first sync of this pair: a snapshot merged once (seeding)"
    if position < source.floor:
        return (
            f"the source's log was trimmed past the target's position "
            f"({position} < {source.floor}): a snapshot merged instead"
        )
    if position > source.top:
        return (
            f"the target applied changes up to {position} but the source's "
            f"log ends at {source.top} (its file was replaced?): a snapshot "
            "merged instead"
        )
    return None


class Exact:
    """
    The exact C{migrate} strategy, for one run.

    @ivar lockAttempts: How many times an apply is tried while the target
        is locked.
    @ivar onConflict: One of L{bluegreen.sync.apply.POLICIES}.
    @ivar trim: Trim the source's log after applying.
    """

    name = "migrate"

    def __init__(
        self,
        lockAttempts: int = LOCK_ATTEMPTS,
        onConflict: str = "keep-target",
        trim: bool = True,
    ) -> None:
        """
        @param lockAttempts: See L{lockAttempts}.
        @param onConflict: See L{onConflict}.
        @param trim: See L{trim}.
        @raise ValueError: For an unknown policy.
        """
        if onConflict not in POLICIES:
            raise ValueError(
                f"unknown conflict policy {onConflict!r}; expected "
                + " or ".join(POLICIES)
            )
        self.lockAttempts = lockAttempts
        self.onConflict = onConflict
        self.trim = trim

    async def run(self, transfer: Transfer, outcome: Outcome, dryRun: bool) -> None:
        """
        Bring the target up to date (see the module docstring).

        @param transfer: The run's files (used when seeding).
        @param outcome: Where the counts, conflicts and notes go.
        @param dryRun: Change nothing (the capture is not installed either).
        @raise SyncError: If a step failed or was refused.
        @raise ProcessFailed: If a child failed.
        """
        hosts = transfer.hosts
        src, dst = transfer.src, transfer.dst
        if not await hosts.isFile(dst):
            raise SyncError(
                f"target database {dst} does not exist; "
                "use --strategy copy to create it"
            )
        if not await hosts.isFile(src):
            raise SyncError(f"source database {src} does not exist")
        capture = Capture(hosts, self.lockAttempts)
        if dryRun:
            await self._dryRun(capture, transfer, outcome)
            return
        source, done = await capture.ensure(src)
        if done is not None:
            outcome.notes.append(f"change capture {done} in {src}")
        target, done = await capture.ensure(dst)
        if done is not None:
            outcome.notes.append(f"change capture {done} in {dst}")
        if source.origin == target.origin:
            target = await capture.newOrigin(dst)
            outcome.notes.append(
                f"{dst} is a copy of {src}: it got an origin id of its own"
            )
        position = target.applied.get(source.origin)
        why = unservable(position, source)
        if why is not None or position is None:
            await self._seed(transfer, outcome, position is None, why or "")
            return
        applied = await self._apply(hosts, src, dst, source, position, outcome, True)
        # Only what the target has applied, only when that moved the floor.
        if self.trim and applied > source.floor:
            try:
                await capture.trim(src, applied)
            except (SyncError, ProcessFailed) as e:
                _log.warn("sync: could not trim {src}'s log: {e}", src=str(src), e=e)

    async def _dryRun(
        self, capture: Capture, transfer: Transfer, outcome: Outcome
    ) -> None:
        """
        What a sync would do, changing nothing.
        """
        hosts = transfer.hosts
        src, dst = transfer.src, transfer.dst
        probes = [await capture.probe(src), await capture.probe(dst)]
        position: int | None = None
        why: str | None = (
            "change capture is not installed yet: a snapshot would be merged"
        )
        if all(p.installed for p in probes):
            source = await capture.read(src)
            target = await capture.read(dst)
            position = target.applied.get(source.origin)
            why = unservable(position, source)
            if why is None and position is not None:
                await self._apply(hosts, src, dst, source, position, outcome, False)
                return
        await Migrate(self.lockAttempts).run(transfer, outcome, True)
        outcome.method = "seeded" if position is None else "fallback"
        outcome.notes.append(why or "")

    async def _seed(
        self,
        transfer: Transfer,
        outcome: Outcome,
        first: bool,
        why: str,
    ) -> None:
        """
        Merge a snapshot of the source, recording the snapshot's log
        position in the same transaction.
        """
        outcome.method = "seeded" if first else "fallback"
        outcome.notes.append(why)
        _log.info(
            "sync {src} -> {dst}: {why}",
            src=str(transfer.src),
            dst=str(transfer.dst),
            why=why,
        )
        await transfer.ship(hashes=False)
        run = uuid.uuid4().hex
        after = [
            f"INSERT INTO main.{ident(CONFLICTS)}(at, run, origin, seq, tbl, op, "
            "kind, key, source, target, detail, resolution) SELECT "
            f"{NOW_SQL}, {literal(run)}, (SELECT v FROM g.{ident(STATE)} WHERE "
            "k = 'origin'), NULL, tbl, 'seed', kind, key, source, target, detail, "
            "'kept target' FROM temp._bg_report WHERE kind NOT IN "
            "('inserted', 'target_only');",
            f"INSERT INTO main.{ident(APPLIED)}(origin, seq, at) SELECT (SELECT v "
            f"FROM g.{ident(STATE)} WHERE k = 'origin'), coalesce((SELECT max(seq) "
            f"FROM g.{ident(LOG)}), 0), {NOW_SQL} "
            "WHERE 1 ON CONFLICT(origin) DO UPDATE SET seq = excluded.seq, "
            "at = excluded.at;",
            NO_ECHO_AFTER,
        ]
        merge = Merge(
            transfer.hosts,
            transfer.dst,
            transfer.attach(),
            outcome,
            self.lockAttempts,
            before=[NO_ECHO_BEFORE],
            after=after,
        )
        await merge.run(apply=True)

    async def _apply(
        self,
        hosts: Hosts,
        src: Location,
        dst: Location,
        source: CaptureState,
        position: int,
        outcome: Outcome,
        commit: bool,
    ) -> int:
        """
        Apply the source's changes after C{position} to the target.

        @return: The target's position now.
        """
        arrays = await hosts.query(src, fetchSQL(position))
        head = arrays[0][0]
        rows = arrays[1] if len(arrays) > 1 else []
        floor = int(head["floor"] or 0)
        if position < floor:
            raise SyncError(
                f"the source's log was trimmed past the target's position "
                f"({position} < {floor}) while syncing; sync again"
            )
        outcome.method = "changes"
        if not rows:
            return position
        try:
            changes = parseChanges(rows)
        except (BadChange, ValueError) as e:
            raise SyncError(f"{src}: bad change log: {e}") from e
        tables = await hosts.tables(dst)
        script = Script(tables, source.origin, uuid.uuid4().hex, self.onConflict)
        for change in changes:
            script.add(change)
        for table, columns in sorted(script.skippedColumns.items()):
            outcome.notes.append(
                f"{table}: column(s) {', '.join(sorted(columns))} not on the "
                "target: not copied"
            )
        text = script.render(position, changes[-1].seq, commit)
        result = await self._execute(hosts, dst, text)
        arrays = decodeArrays(result.stdout.decode("utf-8"))
        if not arrays or "done" not in arrays[0][0]:
            err = result.stderr.decode("utf-8", "replace").strip()
            raise SyncError(
                f"applying changes to {dst} printed no report"
                + (f": {err[:1000]}" if err else "")
            )
        kept: dict[str, int] = {}
        for row in arrays[1] if len(arrays) > 1 else []:
            conflict = Conflict(
                row["tbl"],
                row["kind"],
                tuple(json.loads(row["key"])) if row["key"] else None,
                json.loads(row["source"]) if row["source"] else None,
                json.loads(row["target"]) if row["target"] else None,
                f"{row['detail']} (change {row['seq']}, {row['resolution']})",
            )
            outcome.conflicts.append(conflict)
            if row["resolution"].startswith("kept target"):
                kept[row["tbl"]] = kept.get(row["tbl"], 0) + 1
        for table, count in script.counts.items():
            outcome.copied[table] = count - kept.get(table, 0)
        outcome.changes = len(changes)
        return changes[-1].seq

    async def _execute(self, hosts: Hosts, dst: Location, script: str) -> ProcessResult:
        """
        Run an apply script, again while the target is locked (a failed
        attempt rolled back: it changed nothing).

        @raise SyncError: If the target stayed locked, or another sync
            moved its position.
        """
        try:
            return await runLocked(
                hosts, dst, script, self.lockAttempts, "the apply", "-json"
            )
        except ProcessFailed as e:
            if _MOVED in e.result.stderr:
                raise SyncError(
                    f"another sync applied changes to {dst} meanwhile; "
                    "nothing was applied: sync again"
                ) from e
            raise
