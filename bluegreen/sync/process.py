# -*- test-case-name: tests.test_process -*-
"""
One small runner for the processes the database sync spawns (C{sqlite3},
C{rsync}, the stop and start commands of an app).

Unlike L{twisted.internet.utils.getProcessOutputAndValue}, the runner:

  - runs absolute executable paths, found once at start-up by L{Tools.find}
    (a missing tool is a L{MissingTool} error naming the Debian package);
  - passes an explicit, minimal environment (L{MINIMAL_ENV});
  - collects stdout, stderr, the exit code and the signal into a
    L{ProcessResult}, and fails with L{ProcessFailed} (never with a tuple)
    when the child exits non-zero or is killed by a signal;
  - gives every child a timeout: C{TERM}, then C{KILL} after a grace period,
    failing with L{ProcessTimedOut} once the child is gone;
  - kills the child the same way when the L{Deferred} is cancelled.

C{sqlite3} always runs as C{sqlite3 -bail -batch -init /dev/null} (see
L{ProcessRunner.sqlite}): stop at the first error, never read the user's
C{~/.sqliterc}.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal as _signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from attrs import field, frozen
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import (
    IDelayedCall,
    IProcessProtocol,
    IProcessTransport,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

#: The environment every child gets (nothing of the caller's leaks in).
MINIMAL_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}

#: The tools the sync needs: name -> Debian package that provides it.
PACKAGES: Mapping[str, str] = {
    "sqlite3": "sqlite3",
    "rsync": "rsync",
    "sh": "dash",
    "setsid": "util-linux",
}

#: Tools only some syncs need (remote locations): name -> Debian package.
OPTIONAL_PACKAGES: Mapping[str, str] = {
    "ssh": "openssh-client",
}

#: The options C{sqlite3} always runs with.
SQLITE_OPTIONS = ("-bail", "-batch", "-init", "/dev/null")

#: How much of stderr a L{ProcessFailed} message shows.
STDERR_SHOWN = 2000

_log = Logger()


class ProcessReactor(Protocol):
    """
    What the runner needs of a reactor: C{spawnProcess} of
    L{twisted.internet.interfaces.IReactorProcess} and the timers of
    L{twisted.internet.interfaces.IReactorTime} (the global reactor has
    both; a test may spawn with it and run the timers on a
    L{twisted.internet.task.Clock}).
    """

    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,
        executable: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        path: str | None = None,
    ) -> IProcessTransport:
        """
        See L{twisted.internet.interfaces.IReactorProcess.spawnProcess}.
        """

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kw: object
    ) -> IDelayedCall:
        """
        See L{twisted.internet.interfaces.IReactorTime.callLater}.
        """

    def seconds(self) -> float:
        """
        See L{twisted.internet.interfaces.IReactorTime.seconds}.
        """


class MissingTool(Exception):
    """
    A tool the sync needs is not installed (or not on C{PATH}).
    """


@frozen
class Tools:
    """
    Absolute paths of the executables the sync runs.

    @ivar sqlite3: The C{sqlite3} command-line shell.
    @ivar rsync: C{rsync}.
    @ivar sh: A POSIX shell, for the user's stop and start commands.
    @ivar setsid: Starts each child as the leader of its own process group,
        so that a timeout or a cancellation kills its children too.
    @ivar ssh: The C{ssh} client, for remote locations (L{None} when it is
        not installed).
    """

    sqlite3: str
    rsync: str
    sh: str
    setsid: str
    ssh: str | None = None

    @classmethod
    def find(
        cls,
        which: Callable[..., str | None] = shutil.which,
        path: str | None = None,
    ) -> Tools:
        """
        Find every tool, once, at start-up.

        @param which: Looks a command up, called as C{which(name, path=...)}
            (C{shutil.which}; replaced in tests).
        @param path: The search path; C{$PATH} (then L{MINIMAL_ENV}'s) if
            L{None}.
        @return: Their absolute paths (an optional tool that is missing is
            L{None}).
        @raise MissingTool: Naming the first tool missing and its package.
        """
        if path is None:
            path = os.environ.get("PATH") or MINIMAL_ENV["PATH"]
        found: dict[str, str] = {}
        for name, package in PACKAGES.items():
            where = which(name, path=path)
            if where is None:
                raise MissingTool(
                    f"{name} not found on PATH ({path}); install it, e.g. "
                    f"'apt-get install {package}'"
                )
            found[name] = os.path.abspath(where)
        ssh = which("ssh", path=path)
        return cls(
            sqlite3=found["sqlite3"],
            rsync=found["rsync"],
            sh=found["sh"],
            setsid=found["setsid"],
            ssh=os.path.abspath(ssh) if ssh is not None else None,
        )


def _signalName(number: int) -> str:
    """
    @return: C{TERM} for 15, etc.; the number when unknown.
    """
    try:
        return _signal.Signals(number).name.removeprefix("SIG")
    except ValueError:
        return str(number)


@frozen
class ProcessResult:
    """
    What a finished child did.

    @ivar argv: The command, executable first.
    @ivar exitCode: Its exit code; L{None} when a signal killed it.
    @ivar signal: The signal that killed it, or L{None}.
    @ivar stdout: Everything it wrote to stdout.
    @ivar stderr: Everything it wrote to stderr.
    @ivar timedOut: Whether the runner killed it for running too long.
    """

    argv: tuple[str, ...]
    exitCode: int | None
    signal: int | None
    stdout: bytes = field(repr=False)
    stderr: bytes = field(repr=False)
    timedOut: bool = False

    @property
    def ok(self) -> bool:
        """
        Whether it exited with code 0.
        """
        return self.exitCode == 0 and self.signal is None

    def command(self) -> str:
        """
        @return: The command as a shell would show it.
        """
        return shlex.join(self.argv)

    def describe(self) -> str:
        """
        @return: How it ended, e.g. C{exited with code 1} or C{killed by
            signal KILL}.
        """
        if self.signal is not None:
            return f"killed by signal {_signalName(self.signal)}"
        return f"exited with code {self.exitCode}"


class ProcessFailed(Exception):
    """
    A child exited non-zero, was killed by a signal or timed out.

    @ivar result: What it did.
    """

    def __init__(self, result: ProcessResult) -> None:
        """
        @param result: What the child did.
        """
        self.result = result
        super().__init__(result)

    def __str__(self) -> str:
        """
        @return: The command, how it ended and (the start of) its stderr.
        """
        result = self.result
        how = result.describe()
        if result.timedOut:
            how = f"timed out and was {how}"
        err = result.stderr.decode("utf-8", "replace").strip()
        if len(err) > STDERR_SHOWN:
            err = err[:STDERR_SHOWN] + "..."
        message = f"command {result.command()} {how}"
        if err:
            message += f": {err}"
        return message


class ProcessTimedOut(ProcessFailed):
    """
    A child ran longer than its timeout and was killed.
    """


class Child(ProcessProtocol):
    """
    Feeds a child its stdin, collects its output and kills it on demand.

    @ivar done: Fires with the L{ProcessResult} when the child ended, or
        fails with L{ProcessFailed}.  Cancelling it kills the child.
    @ivar ended: Fires (with L{None}) once the child has really ended,
        whatever happened to L{done}.
    """

    def __init__(
        self,
        clock: ProcessReactor,
        argv: tuple[str, ...],
        stdin: bytes,
        timeout: float,
        grace: float,
    ) -> None:
        """
        @param clock: Runs the timeout and the grace period.
        @param argv: The command.
        @param stdin: Written to the child's stdin, then closed.
        @param timeout: Seconds before C{TERM}.
        @param grace: Seconds between C{TERM} and C{KILL}.
        """
        self._clock = clock
        self._argv = argv
        self._stdin = stdin
        self._grace = grace
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        self._timedOut = False
        self._killCall: IDelayedCall | None = None
        self._exited = False
        self.done: Deferred[ProcessResult] = Deferred(lambda _: self.terminate())
        self.ended: Deferred[None] = Deferred()
        self._timeoutCall: IDelayedCall | None = clock.callLater(timeout, self._timeUp)

    def connectionMade(self) -> None:
        """
        Write stdin (if any) and close it.
        """
        assert self.transport is not None
        if self._stdin:
            self.transport.write(self._stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        """
        Keep stdout.
        """
        self._out.append(data)

    def errReceived(self, data: bytes) -> None:
        """
        Keep stderr.
        """
        self._err.append(data)

    def _timeUp(self) -> None:
        """
        The child ran too long: kill it.
        """
        self._timeoutCall = None
        self._timedOut = True
        _log.warn("{command} timed out; terminating it", command=shlex.join(self._argv))
        self.terminate()

    def _send(self, name: str) -> None:
        """
        Send signal C{name} to the child's process group (the child and
        whatever it started), if the child still runs.
        """
        if self._exited or self.transport is None:
            return
        pid = self.transport.pid
        try:
            if pid is not None:
                os.killpg(pid, getattr(_signal, f"SIG{name}"))
                return
        except ProcessLookupError:
            pass
        try:
            self.transport.signalProcess(name)
        except ProcessExitedAlready:
            pass

    def processExited(self, reason: Failure) -> None:
        """
        Once a child that was killed has exited, stop waiting for its
        output: a descendant that escaped the kill must not keep L{done}
        waiting by holding the pipes open.
        """
        self._exited = True
        if self._killCall is not None and self.transport is not None:
            self.transport.loseConnection()

    def terminate(self) -> None:
        """
        Send C{TERM} now and C{KILL} after the grace period.
        """
        if self._exited:
            return
        self._send("TERM")
        if self._killCall is None:
            self._killCall = self._clock.callLater(self._grace, self._send, "KILL")

    def processEnded(self, reason: Failure) -> None:
        """
        Fire L{done} with the result (or L{ProcessFailed}) and L{ended}.
        """
        self._exited = True
        for call in (self._timeoutCall, self._killCall):
            if call is not None and call.active():
                call.cancel()
        self._timeoutCall = self._killCall = None
        value = reason.value
        exitCode: int | None
        sig: int | None
        if isinstance(value, ProcessDone):
            exitCode, sig = 0, None
        elif isinstance(value, ProcessTerminated):
            exitCode, sig = value.exitCode, value.signal
        else:  # pragma: no cover (spawnProcess reports nothing else)
            exitCode, sig = None, None
        result = ProcessResult(
            argv=self._argv,
            exitCode=exitCode,
            signal=sig,
            stdout=b"".join(self._out),
            stderr=b"".join(self._err),
            timedOut=self._timedOut,
        )
        if not self.done.called:
            if self._timedOut:
                self.done.errback(ProcessTimedOut(result))
            elif not result.ok:
                self.done.errback(ProcessFailed(result))
            else:
                self.done.callback(result)
        self.ended.callback(None)


@frozen
class ProcessRunner:
    """
    Spawns children with the tools, environment and timeouts above.

    @ivar reactor: Spawns the children and runs their timeouts.
    @ivar tools: Where the executables are.
    @ivar env: The children's environment.
    @ivar timeout: Default seconds a child may run.
    @ivar grace: Seconds between C{TERM} and C{KILL}.
    @ivar sqliteTimeout: Milliseconds C{sqlite3} waits for a lock
        (C{.timeout}).
    """

    reactor: ProcessReactor
    tools: Tools
    env: Mapping[str, str] = MINIMAL_ENV
    timeout: float = 300.0
    grace: float = 5.0
    sqliteTimeout: int = 10000
    _running: set[Child] = field(factory=set, init=False, eq=False)

    def run(
        self,
        argv: Sequence[str],
        stdin: bytes = b"",
        timeout: float | None = None,
        path: str | None = None,
        check: bool = True,
    ) -> Deferred[ProcessResult]:
        """
        Run one command.

        @param argv: The command; C{argv[0]} must be an absolute path.
        @param stdin: Bytes written to its stdin (then closed).
        @param timeout: Seconds before it is killed; L{timeout} if L{None}.
        @param path: Its working directory.
        @param check: Fail with L{ProcessFailed} on a non-zero exit (else
            only signals and timeouts fail).
        @return: Fires with its L{ProcessResult}; cancelling it kills the
            child (C{TERM}, then C{KILL}).
        """
        args = tuple(argv)
        if not os.path.isabs(args[0]):
            raise ValueError(f"not an absolute executable path: {args[0]!r}")
        child = Child(
            self.reactor,
            args,
            stdin,
            self.timeout if timeout is None else timeout,
            self.grace,
        )
        self._running.add(child)
        child.ended.addBoth(lambda _: self._running.discard(child))
        self.reactor.spawnProcess(
            child,
            self.tools.setsid,
            [self.tools.setsid, *args],
            env=dict(self.env),
            path=path,
        )
        done = child.done
        if not check:

            def unchecked(reason: Failure) -> ProcessResult | Failure:
                error = reason.value
                if (
                    isinstance(error, ProcessFailed)
                    and not isinstance(error, ProcessTimedOut)
                    and error.result.signal is None
                ):
                    return error.result
                return reason

            done.addErrback(unchecked)
        return done

    def sqlite(
        self,
        database: str,
        sql: str,
        *options: str,
        timeout: float | None = None,
    ) -> Deferred[ProcessResult]:
        """
        Run SQL (on stdin) with C{sqlite3 -bail -batch -init /dev/null}.

        @param database: The database file.
        @param sql: The script.
        @param options: More options, e.g. C{-json} or C{-noheader}.
        @param timeout: As for L{run}.
        @return: As L{run}.
        """
        argv = (
            self.tools.sqlite3,
            *SQLITE_OPTIONS,
            "-cmd",
            f".timeout {self.sqliteTimeout}",
            *options,
            database,
        )
        return self.run(argv, stdin=sql.encode("utf-8"), timeout=timeout)

    @property
    def running(self) -> frozenset[Child]:
        """
        The children started and not yet ended (a test picks one to kill).
        """
        return frozenset(self._running)

    def quiesce(self) -> Deferred[None]:
        """
        @return: Fires once every child this runner started has ended
            (e.g. after a cancellation, before removing their files).
        """
        pending = [child.ended for child in self._running]
        d: Deferred[Any] = DeferredList(pending)
        return d.addCallback(lambda _: None)
