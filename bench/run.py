#!/usr/bin/env python
"""
Benchmark bluegreen against its yardsticks, in one run.

Usage::

    .venv/bin/python bench/run.py [--duration 10] [--connections 20]
        [--wrk PATH | --no-wrk] [--only NAME ...] [--json FILE]

It starts, each as its own child process on a free 127.0.0.1 port:

 - C{backend}: the fast backend (C{bench/backend.py}), hit directly: the latency
   baseline, and the backend of both proxies;
 - C{hello}: a Twisted Web hello world (C{bench/hello.py});
 - C{stock}: Twisted's own C{ReverseProxyResource} in front of the backend
   (C{bench/stockproxy.py});
 - C{bluegreen}: C{twistd -n bluegreen} with GREEN and BLUE both set to the
   backend and no access log;
 - C{bluegreen+log}: the same, writing its access log to a temporary file.
 - C{bluegreen+twistdlog}: the default, the access log in twistd's own log
   (which goes to a file in the temporary directory).
 - C{bluegreen+nobuffer}: C{bluegreen} with C{--request-buffering off
   --response-buffering off}, to show what buffering (on by default) costs;
 - C{bluegreen+post}, C{bluegreen+nobuffer+post}: the same two loaded with
   keep-alive C{POST /} of 4 KiB bodies (C{bench/post.lua}; C{wrk} only), so
   request buffering is at work.

Each target is loaded the same way: keep-alive C{GET /} on C{--connections}
connections for throughput, then on 1 connection for latency, each measured
run preceded by a short warm-up.  The load comes from C{wrk -t1} when it is
installed, else from C{bench/_load.py}, a small Twisted load generator.  It then
prints requests/s, p50 and p99 latency and errors per target, the ratios
against the goals, and the same results as an rST table for README.rst.

Every child is stopped (SIGTERM, then SIGKILL) when the run ends, fails or is
interrupted.  The exit status is 1 if a target failed to start or exit cleanly,
or any measured run had errors, else 0 (whether the goals are met or not).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
HOST = "127.0.0.1"

TARGETS = (
    "backend",
    "hello",
    "stock",
    "bluegreen",
    "bluegreen+log",
    "bluegreen+twistdlog",
    "bluegreen+nobuffer",
    "bluegreen+post",
    "bluegreen+nobuffer+post",
)
LABELS = {
    "backend": "fast backend, direct",
    "hello": "Twisted Web hello world",
    "stock": "stock ReverseProxyResource",
    "bluegreen": "bluegreen",
    "bluegreen+log": "bluegreen, access log on",
    "bluegreen+twistdlog": "bluegreen, access log in twistd's log (the default)",
    "bluegreen+nobuffer": "bluegreen, request and response buffering off",
    "bluegreen+post": "bluegreen, POST 4 KiB bodies",
    "bluegreen+nobuffer+post": "bluegreen, POST 4 KiB bodies, buffering off",
}

WARMUP_SECONDS = 1
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
TAIL_LINES = 15

GOAL_STOCK_RATIO = 2.5
GOAL_HELLO_RATIO = 0.5
GOAL_ADDED_P50_MS = 0.4
#: Buffering (on by default) may cost at most 5 % of throughput.
GOAL_BUFFERING_RATIO = 0.95


class StartError(Exception):
    """
    A server did not start, or did not answer C{GET /} with a 2xx in time.
    """


class LoadError(Exception):
    """
    The load generator failed or its output could not be parsed.
    """


@dataclass
class Measurement:
    """
    The result of one measured run against one target.

    @ivar connections: how many concurrent keep-alive connections were used.
    @ivar rps: completed requests per second.
    @ivar p50_ms: median latency, in milliseconds.
    @ivar p99_ms: 99th percentile latency, in milliseconds.
    @ivar requests: completed requests.
    @ivar errors: socket errors plus non-2xx/3xx responses.
    @ivar error_detail: what the errors were, as reported by the load tool.
    """

    connections: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    errors: int
    error_detail: str = ""


@dataclass
class TargetResult:
    """
    Everything measured for one target.

    @ivar name: the target's name, one of L{TARGETS}.
    @ivar error: why the target could not be measured, if it could not.
    @ivar throughput: the run with many connections.
    @ivar latency: the run with one connection.
    @ivar extra: other facts worth keeping (such as access log lines).
    """

    name: str
    error: str | None = None
    throughput: Measurement | None = None
    latency: Measurement | None = None
    extra: dict[str, object] = field(default_factory=dict)


@dataclass
class Goal:
    """
    One of the issue's performance goals, and how the run did against it.

    @ivar name: what is compared.
    @ivar value: the measured value, or L{None} if it could not be computed.
    @ivar op: C{">="} or C{"<="}.
    @ivar goal: the bound.
    @ivar unit: C{"x"} or C{"ms"}.
    @ivar passed: whether the value meets the goal (never with errors).
    @ivar note: why the goal could not be judged, or "run had errors".
    """

    name: str
    value: float | None
    op: str
    goal: float
    unit: str
    passed: bool
    note: str = ""


@dataclass
class Child:
    """
    A server started for the benchmark.

    @ivar name: the target it serves.
    @ivar process: the child process.
    @ivar log: the file receiving its standard output and error.
    @ivar logPath: that file's path.
    """

    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    logPath: Path


# ---------------------------------------------------------------------------
# Processes


def freePort() -> int:
    """
    Pick a free TCP port on 127.0.0.1 (bind port 0, then close).

    @return: the port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def twistdPath() -> str:
    """
    @return: the C{twistd} script of the running Python environment.
    """
    candidate = Path(sys.executable).parent / "twistd"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("twistd")
    if found is None:
        raise StartError("twistd not found next to the Python or on PATH")
    return found


def serverCommand(name: str, port: int, backendPort: int, workdir: Path) -> list[str]:
    """
    Build the command line that starts a target's server.

    @param name: the target, one of L{TARGETS} but C{backend}.
    @param port: the port the server must listen on.
    @param backendPort: the fast backend's port.
    @param workdir: a temporary directory for files the server writes.
    @return: the command line.
    """
    python = sys.executable
    if name == "hello":
        return [python, str(BENCH / "hello.py"), str(port)]
    if name == "stock":
        return [python, str(BENCH / "stockproxy.py"), str(port), str(backendPort)]
    backendURL = f"http://{HOST}:{backendPort}"
    accessLog = {
        "bluegreen+log": str(workdir / "access.log"),
        "bluegreen+twistdlog": "-",
    }.get(name, "none")
    return [
        twistdPath(),
        "-n",
        "--pidfile=",
        "bluegreen",
        "--port",
        f"tcp:{port}:interface={HOST}",
        "--green",
        backendURL,
        "--blue",
        # GREEN and BLUE must be distinct origins: the same backend by name.
        f"http://localhost:{backendPort}",
        "--access-log",
        accessLog,
        "--admin",
        "none",
        *(
            ["--request-buffering", "off", "--response-buffering", "off"]
            if "+nobuffer" in name
            else ["--temp-dir", str(workdir / "buffers")]
        ),
    ]


def startChild(name: str, command: list[str], workdir: Path) -> Child:
    """
    Start a server, its output going to a log file in C{workdir}.

    @param name: the target it serves.
    @param command: its command line.
    @param workdir: where to put its log.
    @return: the started child.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    logPath = workdir / f"{name}.out"
    log = logPath.open("wb")
    try:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    except BaseException:
        log.close()
        raise
    return Child(name, process, log, logPath)


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """
    @param path: a log file.
    @param lines: how many lines to keep.
    @return: the last C{lines} lines of the file, or a placeholder.
    """
    try:
        text = path.read_text(errors="replace").rstrip()
    except OSError:
        text = ""
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def probe(port: int) -> int:
    """
    Send one C{GET /} over a fresh connection.

    @param port: the port to probe on 127.0.0.1.
    @return: the response's status code.
    @raise OSError: if the connection fails or the answer is not HTTP.
    """
    request = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((HOST, port), timeout=2) as s:
        s.sendall(request.encode("ascii"))
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    if match is None:
        raise OSError(f"not an HTTP response: {data[:60]!r}")
    return int(match.group(1))


def waitReady(child: Child, port: int, timeout: float = START_TIMEOUT) -> None:
    """
    Wait until a server answers C{GET /} with a 2xx status.

    @param child: the server.
    @param port: its port.
    @param timeout: how long to wait, in seconds.
    @raise StartError: if it exits or is not ready in time; the message ends
        with the tail of its output.
    """
    deadline = time.monotonic() + timeout
    last = "no connection yet"
    while True:
        status = child.process.poll()
        if status is not None:
            raise StartError(f"exited with status {status}:\n{tail(child.logPath)}")
        try:
            code = probe(port)
        except OSError as e:
            last = str(e) or e.__class__.__name__
        else:
            if 200 <= code < 300:
                return
            last = f"GET / answered {code}"
        if time.monotonic() > deadline:
            raise StartError(
                f"not ready after {timeout:.0f} s ({last}):\n{tail(child.logPath)}"
            )
        time.sleep(0.1)


def stopProcess(process: subprocess.Popen[Any]) -> None:
    """
    Stop a child process: SIGTERM, then SIGKILL if it lingers past
    L{STOP_TIMEOUT}.

    @param process: the child (maybe already gone).
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stopChild(child: Child) -> None:
    """
    Stop a server: SIGTERM, then SIGKILL if it lingers.

    @param child: the server.
    """
    try:
        stopProcess(child.process)
    finally:
        child.log.close()


# ---------------------------------------------------------------------------
# Load

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def wrkMilliseconds(text: str) -> float:
    """
    Convert one of wrk's durations (C{"245.00us"}, C{"3.68ms"}, C{"1.02s"})
    to milliseconds.

    @param text: the duration as wrk prints it.
    @return: the duration in milliseconds.
    @raise LoadError: if the unit is unknown.
    """
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise LoadError(f"cannot parse wrk duration {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parseWrk(output: str, connections: int) -> Measurement:
    """
    Parse the report of C{wrk --latency}.

    @param output: wrk's standard output.
    @param connections: the connection count of the run.
    @return: the measurement.
    @raise LoadError: if the report lacks the request rate.
    """
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if rate is None:
        raise LoadError(f"no Requests/sec in wrk output:\n{output.strip()}")

    def percentile(label: str) -> float | None:
        found = re.search(rf"^\s+{label}%\s+(\S+)\s*$", output, re.M)
        return wrkMilliseconds(found.group(1)) if found else None

    count = re.search(r"^\s*(\d+) requests in", output, re.M)
    errors = 0
    details = []
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sockets is not None:
        errors += sum(int(n) for n in sockets.groups())
        details.append(sockets.group(0))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx is not None:
        errors += int(non2xx.group(1))
        details.append(non2xx.group(0))
    return Measurement(
        connections=connections,
        rps=float(rate.group(1)),
        p50_ms=percentile("50"),
        p99_ms=percentile("99"),
        requests=int(count.group(1)) if count else 0,
        errors=errors,
        error_detail="; ".join(details),
    )


def loadCommand(
    wrk: str | None, port: int, connections: int, seconds: int, post: bool = False
) -> list[str]:
    """
    Build the load generator's command line.

    @param wrk: the C{wrk} executable, or L{None} for C{bench/_load.py}.
    @param port: the target's port.
    @param connections: concurrent keep-alive connections.
    @param seconds: how long to load.
    @param post: send C{POST} requests with bodies (C{bench/post.lua}).
    @return: the command line.
    @raise LoadError: for C{post} without C{wrk}.
    """
    if wrk is not None:
        return [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            *(["-s", str(BENCH / "post.lua")] if post else []),
            f"http://{HOST}:{port}/",
        ]
    if post:
        raise LoadError("POST bodies need wrk")
    return [
        sys.executable,
        str(BENCH / "_load.py"),
        HOST,
        str(port),
        str(connections),
        str(seconds),
    ]


def runLoad(
    wrk: str | None, port: int, connections: int, seconds: int, post: bool = False
) -> Measurement:
    """
    Load a target once and measure it.

    @param wrk: the C{wrk} executable, or L{None} for C{bench/_load.py}.
    @param port: the target's port.
    @param connections: concurrent keep-alive connections.
    @param seconds: how long to load.
    @param post: send C{POST} requests with bodies.
    @return: the measurement.
    @raise LoadError: if the load generator fails.
    """
    command = loadCommand(wrk, port, connections, seconds, post)
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise LoadError(f"{shlex.join(command)} did not finish in time") from e
    if done.returncode != 0:
        raise LoadError(
            f"{shlex.join(command)} exited with status {done.returncode}:\n"
            f"{(done.stderr or done.stdout).strip()}"
        )
    if wrk is not None:
        return parseWrk(done.stdout, connections)
    try:
        summary = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise LoadError(f"bad output from bench/_load.py: {done.stdout!r}") from e
    return Measurement(
        connections=connections,
        rps=summary["rps"],
        p50_ms=summary["p50_ms"],
        p99_ms=summary["p99_ms"],
        requests=summary["requests"],
        errors=summary["errors"],
        error_detail=summary["error_detail"],
    )


def measure(
    wrk: str | None, port: int, connections: int, seconds: int, post: bool = False
) -> Measurement:
    """
    Warm a target up, then measure it.

    @param wrk: the C{wrk} executable, or L{None} for C{bench/_load.py}.
    @param port: the target's port.
    @param connections: concurrent keep-alive connections.
    @param seconds: how long the measured run lasts.
    @param post: send C{POST} requests with bodies.
    @return: the measurement of the measured run.
    """
    runLoad(wrk, port, connections, WARMUP_SECONDS, post)
    return runLoad(wrk, port, connections, seconds, post)


# ---------------------------------------------------------------------------
# Report


def ratioGoal(
    name: str, top: TargetResult | None, bottom: TargetResult | None, goal: float
) -> Goal:
    """
    Judge a throughput ratio goal (C{top / bottom >= goal}).

    @param name: what is compared.
    @param top: the numerator's target.
    @param bottom: the denominator's target.
    @param goal: the smallest acceptable ratio.
    @return: the judged goal.
    """
    runs = [r.throughput if r else None for r in (top, bottom)]
    if runs[0] is None or runs[1] is None or not runs[1].rps:
        return Goal(name, None, ">=", goal, "x", False, "not measured")
    value = runs[0].rps / runs[1].rps
    return judge(Goal(name, value, ">=", goal, "x", value >= goal), runs)


def latencyGoal(
    name: str, proxy: TargetResult | None, direct: TargetResult | None, goal: float
) -> Goal:
    """
    Judge the added latency goal (C{proxy p50 - direct p50 <= goal}).

    @param name: what is compared.
    @param proxy: the proxy's target.
    @param direct: the backend's target.
    @param goal: the largest acceptable added latency, in milliseconds.
    @return: the judged goal.
    """
    runs = [r.latency if r else None for r in (proxy, direct)]
    if (
        runs[0] is None
        or runs[1] is None
        or runs[0].p50_ms is None
        or runs[1].p50_ms is None
    ):
        return Goal(name, None, "<=", goal, "ms", False, "not measured")
    value = runs[0].p50_ms - runs[1].p50_ms
    return judge(Goal(name, value, "<=", goal, "ms", value <= goal), runs)


def judge(goal: Goal, runs: Sequence[Measurement | None]) -> Goal:
    """
    Refuse to pass a goal measured by runs that had errors.

    @param goal: the goal as judged from the numbers alone.
    @param runs: the runs it was computed from.
    @return: C{goal}, failed if any run had errors.
    """
    if any(run is not None and run.errors for run in runs):
        goal.passed = False
        goal.note = "run had errors"
    return goal


def goals(results: dict[str, TargetResult], connections: int) -> list[Goal]:
    """
    Judge the issue's goals.

    @param results: the results by target name.
    @param connections: the connection count of the throughput runs.
    @return: the judged goals.
    """
    get = results.get
    return [
        ratioGoal(
            f"bluegreen / stock throughput (c={connections})",
            get("bluegreen"),
            get("stock"),
            GOAL_STOCK_RATIO,
        ),
        ratioGoal(
            f"bluegreen / hello throughput (c={connections})",
            get("bluegreen"),
            get("hello"),
            GOAL_HELLO_RATIO,
        ),
        latencyGoal(
            "added p50 latency (c=1): bluegreen - backend",
            get("bluegreen"),
            get("backend"),
            GOAL_ADDED_P50_MS,
        ),
        ratioGoal(
            f"buffering on / off throughput, GET (c={connections})",
            get("bluegreen"),
            get("bluegreen+nobuffer"),
            GOAL_BUFFERING_RATIO,
        ),
        ratioGoal(
            f"buffering on / off throughput, POST 4 KiB (c={connections})",
            get("bluegreen+post"),
            get("bluegreen+nobuffer+post"),
            GOAL_BUFFERING_RATIO,
        ),
    ]


def formatMs(value: float | None) -> str:
    """
    @param value: milliseconds, or L{None}.
    @return: C{value} with 3 decimals, or C{"-"}.
    """
    return "-" if value is None else f"{value:.3f}"


def measurementCells(run: Measurement | None) -> list[str]:
    """
    @param run: a measurement, or L{None}.
    @return: its req/s, p50, p99 and errors cells.
    """
    if run is None:
        return ["-", "-", "-", "-"]
    errors = f"{run.errors} !" if run.errors else "0"
    return [f"{run.rps:,.0f}", formatMs(run.p50_ms), formatMs(run.p99_ms), errors]


def textTable(
    headers: list[str], rows: list[list[str]], numeric: range | None = None
) -> list[str]:
    """
    Lay out a plain text table.

    @param headers: the column titles.
    @param rows: the cells.
    @param numeric: the indexes of the right-aligned columns (default: all
        but the first).
    @return: the table's lines.
    """
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    right = range(1, len(headers)) if numeric is None else numeric

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def rstTable(headers: list[str], rows: list[list[str]]) -> list[str]:
    """
    Lay out an rST simple table.

    @param headers: the column titles.
    @param rows: the cells.
    @return: the table's lines.
    """
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    border = "  ".join("=" * w for w in widths)

    def line(cells: list[str]) -> str:
        padded = (c.ljust(w) for c, w in zip(cells, widths, strict=True))
        return "  ".join(padded).rstrip()

    return [border, line(headers), border, *(line(r) for r in rows), border]


def goalCells(goal: Goal) -> list[str]:
    """
    @param goal: a judged goal.
    @return: its measured value, bound and verdict cells.
    """
    if goal.value is None:
        value = "-"
    elif goal.unit == "x":
        value = f"{goal.value:.2f} x"
    else:
        value = f"{goal.value:.3f} ms"
    verdict = "PASS" if goal.passed else "FAIL"
    if goal.note:
        verdict += f" ({goal.note})"
    return [value, f"{goal.op} {goal.goal:g} {goal.unit}", verdict]


def report(
    results: list[TargetResult],
    judged: list[Goal],
    facts: dict[str, object],
    connections: int,
) -> str:
    """
    Format the results for the terminal, followed by an rST block.

    @param results: the results, in run order.
    @param judged: the judged goals.
    @param facts: the run's settings and machine (see L{runFacts}).
    @param connections: the connection count of the throughput runs.
    @return: the report.
    """
    out = [
        "",
        f"bluegreen benchmark: {facts['tool']}, {facts['duration']} s per run "
        f"after a {WARMUP_SECONDS} s warm-up, keep-alive GET /",
        f"machine: nproc={facts['nproc']}, {facts['cpu']}, "
        f"Python {facts['python']}, Twisted {facts['twisted']}",
        f"command: {facts['command']}",
    ]
    headers = ["target", "req/s", "p50 ms", "p99 ms", "errors"]
    for title, pick in (
        (f"Throughput: {connections} connections", "throughput"),
        ("Latency: 1 connection", "latency"),
    ):
        rows = []
        for result in results:
            run = getattr(result, pick)
            if result.error is not None and run is None:
                rows.append([result.name, "-", "-", "-", "failed"])
            else:
                rows.append([result.name, *measurementCells(run)])
        out += ["", title, *textTable(headers, rows)]

    problems = []
    for result in results:
        if result.error is not None:
            problems.append(f"{result.name} {result.error}")
        if "exit_status" in result.extra:
            problems.append(
                f"{result.name} exited with status {result.extra['exit_status']} "
                f"instead of stopping cleanly:\n{result.extra['output_tail']}"
            )
        for run in (result.throughput, result.latency):
            if run is not None and run.errors:
                problems.append(
                    f"{result.name} c={run.connections}: {run.errors} errors "
                    f"({run.error_detail})"
                )
    if problems:
        out += ["", "Problems:"]
        for problem in problems:
            first, *rest = problem.splitlines()
            out += [f"  ! {first}", *(f"    {line}" for line in rest)]

    goalRows = [[goal.name, *goalCells(goal)] for goal in judged]
    out += [
        "",
        "Goals",
        *textTable(["comparison", "measured", "goal", "result"], goalRows, range(1, 2)),
        "",
        "rST for README.rst:",
        "",
        *rstSection(results, judged, facts, connections),
    ]
    return "\n".join(out)


def rstSection(
    results: list[TargetResult],
    judged: list[Goal],
    facts: dict[str, object],
    connections: int,
) -> list[str]:
    """
    Format the results as rST, ready to paste into README.rst.

    @param results: the results, in run order.
    @param judged: the judged goals.
    @param facts: the run's settings and machine (see L{runFacts}).
    @param connections: the connection count of the throughput runs.
    @return: the rST lines.
    """
    c = connections
    headers = [
        "Target",
        f"req/s (c={c})",
        f"p50 ms (c={c})",
        f"p99 ms (c={c})",
        "req/s (c=1)",
        "p50 ms (c=1)",
        "p99 ms (c=1)",
    ]
    rows = []
    for result in results:
        cells = [LABELS[result.name]]
        for run in (result.throughput, result.latency):
            if run is None:
                cells += ["n/a", "n/a", "n/a"]
            else:
                cells += [f"{run.rps:,.0f}", formatMs(run.p50_ms), formatMs(run.p99_ms)]
        rows.append(cells)
    goalRows = [[goal.name, *goalCells(goal)] for goal in judged]
    return [
        f"Measured with {facts['tool']} ({facts['duration']} s runs, keep-alive "
        f"``GET /``) on {facts['nproc']} CPUs ({facts['cpu']}), Python "
        f"{facts['python']}, Twisted {facts['twisted']}: "
        f"``{facts['command']}``.",
        "",
        *rstTable(headers, rows),
        "",
        *rstTable(["Comparison", "Measured", "Goal", "Result"], goalRows),
    ]


# ---------------------------------------------------------------------------
# Main


def cpuModel() -> str:
    """
    @return: the CPU's model name, or the machine type if unknown.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.machine() or "unknown CPU"


def nproc() -> int:
    """
    @return: how many CPUs this process may run on (as C{nproc} prints).
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def toolName(wrk: str | None) -> str:
    """
    @param wrk: the C{wrk} executable, or L{None}.
    @return: a short description of the load generator, with its version.
    """
    if wrk is None:
        return "bench/_load.py, a Twisted load generator"
    try:
        # wrk has no --version; its usage text starts with the version.
        done = subprocess.run(
            [wrk, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        match = re.search(r"wrk (\S+)", done.stdout + done.stderr)
    except OSError:
        match = None
    return f"wrk {match.group(1)} -t1" if match else "wrk -t1"


def runFacts(args: argparse.Namespace, wrk: str | None) -> dict[str, object]:
    """
    @param args: the parsed command line.
    @param wrk: the C{wrk} executable, or L{None}.
    @return: the run's settings and machine, for the report and the JSON.
    """
    import twisted

    return {
        "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
        "tool": toolName(wrk),
        "duration": args.duration,
        "warmup": WARMUP_SECONDS,
        "connections": args.connections,
        "nproc": nproc(),
        "cpu": cpuModel(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
    }


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    """
    @param argv: the command line arguments, or L{None} for C{sys.argv}.
    @return: the parsed arguments.
    """
    parser = argparse.ArgumentParser(
        description="Benchmark bluegreen against a fast backend, the stock "
        "ReverseProxyResource and a Twisted hello world.",
    )
    parser.add_argument(
        "--duration",
        type=int,
        default=10,
        metavar="SECONDS",
        help="length of each measured run (default: 10)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=20,
        metavar="N",
        help="connections for the throughput runs (default: 20)",
    )
    tool = parser.add_mutually_exclusive_group()
    tool.add_argument(
        "--wrk", metavar="PATH", help="wrk executable (default: wrk on PATH)"
    )
    tool.add_argument(
        "--no-wrk",
        action="store_true",
        help="use the Twisted load generator bench/_load.py even if wrk exists",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=TARGETS,
        metavar="NAME",
        help=f"measure only these targets, out of: {', '.join(TARGETS)}",
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write all numbers to FILE"
    )
    args = parser.parse_args(argv)
    if args.duration < 1 or args.connections < 1:
        parser.error("--duration and --connections must be at least 1")
    if args.wrk is not None and shutil.which(args.wrk) is None:
        parser.error(f"--wrk {args.wrk}: not an executable")
    return args


def progress(message: str) -> None:
    """
    Tell the user what is going on (on standard error).

    @param message: what to say.
    """
    print(message, file=sys.stderr, flush=True)


def countLines(path: Path) -> int:
    """
    @param path: a text file, maybe missing.
    @return: its number of lines (0 if missing).
    """
    try:
        with path.open("rb") as f:
            chunks = iter(lambda: f.read(1 << 20), b"")
            return sum(chunk.count(b"\n") for chunk in chunks)
    except OSError:
        return 0


def runTarget(
    name: str,
    backendPort: int,
    workdir: Path,
    wrk: str | None,
    args: argparse.Namespace,
    children: list[Child],
) -> TargetResult:
    """
    Start one target (the backend is already running), measure it and stop it.

    @param name: the target.
    @param backendPort: the fast backend's port.
    @param workdir: a temporary directory.
    @param wrk: the C{wrk} executable, or L{None} for C{bench/_load.py}.
    @param args: the parsed command line.
    @param children: the running children, to which the target is added
        while it runs.
    @return: its results.
    """
    result = TargetResult(name)
    child = None
    if name == "backend":
        port = backendPort
    else:
        port = freePort()
        progress(f"[{name}] starting on port {port}")
        try:
            command = serverCommand(name, port, backendPort, workdir)
            child = startChild(name, command, workdir)
            children.append(child)
            waitReady(child, port)
        except (StartError, OSError) as e:
            if child is not None:
                stopChild(child)
                children.remove(child)
            result.error = f"failed to start: {e}"
            progress(f"[{name}] failed to start (details at the end)")
            return result
    try:
        progress(f"[{name}] {args.connections} connections, {args.duration} s")
        post = name.endswith("+post")
        result.throughput = measure(wrk, port, args.connections, args.duration, post)
        progress(f"[{name}] 1 connection, {args.duration} s")
        result.latency = measure(wrk, port, 1, args.duration, post)
    except LoadError as e:
        result.error = f"could not be measured: {e}"
        progress(f"[{name}] {result.error}")
    finally:
        if child is not None:
            stopChild(child)
            children.remove(child)
            status = child.process.returncode
            if status not in (0, -signal.SIGTERM):
                result.extra["exit_status"] = status
                result.extra["output_tail"] = tail(child.logPath)
    if name == "bluegreen+log":
        result.extra["access_log_lines"] = countLines(workdir / "access.log")
    return result


def _terminate(signum: int, frame: FrameType | None) -> None:
    """
    Turn SIGTERM and SIGHUP into L{SystemExit}, so the children get stopped.

    @param signum: the signal received.
    @param frame: the interrupted frame.
    """
    raise SystemExit(128 + signum)


def exitOnSignals() -> None:
    """
    Make SIGTERM and SIGHUP raise L{SystemExit}, so that the C{finally}
    clauses stop the children.
    """
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)


def runScript(main: Callable[[], int], children: str) -> NoReturn:
    """
    Run a benchmark's C{main} as the script, exiting with its status (130
    on Ctrl-C, once its children are stopped).

    @param main: the benchmark.
    @param children: what it starts, for the message (e.g. C{"child"}).
    """
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        progress(f"interrupted; every {children} was stopped")
        sys.exit(130)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the benchmark and print the report.

    @param argv: the command line arguments, or L{None} for C{sys.argv}.
    @return: the exit status.
    """
    args = parseArgs(argv)
    wrk = None if args.no_wrk else (args.wrk or shutil.which("wrk"))
    if wrk is not None:
        wrk = shutil.which(wrk) or wrk
    names = [t for t in TARGETS if args.only is None or t in args.only]
    facts = runFacts(args, wrk)
    exitOnSignals()

    children: list[Child] = []
    results: list[TargetResult] = []
    with tempfile.TemporaryDirectory(prefix="bluegreen-bench-") as tmp:
        workdir = Path(tmp)
        try:
            backendPort = freePort()
            progress(f"[backend] starting on port {backendPort}")
            backend = startChild(
                "backend",
                [sys.executable, str(BENCH / "backend.py"), str(backendPort)],
                workdir,
            )
            children.append(backend)
            try:
                waitReady(backend, backendPort)
            except StartError as e:
                progress(f"backend failed to start: {e}")
                return 1
            for name in names:
                results.append(
                    runTarget(name, backendPort, workdir, wrk, args, children)
                )
        finally:
            for child in reversed(children):
                stopChild(child)

    judged = goals({r.name: r for r in results}, args.connections)
    print(report(results, judged, facts, args.connections))
    if args.json is not None:
        document = {
            **facts,
            "targets": {r.name: asdict(r) for r in results},
            "goals": [asdict(g) for g in judged],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        progress(f"wrote {args.json}")
    failed = any(
        r.error is not None
        or "exit_status" in r.extra
        or any(run is not None and run.errors for run in (r.throughput, r.latency))
        for r in results
    )
    return 1 if failed else 0


if __name__ == "__main__":
    runScript(main, "server")
