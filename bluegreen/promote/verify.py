# -*- test-case-name: tests.test_promote,tests.test_promote_integration -*-
"""
The promotion checks (Argo Rollouts' pre-promotion analysis): smoke checks
run against the standby before a planned switch.

  - each C{--verify PATH[=STATUSES]} is a C{GET} through treq (the health
    checks' client, L{bluegreen.healthclient}: a new connection per check,
    the proxy's way of connecting), which must answer one of the statuses
    within C{--verify-timeout};
  - C{--verify-command CMD} runs C{sh -c CMD} (in its own process group,
    killed at the timeout or when cancelled: the sync's
    L{ProcessRunner}), with C{BLUEGREEN_PREVIEW_URL} and
    C{BLUEGREEN_ENVIRONMENT} set; exit 0 passes.

The checks reach the standby through the C{--preview} listener when there is
one (what an operator tries is what is checked), else directly at its URL.
Every check runs, so a refusal names each one that failed and what it got.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from typing import Any, cast

import treq
from attrs import define, field, frozen
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from bluegreen.checkfailure import describeCheckFailure
from bluegreen.controller import Controller, SwitchRefused
from bluegreen.promote.settings import PathCheck, PromotionSettings
from bluegreen.sync.process import (
    MINIMAL_ENV,
    ProcessFailed,
    ProcessReactor,
    ProcessRunner,
    Tools,
)

#: The most characters of a command's output a refusal quotes.
OUTPUT_SHOWN = 200


class MissingShell(Exception):
    """
    C{sh} or C{setsid} is not installed, so C{--verify-command} cannot run.
    """


def findShell(which: Callable[[str], str | None] = shutil.which) -> Tools:
    """
    Find the executables C{--verify-command} needs, once, at start-up.

    @param which: Looks a command up (C{shutil.which}).
    @return: Tools with C{sh} and C{setsid} (the sync's other tools unset).
    @raise MissingShell: Naming the one missing.
    """
    found = {}
    for name in ("sh", "setsid"):
        where = which(name)
        if where is None:
            raise MissingShell(f"{name} not found on PATH")
        found[name] = where
    return Tools(sqlite3="", rsync="", sh=found["sh"], setsid=found["setsid"])


@frozen
class Outcome:
    """
    What one check found.

    @ivar check: The check, in words (C{"GET /fact/1"}, C{"command
        './smoke.sh'"}).
    @ivar ok: Whether it passed.
    @ivar got: What it got (C{"status 200"}, C{"exited with code 3:
        ..."}, C{"connection refused"}).
    @ivar expected: What would have passed (C{"200"}, C{"exit 0"}).
    """

    check: str
    ok: bool
    got: str
    expected: str

    def describe(self) -> str:
        """
        @return: E.g. C{"GET /fact/1 expected 200, got status 500"}.
        """
        return f"{self.check} expected {self.expected}, got {self.got}"

    def asJSON(self) -> dict[str, Any]:
        """
        @return: The outcome as JSON.
        """
        return {
            "check": self.check,
            "ok": self.ok,
            "got": self.got,
            "expected": self.expected,
        }


@frozen
class Verification:
    """
    One run of every check against an environment.

    @ivar environment: The environment checked.
    @ivar target: The URL checked (the preview's, or the environment's).
    @ivar when: POSIX time it ended.
    @ivar outcomes: Each check's outcome, in order.
    """

    environment: str
    target: str
    when: float
    outcomes: tuple[Outcome, ...]

    @property
    def passed(self) -> bool:
        """
        Whether every check passed.
        """
        return all(outcome.ok for outcome in self.outcomes)

    def failures(self) -> str:
        """
        @return: The failed checks, in words, e.g. C{"GET /fact/1 expected
            200, got status 500"} (joined by C{"; "}).
        """
        return "; ".join(o.describe() for o in self.outcomes if not o.ok)

    def asJSON(self) -> dict[str, Any]:
        """
        @return: The verification as JSON.
        """
        return {
            "environment": self.environment,
            "target": self.target,
            "when": self.when,
            "passed": self.passed,
            "checks": [outcome.asJSON() for outcome in self.outcomes],
        }


@define(eq=False)
class Verifier:
    """
    Runs the promotion checks.

    @ivar reactor: Times the checks and spawns the command.
    @ivar http: The treq client of the path checks.
    @ivar settings: What to check.
    @ivar controller: Says which environment is which.
    @ivar previewURL: Says where the preview listener can be reached, or
        L{None} when there is none (or it does not listen yet).
    @ivar tools: C{sh} and C{setsid} for the command (see L{findShell}), or
        L{None} without C{--verify-command}.
    @ivar last: The last verification, or L{None}.
    """

    reactor: ProcessReactor
    http: HTTPClient
    settings: PromotionSettings
    controller: Controller
    previewURL: Callable[[], str | None] = lambda: None
    tools: Tools | None = None
    last: Verification | None = None
    _running: set[Deferred[Any]] = field(factory=set)
    _log = Logger()

    def target(self, name: str) -> str:
        """
        @param name: The environment to check.
        @return: The base URL its checks use: the preview's while C{name} is
            the standby and the preview listens, else C{name}'s own.
        """
        preview = self.previewURL()
        if preview is not None and name != self.controller.live.name:
            return preview
        return self.controller.environments[name].url.rstrip("/")

    async def run(self, name: str) -> Verification:
        """
        Run every check against C{name}.

        @param name: The environment (normally the standby).
        @return: What they found (also kept as L{last}).
        """
        target = self.target(name)
        outcomes = [await self._path(target, check) for check in self.settings.checks]
        if self.settings.command is not None:
            outcomes.append(await self._command(name, target, self.settings.command))
        result = Verification(name, target, self.reactor.seconds(), tuple(outcomes))
        self.last = result
        self._log.info(
            "promotion checks of {env} at {target}: {result}",
            env=name,
            target=target,
            result="passed" if result.passed else f"FAILED: {result.failures()}",
            event="promotion-checks",
        )
        return result

    def verify(self, name: str) -> Deferred[Verification]:
        """
        Run the checks; fail if any fails (the controller's C{verify}).

        @param name: The environment about to go live.
        @return: Fires with the verification when all passed.
        @raise SwitchRefused: (asynchronously) Naming the failed checks.
        """

        async def go() -> Verification:
            result = await self.run(name)
            if not result.passed:
                raise SwitchRefused(
                    f"{name} failed its promotion checks: {result.failures()}; "
                    "use force to switch anyway"
                )
            return result

        return Deferred.fromCoroutine(go())

    def stop(self) -> None:
        """
        Cancel the checks in flight (the service is stopping).
        """
        for running in list(self._running):
            running.cancel()

    async def _track(self, d: Deferred[Any]) -> Any:
        """
        Await C{d}, cancelled by L{stop} meanwhile.
        """
        self._running.add(d)
        try:
            return await d
        finally:
            self._running.discard(d)

    async def _path(self, target: str, check: PathCheck) -> Outcome:
        """
        Run one path check.
        """
        timeout = self.settings.timeout
        expected = check.expected()
        try:
            requested: Deferred[Any] = self.http.get(
                target + check.path, allow_redirects=False
            )
            requested.addTimeout(timeout, cast(IReactorTime, self.reactor))
            response = await self._track(requested)
            reading: Deferred[Any] = treq.collect(response, lambda data: None)
            reading.addTimeout(timeout, cast(IReactorTime, self.reactor))
            await self._track(reading)
        except Exception:
            got = describeCheckFailure(Failure(), timeout)
            return Outcome(check.describe(), False, got, expected)
        code: int = response.code
        return Outcome(check.describe(), check.passes(code), f"status {code}", expected)

    async def _command(self, name: str, target: str, command: str) -> Outcome:
        """
        Run C{--verify-command}.
        """
        what = f"command {command!r}"
        if self.tools is None:
            return Outcome(what, False, "no shell to run it", "exit 0")
        runner = ProcessRunner(
            self.reactor,
            self.tools,
            env={
                **MINIMAL_ENV,
                "BLUEGREEN_PREVIEW_URL": target,
                "BLUEGREEN_ENVIRONMENT": name,
            },
            timeout=self.settings.timeout,
            grace=1.0,
        )
        try:
            result = await self._track(
                runner.run((self.tools.sh, "-c", command), check=False)
            )
        except ProcessFailed as e:
            # Killed by a signal, or timed out.
            result = e.result
        if result.ok:
            return Outcome(what, True, "exit 0", "exit 0")
        how = result.describe()
        if result.timedOut:
            how = f"timeout after {self.settings.timeout:g} s ({how})"
        said = _lastLine((result.stderr, result.stdout))
        return Outcome(what, False, f"{how}: {said}" if said else how, "exit 0")


def _lastLine(outputs: Sequence[bytes]) -> str:
    """
    @return: The last non-empty line of the first output that has one,
        shortened to L{OUTPUT_SHOWN} characters.
    """
    for output in outputs:
        lines = [
            line.strip()
            for line in output.decode("utf-8", "replace").splitlines()
            if line.strip()
        ]
        if lines:
            line = lines[-1]
            return line if len(line) <= OUTPUT_SHOWN else line[:OUTPUT_SHOWN] + "..."
    return ""
