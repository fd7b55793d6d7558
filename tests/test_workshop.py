# -*- test-case-name: tests.test_workshop -*-
"""
The workshop end to end (issue 7, "End-to-end test"): C{bluegreen demo}
runs as a child on free ports in a temporary directory, and the test walks
the workshop through the proxy, the admin API, the real C{bluegreen}
console script and C{git push}, while a steady stream of C{GET /} requests
goes through the proxy and must see no error.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from attrs import define
from treq.client import HTTPClient
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool

from tests._util import PATIENCE, freePort

from .test_demo import (
    STARTUP,
    assertNothingLeft,
    childPids,
    requireDemoTools,
    spawnDemo,
)

reactor: Any = _reactor

#: Concurrent clients of the background stream.
CLIENTS = 5

#: The console script of this environment.
BLUEGREEN = str(Path(sys.executable).parent / "bluegreen")

#: A small, unique "PNG" (the app only checks the first bytes).
IMAGE = b"\x89PNG\r\n\x1a\n" + os.urandom(64)


@define
class Sample:
    """
    One request of the background stream.

    @ivar started: When it was sent (C{time.monotonic}).
    @ivar ended: When it was answered or failed.
    @ivar status: The HTTP status, or L{None} for an error.
    @ivar error: The error, if any.
    """

    started: float
    ended: float
    status: int | None
    error: str | None = None


async def _sleep(seconds: float) -> None:
    """
    Let the reactor run for C{seconds}.
    """
    await deferLater(reactor, seconds, lambda: None)


async def _until(
    what: str, predicate: Callable[[], Awaitable[bool]], timeout: float = PATIENCE
) -> float:
    """
    Poll C{predicate} (every 0.1 s) until it is true.

    @return: When it was (C{time.monotonic}).
    @raise AssertionError: After C{timeout} seconds (default L{PATIENCE}).
    """
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await _sleep(0.1)
    return time.monotonic()


def printedSteps(text: str) -> dict[int, list[str]]:
    """
    The commands of each step that C{bluegreen demo} printed.

    @param text: The demo's standard output.
    @return: The command lines (indented 7 spaces, under C{"N. ..."}) by
        step number.
    """
    steps: dict[int, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        head = line.strip().split(".", 1)[0]
        if line.startswith("  ") and line[2:3].isdigit() and head.isdigit():
            current = steps.setdefault(int(head), [])
        elif current is not None and line.startswith(" " * 7):
            current.append(line.strip())
    return steps


def _rows(db: Path, query: str) -> set[tuple[Any, ...]]:
    """
    @return: The rows of C{query} on the database C{db}, read-only.
    """
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=PATIENCE)
    try:
        return set(connection.execute(query).fetchall())
    finally:
        connection.close()


#: The votes, as compared between databases.
VOTES = "SELECT id, fact_id, score, created_at FROM votes"

#: The uploads, as compared between databases.
CATS = "SELECT id, image, content_type, created_at FROM cats"


class WorkshopTests(TestCase):
    """
    The workshop, from C{bluegreen demo} to Ctrl-C.
    """

    #: The whole workshop: a dozen waits of at most PATIENCE each.
    timeout = 12 * PATIENCE

    def setUp(self) -> None:
        requireDemoTools()
        self.root = Path(self.mktemp()).absolute()
        self.port = freePort()
        self.admin = freePort()
        while self.admin == self.port:
            self.admin = freePort()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.addCleanup(self._kill)
        # The test's own requests: no connection is kept.
        self.client = HTTPClient(
            Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        )
        # The stream's: persistent, closed when the test ends.
        self.streamPool = HTTPConnectionPool(reactor, persistent=True)
        self.streamPool.maxPersistentPerHost = CLIENTS
        self.addCleanup(self.streamPool.closeCachedConnections)
        self.streamClient = HTTPClient(Agent(reactor, pool=self.streamPool))
        self.samples: list[Sample] = []
        self.streaming = False

    def _kill(self) -> None:
        """
        Stop the demo if the test left it running.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # Helpers.

    async def get(self, url: str) -> tuple[int, bytes]:
        """
        @return: The status and body of C{GET url} (C{0, b""} on error).
        """
        try:
            response = await self.client.get(url, timeout=PATIENCE)
            return response.code, await response.content()
        except Exception:
            return 0, b""

    async def status(self) -> dict[str, Any] | None:
        """
        @return: The admin API's status, or L{None}.
        """
        code, body = await self.get(f"http://127.0.0.1:{self.admin}/api/status")
        if code != 200:
            return None
        status: dict[str, Any] = json.loads(body)
        return status

    async def live(self) -> str | None:
        """
        @return: The live environment, per the admin API.
        """
        status = await self.status()
        return None if status is None else str(status["live"])

    async def command(
        self, *argv: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> str:
        """
        Run a command without blocking the reactor.

        @param env: Its environment (default: the test's).
        @return: Its standard output.
        @raise AssertionError: If it fails.
        """
        out, err, code = await getProcessOutputAndValue(
            argv[0],
            argv[1:],
            env=dict(os.environ) if env is None else env,
            path=str(cwd) if cwd is not None else None,
        )
        if code != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited with {code}:\n"
                f"{out.decode(errors='replace')}{err.decode(errors='replace')}"
            )
        return out.decode()

    async def shell(self, *lines: str) -> str:
        """
        Run command lines as printed, one after the other, in a new shell:
        C{sh} with a fresh environment whose C{PATH} holds only the system's
        directories (not this virtualenv's).

        @return: The standard output.
        @raise AssertionError: If one fails.
        """
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ["HOME"]}
        return await self.command("/bin/sh", "-ec", "\n".join(lines), env=env)

    def steps(self) -> dict[int, list[str]]:
        """
        @return: The commands of the steps the demo printed (see
            L{printedSteps}).
        """
        return printedSteps(self.output.read_text())

    async def git(self, *args: str) -> str:
        """
        @return: The output of C{git args} in the working clone.
        """
        return await self.command(
            shutil.which("git") or "git", *args, cwd=self.root / "meow"
        )

    async def bluegreen(self, *args: str) -> str:
        """
        @return: The output of the C{bluegreen} console script.
        """
        return await self.command(
            BLUEGREEN, *args, "--admin", f"http://127.0.0.1:{self.admin}"
        )

    def db(self, colour: str) -> Path:
        """
        @return: The environment's database (see L{bluegreen.demo.workshop}).
        """
        return self.root / colour / "meow.db"

    async def vote(self, factId: int, score: int) -> None:
        """
        Vote through the proxy.
        """
        response = await self.client.post(
            f"{self.base}/fact/{factId}/vote",
            json={"score": score},
            timeout=PATIENCE,
        )
        body = await response.content()
        self.assertEqual(response.code, 201, body)

    async def upload(self) -> int:
        """
        Upload L{IMAGE} through the proxy.

        @return: The new cat's id.
        """
        response = await self.client.post(
            f"{self.base}/upload",
            files={
                "image": ("cat.png", "image/png", FileBodyProducer(io.BytesIO(IMAGE)))
            },
            timeout=PATIENCE,
        )
        body = await response.content()
        self.assertEqual(response.code, 201, body)
        catId: int = json.loads(body)["id"]
        return catId

    async def page(self) -> bytes:
        """
        @return: The home page through the proxy (asserting it is 200).
        """
        code, body = await self.get(f"{self.base}/")
        self.assertEqual(code, 200, body[:200])
        return body

    # The background stream.

    async def _client(self) -> None:
        """
        One client of the stream: C{GET /} until told to stop.
        """
        while self.streaming:
            started = time.monotonic()
            try:
                response = await self.streamClient.get(
                    f"{self.base}/", timeout=PATIENCE
                )
                await response.content()
            except Exception as e:
                self.samples.append(
                    Sample(started, time.monotonic(), None, repr(e)[:300])
                )
            else:
                self.samples.append(Sample(started, time.monotonic(), response.code))
            # Paces the client (about 50 requests a second each).
            await _sleep(0.02)

    def startStream(self) -> Deferred[Any]:
        """
        Start the stream's clients.

        @return: Fires once they have all stopped.
        """
        self.streaming = True
        return DeferredList(
            [Deferred.fromCoroutine(self._client()) for _ in range(CLIENTS)],
            consumeErrors=True,
        )

    # The demo.

    async def start(self) -> None:
        """
        Start the demo and wait until GREEN answers C{/} through the proxy.
        """
        self.output = self.root.parent / f"{self.root.name}.out"
        log = self.output.open("ab")
        self.addCleanup(log.close)
        self.process = spawnDemo(self.root, self.port, self.admin, log)

        async def ready() -> bool:
            return (
                await self.live() == "green"
                and (await self.get(f"{self.base}/"))[0] == 200
            )

        await _until("GREEN to answer / through the proxy", ready, STARTUP)

        async def bothUp() -> bool:
            status = await self.status()
            return status is not None and all(
                environment["health"]["state"] == "up"
                for environment in status["environments"].values()
            )

        # As a newcomer would: BLUE must be up too, or a failover (and the
        # proxy's retry on the standby) has nowhere to go.
        await _until("GREEN and BLUE up", bothUp, STARTUP)

        async def printed() -> bool:
            return len(self.steps()) == 4

        # The demo prints its steps once both are up.
        await _until("the steps printed", printed)

    def pids(self) -> dict[str, int]:
        """
        @return: The children's process ids recorded in C{DIR/run}.
        """
        return childPids(self.root)

    async def stop(self) -> None:
        """
        C{SIGTERM} the demo; check it exits and leaves nothing running
        (as L{tests.test_demo.DemoTests.stop}, without blocking the reactor).
        """
        process = self.process
        assert process is not None

        async def recorded() -> bool:
            return len(self.pids()) == 4

        await _until("the pid files", recorded)
        pids = self.pids()
        ports = json.loads((self.root / "ports.json").read_text())
        process.send_signal(signal.SIGTERM)

        async def exited() -> bool:
            return process.poll() is not None

        await _until("the demo to exit", exited)
        self.assertEqual(process.returncode, 0)
        assertNothingLeft(self, self.root, pids, ports)

    def describe(
        self, samples: list[Sample], t0: float, events: dict[str, float]
    ) -> str:
        """
        @return: A short account of C{samples}: how many of each status and
            when (seconds since C{t0}), next to the test's C{events}.
        """
        byStatus: dict[str, list[float]] = {}
        for sample in samples:
            key = str(sample.status) if sample.error is None else sample.error
            byStatus.setdefault(key, []).append(sample.started - t0)
        parts = [
            f"{len(times)} x {key} from {min(times):.2f} s to {max(times):.2f} s"
            for key, times in byStatus.items()
        ]
        parts += [f"{name} at {when - t0:.2f} s" for name, when in events.items()]
        return "; ".join(parts)

    # The test.

    async def test_workshop(self) -> None:
        """
        The workshop: GREEN serves and takes writes; a bad commit fails over
        to BLUE with the writes; the C{RECENT} flag shows and hides the
        uploads; the revert and C{bluegreen switch green} bring the traffic
        back with BLUE's writes, and a vote made on BLUE after that switch
        follows with the next sync; a stream of C{GET /} sees no error but
        GREEN's own 500s before the failover; Ctrl-C leaves nothing.
        """
        t0 = time.monotonic()
        timings: dict[str, float] = {}
        await self.start()
        timings["started"] = time.monotonic() - t0
        stream = self.startStream()
        stopped = False
        try:
            # 1. GREEN serves; votes and the upload land in its database.
            self.assertIn(b'id="environment">green<', await self.page())
            before = _rows(self.db("green"), VOTES)
            await self.vote(1, 5)
            await self.vote(2, 3)
            catId = await self.upload()
            votes = _rows(self.db("green"), VOTES) - before
            self.assertEqual({(f, s) for _, f, s, _ in votes}, {(1, 5), (2, 3)})
            cats = {row for row in _rows(self.db("green"), CATS) if row[0] == catId}
            self.assertEqual([row[1] for row in cats], [IMAGE])
            timings["writes on GREEN"] = time.monotonic() - t0

            # 2. The bad commit, made with the printed commands in a new
            # shell: failover to BLUE, with GREEN's writes.  (How fast the
            # failover is, bench/failover.py measures; here it must happen.)
            steps = self.steps()
            *badCommit, status = steps[2]
            self.assertEqual(len(badCommit), 4, steps[2])
            pushed = time.monotonic()
            await self.shell(*badCommit)
            deployed = time.monotonic()

            async def onBlue() -> bool:
                return await self.live() == "blue"

            switched = await _until("traffic on BLUE", onBlue)
            timings["push -> live blue"] = switched - pushed
            timings["deployed -> live blue"] = switched - deployed
            first500 = min(
                (s.started for s in self.samples if s.status == 500), default=None
            )
            if first500 is not None:
                timings["first 500 -> live blue"] = switched - first500
            self.assertIn(b'id="environment">blue<', await self.page())
            self.assertIn("live: BLUE", await self.shell(status))
            # The hook told bluegreen which commit GREEN runs.
            reported = await self.status()
            assert reported is not None
            self.assertEqual(
                reported["environments"]["green"]["revision"]["message"],
                "bad commit",
            )

            async def migrated() -> bool:
                blue = self.db("blue")
                return votes <= _rows(blue, VOTES) and cats <= _rows(blue, CATS)

            await _until("GREEN's writes on BLUE", migrated)
            timings["writes on BLUE"] = time.monotonic() - t0

            # 3. The RECENT flag, through the console script as printed.
            [flagOn] = steps[3]
            await self.shell(flagOn)

            async def recentShown() -> bool:
                return b"Recent uploads" in await self.page()

            await _until("the recent uploads shown", recentShown)
            self.assertIn(f'data-cat="{catId}"'.encode(), await self.page())
            await self.bluegreen("flag", "set", "RECENT", "off", "--env", "blue")

            async def recentHidden() -> bool:
                return b"Recent uploads" not in await self.page()

            await _until("the recent uploads hidden", recentHidden)
            timings["flag on/off"] = time.monotonic() - t0

            # 4. Revert, GREEN healthy again; a vote on BLUE; switch back,
            # with the printed commands.
            cd, revert, switch = steps[4]
            await self.shell(cd, revert)

            async def greenUp() -> bool:
                status = await self.status()
                return (
                    status is not None
                    and status["environments"]["green"]["health"]["state"] == "up"
                )

            await _until("GREEN healthy again", greenUp)
            self.assertEqual(await self.live(), "blue")
            beforeBlue = _rows(self.db("blue"), VOTES)
            await self.vote(3, 4)
            blueVotes = _rows(self.db("blue"), VOTES) - beforeBlue
            self.assertEqual({(f, s) for _, f, s, _ in blueVotes}, {(3, 4)})
            said = await self.shell(switch)
            self.assertRegex(
                said,
                r"^synced blue -> green first: \d+ rows? copied( \(.*\))?, "
                r"0 conflicts\nswitched to GREEN \(was blue\): ",
            )
            self.assertEqual(await self.live(), "green")
            self.assertIn(b'id="environment">green<', await self.page())

            async def back() -> bool:
                return blueVotes <= _rows(self.db("green"), VOTES)

            await _until("BLUE's vote on GREEN", back)
            timings["back on GREEN"] = time.monotonic() - t0

            # 4b. A vote on the old side (BLUE) after the switch and its
            # syncs, as a request finishing there makes one: the next exact
            # sync carries it over as a change.
            async def hooksDone() -> bool:
                status = await self.status()
                if status is None:
                    return False
                last = status["sync"]["last"].get("blue->green") or {}
                return (
                    last.get("who") == "after switch" and not status["sync"]["running"]
                )

            await _until("the sync after the switch", hooksDone)
            blueStatus = await self.status()
            assert blueStatus is not None
            blueURL = blueStatus["environments"]["blue"]["url"]
            beforeLate = _rows(self.db("blue"), VOTES)
            response = await self.client.post(
                f"{blueURL}/fact/2/vote", json={"score": 1}, timeout=PATIENCE
            )
            self.assertEqual(response.code, 201, await response.content())
            lateVotes = _rows(self.db("blue"), VOTES) - beforeLate
            self.assertEqual({(f, s) for _, f, s, _ in lateVotes}, {(2, 1)})
            lateSaid = await self.bluegreen("sync", "blue", "green")
            self.assertTrue(lateVotes <= _rows(self.db("green"), VOTES), lateSaid)
            self.assertIn("complete: copied 1 row, 0 conflicts", lateSaid)
            self.assertIn("1 change applied from the source's log", lateSaid)
            lateAgain = await self.bluegreen("sync", "blue", "green")
            self.assertIn("complete: copied 0 rows, 0 conflicts", lateAgain)

            # 5. The stream: once it has seen GREEN again, judge it.
            again = time.monotonic()

            async def seenGreen() -> bool:
                return any(s.started > again and s.status == 200 for s in self.samples)

            await _until("the stream served after the switch back", seenGreen)
            self.streaming = False
            await stream
            stopped = True
            errors = [s for s in self.samples if s.status is None]
            self.assertEqual(errors, [], "connection errors in the stream")
            bad = [s for s in self.samples if s.status not in (200, 500)]
            self.assertEqual(
                bad,
                [],
                "unexpected statuses in the stream: "
                + self.describe(bad, t0, {"pushed": pushed, "switched": switched}),
            )
            late = [s for s in self.samples if s.status == 500 and s.started > switched]
            self.assertEqual(late, [], "500s sent after the failover")
            early = [s for s in self.samples if s.status == 500 and s.started < pushed]
            self.assertEqual(early, [], "500s before the bad commit")
            self.assertGreater(len(self.samples), 100)
        finally:
            if not stopped:
                self.streaming = False
                await stream
        await self.streamPool.closeCachedConnections()

        # 6. Ctrl-C: nothing left.
        await self.stop()
        timings["stopped"] = time.monotonic() - t0
        n500 = sum(1 for s in self.samples if s.status == 500)
        print(
            f"\nworkshop: {len(self.samples)} GETs, {n500} of GREEN's 500s; "
            + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        )
