# -*- test-case-name: tests.test_failover_integration -*-
# mypy: allow-untyped-calls
"""
Failover with real backend processes: the issue's workshop scenarios.

GREEN and BLUE are separate processes (L{tests._apps}) on free loopback
ports, told over HTTP to fail (C{500}), to hang, or killed with C{SIGKILL}.
The proxy runs in this process, built by L{bluegreen.service.tap.makeService} with
its health monitor and C{--retry connect}, on fast health settings
(L{INTERVAL}, L{TIMEOUT}, C{--fall 1}); the C{--state} tests run it as a
C{twistd} process so it can be stopped and started again.  Clients are treq
over a persistent connection pool, or loops of them for the tests under
load.

Measured figures (failover times, requests served and failed) are logged at
info level in the test log (C{_trial_temp/test.log}), as C{measured: ...}.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import treq
from attrs import define, field
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessTerminated
from twisted.logger import Logger
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from bluegreen.health import CheckResult
from tests._backends import ProxyUnderTest
from tests._backends import startProxy as startBackendsProxy
from tests._logs import captureLogs
from tests._processes import ChildProcess, spawn, twistdArguments, twistdPath
from tests._rawclient import treqPool
from tests._util import PATIENCE, healthArguments, waitFor
from tests._waiting import sleep, withTimeout

#: The test app (run as a process).
APP = Path(__file__).resolve().parent / "_apps.py"

#: The health settings of every test: fast, so the suite is.
INTERVAL = 0.5
FAST_INTERVAL = 0.2
TIMEOUT = 0.5
FALL = 1
RESPONSE_TIMEOUT = 2.0

#: The issue's bound on detection: interval x fall + timeout + 1 s.
DETECTION_BOUND = INTERVAL * FALL + TIMEOUT + 1.0

#: What the tests here accept: the bound, plus L{PATIENCE} for a loaded
#: machine.  The bound itself is checked on a L{Clock} in
#: C{tests.test_failover_chain} and measured by C{bench/failover.py}; these
#: tests log what they measure.
EVENTUALLY = DETECTION_BOUND + PATIENCE

HEALTH_OPTIONS = (
    *healthArguments(INTERVAL, FAST_INTERVAL, TIMEOUT),
    "--fall",
    str(FALL),
    "--response-timeout",
    str(RESPONSE_TIMEOUT),
    "--connect-timeout",
    "2",
    "--access-log",
    "none",
    "--admin",
    "none",
)

#: Concurrent client loops of the tests under load.
CLIENTS = 20

#: Answers each environment gives before the load moves on (GREEN before
#: the kill, BLUE after it): enough for the test to mean something.
LOAD_SHARE = 50

#: Outage errors logged in the outage test's window: one at once, then one
#: per interval (2 s).
OUTAGE_LOGS = 5

_log = Logger()


@define(eq=False)
class App:
    """
    A running test app (L{tests._apps}).

    @ivar name: C{green} or C{blue}.
    @ivar port: Its port on 127.0.0.1.
    @ivar process: Its process.
    """

    name: str
    port: int
    process: ChildProcess

    @property
    def url(self) -> str:
        """
        Its URL.
        """
        return f"http://127.0.0.1:{self.port}"


async def startApp(testCase: TestCase, name: str, port: int = 0) -> App:
    """
    Start a test app process (on a free port unless C{port} is given) and
    wait until it listens.
    """
    process = spawn(
        testCase,
        f"app {name}",
        sys.executable,
        [str(APP), "--name", name, "--port", str(port)],
    )
    match = await process.waitForLine(r'^\{"ready": true.*"port": (\d+)\}$')
    return App(name, int(match.group(1)), process)


async def setMode(pool: HTTPConnectionPool, app: App, mode: str) -> None:
    """
    Tell C{app} to answer C{ok}, C{fail500} or C{hang} from now on.
    """
    response = await treq.post(
        app.url + "/_control/mode", data=mode.encode(), pool=pool, timeout=5
    )
    document = await treq.json_content(response)
    assert response.code == 200 and document["mode"] == mode, document


def startProxy(
    testCase: TestCase, green: App, blue: App, *extra: str
) -> ProxyUnderTest:
    """
    Run the real proxy (health monitor, passive detection and C{--retry
    connect} included) in this process on a free port, on the fast health
    settings (L{HEALTH_OPTIONS}) unless C{extra} overrides them.
    """
    return startBackendsProxy(
        testCase,
        green.url,
        blue.url,
        *HEALTH_OPTIONS,
        "--retry",
        "connect",
        *extra,
        health=True,
    )


async def waitBothUp(proxy: ProxyUnderTest) -> None:
    """
    Wait until the health monitor has found both environments up.
    """
    health = proxy.service.health
    await waitFor(
        lambda: health.isUp("green") and health.isUp("blue"), "both environments up"
    )


@define
class Outcome:
    """
    One request made through the proxy.

    @ivar started: Monotonic time it was sent.
    @ivar ended: Monotonic time it completed or failed.
    @ivar status: The response status, if a response arrived.
    @ivar body: The response body.
    @ivar env: The C{env} the app named in a JSON body, if any.
    @ivar error: What went wrong on the client side, if anything.
    @ivar sent: The request body.
    """

    started: float
    ended: float
    status: int | None = None
    body: bytes = b""
    env: str | None = None
    error: str | None = None
    sent: bytes = b""

    @property
    def ok(self) -> bool:
        """
        A C{200} from an app.
        """
        return self.status == 200 and self.env in ("green", "blue")


def envOf(body: bytes) -> str | None:
    """
    The environment a test app's JSON body names, or L{None}.
    """
    try:
        document = json.loads(body)
    except ValueError:
        return None
    env = document.get("env") if isinstance(document, dict) else None
    return env if isinstance(env, str) else None


async def request(
    pool: HTTPConnectionPool,
    url: str,
    method: str = "GET",
    data: bytes | None = None,
    timeout: float = PATIENCE,
) -> Outcome:
    """
    Make one request and record its outcome (never fails).
    """
    started = time.monotonic()
    try:
        response = await treq.request(
            method, url, data=data, pool=pool, timeout=timeout
        )
        body = await treq.content(response)
    except Exception as e:
        return Outcome(
            started,
            time.monotonic(),
            error=f"{type(e).__name__}: {e}",
            sent=data or b"",
        )
    return Outcome(
        started, time.monotonic(), response.code, body, envOf(body), sent=data or b""
    )


@define(eq=False)
class Load:
    """
    L{CLIENTS} concurrent client loops, each sending one request after
    another (keep-alive, through one pool) until stopped.

    @ivar url: Where to send them.
    @ivar method: C{GET} or C{POST} (with a small body naming the loop and
        the request).
    @ivar outcomes: Every request made, in completion order.
    """

    pool: HTTPConnectionPool
    url: str
    method: str = "GET"
    clients: int = CLIENTS
    outcomes: list[Outcome] = field(factory=list)
    _running: bool = False
    _loops: list[Deferred[None]] = field(factory=list)

    def start(self) -> None:
        """
        Start the loops.
        """
        self._running = True
        self._loops = [
            Deferred.fromCoroutine(self._loop(n)) for n in range(self.clients)
        ]

    async def _loop(self, n: int) -> None:
        count = 0
        while self._running:
            count += 1
            data = (
                f"client {n} request {count}".encode()
                if self.method == "POST"
                else None
            )
            self.outcomes.append(await request(self.pool, self.url, self.method, data))

    async def stop(self) -> None:
        """
        Stop the loops and wait for their last requests.
        """
        self._running = False
        await gatherResults(self._loops)


def describe(
    outcomes: Sequence[Outcome], limit: int = 10, since: float | None = None
) -> str:
    """
    A few outcomes, for assertion messages.

    @param since: When the request times count from (the kill), if given.
    """

    def when(o: Outcome) -> str:
        if since is None:
            return ""
        return f"{(o.started - since) * 1000:+.1f}..{(o.ended - since) * 1000:+.1f} ms "

    return "\n".join(
        f"  {when(o)}{o.sent.decode()!r} {o.status} {o.env} {o.error or ''} "
        f"{o.body[:120]!r}"
        for o in outcomes[:limit]
    )


class FailoverTestCase(TestCase):
    """
    Starts GREEN and BLUE app processes and the proxy in front of them.
    """

    timeout = 4 * PATIENCE

    async def startAll(self, *extra: str) -> tuple[App, App, ProxyUnderTest]:
        """
        Start GREEN and BLUE, then the proxy, and wait until the health
        monitor has found both up.
        """
        self.control = treqPool(self, 2)
        # Persistent, and never retrying by itself: a failed request shows.
        self.clientPool = treqPool(self, CLIENTS)
        green, blue = await gatherResults(
            [
                Deferred.fromCoroutine(startApp(self, "green")),
                Deferred.fromCoroutine(startApp(self, "blue")),
            ]
        )
        proxy = startProxy(self, green, blue, *extra)
        await waitBothUp(proxy)
        return green, blue, proxy

    async def get(self, proxy: ProxyUnderTest, path: str = "/") -> Outcome:
        """
        C{GET path} through the proxy.
        """
        return await request(self.clientPool, proxy.url + path)

    async def assertServedBy(self, proxy: ProxyUnderTest, name: str) -> None:
        """
        Assert a C{GET /} through the proxy is answered C{200} by C{name}.
        """
        outcome = await self.get(proxy)
        self.assertEqual((outcome.status, outcome.env), (200, name), outcome)


class DetectionTests(FailoverTestCase):
    """
    An environment that answers 500 or hangs loses the traffic within the
    issue's bound: interval x fall + timeout + 1 s.
    """

    async def test_workshop500(self) -> None:
        """
        The workshop scenario: GREEN starts answering C{500} on C{/}; traffic
        is on BLUE within the bound (measured by C{GET}s through the proxy
        every 10 ms).  Until then the C{500}s are passed through unchanged
        (an application error is not a proxy error), and traffic stays on
        BLUE after GREEN recovers (manual failback).
        """
        green, _, proxy = await self.startAll()
        await self.assertServedBy(proxy, "green")
        await setMode(self.control, green, "fail500")
        began = time.monotonic()
        before: list[Outcome] = []
        while True:
            outcome = await self.get(proxy)
            if outcome.env == "blue" or time.monotonic() - began > EVENTUALLY:
                break
            before.append(outcome)
            # The measurement's request cadence (a GET every 10 ms).
            await sleep(0.01)
        elapsed = outcome.ended - began
        _log.info("measured: failover after a 500 in {s:.3f} s", s=elapsed)
        self.assertEqual((outcome.status, outcome.env), (200, "blue"), outcome)
        self.assertLessEqual(elapsed, EVENTUALLY)
        for seen in before:
            self.assertIn(seen.status, (200, 500), seen)
            self.assertEqual(seen.env, "green", seen)
        history = proxy.controller.history
        self.assertEqual(len(history), 1)
        self.assertEqual((history[0].source, history[0].to), ("green", "blue"))
        self.assertIn("status 500", history[0].reason)

        await setMode(self.control, green, "ok")
        health = proxy.service.health
        await waitFor(lambda: health.isUp("green"), "green back up")
        await self.assertServedBy(proxy, "blue")

    async def test_crashWithoutTraffic(self) -> None:
        """
        GREEN is killed while no request is in flight: the next health check
        finds the connection refused and traffic moves to BLUE within the
        bound.  (That the checks connect directly, without the 0.3 s attempt
        delay of C{HostnameEndpoint}, is tested in C{tests.test_health}.)
        """
        green, _, proxy = await self.startAll()
        await self.assertServedBy(proxy, "green")
        controller = proxy.controller
        began = time.monotonic()
        await green.process.kill()
        await waitFor(lambda: controller.active == "blue", "failover", EVENTUALLY)
        switched = time.monotonic()
        _log.info(
            "measured: failover after a crash, no traffic, in {s:.3f} s",
            s=switched - began,
        )
        self.assertLessEqual(switched - began, EVENTUALLY)
        await self.assertServedBy(proxy, "blue")
        last = proxy.service.health.health["green"].last
        assert last is not None
        self.assertEqual((last.ok, last.passive), (False, False), last)
        self.assertEqual(last.reason, "connection refused")

    async def test_hang(self) -> None:
        """
        GREEN accepts connections and never answers: the health check times
        out, traffic moves to BLUE within the bound, new requests are
        answered by BLUE, and a request that was already hanging on GREEN is
        answered C{504} after C{--response-timeout}.
        """
        green, _, proxy = await self.startAll()
        await self.assertServedBy(proxy, "green")
        await setMode(self.control, green, "hang")
        began = time.monotonic()
        hung = Deferred.fromCoroutine(self.get(proxy, "/hung"))
        controller = proxy.controller
        await waitFor(lambda: controller.active == "blue", "failover", EVENTUALLY)
        switched = time.monotonic()
        _log.info("measured: failover after a hang in {s:.3f} s", s=switched - began)
        self.assertLessEqual(switched - began, EVENTUALLY)
        self.assertIn("timeout", controller.history[-1].reason)
        self.assertFalse(hung.called, "the hung request was answered early")
        await self.assertServedBy(proxy, "blue")

        outcome = await withTimeout(
            hung, "the hung request", RESPONSE_TIMEOUT + PATIENCE
        )
        self.assertEqual(outcome.status, 504, outcome)
        self.assertIn(b"bluegreen: green (", outcome.body)
        self.assertIn(b"did not respond within 2 s", outcome.body)
        waited = outcome.ended - outcome.started
        self.assertGreaterEqual(waited, RESPONSE_TIMEOUT - 0.1)
        self.assertLess(waited, RESPONSE_TIMEOUT + PATIENCE)


class CrashUnderLoadTests(FailoverTestCase):
    """
    GREEN is killed with SIGKILL while L{CLIENTS} clients keep sending
    requests: the kill comes once GREEN has answered L{LOAD_SHARE} of them, and
    the load stops once BLUE has too.
    """

    timeout = 4 * PATIENCE

    async def crashUnderLoad(self, method: str) -> tuple[Load, float]:
        """
        Run the load, kill GREEN during it.

        @return: The load (with its outcomes) and when GREEN was killed.
        """
        green, _, proxy = await self.startAll()
        load = Load(self.clientPool, proxy.url + "/", method)
        load.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(load.stop()))

        def served(name: str) -> int:
            return sum(1 for o in load.outcomes if o.env == name)

        await waitFor(lambda: served("green") > LOAD_SHARE, "GREEN serving the load")
        killed = time.monotonic()
        green.process.sendSignal("KILL")
        await waitFor(lambda: served("blue") > LOAD_SHARE, "BLUE serving the load")
        await load.stop()
        self.assertIsNotNone(green.process.reason, "GREEN is still running")
        self.assertEqual(proxy.controller.active, "blue")
        history = proxy.controller.history
        self.assertEqual([(s.source, s.to) for s in history], [("green", "blue")])
        outcomes = load.outcomes
        firstBlue = min(o.ended for o in outcomes if o.env == "blue")
        failed = [o for o in outcomes if not o.ok]
        _log.info(
            "measured: SIGKILL under {clients} {method} clients: {total} requests, "
            "{failed} failed, first BLUE answer {s:.3f} s after the kill",
            clients=CLIENTS,
            method=method,
            total=len(outcomes),
            failed=len(failed),
            s=firstBlue - killed,
        )
        shares = {name: served(name) for name in ("green", "blue")}
        self.assertLessEqual(firstBlue - killed, EVENTUALLY)
        # Both served a real share of the load: the test means something.
        self.assertGreater(shares["green"], LOAD_SHARE, shares)
        self.assertGreater(shares["blue"], LOAD_SHARE, shares)
        # No GREEN answer after BLUE took over, no BLUE answer before.
        lastGreen = max(o.ended for o in outcomes if o.env == "green")
        self.assertLess(lastGreen, killed + PATIENCE)
        self.assertGreater(
            min(o.started for o in outcomes if o.env == "blue"), killed - PATIENCE
        )
        return load, killed

    async def test_crashGET(self) -> None:
        """
        With C{GET} clients, not one request fails: those the dying GREEN
        dropped, and those refused by the dead one, are retried on BLUE.
        """
        load, _ = await self.crashUnderLoad("GET")
        failed = [o for o in load.outcomes if not o.ok]
        self.assertEqual(failed, [], f"{len(failed)} failed:\n{describe(failed)}")

    async def test_crashPOST(self) -> None:
        """
        With C{POST} clients, only requests in flight at the kill fail (at
        most one per client), each with the proxy's C{502} naming GREEN: a
        POST that GREEN may have acted on is not resent.  Refused POSTs
        never reached an app, so they are retried on BLUE; every other POST
        is answered by the app, echoing its body.
        """
        load, killed = await self.crashUnderLoad("POST")
        failed = [o for o in load.outcomes if not o.ok]
        self.assertLessEqual(len(failed), CLIENTS, describe(failed, 40, killed))
        for outcome in failed:
            self.assertEqual(outcome.status, 502, describe([outcome]))
            self.assertIn(b"bluegreen: green (", outcome.body)
            self.assertLess(outcome.started, killed + PATIENCE, describe([outcome]))
            self.assertGreater(outcome.ended, killed, describe([outcome]))
        for outcome in load.outcomes:
            if outcome.ok:
                document = json.loads(outcome.body)
                self.assertEqual(document["echo"], outcome.sent.decode())


class OutageTests(FailoverTestCase):
    """
    Both environments down, then one back.
    """

    async def test_bothDownThenBlueBack(self) -> None:
        """
        BLUE dies, then GREEN (the live one): the proxy answers C{502} with
        a plain body naming the environment, logs the outage about once per
        interval (not once per request), and when BLUE comes back (a new
        process on the same port) traffic follows it.

        The outage log events are errors without a failure: trial fails a
        test only for logged failures, so nothing needs flushing (and the
        test checks that no failure was logged).
        """
        logs = captureLogs(self)
        green, blue, proxy = await self.startAll()
        health = proxy.service.health
        controller = proxy.controller
        await blue.process.kill()
        await waitFor(lambda: health.health["blue"].up is False, "blue down")
        self.assertEqual(controller.active, "green")
        await green.process.kill()
        await waitFor(lambda: controller.mode == "outage", "outage")
        began = time.monotonic()

        def outageEvents() -> list[dict[str, Any]]:
            return [
                e
                for e in logs.namespace("bluegreen.controller.Controller")
                if e.get("event") == "outage"
            ]

        self.assertEqual(len(outageEvents()), 1)
        # Health checks made (passive reports are not checks), seen through
        # the monitor's check observers.
        probes = {"green": 0, "blue": 0}
        blueChecks: list[CheckResult] = []
        counting = [True]

        def counted(name: str, result: CheckResult) -> None:
            if not result.passive:
                if counting[0]:
                    probes[name] += 1
                if name == "blue":
                    blueChecks.append(result)

        health.subscribeChecks(counted)
        answers = []
        # The window lasts until the outage has been logged OUTAGE_LOGS
        # times (2 s at the interval), however long a loaded machine takes.
        while len(outageEvents()) < OUTAGE_LOGS:
            if time.monotonic() - began > EVENTUALLY:
                raise AssertionError(f"outage not logged {OUTAGE_LOGS} times")
            answers.append(await self.get(proxy))
            # The traffic's cadence: a request every 10 ms.
            await sleep(0.01)
        window = time.monotonic() - began
        logged = len(outageEvents())
        counting[0] = False
        _log.info(
            "measured: outage: {logged} outage errors logged in {s:.2f} s ({n} "
            "requests, health checks: {probes})",
            logged=logged,
            s=window,
            n=len(answers),
            probes=probes,
        )
        self.assertGreater(len(answers), 20)
        # Every failed request reports GREEN to the health monitor, but the
        # checks of an environment known to be down do not multiply with the
        # traffic: about one per interval, plus at most one per fast
        # interval triggered by traffic.
        self.assertLessEqual(
            probes["green"], window / INTERVAL + window / FAST_INTERVAL + 2
        )
        # One at once, then one per interval (never more).
        self.assertGreaterEqual(logged, 3)
        self.assertLessEqual(logged, 6)
        self.assertLessEqual(logged, 1 + window / INTERVAL + 1)
        for outcome in answers:
            self.assertEqual(outcome.status, 502, outcome)
            self.assertRegex(
                outcome.body,
                rb"^bluegreen: green \(http://127\.0\.0\.1:\d+\) "
                rb"refused the connection\n$",
            )
        self.assertEqual(controller.active, "green")

        restarted = time.monotonic()
        await startApp(self, "blue", blue.port)
        await waitFor(lambda: controller.active == "blue", "traffic on blue")
        back = time.monotonic()
        _log.info(
            "measured: outage over {s:.3f} s after BLUE restarted", s=back - restarted
        )
        self.assertEqual(controller.mode, "serving")
        await self.assertServedBy(proxy, "blue")
        afterwards = len(outageEvents())
        # Two more checks of BLUE: two intervals, in which a running outage
        # log would have logged again.
        checks = len(blueChecks)
        await waitFor(lambda: len(blueChecks) >= checks + 2, "two more checks")
        self.assertEqual(len(outageEvents()), afterwards, "outage still logged")
        self.assertEqual(
            [e for e in logs.events if e.get("log_failure") is not None], []
        )


class StateFileTests(TestCase):
    """
    C{--state} keeps the live colour across a restart of C{twistd}.
    """

    timeout = 4 * PATIENCE

    async def startTwistd(
        self, green: App, blue: App, state: str
    ) -> tuple[ChildProcess, str]:
        """
        Run C{twistd -n bluegreen} with C{--state state} on a free port.

        @return: The process and the proxy's URL.
        """
        process = spawn(
            self,
            "twistd bluegreen",
            twistdPath(),
            twistdArguments(green.url, blue.url, "--state", state, *HEALTH_OPTIONS),
        )
        match = await process.waitForLine(r"ProxySite starting on (\d+)")
        return process, f"http://127.0.0.1:{match.group(1)}"

    async def assertStopsCleanly(self, process: ChildProcess) -> None:
        """
        SIGTERM C{process}: it shuts down cleanly, and ends as C{twistd}
        always does on SIGTERM (by re-raising the signal once the reactor
        has stopped).
        """
        await process.stop()
        reason = process.reason
        assert reason is not None
        ended = reason.value
        self.assertIsInstance(ended, ProcessTerminated, process.tail())
        assert isinstance(ended, ProcessTerminated)
        self.assertEqual(ended.signal, signal.SIGTERM, process.tail())
        self.assertIsNotNone(process.findLine(r"Server Shut Down\.$"), process.tail())
        self.assertIsNone(process.findLine(r"Traceback"), process.tail())

    async def test_restartKeepsColour(self) -> None:
        """
        GREEN fails, the proxy fails over to BLUE and saves that; GREEN
        recovers; the proxy is stopped and started again with the same
        C{--state}: BLUE is live from the start (the log says the colour was
        restored, and the very first request goes to BLUE although GREEN,
        the C{--active}, is healthy).
        """
        control = treqPool(self, 2)
        clients = treqPool(self, 2)
        state = os.path.abspath(self.mktemp())
        green = await startApp(self, "green")
        blue = await startApp(self, "blue")
        first, url = await self.startTwistd(green, blue, state)
        await first.waitForLine(r"blue is up")
        await first.waitForLine(r"green is up")
        self.assertEqual((await request(clients, url)).env, "green")
        await setMode(control, green, "fail500")
        await first.waitForLine(r"switched live environment green -> blue")
        # The switch is logged just before the file is written.
        await waitFor(lambda: os.path.exists(state), "state file written")
        saved = json.loads(Path(state).read_text())
        self.assertEqual(saved["live"], "blue")
        self.assertEqual(
            [(s["from"], s["to"]) for s in saved["history"]], [("green", "blue")]
        )
        await setMode(control, green, "ok")
        await first.waitForLine(r"green is up", since=len(first.lines))
        await clients.closeCachedConnections()
        await self.assertStopsCleanly(first)

        second, url = await self.startTwistd(green, blue, state)
        line = await second.waitForLine(
            r"bluegreen [\d.]+\S*: live environment (\w+) \((.*)\)"
        )
        self.assertEqual(line.group(1), "blue")
        self.assertTrue(line.group(2).endswith(f", restored from {state}"), line[0])
        outcome = await request(clients, url)
        self.assertEqual((outcome.status, outcome.env), (200, "blue"), outcome)
        await second.waitForLine(r"green is up")
        # A window in which a wrong failback would show (nothing to wait
        # for: the test is that nothing happens).
        await sleep(2 * INTERVAL)
        self.assertEqual((await request(clients, url)).env, "blue")
        self.assertIsNone(second.findLine(r"switched live environment"))
        await clients.closeCachedConnections()
        await self.assertStopsCleanly(second)

    async def test_corruptStateFile(self) -> None:
        """
        A state file that is not JSON is reported in the log; the proxy
        starts from C{--active} (GREEN), serves, saves a valid file at the
        next switch, and exits with status 0.
        """
        control = treqPool(self, 2)
        clients = treqPool(self, 2)
        state = os.path.abspath(self.mktemp())
        Path(state).write_text('{"version": 1, "live": "bl')
        green = await startApp(self, "green")
        blue = await startApp(self, "blue")
        process, url = await self.startTwistd(green, blue, state)
        problem = await process.waitForLine(
            r"state file ignored, starting with green live: (.*)"
        )
        self.assertIn(f"{state} is not valid JSON", problem.group(1))
        await process.waitForLine(r"live environment green \(.*, start\)")
        await process.waitForLine(r"green is up")
        outcome = await request(clients, url)
        self.assertEqual((outcome.status, outcome.env), (200, "green"), outcome)
        await setMode(control, green, "fail500")
        await process.waitForLine(r"switched live environment green -> blue")
        await waitFor(
            lambda: '"live": "blue"' in Path(state).read_text(), "state file replaced"
        )
        self.assertEqual(json.loads(Path(state).read_text())["live"], "blue")
        self.assertIsNone(process.reason)
        await clients.closeCachedConnections()
        await self.assertStopsCleanly(process)
