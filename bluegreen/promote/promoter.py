# -*- test-case-name: tests.test_promote,tests.test_promote_integration -*-
"""
The promotion workflow's service: promote the standby (its checks first,
see L{bluegreen.promote.verify}), promote it by itself with
C{--auto-promote} (Argo Rollouts' C{autoPromotionSeconds}), and say so in
the admin API's status.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool

from bluegreen.controller import Controller, Switch, SwitchRefused
from bluegreen.promote.analysis import Analysis
from bluegreen.promote.settings import PromotionSettings
from bluegreen.promote.verify import Verifier


class Promoter:
    """
    Promotes the standby, by request or by itself.

    @ivar controller: The switch.
    @ivar verifier: Runs the checks.
    @ivar settings: The workflow's settings.
    @ivar clock: Times automatic promotions.
    @ivar pool: The checks' connection pool (closed when stopping).
    @ivar previewURL: Says where the preview listens, or L{None}.
    @ivar pending: C{(environment, revision, when)} of the automatic
        promotion waiting to run, or L{None}.
    @ivar analysis: The post-promotion analysis, or L{None}.
    """

    _log = Logger()

    def __init__(
        self,
        controller: Controller,
        verifier: Verifier,
        clock: IReactorTime,
        pool: HTTPConnectionPool | None = None,
        previewURL: Callable[[], str | None] = lambda: None,
    ) -> None:
        """
        @param controller: The switch.
        @param verifier: Runs the checks.
        @param clock: Times automatic promotions.
        @param pool: The checks' connection pool, closed when stopping.
        @param previewURL: Says where the preview listens.
        """
        self.controller = controller
        self.verifier = verifier
        self.settings: PromotionSettings = verifier.settings
        self.clock = clock
        self.pool = pool
        self.previewURL = previewURL
        self.pending: tuple[str, str, float] | None = None
        self.analysis: Analysis | None = None
        self.stopped = False
        self._call: IDelayedCall | None = None
        self._promoting: Deferred[Any] | None = None
        controller.onDeployed.append(self.deployed)

    async def promote(self, who: str, force: bool = False) -> tuple[Switch, Any]:
        """
        Switch to the standby, if its checks pass (a planned switch: the
        database sync runs too, when configured).

        @param who: Who asks, for the history (C{"admin API from ..."}).
        @param force: Skip the checks (and switch even to a down standby).
        @return: The switch and the sync report, as
            L{Controller.plannedSwitch}.
        @raise SwitchRefused: Naming the failed checks, or why else.
        """
        controller = self.controller
        to = controller.standby().name
        running = controller.revisions.get(to)
        reason = f"promoted via {who}"
        if running is not None:
            reason += f": {running.revision}"
            if running.message:
                reason += f" ({running.message})"
        if force:
            reason += ", forced"
        elif self.settings.verifies:
            count = len(self.settings.checks) + (self.settings.command is not None)
            reason += f", {count} check{'s' if count != 1 else ''} passed"
        self._cancel()
        return await controller.plannedSwitch(to, reason, force=force)

    def deployed(self, name: str) -> None:
        """
        A revision was reported (L{Controller.onDeployed}): with
        C{--auto-promote}, promote it that long after, if it is the
        standby's.

        @param name: The environment.
        """
        delay = self.settings.autoPromote
        if delay is None or self.stopped:
            return
        if name == self.controller.live.name:
            return
        self._cancel()
        revision = self.controller.revisions[name].revision
        self.pending = (name, revision, self.clock.seconds() + delay)
        self._log.info(
            "auto-promotion: {env} ({revision}) goes live in {delay} s if its "
            "checks pass",
            env=name,
            revision=revision,
            delay=f"{delay:g}",
            event="auto-promotion-pending",
        )
        self._call = self.clock.callLater(delay, self._due, name, revision)

    def _due(self, name: str, revision: str) -> None:
        self._call = None
        self.pending = None
        current = self.controller.revisions.get(name)
        if name == self.controller.live.name or current is None:
            return
        if current.revision != revision:
            return  # a newer report has its own timer
        self._promoting = Deferred.fromCoroutine(self._auto(revision))

    async def _auto(self, revision: str) -> None:
        try:
            await self.promote(f"auto-promotion after {self.settings.autoPromote:g} s")
        except SwitchRefused as e:
            self._log.warn(
                "auto-promotion of {revision} refused: {why}",
                revision=revision,
                why=str(e),
                event="auto-promotion-refused",
            )
        except CancelledError:
            pass  # the service is stopping
        except Exception:
            self._log.failure("auto-promotion of {revision} failed", revision=revision)
        finally:
            self._promoting = None

    def _cancel(self) -> None:
        call, self._call = self._call, None
        self.pending = None
        if call is not None and call.active():
            call.cancel()

    def status(self) -> dict[str, Any]:
        """
        @return: The C{promotion} section of the admin API's status: the
            preview's URL and the environment it shows, the checks, the
            last verification and a pending automatic promotion.
        """
        settings = self.settings
        last = self.verifier.last
        pending = self.pending
        checks = [f"{c.describe()} = {c.expected()}" for c in settings.checks]
        if settings.command is not None:
            checks.append(f"command {settings.command!r}")
        return {
            "preview": self.previewURL(),
            "previewShows": self.controller.standby().name,
            "checks": checks,
            "autoPromote": settings.autoPromote,
            "pending": None
            if pending is None
            else {"environment": pending[0], "revision": pending[1], "at": pending[2]},
            "last": None if last is None else last.asJSON(),
            "analysis": None if self.analysis is None else self.analysis.status(),
        }

    def stop(self) -> Deferred[None]:
        """
        Cancel the pending promotion and the checks in flight; close the
        checks' pool (the service is stopping).

        @return: Fires once the pool is closed.
        """
        self.stopped = True
        self._cancel()
        if self.analysis is not None:
            self.analysis.stop()
        self.verifier.stop()
        promoting, self._promoting = self._promoting, None
        if promoting is not None:
            promoting.cancel()
        if self.pool is not None:
            closed: Deferred[None] = self.pool.closeCachedConnections()
            return closed
        return succeed(None)
