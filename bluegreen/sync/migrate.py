# -*- test-case-name: tests.test_sync -*-
"""
The C{migrate} strategy: ship the source's snapshot and merge it into the
live target (L{bluegreen.sync.merge}).  It is insert-only: the source's
updates and deletes show up as key conflicts and target-only rows.
"""

from __future__ import annotations

from bluegreen.sync.errors import SyncError
from bluegreen.sync.merge import LOCK_ATTEMPTS, Merge
from bluegreen.sync.report import Outcome
from bluegreen.sync.transfer import Transfer


class Migrate:
    """
    The C{migrate} strategy.

    @ivar lockAttempts: How many times the merge is tried while the target
        is locked (L{Merge.lockAttempts}).
    """

    name = "migrate"

    def __init__(self, lockAttempts: int = LOCK_ATTEMPTS) -> None:
        """
        @param lockAttempts: See L{lockAttempts}.
        """
        self.lockAttempts = lockAttempts

    async def run(self, transfer: Transfer, outcome: Outcome, dryRun: bool) -> None:
        """
        Merge the source into the target (roll back in a dry run).

        @param transfer: The run's files.
        @param outcome: Where the counts and conflicts go.
        @param dryRun: Change nothing.
        @raise SyncError: If the target does not exist, or a step failed.
        @raise ProcessFailed: If a child failed.
        """
        if not await transfer.hosts.isFile(transfer.dst):
            raise SyncError(
                f"target database {transfer.dst} does not exist; "
                "use --strategy copy to create it"
            )
        await transfer.ship(hashes=False)
        merge = Merge(
            transfer.hosts, transfer.dst, transfer.attach(), outcome, self.lockAttempts
        )
        await merge.run(apply=not dryRun)
