#!/usr/bin/env python
"""
Soak bluegreen: mixed traffic for a long while, with failovers, failbacks, a
Redis restart and mirror sync running, and watch what leaks.

Usage::

    .venv/bin/python bench/soak.py [--duration 600] [--json FILE]

Everything runs on 127.0.0.1, on free ports, in a temporary directory:
GREEN and BLUE (C{tests/_apps.py}), a Redis server per environment (flags),
a SQLite database per environment with C{--sync mirror} between them (a
writer thread inserts votes into the live one, as the app would), and
C{twistd -n bluegreen} in front (C{--failback auto}, checks every second).

Load, for the whole run: keep-alive C{GET} clients, C{POST} clients, upload
clients (256 KiB bodies), and a few slow clients (a request head sent a byte
every 0.2 s, then a slow upload).  Every fifth of the run GREEN starts
answering C{500} (the proxy fails over to BLUE), and 20 s later is fixed
(the proxy fails back by itself); halfway, BLUE's Redis is restarted.

Printed at the end, with the goals of issue 10: unexpected client errors
(anything but a C{200} from an app, or a C{500} from GREEN while it is
broken on purpose; goal 0), the proxy's RSS growth after the first minute
(goal under 10 %), its open descriptors at the start of the load and at the
end (goal: flat), and files left in the proxy's temporary directory after
it stopped (goal: none).  The exit status is 1 if a goal was missed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failover import Child, envOf, setMode, startApp
from run import (
    exitOnSignals,
    freePort,
    progress,
    rstTable,
    runScript,
    textTable,
    twistdPath,
)

HOST = "127.0.0.1"
SCHEMA = "CREATE TABLE votes (catId INTEGER, votes INTEGER);"


@dataclass
class Tally:
    """
    What the clients got, shared by the client threads.

    @ivar answers: Count of each kind of answer.
    @ivar unexpected: Examples of unexpected answers, with their time.
    """

    answers: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    broken: bool = False

    def add(self, kind: str, expected: bool, began: float) -> None:
        """
        Count one answer.
        """
        with self.lock:
            self.answers[kind] += 1
            if not expected:
                self.answers["UNEXPECTED"] += 1
                if len(self.unexpected) < 20:
                    self.unexpected.append(f"{time.monotonic() - began:7.1f} s: {kind}")


def classify(status: int, body: bytes, tally: Tally) -> tuple[str, bool]:
    """
    @return: A name for an answer, and whether it is expected.
    """
    env = envOf(body)
    if status == 200 and env in ("green", "blue"):
        return f"200 {env}", True
    if status == 500 and env == "green":
        # GREEN broken on purpose, until the proxy fails over.
        return "500 green (the fault)", tally.broken
    return f"{status} {body[:60]!r}", False


def client(
    port: int, kind: str, stop: threading.Event, tally: Tally, began: float
) -> None:
    """
    Send one kind of request after another on a keep-alive connection.
    """
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    count = 0
    while not stop.is_set():
        count += 1
        body: bytes | None = None
        method = "GET"
        if kind == "post":
            method, body = "POST", f"vote {count}".encode()
        elif kind == "upload":
            method, body = "POST", b"u" * (256 * 1024)
        try:
            conn.request(method, f"/{kind}/{count}", body=body)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as e:
            tally.add(f"client error {type(e).__name__}", False, began)
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=30)
            time.sleep(0.1)
            continue
        name, expected = classify(response.status, data, tally)
        tally.add(name, expected, began)
        if kind == "upload":
            time.sleep(0.05)
    conn.close()


def slowClient(port: int, stop: threading.Event, tally: Tally, began: float) -> None:
    """
    Send a request head a byte at a time and a small body slowly, again and
    again, on new connections.
    """
    import socket

    while not stop.is_set():
        body = b"slow body!"
        head = (
            f"POST /slow HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        try:
            with socket.create_connection((HOST, port), timeout=60) as sock:
                for i in range(0, len(head), 8):
                    sock.sendall(head[i : i + 8])
                    time.sleep(0.2)
                for byte in body:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.2)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
        except OSError as e:
            tally.add(f"slow client error {type(e).__name__}", False, began)
            continue
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
        payload = data.split(b"\r\n\r\n", 1)[-1]
        name, expected = classify(status, payload, tally)
        tally.add(f"slow {name}", expected, began)


def writer(paths: dict[str, Path], live: list[str], stop: threading.Event) -> None:
    """
    Insert votes into the live environment's database, as the app would.
    """
    n = 0
    while not stop.is_set():
        n += 1
        try:
            with sqlite3.connect(paths[live[0]], timeout=10) as db:
                db.execute("INSERT INTO votes VALUES (?, 1)", (n % 10,))
        except sqlite3.Error as e:
            progress(f"writer: {e}")
        time.sleep(0.1)


def adminStatus(port: int) -> dict[str, Any]:
    """
    @return: C{/api/status}.
    """
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/api/status")
        document: dict[str, Any] = json.loads(conn.getresponse().read())
        return document
    finally:
        conn.close()


def processFacts(pid: int) -> tuple[int, int]:
    """
    @return: The process's RSS in KiB and its open descriptors.
    """
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def startRedis(directory: Path, port: int) -> subprocess.Popen[bytes]:
    """
    Start a Redis server keeping nothing on disk.
    """
    redis = shutil.which("redis-server")
    if redis is None:
        raise SystemExit("soak: redis-server not found (apt-get install redis-server)")
    process = subprocess.Popen(
        [
            redis,
            "--port",
            str(port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            import socket

            socket.create_connection((HOST, port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"soak: redis-server on {port} did not start")


def parseArgs() -> argparse.Namespace:
    """
    @return: The arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, metavar="SECONDS")
    parser.add_argument("--get-clients", type=int, default=8)
    parser.add_argument("--post-clients", type=int, default=4)
    parser.add_argument("--upload-clients", type=int, default=2)
    parser.add_argument("--slow-clients", type=int, default=4)
    parser.add_argument("--json", type=Path, metavar="FILE")
    args = parser.parse_args()
    if args.duration < 120:
        parser.error("--duration must be at least 120 (one minute of warm-up)")
    return args


def main() -> int:
    """
    Run the soak and print the report.
    """
    args = parseArgs()
    exitOnSignals()
    work = Path(tempfile.mkdtemp(prefix="bluegreen-soak-"))
    proxyTemp = work / "proxy-tmp"
    proxyTemp.mkdir()
    children: list[Child] = []
    redis: dict[str, subprocess.Popen[bytes]] = {}
    redisPorts = {name: freePort() for name in ("green", "blue")}
    dbs = {name: work / f"{name}.db" for name in ("green", "blue")}
    for path in dbs.values():
        with sqlite3.connect(path) as db:
            db.execute(SCHEMA)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        for name, port in redisPorts.items():
            (work / name).mkdir()
            redis[name] = startRedis(work / name, port)
        ports = {}
        for name in ("green", "blue"):
            _, ports[name] = startApp(name, children)
        adminPort = freePort()
        env = dict(os.environ, TMPDIR=str(proxyTemp))
        proxy = Child(
            "bluegreen",
            [
                twistdPath(),
                "-n",
                "--pidfile=",
                "bluegreen",
                "--port",
                f"tcp:0:interface={HOST}",
                "--admin",
                f"tcp:{adminPort}:interface={HOST}",
                "--green",
                f"http://{HOST}:{ports['green']}",
                "--blue",
                f"http://{HOST}:{ports['blue']}",
                "--green-redis",
                f"redis://{HOST}:{redisPorts['green']}",
                "--blue-redis",
                f"redis://{HOST}:{redisPorts['blue']}",
                "--green-db",
                str(dbs["green"]),
                "--blue-db",
                str(dbs["blue"]),
                "--sync",
                "mirror",
                "--failback",
                "auto",
                "--failback-delay",
                "5",
                "--health-interval",
                "1",
                "--access-log",
                "none",
            ],
            env=env,
        )
        children.append(proxy)
        _, match = proxy.waitForLine(r"ProxySite starting on (\d+)")
        port = int(match.group(1))
        proxy.waitForLine(r"green is up")
        proxy.waitForLine(r"blue is up")
        pid = proxy.process.pid
        tally = Tally()
        began = time.monotonic()
        live = ["green"]
        kinds = (
            ["get"] * args.get_clients
            + ["post"] * args.post_clients
            + ["upload"] * args.upload_clients
        )
        for kind in kinds:
            threads.append(
                threading.Thread(target=client, args=(port, kind, stop, tally, began))
            )
        for _ in range(args.slow_clients):
            threads.append(
                threading.Thread(target=slowClient, args=(port, stop, tally, began))
            )
        threads.append(threading.Thread(target=writer, args=(dbs, live, stop)))
        for thread in threads:
            thread.start()
        samples: list[tuple[float, int, int]] = []
        period = args.duration / 5
        nextFault = period
        redisRestarted = False
        fixAt: float | None = None
        events: list[str] = []
        while (now := time.monotonic() - began) < args.duration:
            rss, fds = processFacts(pid)
            samples.append((now, rss, fds))
            if fixAt is None and now >= nextFault and now < args.duration - 30:
                tally.broken = True
                setMode(ports["green"], "fail500")
                events.append(f"{now:6.1f} s: GREEN answers 500")
                fixAt = now + 20
                nextFault += period
            elif fixAt is not None and now >= fixAt:
                setMode(ports["green"], "ok")
                events.append(f"{now:6.1f} s: GREEN fixed")
                fixAt = None
            if not redisRestarted and now >= args.duration / 2:
                redis["blue"].terminate()
                redis["blue"].wait()
                redis["blue"] = startRedis(work / "blue", redisPorts["blue"])
                redisRestarted = True
                events.append(f"{now:6.1f} s: BLUE's Redis restarted")
            status = adminStatus(adminPort)
            active = status["live"]
            if active != live[0]:
                events.append(f"{now:6.1f} s: live {live[0]} -> {active}")
                live[0] = active
            if active == "green" and fixAt is None:
                # Failed back: GREEN's 500s are over.
                tally.broken = False
            time.sleep(5)
        stop.set()
        for thread in threads:
            thread.join(60)
        final = processFacts(pid)
        proxy.stop()
        children.remove(proxy)
        # Files only: the temporary directory itself (and a per-process
        # directory in it) may stay; what matters is that no file does.
        leftovers = sorted(
            str(p.relative_to(proxyTemp)) for p in proxyTemp.rglob("*") if p.is_file()
        )
        directories = sorted(
            str(p.relative_to(proxyTemp)) for p in proxyTemp.rglob("*") if p.is_dir()
        )
    finally:
        stop.set()
        while children:
            children.pop().stop()
        for process in redis.values():
            process.terminate()
            process.wait()
    warm = [s for s in samples if s[0] >= 60]
    rssAt60 = warm[0][1] if warm else samples[0][1]
    rssPeak = max(s[1] for s in samples)
    growth = (final[0] - rssAt60) / rssAt60 * 100
    fdsStart = samples[1][2] if len(samples) > 1 else samples[0][2]
    requests = sum(n for k, n in tally.answers.items() if k != "UNEXPECTED")
    unexpected = tally.answers["UNEXPECTED"]
    rows = [
        ["requests answered", f"{requests:,}", "-"],
        ["unexpected client errors", str(unexpected), "0"],
        [
            "RSS after 1 min / peak / end (MiB)",
            f"{rssAt60 / 1024:.0f} / {rssPeak / 1024:.0f} / {final[0] / 1024:.0f}",
            "-",
        ],
        ["RSS growth after the first minute", f"{growth:+.1f} %", "< 10 %"],
        ["open descriptors, start of load / end", f"{fdsStart} / {final[1]}", "flat"],
        ["files left in the proxy's temp dir", str(len(leftovers)), "0"],
    ]
    met = (
        unexpected == 0 and growth < 10 and final[1] <= fdsStart + 10 and not leftovers
    )
    print()
    print(f"bluegreen soak: {args.duration:g} s, command: {' '.join(sys.argv)}")
    print("Events:")
    for event in events:
        print(f"  {event}")
    print(f"Directories left in the proxy's temp dir: {directories or 'none'}")
    print("Answers:")
    for kind, n in sorted(tally.answers.items()):
        print(f"  {n:8,} {kind}")
    for example in tally.unexpected:
        print(f"  ! {example}")
    print()
    print("\n".join(textTable(["measure", "value", "goal"], rows, range(1, 3))))
    print()
    print("\n".join(rstTable(["Measure", "Value", "Goal"], rows)))
    print()
    print("all goals met" if met else "GOALS MISSED")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"answers": dict(tally.answers), "samples": samples, "events": events},
                indent=2,
            )
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0 if met else 1


if __name__ == "__main__":
    runScript(main, "child")
