#!/usr/bin/env python
"""
Measure the database sync strategies on a large SQLite database written to
while they run.

Usage::

    .venv/bin/python bench/sync.py [--rows 1000000] [--rate 50]
        [--mirror-passes 5] [--mirror-interval 5] [--backup-timeout 30]
        [--json FILE]

It builds, with Python's C{sqlite3} module in a temporary directory, a WAL
database of C{--rows} rows (C{events(id INTEGER PRIMARY KEY, created_at
TEXT, body TEXT)}, an 80-byte body: about 100 MB for a million rows), then
starts a writer thread that inserts one row per commit into it at C{--rate}
rows/s for the whole run (as a live app would), and measures, each with
L{bluegreen.sync.syncer.Syncer} and real C{sqlite3}/C{rsync} children:

 - C{copy} to a target that does not exist yet;
 - C{migrate} to a target holding the first 90 % of the rows (10 % to
   insert), then again right away (the no-op pass: only the writer's rows);
 - the mirror, emulated as C{--mirror-passes} C{migrate} passes spaced
   as C{--sync mirror} spaces them (L{nextPassDelay}): the lag of each
   row the writer committed, from its commit to the end of the pass that
   brought it over (median and max).

Against, in the same run and under the same writer: C{sqlite3 src ".backup
dst"} (bounded by C{--backup-timeout}: it restarts on every write),
C{sqlite3 src "VACUUM INTO 'dst'"} and a plain C{cp} of the file (which is
not a safe way to copy a live database: the baseline of raw I/O).

With C{--exact} it measures the exact sync instead (see C{bench/_capture.py}):
the change capture's cost to the app's write rate, the mirror's lag at
C{--rate} writes/s and a sync of C{--changes} captured changes::

    .venv/bin/python bench/sync.py --exact --mirror-interval 1 [--rate 50]
        [--changes 100000] [--seconds 20] [--rounds 3]

Finally, with the writer stopped, one more C{migrate} must leave the target
holding every row of the source.  Every child is stopped (the sync's own
runner: C{TERM} then C{KILL}; the baselines by their timeout) and the
temporary directory removed when the run ends, fails or is interrupted.  It
prints a text table and the same as rST for README.rst.  The exit status is
1 if a sync failed, the writer saw an error or a row is missing, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from failover import runFacts
from run import rstTable, textTable

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bluegreen.sync.process import ProcessRunner, Tools  # noqa: E402
from bluegreen.sync.report import SyncReport  # noqa: E402
from bluegreen.sync.service import nextPassDelay  # noqa: E402
from bluegreen.sync.syncer import Syncer  # noqa: E402

SCHEMA = (
    "CREATE TABLE events(id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, "
    "body TEXT NOT NULL);"
)
BATCH = 50000


@dataclass
class Row:
    """
    One measured operation.

    @ivar name: What was measured.
    @ivar seconds: How long it took, or L{None} if it did not finish.
    @ivar rows: Rows it copied (the whole database for a file copy).
    @ivar note: What else to know (conflicts, errors, timeouts).
    @ivar bulk: Whether rows per second means something (not for a pass
        that copies a trickle).
    """

    name: str
    seconds: float | None
    rows: int
    note: str = ""
    bulk: bool = True

    @property
    def rps(self) -> float | None:
        """
        Rows per second, or L{None}.
        """
        if not self.bulk or not self.seconds or not self.rows:
            return None
        return self.rows / self.seconds


@dataclass
class Writer:
    """
    A thread inserting one row per commit into the source at a steady rate.

    @ivar path: The database.
    @ivar rate: Rows per second.
    @ivar written: C{(id, commit time)} of every row written.
    @ivar errors: What went wrong, as text.
    """

    path: str
    rate: float
    written: list[tuple[int, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """
        Start writing.
        """
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """
        Stop writing and wait for the thread.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        db = sqlite3.connect(self.path, timeout=10)
        body = "w" * 80
        period = 1.0 / self.rate
        due = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    cursor = db.execute(
                        "INSERT INTO events(created_at, body) "
                        "VALUES (datetime('now'), ?)",
                        (body,),
                    )
                    db.commit()
                    assert cursor.lastrowid is not None
                    self.written.append((cursor.lastrowid, time.monotonic()))
                except sqlite3.Error as e:
                    self.errors.append(str(e))
                due += period
                delay = due - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    due = time.monotonic()
        finally:
            db.close()


def progress(message: str) -> None:
    """
    Tell the user what is going on (on standard error).
    """
    print(message, file=sys.stderr, flush=True)


def build(path: str, rows: int) -> None:
    """
    Create the source database with C{rows} rows.
    """
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(SCHEMA)
    for start in range(1, rows + 1, BATCH):
        end = min(start + BATCH, rows + 1)
        db.execute(
            "WITH RECURSIVE c(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM c "
            "WHERE i + 1 < ?) INSERT INTO events SELECT i, "
            "datetime(1700000000 + i, 'unixepoch'), printf('%080d', i) FROM c",
            (start, end),
        )
        db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def count(path: str) -> int:
    """
    @return: The rows of C{events} in C{path}.
    """
    db = sqlite3.connect(path)
    try:
        (n,) = db.execute("SELECT count(*) FROM events").fetchone()
        return int(n)
    finally:
        db.close()


def ids(path: str, above: int) -> set[int]:
    """
    @return: The ids above C{above} in C{path}.
    """
    db = sqlite3.connect(path)
    try:
        return {
            r[0] for r in db.execute("SELECT id FROM events WHERE id > ?", (above,))
        }
    finally:
        db.close()


def timed(argv: list[str], timeout: float) -> float | None:
    """
    Run a baseline command.

    @return: Its wall time, or L{None} if it timed out (it is killed).
    @raise subprocess.CalledProcessError: If it failed.
    """
    started = time.monotonic()
    try:
        subprocess.run(argv, check=True, timeout=timeout, capture_output=True)
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic() - started


def note(report: SyncReport) -> str:
    """
    @return: What a sync report says beyond time and rows.
    """
    if report.error:
        return "FAILED: " + report.error.splitlines()[0][:120]
    if report.conflicts:
        return f"{len(report.conflicts)} conflicts"
    return ""


async def measure(reactor: Any, args: argparse.Namespace, work: str) -> dict[str, Any]:
    """
    Every measurement, in C{work}.
    """
    from twisted.internet.task import deferLater

    source = os.path.join(work, "green.db")
    results: list[Row] = []
    failures: list[str] = []
    progress(f"building {args.rows} rows in {source}")
    build(source, args.rows)
    size = os.path.getsize(source)
    progress(f"source: {size / 1e6:.0f} MB")
    # The migrate target: the first 90 % of the rows.
    partial = os.path.join(work, "partial.db")
    subprocess.run(
        ["sqlite3", source, f"VACUUM INTO '{partial}'"], check=True, timeout=600
    )
    db = sqlite3.connect(partial)
    db.execute("DELETE FROM events WHERE id > ?", (args.rows * 9 // 10,))
    db.commit()
    db.execute("VACUUM")
    db.execute("PRAGMA journal_mode=WAL")
    db.close()

    runner = ProcessRunner(reactor, Tools.find(), timeout=args.backup_timeout * 20)
    syncer = Syncer(reactor, runner, backupTimeout=args.backup_timeout)

    def killChildren() -> Any:
        for child in list(runner._running):
            child.terminate()
        return runner.quiesce()

    reactor.addSystemEventTrigger("before", "shutdown", killChildren)

    lags: list[float] = []
    writer = Writer(source, args.rate)
    writer.start()
    try:
        await deferLater(reactor, 1.0)
        rows = count(source)
        for name, argv in (
            ("cp (unsafe, raw I/O)", ["cp", source, os.path.join(work, "cp.db")]),
            (
                "sqlite3 VACUUM INTO",
                ["sqlite3", source, f"VACUUM INTO '{work}/vacuum.db'"],
            ),
            (
                "sqlite3 .backup",
                [
                    "sqlite3",
                    "-cmd",
                    ".timeout 10000",
                    source,
                    f".backup '{work}/backup.db'",
                ],
            ),
        ):
            progress(f"baseline: {name}")
            seconds = timed(argv, args.backup_timeout)
            results.append(
                Row(
                    name,
                    seconds,
                    rows,
                    ""
                    if seconds is not None
                    else f"did not finish in {args.backup_timeout:g} s (killed)",
                )
            )
            for leftover in ("cp.db", "vacuum.db", "backup.db"):
                with_suffixes = [leftover, leftover + "-journal", leftover + "-wal"]
                for f in with_suffixes:
                    try:
                        os.remove(os.path.join(work, f))
                    except FileNotFoundError:
                        pass

        target = os.path.join(work, "blue.db")
        progress("copy to an empty target")
        report = await syncer.sync(source, target, "copy")
        results.append(
            Row(
                "copy (to no target)",
                report.seconds,
                sum(report.copied.values()),
                note(report),
            )
        )
        if not report.complete:
            failures.append(f"copy: {report.summary()}")
        os.remove(target)

        progress("migrate to a target holding 90 % of the rows")
        os.rename(partial, target)
        report = await syncer.sync(source, target, "migrate")
        results.append(
            Row(
                "migrate (10 % missing)",
                report.seconds,
                sum(report.copied.values()),
                note(report),
            )
        )
        if not report.complete:
            failures.append(f"migrate: {report.summary()}")
        progress("migrate again (no-op pass)")
        report = await syncer.sync(source, target, "migrate")
        results.append(
            Row(
                "migrate (up to date)",
                report.seconds,
                sum(report.copied.values()),
                note(report) or "writer's rows only",
                bulk=False,
            )
        )
        if not report.complete:
            failures.append(f"migrate again: {report.summary()}")

        progress(
            f"mirror: {args.mirror_passes} passes every {args.mirror_interval:g} s"
        )
        mark = len(writer.written)
        arrived: dict[int, float] = {}
        above = writer.written[mark - 1][0] if mark else 0
        passes: list[float] = []
        passRows = 0
        for n in range(args.mirror_passes):
            if n:
                # Spaced as the service's mirror spaces its passes.
                await deferLater(
                    reactor, nextPassDelay(args.mirror_interval, passes[-1])
                )
            report = await syncer.sync(source, target, "migrate")
            finished = time.monotonic()
            passes.append(report.seconds)
            passRows += sum(report.copied.values())
            if not report.complete:
                failures.append(f"mirror pass {n + 1}: {report.summary()}")
            for i in ids(target, above):
                arrived.setdefault(i, finished)
            progress(f"  pass {n + 1}: {report.seconds:.2f} s")
        lags = [arrived[i] - at for i, at in writer.written[mark:] if i in arrived]
        results.append(
            Row(
                f"mirror pass (every {args.mirror_interval:g} s)",
                statistics.median(passes) if passes else None,
                passRows // max(len(passes), 1),
                (
                    f"lag median {statistics.median(lags):.1f} s, "
                    f"max {max(lags):.1f} s ({len(lags)} rows)"
                    if lags
                    else "no row arrived"
                ),
                bulk=False,
            )
        )
    finally:
        writer.stop()

    progress("final migrate with the writer stopped")
    report = await syncer.sync(source, target, "migrate")
    missing = count(source) - count(target)
    if not report.complete or missing:
        failures.append(f"final migrate: {missing} rows missing; {report.summary()}")
    return {
        "rows": args.rows,
        "size_mb": round(size / 1e6, 1),
        "rate": args.rate,
        "writes": len(writer.written),
        "writer_errors": writer.errors,
        "results": [asdict(r) | {"rps": r.rps} for r in results],
        "lag": {
            "median": statistics.median(lags) if lags else None,
            "max": max(lags) if lags else None,
        },
        "failures": failures,
    }


def cells(document: dict[str, Any]) -> list[list[str]]:
    """
    @return: The table's rows, with ratios against VACUUM INTO and cp.
    """
    byName = {r["name"]: r for r in document["results"]}
    vacuum = byName.get("sqlite3 VACUUM INTO", {}).get("seconds")
    cp = byName.get("cp (unsafe, raw I/O)", {}).get("seconds")
    out = []
    for r in document["results"]:
        s = r["seconds"]
        out.append(
            [
                r["name"],
                "-" if s is None else f"{s:.2f}",
                f"{r['rows']:,}",
                "-" if r["rps"] is None else f"{r['rps']:,.0f}",
                "-" if s is None or not vacuum else f"{s / vacuum:.1f}x",
                "-" if s is None or not cp else f"{s / cp:.1f}x",
                r["note"],
            ]
        )
    return out


HEADERS = ["Operation", "Seconds", "Rows", "Rows/s", "vs VACUUM INTO", "vs cp", "Note"]


def report(document: dict[str, Any], facts: dict[str, object]) -> str:
    """
    The results as text, then as rST.
    """
    head = (
        f"{document['rows']:,} rows, {document['size_mb']:g} MB (WAL), a writer "
        f"committing {document['rate']:g} rows/s on the source throughout "
        f"({document['writes']} rows, {len(document['writer_errors'])} errors)"
    )
    out = [
        "",
        f"bluegreen database sync: {head}",
        f"machine: nproc={facts['nproc']}, {facts['cpu']}, Python "
        f"{facts['python']}, Twisted {facts['twisted']}",
        f"command: {facts['command']}",
        "",
        *textTable(HEADERS, cells(document), range(1, 6)),
    ]
    problems = document["failures"] + [
        f"writer: {e}" for e in document["writer_errors"][:10]
    ]
    if problems:
        out += ["", "Problems:", *(f"  ! {p}" for p in problems)]
    out += [
        "",
        "rST for README.rst:",
        "",
        f"Measured on {facts['nproc']} CPUs ({facts['cpu']}), Python "
        f"{facts['python']}: ``{facts['command']}``.  {head}.  Sync times are "
        "the whole run (snapshot, verification, rsync, verification, merge or "
        "swap); the mirror is emulated as ``migrate`` passes at the interval, "
        "its lag is from a row's commit to the end of the pass that brought it.",
        "",
        *rstTable(HEADERS, cells(document)),
    ]
    return "\n".join(out)


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    """
    @param argv: The arguments, or L{None} for C{sys.argv}.
    @return: The parsed arguments.
    """
    parser = argparse.ArgumentParser(
        description="Measure bluegreen's database sync strategies under a writer."
    )
    parser.add_argument("--rows", type=int, default=1_000_000, metavar="N")
    parser.add_argument(
        "--rate", type=float, default=50.0, help="writer rows/s (default: 50)"
    )
    parser.add_argument("--mirror-passes", type=int, default=5, metavar="N")
    parser.add_argument("--mirror-interval", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument(
        "--backup-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="bound of the .backup baseline (default: 30)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write all numbers to FILE"
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="measure the exact sync instead (bench/_capture.py): the capture's "
        "cost to the app's writes, the mirror's lag at --rate writes/s and "
        "--mirror-interval (use 1), a sync of --changes changes",
    )
    parser.add_argument("--changes", type=int, default=100_000, metavar="N")
    parser.add_argument("--seconds", type=float, default=20.0, metavar="SECONDS")
    parser.add_argument("--rounds", type=int, default=3, metavar="N")
    args = parser.parse_args(argv)
    if args.rows < 10 or args.rate <= 0 or args.mirror_passes < 1:
        parser.error("--rows >= 10, --rate > 0 and --mirror-passes >= 1")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    """
    Turn SIGTERM and SIGHUP into L{SystemExit}, so the children get stopped.
    """
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run every measurement and print the report.

    @return: The exit status.
    """
    from twisted.internet import reactor as _reactor
    from twisted.internet.defer import Deferred

    reactor: Any = _reactor
    args = parseArgs(argv)
    facts = runFacts()
    outcome: dict[str, Any] = {}
    work = tempfile.mkdtemp(prefix="bluegreen-bench-sync-")

    def finished(result: Any) -> None:
        outcome["result"] = result
        reactor.stop()

    def start() -> None:
        if args.exact:
            import _capture

            d = Deferred.fromCoroutine(_capture.measure(reactor, args, work))
        else:
            d = Deferred.fromCoroutine(measure(reactor, args, work))
        d.addBoth(finished)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    try:
        reactor.callWhenRunning(start)
        reactor.run()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = outcome.get("result")
    if not isinstance(result, dict):
        progress(f"the run failed: {result}")
        return 1
    if args.exact:
        import _capture

        print(_capture.render(result, args))
        return 1 if result["failures"] else 0
    print(report(result, facts))
    if args.json is not None:
        args.json.write_text(json.dumps({**facts, **result}, indent=2) + "\n")
        progress(f"wrote {args.json}")
    return 1 if result["failures"] or result["writer_errors"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        progress("interrupted; every child was stopped")
        sys.exit(130)
