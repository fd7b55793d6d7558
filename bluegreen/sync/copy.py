# -*- test-case-name: tests.test_sync,tests.test_sync_more -*-
"""
The C{copy} strategy: refuse when the target holds anything the source
lacks (without a cutover baseline that is how "the target took writes" is
told), stop the target app, checkpoint it and make sure no C{-wal} or
C{-shm} is left, keep the old file as C{NAME.pre-sync-TIME}, rename the
staged file into place, start the app and verify.  The stop and start
commands run on the target's host.
"""

from __future__ import annotations

import os
import time

from bluegreen.sync.capture import Capture
from bluegreen.sync.errors import SyncError
from bluegreen.sync.merge import LOCK_ATTEMPTS, Merge
from bluegreen.sync.report import (
    COLUMN_ONLY_ON_TARGET,
    KEY_CONFLICT,
    KEY_MISMATCH,
    TABLE_ONLY_ON_TARGET,
    Outcome,
)
from bluegreen.sync.transfer import Transfer

#: A shell script that prints what is beside a stopped target ($1) on a
#: remote host: C{-wal} or C{-shm} if one is there, C{hot} for a hot
#: journal; removes a cold one.
SIDECARS_SCRIPT = """t=$1
for s in -wal -shm; do
  if [ -e "$t$s" ]; then printf %s "$s"; exit 0; fi
done
if [ -e "$t-journal" ]; then
  if [ -n "$(head -c 28 -- "$t-journal" | tr -d '\\000')" ]; then
    printf hot; exit 0
  fi
  rm -f -- "$t-journal"
fi
"""

#: A shell script that renames $1 to $2 (or $2-1, $2-2... if taken) on a
#: remote host and prints the name it got.
KEEP_SCRIPT = """b=$2; c=$2; n=1
while [ -e "$c" ] || [ -L "$c" ]; do c="$b-$n"; n=$((n + 1)); done
mv -- "$1" "$c" && printf %s "$c"
"""


class Copy:
    """
    The C{copy} strategy, for one run.

    @ivar transfer: The run's files.
    @ivar outcome: Where the counts and the backup's name go.
    @ivar stopCommand: A shell command that stops the target app (and
        returns once it has exited), or L{None}.
    @ivar startCommand: One that starts it again, or L{None}.
    """

    name = "copy"

    def __init__(
        self,
        stopCommand: str | None = None,
        startCommand: str | None = None,
        lockAttempts: int = LOCK_ATTEMPTS,
    ) -> None:
        """
        @param stopCommand: See L{stopCommand}.
        @param startCommand: See L{startCommand}.
        @param lockAttempts: How many times the check for target-only rows
            is tried while the target is locked.
        """
        self.stopCommand = stopCommand
        self.startCommand = startCommand
        self._lockAttempts = lockAttempts

    async def run(self, transfer: Transfer, outcome: Outcome, dryRun: bool) -> None:
        """
        Replace the target with the source's snapshot (in a dry run, only
        check that it may be replaced).

        @param transfer: The run's files.
        @param outcome: Where the counts and the backup's name go.
        @param dryRun: Change nothing.
        @raise SyncError: If refused, or a step failed.
        @raise ProcessFailed: If a child failed.
        """
        await _CopyRun(transfer, outcome, self._lockAttempts).copy(
            self.stopCommand, self.startCommand, dryRun
        )


class _CopyRun:
    """
    One C{copy}: its steps share the run's files and outcome.
    """

    def __init__(self, transfer: Transfer, outcome: Outcome, lockAttempts: int) -> None:
        """
        @param transfer: The run's files.
        @param outcome: Where the counts and the backup's name go.
        @param lockAttempts: See L{Merge.lockAttempts}.
        """
        self.transfer = transfer
        self.outcome = outcome
        self.hosts = transfer.hosts
        self.dst = transfer.dst
        self.target = transfer.target
        self.staged = transfer.staged
        self._lockAttempts = lockAttempts

    async def copy(
        self, stopCommand: str | None, startCommand: str | None, dryRun: bool
    ) -> None:
        """
        See L{Copy.run}.
        """
        manifest = await self.transfer.ship()
        exists = await self.hosts.isFile(self.dst)
        if exists:
            await self.refuseIfTargetAhead()
        if dryRun:
            self.outcome.copied = manifest.rows()
            return
        mode = "delete"
        if exists:
            rows = await self.hosts.query(self.dst, "PRAGMA journal_mode;")
            mode = rows[0][0]["journal_mode"]
        stopped = False
        try:
            if stopCommand:
                await self.hosts.shell(self.dst, stopCommand)
                stopped = True
            if exists:
                await self.hosts.sqlite(
                    self.dst, "PRAGMA wal_checkpoint(TRUNCATE);", "-list"
                )
                await self._noSidecars()
                await self.refuseIfTargetAhead()
            # The staged file is the source's snapshot, change capture
            # included: it becomes a database of its own, positions set, so
            # that the next migrate both ways applies changes.
            adopted = await Capture(self.hosts, self._lockAttempts).adoptCopy(
                self.dst.at(self.staged), self.transfer.src
            )
            if mode == "wal" or adopted:
                if mode == "wal":
                    await self.hosts.sqlite(
                        self.dst.at(self.staged), "PRAGMA journal_mode=WAL;", "-list"
                    )
                await self.transfer.verifyStaged(manifest, None)
            await self._swap(exists)
        except BaseException as refused:
            if startCommand and (stopped or not stopCommand):
                try:
                    await self.hosts.shell(self.dst, startCommand)
                except Exception as e:
                    # Both matter: why the copy stopped, and that the app
                    # is not running again.
                    raise SyncError(
                        f"{refused}; then the start command failed: {e}"
                    ) from e
            raise
        if startCommand and (stopped or not stopCommand):
            await self.hosts.shell(self.dst, startCommand)
        after = await self.hosts.manifest(self.dst)
        if after.integrity != "ok" or after.tables != manifest.tables:
            raise SyncError(
                f"{self.dst} does not hold the snapshot after the swap "
                f"(integrity: {after.integrity[:200]}); "
                f"the old file is {self.outcome.backup}"
            )
        self.outcome.copied = manifest.rows()

    async def _noSidecars(self) -> None:
        """
        Make sure the (stopped) target has no C{-wal}, C{-shm} or hot
        C{-journal} beside it; remove a cold (zeroed) journal.

        @raise SyncError: If one is left (the app is probably still running).
        """
        if self.dst.remote:
            result = await self.hosts.ssh(
                self.dst, ["sh", "-c", SIDECARS_SCRIPT, "sh", self.target]
            )
            found = result.stdout.decode("utf-8", "replace")
            if found == "hot":
                raise SyncError(
                    f"{self.dst}-journal is a hot journal: refusing to swap"
                )
            if found:
                raise SyncError(
                    f"{self.dst}{found} is still there after a checkpoint: "
                    "is the target app still running? (give --stop-cmd)"
                )
            return
        for suffix in ("-wal", "-shm"):
            if os.path.exists(self.target + suffix):
                raise SyncError(
                    f"{self.target}{suffix} is still there after a checkpoint: "
                    "is the target app still running? (give --stop-cmd)"
                )
        journal = self.target + "-journal"
        if os.path.exists(journal):
            with open(journal, "rb") as f:
                header = f.read(28)
            if header.strip(b"\0"):
                raise SyncError(f"{journal} is a hot journal: refusing to swap")
            os.remove(journal)

    async def refuseIfTargetAhead(self) -> None:
        """
        Refuse the copy when the target holds rows (or tables, columns,
        content) the source lacks: without a cutover baseline, that is how
        the tool knows the target took writes that a copy would lose.

        @raise SyncError: Naming what only the target has.
        """
        probe = Outcome()
        merge = Merge(
            self.hosts, self.dst, self.transfer.attach(), probe, self._lockAttempts
        )
        await merge.run(apply=False)
        reasons = [
            f"{name}: {count} row(s) only on the target"
            for name, count in sorted(probe.targetOnly.items())
            if count
        ]
        reasons += [
            c.describe()
            for c in probe.conflicts
            if c.kind
            in (KEY_CONFLICT, TABLE_ONLY_ON_TARGET, COLUMN_ONLY_ON_TARGET, KEY_MISMATCH)
        ]
        if reasons:
            raise SyncError(
                "refusing to copy: the target took writes the source lacks ("
                + "; ".join(reasons[:10])
                + (f"; and {len(reasons) - 10} more" if len(reasons) > 10 else "")
                + "); use --strategy migrate"
            )

    async def _swap(self, exists: bool) -> None:
        """
        Keep the target as C{.pre-sync-TIME} and rename the staged file into
        place; put the old file back if that fails.
        """
        if self.dst.remote:
            await self._swapRemote(exists)
            return
        if exists:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            backup = f"{self.target}.pre-sync-{stamp}"
            n = 1
            while os.path.exists(backup):
                backup = f"{self.target}.pre-sync-{stamp}-{n}"
                n += 1
            os.rename(self.target, backup)
            self.outcome.backup = backup
        try:
            os.rename(self.staged, self.target)
        except OSError as e:
            if self.outcome.backup is not None:
                os.rename(self.outcome.backup, self.target)
                self.outcome.backup = None
            raise SyncError(f"could not rename the staged file into place: {e}") from e
        directory = os.open(os.path.dirname(self.target), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def _swapRemote(self, exists: bool) -> None:
        """
        L{_swap} on the target's (remote) host, with C{mv} and C{sync}.
        """
        ssh = self.hosts.ssh
        if exists:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            kept = await ssh(
                self.dst,
                [
                    "sh",
                    "-c",
                    KEEP_SCRIPT,
                    "sh",
                    self.target,
                    f"{self.target}.pre-sync-{stamp}",
                ],
            )
            self.outcome.backup = kept.stdout.decode("utf-8", "surrogateescape")
        moved = await ssh(self.dst, ["mv", "--", self.staged, self.target], check=False)
        if not moved.ok:
            if self.outcome.backup is not None:
                await ssh(self.dst, ["mv", "--", self.outcome.backup, self.target])
                self.outcome.backup = None
            err = moved.stderr.decode("utf-8", "replace").strip()
            raise SyncError(f"could not rename the staged file into place: {err}")
        await ssh(
            self.dst,
            [
                "sh",
                "-c",
                'sync -- "$1" 2>/dev/null || sync',
                "sh",
                os.path.dirname(self.target),
            ],
        )
