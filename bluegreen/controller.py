# -*- test-case-name: tests.test_controller,tests.test_failover_unit -*-
"""
The switch: which environment is live, and when it changes by itself.

The live environment is one reference to an immutable
L{bluegreen.environment.Environment}.  The proxy reads it exactly once per
request, so switching is a single assignment on the reactor thread: a request
goes wholly to one environment, requests in flight finish where they started,
and the next request, even on the same keep-alive connection, follows the
switch.

When it switches is decided by an explicit state machine (Automat), fed by the
health monitor's state changes and by operators:

  - C{serving}: the live environment is up (or not yet checked);
  - C{outage}: the live environment is down and so is the standby; the
    outage is logged every interval, and traffic moves as soon as either
    comes back;
  - C{failbackWaiting}: with C{--failback auto}, the preferred environment
    is back up as the standby and must stay up for C{failbackDelay} seconds
    before traffic returns to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from attrs import define, field, frozen
from automat import MethodicalMachine
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from bluegreen import statefile
from bluegreen.environment import COLOURS, Environment
from bluegreen.observers import tellObservers


class UnknownEnvironment(ValueError):
    """
    A name that is neither C{green} nor C{blue}.
    """


#: Called with every L{Switch} and its kind: C{"failover"} (the live
#: environment went down), C{"recovered"} (traffic was on a down environment
#: and the other came up), C{"failback"} (automatic) or C{"manual"}.
SwitchObserver = Callable[["Switch", str], None]


class SwitchRefused(Exception):
    """
    A switch that would be wrong (the target is down, or already live); the
    message says why.
    """


class Coordination(Protocol):
    """
    What the controller asks of several instances' shared state
    (L{bluegreen.fleet.coordinator.Coordinator}); without one, every switch
    is local.
    """

    def refusal(self, to: str) -> str | None:
        """
        @param to: The environment about to be made live.
        @return: Why this instance must not switch now (e.g. the shared
            state cannot be reached), or L{None}.
        """


@frozen
class Switch:
    """
    One change of the live environment.

    @ivar when: POSIX time of the switch.
    @ivar source: Name of the environment that was live before.
    @ivar to: Name of the environment that is live after.
    @ivar reason: Why, in words an operator can read.
    @ivar revision: The revision C{to} ran when it went live (empty when
        none was reported, see L{Controller.deployed}).
    """

    when: float
    source: str
    to: str
    reason: str
    revision: str = ""


@define(slots=False, eq=False)
class Controller:
    """
    Holds the live environment and switches it.

    @ivar environments: Every environment, by name.
    @ivar live: The live environment (read it once per request).
    @ivar clock: Supplies times and timers.
    @ivar history: The switches made so far, oldest first.
    @ivar why: Why the live environment is live (C{"start"}, a failover's
        reason, a manual switch...).
    @ivar isUp: Says whether an environment is known to be up (the health
        monitor's answer; everything counts as up without one).
    @ivar preferred: The environment C{--failback auto} returns to.
    @ivar failback: C{"manual"} or C{"auto"}.
    @ivar failbackDelay: Seconds the preferred environment must stay up
        before an automatic failback.
    @ivar outageInterval: Seconds between the error logs of an outage.
    @ivar stateFile: Where the live colour and history are saved, or L{None}.
    @ivar mode: The state machine's state, for operators: C{"serving"},
        C{"outage"} or C{"failback-pending"}.
    @ivar onSwitch: Observers told of every switch (see L{SwitchObserver}).
    @ivar beforeSwitch: Called with C{(source, target)} before a planned
        switch (an operator's, or an automatic failback) to bring the
        target's database up to date; returns a Deferred firing with the
        sync report (L{None} for no sync).  L{None}: no database sync.
    @ivar syncing: What the pre-switch sync is doing, while it runs.
    @ivar verify: Called with the target of an operator's planned switch
        (not forced) before anything else: the promotion checks (see
        L{bluegreen.promote.verify}); its Deferred fails with
        L{SwitchRefused} when a check fails.  L{None}: no checks.
    @ivar revisions: What each environment runs, as last reported (see
        L{deployed}); saved in the state file.
    @ivar onDeployed: Called with the name of an environment whenever a
        revision is reported for it.
    @ivar coordination: The state shared with other instances
        (C{--coordinate}), or L{None}: it may refuse a switch (L{Coordination})
        and calls L{adopt} to follow the others' switches.
    """

    environments: Mapping[str, Environment]
    live: Environment
    clock: IReactorTime
    history: list[Switch] = field(factory=list)
    why: str = "start"
    isUp: Callable[[str], bool | None] = lambda name: True
    preferred: str = "green"
    failback: str = "manual"
    failbackDelay: float = 30.0
    outageInterval: float = 5.0
    stateFile: str | None = None
    mode: str = "serving"
    _failbackCall: IDelayedCall | None = None
    _outageLog: LoopingCall | None = None
    _reasons: dict[str, str] = field(factory=dict)
    onSwitch: list[SwitchObserver] = field(factory=list)
    beforeSwitch: Callable[[str, str], Deferred[Any]] | None = None
    syncing: str | None = None
    verify: Callable[[str], Deferred[Any]] | None = None
    revisions: dict[str, statefile.Revision] = field(factory=dict)
    onDeployed: list[Callable[[str], object]] = field(factory=list)
    coordination: Coordination | None = None
    _log = Logger()
    _machine = MethodicalMachine()

    @classmethod
    def create(
        cls,
        environments: Mapping[str, Environment],
        active: str,
        clock: IReactorTime,
        stateFile: str | None = None,
        **settings: Any,
    ) -> Controller:
        """
        Make a controller with C{active} live, unless C{stateFile} says
        otherwise.

        @param environments: The environments by name.
        @param active: The environment live at start (and the preferred one).
        @param clock: Supplies the time of each switch and the timers.
        @param stateFile: The C{--state} file, if any.  A file that cannot be
            read is logged and ignored: the service starts from C{active}.
        @param settings: Further attributes (C{failback}, C{failbackDelay},
            C{outageInterval}, C{isUp}).
        @return: The controller.
        @raise UnknownEnvironment: If C{active} is not in C{environments}.
        """
        if active not in environments:
            raise UnknownEnvironment(_unknown(active, environments))
        live, why, history = active, "start", []
        revisions: dict[str, statefile.Revision] = {}
        if stateFile is not None:
            try:
                saved = statefile.load(stateFile, tuple(environments))
            except statefile.StateError as e:
                cls._log.error(
                    "state file ignored, starting with {active} live: {error}",
                    active=active,
                    error=str(e),
                )
            else:
                if saved is not None:
                    live, why = saved.live, f"restored from {stateFile}"
                    history = [
                        Switch(s.when, s.source, s.to, s.reason, s.revision)
                        for s in saved.history
                    ]
                revisions = dict(saved.revisions) if saved is not None else {}
        return cls(
            environments=environments,
            live=environments[live],
            clock=clock,
            history=history,
            why=why,
            preferred=active,
            stateFile=stateFile,
            revisions=revisions,
            **settings,
        )

    @property
    def active(self) -> str:
        """
        The name of the live environment.
        """
        return self.live.name

    def standby(self) -> Environment:
        """
        @return: The environment that is not live.
        @raise UnknownEnvironment: If there is only one environment.
        """
        return self.other(self.live.name)

    def other(self, name: str) -> Environment:
        """
        @return: The environment that is not C{name}.
        @raise UnknownEnvironment: If there is no other environment.
        """
        for candidate in COLOURS:
            if candidate in self.environments and candidate != name:
                return self.environments[candidate]
        raise UnknownEnvironment(f"there is no environment other than {name}")

    # Operators

    def switch(
        self, to: str, reason: str = "manual switch", force: bool = False
    ) -> Switch:
        """
        Make C{to} the live environment, if that is safe.

        @param to: C{"green"} or C{"blue"}.
        @param reason: Recorded in the history and the log.
        @param force: Switch even to an environment that is down.
        @return: The recorded L{Switch}.
        @raise UnknownEnvironment: If C{to} names no environment.
        @raise SwitchRefused: If C{to} is already live, or is down and
            C{force} is false.
        """
        self._checkSwitch(to, force)
        self._operatorSwitch(to, reason)
        record = self.history[-1]
        if self.isUp(to) is False and self.isUp(self.standby().name) is not True:
            # Forced onto a down environment with no healthy standby.
            self._standbyFailedLiveDown(f"{to} forced live while down")
        return record

    def _checkSwitch(self, to: str, force: bool) -> None:
        if to not in self.environments:
            raise UnknownEnvironment(_unknown(to, self.environments))
        if to == self.live.name:
            raise SwitchRefused(f"{to} is already live")
        if not force and self.isUp(to) is False:
            last = self._reasons.get(to, "failing its health checks")
            raise SwitchRefused(f"{to} is down ({last}); use force to switch anyway")
        refused = self.coordination and self.coordination.refusal(to)
        if refused:
            raise SwitchRefused(refused)

    async def plannedSwitch(
        self,
        to: str,
        reason: str = "manual switch",
        force: bool = False,
        verify: bool = True,
    ) -> tuple[Switch, Any]:
        """
        An operator's switch: first bring C{to}'s database up to date from
        the live one (when L{beforeSwitch} is set), then switch.

        The sync's report decides: an incomplete one (conflicts, an error)
        refuses the switch unless C{force}, so a switch never silently
        leaves rows behind.  The checks of L{switch} are made before the
        sync and again after it (health may have changed meanwhile).

        @param to: C{"green"} or C{"blue"}.
        @param reason: Recorded in the history and the log.
        @param force: Switch even to an environment that is down, or whose
            database could not be brought fully up to date.
        @param verify: Run the promotion checks (L{verify}) unless forced;
            a rollback does not.
        @return: The switch and the sync report (or L{None} without sync).
        @raise UnknownEnvironment: If C{to} names no environment.
        @raise SwitchRefused: As L{switch} does, or because the sync was
            incomplete.
        """
        self._checkSwitch(to, force)
        if self.verify is not None and verify and not force:
            await self.verify(to)
            # Health may have changed (or someone switched) meanwhile.
            self._checkSwitch(to, force)
        report = None
        if self.beforeSwitch is not None:
            source = self.live.name
            self.syncing = f"bringing {to}'s database up to date from {source}"
            try:
                report = await self.beforeSwitch(source, to)
            finally:
                self.syncing = None
            if report is not None and not report.complete and not force:
                raise SwitchRefused(
                    f"{to}'s database could not be brought up to date from "
                    f"{source}: {_incomplete(report)}; use force to switch anyway"
                )
        return self.switch(to, reason, force), report

    def deployed(self, name: str, revision: str, message: str = "") -> None:
        """
        Record what C{name} runs now (saved in the state file).

        @param name: C{"green"} or C{"blue"}.
        @param revision: The revision (a commit, a version...).
        @param message: What it is, in words.
        @raise UnknownEnvironment: If C{name} names no environment.
        """
        if name not in self.environments:
            raise UnknownEnvironment(_unknown(name, self.environments))
        self.revisions[name] = statefile.Revision(
            revision, message, self.clock.seconds()
        )
        self._log.info(
            "{env} now runs {revision}{message}",
            env=name,
            revision=revision,
            message=f" ({message})" if message else "",
            event="deployed",
        )
        self._save()
        tellObservers(self.onDeployed, self._log, "deployed", name)

    def adopt(self, live: str, why: str, history: Sequence[Switch]) -> None:
        """
        Follow the state shared with other instances: C{live} is live, with
        their history (no observer is told: this instance did not switch).

        @param live: The environment live in the shared state.
        @param why: Why it is live.
        @param history: The shared switches, oldest first.
        @raise UnknownEnvironment: If C{live} names no environment.
        """
        if live not in self.environments:
            raise UnknownEnvironment(_unknown(live, self.environments))
        previous, self.live = self.live, self.environments[live]
        self.history, self.why = list(history), why
        if self.mode == "failback-pending" and live == self.preferred:
            # Another instance failed back: nothing left to wait for.
            self._preferredLost()
        if previous.name != live:
            self._log.warn(
                "following the shared state: live environment {source} -> {to} "
                "({reason})",
                source=previous.name,
                to=live,
                reason=why,
                event="switch-followed",
            )
        self._save()

    def stop(self) -> None:
        """
        Cancel the controller's timers (the service is stopping).
        """
        self._cancelFailback()
        self._stopOutageLog()

    # Health

    def healthChanged(self, name: str, up: bool, reason: str) -> None:
        """
        An environment changed state (the health monitor's observer).

        @param name: The environment.
        @param up: Its new state.
        @param reason: The check result that decided it.
        """
        self._reasons[name] = reason
        if name == self.live.name:
            standby = self.isUp(self.standby().name)
            if up:
                self._liveRecovered()
            elif standby:
                self._liveFailed(reason)
            elif standby is False:
                self._liveFailedNoStandby(reason)
            # Otherwise the standby's first check has not decided yet: its
            # result (up or down) moves traffic or starts the outage.
        elif up:
            if self.isUp(self.live.name) is False:
                # Traffic is on an environment that is down (an outage, or
                # a forced switch): the one that came up takes over.
                self._standbyRecoveredLiveDown()
            else:
                self._standbyRecovered()
            # Recovering may have made it live (ending an outage).
            if (
                self.failback == "auto"
                and name == self.preferred
                and name != self.live.name
            ):
                self._preferredReady()
        else:
            if self.failback == "auto" and name == self.preferred:
                self._preferredLost()
            if self.isUp(self.live.name) is False:
                self._standbyFailedLiveDown(reason)

    # The state machine

    @_machine.state(initial=True)
    def _serving(self) -> None:
        "The live environment is up, or not yet checked."

    @_machine.state()
    def _outage(self) -> None:
        "Both environments are down."

    @_machine.state()
    def _failbackWaiting(self) -> None:
        "The preferred environment is up as standby; waiting to fail back."

    @_machine.input()
    def _liveFailed(self, reason: str) -> None:
        "The live environment went down; the standby is up."

    @_machine.input()
    def _liveFailedNoStandby(self, reason: str) -> None:
        "The live environment went down; the standby is not up either."

    @_machine.input()
    def _liveRecovered(self) -> None:
        "The live environment came (back) up."

    @_machine.input()
    def _standbyRecovered(self) -> None:
        "The standby came (back) up."

    @_machine.input()
    def _standbyRecoveredLiveDown(self) -> None:
        "The standby came (back) up while the live environment is down."

    @_machine.input()
    def _standbyFailedLiveDown(self, reason: str) -> None:
        "The standby went down while the live environment is down too."

    @_machine.input()
    def _preferredReady(self) -> None:
        "The preferred environment is up as the standby (auto failback)."

    @_machine.input()
    def _preferredLost(self) -> None:
        "The preferred standby went down again."

    @_machine.input()
    def _failbackDue(self) -> None:
        "The preferred environment stayed up for the failback delay."

    @_machine.input()
    def _operatorSwitch(self, to: str, reason: str) -> None:
        "An operator switched (already checked by L{switch})."

    @_machine.output()
    def _failover(self, reason: str) -> None:
        self._switchTo(
            self.standby().name,
            f"failover: {self.live.name} down: {reason}",
            "failover",
        )

    @_machine.output()
    def _switchToRecovered(self) -> None:
        name = self.standby().name
        self._switchTo(
            name,
            f"failover: {name} recovered while {self.live.name} is down",
            "recovered",
        )

    @_machine.output()
    def _failBack(self) -> None:
        self._failbackCall = None
        self._switchTo(
            self.preferred,
            f"failback: {self.preferred} up for {self.failbackDelay:g} s",
            "failback",
        )

    @_machine.output()
    def _manual(self, to: str, reason: str) -> None:
        self._switchTo(to, reason, "manual")

    @_machine.output()
    def _startOutage(self, reason: str) -> None:
        self.mode = "outage"
        self._logOutage()
        self._outageLog = LoopingCall(self._logOutage)
        self._outageLog.clock = self.clock
        self._outageLog.start(self.outageInterval, now=False)

    @_machine.output()
    def _endOutage(self) -> None:
        self._stopOutageLog()
        self.mode = "serving"
        self._log.info(
            "outage over: {env} is up", env=self.live.name, event="outage-over"
        )

    @_machine.output()
    def _startFailbackTimer(self) -> None:
        self.mode = "failback-pending"
        self._log.info(
            "{preferred} is up: failing back in {delay} s unless it fails again",
            preferred=self.preferred,
            delay=self.failbackDelay,
        )
        self._failbackCall = self.clock.callLater(
            self.failbackDelay, self._failbackTimerFired
        )

    @_machine.output()
    def _cancelFailbackTimer(self) -> None:
        self._cancelFailback()
        self.mode = "serving"

    _serving.upon(_liveFailed, enter=_serving, outputs=[_failover])
    _serving.upon(_liveFailedNoStandby, enter=_outage, outputs=[_startOutage])
    _serving.upon(_liveRecovered, enter=_serving, outputs=[])
    _serving.upon(
        _standbyRecoveredLiveDown, enter=_serving, outputs=[_switchToRecovered]
    )
    _serving.upon(_standbyFailedLiveDown, enter=_outage, outputs=[_startOutage])
    _outage.upon(
        _standbyRecoveredLiveDown,
        enter=_serving,
        outputs=[_switchToRecovered, _endOutage],
    )
    _outage.upon(_standbyFailedLiveDown, enter=_outage, outputs=[])
    _failbackWaiting.upon(
        _standbyRecoveredLiveDown,
        enter=_serving,
        outputs=[_cancelFailbackTimer, _switchToRecovered],
    )
    _failbackWaiting.upon(
        _standbyFailedLiveDown,
        enter=_outage,
        outputs=[_cancelFailbackTimer, _startOutage],
    )
    _serving.upon(_standbyRecovered, enter=_serving, outputs=[])
    _serving.upon(
        _preferredReady, enter=_failbackWaiting, outputs=[_startFailbackTimer]
    )
    _serving.upon(_preferredLost, enter=_serving, outputs=[])
    _serving.upon(_operatorSwitch, enter=_serving, outputs=[_manual])

    # Switch first, so "outage over" names the environment now live.
    _outage.upon(
        _standbyRecovered, enter=_serving, outputs=[_switchToRecovered, _endOutage]
    )
    _outage.upon(_liveRecovered, enter=_serving, outputs=[_endOutage])
    _outage.upon(_preferredReady, enter=_outage, outputs=[])
    _outage.upon(_liveFailed, enter=_serving, outputs=[_failover, _endOutage])
    _outage.upon(_preferredLost, enter=_outage, outputs=[])
    _outage.upon(_liveFailedNoStandby, enter=_outage, outputs=[])
    _outage.upon(_operatorSwitch, enter=_outage, outputs=[_manual])

    _failbackWaiting.upon(
        _failbackDue, enter=_serving, outputs=[_cancelFailbackTimer, _failBack]
    )
    _failbackWaiting.upon(
        _preferredLost, enter=_serving, outputs=[_cancelFailbackTimer]
    )
    _failbackWaiting.upon(
        _liveFailed, enter=_serving, outputs=[_cancelFailbackTimer, _failover]
    )
    _failbackWaiting.upon(
        _liveFailedNoStandby,
        enter=_outage,
        outputs=[_cancelFailbackTimer, _startOutage],
    )
    _failbackWaiting.upon(_liveRecovered, enter=_failbackWaiting, outputs=[])
    _failbackWaiting.upon(_standbyRecovered, enter=_failbackWaiting, outputs=[])
    # A repeated "up" of the preferred keeps the timer already running.
    _failbackWaiting.upon(_preferredReady, enter=_failbackWaiting, outputs=[])
    _failbackWaiting.upon(
        _operatorSwitch, enter=_serving, outputs=[_cancelFailbackTimer, _manual]
    )

    # Helpers of the outputs

    def _switchTo(self, to: str, reason: str, kind: str) -> None:
        refused = self.coordination and self.coordination.refusal(to)
        if refused:
            self._log.warn(
                "not switching {source} -> {to} ({reason}): {refused}",
                source=self.live.name,
                to=to,
                reason=reason,
                refused=refused,
                event="switch-not-made",
            )
            return
        previous = self.live
        # The one assignment that moves traffic.
        self.live = self.environments[to]
        running = self.revisions.get(to)
        record = Switch(
            self.clock.seconds(),
            previous.name,
            to,
            reason,
            "" if running is None else running.revision,
        )
        self.history.append(record)
        self.why = reason
        self._log.warn(
            "switched live environment {source} -> {to} ({reason})",
            source=previous.name,
            to=to,
            reason=reason,
            event="switch",
        )
        self._save()
        tellObservers(self.onSwitch, self._log, "switch", record, kind)

    def _save(self) -> None:
        if self.stateFile is not None:
            try:
                statefile.save(
                    self.stateFile, self.live.name, self.history, self.revisions
                )
            except OSError as e:
                self._log.error(
                    "cannot save state to {path}: {error}",
                    path=self.stateFile,
                    error=str(e),
                )

    def _logOutage(self) -> None:
        details = "; ".join(
            f"{name}: {self._reasons.get(name, 'not checked yet')}"
            for name in self.environments
        )
        self._log.error(
            "both environments are down ({details}); still sending traffic to "
            "{live}, will switch as soon as one is up",
            details=details,
            live=self.live.name,
            event="outage",
        )

    def _stopOutageLog(self) -> None:
        loop, self._outageLog = self._outageLog, None
        if loop is not None and loop.running:
            loop.stop()

    def _failbackTimerFired(self) -> None:
        self._failbackCall = None
        if self.beforeSwitch is None:
            self._failbackDue()
            return
        # A planned switch: the preferred environment's database first.
        source, target = self.live.name, self.preferred
        self.syncing = f"bringing {target}'s database up to date from {source}"
        d = self.beforeSwitch(source, target)

        def synced(report: Any) -> None:
            self.syncing = None
            if self.mode != "failback-pending":
                return  # it failed again, or an operator acted meanwhile
            if isinstance(report, Failure) or (
                report is not None and not report.complete
            ):
                why = (
                    report.getErrorMessage()
                    if isinstance(report, Failure)
                    else _incomplete(report)
                )
                self._log.warn(
                    "failback to {target} postponed {delay} s: its database "
                    "could not be brought up to date from {source}: {why}",
                    target=target,
                    source=source,
                    delay=f"{self.failbackDelay:g}",
                    why=why,
                    event="failback-postponed",
                )
                self._failbackCall = self.clock.callLater(
                    self.failbackDelay, self._failbackTimerFired
                )
                return
            self._failbackDue()

        d.addBoth(synced)

    def _cancelFailback(self) -> None:
        call, self._failbackCall = self._failbackCall, None
        if call is not None and call.active():
            call.cancel()


def _incomplete(report: Any) -> str:
    """
    Say why a sync report is incomplete, in a few words.
    """
    if report.error:
        return str(report.error)
    count = len(report.conflicts)
    return f"{count} conflict{'s' if count != 1 else ''}"


def _unknown(name: str, environments: Mapping[str, Environment]) -> str:
    known = " or ".join(environments)
    return f"unknown environment {name!r}; expected {known}"
