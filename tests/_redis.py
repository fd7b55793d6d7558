# -*- test-case-name: tests.test_flags -*-
"""
Real C{redis-server} processes for tests.

L{startRedis} starts one on a free port of 127.0.0.1 (never the system's
6379), in a temporary directory, without persistence (C{--save ""
--appendonly no}: only an explicit C{SAVE} writes a snapshot, which a
restart then loads), and stops it when the test ends (C{TERM}, then waiting
for it to exit, so trial sees a clean reactor).  The test is skipped when
C{redis-server} is not installed.

    redis = await startRedis(self)
    await redis.cli("SET", "RECENT", "ON")
    await redis.kill()       # SIGKILL: the port is closed at once
    await redis.restart()    # the same port (and socket), fresh data
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IProcessTransport, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from tests._util import PATIENCE, freePort

reactor = IReactorProcess(_reactor)
clock = IReactorTime(_reactor)


class ProcessFailed(Exception):
    """
    A helper process failed; the message has its output.
    """


class Collect(ProcessProtocol):
    """
    Collects a process's output; L{ended} fires with C{(exitCode, signal)}.
    When C{readyText} is given, L{ready} fires once stdout contains it
    (case-insensitively), or fails if the process exits first.
    """

    def __init__(self, readyText: str | None = None) -> None:
        """
        @param readyText: Output that means the process is ready.
        """
        self.out = b""
        self.err = b""
        self.readyText = readyText.lower() if readyText else None
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[tuple[int | None, int | None]] = Deferred()
        self.exited = False

    def outReceived(self, data: bytes) -> None:
        """
        Keep stdout; fire L{ready} when the text appears.
        """
        self.out += data
        if (
            self.readyText is not None
            and not self.ready.called
            and self.readyText in self.out.decode("utf-8", "replace").lower()
        ):
            self.ready.callback(None)

    def errReceived(self, data: bytes) -> None:
        """
        Keep stderr.
        """
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        """
        Fire L{ended} (never with an error) and fail L{ready} if pending.
        """
        self.exited = True
        value = reason.value
        code = getattr(value, "exitCode", None)
        sig = getattr(value, "signal", None)
        if reason.check(ProcessDone):
            code = 0
        if self.readyText is not None and not self.ready.called:
            self.ready.errback(
                ProcessFailed(
                    f"exited ({code}, signal {sig}) before it was ready:\n"
                    + (self.out + self.err).decode("utf-8", "replace")
                )
            )
        self.ended.callback((code, sig))


class RedisProcess:
    """
    One C{redis-server} run by a test.

    @ivar port: Its TCP port on 127.0.0.1.
    @ivar password: The password it requires, or L{None}.
    @ivar directory: Its working directory (snapshots, the socket).
    @ivar socketPath: Its UNIX socket, or L{None}.
    @ivar extra: More C{redis-server} arguments.
    """

    def __init__(
        self,
        testCase: TestCase,
        password: str | None = None,
        unixSocket: bool = False,
        extra: tuple[str, ...] = (),
    ) -> None:
        """
        @param testCase: The test (for clean-up).
        @param password: C{--requirepass}.
        @param unixSocket: Also listen on a UNIX socket.
        @param extra: More arguments.
        """
        executable = shutil.which("redis-server")
        if executable is None:
            raise SkipTest("redis-server is not installed")
        self.executable = executable
        self.testCase = testCase
        self.password = password
        self.extra = extra
        # Short: AF_UNIX paths are limited to 108 bytes (self.mktemp() is
        # too long).
        self.directory = tempfile.mkdtemp(prefix="bg-redis-")
        testCase.addCleanup(shutil.rmtree, self.directory, True)
        self.socketPath = (
            os.path.join(self.directory, "redis.sock") if unixSocket else None
        )
        self.port = freePort()
        self._drawn = self.port
        self._process: IProcessTransport | None = None
        self._protocol: Collect | None = None

    @property
    def url(self) -> str:
        """
        C{redis://127.0.0.1:<port>/0} (without the password).
        """
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unixURL(self) -> str:
        """
        C{unix://<socket>?db=0}.
        """
        assert self.socketPath is not None
        return f"unix://{self.socketPath}?db=0"

    @property
    def running(self) -> bool:
        """
        C{True} while the process runs.
        """
        return self._protocol is not None and not self._protocol.exited

    def _arguments(self) -> list[str]:
        """
        The command line.
        """
        args = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.directory,
            "--dbfilename",
            "dump.rdb",
            "--daemonize",
            "no",
            "--loglevel",
            "notice",
        ]
        if self.password is not None:
            args += ["--requirepass", self.password]
        if self.socketPath is not None:
            args += ["--unixsocket", self.socketPath, "--unixsocketperm", "700"]
        return args + list(self.extra)

    async def start(self) -> None:
        """
        Start the server and wait until it accepts connections.  The first
        time, if something took the port L{freePort} drew meanwhile, draw
        another (a port set by the test is kept).

        @raise ProcessFailed: If it exits first.
        """
        first = self._protocol is None and self.port == self._drawn
        for attempt in range(5):
            try:
                await self._startOnce()
                return
            except ProcessFailed as e:
                if not first or "already in use" not in str(e) or attempt == 4:
                    raise
                self.port = self._drawn = freePort()

    async def _startOnce(self) -> None:
        """
        Start the server once and wait until it accepts connections.

        @raise ProcessFailed: If it exits first.
        """
        protocol = Collect("ready to accept connections")
        self._protocol = protocol
        self._process = reactor.spawnProcess(
            protocol,
            self.executable,
            self._arguments(),
            env={},
            path=self.directory,
        )
        ready = protocol.ready
        ready.addTimeout(PATIENCE, clock)
        await ready

    async def _signal(self, name: str) -> None:
        """
        Send signal C{name} and wait until the process is gone.
        """
        protocol = self._protocol
        if protocol is None or protocol.exited or self._process is None:
            return
        self._process.signalProcess(name)
        await protocol.ended

    async def kill(self) -> None:
        """
        Kill the server (C{SIGKILL}) and wait until it is gone.
        """
        await self._signal("KILL")

    async def stop(self) -> None:
        """
        Stop the server (C{SIGTERM}) and wait until it is gone.
        """
        await self._signal("TERM")

    async def restart(self) -> None:
        """
        Start the server again on the same port (and socket), after killing
        it if it still runs.
        """
        await self.kill()
        await self.start()

    def pause(self) -> None:
        """
        Freeze the server (C{SIGSTOP}): connections are accepted by the
        kernel but nothing answers.
        """
        assert self._process is not None and self._process.pid is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """
        Undo L{pause} (C{SIGCONT}).
        """
        assert self._process is not None and self._process.pid is not None
        os.kill(self._process.pid, signal.SIGCONT)

    async def cli(self, *args: str) -> str:
        """
        Run C{redis-cli} against this server.

        @param args: The command, e.g. C{("GET", "RECENT")}.
        @return: Its output without the final newline (C{--no-raw} is not
            given, so redis-cli prints raw values when not on a terminal).
        @raise ProcessFailed: If it exits with a status other than 0.
        """
        executable = shutil.which("redis-cli")
        if executable is None:
            raise SkipTest("redis-cli is not installed")
        env = {}
        if self.password is not None:
            env["REDISCLI_AUTH"] = self.password
        protocol = Collect()
        reactor.spawnProcess(
            protocol,
            executable,
            [executable, "-h", "127.0.0.1", "-p", str(self.port), *args],
            env=env,
            path=self.directory,
        )
        code, sig = await protocol.ended
        text = protocol.out.decode("utf-8", "replace")
        if code != 0:
            raise ProcessFailed(
                f"redis-cli {' '.join(args)}: exit {code} (signal {sig}): "
                + text
                + protocol.err.decode("utf-8", "replace")
            )
        return text[:-1] if text.endswith("\n") else text

    async def cleanup(self) -> None:
        """
        Stop the server (waking it first if it was paused).
        """
        protocol = self._protocol
        if protocol is not None and not protocol.exited:
            try:
                self.resume()
            except OSError:
                pass
        await self.stop()


async def startRedis(
    testCase: TestCase,
    password: str | None = None,
    unixSocket: bool = False,
    extra: tuple[str, ...] = (),
) -> RedisProcess:
    """
    Start a C{redis-server} for one test, stopped when the test ends.

    @param testCase: The test.
    @param password: Make the server require this password.
    @param unixSocket: Also listen on a UNIX socket (L{RedisProcess.unixURL}).
    @param extra: More C{redis-server} arguments, e.g. C{("--rename-command",
        "CONFIG", "")}.
    @return: The running server.
    @raise SkipTest: If C{redis-server} is not installed.
    """
    redis = RedisProcess(testCase, password, unixSocket, extra)
    testCase.addCleanup(lambda: Deferred.fromCoroutine(redis.cleanup()))
    await redis.start()
    return redis
