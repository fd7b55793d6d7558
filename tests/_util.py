# -*- test-case-name: tests.test_util -*-
"""
Helpers shared by the integration tests: one patience setting for every
real-time bound, free ports, and waiting for a condition.

Every real-time bound in the suite comes from L{PATIENCE}: CI runs on a loaded
2-core machine, so a bound says "this should happen, eventually", never "this
is fast".  Speed is measured by the benchmarks in C{bench/}, not by tests.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import IO, TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

E = TypeVar("E", bound=BaseException)


#: Where a test proxy listens: a free port of 127.0.0.1.
LOOPBACK = "tcp:0:interface=127.0.0.1"


def proxyArguments(green: str, blue: str, *extra: str) -> list[str]:
    """
    The options of a test proxy (as twistd's C{bluegreen} plugin takes them)
    listening on L{LOOPBACK} in front of C{green} and C{blue}.

    @param extra: More options.
    """
    return ["--port", LOOPBACK, "--green", green, "--blue", blue, *extra]


def healthArguments(interval: float, fastInterval: float, timeout: float) -> list[str]:
    """
    The options of a test proxy's health checks: every C{interval} seconds
    (C{fastInterval} while an environment changes state), each given
    C{timeout} seconds.
    """
    return [
        "--health-interval",
        str(interval),
        "--fast-interval",
        str(fastInterval),
        "--health-timeout",
        str(timeout),
    ]


def _patience(environ: dict[str, str] | os._Environ[str]) -> float:
    """
    Read C{BLUEGREEN_TEST_PATIENCE} (seconds).

    @param environ: The environment.
    @return: The patience, default 30 seconds.
    @raise ValueError: The variable is set but is not a positive number.
    """
    text = environ.get("BLUEGREEN_TEST_PATIENCE", "").strip()
    if not text:
        return 30.0
    value = float(text)
    if not value > 0:
        raise ValueError(f"BLUEGREEN_TEST_PATIENCE must be > 0, not {text!r}")
    return value


#: The longest a test waits for something that should happen (a server to
#: start, a switch to be seen, a process to exit).  Set
#: C{BLUEGREEN_TEST_PATIENCE} to change it for the whole run.
PATIENCE = _patience(os.environ)

#: Ports a test must never use: the machine's own Redis and bluegreen's
#: defaults.
RESERVED_PORTS = frozenset((6379, 3090, 3091))

#: Ports handed out by L{freePort} in this process: never handed out twice.
_given: set[int] = set()

#: Where L{freePort} keeps its reservations: one lock file per port, locked
#: (C{flock}) by the process the port was handed to, for as long as it runs.
#: Trial's workers (C{--jobs}) and other test runs on the machine see each
#: other's locks; the kernel drops them when a process ends.
RESERVATIONS = os.path.join(tempfile.gettempdir(), "bluegreen-test-ports")

#: The open lock files of this process's reservations (closing one would
#: release its port).
_held: list[IO[str]] = []


def _reserve(port: int) -> bool:
    """
    Reserve C{port} for this process, unless another process has.

    @param port: A TCP port number.
    @return: Whether this process now holds it.
    """
    os.makedirs(RESERVATIONS, exist_ok=True)
    lock = open(os.path.join(RESERVATIONS, f"{port}.lock"), "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return False
    _held.append(lock)
    return True


def _ephemeralRange() -> tuple[int, int]:
    """
    The kernel's range of ephemeral ports (outgoing connections and binds to
    port 0 take their numbers from it).

    @return: C{(low, high)}, inclusive.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(word) for word in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def freePort(candidates: Sequence[int] | None = None) -> int:
    """
    A TCP port of 127.0.0.1 that nothing listens on now, for a server that
    must be given a number (redis-server, sshd, a twistd child).

    A server we start in this process listens on port 0 instead and reports
    its port.  A number from a bind to port 0 would come from the ephemeral
    range, where any outgoing connection on the machine may take it before the
    server binds it; so the number is drawn from below that range, checked
    free by binding it, never handed out twice in one process, and reserved
    (L{RESERVATIONS}) against every other process that uses this function,
    such as trial's other workers.

    @param candidates: The ports to choose from (default: the 12,000 below
        the ephemeral range).
    @return: The port.
    @raise RuntimeError: If none of the candidates is free.
    """
    if candidates is None:
        low, _ = _ephemeralRange()
        candidates = range(max(1024, low - 12000), low)
    for _ in range(max(1000, 4 * len(candidates))):
        port = random.choice(candidates)
        if port in _given or port in RESERVED_PORTS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if not _reserve(port):
            continue
        _given.add(port)
        return port
    raise RuntimeError("no free TCP port among the candidates")


async def waitFor(
    condition: Callable[[], object],
    what: str,
    within: float = PATIENCE,
    *,
    reactor: IReactorTime | None = None,
    step: float = 0.01,
) -> float:
    """
    Wait, polling, until C{condition()} is true.

    @param condition: Called every C{step} seconds.
    @param what: What is awaited, for the failure message.
    @param within: The longest wait, in seconds (default L{PATIENCE}).
    @param reactor: The reactor to wait on (default the global one).
    @param step: Seconds between polls.
    @return: The seconds it took.
    @raise AssertionError: Naming C{what}, if not within C{within} seconds.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"{what}: not within {within:g} s")
        await deferLater(reactor, step)
    return time.monotonic() - started


async def raisesAsync(exceptionType: type[E], awaitable: Awaitable[object]) -> E:
    """
    Await C{awaitable}, which must raise C{exceptionType}.

    @param exceptionType: The exception expected.
    @param awaitable: What to await.
    @return: The exception.
    @raise AssertionError: Nothing, or something else, was raised.
    """
    try:
        await awaitable
    except exceptionType as e:
        return e
    raise AssertionError(f"{exceptionType.__name__} not raised")
