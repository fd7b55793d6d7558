#!/usr/bin/env python
"""
What request and response buffering cost: bluegreen with buffering on (the
default) against the same with C{--request-buffering off
--response-buffering off}, in alternating rounds.

Usage::

    .venv/bin/python bench/buffering.py [--rounds 5] [--duration 5]
        [--connections 20]

It starts the fast backend (C{bench/backend.py}), then, C{--rounds} times,
each of the four targets of C{bench/run.py} that compare buffering (in
alternating order, so that a change of load on the machine hits both sides
alike): C{bluegreen} and C{bluegreen+nobuffer} with keep-alive C{GET /},
C{bluegreen+post} and C{bluegreen+nobuffer+post} with keep-alive C{POST /}
of 4 KiB bodies (C{bench/post.lua}).  Each round measures requests/s on
C{--connections} connections after a warm-up (C{wrk -t1}; C{wrk} is
required for the POST load).

It prints each round's figures, then the median requests/s per target and
the ratios on / off.  Goal (issue 10): buffering on costs at most 5 %
(ratio >= 0.95).  The medians of alternating rounds are used because this
2-core machine is shared: single runs vary by 10-30 % here.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (
    BENCH,
    Child,
    LoadError,
    StartError,
    exitOnSignals,
    freePort,
    measure,
    progress,
    runScript,
    serverCommand,
    startChild,
    stopChild,
    waitReady,
)

PAIRS = (
    ("GET", "bluegreen", "bluegreen+nobuffer"),
    ("POST 4 KiB", "bluegreen+post", "bluegreen+nobuffer+post"),
)

#: Buffering may cost at most 5 %.
GOAL = 0.95


def main() -> int:
    """
    Run the rounds and print the result.

    @return: the exit status (1 if a target failed).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=20)
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        progress("bench/buffering.py needs wrk (apt-get install wrk)")
        return 1
    exitOnSignals()
    rps: dict[str, list[float]] = {}
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="bluegreen-bench-") as tmp:
        workdir = Path(tmp)
        try:
            backendPort = freePort()
            backend = startChild(
                "backend",
                [sys.executable, str(BENCH / "backend.py"), str(backendPort)],
                workdir,
            )
            children.append(backend)
            waitReady(backend, backendPort)
            for round in range(args.rounds):
                for _, on, off in PAIRS:
                    order = (on, off) if round % 2 == 0 else (off, on)
                    for name in order:
                        port = freePort()
                        child = startChild(
                            name,
                            serverCommand(name, port, backendPort, workdir),
                            workdir,
                        )
                        children.append(child)
                        try:
                            waitReady(child, port)
                            run = measure(
                                wrk,
                                port,
                                args.connections,
                                args.duration,
                                name.endswith("+post"),
                            )
                        finally:
                            stopChild(child)
                            children.remove(child)
                        if run.errors:
                            progress(
                                f"[{name}] {run.errors} errors: {run.error_detail}"
                            )
                            return 1
                        rps.setdefault(name, []).append(run.rps)
                        progress(f"round {round + 1} [{name}] {run.rps:,.0f} req/s")
        except (StartError, LoadError) as e:
            progress(f"failed: {e}")
            return 1
        finally:
            for child in reversed(children):
                stopChild(child)
    print(
        f"\nbuffering on / off, {args.rounds} alternating rounds of "
        f"{args.duration} s, c={args.connections}, wrk -t1; command: "
        f"{' '.join(sys.argv)}"
    )
    print(f"{'load':12} {'on req/s':>10} {'off req/s':>10} {'on/off':>7}  result")
    for load, on, off in PAIRS:
        onRate, offRate = statistics.median(rps[on]), statistics.median(rps[off])
        ratio = onRate / offRate
        verdict = "PASS" if ratio >= GOAL else "FAIL"
        print(f"{load:12} {onRate:10,.0f} {offRate:10,.0f} {ratio:7.2f}  {verdict}")
    return 0


if __name__ == "__main__":
    runScript(main, "server")
