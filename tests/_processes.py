# -*- test-case-name: tests.test_failover_integration,tests.test_bigbodies -*-
"""
Child processes of the integration tests (C{twistd bluegreen}, the test
apps): their environment, their output lines waited for, and stopping them.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests._util import PATIENCE, proxyArguments
from tests._waiting import reactor

#: The checkout (children run in it, with it first on C{PYTHONPATH}).
REPO = Path(__file__).resolve().parent.parent

#: Seconds a child process gets to exit after SIGTERM, before SIGKILL.
STOP_TIMEOUT = 5.0


def childEnvironment() -> dict[str, str]:
    """
    The environment of child processes: this one, unbuffered, with the
    checkout first on C{PYTHONPATH} (for the C{twistd bluegreen} plugin).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def twistdPath() -> str:
    """
    The C{twistd} script next to the running Python (which may be missing:
    check before relying on it).
    """
    return str(Path(sys.executable).parent / "twistd")


def twistdArguments(green: str, blue: str, *extra: str) -> list[str]:
    """
    The arguments (after L{twistdPath}) of C{twistd -n bluegreen} in the
    foreground, without a pid file, on a free port of 127.0.0.1 in front of
    C{green} and C{blue}.

    @param extra: More options.
    """
    return ["-n", "--pidfile=", "bluegreen", *proxyArguments(green, blue, *extra)]


class ChildProcess(ProcessProtocol):
    """
    A child process whose output lines are kept (with their arrival time)
    and can be waited for.

    @ivar name: What it is, for messages.
    @ivar lines: C{(monotonic time, fd, text)} of every output line so far.
    @ivar reason: Why it ended, once it has.
    """

    transport: IProcessTransport | None

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: list[tuple[float, int, str]] = []
        self.reason: Failure | None = None
        self._partial: dict[int, bytes] = {}
        self._waiters: list[tuple[re.Pattern[str], int, Deferred[re.Match[str]]]] = []
        self._endWaiters: list[Deferred[None]] = []

    # ProcessProtocol

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """
        Split output into lines and wake up whoever waits for one.
        """
        buffered = self._partial.get(childFD, b"") + data
        *complete, self._partial[childFD] = buffered.split(b"\n")
        now = time.monotonic()
        for raw in complete:
            text = raw.decode("utf-8", "replace").rstrip("\r")
            self.lines.append((now, childFD, text))
            self._wake(len(self.lines) - 1)

    def processEnded(self, reason: Failure) -> None:
        """
        Record why it ended and wake up whoever waits for that.
        """
        self.reason = reason
        waiters, self._endWaiters = self._endWaiters, []
        for waiter in waiters:
            waiter.callback(None)
        lines, self._waiters = self._waiters, []
        for _, _, d in lines:
            d.errback(
                AssertionError(f"{self.name} exited:\n{self.tail()}\n({reason.value})")
            )

    # Waiting

    def _wake(self, index: int) -> None:
        text = self.lines[index][2]
        for entry in list(self._waiters):
            pattern, since, d = entry
            if index >= since:
                match = pattern.search(text)
                if match is not None:
                    self._waiters.remove(entry)
                    d.callback(match)

    def findLine(self, pattern: str, since: int = 0) -> re.Match[str] | None:
        """
        The first output line from index C{since} on matching C{pattern}.
        """
        compiled = re.compile(pattern)
        for _, _, text in self.lines[since:]:
            match = compiled.search(text)
            if match is not None:
                return match
        return None

    def waitForLine(
        self, pattern: str, since: int = 0, timeout: float = PATIENCE
    ) -> Deferred[re.Match[str]]:
        """
        Wait for an output line (from index C{since} on) matching
        C{pattern}.

        @return: A Deferred firing with the match; it fails with an
            C{AssertionError} showing the output if the process exits or
            C{timeout} passes first.
        """
        match = self.findLine(pattern, since)
        if match is not None:
            return succeed(match)
        if self.reason is not None:
            return fail(AssertionError(f"{self.name} exited:\n{self.tail()}"))
        d: Deferred[re.Match[str]] = Deferred()
        entry = (re.compile(pattern), since, d)
        self._waiters.append(entry)

        def timedOut() -> None:
            if entry in self._waiters:
                self._waiters.remove(entry)
                d.errback(
                    AssertionError(
                        f"{self.name}: no line matching {pattern!r} within "
                        f"{timeout:g} s:\n{self.tail()}"
                    )
                )

        call = reactor.callLater(timeout, timedOut)

        def cancelTimer(result: object) -> object:
            if call.active():
                call.cancel()
            return result

        d.addBoth(cancelTimer)
        return d

    def tail(self, count: int = 30) -> str:
        """
        The last C{count} output lines.
        """
        return "\n".join(text for _, _, text in self.lines[-count:]) or "(no output)"

    # Ending

    def whenEnded(self) -> Deferred[None]:
        """
        A Deferred firing once the process has ended (see L{reason}).
        """
        if self.reason is not None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._endWaiters.append(d)
        return d

    def sendSignal(self, name: str) -> None:
        """
        Send signal C{name} (C{"TERM"}, C{"KILL"}) if it is still running.
        """
        if self.reason is None and self.transport is not None:
            self.transport.signalProcess(name)

    async def kill(self) -> None:
        """
        SIGKILL it and wait until it is gone.
        """
        self.sendSignal("KILL")
        await self.whenEnded()

    async def stop(self) -> None:
        """
        SIGTERM it, SIGKILL it if it is still there after L{STOP_TIMEOUT},
        and wait until it is gone (see L{reason}).
        """
        if self.reason is None:
            self.sendSignal("TERM")
            call = reactor.callLater(STOP_TIMEOUT, self.sendSignal, "KILL")
            try:
                await self.whenEnded()
            finally:
                if call.active():
                    call.cancel()


def spawn(
    testCase: TestCase, name: str, executable: str, args: Sequence[str]
) -> ChildProcess:
    """
    Start a child process in the checkout, stopped when the test ends.
    """
    child = ChildProcess(name)
    reactor.spawnProcess(
        child,
        executable,
        [executable, *args],
        env=childEnvironment(),
        path=str(REPO),
    )
    assert child.transport is not None
    child.transport.closeStdin()
    testCase.addCleanup(lambda: Deferred.fromCoroutine(child.stop()))
    return child
