# -*- test-case-name: tests.test_front_descriptors -*-
"""
C{--max-clients}: the proxy's client connections, counted, and its
listening port paused while they are at the limit.

At the limit the port stops reading, so new connections wait in the
kernel's listen backlog (as HAProxy's C{maxconn} does) rather than being
accepted and dropped; it reads again as soon as one closes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from attrs import define, field
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

#: Seconds between two log lines saying the limit was reached.
PAUSE_LOG_INTERVAL = 60.0


@runtime_checkable
class PausablePort(Protocol):
    """
    What the gate uses of a listening port: C{tcp.Port} (and so the UNIX
    and TLS ports built on it) reads its socket like any file descriptor,
    so it can stop and start reading; C{numberAccepts} is how many
    connections it accepts at most per wake-up.
    """

    numberAccepts: int

    def stopReading(self) -> None:
        """
        Stop accepting.
        """

    def startReading(self) -> None:
        """
        Accept again.
        """


@define(eq=False)
class ClientGate:
    """
    Counts client connections and pauses the listening port at the limit.

    Twisted's port accepts up to C{numberAccepts} connections each time it
    wakes up, even once the gate has paused it; so near the limit the gate
    lowers C{numberAccepts} to the room left (after each wake-up, since the
    port sets it again at its end), and one wake-up can never overshoot.

    @ivar limit: Most client connections open at once.
    @ivar clock: Schedules the batch-size adjustment.
    @ivar current: Client connections open now.
    @ivar paused: C{True} while the port is not accepting.
    @ivar port: The listening port, once listening (L{None} before, or if
        it cannot be paused).
    @ivar pauses: How many times the limit was reached.
    """

    limit: int
    clock: IReactorTime
    current: int = 0
    paused: bool = False
    port: PausablePort | None = None
    pauses: int = 0
    _lastLogged: float | None = field(default=None, init=False)
    _capCall: IDelayedCall | None = field(default=None, init=False)
    _log = Logger()

    def attach(self, port: object) -> None:
        """
        Gate C{port} (the proxy's listening port).

        @param port: An C{IListeningPort}; one that cannot pause (not a
            L{PausablePort}) is counted but never paused.
        """
        if not isinstance(port, PausablePort):
            self._log.warn(
                "--max-clients: this listening port cannot be paused; "
                "client connections are counted but not limited"
            )
            return
        self.port = port
        self._adjust()

    def setLimit(self, limit: int) -> None:
        """
        Change the limit (it is known only once the open-file limit is
        raised, which may be after the port listens), pausing or resuming
        the port as the new limit says.

        @param limit: Most client connections open at once.
        """
        self.limit = limit
        self._adjust()

    def opened(self) -> None:
        """
        A client connection was accepted.
        """
        self.current += 1
        self._adjust()

    def closed(self) -> None:
        """
        A client connection closed.
        """
        self.current -= 1
        self._adjust()

    def detach(self) -> None:
        """
        Forget the port (it is closing) and cancel a pending adjustment.
        """
        self.port = None
        call, self._capCall = self._capCall, None
        if call is not None and call.active():
            call.cancel()

    def _adjust(self) -> None:
        port = self.port
        if port is None:
            return
        if self.current >= self.limit:
            if not self.paused:
                self.paused = True
                self.pauses += 1
                port.stopReading()
                self._logPause()
            return
        if self.paused:
            self.paused = False
            port.startReading()
        self._capBatch()

    def _capBatch(self) -> None:
        """
        Near the limit, make the port's next wake-up accept no more than the
        room left; done on the next turn of the reactor, after the port's
        own update at the end of a wake-up.
        """
        port = self.port
        if port is None or self._capCall is not None:
            return
        room = self.limit - self.current
        # The port grows its batch by 20 after a full one: look that far.
        if room < port.numberAccepts + 20:
            self._capCall = self.clock.callLater(0, self._cap)

    def _cap(self) -> None:
        self._capCall = None
        port = self.port
        if port is not None:
            port.numberAccepts = max(
                1, min(port.numberAccepts, self.limit - self.current)
            )

    def _logPause(self) -> None:
        now = self.clock.seconds()
        last = self._lastLogged
        if last is not None and now - last < PAUSE_LOG_INTERVAL:
            return
        self._lastLogged = now
        self._log.warn(
            "{current} client connections: at --max-clients {limit}, not "
            "accepting more until one closes (new connections wait in the "
            "listen backlog; reached {pauses} time(s) so far)",
            current=self.current,
            limit=self.limit,
            pauses=self.pauses,
            event="max-clients",
        )
