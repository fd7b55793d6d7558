# -*- test-case-name: tests.test_sync -*-
"""
Bring one environment's SQLite database up to date from the other's, with
nothing lost: L{Syncer}, the entry point of the database sync.

Either database may be local or remote (a L{Location}, read by
L{bluegreen.sync.locations.parseLocation} from C{[user@]host:/path}): on a
remote host C{sqlite3} and small POSIX shell commands run through C{ssh -o
BatchMode=yes} (L{bluegreen.sync.hosts}).  Local paths never involve ssh.

Every step is a C{sqlite3} or C{rsync} child run by a
L{bluegreen.sync.process.ProcessRunner}; Python's C{sqlite3} module is not on
the data path.  One sync runs at a time (L{Syncer.lock}).

C{migrate} (L{bluegreen.sync.exact}) applies the source's captured changes
to the live target; the first time (and when the changes since the
target's position are gone) it merges a snapshot instead
(L{bluegreen.sync.transfer}: snapshot, verify, ship, verify; then
L{bluegreen.sync.migrate}).  L{bluegreen.sync.copy} replaces the stopped
target with a snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bluegreen.sync.capture import Capture
from bluegreen.sync.copy import Copy
from bluegreen.sync.errors import SyncError
from bluegreen.sync.exact import Exact
from bluegreen.sync.hosts import Hosts
from bluegreen.sync.locations import Location, resolveLocation
from bluegreen.sync.merge import LOCK_ATTEMPTS
from bluegreen.sync.process import ProcessFailed, ProcessReactor, ProcessRunner
from bluegreen.sync.report import Outcome, SyncReport
from bluegreen.sync.transfer import Transfer

#: The strategies L{Syncer.sync} takes.
STRATEGIES = ("copy", "migrate")

_log = Logger()


class Strategy(Protocol):
    """
    What a sync does once it has its files (L{Migrate}, L{Copy}).
    """

    async def run(self, transfer: Transfer, outcome: Outcome, dryRun: bool) -> None:
        """
        Sync C{transfer}'s target from its source.

        @param transfer: The run's files.
        @param outcome: Where the counts, conflicts and backup go.
        @param dryRun: Change nothing.
        @raise SyncError: If refused, or a step failed.
        @raise ProcessFailed: If a child failed.
        """


class Syncer:
    """
    Runs syncs, one at a time.

    @ivar lock: Held while a sync runs.
    @ivar runner: Runs the children.
    @ivar hosts: Runs them on a database's host.
    """

    def __init__(
        self,
        reactor: IReactorTime | ProcessReactor,
        runner: ProcessRunner,
        rsyncTimeout: int = 60,
        backupTimeout: float = 60.0,
        sshOptions: Sequence[str] = (),
        connectTimeout: int = 10,
        lockAttempts: int = LOCK_ATTEMPTS,
    ) -> None:
        """
        @param reactor: The clock for the report's timings (the runner's
            reactor, or any L{IReactorTime}).
        @param runner: Runs C{sqlite3} and C{rsync} (and C{ssh}).
        @param rsyncTimeout: C{rsync --timeout} (I/O inactivity, seconds).
        @param backupTimeout: How long C{.backup} may take (before 3.27).
        @param sshOptions: More arguments for every C{ssh} (and C{rsync -e
            ssh}) reaching a remote location, e.g. C{("-p", "2222")} (see
            L{bluegreen.sync.locations.sshArguments}).
        @param connectTimeout: ssh's C{ConnectTimeout} (seconds).
        @param lockAttempts: How many times a merge is tried while the
            target is locked (each waits the runner's C{sqliteTimeout}).
        """
        self._clock = reactor
        self.runner = runner
        self.hosts = Hosts(runner, sshOptions, connectTimeout)
        self.lock = DeferredLock()
        self._rsyncTimeout = rsyncTimeout
        self._backupTimeout = backupTimeout
        self._lockAttempts = lockAttempts

    def sync(
        self,
        source: str | Location,
        target: str | Location,
        strategy: str,
        dryRun: bool = False,
        stopCommand: str | None = None,
        startCommand: str | None = None,
        onConflict: str = "keep-target",
    ) -> Deferred[SyncReport]:
        """
        Sync C{target} from C{source}, once any running sync has finished.

        @param source: The source database: a local path (a L{str} is always
            one), or a L{Location}, perhaps on another host.
        @param target: The target database, the same way.
        @param strategy: C{copy} or C{migrate}.
        @param dryRun: Report what would be done, change nothing.
        @param stopCommand: For C{copy}: a shell command that stops the
            target app (and returns once it has exited); it runs on the
            target's host (over ssh when that is remote).
        @param startCommand: For C{copy}: one that starts it again.
        @param onConflict: For C{migrate}: C{keep-target} (the target keeps
            its row, the source's goes into its conflicts table),
            C{take-source} (the other way round) or C{newest} (the row
            changed last wins).
        @return: Fires with the L{SyncReport} (failures are in the report).
        @raise ValueError: For an unknown strategy or conflict policy.
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}")
        chosen: Strategy = (
            Exact(self._lockAttempts, onConflict)
            if strategy == "migrate"
            else Copy(stopCommand, startCommand, self._lockAttempts)
        )

        async def locked() -> SyncReport:
            return await self._sync(
                resolveLocation(source),
                resolveLocation(target),
                strategy,
                chosen,
                dryRun,
            )

        return self.lock.run(lambda: Deferred.fromCoroutine(locked()))

    async def _sync(
        self,
        source: Location,
        target: Location,
        name: str,
        strategy: Strategy,
        dryRun: bool,
    ) -> SyncReport:
        """
        Run C{strategy}, always clean up, and report.

        @param name: The strategy's name.
        @return: The report.
        """
        started = self._clock.seconds()
        transfer = Transfer(
            self.hosts, source, target, self._rsyncTimeout, self._backupTimeout
        )
        outcome = Outcome()
        error: str | None = None
        try:
            await strategy.run(transfer, outcome, dryRun)
        except (SyncError, ProcessFailed) as e:
            error = str(e)
        finally:
            await transfer.cleanUp()
        report = SyncReport(
            strategy=name,
            source=str(source),
            target=str(target),
            dryRun=dryRun,
            copied=outcome.copied,
            targetOnly=outcome.targetOnly,
            conflicts=tuple(outcome.conflicts),
            error=error,
            backup=str(target.at(outcome.backup))
            if outcome.backup is not None
            else None,
            seconds=max(0.0, self._clock.seconds() - started),
            method=outcome.method,
            changes=outcome.changes,
            notes=tuple(outcome.notes),
        )
        _log.info(
            "sync {strategy} {source} -> {target}: {rows} rows, "
            "{conflicts} conflicts, error {error}",
            strategy=name,
            source=str(source),
            target=str(target),
            rows=sum(report.copied.values()),
            conflicts=len(report.conflicts),
            error=error,
        )
        return report

    def prepare(self, database: str | Location) -> Deferred[str | None]:
        """
        Install the change capture in C{database} (or re-create its
        triggers after a schema change), once any running sync has
        finished.

        @param database: A local path or a L{Location}.
        @return: Fires with what was done (C{installed}, C{refreshed}) or
            L{None}.
        """

        async def locked() -> str | None:
            capture = Capture(self.hosts, self._lockAttempts)
            return (await capture.ensure(resolveLocation(database)))[1]

        return self.lock.run(lambda: Deferred.fromCoroutine(locked()))

    async def version(self, host: Location | None = None) -> tuple[int, ...]:
        """
        @param host: Ask the C{sqlite3} on this location's host (local if
            L{None}).
        @return: The C{sqlite3} version (see L{Hosts.version}).
        """
        return await self.hosts.version(host)
