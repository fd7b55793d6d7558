# -*- test-case-name: tests.test_flags,tests.test_flags_link -*-
"""
The connection to one Redis, made and remade by Twisted's L{ClientService}.

A L{RedisLink} keeps one connection to an environment's Redis (the store
has two: one for commands, one for pub/sub).  L{ClientService} connects,
and reconnects after a failed attempt or a lost connection, waiting
L{INITIAL_DELAY} (0.5 s), doubling, at most L{MAX_DELAY} (5 s).  On each
new connection the link sends C{AUTH} and C{SELECT} and then runs its
owner's preparation (the store checks keyspace notifications, reads every
flag, subscribes); the connection is usable once the owner has called
L{RedisLink.confirm}.  A connection that fails before that (a wrong
password, a Redis that does not answer) counts as a failed attempt, so
the delay keeps growing.

The preparation is started by C{ClientService}'s C{prepareConnection} hook
but not waited for by it: C{ClientService} (Twisted 26) has no transition
for a connection lost while C{prepareConnection}'s Deferred is pending, nor
after it failed (C{automat.NoTransition}, logged as an unhandled error, and
a failed preparation leaves its connection open).  A Redis that is killed
or frozen mid-handshake must be survived, so the link prepares the
connection itself, drops it if the preparation fails, and counts those
failures in its retry policy.

txredisapi is untyped and imports the global reactor when it is imported:
this module is the only one that touches it, only once connecting
(L{Connection} is the typed face of its protocol), and its commands all
have a timeout here (txredisapi alone would wait forever).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from bluegreen.flags.target import (
    RedisTarget,
    TrustRoot,
    describeRedisError,
    describeRedisFailure,
    redisText,
)

#: Seconds before the first attempt after a failure or a lost connection.
INITIAL_DELAY = 0.5

#: The longest wait between attempts.
MAX_DELAY = 5.0


class RedisReplyError(Exception):
    """
    Redis answered a command with an error (e.g. C{WRONGTYPE ...}, C{unknown
    command 'CONFIG'}); the message is Redis's.
    """


class LinkDown(Exception):
    """
    A command got no answer: the connection is gone, or it timed out (and
    was dropped).

    @ivar reason: Why, in a few words (C{"connection lost"}, C{"timeout
        after 1 s"}).
    """

    def __init__(self, reason: str) -> None:
        """
        @param reason: Why.
        """
        super().__init__(reason)
        self.reason = reason


def asText(value: object) -> str:
    """
    A reply as text (txredisapi gives bytes for what is not UTF-8).

    @param value: A reply, or an item of one.
    @return: Its text.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def _txredisapi() -> Any:
    """
    Import txredisapi (it imports the global reactor: call this only once
    the reactor is chosen, i.e. when connecting).

    @return: The module (untyped).
    """
    import txredisapi

    return txredisapi


class Connection:
    """
    One connection to Redis: txredisapi's protocol behind typed commands,
    each bounded by the link's timeout.
    """

    def __init__(self, protocol: Any, link: RedisLink) -> None:
        """
        @param protocol: txredisapi's protocol for this connection.
        @param link: The link it belongs to.
        """
        self._protocol = protocol
        self._link = link

    def __repr__(self) -> str:
        """
        The link's Redis.
        """
        return f"<Connection to {self._link.target.describe()}>"

    async def _run(self, send: Callable[[], Deferred[Any]]) -> Any:
        """
        Send a command; wait for its answer at most the link's timeout
        (then drop the connection).

        @param send: Sends it with txredisapi.
        @return: The answer.
        @raise LinkDown: On a timeout or a lost connection.
        @raise RedisReplyError: If Redis answered with an error.
        """
        txredisapi = _txredisapi()
        link = self._link
        try:
            d = send()
        except txredisapi.ConnectionError:
            raise LinkDown("connection lost") from None
        d.addTimeout(link.timeout, link.clock)
        try:
            result = await d
        except (DeferredTimeoutError, CancelledError):
            reason = f"timeout after {link.timeout:g} s"
            link.fail(self, reason)
            raise LinkDown(reason) from None
        except txredisapi.ResponseError as e:
            raise RedisReplyError(str(e)) from None
        except txredisapi.ConnectionError:
            raise LinkDown("connection lost") from None
        if isinstance(result, txredisapi.ResponseError):
            raise RedisReplyError(str(result))
        return result

    async def execute(self, *args: str | int) -> Any:
        """
        Any command, e.g. C{execute("CONFIG", "GET", "notify-keyspace-events")}.

        @return: The answer, as txredisapi parses it (strings, lists, ints).
        """
        return await self._run(lambda: self._protocol.execute_command(*args))

    async def get(self, name: str) -> str | None:
        """
        C{GET name}.

        @return: The value, or L{None}.
        """
        value = await self._run(lambda: self._protocol.get(name))
        return None if value is None else asText(value)

    async def mget(self, names: list[str]) -> list[str | None]:
        """
        C{MGET names...}.

        @return: The values, L{None} for the missing ones.
        """
        values = await self._run(lambda: self._protocol.mget(names))
        return [None if v is None else asText(v) for v in values or ()]

    async def smembers(self, key: str) -> list[str]:
        """
        C{SMEMBERS key}.

        @return: The members.
        """
        return [
            asText(n)
            for n in await self._run(lambda: self._protocol.smembers(key)) or ()
        ]

    async def lrange(self, key: str, start: int, stop: int) -> list[str]:
        """
        C{LRANGE key start stop}.

        @return: The items.
        """
        items = await self._run(lambda: self._protocol.lrange(key, start, stop))
        return [asText(item) for item in items or ()]

    async def eval(
        self, script: str, keys: list[str], args: list[str | int]
    ) -> str | None:
        """
        Run a Lua script (C{EVALSHA}, or C{EVAL} the first time).

        @return: Its answer, as text, or L{None}.
        """
        value = await self._run(lambda: self._protocol.eval(script, keys, args))
        return None if value is None else asText(value)

    async def subscribe(self, channels: list[str]) -> None:
        """
        C{SUBSCRIBE channels...} (a subscriber link only); the messages go to
        the link's C{onMessage}.
        """
        await self._run(lambda: self._protocol.subscribe(channels))

    def abort(self) -> None:
        """
        Drop the connection now.
        """
        transport = self._protocol.transport
        if transport is not None:
            transport.abortConnection()


_PROTOCOL_CLASSES: dict[bool, type] = {}


def _protocolClass(subscriber: bool) -> type:
    """
    txredisapi's protocol class, reporting a lost connection and pub/sub
    messages to its L{Connection}'s link.

    @param subscriber: The pub/sub protocol, else the commands one.
    @return: The class (made on first use: see the module docstring).
    """
    if not _PROTOCOL_CLASSES:
        txredisapi = _txredisapi()

        class Reporting:
            """
            Reports to the link; C{connection} is set by L{_LinkFactory}.
            """

            connection: Connection

            def connectionLost(self, reason: Failure) -> None:
                """
                Let txredisapi fail the commands waiting, then tell the link.
                """
                try:
                    super().connectionLost(reason)  # type: ignore[misc]
                finally:
                    self.connection._link.lost(self.connection, reason)

            def messageReceived(
                self, pattern: object, channel: object, message: object
            ) -> None:
                """
                A pub/sub message: hand it to the link.
                """
                self.connection._link.message(self.connection, channel, message)

        _PROTOCOL_CLASSES[False] = type(
            "RedisCommandsProtocol", (Reporting, txredisapi.RedisProtocol), {}
        )
        _PROTOCOL_CLASSES[True] = type(
            "RedisSubscriberProtocol", (Reporting, txredisapi.SubscriberProtocol), {}
        )
    return _PROTOCOL_CLASSES[subscriber]


class _LinkFactory(Factory):
    """
    Builds each connection's txredisapi protocol (strings as UTF-8, numbers
    never converted; no C{AUTH}/C{SELECT} of its own: the link sends them,
    with a timeout).
    """

    noisy = False

    def __init__(self, link: RedisLink) -> None:
        """
        @param link: The link the connections are for.
        """
        self.link = link

    def buildProtocol(self, addr: IAddress | None) -> Any:
        """
        A new connection's protocol; the link is told of its L{Connection}.
        """
        protocol = _protocolClass(self.link.subscriber)("utf-8", convertNumbers=False)
        protocol.factory = self
        protocol.connection = Connection(protocol, self.link)
        self.link.building(protocol.connection)
        return protocol


@implementer(IStreamClientEndpoint)
class _ReportingEndpoint:
    """
    The target's endpoint, made afresh for each attempt (a host name is
    resolved again), telling the link why an attempt failed.
    """

    def __init__(self, link: RedisLink) -> None:
        """
        @param link: The link connecting.
        """
        self.link = link

    def __repr__(self) -> str:
        """
        What is connected to, as L{ClientService}'s log lines show it.
        """
        role = "pub/sub" if self.link.subscriber else "commands"
        return f"<Redis {role} connection to {self.link.target.describe()}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect; a failure is recorded by the link, then passed on to
        L{ClientService} (which tries again later).
        """
        link = self.link
        try:
            endpoint = link.target.endpoint(link.reactor, link.timeout, link.trustRoot)
            d: Deferred[IProtocol] = endpoint.connect(protocolFactory)
        except Exception:
            d = fail()
        return d.addErrback(link.connectFailed)


class RedisLink:
    """
    One connection to an environment's Redis, remade whenever it fails or is
    lost (see the module docstring).

    @ivar target: The Redis.
    @ivar subscriber: C{True} for the pub/sub connection.
    @ivar reactor: Connects.
    @ivar clock: Keeps time (timeouts, delays between attempts).
    @ivar timeout: Seconds allowed to connect and for each command.
    @ivar trustRoot: The CA trusted for C{rediss://}.
    @ivar connection: The usable (confirmed) connection, or L{None}.
    @ivar error: Why the last attempt failed or the connection went.
    @ivar service: The L{ClientService} making the connections.
    """

    _log = Logger()

    def __init__(
        self,
        target: RedisTarget,
        reactor: IReactorTCP,
        clock: IReactorTime,
        timeout: float,
        trustRoot: TrustRoot | None,
        prepare: Callable[[Connection], Awaitable[None]],
        onFailed: Callable[[RedisLink], None],
        onDown: Callable[[RedisLink], None],
        onMessage: Callable[[str, str], None] | None = None,
    ) -> None:
        """
        @param target: The Redis.
        @param reactor: Connects.
        @param clock: Keeps time.
        @param timeout: Seconds allowed to connect and for each command.
        @param trustRoot: The CA to trust for C{rediss://}.
        @param prepare: Run on each new connection after C{AUTH} and
            C{SELECT}; calls L{confirm} once the connection is usable.  Its
            L{LinkDown} and L{RedisReplyError} drop the connection.
        @param onFailed: Called after each failed attempt.
        @param onDown: Called when the usable connection (or the one being
            prepared) becomes unusable.
        @param onMessage: For the pub/sub connection: called with each
            message's channel and text.
        """
        self.target = target
        self.subscriber = onMessage is not None
        self.reactor = reactor
        self.clock = clock
        self.timeout = timeout
        self.trustRoot = trustRoot
        self.connection: Connection | None = None
        self.error: str | None = None
        self._prepare = prepare
        self._onFailed = onFailed
        self._onDown = onDown
        self._onMessage = onMessage
        self._building: Connection | None = None
        self._current: Connection | None = None
        self._explicit = False
        self._unusable = 0
        self._running = False
        # ClientService's first wait is policy(1): half the initial delay,
        # doubled.  No jitter: one bluegreen per Redis, and tests count on it.
        self._backoff = backoffPolicy(
            initialDelay=INITIAL_DELAY / 2,
            maxDelay=MAX_DELAY,
            factor=2.0,
            jitter=lambda: 0.0,
        )
        self.service = ClientService(
            _ReportingEndpoint(self),
            _LinkFactory(self),
            retryPolicy=self.retryDelay,
            clock=clock,
            prepareConnection=self._prepareConnection,
        )

    def __repr__(self) -> str:
        """
        The Redis and the role.
        """
        role = "pub/sub" if self.subscriber else "commands"
        return f"<RedisLink {role} {self.target.describe()}>"

    @property
    def confirmed(self) -> bool:
        """
        C{True} while there is a usable connection.
        """
        return self.connection is not None

    def retryDelay(self, attempts: int) -> float:
        """
        L{ClientService}'s retry policy: seconds before the next attempt.

        @param attempts: Failed attempts to connect in a row (as
            L{ClientService} counts them: a connection made resets it, even
            one dropped before it was usable).
        @return: L{INITIAL_DELAY}, doubling with every failed attempt or
            unusable connection in a row, at most L{MAX_DELAY}.
        """
        return self._backoff(attempts + max(0, self._unusable - 1))

    # Running

    def start(self) -> None:
        """
        Connect now, and again whenever needed until L{stop}.
        """
        self._running = True
        self.service.startService()

    def stop(self) -> Deferred[None]:
        """
        Stop reconnecting and close the connection.

        @return: A Deferred that fires once it is closed.
        """
        self._running = False
        self.connection = None
        return self.service.stopService()

    # From ClientService, the endpoint and the protocol

    def building(self, connection: Connection) -> None:
        """
        A connection's protocol was built (its attempt goes on).

        @param connection: The connection.
        """
        self._building = connection

    def connectFailed(self, reason: Failure) -> Failure:
        """
        An attempt to connect failed: record why, tell the owner.

        @param reason: Why.
        @return: C{reason}, for L{ClientService}.
        """
        if self._running and not reason.check(CancelledError):
            self.error = describeRedisFailure(reason, self.timeout)
            self._onFailed(self)
        return reason

    def _prepareConnection(self, protocol: IProtocol) -> None:
        """
        L{ClientService}'s hook: start preparing the new connection (not
        waited for: see the module docstring).
        """
        connection = self._building
        if connection is None:  # pragma: no cover (always built first)
            return
        self._building = None
        self._current = connection
        self._explicit = False
        Deferred.fromCoroutine(self._setUp(connection)).addErrback(
            lambda f: self._log.failure("preparing {link!r}", f, link=self)
        )

    async def _setUp(self, connection: Connection) -> None:
        """
        C{AUTH}, C{SELECT}, then the owner's preparation; drop the
        connection if any fails.
        """
        target = self.target
        try:
            if target.password is not None:
                user = [target.username] if target.username else []
                await connection.execute("AUTH", *user, target.password)
            if target.db and not self.subscriber:
                try:
                    await connection.execute("SELECT", target.db)
                except RedisReplyError as e:
                    self.fail(
                        connection, f"cannot select the database ({redisText(e)})"
                    )
                    return
            await self._prepare(connection)
        except LinkDown:
            return  # Recorded (a timeout, a lost connection).
        except RedisReplyError as e:
            self.fail(connection, describeRedisError(str(e)))

    def lost(self, connection: Connection, reason: Failure) -> None:
        """
        A connection is gone: record why; one that was never usable counts
        as a failed attempt.

        @param connection: The connection.
        @param reason: Why it was lost.
        """
        if connection is not self._current:
            return
        self._current = None
        wasConfirmed = self.connection is connection
        self.connection = None
        if not self._running:
            return
        if not self._explicit:
            self.error = (
                "connection lost"
                if wasConfirmed
                else describeRedisFailure(reason, self.timeout)
            )
        self._onDown(self)
        if wasConfirmed:
            self._unusable = 0
        else:
            self._unusable += 1
            self._onFailed(self)

    def message(self, connection: Connection, channel: object, message: object) -> None:
        """
        A pub/sub message arrived.
        """
        if (
            self._onMessage is not None
            and self._running
            and connection is self._current
        ):
            self._onMessage(asText(channel), asText(message))

    # From the owner

    def confirm(self, connection: Connection) -> bool:
        """
        The owner has prepared C{connection}: it is usable.

        @return: C{False} if it is gone meanwhile (or the link stopped).
        """
        if connection is not self._current or not self._running:
            return False
        self.connection = connection
        self.error = None
        self._unusable = 0
        return True

    def fail(self, connection: Connection, error: str) -> None:
        """
        Drop C{connection} (it timed out, or is unusable) and record why.

        @param connection: The connection.
        @param error: Why.
        """
        if connection is not self._current:
            return
        self.error = error
        self._explicit = True
        # Unusable from now on, although the connection is lost only later.
        self._onDown(self)
        connection.abort()
