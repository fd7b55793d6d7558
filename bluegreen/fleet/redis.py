# -*- test-case-name: tests.test_fleet_integration -*-
"""
The shared state in a real Redis: L{RedisBackend} keeps two connections
(L{bluegreen.flags.link.RedisLink}, which reconnects by itself): one for the
scripts of L{bluegreen.fleet.script}, one subscribed to the switch channel.
It tells its owner (a L{bluegreen.fleet.coordinator.Coordinator}) when both
are usable, when either is lost, and every announcement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTCP, IReactorTime

from bluegreen.flags.link import Connection, LinkDown, RedisLink, asText
from bluegreen.flags.target import RedisTarget
from bluegreen.fleet import script
from bluegreen.fleet.state import (
    CHANNEL,
    HISTORY_KEY,
    HISTORY_LIMIT,
    STATE_KEY,
    SYNC_KEY,
    BadRecord,
    FleetState,
    SharedSwitch,
    parseGeneration,
)


class RedisBackend:
    """
    The shared state in one Redis.

    @ivar target: The Redis.
    @ivar onReady: Called when both connections are usable (again).
    @ivar onDown: Called when a connection attempt fails or one is lost.
    @ivar onMessage: Called with each announcement's text.
    """

    def __init__(
        self,
        target: RedisTarget,
        reactor: IReactorTCP,
        clock: IReactorTime,
        timeout: float,
    ) -> None:
        """
        @param target: The Redis (C{--coordinate}).
        @param reactor: Connects.
        @param clock: Keeps time.
        @param timeout: Seconds allowed to connect and for each command.
        """
        self.target = target
        self.onReady: Callable[[], None] = lambda: None
        self.onDown: Callable[[], None] = lambda: None
        self.onMessage: Callable[[str], None] = lambda text: None
        common = (target, reactor, clock, timeout, None)
        self._commands = RedisLink(*common, self._prepare, self._failed, self._failed)
        self._subscriber = RedisLink(
            *common, self._subscribe, self._failed, self._failed, self._message
        )

    @property
    def ready(self) -> bool:
        """
        C{True} while both connections are usable.
        """
        return self._commands.confirmed and self._subscriber.confirmed

    @property
    def error(self) -> str | None:
        """
        Why Redis cannot be reached, or L{None}.
        """
        return self._commands.error or self._subscriber.error

    def describe(self) -> str:
        """
        The Redis's URL (without a password).
        """
        return self.target.describe()

    def start(self) -> None:
        """
        Connect, and reconnect whenever needed until L{stop}.
        """
        self._commands.start()
        self._subscriber.start()

    def stop(self) -> Deferred[None]:
        """
        Close both connections.
        """
        done = DeferredList([self._commands.stop(), self._subscriber.stop()])
        return done.addCallback(lambda _: None)

    async def _prepare(self, connection: Connection) -> None:
        """
        A new command connection: usable once it answers.
        """
        await connection.execute("PING")
        if self._commands.confirm(connection) and self.ready:
            self.onReady()

    async def _subscribe(self, connection: Connection) -> None:
        """
        A new pub/sub connection: usable once subscribed (the state is read
        again by the owner: announcements made meanwhile are lost).
        """
        await connection.subscribe([CHANNEL])
        if self._subscriber.confirm(connection) and self.ready:
            self.onReady()

    def _failed(self, link: RedisLink) -> None:
        """
        An attempt failed or a connection went.
        """
        self.onDown()

    def _message(self, channel: str, message: str) -> None:
        """
        An announcement.
        """
        if channel == CHANNEL:
            self.onMessage(message)

    def _connection(self) -> Connection:
        """
        @raise LinkDown: If the command connection is not usable.
        """
        connection = self._commands.connection
        if connection is None:
            raise LinkDown(self._commands.error or "not connected")
        return connection

    async def read(self, active: str) -> FleetState:
        """
        Read the state (recording C{active} as live if there is none yet).

        @raise LinkDown: If Redis cannot be reached.
        @raise BadRecord: If the state is not bluegreen's.
        """
        answer: Any = await self._connection().execute(
            "EVAL", script.READ, 2, STATE_KEY, HISTORY_KEY, active
        )
        try:
            live, generation, records = answer
        except (TypeError, ValueError):
            raise BadRecord(f"unexpected answer {answer!r}") from None
        history = tuple(SharedSwitch.decode(asText(r)) for r in records or ())
        return FleetState(asText(live), parseGeneration(generation), history)

    async def propose(self, expected: int, record: SharedSwitch) -> tuple[bool, int]:
        """
        The compare-and-set: make C{record}'s switch if the generation is
        still C{expected}.

        @return: Whether it was made, and the generation now.
        @raise LinkDown: If Redis cannot be reached.
        """
        answer: Any = await self._connection().execute(
            "EVAL",
            script.SWITCH,
            2,
            STATE_KEY,
            HISTORY_KEY,
            expected,
            record.to,
            record.encode(),
            CHANNEL,
            HISTORY_LIMIT,
        )
        try:
            made, generation, _live = answer
        except (TypeError, ValueError):
            raise BadRecord(f"unexpected answer {answer!r}") from None
        return parseGeneration(made) == 1, parseGeneration(generation)

    async def claim(self, instance: str, seconds: float) -> str | None:
        """
        Claim the sync before a switch for C{instance}, for at most
        C{seconds}.

        @return: L{None} if claimed, else the instance holding it.
        @raise LinkDown: If Redis cannot be reached.
        """
        connection = self._connection()
        milliseconds = max(1, int(seconds * 1000))
        answer = await connection.execute(
            "SET", SYNC_KEY, instance, "NX", "PX", milliseconds
        )
        if answer is not None:
            return None
        holder = await connection.get(SYNC_KEY)
        return holder or "another instance"

    async def release(self, instance: str) -> None:
        """
        Release C{instance}'s sync claim (if it still holds it).

        @raise LinkDown: If Redis cannot be reached.
        """
        await self._connection().execute("EVAL", script.RELEASE, 1, SYNC_KEY, instance)
