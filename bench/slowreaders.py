#!/usr/bin/env python
"""
Slow readers against bluegreen, with response buffering on and off.

Usage::

    .venv/bin/python bench/slowreaders.py [--clients 150] [--size 4] [--hold 15]

For each mode (C{--response-buffering on}, the default, then C{off}) it
starts C{twistd -n bluegreen} (default C{--max-connections 100}) in front of
a backend run by this script, then:

 - C{--clients} clients each ask for a C{--size} MB response and read
   nothing (receive buffer 4 KiB) for C{--hold} seconds;
 - meanwhile a normal C{GET /small} is sent every 0.25 s on a new
   connection (timeout 3 s), and the proxy's resident memory (C{VmRSS}) is
   sampled every 0.2 s, with its buffered bytes (C{/api/status}, on an
   admin port);
 - then every slow client reads its response to the end (checked by
   length).

It prints, per mode: the proxy's RSS (before, peak), the peak bytes buffered
in memory and on disk, the normal GETs (count, failures, p50, p95, max
latency), how many responses the backend had finished while the clients
were not reading, and whether every slow client got its whole response.
Goal (issue 10): with buffering on, RSS under 300 MB and no normal GET
failing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

reactor: Any = _reactor
BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"
BLOCK = b"x" * (64 * 1024)


def freePort() -> int:
    """
    @return: a free TCP port on 127.0.0.1.
    """
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Backend(Protocol):
    """
    Answers C{GET /big} with C{size} bytes (written as the transport takes
    them) and anything else with a small body.
    """

    size = 0
    finished = 0
    _buffer = b""
    _left = 0

    def dataReceived(self, data: bytes) -> None:
        """
        Answer each request head.
        """
        self._buffer += data
        while b"\r\n\r\n" in self._buffer:
            head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            target = head.split(b" ", 2)[1]
            if target.startswith(b"/big"):
                self._left = self.size
                self.transport.write(  # type: ignore[union-attr]
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.size
                )
                self.transport.registerProducer(self, False)  # type: ignore[union-attr]
            else:
                self.transport.write(  # type: ignore[union-attr]
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
                )

    def resumeProducing(self) -> None:
        """
        Write the next block of the large body.
        """
        if self._left <= 0:
            return
        block = BLOCK[: self._left]
        self._left -= len(block)
        self.transport.write(block)  # type: ignore[union-attr]
        if self._left <= 0:
            self.transport.unregisterProducer()  # type: ignore[union-attr]
            Backend.finished += 1

    def stopProducing(self) -> None:
        """
        The connection went away.
        """
        self._left = 0


class SlowReader(Protocol):
    """
    Asks for C{/big} and reads nothing until told to.
    """

    def __init__(self) -> None:
        self.received = 0
        self.done: Deferred[int] = Deferred()

    def connectionMade(self) -> None:
        """
        Shrink the receive buffer, stop reading, send the request.
        """
        handle = self.transport.getHandle()  # type: ignore[union-attr]
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.transport.pauseProducing()  # type: ignore[union-attr]
        self.transport.write(b"GET /big HTTP/1.1\r\nHost: bench\r\n\r\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        """
        Count what arrives.
        """
        self.received += len(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Report the bytes received.
        """
        if not self.done.called:
            self.done.callback(self.received)


class Client(Factory):
    """
    Builds L{SlowReader}s.
    """

    protocol = SlowReader


def rss(pid: int) -> int:
    """
    @return: the resident memory of C{pid}, in bytes.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def status(adminPort: int) -> dict[str, Any]:
    """
    @return: the proxy's C{/api/status}.
    """
    with urllib.request.urlopen(
        f"http://{HOST}:{adminPort}/api/status", timeout=2
    ) as response:
        result: dict[str, Any] = json.load(response)
        return result


def normalGet(port: int) -> float | None:
    """
    @return: the seconds a C{GET /small} took, or L{None} if it failed.
    """
    started = time.monotonic()
    try:
        with socket.create_connection((HOST, port), timeout=3) as s:
            s.sendall(
                b"GET /small HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return None
    if not data.startswith(b"HTTP/1.1 200"):
        return None
    return time.monotonic() - started


def percentile(values: list[float], fraction: float) -> float:
    """
    @return: the C{fraction} percentile of C{values} (nearest rank).
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def runMode(
    args: argparse.Namespace, buffering: str, backendPort: int
) -> dict[str, Any]:
    """
    Measure one mode.
    """
    port, adminPort = freePort(), freePort()
    workdir = Path(tempfile.mkdtemp(prefix="bluegreen-slow-"))
    twistd = shutil.which("twistd", path=str(Path(sys.executable).parent)) or "twistd"
    backendURL = f"http://{HOST}:{backendPort}"
    command = [
        twistd, "-n", "--pidfile=", "bluegreen",
        "--port", f"tcp:{port}:interface={HOST}",
        "--admin", f"tcp:{adminPort}:interface={HOST}",
        "--green", backendURL, "--blue", f"http://localhost:{backendPort}",
        "--access-log", "none",
        "--response-buffering", buffering,
        "--temp-dir", str(workdir / "buffers"),
    ]  # fmt: skip
    log = open(workdir / "twistd.log", "wb")
    proxy = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        for _ in range(100):
            # In a thread: the backend answering runs on this reactor.
            if await deferToThreadGet(port) is not None:
                break
            await deferLater(reactor, 0.1)
        before = rss(proxy.pid)
        Backend.finished = 0
        readers = []
        for n in range(args.clients):
            reader = SlowReader()
            readers.append(reader)
            reactor.connectTCP(HOST, port, _factory(reader))
            if n % 10 == 9:
                # Not all at once: the listen backlog is 50.
                await deferLater(reactor, 0.05)
        samples: list[int] = []
        memory = disk = 0
        latencies: list[float] = []
        failures = 0
        end = time.monotonic() + args.hold
        nextGet = time.monotonic()
        while time.monotonic() < end:
            samples.append(rss(proxy.pid))
            try:
                buffers = (await deferToThread(status, adminPort)).get("buffers", {})
                memory = max(memory, buffers.get("memoryBytes", 0))
                disk = max(disk, buffers.get("diskBytes", 0))
            except OSError:
                pass
            if time.monotonic() >= nextGet:
                nextGet += 0.25
                took = await deferToThreadGet(port)
                if took is None:
                    failures += 1
                else:
                    latencies.append(took)
            await deferLater(reactor, 0.2)
        finishedWhileHeld = Backend.finished
        for reader in readers:
            if reader.transport is not None:
                reader.transport.resumeProducing()  # type: ignore[attr-defined]
        expected = args.size * 1024 * 1024
        complete = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            complete = sum(1 for r in readers if r.received >= expected)
            if complete == len(readers):
                break
            samples.append(rss(proxy.pid))
            await deferLater(reactor, 0.2)
        for reader in readers:
            if reader.transport is not None:
                reader.transport.loseConnection()
        return {
            "mode": f"--response-buffering {buffering}",
            "rss_before_mb": before / 1e6,
            "rss_peak_mb": max(samples) / 1e6,
            "buffered_memory_peak_mb": memory / 1e6,
            "buffered_disk_peak_mb": disk / 1e6,
            "gets": len(latencies) + failures,
            "get_failures": failures,
            "get_p50_ms": 1000 * percentile(latencies, 0.5) if latencies else None,
            "get_p95_ms": 1000 * percentile(latencies, 0.95) if latencies else None,
            "get_max_ms": 1000 * max(latencies) if latencies else None,
            "backend_finished_while_held": finishedWhileHeld,
            "complete_responses": complete,
            "incomplete": sorted(
                (r.received, r.done.called) for r in readers if r.received < expected
            )[:10],
            "clients": len(readers),
        }
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(10)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
        log.close()
        if os.environ.get("SLOWREADERS_KEEP_LOG"):
            shutil.copy(workdir / "twistd.log", f"/tmp/slowreaders-{buffering}.log")
        left = (
            list((workdir / "buffers").rglob("*"))
            if (workdir / "buffers").exists()
            else []
        )
        shutil.rmtree(workdir, ignore_errors=True)
        if [p for p in left if p.is_file()]:
            print(f"temporary files left: {left}", file=sys.stderr)


class _OneReader(ClientFactory):
    """
    Hands out one L{SlowReader}; a failed connection ends it with 0 bytes.
    """

    def __init__(self, reader: SlowReader) -> None:
        self.reader = reader

    def buildProtocol(self, addr: object) -> SlowReader:
        """
        @return: the reader.
        """
        return self.reader

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        """
        Count the failure as a reader that got nothing.
        """
        print(f"slow reader could not connect: {reason.value}", file=sys.stderr)
        self.reader.connectionLost(reason)


def _factory(reader: SlowReader) -> ClientFactory:
    """
    @return: a factory handing out C{reader}.
    """
    return _OneReader(reader)


def deferToThreadGet(port: int) -> Deferred[float | None]:
    """
    L{normalGet} in a thread, so the slow readers keep being served.
    """
    return deferToThread(normalGet, port)


async def main(args: argparse.Namespace) -> None:
    """
    Run both modes and print the table.
    """
    Backend.size = args.size * 1024 * 1024
    factory = Factory.forProtocol(Backend)
    backendPort = reactor.listenTCP(0, factory, interface=HOST).getHost().port
    results = [await runMode(args, mode, backendPort) for mode in ("on", "off")]
    print(
        f"\n{args.clients} slow readers of {args.size} MB, held {args.hold} s "
        f"(nproc {os.cpu_count()}); command: {' '.join(sys.argv)}"
    )
    for result in results:
        print(json.dumps(result))


def _run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--clients", type=int, default=150)
    parser.add_argument("--size", type=int, default=4, help="MB per response")
    parser.add_argument("--hold", type=float, default=15.0)
    args = parser.parse_args()
    reactor.suggestThreadPoolSize(4)

    def done(_: object) -> None:
        reactor.stop()

    ensureDeferred(main(args)).addErrback(lambda f: f.printTraceback()).addBoth(done)
    reactor.run()


if __name__ == "__main__":
    _run()
