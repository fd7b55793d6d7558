#!/usr/bin/env python
"""
Hostile clients against bluegreen: does the site keep answering?

Usage::

    .venv/bin/python bench/hostile.py [--duration 30] [--connections 1000]
        [--rate 200] [--only slowloris slowbody slowread] [--json FILE]

It starts the fast backend (C{bench/backend.py}) and C{twistd -n bluegreen}
in front of it (GREEN and BLUE both that backend, as C{bench/run.py} does),
then, in one run:

 - C{baseline}: a measuring client makes normal C{GET /} requests through the
   proxy, each on a new connection (a new visitor), one started every
   C{--interval} seconds for C{--duration} seconds;
 - C{slowloris}, C{slowbody}, C{slowread}: the same measuring client while
   C{slowhttptest} attacks the proxy with C{--connections} connections for
   C{--duration} seconds in slow headers (C{-H}), slow body (C{-B}, a
   100,000-byte C{POST} sent a few bytes every 10 s) and slow read (C{-X},
   4 MiB responses read 32 bytes every 5 s through a tiny receive window)
   mode.

It prints, per phase, the measuring client's requests, failures (errors,
non-2xx answers, or no answer within C{--timeout}), p50, p95 and max latency
and the ratio of p95 to the baseline's, with slowhttptest's own count of
attack connections it held open, then the same as an rST table for
README.rst.  The goal (issue 10): p95 under 1 s and no failure in every mode.

C{slowhttptest} is the Debian package of that name: when it is missing it is
installed with apt-get if this runs as root (as C{./dev} installs its
tools), else the run stops saying how to install it.  The soft limit on open
files is raised to the hard limit first (the proxy and slowhttptest inherit
it), since 1,000 connections need more than the usual 1,024 descriptors.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from run import (
    HOST,
    Child,
    StartError,
    cpuModel,
    exitOnSignals,
    freePort,
    nproc,
    progress,
    rstTable,
    runScript,
    serverCommand,
    startChild,
    stopChild,
    stopProcess,
    tail,
    textTable,
    waitReady,
)

BENCH = Path(__file__).resolve().parent

MODES = ("slowloris", "slowbody", "slowread")
LABELS = {
    "baseline": "no attack (baseline)",
    "slowloris": "slowloris (-H)",
    "slowbody": "slow body (-B)",
    "slowread": "slow read (-X)",
}

#: Seconds for the proxy to settle between phases (attack sockets closing).
SETTLE = 3.0

GOAL_P95_MS = 1000.0

#: The most measuring GETs in flight at once (each waits at most --timeout).
MAX_IN_FLIGHT = 200


@dataclass
class Phase:
    """
    What the measuring client saw in one phase.

    @ivar name: C{baseline} or one of L{MODES}.
    @ivar latencies: milliseconds of each successful request.
    @ivar failures: requests that failed.
    @ivar failureKinds: why, counted.
    @ivar attackConnected: the most attack connections slowhttptest held
        open at once (L{None} for the baseline, or if it did not say).
    @ivar attackCommand: the slowhttptest command line.
    @ivar note: anything that went wrong with the attack tool.
    """

    name: str
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    failureKinds: dict[str, int] = field(default_factory=dict)
    attackConnected: int | None = None
    attackCommand: str = ""
    note: str = ""

    def percentile(self, fraction: float) -> float | None:
        """
        @param fraction: e.g. 0.95.
        @return: that percentile of the latencies (nearest rank), or L{None}.
        """
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        return ordered[index]


def raiseFileLimit() -> int:
    """
    Raise this process's soft limit on open files to the hard limit (the
    children inherit it).

    @return: The new soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def findSlowhttptest(given: str | None) -> str:
    """
    Find slowhttptest, installing the Debian package if it is missing and
    this runs as root.

    @param given: A path given on the command line, or L{None}.
    @return: Its path.
    @raise SystemExit: If it cannot be found or installed (with a message).
    """
    found = shutil.which(given or "slowhttptest")
    if found is not None:
        return found
    if given is None and os.geteuid() == 0 and shutil.which("apt-get"):
        progress("slowhttptest is missing: installing the Debian package")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "slowhttptest"], env=env, check=False
        )
        found = shutil.which("slowhttptest")
        if found is not None:
            return found
    raise SystemExit(
        "hostile.py: error: slowhttptest not found"
        + (f" at {given!r}" if given else "")
        + "; install it (Debian/Ubuntu: sudo apt-get install -y slowhttptest)"
        " or pass --slowhttptest PATH"
    )


def rampSeconds(args: argparse.Namespace) -> float:
    """
    @return: How long slowhttptest takes to open its connections.
    """
    return float(min(10.0, args.connections / args.rate))


def attackArguments(mode: str, args: argparse.Namespace, url: str) -> list[str]:
    """
    slowhttptest's arguments for one mode.

    @param mode: One of L{MODES}.
    @param args: The command line.
    @param url: The proxy's base URL (ending with C{/}).
    @return: The arguments (without the executable).
    """
    common = [
        "-c",
        str(args.connections),
        "-r",
        str(args.rate),
        "-l",
        # Longer than the measurement: it is stopped once that is over.
        str(int(rampSeconds(args) + args.duration + 10)),
        "-p",
        "3",
    ]
    if mode == "slowloris":
        return ["-H", *common, "-i", "10", "-x", "24", "-u", url]
    if mode == "slowbody":
        return ["-B", *common, "-i", "10", "-x", "10", "-s", "100000", "-u", url]
    # 4 MiB responses (bench/backend.py's /big), read 32 bytes every 5 s
    # through a 512-1024 byte receive window, three requests per connection.
    return [
        "-X",
        *common,
        "-w",
        "512",
        "-y",
        "1024",
        "-n",
        "5",
        "-z",
        "32",
        "-k",
        "3",
        "-u",
        url + "big",
    ]


def fetchOnce(port: int, timeout: float) -> tuple[float, str]:
    """
    One normal C{GET /} on a new connection.

    @return: Its latency in milliseconds, and why it failed (empty if not).
    """
    started = time.monotonic()
    kind = ""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        if not 200 <= response.status < 300:
            kind = f"status {response.status}"
    except TimeoutError:
        kind = "timeout"
    except (OSError, http.client.HTTPException) as e:
        kind = type(e).__name__
    finally:
        conn.close()
    return (time.monotonic() - started) * 1000, kind


def measure(port: int, seconds: float, interval: float, timeout: float) -> Phase:
    """
    Start a normal C{GET /} through the proxy, each on a new connection (a
    new visitor), every C{interval} seconds for C{seconds}, each in its own
    thread: a request that hangs does not hold back the next ones, so the
    failures are a share of the time.

    @return: What was seen (named C{"?"}; the caller names it).
    """
    phase = Phase("?")
    futures = []
    with ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT) as pool:
        start = time.monotonic()
        n = 0
        while True:
            due = start + n * interval
            now = time.monotonic()
            if due - start >= seconds:
                break
            if due > now:
                time.sleep(due - now)
            futures.append(pool.submit(fetchOnce, port, timeout))
            n += 1
        for future in futures:
            elapsed, kind = future.result()
            if kind:
                phase.failures += 1
                phase.failureKinds[kind] = phase.failureKinds.get(kind, 0) + 1
            else:
                phase.latencies.append(elapsed)
    return phase


def maxConnected(csvPath: Path) -> int | None:
    """
    @param csvPath: slowhttptest's statistics (C{-g -o}), maybe missing.
    @return: The most connections it had open at once, or L{None}.
    """
    try:
        with csvPath.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    counts = [
        int(value)
        for row in rows
        for key, value in row.items()
        if key is not None
        and key.strip().lower() == "connected"
        and value.strip().isdigit()
    ]
    return max(counts) if counts else None


def attack(
    tool: str,
    mode: str,
    args: argparse.Namespace,
    port: int,
    workdir: Path,
) -> Phase:
    """
    Run slowhttptest in C{mode} against the proxy while measuring.

    @return: The phase.
    """
    url = f"http://{HOST}:{port}/"
    command = [tool, *attackArguments(mode, args, url), "-g", "-o"]
    command.append(str(workdir / mode))
    logPath = workdir / f"{mode}.out"
    with logPath.open("wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            # Measure the attack at full strength, once every connection
            # has been opened.
            time.sleep(rampSeconds(args))
            phase = measure(port, args.duration, args.interval, args.timeout)
        finally:
            stopProcess(process)
    phase.name = mode
    phase.attackCommand = shlex.join(command)
    phase.attackConnected = maxConnected(workdir / f"{mode}.csv")
    if phase.attackConnected is None:
        phase.note = f"no statistics from slowhttptest:\n{tail(logPath)}"
    return phase


def formatMs(value: float | None) -> str:
    """
    @return: C{value} in milliseconds, or C{-}.
    """
    return "-" if value is None else f"{value:,.1f}"


def rows(phases: Sequence[Phase]) -> list[list[str]]:
    """
    The table's rows.
    """
    base = phases[0].percentile(0.95) if phases else None
    table = []
    for phase in phases:
        p95 = phase.percentile(0.95)
        ratio = "-"
        if p95 is not None and base:
            ratio = f"{p95 / base:.2f} x"
        requests = len(phase.latencies) + phase.failures
        table.append(
            [
                LABELS[phase.name],
                str(requests),
                str(phase.failures),
                formatMs(phase.percentile(0.5)),
                formatMs(p95),
                formatMs(max(phase.latencies) if phase.latencies else None),
                ratio,
                "-" if phase.attackConnected is None else str(phase.attackConnected),
                "yes"
                if phase.failures == 0 and p95 is not None and p95 < GOAL_P95_MS
                else "no",
            ]
        )
    return table


HEADERS = [
    "phase",
    "GETs",
    "failures",
    "p50 ms",
    "p95 ms",
    "max ms",
    "p95 / baseline",
    "attack conns",
    "goal met",
]


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    """
    @param argv: The arguments, or L{None} for C{sys.argv}.
    @return: The parsed command line.
    """
    parser = argparse.ArgumentParser(
        description="slowhttptest against bluegreen while normal GETs are measured"
    )
    parser.add_argument(
        "--duration", type=int, default=30, help="seconds per phase (default 30)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=1000,
        help="attack connections per mode (default 1000)",
    )
    parser.add_argument(
        "--rate",
        type=int,
        default=200,
        help="attack connections opened per second (default 200)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=0.1,
        help="seconds between the measuring client's GETs (default 0.1)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds a measuring GET may take before it counts as failed (5)",
    )
    parser.add_argument(
        "--only", nargs="+", choices=MODES, metavar="MODE", help="attack modes to run"
    )
    parser.add_argument("--slowhttptest", metavar="PATH", help="slowhttptest to use")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write JSON")
    args = parser.parse_args(argv)
    for name in ("duration", "connections", "rate"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if not (args.interval >= 0 and args.timeout > 0):
        parser.error("--interval must be >= 0 and --timeout > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the benchmark and print the report.

    @return: The exit status: 0 if every phase ran (whether the goal was met
        or not), 1 if the proxy or the backend failed.
    """
    args = parseArgs(argv)
    tool = findSlowhttptest(args.slowhttptest)
    limit = raiseFileLimit()
    modes = [m for m in MODES if args.only is None or m in args.only]
    exitOnSignals()
    phases: list[Phase] = []
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="bluegreen-hostile-") as tmp:
        workdir = Path(tmp)
        try:
            backendPort, port = freePort(), freePort()
            backend = startChild(
                "backend",
                [sys.executable, str(BENCH / "backend.py"), str(backendPort)],
                workdir,
            )
            children.append(backend)
            waitReady(backend, backendPort)
            proxy = startChild(
                "bluegreen",
                serverCommand("bluegreen", port, backendPort, workdir),
                workdir,
            )
            children.append(proxy)
            waitReady(proxy, port)
            progress(f"[baseline] {args.duration} s of GETs, no attack")
            baseline = measure(port, args.duration, args.interval, args.timeout)
            baseline.name = "baseline"
            phases.append(baseline)
            for mode in modes:
                progress(
                    f"[{mode}] slowhttptest, {args.connections} connections,"
                    f" {args.duration} s, while measuring"
                )
                phases.append(attack(tool, mode, args, port, workdir))
                time.sleep(SETTLE)
                if proxy.process.poll() is not None:
                    raise StartError(
                        f"bluegreen exited during {mode}:\n{tail(proxy.logPath)}"
                    )
        except StartError as e:
            progress(f"error: {e}")
            return 1
        finally:
            for child in reversed(children):
                stopChild(child)
    command = shlex.join(getattr(sys, "orig_argv", sys.argv))
    print()
    print(
        f"bluegreen under slowhttptest: {args.connections} connections per mode,"
        f" {args.duration} s, rate {args.rate}/s; measuring client: GET / on a new"
        f" connection every {args.interval:g} s, {args.timeout:g} s timeout"
    )
    print(
        f"machine: nproc={nproc()}, {cpuModel()}, open files limit {limit};"
        f" goal: p95 < {GOAL_P95_MS:.0f} ms and no failure"
    )
    print()
    table = rows(phases)
    print("\n".join(textTable(HEADERS, table)))
    for phase in phases:
        if phase.failureKinds:
            kinds = ", ".join(
                f"{k}: {n}" for k, n in sorted(phase.failureKinds.items())
            )
            print(f"  {phase.name} failures: {kinds}")
        if phase.note:
            print(f"  {phase.name}: {phase.note}")
    print()
    print("rST for README.rst:")
    print()
    print(f"Measured with ``{command}``.")
    print()
    print("\n".join(rstTable(HEADERS, table)))
    if args.json is not None:
        document = {"command": command, "phases": [asdict(p) for p in phases]}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    runScript(main, "child")
