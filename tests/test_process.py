# -*- test-case-name: tests.test_process -*-
"""
Tests for L{bluegreen.sync.process}: real children, real signals.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IProcessProtocol,
    IProcessTransport,
)
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bluegreen.sync.process import (
    MINIMAL_ENV,
    MissingTool,
    ProcessFailed,
    ProcessResult,
    ProcessRunner,
    ProcessTimedOut,
    Tools,
)
from tests._util import PATIENCE, waitFor

reactor: Any = _reactor


def runner(reactor: Any = reactor, **kwargs: Any) -> ProcessRunner:
    """
    @param reactor: Spawns the children and runs their timers (the global
        reactor by default).
    @return: A runner with the real tools.
    """
    return ProcessRunner(reactor, Tools.find(), **kwargs)


class SpawnOnClock:
    """
    A L{bluegreen.sync.process.ProcessReactor} that spawns real children
    with the global reactor and runs the runner's timers on a L{Clock} the
    test advances: timeouts and grace periods happen when the test says,
    whatever the machine's load.

    @ivar clock: The runner's timers.
    """

    def __init__(self) -> None:
        self.clock = Clock()

    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,
        executable: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        path: str | None = None,
    ) -> IProcessTransport:
        """
        Spawn with the global reactor.
        """
        transport: IProcessTransport = reactor.spawnProcess(
            processProtocol, executable, args, env=env, path=path
        )
        return transport

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kw: object
    ) -> IDelayedCall:
        """
        Schedule on L{clock}.
        """
        return self.clock.callLater(delay, callable, *args, **kw)

    def seconds(self) -> float:
        """
        L{clock}'s time.
        """
        return self.clock.seconds()


def alive(pid: int) -> bool:
    """
    @return: Whether process C{pid} still exists (and is not a zombie).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


class ToolsTests(SynchronousTestCase):
    """
    L{Tools.find}.
    """

    def test_found(self) -> None:
        """
        Every tool is found as an absolute path.
        """
        tools = Tools.find()
        for path in (tools.sqlite3, tools.rsync, tools.sh, tools.setsid):
            self.assertTrue(os.path.isabs(path), path)

    def test_missing(self) -> None:
        """
        A missing tool is named, with the package to install.
        """

        def which(name: str, path: str | None = None) -> str | None:
            return None if name == "rsync" else f"/usr/bin/{name}"

        e = self.assertRaises(MissingTool, Tools.find, which, "/nowhere")
        self.assertEqual(
            str(e),
            "rsync not found on PATH (/nowhere); install it, e.g. "
            "'apt-get install rsync'",
        )

    def test_relativeRefused(self) -> None:
        """
        The runner refuses a relative executable path.
        """
        self.assertRaises(ValueError, runner().run, ["sqlite3", "-version"])


class MessageTests(SynchronousTestCase):
    """
    L{ProcessFailed}'s message.
    """

    def test_exitCode(self) -> None:
        """
        The command, how it ended and its stderr.
        """
        result = ProcessResult(("/bin/x", "a b"), 3, None, b"", b"oops\n")
        self.assertEqual(
            str(ProcessFailed(result)), "command /bin/x 'a b' exited with code 3: oops"
        )

    def test_timedOut(self) -> None:
        """
        A timeout and the signal are named.
        """
        result = ProcessResult(("/bin/x",), None, 9, b"", b"", timedOut=True)
        self.assertEqual(
            str(ProcessTimedOut(result)),
            "command /bin/x timed out and was killed by signal KILL",
        )


class RunTests(TestCase):
    """
    L{ProcessRunner.run} with real children.
    """

    timeout = 2 * PATIENCE

    async def _pidOf(self, pidFile: str) -> int:
        """
        Wait for a child to write its pid to C{pidFile}.
        """

        def written() -> bool:
            return os.path.exists(pidFile) and bool(open(pidFile).read().strip())

        await waitFor(written, "the child's pid")
        return int(open(pidFile).read())

    def test_success(self) -> Deferred[None]:
        """
        stdout, stderr, stdin and the exit code are captured; the child gets
        the minimal environment only.
        """

        async def go() -> None:
            r = runner()
            os.environ["BLUEGREEN_LEAK"] = "1"
            self.addCleanup(os.environ.pop, "BLUEGREEN_LEAK")
            result = await r.run(
                [r.tools.sh, "-c", "cat; echo err >&2; env | sort"], stdin=b"in\n"
            )
            self.assertEqual(result.exitCode, 0)
            self.assertIsNone(result.signal)
            self.assertEqual(result.stderr, b"err\n")
            lines = result.stdout.decode().splitlines()
            self.assertEqual(lines[0], "in")
            env = dict(line.split("=", 1) for line in lines[1:])
            env.pop("PWD", None)
            env.pop("SHLVL", None)
            env.pop("_", None)
            self.assertEqual(env, dict(MINIMAL_ENV))

        return Deferred.fromCoroutine(go())

    def test_sqlite(self) -> Deferred[None]:
        """
        sqlite3 runs with C{-bail}: a failing statement stops the script.
        """

        async def go() -> None:
            r = runner()
            db = os.path.abspath(self.mktemp())
            sql = (
                "CREATE TABLE t(a UNIQUE); BEGIN; INSERT INTO t VALUES (1);"
                " INSERT INTO t VALUES (1); COMMIT;"
            )
            e: Any = await self.assertFailure(r.sqlite(db, sql), ProcessFailed)
            self.assertIn("-bail", e.result.argv)
            self.assertIn("UNIQUE constraint failed: t.a", str(e))
            result = await r.sqlite(db, "SELECT count(*) FROM t;")
            self.assertEqual(result.stdout, b"0\n")

        return Deferred.fromCoroutine(go())

    def test_failure(self) -> Deferred[None]:
        """
        A non-zero exit fails with L{ProcessFailed}: command and stderr in the
        message; C{check=False} returns the result instead.
        """

        async def go() -> None:
            r = runner()
            argv = [r.tools.sh, "-c", "echo bad thing >&2; exit 4"]
            e: Any = await self.assertFailure(r.run(argv), ProcessFailed)
            self.assertEqual(e.result.exitCode, 4)
            self.assertEqual(
                str(e),
                f"command {r.tools.sh} -c 'echo bad thing >&2; exit 4' "
                "exited with code 4: bad thing",
            )
            result = await r.run(argv, check=False)
            self.assertEqual(result.exitCode, 4)

        return Deferred.fromCoroutine(go())

    def test_killedBySignal(self) -> Deferred[None]:
        """
        A child killed by a signal fails with L{ProcessFailed} (not a tuple),
        which C{try}/C{except} catches, even with C{check=False}.
        """

        async def go() -> None:
            r = runner()
            try:
                await r.run([r.tools.sh, "-c", "kill -KILL $$"], check=False)
            except ProcessFailed as e:
                self.assertEqual(e.result.signal, signal.SIGKILL)
                self.assertIsNone(e.result.exitCode)
                self.assertIn("killed by signal KILL", str(e))
            else:
                self.fail("no ProcessFailed")

        return Deferred.fromCoroutine(go())

    def test_timeoutTerm(self) -> Deferred[None]:
        """
        A child that runs too long gets C{TERM} and the Deferred fails with
        L{ProcessTimedOut} once it is gone.
        """

        async def go() -> None:
            spawner = SpawnOnClock()
            r = runner(grace=5.0, reactor=spawner)
            pidFile = os.path.abspath(self.mktemp())
            d = r.run(
                [r.tools.sh, "-c", f"echo $$ > {pidFile}; exec sleep 30"],
                timeout=0.5,
            )
            pid = await self._pidOf(pidFile)
            spawner.clock.advance(0.49)
            self.assertTrue(alive(pid))
            self.assertNoResult(d)
            spawner.clock.advance(0.01)
            e: Any = await self.assertFailure(d, ProcessTimedOut)
            # TERM alone ended it: the clock never reached the grace period.
            self.assertLess(spawner.clock.seconds(), 0.5 + 5.0)
            self.assertEqual(e.result.signal, signal.SIGTERM)
            self.assertTrue(e.result.timedOut)
            self.assertFalse(alive(int(open(pidFile).read())))

        return Deferred.fromCoroutine(go())

    def test_timeoutKill(self) -> Deferred[None]:
        """
        A child that ignores C{TERM} gets C{KILL} after the grace period.
        """

        async def go() -> None:
            spawner = SpawnOnClock()
            r = runner(grace=0.5, reactor=spawner)
            pidFile = os.path.abspath(self.mktemp())
            d = r.run(
                [
                    r.tools.sh,
                    "-c",
                    f'trap "" TERM; echo $$ > {pidFile}; sleep 30 & wait; sleep 30',
                ],
                timeout=0.5,
            )
            await self._pidOf(pidFile)
            spawner.clock.advance(0.5)
            # TERM was sent; KILL waits for the grace period.
            self.assertEqual(
                [call.getTime() for call in spawner.clock.getDelayedCalls()], [1.0]
            )
            spawner.clock.advance(0.5)
            e: Any = await self.assertFailure(d, ProcessTimedOut)
            self.assertGreaterEqual(spawner.clock.seconds(), 0.9)
            self.assertEqual(e.result.signal, signal.SIGKILL)
            self.assertIn("timed out and was killed by signal KILL", str(e))

        return Deferred.fromCoroutine(go())

    def test_cancel(self) -> Deferred[None]:
        """
        Cancelling the Deferred kills the child (C{TERM}, then C{KILL} for one
        that ignores C{TERM}); L{ProcessRunner.quiesce} waits until it is gone.
        """

        async def go() -> None:
            r = runner(grace=0.3)
            pidFile = os.path.abspath(self.mktemp())
            d = r.run(
                [
                    r.tools.sh,
                    "-c",
                    f'trap "" TERM; echo $$ > {pidFile}; while :; do sleep 0.05; done',
                ],
            )
            pid = await self._pidOf(pidFile)
            self.assertTrue(alive(pid))
            d.cancel()
            await self.assertFailure(d, CancelledError)
            await r.quiesce()
            self.assertFalse(alive(pid))

        return Deferred.fromCoroutine(go())
