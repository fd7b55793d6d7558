# -*- test-case-name: tests.test_demo -*-
"""
Tests for C{bluegreen demo} (L{bluegreen.demo.workshop}), with real processes:
the command runs as a child on free ports in a temporary directory, and
is stopped with C{SIGTERM}.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, cast

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.runner.procmon import ProcessMonitor
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from bluegreen.demo.workshop import APPS_WAIT, DemoOptions, DemoService, runDemo
from bluegreen.service.tap import ProxyService, ServiceReactor
from tests._util import PATIENCE, freePort, waitFor

#: Seconds allowed for the demo to come up (first run: git, two apps, two
#: Redis servers: twice the patience for one thing).
STARTUP = 2 * PATIENCE


def _get(url: str) -> tuple[int, bytes]:
    """
    @return: The status and body of C{GET url} (C{0, b""} when refused).
    """
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def _listeners(port: int) -> set[str]:
    """
    @return: The socket inodes listening on TCP C{port} (IPv4 or IPv6), read
        from C{/proc/net}: no connection is made (a connect to a free port of
        the ephemeral range can connect to itself).
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def _demoListening(port: int, root: Path) -> list[int]:
    """
    @return: The processes running in the demo's directory C{root} (as all
        its children do) that listen on C{port}.  A listener of another
        process (a test running beside this one may be given the same free
        port once the demo let it go) does not count.
    """
    inodes = _listeners(port)
    if not inodes:
        return []
    wanted = {f"socket:[{inode}]" for inode in inodes}
    where = str(root.resolve())
    owners = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not os.readlink(proc / "cwd").startswith(where):
                continue
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
        except OSError:
            continue
        if links & wanted:
            owners.append(int(proc.name))
    return owners


def _alive(pid: int) -> bool:
    """
    @return: Whether process C{pid} runs (a zombie does not).
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return "\nState:\tZ" not in status


def requireDemoTools() -> None:
    """
    Skip the test unless the tools the demo runs are installed.

    @raise SkipTest: One is not.
    """
    for tool in ("redis-server", "git", "sqlite3", "rsync"):
        if shutil.which(tool) is None:
            raise SkipTest(f"{tool} is not installed")


def childPids(root: Path) -> dict[str, int]:
    """
    @return: The demo's children's process ids recorded in C{root/run}.
    """
    return {path.stem: int(path.read_text()) for path in (root / "run").glob("*-*.pid")}


def assertNothingLeft(
    testCase: SynchronousTestCase,
    root: Path,
    pids: dict[str, int],
    ports: dict[str, int],
) -> None:
    """
    Assert that none of the demo's children (C{pids}) still runs, no process
    in the demo's directory listens on any of its C{ports}, and no pid file
    is left in C{root/run}.
    """
    for name, pid in pids.items():
        testCase.assertFalse(_alive(pid), f"{name} (pid {pid}) still runs")
    for name, port in ports.items():
        owners = _demoListening(port, root)
        testCase.assertEqual(owners, [], f"{name}'s port {port} is open")
    testCase.assertEqual(childPids(root), {})


def spawnDemo(
    root: Path, port: int, admin: int, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    """
    Start C{bluegreen demo} in C{root} on C{port} (admin API on C{admin}),
    its output going to C{log}.
    """
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from bluegreen.cli.main import main; sys.exit(main())",
            "demo",
            "--dir",
            str(root),
            "--port",
            str(port),
            "--admin-port",
            str(admin),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


class DemoOptionsTests(TestCase):
    """
    L{DemoOptions}.
    """

    def test_defaults(self) -> None:
        """
        C{DIR} is C{bluegreen-demo}, the port 3090.
        """
        options = DemoOptions()
        options.parseOptions([])
        self.assertEqual(options["dir"], "bluegreen-demo")
        self.assertEqual(options["port"], "3090")
        self.assertIsNone(options["admin-port"])

    def test_badPort(self) -> None:
        """
        A port that is not a number is refused.
        """
        self.assertRaises(usage.UsageError, DemoOptions().parseOptions, ["-p", "x"])


class _Proxy:
    """
    Stands for the bluegreen service: records that it was started.
    """

    started = False

    def startService(self) -> None:
        """
        Record the start.
        """
        self.started = True


class AppsWaitTests(SynchronousTestCase):
    """
    The demo starts bluegreen once both apps answer, or after L{APPS_WAIT}
    seconds: the timing, on a clock.
    """

    def test_appsNeverAnswer(self) -> None:
        """
        Apps that never answer (connections that never complete) hold the
        start back until L{APPS_WAIT} seconds have passed, then bluegreen
        starts anyway, with a warning naming them.
        """
        clock = MemoryReactorClock()
        reactor = cast(ServiceReactor, clock)
        demo = DemoService(reactor, Path(self.mktemp()), ProcessMonitor(reactor))
        demo.apps = ["http://127.0.0.1:1/", "http://127.0.0.1:2/"]
        proxy = _Proxy()
        with capturedLogs() as events:
            started = demo._startProxy(cast(ProxyService, proxy))
            d = Deferred.fromCoroutine(started)
            clock.pump([0.1] * int(APPS_WAIT * 10 - 20))
            self.assertFalse(proxy.started)
            clock.pump([0.1] * 100)
        self.successResultOf(d)
        self.assertTrue(proxy.started)
        self.assertIn(
            "http://127.0.0.1:1/ and http://127.0.0.1:2/ not answering after "
            f"{APPS_WAIT} s: starting bluegreen anyway",
            [formatEvent(event) for event in events],
        )


class NoRedisTests(TestCase):
    """
    Without C{redis-server}, the demo says how to install it.
    """

    def test_noRedis(self) -> None:
        """
        The message names redis-server and the apt command; nothing is
        created.
        """
        real = shutil.which
        self.patch(
            shutil,
            "which",
            lambda name, *a, **k: None if name == "redis-server" else real(name),
        )
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        root = Path(self.mktemp())
        options = DemoOptions()
        options.parseOptions(["--dir", str(root), "--port", str(freePort())])
        self.assertEqual(runDemo(options), 1)
        self.assertIn("redis-server", stderr.getvalue())
        self.assertIn("apt-get install redis-server", stderr.getvalue())
        self.assertFalse(root.exists())


class DemoTests(TestCase):
    """
    C{bluegreen demo} as a child process.
    """

    def setUp(self) -> None:
        requireDemoTools()
        self.root = Path(self.mktemp()).absolute()
        self.port = freePort()
        self.admin = freePort()
        self.process: subprocess.Popen[bytes] | None = None
        self.output = self.root.parent / f"{self.root.name}.out"
        self.addCleanup(self._kill)

    def _kill(self) -> None:
        """
        Stop the demo if a test left it running.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(PATIENCE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    async def start(self) -> None:
        """
        Start the demo and wait until GREEN answers C{/} through the proxy.
        """
        log = self.output.open("ab")
        self.addCleanup(log.close)
        self.process = spawnDemo(self.root, self.port, self.admin, log)
        await waitFor(
            lambda: (
                self.live() == "green"
                and _get(f"http://127.0.0.1:{self.port}/")[0] == 200
            ),
            "GREEN to answer / through the proxy",
            STARTUP,
            step=0.25,
        )

    def live(self) -> str | None:
        """
        @return: The live environment, per the admin API.
        """
        code, body = _get(f"http://127.0.0.1:{self.admin}/api/status")
        if code != 200:
            return None
        live: str = json.loads(body)["live"]
        return live

    def pids(self) -> dict[str, int]:
        """
        @return: The children's process ids recorded in C{DIR/run}.
        """
        return childPids(self.root)

    async def stop(self) -> None:
        """
        C{SIGTERM} the demo; check it exits and leaves nothing running.
        """
        assert self.process is not None
        await waitFor(lambda: len(self.pids()) == 4, "the pid files")
        pids = self.pids()
        ports = json.loads((self.root / "ports.json").read_text())
        self.process.send_signal(signal.SIGTERM)
        self.assertEqual(self.process.wait(PATIENCE), 0)
        assertNothingLeft(self, self.root, pids, ports)

    def git(self, *args: str) -> str:
        """
        @return: The output of C{git args} in the working clone.
        """
        return subprocess.run(
            ["git", *args],
            cwd=self.root / "meow",
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    async def test_runStopRerun(self) -> None:
        """
        The demo serves GREEN through the proxy; C{SIGTERM} stops every
        child; a second run reuses the repositories, the databases and the
        Redis data.
        """
        await self.start()
        for colour in ("green", "blue"):
            self.assertTrue((self.root / f"{colour}.git" / "HEAD").exists())
            self.assertTrue((self.root / colour / "www" / "meow").is_dir())
            self.assertTrue((self.root / colour / "meow.db").exists())
        self.assertIn("green", self.git("remote").split())
        ports = json.loads((self.root / "ports.json").read_text())
        subprocess.run(
            ["redis-cli", "-p", str(ports["green-redis"]), "SET", "MARKER", "kept"],
            check=True,
            capture_output=True,
        )
        head = self.git("rev-parse", "HEAD")
        await self.stop()

        await self.start()
        self.assertEqual(self.git("rev-parse", "HEAD"), head)
        self.assertEqual(self.git("rev-list", "--count", "HEAD").strip(), "1")
        ports = json.loads((self.root / "ports.json").read_text())
        marker = subprocess.run(
            ["redis-cli", "-p", str(ports["green-redis"]), "GET", "MARKER"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.assertEqual(marker, "kept")
        await self.stop()

    async def test_badCommitFailsOver(self) -> None:
        """
        A bad commit pushed to GREEN (the index route answers 500) moves the
        traffic to BLUE.
        """
        await self.start()
        clone = self.root / "meow"
        [source] = [
            path
            for path in (clone / "meow").rglob("*.py")
            if "STATUS = 200" in path.read_text()
        ]
        source.write_text(source.read_text().replace("STATUS = 200", "STATUS = 500"))
        self.git("commit", "-qam", "bad commit")
        self.git("push", "-q", "green", "HEAD:master")
        await waitFor(lambda: self.live() == "blue", "traffic on BLUE", step=0.25)
        self.assertEqual(_get(f"http://127.0.0.1:{self.port}/")[0], 200)
        await self.stop()

    async def test_quietStartAndSteps(self) -> None:
        """
        The demo's log shows no outage while its apps start (bluegreen
        starts checking once both answer), and once both are up it prints
        README's four steps, the C{bluegreen} command as an absolute path a
        new shell can run.
        """
        await self.start()
        await waitFor(
            lambda: "4. Fix and switch back." in self.output.read_text(),
            "the steps printed",
        )
        await self.stop()
        log = (self.root / "demo.log").read_text()
        self.assertIn("both apps answer: starting bluegreen", log)
        self.assertNotIn("both environments are down", log)
        printed = self.output.read_text()
        steps = [
            line.strip()
            for line in printed.splitlines()
            if line[:5].strip()[:1].isdigit()
        ]
        self.assertEqual(
            steps,
            [
                "1. GREEN is live.",
                "2. A bad commit.",
                "3. A feature flag.",
                "4. Fix and switch back.",
            ],
        )
        script = os.path.join(os.path.dirname(sys.executable), "bluegreen")
        command = f"BLUEGREEN_ADMIN=http://127.0.0.1:{self.admin} {script}"
        for step in ("status", "flag set RECENT on --env blue", "switch green"):
            self.assertIn(f"\n       {command} {step}\n", printed)
