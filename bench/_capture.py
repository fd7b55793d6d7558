"""
The exact sync's measurements for C{bench/sync.py --exact} (see
L{bluegreen.sync.exact}):

 1. the app's write rate without and with the change capture installed
    (one row per commit, each through the app's own connection, WAL, with
    C{synchronous} FULL and NORMAL; one-second runs interleaved, the median
    of C{--rounds}): the capture's cost as a ratio;
 2. the mirror's lag at C{--rate} writes/s: a writer thread commits rows
    to GREEN at that rate while passes of the exact C{migrate}, spaced as
    C{--sync mirror} spaces them (L{nextPassDelay}) at C{--mirror-interval},
    apply them to BLUE; each row's lag runs from its commit to the end of
    the pass that brought it over (median, p95, max);
 3. one sync of C{--changes} captured changes (inserts, then updates of a
    tenth of them and deletes of another tenth), against the baseline: the
    snapshot C{migrate} (seeding) of the same rows into an empty target.

Every database lives in a temporary directory removed at the end.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from run import rstTable, textTable

from bluegreen.sync.capture import Capture
from bluegreen.sync.locations import Location
from bluegreen.sync.process import ProcessRunner, Tools
from bluegreen.sync.service import nextPassDelay
from bluegreen.sync.syncer import Syncer

SCHEMA = "CREATE TABLE votes(catId INTEGER, votes INTEGER);"
KEYED = "CREATE TABLE facts(id INTEGER PRIMARY KEY, text TEXT, score INTEGER);"


def make(path: str) -> None:
    """
    A WAL database with the workshop's keyless table and a keyed one.
    """
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA + KEYED)
    db.commit()
    db.close()


def writeRate(path: str, seconds: float, synchronous: str) -> float:
    """
    @return: Commits per second of one-row inserts for C{seconds}.
    """
    db = sqlite3.connect(path, timeout=10, isolation_level=None)
    db.execute(f"PRAGMA synchronous={synchronous}")
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        db.execute("INSERT INTO votes VALUES (?, 1)", (n % 10,))
        n += 1
    db.close()
    return n / seconds


@dataclass
class Writer:
    """
    Commits one C{facts} row at a time at C{rate} rows/s.
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
        Stop and wait.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, timeout=10)
        period = 1.0 / self.rate
        due = time.monotonic()
        n = 1_000_000
        while not self._stop.is_set():
            try:
                db.execute("INSERT INTO facts VALUES (?, 'w', 0)", (n,))
                db.commit()
                self.written.append((n, time.monotonic()))
                n += 1
            except sqlite3.Error as e:
                self.errors.append(str(e))
            due += period
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                due = time.monotonic()
        db.close()


def arrived(path: str) -> set[int]:
    """
    @return: The writer's ids in C{path}.
    """
    db = sqlite3.connect(path, timeout=10)
    try:
        return {r[0] for r in db.execute("SELECT id FROM facts WHERE id >= 1000000")}
    finally:
        db.close()


async def measure(reactor: Any, args: Any, work: str) -> dict[str, Any]:
    """
    Run the three measurements.

    @return: The figures.
    """
    runner = ProcessRunner(reactor, Tools.find())
    syncer = Syncer(reactor, runner)
    out: dict[str, Any] = {"failures": []}

    # 1. Capture cost.
    rates: dict[str, dict[str, float]] = {}
    for synchronous in ("FULL", "NORMAL"):
        plain, captured = (os.path.join(work, f"{n}-{synchronous}.db") for n in "pc")
        make(plain)
        make(captured)
        await Capture(syncer.hosts).ensure(Location.local(captured))
        # Interleaved, the order swapped every round, the median kept: the
        # disk and the other processes weigh on both alike.
        runs: dict[str, list[float]] = {"without": [], "with": []}
        for i in range(args.rounds):
            order = [("without", plain), ("with", captured)]
            for name, path in order if i % 2 == 0 else order[::-1]:
                runs[name].append(writeRate(path, 1.0, synchronous))
        rates[synchronous] = {k: statistics.median(v) for k, v in runs.items()}
    out["rates"] = rates

    # 2. Mirror lag.
    green, blue = os.path.join(work, "green.db"), os.path.join(work, "blue.db")
    make(green)
    make(blue)
    report = await syncer.sync(green, blue, "migrate")
    if not report.complete:
        out["failures"].append(report.describe())
    writer = Writer(green, args.rate)
    writer.start()
    lags: list[float] = []
    passes: list[float] = []
    seen: set[int] = set()
    end = time.monotonic() + args.seconds
    try:
        while time.monotonic() < end:
            started = time.monotonic()
            report = await syncer.sync(green, blue, "migrate")
            finished = time.monotonic()
            passes.append(finished - started)
            if not report.complete:
                out["failures"].append(report.describe())
            now = arrived(blue)
            for ident, at in writer.written:
                if ident in now and ident not in seen:
                    lags.append(finished - at)
            seen = now
            delay = nextPassDelay(args.mirror_interval, finished - started)
            await _sleep(reactor, delay)
    finally:
        writer.stop()
    out["mirror"] = {
        "rows": len(lags),
        "writer_errors": len(writer.errors),
        "median": statistics.median(lags) if lags else None,
        "p95": sorted(lags)[int(len(lags) * 0.95)] if lags else None,
        "max": max(lags) if lags else None,
        "pass_median": statistics.median(passes) if passes else None,
    }

    # 3. 100k changes.
    source, target = os.path.join(work, "s.db"), os.path.join(work, "t.db")
    make(source)
    make(target)
    await syncer.sync(source, target, "migrate")
    db = sqlite3.connect(source)
    n = args.changes
    inserts = n * 8 // 10
    tenth = n // 10
    db.executemany(
        "INSERT INTO facts VALUES (?, ?, 0)", ((i, f"fact {i}") for i in range(inserts))
    )
    db.executemany(
        "UPDATE facts SET score = 1 WHERE id = ?", ((i,) for i in range(tenth))
    )
    db.executemany(
        "DELETE FROM facts WHERE id = ?", ((i,) for i in range(tenth, 2 * tenth))
    )
    db.commit()
    db.close()
    started = time.monotonic()
    exact = await syncer.sync(source, target, "migrate")
    out["exact"] = {"changes": exact.changes, "seconds": time.monotonic() - started}
    if not exact.complete or exact.changes != inserts + 2 * tenth:
        out["failures"].append(f"exact: {exact.describe()}")
    fresh = os.path.join(work, "fresh.db")
    make(fresh)
    started = time.monotonic()
    seeded = await syncer.sync(source, fresh, "migrate")
    out["snapshot"] = {
        "rows": sum(seeded.copied.values()),
        "seconds": time.monotonic() - started,
    }
    if not seeded.complete:
        out["failures"].append(f"snapshot: {seeded.describe()}")
    same = [
        sqlite3.connect(p).execute("SELECT count(*), sum(score) FROM facts").fetchone()
        for p in (source, target, fresh)
    ]
    if len(set(same)) != 1:
        out["failures"].append(f"contents differ: {same}")
    return out


async def _sleep(reactor: Any, seconds: float) -> None:
    """
    Wait C{seconds} on the reactor.
    """
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(result: dict[str, Any], args: Any) -> str:
    """
    @return: Text and rST tables of the figures.
    """
    headers = ["measure", "value", "baseline", "ratio"]
    rows: list[list[str]] = []
    for synchronous, best in result["rates"].items():
        rows.append(
            [
                f"app writes/s, synchronous={synchronous}, with capture",
                f"{best['with']:.0f}",
                f"{best['without']:.0f} without",
                f"{best['with'] / best['without']:.2f}",
            ]
        )
    m = result["mirror"]
    rows.append(
        [
            f"mirror lag at {args.rate:g} writes/s, interval {args.mirror_interval:g} s"
            " (median / p95 / max s)",
            f"{_f(m['median'])} / {_f(m['p95'])} / {_f(m['max'])}",
            f"goal < {args.mirror_interval + 0.5:g}",
            _f((m["max"] or 0) / (args.mirror_interval + 0.5)),
        ]
    )
    e, s = result["exact"], result["snapshot"]
    rows.append(
        [
            f"sync of {e['changes']} changes (s)",
            _f(e["seconds"]),
            f"{_f(s['seconds'])} snapshot merge of {s['rows']} rows",
            _f(e["seconds"] / s["seconds"]),
        ]
    )
    lines = textTable(headers, rows)
    lines += ["", "rST:", "", *rstTable(headers, rows)]
    if result["failures"]:
        lines += ["", "FAILURES:", *result["failures"]]
    return "\n".join(lines)
