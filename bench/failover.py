#!/usr/bin/env python
"""
Measure how fast bluegreen fails over, and what clients see meanwhile.

Usage::

    .venv/bin/python bench/failover.py [--repeat 5] [--duration 10]
        [--kill-after 3] [--clients 20] [--hits 50] [--only default|fast] [--seed N]
        [--json FILE]

Each measurement starts fresh child processes on free 127.0.0.1 ports: GREEN
and BLUE (C{tests/_apps.py}, a twisted.web app whose behaviour is changed over
HTTP) and C{twistd -n bluegreen} in front of them (GREEN live, C{--access-log
none}, C{--admin none}), waits until the proxy's log says both are up, then
breaks GREEN.  Two health profiles are measured:

 - C{default}: the defaults (C{--health-interval 5 --health-timeout 2 --fall 1
   --rise 2 --fast-interval 1});
 - C{fast}: C{--health-interval 1 --health-timeout 0.5}.

Detection (no client traffic, so no passive detection), C{--repeat} times per
fault, each after a random wait of up to one interval so the fault lands
anywhere in the check cycle:

 - C{500}: GREEN answers C{500} to everything;
 - C{hang}: GREEN accepts connections and never answers;
 - C{crash}: GREEN is killed with SIGKILL.

The figure is the time from the fault to the proxy's C{switched live
environment green -> blue} log line (timestamped as it arrives on the pipe).

Crash under load, once per method: C{--clients} threads send keep-alive C{GET
/} (or C{POST /} with a small body) for C{--duration} seconds and GREEN is
killed after C{--kill-after}.  It counts the requests, the failed ones (any
answer but a C{200} from an app, any client error) and how long after the kill
the first answer from BLUE came.

One-route fault, once per profile and target: GREEN live and healthy, C{--hits}
C{GET}s and as many C{POST}s (each on a new connection) to a path on which
GREEN alone (C{/_drop/green}) or both apps (C{/_drop/all}) close the
connection without answering, while the health path answers.  It counts what
the clients got and the switches the proxy logged, up to two check intervals
after the last request.

Every child is stopped (SIGTERM, then SIGKILL) when a measurement ends, fails
or the script is interrupted.  It prints the results as text, then as rST for
README.rst.  The exit status is 1 if a measurement could not be made, else 0.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from run import (
    cpuModel,
    exitOnSignals,
    nproc,
    progress,
    rstTable,
    runScript,
    stopProcess,
    textTable,
    twistdPath,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
APP = REPO / "tests" / "_apps.py"
HOST = "127.0.0.1"

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0

FAULTS = ("500", "hang", "crash")
FAULT_LABELS = {
    "500": "GREEN answers 500",
    "hang": "GREEN hangs (accepts, never answers)",
    "crash": "GREEN killed (SIGKILL), no traffic",
}


@dataclass(frozen=True)
class Profile:
    """
    A set of health options.

    @ivar name: What the report calls it.
    @ivar interval: C{--health-interval}.
    @ivar timeout: C{--health-timeout}.
    @ivar fall: C{--fall}.
    @ivar options: The command-line options that select it.
    """

    name: str
    interval: float
    timeout: float
    fall: int
    options: tuple[str, ...]

    @property
    def bound(self) -> float:
        """
        The issue's bound on detection: interval x fall + timeout + 1 s.
        """
        return self.interval * self.fall + self.timeout + 1.0

    def describe(self) -> str:
        """
        @return: E.g. C{"interval 5 s, timeout 2 s, fall 1"}.
        """
        return (
            f"interval {self.interval:g} s, timeout {self.timeout:g} s, "
            f"fall {self.fall}"
        )


PROFILES = {
    "default": Profile("default", 5.0, 2.0, 1, ()),
    "fast": Profile(
        "fast",
        1.0,
        0.5,
        1,
        ("--health-interval", "1", "--health-timeout", "0.5"),
    ),
}


class BenchError(Exception):
    """
    A child did not start or behave as expected; the message says why.
    """


# ---------------------------------------------------------------------------
# Children


class Child:
    """
    A child process whose output lines are read by a thread and timestamped
    as they arrive.

    @ivar name: What it is, for messages.
    @ivar process: The process.
    @ivar lines: C{(monotonic time, text)} of every output line so far.
    """

    def __init__(
        self, name: str, command: list[str], env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        env = dict(os.environ if env is None else env)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
        )
        env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        for raw in stream:
            now = time.monotonic()
            with self._changed:
                self.lines.append((now, raw.decode("utf-8", "replace").rstrip()))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def waitForLine(
        self, pattern: str, since: int = 0, timeout: float = START_TIMEOUT
    ) -> tuple[float, re.Match[str]]:
        """
        Wait for an output line (from index C{since} on) matching C{pattern}.

        @return: When the line arrived, and the match.
        @raise BenchError: If the child exits or C{timeout} passes first.
        """
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = since
        with self._changed:
            while True:
                for when, text in self.lines[index:]:
                    match = compiled.search(text)
                    if match is not None:
                        return when, match
                index = max(index, len(self.lines))
                if not self._reader.is_alive():
                    raise BenchError(
                        f"{self.name} exited ({self.process.poll()}) before "
                        f"{pattern!r}:\n{self.tail()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(
                        f"{self.name}: no {pattern!r} within {timeout:g} s:\n"
                        f"{self.tail()}"
                    )
                self._changed.wait(min(left, 0.5))

    def tail(self, count: int = 15) -> str:
        """
        @return: The last C{count} output lines.
        """
        return "\n".join(text for _, text in self.lines[-count:]) or "(no output)"

    def kill(self) -> None:
        """
        SIGKILL it and wait for it.
        """
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """
        SIGTERM it, then SIGKILL it if it lingers.
        """
        process = self.process
        stopProcess(process)
        self._reader.join(STOP_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()


@dataclass
class Setup:
    """
    GREEN, BLUE and the proxy, running.
    """

    green: Child
    greenPort: int
    blue: Child
    bluePort: int
    proxy: Child
    proxyPort: int


def startApp(name: str, children: list[Child]) -> tuple[Child, int]:
    """
    Start a test app on a free port.

    @return: It and its port.
    """
    child = Child(name, [sys.executable, str(APP), "--name", name, "--port", "0"])
    children.append(child)
    _, match = child.waitForLine(r'^\{"ready": true.*"port": (\d+)\}$')
    return child, int(match.group(1))


def startAll(profile: Profile, children: list[Child]) -> Setup:
    """
    Start GREEN, BLUE and the proxy; wait until the proxy has found both up.
    """
    green, greenPort = startApp("green", children)
    blue, bluePort = startApp("blue", children)
    proxy = Child(
        "bluegreen",
        [
            twistdPath(),
            "-n",
            "--pidfile=",
            "bluegreen",
            "--port",
            f"tcp:0:interface={HOST}",
            "--green",
            f"http://{HOST}:{greenPort}",
            "--blue",
            f"http://{HOST}:{bluePort}",
            "--access-log",
            "none",
            "--admin",
            "none",
            *profile.options,
        ],
    )
    children.append(proxy)
    _, match = proxy.waitForLine(r"ProxySite starting on (\d+)")
    proxy.waitForLine(r"green is up")
    proxy.waitForLine(r"blue is up")
    return Setup(green, greenPort, blue, bluePort, proxy, int(match.group(1)))


def stopAll(children: list[Child]) -> None:
    """
    Stop every child, newest first, and forget them.
    """
    while children:
        children.pop().stop()


def setMode(port: int, mode: str) -> None:
    """
    Tell the app on C{port} to answer C{ok}, C{fail500} or C{hang}.
    """
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("POST", "/_control/mode", body=mode.encode())
        response = conn.getresponse()
        document = json.loads(response.read())
    finally:
        conn.close()
    if response.status != 200 or document.get("mode") != mode:
        raise BenchError(f"setting mode {mode} failed: {document}")


def envOf(body: bytes) -> str | None:
    """
    @return: The C{env} a test app's JSON body names, or L{None}.
    """
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document.get("env") if isinstance(document, dict) else None


def getOnce(port: int) -> tuple[int, bytes]:
    """
    One C{GET /} on a new connection.

    @return: The status and body.
    """
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# Detection


def detect(profile: Profile, fault: str, rng: random.Random) -> float:
    """
    Break GREEN one way and time the failover.

    @return: Seconds from the fault to the proxy's switch log line.
    @raise BenchError: If something did not start, or no failover came.
    """
    children: list[Child] = []
    try:
        setup = startAll(profile, children)
        status, body = getOnce(setup.proxyPort)
        if (status, envOf(body)) != (200, "green"):
            raise BenchError(f"GREEN should be live: {status} {body[:100]!r}")
        since = len(setup.proxy.lines)
        time.sleep(rng.uniform(0, profile.interval))
        began = time.monotonic()
        if fault == "500":
            setMode(setup.greenPort, "fail500")
        elif fault == "hang":
            setMode(setup.greenPort, "hang")
        else:
            setup.green.kill()
        switched, _ = setup.proxy.waitForLine(
            r"switched live environment green -> blue",
            since,
            timeout=profile.bound + 10,
        )
        status, body = getOnce(setup.proxyPort)
        if (status, envOf(body)) != (200, "blue"):
            raise BenchError(f"BLUE should be live: {status} {body[:100]!r}")
        return switched - began
    finally:
        stopAll(children)


# ---------------------------------------------------------------------------
# Crash under load


@dataclass
class Outcome:
    """
    One request of the load.

    @ivar started: Monotonic time it was sent.
    @ivar ended: When it was answered or failed.
    @ivar status: The status, if an answer came.
    @ivar env: The environment a C{200} came from.
    @ivar error: The client-side error, if any.
    @ivar namesGreen: The (error) body names GREEN.
    """

    started: float
    ended: float
    status: int | None
    env: str | None
    error: str | None = None
    namesGreen: bool = False

    @property
    def ok(self) -> bool:
        """
        A C{200} from an app.
        """
        return self.status == 200 and self.env in ("green", "blue")


def client(
    port: int, method: str, number: int, stop: threading.Event, out: list[Outcome]
) -> None:
    """
    One client: keep-alive requests, one after another, until C{stop}.
    """
    conn: http.client.HTTPConnection | None = None
    count = 0
    while not stop.is_set():
        count += 1
        body = f"client {number} request {count}".encode() if method == "POST" else None
        if conn is None:
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
        started = time.monotonic()
        try:
            headers = {"Content-Type": "text/plain"} if body is not None else {}
            conn.request(method, "/", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as e:
            out.append(
                Outcome(
                    started, time.monotonic(), None, None, f"{type(e).__name__}: {e}"
                )
            )
            conn.close()
            conn = None
            continue
        env = envOf(data)
        out.append(
            Outcome(
                started,
                time.monotonic(),
                response.status,
                env,
                namesGreen=b"green" in data,
            )
        )
        if response.will_close:
            conn.close()
            conn = None
    if conn is not None:
        conn.close()


@dataclass
class LoadResult:
    """
    What a crash under load did to clients.

    @ivar method: C{GET} or C{POST}.
    @ivar requests: Requests completed (answered or failed).
    @ivar rps: Requests per second.
    @ivar failed: Requests that did not get a C{200} from an app.
    @ivar failures: Failures by kind (C{"502 (names green)"}, client errors).
    @ivar firstBlue: Seconds from the kill to the first answer from BLUE.
    @ivar switchLogged: Seconds from the kill to the switch log line.
    @ivar failedStartedAfterKill: Failed requests sent after the kill.
    """

    method: str
    requests: int
    rps: float
    failed: int
    failures: dict[str, int] = field(default_factory=dict)
    firstBlue: float | None = None
    switchLogged: float | None = None
    failedStartedAfterKill: int = 0


def crashUnderLoad(
    profile: Profile, method: str, args: argparse.Namespace
) -> LoadResult:
    """
    Kill GREEN while C{args.clients} clients send requests.
    """
    children: list[Child] = []
    try:
        setup = startAll(profile, children)
        since = len(setup.proxy.lines)
        stop = threading.Event()
        outcomes: list[Outcome] = []
        threads = [
            threading.Thread(
                target=client,
                args=(setup.proxyPort, method, n, stop, outcomes),
                daemon=True,
            )
            for n in range(args.clients)
        ]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(args.kill_after)
        killed = time.monotonic()
        setup.green.process.kill()
        time.sleep(max(0.0, args.duration - args.kill_after))
        stop.set()
        for thread in threads:
            thread.join(30)
        elapsed = time.monotonic() - began
        try:
            switched, _ = setup.proxy.waitForLine(
                r"switched live environment green -> blue", since, timeout=1
            )
        except BenchError:
            switchLogged = None
        else:
            switchLogged = switched - killed
        failed = [o for o in outcomes if not o.ok]
        kinds: Counter[str] = Counter()
        for o in failed:
            if o.error is not None:
                kinds[o.error] += 1
            else:
                kinds[f"{o.status}" + (" naming green" if o.namesGreen else "")] += 1
        blue = [o.ended for o in outcomes if o.env == "blue"]
        return LoadResult(
            method=method,
            requests=len(outcomes),
            rps=len(outcomes) / elapsed,
            failed=len(failed),
            failures=dict(kinds),
            firstBlue=min(blue) - killed if blue else None,
            switchLogged=switchLogged,
            failedStartedAfterKill=sum(1 for o in failed if o.started > killed),
        )
    finally:
        stopAll(children)


# ---------------------------------------------------------------------------
# Report


@dataclass
class RouteResult:
    """
    One one-route fault run.

    @ivar target: C{green} (only GREEN drops the path) or C{all}.
    @ivar answers: How many requests got each answer, by method, e.g.
        C{{"GET": {"200 blue": 50}}}.
    @ivar switches: Switches the proxy logged during the run.
    """

    target: str
    answers: dict[str, dict[str, int]]
    switches: int


def requestOnce(port: int, method: str, path: str) -> str:
    """
    One request on a new connection.

    @return: What it got: C{"200 blue"}, C{"502"}, or the client error.
    """
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        body = b"vote" if method == "POST" else None
        conn.request(method, path, body=body)
        response = conn.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__
    finally:
        conn.close()
    env = envOf(data) if response.status == 200 else None
    return f"{response.status} {env}" if env else str(response.status)


def routeFault(profile: Profile, target: str, hits: int) -> RouteResult:
    """
    Hit a path that GREEN (or both apps) hang up on, with GREEN healthy.

    @return: What the clients got and how many switches were logged.
    @raise BenchError: If something did not start.
    """
    children: list[Child] = []
    try:
        setup = startAll(profile, children)
        since = len(setup.proxy.lines)
        answers: dict[str, dict[str, int]] = {}
        for method in ("GET", "POST"):
            counts = Counter(
                requestOnce(setup.proxyPort, method, f"/_drop/{target}")
                for _ in range(hits)
            )
            answers[method] = dict(counts)
        # Give the checks that the failures started time to conclude.
        time.sleep(2 * profile.interval)
        switches = sum(
            1
            for _, text in setup.proxy.lines[since:]
            if "switched live environment" in text
        )
        return RouteResult(target, answers, switches)
    finally:
        stopAll(children)


@dataclass
class ProfileResult:
    """
    Everything measured with one profile.
    """

    profile: str
    settings: str
    bound: float
    detection: dict[str, list[float]] = field(default_factory=dict)
    load: list[LoadResult] = field(default_factory=list)
    routes: list[RouteResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def seconds(values: Sequence[float]) -> str:
    """
    @return: C{"min / median / max"} of C{values}, in seconds.
    """
    if not values:
        return "-"
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def detectionRows(results: list[ProfileResult]) -> list[list[str]]:
    """
    @return: One row per profile and fault.
    """
    rows = []
    for result in results:
        for fault in FAULTS:
            values = result.detection.get(fault, [])
            rows.append(
                [
                    result.profile,
                    FAULT_LABELS[fault],
                    str(len(values)),
                    seconds(values),
                    f"{result.bound:g}",
                ]
            )
    return rows


def loadRows(results: list[ProfileResult], clients: int) -> list[list[str]]:
    """
    @return: One row per profile and method.
    """
    rows = []
    for result in results:
        for load in result.load:
            kinds = ", ".join(f"{n} x {kind}" for kind, n in load.failures.items())
            rows.append(
                [
                    result.profile,
                    f"{clients} {load.method} clients",
                    f"{load.requests}",
                    f"{load.rps:,.0f}",
                    f"{load.failed}" + (f" ({kinds})" if kinds else ""),
                    f"{load.failedStartedAfterKill}",
                    "-" if load.firstBlue is None else f"{load.firstBlue * 1000:.0f}",
                ]
            )
    return rows


def routeRows(results: list[ProfileResult], hits: int) -> list[list[str]]:
    """
    @return: One row per profile and one-route fault.
    """
    rows = []
    for result in results:
        for route in result.routes:
            rows.append(
                [
                    result.profile,
                    "GREEN only" if route.target == "green" else "both",
                    *(
                        ", ".join(
                            f"{n} x {answer}"
                            for answer, n in sorted(route.answers[method].items())
                        )
                        for method in ("GET", "POST")
                    ),
                    str(route.switches),
                ]
            )
    return rows


ROUTE_HEADERS = [
    "profile",
    "drops the path",
    "GETs got",
    "POSTs got",
    "switches",
]


DETECTION_HEADERS = [
    "profile",
    "fault",
    "runs",
    "failover s (min / median / max)",
    "bound s",
]


def loadHeaders() -> list[str]:
    """
    @return: The crash-under-load table's column titles.
    """
    return [
        "profile",
        "load",
        "requests",
        "req/s",
        "failed",
        "failed, sent after kill",
        "first BLUE answer, ms after kill",
    ]


def report(
    results: list[ProfileResult], facts: dict[str, object], args: argparse.Namespace
) -> str:
    """
    The results as text, then as rST.
    """
    out = [
        "",
        f"bluegreen failover: {args.repeat} runs per fault, crash under load "
        f"{args.duration:g} s with the kill after {args.kill_after:g} s",
        f"machine: nproc={facts['nproc']}, {facts['cpu']}, Python "
        f"{facts['python']}, Twisted {facts['twisted']}",
        f"command: {facts['command']}",
        "",
        "Profiles:",
        *(f"  {r.profile}: {r.settings}" for r in results),
        "",
        "Failover time: fault -> 'switched live environment' in the proxy's log",
        *textTable(DETECTION_HEADERS, detectionRows(results), range(2, 5)),
        "",
        "SIGKILL of GREEN under load",
        *textTable(loadHeaders(), loadRows(results, args.clients), range(2, 7)),
        "",
        f"One route dropped, {args.hits} GETs and {args.hits} POSTs, GREEN healthy",
        *textTable(ROUTE_HEADERS, routeRows(results, args.hits), range(4, 5)),
    ]
    problems = [f"{r.profile}: {e}" for r in results for e in r.errors]
    if problems:
        out += ["", "Problems:"]
        for problem in problems:
            first, *rest = problem.splitlines()
            out += [f"  ! {first}", *(f"    {line}" for line in rest)]
    out += ["", "rST for README.rst:", "", *rstSection(results, facts, args)]
    return "\n".join(out)


def rstSection(
    results: list[ProfileResult], facts: dict[str, object], args: argparse.Namespace
) -> list[str]:
    """
    The results as rST, ready to paste into README.rst.
    """
    profiles = "; ".join(f"``{r.profile}``: {r.settings}" for r in results)
    return [
        f"Measured on {facts['nproc']} CPUs ({facts['cpu']}), Python "
        f"{facts['python']}, Twisted {facts['twisted']}: ``{facts['command']}``. "
        f"Profiles: {profiles}.  Failover time is from the fault to the "
        "switch in the proxy's log, with no client traffic, over "
        f"{args.repeat} runs each starting at a random point of the check "
        "cycle; the bound is the issue's interval x fall + timeout + 1 s.",
        "",
        *rstTable(
            ["Profile", "Fault", "Runs", "Failover s (min / median / max)", "Bound s"],
            detectionRows(results),
        ),
        "",
        f"GREEN killed with SIGKILL {args.kill_after:g} s into {args.duration:g} s "
        f"of load from {args.clients} keep-alive clients (``--retry connect``):",
        "",
        *rstTable(
            [
                "Profile",
                "Load",
                "Requests",
                "req/s",
                "Failed",
                "Failed, sent after the kill",
                "First BLUE answer (ms after kill)",
            ],
            loadRows(results, args.clients),
        ),
        "",
        f"One route that hangs up, hit with {args.hits} ``GET`` and "
        f"{args.hits} ``POST`` requests (each on a new connection) while "
        "GREEN is live and its health path answers:",
        "",
        *rstTable(
            ["Profile", "Drops the path", "GETs got", "POSTs got", "Switches"],
            routeRows(results, args.hits),
        ),
    ]


# ---------------------------------------------------------------------------
# Main


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    """
    @param argv: The arguments, or L{None} for C{sys.argv}.
    @return: The parsed arguments.
    """
    parser = argparse.ArgumentParser(
        description="Measure bluegreen's failover time and the requests lost "
        "when GREEN crashes under load."
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        metavar="N",
        help="runs per fault and profile (default: 5)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="length of each crash-under-load run (default: 10)",
    )
    parser.add_argument(
        "--kill-after",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="when GREEN is killed in a crash-under-load run (default: 3)",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=20,
        metavar="N",
        help="concurrent clients of the crash-under-load runs (default: 20)",
    )
    parser.add_argument(
        "--hits",
        type=int,
        default=50,
        metavar="N",
        help="requests per method of the one-route fault runs (default: 50)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=tuple(PROFILES),
        metavar="PROFILE",
        help="measure only these profiles: default, fast",
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the random waits (default: 1)"
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write all numbers to FILE"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.clients < 1 or args.hits < 1:
        parser.error("--repeat, --clients and --hits must be at least 1")
    if not 0 < args.kill_after < args.duration:
        parser.error("--kill-after must be between 0 and --duration")
    return args


def runFacts() -> dict[str, object]:
    """
    @return: The machine and command line, for the report.
    """
    import twisted

    return {
        "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
        "nproc": nproc(),
        "cpu": cpuModel(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
    }


def measureProfile(
    profile: Profile, args: argparse.Namespace, rng: random.Random
) -> ProfileResult:
    """
    Every measurement with one profile.
    """
    result = ProfileResult(profile.name, profile.describe(), profile.bound)
    for fault in FAULTS:
        values = result.detection.setdefault(fault, [])
        for run in range(args.repeat):
            try:
                value = detect(profile, fault, rng)
            except BenchError as e:
                result.errors.append(f"{fault} run {run + 1}: {e}")
                progress(f"[{profile.name}] {fault} run {run + 1}: failed")
                continue
            values.append(value)
            progress(f"[{profile.name}] {fault} run {run + 1}: {value:.3f} s")
    for method in ("GET", "POST"):
        progress(
            f"[{profile.name}] crash under load, {args.clients} {method} clients, "
            f"{args.duration:g} s"
        )
        try:
            load = crashUnderLoad(profile, method, args)
        except BenchError as e:
            result.errors.append(f"crash under {method} load: {e}")
            continue
        result.load.append(load)
        progress(
            f"[{profile.name}] {load.requests} requests, {load.failed} failed "
            f"{load.failures or ''}"
        )
    for target in ("green", "all"):
        progress(f"[{profile.name}] one route dropped by {target}")
        try:
            route = routeFault(profile, target, args.hits)
        except BenchError as e:
            result.errors.append(f"one route dropped by {target}: {e}")
            continue
        result.routes.append(route)
        progress(f"[{profile.name}] {route.answers}, {route.switches} switches")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run every measurement and print the report.

    @return: The exit status.
    """
    args = parseArgs(argv)
    exitOnSignals()
    facts = runFacts()
    rng = random.Random(args.seed)
    names = [p for p in PROFILES if args.only is None or p in args.only]
    results = [measureProfile(PROFILES[name], args, rng) for name in names]
    print(report(results, facts, args))
    if args.json is not None:
        document = {**facts, "profiles": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        progress(f"wrote {args.json}")
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    runScript(main, "child")
