# -*- test-case-name: tests.test_syncservice -*-
"""
The database sync as part of the running service: on demand (the admin
API's C{POST /api/sync}, C{bluegreen sync green blue}, the manhole) and,
with C{--sync mirror}, continuously from the live environment's database to
the standby's.

L{SyncService} owns one L{bluegreen.sync.syncer.Syncer}, so one sync runs at a
time whatever starts it:

  - an on-demand sync (L{SyncService.sync}) waits for a running mirror pass
    to end, but is refused with L{SyncBusy} while another on-demand sync
    (or a switch hook's) is running or waiting: an operator is told at once
    rather than queued behind someone else's sync;
  - a mirror pass is skipped when its tick finds a sync running or
    waiting; the next tick tries again.

When it starts (unless C{--sync none} or C{mirror}, whose first pass does
it at once) it installs the change capture in both databases
(L{bluegreen.sync.capture}), so that the app's changes are captured from
then on; C{migrate} (L{bluegreen.sync.exact}) applies them.

For each direction (C{green->blue}, C{blue->green}) the service remembers
the last sync (L{LastSync}; dry runs change nothing and are not recorded).
For the mirror it reports the lag: the seconds since the start of the last
complete pass from the environment live now to the standby (the pass reads
the source's changes at its start), and the rows and changes of the last
pass.  A pass with conflicts or an error is a failure: it is reported in the
status (and logged once per run of failures, with one line when passes
succeed again) and the loop goes on.  A conflict is met once: it is kept in
the standby's conflicts table and the next pass goes on with new changes.

The controller calls L{SyncService.beforeSwitch} before a planned switch
and L{SyncService.switched} after every switch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from bluegreen.controller import Controller, Switch
from bluegreen.sync.apply import POLICIES as CONFLICT_POLICIES
from bluegreen.sync.locations import parseLocation
from bluegreen.sync.report import SyncReport
from bluegreen.sync.syncer import Syncer

#: The strategies of C{--sync}.
SYNC_MODES = ("none", "copy", "migrate", "mirror")

#: The strategies a single sync can use.
ONE_SHOT = ("copy", "migrate")

#: The C{strategy} label of mirror passes (they run C{migrate}).
MIRROR = "mirror"

#: The C{result} label values of L{SyncMetrics}.
RESULTS = ("complete", "incomplete", "failed")

_log = Logger(namespace="bluegreen.sync")


class SyncBusy(Exception):
    """
    An on-demand sync is already running (or waiting to run).
    """


class SyncUnavailable(Exception):
    """
    No sync can run: the service is stopped, or it has no databases.
    """


def direction(source: str, target: str) -> str:
    """
    @param source: The environment synced from.
    @param target: The one synced to.
    @return: The name of a direction, e.g. C{green->blue}.
    """
    return f"{source}->{target}"


def _result(report: SyncReport) -> str:
    """
    @return: C{complete}, C{incomplete} (conflicts) or C{failed} (an error).
    """
    if report.error is not None:
        return "failed"
    return "complete" if report.complete else "incomplete"


@frozen
class LastSync:
    """
    One finished sync, as remembered per direction.

    @ivar when: POSIX time it started.
    @ivar strategy: C{copy}, C{migrate} or C{mirror} (a mirror pass).
    @ivar rowsCopied: Rows copied.
    @ivar conflicts: Conflicts reported.
    @ivar seconds: How long it took.
    @ivar complete: Whether everything was copied.
    @ivar error: Why it failed, or L{None}.
    @ivar who: Who asked for it (C{mirror} for a pass).
    @ivar changes: Captured changes applied (see L{SyncReport.changes}).
    @ivar method: How C{migrate} did it (see L{SyncReport.method}).
    """

    when: float
    strategy: str
    rowsCopied: int
    conflicts: int
    seconds: float
    complete: bool
    error: str | None
    who: str
    changes: int = 0
    method: str | None = None

    def asJSON(self) -> dict[str, Any]:
        """
        @return: The sync as JSON-able values.
        """
        return {
            "when": self.when,
            "strategy": self.strategy,
            "rows_copied": self.rowsCopied,
            "conflicts": self.conflicts,
            "seconds": round(self.seconds, 3),
            "complete": self.complete,
            "error": self.error,
            "who": self.who,
            "changes": self.changes,
            "method": self.method,
        }


def nextPassDelay(interval: float, passSeconds: float) -> float:
    """
    How long to wait after a mirror pass before the next one, so that any
    row reaches the standby within C{interval}.

    A row written just after a pass took its snapshot waits for the next
    snapshot, then for that pass to finish: its lag is the time between two
    pass starts plus one pass.  Starting passes every C{interval - pass}
    seconds (that is, waiting C{interval - 2 * pass} after one ends) keeps
    that within C{interval}, as long as a pass takes less than half of it;
    slower passes run back to back.

    @param interval: C{--mirror-interval}.
    @param passSeconds: How long the last pass took.
    @return: Seconds to wait.
    """
    return max(0.0, interval - 2 * passSeconds)


class SyncService(MultiService):
    """
    Syncs the environments' databases; see the module docstring.

    @ivar syncer: Runs the syncs (its lock: one at a time).
    @ivar controller: Says which environment is live (for the mirror).
    @ivar databases: The database of each environment.
    @ivar mode: C{--sync}: C{none}, C{copy}, C{migrate} or C{mirror}.
    @ivar mirrorInterval: Seconds between mirror passes.
    @ivar commands: C{(stop, start)} shell commands of each environment's
        app, for C{copy} into it.
    @ivar last: The last sync of each direction.
    @ivar counts: Syncs (and passes) finished, by C{(direction, strategy,
        result)}.
    @ivar rowsCopied: Rows copied, by direction.
    @ivar changesApplied: Captured changes applied, by direction.
    @ivar conflicts: Conflicts reported, by direction.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        syncer: Syncer,
        controller: Controller,
        databases: Mapping[str, str],
        mode: str = "migrate",
        mirrorInterval: float = 1.0,
        commands: Mapping[str, tuple[str | None, str | None]] | None = None,
    ) -> None:
        """
        @param reactor: The clock: mirror passes, the lag, when syncs ran.
        @param syncer: Runs the syncs.
        @param controller: The switch.
        @param databases: The database of each environment.
        @param mode: One of L{SYNC_MODES}.
        @param mirrorInterval: Seconds between mirror passes.
        @param commands: Stop and start commands by environment.
        """
        super().__init__()
        if mode not in SYNC_MODES:
            raise ValueError(f"unknown sync mode {mode!r}")
        self.setName("sync")
        self.clock = reactor
        self.syncer = syncer
        self.controller = controller
        self.databases = dict(databases)
        self.mode = mode
        self.mirrorInterval = mirrorInterval
        self.commands = dict(commands or {})
        self.last: dict[str, LastSync] = {}
        names = list(self.databases)
        directions = [direction(s, t) for s in names for t in names if s != t]
        strategies = (*ONE_SHOT, MIRROR)
        self.counts: dict[tuple[str, str, str], int] = {
            (d, s, r): 0 for d in directions for s in strategies for r in RESULTS
        }
        self.rowsCopied = dict.fromkeys(directions, 0)
        self.changesApplied = dict.fromkeys(directions, 0)
        self.conflicts = dict.fromkeys(directions, 0)
        self.durations: dict[str, float] = {}
        self._pending = 0
        self._inFlight: list[dict[str, Any]] = []
        self._idleWaiters: list[Deferred[None]] = []
        self._mirroring = False
        self._next: IDelayedCall | None = None
        self._loopDone: Deferred[Any] | None = None
        # Mirror state: start of the last complete pass per direction, the
        # last pass's rows, the current run of failures.
        self._mirrorOK: dict[str, float] = {}
        self._mirrorRows: int | None = None
        self._mirrorChanges: int | None = None
        self._preparing: Deferred[None] | None = None
        self._mirrorLast: LastSync | None = None
        self._mirrorDirection: str | None = None
        self._failures = 0
        self._failure: str | None = None

    # Running

    @property
    def busy(self) -> bool:
        """
        Whether an on-demand sync is running or waiting (a new one would be
        refused).
        """
        return self._pending > 0

    async def sync(
        self,
        source: str,
        target: str,
        strategy: str | None = None,
        dryRun: bool = False,
        who: str = "unknown",
        wait: bool = False,
        onConflict: str | None = None,
    ) -> SyncReport:
        """
        Sync C{target}'s database from C{source}'s.

        @param source: An environment's name, e.g. C{green}.
        @param target: The other's.
        @param strategy: C{copy} or C{migrate}; L{None}: C{copy} under
            C{--sync copy}, else C{migrate}.
        @param dryRun: Report what would be copied; change nothing.
        @param who: Who asks, for the log and L{last}.
        @param wait: Wait for other on-demand syncs rather than raising
            L{SyncBusy} (the switch hooks wait).
        @param onConflict: For C{migrate}: C{keep-target} (L{None}: the
            default), C{take-source} or C{newest}.
        @return: The report (failures are in it: C{error}).
        @raise ValueError: For unknown environments or strategy.
        @raise SyncBusy: If another on-demand sync runs (and not C{wait}).
        @raise SyncUnavailable: If the service is not running.
        """
        for name in (source, target):
            if name not in self.databases:
                raise ValueError(
                    f"unknown environment {name!r}; expected "
                    + " or ".join(self.databases)
                )
        if source == target:
            raise ValueError(f"cannot sync {source} from itself")
        if strategy is None:
            strategy = "copy" if self.mode == "copy" else "migrate"
        if strategy not in ONE_SHOT:
            raise ValueError(
                f"unknown strategy {strategy!r}; expected "
                + " or ".join(ONE_SHOT)
                + (
                    " (mirror is continuous: --sync mirror)"
                    if strategy == MIRROR
                    else ""
                )
            )
        if onConflict is not None and onConflict not in CONFLICT_POLICIES:
            raise ValueError(
                f"unknown conflict policy {onConflict!r}; expected "
                + " or ".join(CONFLICT_POLICIES)
            )
        if not self.running:
            raise SyncUnavailable("the sync service is not running")
        if self._pending and not wait:
            raise SyncBusy("a sync is already running")
        self._pending += 1
        try:
            stop, start = (
                self.commands.get(target, (None, None))
                if strategy == "copy"
                else (None, None)
            )
            _log.info(
                "sync {strategy} {source} -> {target}{dry} asked by {who}",
                strategy=strategy,
                source=source,
                target=target,
                dry=" (dry run)" if dryRun else "",
                who=who,
                event="sync-start",
            )
            report = await self._run(
                source,
                target,
                strategy,
                dryRun,
                stop,
                start,
                who,
                strategy,
                onConflict or "keep-target",
            )
        finally:
            self._pending -= 1
        if not dryRun:
            _log.info(
                "sync {strategy} {source} -> {target} by {who}: {state}, "
                "{rows} rows, {conflicts} conflicts{error}",
                strategy=strategy,
                source=source,
                target=target,
                who=who,
                state="complete" if report.complete else "INCOMPLETE",
                rows=sum(report.copied.values()),
                conflicts=len(report.conflicts),
                error=f", error: {report.error}" if report.error else "",
                event="sync-done",
            )
        return report

    def start(
        self,
        source: str,
        target: str,
        strategy: str | None = None,
        dryRun: bool = False,
        who: str = "manhole",
    ) -> Deferred[SyncReport]:
        """
        L{sync}, as a Deferred (for the manhole, which prints it when it
        fires).
        """
        return Deferred.fromCoroutine(self.sync(source, target, strategy, dryRun, who))

    def switched(self, record: Switch, kind: str) -> None:
        """
        A switch happened (a L{bluegreen.controller.Controller} observer):
        bring over what the old live database took, in the background.

        @param record: The L{bluegreen.controller.Switch}.
        @param kind: failover, recovered, failback or manual.
        """
        d = self.afterSwitch(record.source, record.to)
        # sync() turns every failure into a report; this is for the rest.
        d.addErrback(lambda f: _log.failure("sync after the switch failed", f))

    def beforeSwitch(self, source: str, target: str) -> Deferred[SyncReport | None]:
        """
        For a planned switch from C{source} to C{target}: bring C{target}'s
        database up to date from C{source}'s (waiting for any running sync).

        The controller calls it before every planned switch (see
        L{bluegreen.controller.Controller.plannedSwitch}).

        @param source: The environment live now.
        @param target: The one about to be.
        @return: Fires with the report, or L{None} under C{--sync none}.
        """
        return self._hook(source, target, "before switch")

    def afterSwitch(self, source: str, target: str) -> Deferred[SyncReport | None]:
        """
        After a switch from C{source} to C{target} (or a failover away from
        a broken C{source}): one more pass for the rows C{source} took
        during the switch, while C{target} serves.  Always C{migrate}.

        Called after every switch (see L{switched}).

        @param source: The environment live before.
        @param target: The one live now.
        @return: Fires with the report, or L{None} under C{--sync none}.
        """
        # Always migrate: C{target} is live now, and a copy would replace
        # the file it is writing to.
        return self._hook(source, target, "after switch", "migrate")

    def _hook(
        self, source: str, target: str, why: str, strategy: str | None = None
    ) -> Deferred[SyncReport | None]:
        """
        A switch hook's sync: waits for others; none under C{--sync none}.
        """
        if self.mode == "none" or not self.running:
            return succeed(None)

        async def go() -> SyncReport | None:
            return await self.sync(
                source, target, strategy=strategy, who=why, wait=True
            )

        return Deferred.fromCoroutine(go())

    async def _run(
        self,
        source: str,
        target: str,
        strategy: str,
        dryRun: bool,
        stop: str | None,
        start: str | None,
        who: str,
        label: str,
        onConflict: str = "keep-target",
    ) -> SyncReport:
        """
        Run one sync through the syncer's lock and remember it.

        @param label: The C{strategy} recorded: C{strategy}, or C{mirror}.
        @param onConflict: The conflict policy (C{migrate}).
        """
        entry = {
            "from": source,
            "to": target,
            "strategy": label,
            "dry_run": dryRun,
            "who": who,
            "since": self.clock.seconds(),
        }
        self._inFlight.append(entry)
        try:
            report = await self.syncer.sync(
                parseLocation(self.databases[source]),
                parseLocation(self.databases[target]),
                strategy,
                dryRun=dryRun,
                stopCommand=stop,
                startCommand=start,
                onConflict=onConflict,
            )
        except Exception as e:
            _log.failure(
                "sync {source} -> {target} failed", source=source, target=target
            )
            report = SyncReport(
                strategy=strategy,
                source=self.databases[source],
                target=self.databases[target],
                dryRun=dryRun,
                error=f"{type(e).__name__}: {e}",
            )
        finally:
            self._inFlight.remove(entry)
            if not self._inFlight:
                # Told in a later turn, once the sync's caller has its report.
                waiters, self._idleWaiters = self._idleWaiters, []
                for waiter in waiters:
                    self.clock.callLater(0, waiter.callback, None)
        # When it ran (it may have waited for the lock).
        began = self.clock.seconds() - report.seconds
        if not dryRun:
            self._record(source, target, label, report, began, who)
        return report

    def _record(
        self,
        source: str,
        target: str,
        label: str,
        report: SyncReport,
        began: float,
        who: str,
    ) -> LastSync:
        """
        Remember a finished sync and count it.
        """
        way = direction(source, target)
        rows = sum(report.copied.values())
        last = LastSync(
            when=began,
            strategy=label,
            rowsCopied=rows,
            changes=report.changes,
            method=report.method,
            conflicts=len(report.conflicts),
            seconds=report.seconds,
            complete=report.complete,
            error=report.error,
            who=who,
        )
        self.last[way] = last
        key = (way, label, _result(report))
        self.counts[key] = self.counts.get(key, 0) + 1
        self.rowsCopied[way] = self.rowsCopied.get(way, 0) + rows
        self.changesApplied[way] = self.changesApplied.get(way, 0) + report.changes
        self.conflicts[way] = self.conflicts.get(way, 0) + len(report.conflicts)
        self.durations[way] = report.seconds
        return last

    # The mirror

    def startService(self) -> None:
        """
        Start the mirror loop (with C{--sync mirror}): a first pass now.
        """
        super().startService()
        # The mirror's first pass, now, installs the capture itself.
        if self.mode not in ("none", MIRROR):
            self._preparing = Deferred.fromCoroutine(self._prepare())
        if self.mode == MIRROR:
            self._mirroring = True
            self._schedule(0.0)
            _log.info(
                "sync: mirroring the live database to the standby: every row "
                "within {interval} s",
                interval=self.mirrorInterval,
            )

    async def _prepare(self) -> None:
        """
        Install the change capture in every database (or re-create its
        triggers) at start, so that the app's changes are captured from
        now on; a failure is logged, and the first sync tries again.
        """
        for name, where in self.databases.items():
            try:
                done = await self.syncer.prepare(parseLocation(where))
            except Exception as e:
                _log.warn(
                    "sync: could not install the change capture in {env}'s "
                    "database {db}: {error} (the first sync tries again)",
                    env=name,
                    db=where,
                    error=f"{type(e).__name__}: {e}",
                    event="sync-capture-failed",
                )
                continue
            if done is not None:
                _log.info(
                    "sync: change capture {done} in {env}'s database {db}",
                    done=done,
                    env=name,
                    db=where,
                    event="sync-capture",
                )
        self._preparing = None

    def _schedule(self, delay: float) -> None:
        """
        Run the next mirror turn in C{delay} seconds.
        """
        self._next = self.clock.callLater(delay, self._loopTurn)

    def _loopTurn(self) -> None:
        """
        One mirror turn, then schedule the next (see L{nextPassDelay}).
        """
        self._next = None
        started = self.clock.seconds()
        turn = self._tick() or succeed(None)
        self._loopDone = turn

        def again(result: object) -> None:
            self._loopDone = None
            if self._mirroring:
                spent = self.clock.seconds() - started
                self._schedule(nextPassDelay(self.mirrorInterval, spent))

        turn.addBoth(again)

    def stopService(self) -> Deferred[None]:
        """
        Stop the mirror loop, then wait for a running sync to end.
        """
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        """
        See L{stopService}.
        """
        self._mirroring = False
        call, done = self._next, self._loopDone
        self._next = None
        if call is not None and call.active():
            call.cancel()
        if done is not None:
            await done
        if self._preparing is not None:
            await self._preparing
        # Every sync running or waiting (on demand, a switch hook's).
        while self._inFlight:
            waiter: Deferred[None] = Deferred()
            self._idleWaiters.append(waiter)
            await waiter

    def _tick(self) -> Deferred[None] | None:
        """
        One mirror pass, unless a sync runs or waits.  Never fails (a
        failing pass must not end the mirror).
        """
        if self._pending or self.syncer.lock.locked:
            return None
        d = Deferred.fromCoroutine(self._pass())

        def unexpected(failure: Failure) -> None:
            _log.failure("sync: mirror pass failed unexpectedly", failure)

        return d.addErrback(unexpected)

    async def _pass(self) -> None:
        """
        Migrate the live database to the standby once.
        """
        source = self.controller.live.name
        target = self.controller.other(source).name
        way = direction(source, target)
        if way != self._mirrorDirection:
            self._mirrorDirection = way
            self._mirrorRows = None
        report = await self._run(
            source, target, "migrate", False, None, None, "mirror", MIRROR
        )
        last = self.last[way]
        self._mirrorLast = last
        self._mirrorRows = last.rowsCopied
        self._mirrorChanges = last.changes
        if report.complete:
            self._mirrorOK[way] = last.when
            if self._failures:
                _log.info(
                    "sync: mirror {way} works again after {n} failed pass(es)",
                    way=way,
                    n=self._failures,
                    event="sync-mirror-recovered",
                )
            self._failures, self._failure = 0, None
            return
        why = report.error or "; ".join(c.describe() for c in report.conflicts[:5]) + (
            f"; and {len(report.conflicts) - 5} more"
            if len(report.conflicts) > 5
            else ""
        )
        if not self._failures:
            _log.warn(
                "sync: mirror {way} failed: {why} (logged once until it works "
                "again; see the status)",
                way=way,
                why=why,
                event="sync-mirror-failed",
            )
        self._failures += 1
        self._failure = why

    def lag(self) -> float | None:
        """
        @return: Seconds since the start of the last complete mirror pass
            from the environment live now to the standby; L{None} if there
            was none (or no mirror).
        """
        if self.mode != MIRROR:
            return None
        source = self.controller.live.name
        way = direction(source, self.controller.other(source).name)
        when = self._mirrorOK.get(way)
        if when is None:
            return None
        return max(0.0, self.clock.seconds() - when)

    def lagChanges(self) -> int | None:
        """
        @return: How many captured changes the standby was behind when the
            last mirror pass started (the changes that pass applied);
            L{None} before the first pass (or without the mirror).
        """
        if self.mode != MIRROR:
            return None
        return self._mirrorChanges

    # Reporting

    def status(self) -> dict[str, Any]:
        """
        @return: The C{sync} section of C{GET /api/status} (and
            C{GET /api/sync}): the databases, the mode, the running sync,
            the last sync of each direction and the mirror.
        """
        mirror: dict[str, Any] | None = None
        if self.mode == MIRROR:
            source = self.controller.live.name
            lag = self.lag()
            mirror = {
                "interval": self.mirrorInterval,
                "running": self._mirroring,
                "direction": direction(source, self.controller.other(source).name),
                "lag": None if lag is None else round(lag, 3),
                "last_rows": self._mirrorRows,
                "last_changes": self._mirrorChanges,
                "last_pass": None
                if self._mirrorLast is None
                else self._mirrorLast.asJSON(),
                "failing": self._failures > 0,
                "failures": self._failures,
                "error": self._failure,
            }
        return {
            "mode": self.mode,
            "databases": dict(self.databases),
            "running": [dict(entry) for entry in self._inFlight],
            "last": {way: last.asJSON() for way, last in sorted(self.last.items())},
            "mirror": mirror,
        }


__all__ = [
    "LastSync",
    "SyncBusy",
    "SyncService",
    "SyncUnavailable",
    "direction",
]
