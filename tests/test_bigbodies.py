# -*- test-case-name: tests.test_bigbodies -*-
# mypy: allow-untyped-calls
"""
The 1 GiB requirement: bodies of any size stream through the proxy in
bounded memory.

The proxy runs as a real C{twistd bluegreen} process (the one next to
C{sys.executable}) in front of an in-process test backend.  A 1 GiB download
and a 1 GiB upload are generated on the fly (never stored), checked by length
and sha256, while the proxy process's resident memory (C{VmRSS} from
C{/proc/PID/status}) is sampled every 0.2 s; it must stay under 100 MB.

C{BLUEGREEN_BIG_BYTES} overrides the size (default 1 GiB).  Each test prints
one line with the size, the time and the memory figures.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from tests._backends import Handler, echo, route, startBackend
from tests._bodies import DownloadStats, PatternSource, SourceProducer, generated
from tests._logs import failOnLoggedErrors
from tests._processes import twistdArguments, twistdPath
from tests._rawclient import RawClient, connectRaw
from tests._util import PATIENCE
from tests._waiting import reactor, withTimeout

#: Bytes moved each way (C{BLUEGREEN_BIG_BYTES}, default 1 GiB).
BIG_BYTES = int(os.environ.get("BLUEGREEN_BIG_BYTES", str(1 << 30)))

#: The proxy process may never hold more than this in memory.
RSS_LIMIT = 100 * 1000 * 1000

#: Size of each generated block written by the client or the backend.
BLOCK = 256 * 1024

#: The path the proxy's health checks request (answered by a small echo).
HEALTH_PATH = b"/health"

#: How often the proxy's memory is sampled, in seconds.
SAMPLE_INTERVAL = 0.2


def withHealth(name: str, handler: Handler) -> Handler:
    """
    C{handler}, except that health checks get a small echo.
    """
    return route({HEALTH_PATH: echo(name)}, handler)


def readRSS(pid: int) -> int | None:
    """
    The resident memory of process C{pid} in bytes, or L{None} if it is gone.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class ProxyProcess(ProcessProtocol):
    """
    A C{twistd -n bluegreen} child process.

    @ivar output: Everything it wrote (stdout and stderr).
    @ivar port: The port it listens on, once its log said so.
    """

    def __init__(self) -> None:
        self.output = b""
        self.port: int | None = None
        self.ended = False
        self.reason: Failure | None = None
        self.listening: Deferred[int] = Deferred()
        self._ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        """
        Watch the log for the listening port.
        """
        self.output += data
        if self.port is None:
            match = re.search(rb"ProxySite starting on (\d+)", self.output)
            if match is not None:
                self.port = int(match.group(1))
                self.listening.callback(self.port)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        """
        The process is gone.
        """
        self.ended = True
        self.reason = reason
        if not self.listening.called:
            self.listening.errback(
                RuntimeError(f"twistd ended before listening:\n{self.output.decode()}")
            )
        self._ended.callback(None)

    def stop(self) -> Deferred[None]:
        """
        Send SIGTERM (SIGKILL after 10 s) and wait for the process to end.
        """
        if self.ended:
            return succeed(None)
        assert self.transport is not None
        self.transport.signalProcess("TERM")
        kill = reactor.callLater(10, self._kill)

        def ended(result: None) -> None:
            if kill.active():
                kill.cancel()

        self._ended.addCallback(ended)
        return self._ended

    def _kill(self) -> None:
        if not self.ended and self.transport is not None:
            self.transport.signalProcess("KILL")


@define(eq=False)
class MemorySampler:
    """
    Samples a process's resident memory every L{SAMPLE_INTERVAL} seconds.
    """

    pid: int
    samples: list[int] = field(factory=list)
    _loop: LoopingCall | None = None

    def start(self) -> None:
        """
        Take a sample now and then periodically.
        """
        self._loop = LoopingCall(self.sample)
        self._loop.start(SAMPLE_INTERVAL, now=True)

    def sample(self) -> None:
        """
        Record the current RSS.
        """
        rss = readRSS(self.pid)
        if rss is not None:
            self.samples.append(rss)

    def stop(self) -> None:
        """
        Stop sampling (after a last sample).
        """
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.sample()

    @property
    def peak(self) -> int:
        """
        The largest sample.
        """
        return max(self.samples)


def report(
    what: str, size: int, seconds: float, start: int, sampler: MemorySampler
) -> str:
    """
    One line of figures for the test's output.
    """
    return (
        f"bigbodies: {what} of {size} bytes in {seconds:.1f} s "
        f"({size / seconds / 1e6:.0f} MB/s); proxy RSS {start / 1e6:.1f} MB "
        f"before, peak {sampler.peak / 1e6:.1f} MB "
        f"({len(sampler.samples)} samples)"
    )


class BigBodyTests(TestCase):
    """
    1 GiB each way through a real C{twistd bluegreen} process.
    """

    # Moving 2 GiB takes a few seconds here; a loaded machine gets the
    # same patience as every other wait, many times over.
    timeout = 20 * PATIENCE

    def setUp(self) -> None:
        """
        Check the platform has what the tests need.
        """
        if not os.path.exists("/proc/self/status"):
            raise SkipTest("needs /proc to read the proxy's memory")
        if not os.access(twistdPath(), os.X_OK):
            raise SkipTest(f"no twistd next to {sys.executable}")
        self.logs = failOnLoggedErrors(self)

    async def startProxyProcess(self, greenURL: str, blueURL: str) -> ProxyProcess:
        """
        Run C{twistd -n bluegreen} on a free port in front of the backends.
        """
        process = ProxyProcess()
        args = [
            twistdPath(),
            *twistdArguments(
                greenURL,
                blueURL,
                "--access-log",
                "none",
                "--health-path",
                HEALTH_PATH.decode(),
                "--admin",
                "none",
                # Bodies of any size: no --max-body-size limit.
                "--max-body-size",
                "0",
            ),
        ]
        reactor.spawnProcess(
            process, args[0], args, env=dict(os.environ), path=self.makeTempDirectory()
        )
        self.addCleanup(self.stopProcess, process)
        await withTimeout(process.listening, "twistd bluegreen listening")
        return process

    async def startMeasured(
        self, greenURL: str, blueURL: str
    ) -> tuple[RawClient, MemorySampler, int]:
        """
        Start the proxy process, sample its resident memory from now on, and
        connect a raw client to it.

        @return: The client, the running sampler, and the RSS before.
        """
        process = await self.startProxyProcess(greenURL, blueURL)
        assert process.port is not None and process.transport is not None
        pid = process.transport.pid
        assert pid is not None
        before = readRSS(pid) or 0
        sampler = MemorySampler(pid)
        sampler.start()
        client = await connectRaw(self, process.port)
        return client, sampler, before

    def makeTempDirectory(self) -> str:
        """
        A fresh directory for the child to run in.
        """
        path = self.mktemp()
        os.makedirs(path)
        return path

    async def stopProcess(self, process: ProxyProcess) -> None:
        """
        Stop the proxy process; it must exit cleanly on SIGTERM (status 0,
        or killed by the SIGTERM that twistd re-raises after shutting down).
        """
        await process.stop()
        reason = process.reason
        assert reason is not None
        error = reason.value
        clean = isinstance(error, ProcessDone) or (
            isinstance(error, ProcessTerminated)
            and error.signal == signal.SIGTERM
            and error.exitCode is None
        )
        output = process.output.decode("utf-8", "replace")
        self.assertTrue(clean, f"twistd did not exit cleanly: {error}\n{output}")
        for sign in ["Traceback", "Unhandled", "#error]", "#critical]"]:
            self.assertNotIn(sign, output, "the proxy process logged an error")

    async def test_download(self) -> None:
        """
        A generated download of C{BLUEGREEN_BIG_BYTES} (1 GiB) bytes reaches
        the client intact while the proxy stays under 100 MB resident.
        """
        stats = DownloadStats()
        green, greenURL = startBackend(
            self, "green", withHealth("green", generated(BIG_BYTES, BLOCK, stats))
        )
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        client, sampler, before = await self.startMeasured(greenURL, blueURL)
        started = time.monotonic()
        response = await client.request(b"GET", b"/big", keep=0)
        elapsed = time.monotonic() - started
        sampler.stop()
        print("\n" + report("download", BIG_BYTES, elapsed, before, sampler))
        self.assertEqual(response.code, 200)
        self.assertEqual(response.body.length, BIG_BYTES)
        self.assertEqual(response.body.sha256, stats.sources[0].sha256)
        self.assertLess(
            sampler.peak, RSS_LIMIT, f"proxy RSS peaked at {sampler.peak} bytes"
        )
        self.assertEqual(
            [r.target for r in green.requests if r.target != HEALTH_PATH], [b"/big"]
        )

    async def test_upload(self) -> None:
        """
        A generated upload of C{BLUEGREEN_BIG_BYTES} (1 GiB) bytes with a
        C{Content-Length} reaches the backend intact while the proxy stays
        under 100 MB resident.
        """
        _green, greenURL = startBackend(self, "green", echo("green"))
        _blue, blueURL = startBackend(self, "blue", echo("blue"))
        client, sampler, before = await self.startMeasured(greenURL, blueURL)
        started = time.monotonic()
        pending = client.expect()
        client.sendRaw(
            b"PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (BIG_BYTES,)
        )
        source = PatternSource(BIG_BYTES)
        SourceProducer(client.transport, source, BLOCK).start()
        response = await pending
        elapsed = time.monotonic() - started
        sampler.stop()
        print("\n" + report("upload", BIG_BYTES, elapsed, before, sampler))
        self.assertEqual(response.code, 200, response.text)
        echoed: dict[str, Any] = response.json()
        self.assertEqual(echoed["length"], BIG_BYTES)
        self.assertEqual(echoed["sha256"], source.sha256)
        self.assertLess(
            sampler.peak, RSS_LIMIT, f"proxy RSS peaked at {sampler.peak} bytes"
        )
