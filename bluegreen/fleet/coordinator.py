# -*- test-case-name: tests.test_fleet,tests.test_fleet_integration -*-
"""
L{Coordinator}: one instance's part in the state several share.

  - At start, and whenever Redis is reachable again, it reads the state
    (recording this instance's live colour if there is none yet) and the
    controller adopts it (L{bluegreen.controller.Controller.adopt}).
  - Every switch the controller makes (a failover, a failback, an
    operator's) is proposed with the compare-and-set on the generation it
    knows.  The switch is made locally at once, so traffic never waits on
    Redis; if another instance switched first, this one adopts the shared
    state instead (after a failover seen by every instance at once: the
    same colour, and the history of the one that won).
  - Every announcement is followed as it arrives (a pub/sub message: a few
    milliseconds).
  - While Redis is unreachable the controller keeps the last known colour
    and, unless the fallback is C{local}, refuses to switch
    (L{Coordinator.refusal}); the outage is logged once, and shown in the
    status and metrics.  A switch made alone meanwhile (C{local}) is
    proposed when Redis is back, if nobody switched in between.
  - Observers that must run on one instance only (the sync after a switch)
    are wrapped with L{Coordinator.ifWon}.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from typing import Any, Protocol

from attrs import evolve
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bluegreen.controller import Controller, Switch, SwitchObserver, SwitchRefused
from bluegreen.flags.link import LinkDown, RedisReplyError
from bluegreen.fleet.state import SYNC_CLAIM, BadRecord, FleetState, SharedSwitch

#: C{--coordinate-fallback} values.
FALLBACKS = ("none", "local")

#: The controller's C{beforeSwitch}: C{(source, target)} to a Deferred report.
BeforeSwitch = Callable[[str, str], Deferred[Any]]


class Backend(Protocol):
    """
    Where the shared state is (L{bluegreen.fleet.redis.RedisBackend}, or an
    in-memory one in tests).
    """

    onReady: Callable[[], None]
    onDown: Callable[[], None]
    onMessage: Callable[[str], None]

    @property
    def ready(self) -> bool:
        """
        C{True} while it can be used and announcements arrive.
        """

    @property
    def error(self) -> str | None:
        """
        Why it cannot be reached.
        """

    def describe(self) -> str:
        """
        Where it is, for messages.
        """

    def start(self) -> None:
        """
        Connect (and reconnect).
        """

    def stop(self) -> Deferred[None]:
        """
        Disconnect.
        """

    async def read(self, active: str) -> FleetState:
        """
        Read the state, recording C{active} as live if there is none.
        """

    async def propose(self, expected: int, record: SharedSwitch) -> tuple[bool, int]:
        """
        The compare-and-set; returns whether it was made and the generation.
        """

    async def claim(self, instance: str, seconds: float) -> str | None:
        """
        Claim the sync before a switch; L{None}, or who holds it.
        """

    async def release(self, instance: str) -> None:
        """
        Release the claim.
        """


def instanceName() -> str:
    """
    A name for this instance in the shared history: host, process and a
    random part (several instances may run in one process in tests).
    """
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Coordinator(Service):
    """
    Keeps one controller in step with the shared state (see the module
    docstring).

    @ivar controller: The controller kept in step.
    @ivar backend: Where the state is.
    @ivar fallback: C{"none"} (no switch while unreachable) or C{"local"}.
    @ivar instance: This instance's name in the history.
    @ivar state: The shared state as last known, or L{None} before it was
        first read.
    @ivar reachable: C{True} while the state is read and followed.
    @ivar outageSince: When Redis became unreachable (POSIX time), or
        L{None}.
    @ivar counts: Proposals C{won}, C{lost}, C{unsent}, and switches
        C{followed}.
    @ivar failedAttempts: Connection attempts failed or connections lost
        since start.
    """

    _log = Logger()

    def __init__(
        self,
        controller: Controller,
        backend: Backend,
        clock: IReactorTime,
        fallback: str = "none",
        instance: str | None = None,
    ) -> None:
        """
        @param controller: The controller to keep in step; its switches are
            proposed from now on.
        @param backend: Where the state is.
        @param clock: Keeps time.
        @param fallback: C{"none"} or C{"local"}.
        @param instance: This instance's name (L{instanceName} if L{None}).
        """
        self.controller = controller
        self.backend = backend
        self.clock = clock
        self.fallback = fallback
        self.instance = instance or instanceName()
        self.state: FleetState | None = None
        self.reachable = False
        self.outageSince: float | None = clock.seconds()
        self.counts = dict.fromkeys(("won", "lost", "unsent", "followed"), 0)
        self.failedAttempts = 0
        self._outcomes: dict[Switch, Deferred[bool]] = {}
        self._unsent: tuple[int, SharedSwitch] | None = None
        self._reading = False
        self._readAgain = False
        self._logged = False
        backend.onReady = self._ready
        backend.onDown = self._down
        backend.onMessage = self._message
        controller.coordination = self
        # First: the observers wrapped with ifWon look the outcome up.
        controller.onSwitch.insert(0, self._switched)

    # Service

    def startService(self) -> None:
        """
        Connect to Redis.
        """
        super().startService()
        self.backend.start()

    def stopService(self) -> Deferred[None]:
        """
        Disconnect.
        """
        super().stopService()
        self.reachable = False
        return self.backend.stop()

    # What others ask

    def refusal(self, to: str) -> str | None:
        """
        The controller's question before each switch (L{Coordination}).

        @param to: The environment about to be live.
        @return: Why not now, or L{None}.
        """
        if to == self.controller.live.name:
            return f"{to} is already live (the shared state says so)"
        if self.reachable or self.fallback == "local":
            return None
        return (
            f"the coordination Redis at {self.backend.describe()} cannot be "
            f"reached ({self.backend.error or 'not connected yet'}); keeping "
            f"{self.controller.live.name} (--coordinate-fallback none)"
        )

    @property
    def proposing(self) -> bool:
        """
        C{True} while a switch made here waits for its compare-and-set.
        """
        return bool(self._outcomes)

    def ifWon(self, observer: SwitchObserver) -> SwitchObserver:
        """
        Wrap a switch observer so that it runs only on the instance whose
        switch was recorded (or made alone while Redis was unreachable).

        @param observer: E.g. the sync's C{switched}.
        @return: The observer to register instead.
        """

        def wrapped(record: Switch, kind: str) -> None:
            outcome = self._outcomes.get(record)
            if outcome is None:
                observer(record, kind)
                return

            def decided(won: bool) -> None:
                if won:
                    observer(record, kind)

            outcome.addCallback(decided)

        return wrapped

    def exclusive(self, beforeSwitch: BeforeSwitch) -> BeforeSwitch:
        """
        Wrap the sync run before a planned switch (an operator's, or an
        automatic failback) so that one instance at a time runs it: every
        instance with C{--failback auto} sees the preferred environment come
        back, but only the one that claims the sync syncs and switches; the
        others are refused (a failback is then postponed, and they follow).

        @param beforeSwitch: The sync's C{beforeSwitch}.
        @return: What to set as the controller's C{beforeSwitch}.
        """

        async def run(source: str, target: str) -> Any:
            refused = self.refusal(target)
            if refused:
                raise SwitchRefused(refused)
            if not self.reachable:  # --coordinate-fallback local
                return await beforeSwitch(source, target)
            try:
                holder = await self.backend.claim(self.instance, SYNC_CLAIM)
            except (LinkDown, RedisReplyError) as e:
                raise SwitchRefused(
                    f"cannot claim the sync in the coordination Redis ({e})"
                ) from None
            if holder is not None:
                raise SwitchRefused(
                    f"instance {holder} is already syncing for a switch"
                )
            try:
                return await beforeSwitch(source, target)
            finally:
                try:
                    await self.backend.release(self.instance)
                except (LinkDown, RedisReplyError):
                    pass  # It expires by itself.

        def wrapped(source: str, target: str) -> Deferred[Any]:
            return Deferred.fromCoroutine(run(source, target))

        return wrapped

    def status(self) -> dict[str, Any]:
        """
        The C{coordination} section of C{/api/status}.
        """
        state = self.state
        last = state.history[-1] if state is not None and state.history else None
        return {
            "redis": self.backend.describe(),
            "reachable": self.reachable,
            "error": None if self.reachable else self.backend.error,
            "since": self.outageSince,
            "fallback": self.fallback,
            "instance": self.instance,
            "generation": None if state is None else state.generation,
            "shared_live": None if state is None else state.live,
            # Who won it: the status's own history is the shared one.
            "last_switch": (
                f"generation {last.generation} by {last.instance} ({last.kind})"
                if last is not None
                else None
            ),
            "note": (
                None
                if self.reachable
                else f"shared state unreachable: keeping "
                f"{self.controller.live.name}"
                + (", switching alone" if self.fallback == "local" else "")
            ),
        }

    # From the backend

    def _ready(self) -> None:
        """
        Both connections are usable: read the state again.
        """
        self._resync()

    def _down(self) -> None:
        """
        An attempt failed or a connection went: an outage, logged once.
        """
        self.reachable = False
        self.failedAttempts += 1
        if self.outageSince is None:
            self.outageSince = self.clock.seconds()
        if not self._logged and self.running:
            self._logged = True
            self._log.warn(
                "coordination Redis at {redis} is unreachable: {error}; keeping "
                "{live} live{alone}",
                redis=self.backend.describe(),
                error=self.backend.error or "connection lost",
                live=self.controller.live.name,
                alone=(
                    ", switching alone if needed (--coordinate-fallback local)"
                    if self.fallback == "local"
                    else ", no switch until it is back"
                ),
                event="coordination-down",
            )

    def _message(self, text: str) -> None:
        """
        A switch announced (by any instance, this one included).
        """
        try:
            record = SharedSwitch.decode(text)
        except BadRecord as e:
            self._log.warn("ignoring a switch announcement: {e}", e=str(e))
            return
        state = self.state
        if state is None or record.generation <= state.generation:
            return
        if record.generation == state.generation + 1:
            if record.instance != self.instance:
                self.counts["followed"] += 1
            self._adopt(state.followed(record))
            return
        # Announcements were missed: follow now, then read the history.
        self._adopt(FleetState(record.to, record.generation, state.history))
        self._resync()

    # From the controller

    def _switched(self, record: Switch, kind: str) -> None:
        """
        The controller switched: propose it.
        """
        outcome: Deferred[bool] = Deferred()
        self._outcomes[record] = outcome
        state = self.state
        if state is None or not self.reachable:
            self._keepUnsent(state, record, kind)
            self._decided(record, True)
            return
        shared = self._shared(state.generation, record, kind)
        Deferred.fromCoroutine(self._propose(state.generation, shared, record))

    def _shared(self, generation: int, record: Switch, kind: str) -> SharedSwitch:
        return SharedSwitch(
            generation + 1,
            record.when,
            record.source,
            record.to,
            record.reason,
            kind,
            self.instance,
        )

    def _keepUnsent(self, state: FleetState | None, record: Switch, kind: str) -> None:
        """
        A switch made alone: proposed once Redis is back.
        """
        base = -1 if state is None else state.generation
        self._unsent = (base, self._shared(base, record, kind))
        self.counts["unsent"] += 1

    async def _propose(
        self, expected: int, shared: SharedSwitch, record: Switch
    ) -> None:
        """
        Run the compare-and-set; adopt the state if another won.
        """
        try:
            made, generation = await self.backend.propose(expected, shared)
        except (LinkDown, RedisReplyError, BadRecord) as e:
            self._log.warn(
                "switch to {to} made here but not recorded ({error}); proposed "
                "again once the coordination Redis answers",
                to=shared.to,
                error=str(e),
                event="coordination-unsent",
            )
            self._unsent = (expected, shared)
            self.counts["unsent"] += 1
            self._decided(record, True)
            return
        if made:
            self.counts["won"] += 1
            state = self.state
            if state is not None and state.generation == expected:
                self._adopt(state.followed(shared))
            self._decided(record, True)
            return
        self.counts["lost"] += 1
        self._log.info(
            "switch to {to} not recorded: another instance switched first "
            "(generation {generation}); following the shared state",
            to=shared.to,
            generation=generation,
            event="coordination-lost",
        )
        self._decided(record, False)
        self._resync()

    def _decided(self, record: Switch, won: bool) -> None:
        outcome = self._outcomes.pop(record, None)
        if outcome is not None:
            outcome.callback(won)

    # Reading

    def _resync(self) -> None:
        """
        Read the state and adopt it (once at a time; again if asked
        meanwhile).
        """
        if self._reading:
            self._readAgain = True
            return
        self._reading = True
        Deferred.fromCoroutine(self._read())

    async def _read(self) -> None:
        try:
            while True:
                self._readAgain = False
                try:
                    state = await self.backend.read(self.controller.live.name)
                except (LinkDown, RedisReplyError, BadRecord) as e:
                    self._log.warn(
                        "cannot read the shared state from {redis}: {error}",
                        redis=self.backend.describe(),
                        error=str(e),
                        event="coordination-read-failed",
                    )
                    return
                if not self._readAgain:
                    break
        finally:
            self._reading = False
        if not self.backend.ready:
            return
        await self._sendUnsent(state)

    async def _sendUnsent(self, state: FleetState) -> None:
        """
        Adopt C{state} (first proposing a switch made alone meanwhile, if
        nobody switched since), and say the outage is over.
        """
        unsent, self._unsent = self._unsent, None
        if unsent is not None:
            base, shared = unsent
            known = base if base >= 0 else state.generation
            if state.generation == known and state.live == shared.source:
                shared = evolve(shared, generation=known + 1)
                try:
                    made, _ = await self.backend.propose(known, shared)
                except (LinkDown, RedisReplyError, BadRecord):
                    self._unsent = unsent
                    return
                if made:
                    self.counts["won"] += 1
                    state = state.followed(shared)
        wasDown = not self.reachable
        self._adopt(state)
        self.reachable = True
        if wasDown:
            # Only then: reconsidering after every read could make two
            # instances that disagree about health switch back and forth.
            self._reconnected(state)
            self._reconsider()

    def _reconnected(self, state: FleetState) -> None:
        """
        Say the state is read (again).
        """
        since, self.outageSince = self.outageSince, None
        if self._logged and since is not None:
            self._log.info(
                "coordination Redis at {redis} is reachable again after {down} s; "
                "state read again: {live} live, generation {generation}",
                redis=self.backend.describe(),
                down=f"{self.clock.seconds() - since:.1f}",
                live=state.live,
                generation=state.generation,
                event="coordination-up",
            )
        else:
            self._log.info(
                "coordination through {redis}: {live} live, generation "
                "{generation} (instance {instance})",
                redis=self.backend.describe(),
                live=state.live,
                generation=state.generation,
                instance=self.instance,
                event="coordination-connected",
            )
        self._logged = False

    def _adopt(self, state: FleetState) -> None:
        """
        Make C{state} this instance's.
        """
        self.state = state
        if state.live not in self.controller.environments:
            self._log.error(
                "the shared state names {live}, which is no environment here",
                live=state.live,
            )
            return
        history = [record.asSwitch() for record in state.history]
        self.controller.adopt(state.live, state.why, history)

    def _reconsider(self) -> None:
        """
        After reading the state: if its live environment is down here and
        the other is up, propose the failover (a switch refused while Redis
        was unreachable, or one nobody made).
        """
        controller = self.controller
        live = controller.live.name
        try:
            standby = controller.standby().name
        except ValueError:
            return
        if controller.isUp(live) is False and controller.isUp(standby):
            controller.healthChanged(live, False, "down when the shared state was read")
