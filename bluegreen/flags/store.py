# -*- test-case-name: tests.test_flags,tests.test_flags_link -*-
"""
L{FlagStore}: one environment's flags in its Redis, with a cache that never
waits (see L{bluegreen.flags.model} for what is kept in Redis).

Every change made through bluegreen is one Lua script
(L{bluegreen.flags.changes.WRITE_SCRIPT}): it happens wholly or not at all.

The cache
=========

The service never waits on Redis to serve traffic: L{FlagStore.view} and
L{FlagStore.values} answer from a cache of the environment's flags, which
is refreshed:

  - when the store connects, and after every reconnection (everything is
    read again and every subscription is made again: messages published
    while disconnected are lost);
  - on the C{bluegreen:flags} channel's messages (changes made by any
    bluegreen, this one included) and on keyspace notifications
    (C{__keyspace@<db>__:<name>}) for every flag name, so a change made by
    anyone (C{redis-cli SET RECENT ON}) shows at once.  On connecting, the
    store reads C{CONFIG GET notify-keyspace-events} and, if keyspace events
    for strings, generic commands and expiry (C{K$gx}, or C{KA}) are not all
    on, turns them on with C{CONFIG SET}, logging what it did.  If C{CONFIG}
    is not allowed (a managed Redis, a renamed command, an ACL), it logs that
    once and reads every flag each L{FlagStore.pollInterval} (1 s) instead;
    it does the same while its subscription connection is down;
  - every C{--flag-refresh} seconds (default 30), as a safety net.

While Redis is down (see L{bluegreen.flags}), reads answer from the cache
and say they are stale (L{FlagView.stale}); writes fail at once with
L{RedisUnavailable}.  Every Redis call has a timeout (C{--redis-timeout},
default 1 s): a Redis that does not answer counts as down.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from bluegreen.flags.cache import FlagCache
from bluegreen.flags.changes import (
    WRITE_SCRIPT,
    keyspaceChannel,
    missingEvents,
    parseEntry,
    scriptArguments,
)
from bluegreen.flags.link import (
    Connection,
    LinkDown,
    RedisLink,
    RedisReplyError,
    asText,
)
from bluegreen.flags.model import (
    CHANNEL,
    DEFAULT_NAMES,
    HISTORY,
    HISTORY_LIMIT,
    NAME_RE,
    REGISTRY,
    ChangeObserver,
    FlagChange,
    FlagError,
    FlagView,
    RedisUnavailable,
    isOn,
    validateName,
    validateValue,
)
from bluegreen.flags.target import RedisTarget, TrustRoot, redisText


class FlagStore(Service):
    """
    One environment's flags in its Redis, with a cache that never waits.

    Start with L{start} (or as a service); L{stop} closes the connections.
    Reads: L{view} and L{cached} (the cache, never waiting), L{get}
    (Redis).  Writes: L{set}, L{unset}.  Every Redis call has a timeout of
    L{timeout} seconds; a failure raises L{RedisUnavailable}.

    @ivar env: The environment, e.g. C{"blue"}.
    @ivar target: Its Redis.
    @ivar reactor: Connects and keeps time.
    @ivar clock: Keeps time (the reactor, unless replaced).
    @ivar timeout: Seconds allowed for each Redis call and connection.
    @ivar refresh: Seconds between full re-reads (C{--flag-refresh}).
    @ivar pollInterval: Seconds between re-reads when changes cannot be
        watched (no keyspace notifications, or no subscription).
    @ivar trustRoot: The CA trusted for C{rediss://} (platform's if L{None}).
    @ivar historyLimit: The most changes kept in Redis.
    @ivar configured: The names given with C{--flag}.
    @ivar watch: C{False} for a one-shot client (see L{__init__}).
    """

    _log = Logger()

    def __init__(
        self,
        env: str,
        target: RedisTarget,
        reactor: IReactorTCP,
        names: Iterable[str] = DEFAULT_NAMES,
        timeout: float = 1.0,
        refresh: float = 30.0,
        pollInterval: float = 1.0,
        trustRoot: TrustRoot | None = None,
        watch: bool = True,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param env: The environment's name.
        @param target: Its Redis.
        @param reactor: Connects (and keeps time, unless C{clock} is given).
        @param names: The flags configured with C{--flag} (validated).
        @param timeout: Seconds allowed for each Redis call.
        @param refresh: Seconds between full re-reads.
        @param pollInterval: Seconds between re-reads while changes cannot
            be watched.
        @param trustRoot: The CA to trust for C{rediss://}.
        @param watch: C{False} for a one-shot client (the CLI's C{--redis}):
            no subscription, no C{CONFIG}, no periodic reads; the cache
            holds what was read at connection and written since.
        @param clock: Keeps time (timeouts, delays, refreshes); the reactor
            if L{None}.
        """
        self.env = env
        self.watch = watch
        self.target = target
        self.reactor = reactor
        self.clock = IReactorTime(reactor) if clock is None else clock
        self.timeout = timeout
        self.refresh = refresh
        self.pollInterval = pollInterval
        self.trustRoot = trustRoot
        self.historyLimit = HISTORY_LIMIT
        self.configured = tuple(validateName(name) for name in names)
        self.cache = FlagCache(env, self.configured, self.clock)
        common = (target, reactor, self.clock, timeout, trustRoot)
        down = (self._attemptFailed, self._linkDown)
        self._commands = RedisLink(*common, self._prepare, *down)
        self._subscriber = RedisLink(*common, self._subscribeAll, *down, self._message)
        self._connected = False
        self._loaded = False
        self._notifications: bool | None = None
        self._subscribed: set[str] = set()
        self._lastRefresh: float | None = None
        self._outageSince: float | None = None
        self._pollingLogged = False
        self._refreshError: str | None = None
        self._refreshing: Deferred[None] | None = None
        self._again: Deferred[None] | None = None
        self._loop: LoopingCall | None = None
        self._started: Deferred[None] | None = None
        self._active = False

    def __repr__(self) -> str:
        """
        The environment, its Redis and whether it is connected.
        """
        state = "connected" if self._connected else f"down: {self.error}"
        return f"<FlagStore {self.env} at {self.target.describe()} ({state})>"

    # State

    @property
    def connected(self) -> bool:
        """
        C{True} while Redis is reachable and the cache is being kept
        current.
        """
        return self._connected

    @property
    def stale(self) -> bool:
        """
        C{True} when the cache may be out of date: Redis is unreachable, or
        has not been read yet.
        """
        return not (self._connected and self._loaded)

    @property
    def error(self) -> str | None:
        """
        Why Redis cannot be reached (e.g. C{"connection refused"}), or
        L{None} while connected.
        """
        if self._connected:
            return None
        return self._commands.error

    @property
    def updated(self) -> float | None:
        """
        When the cache was last known to match Redis (POSIX time), or
        L{None} if never.
        """
        return self.cache.updated

    @property
    def watching(self) -> bool:
        """
        C{True} while changes arrive by notification; else the flags are
        read every L{pollInterval} seconds.
        """
        return bool(
            self._connected and self._notifications and self._subscriber.confirmed
        )

    @property
    def names(self) -> list[str]:
        """
        The flags of this environment: the configured names, those in the
        registry and any seen with a value, sorted.
        """
        return self.cache.names

    def view(self, name: str) -> FlagView:
        """
        A flag as the cache knows it (never waits).

        @param name: The flag.
        @return: Its view; a flag never seen is off.
        """
        return self.cache.view(name, self.stale)

    def cached(self) -> dict[str, str]:
        """
        The cached values of the flags that are set (a copy).
        """
        return dict(self.cache.values)

    @property
    def values(self) -> Mapping[str, str]:
        """
        The cached values of the flags that are set: a read-only view, not
        a copy (the proxy stamps every request from it).
        """
        return self.cache.values

    def subscribe(self, observer: ChangeObserver) -> None:
        """
        Call C{observer(change)} with every L{FlagChange} seen: own writes,
        other bluegreens' (from their messages) and values found changed in
        Redis (C{who} L{OUTSIDE}).
        """
        self.cache.subscribe(observer)

    def describeUnavailable(self, reason: str | None = None) -> str:
        """
        The message of L{RedisUnavailable} for this store.

        @param reason: Why (the current L{error} if L{None}).
        """
        why = reason or self._commands.error or "not connected yet"
        return f"cannot reach Redis for {self.env} at {self.target.describe()}: {why}"

    # Service

    def startService(self) -> None:
        """
        Start connecting (see L{start}).
        """
        super().startService()
        self.start()

    def stopService(self) -> Deferred[None]:
        """
        Close the connections (see L{stop}).
        """
        super().stopService()
        return self.stop()

    def start(self) -> Deferred[None]:
        """
        Connect, read the flags and keep the cache current, reconnecting
        whenever needed until L{stop}.

        @return: A Deferred that fires (never fails) once the first attempt
            is over: the flags are read, or Redis is known unreachable.
        """
        if self._started is None:
            self._started = Deferred()
            self._active = True
            self._commands.start()
            if self.watch:
                interval = min(self.pollInterval, self.refresh)
                self._loop = LoopingCall(self._tick)
                self._loop.clock = self.clock
                self._loop.start(interval, now=False).addErrback(
                    lambda f: self._log.failure("flag refresh loop failed", f)
                )
                self._subscriber.start()
        d: Deferred[None] = Deferred()
        if self._started.called:
            d.callback(None)
        else:
            self._started.addCallback(lambda _: d.callback(None))
        return d

    def stop(self) -> Deferred[None]:
        """
        Stop reconnecting and refreshing; close the connections.

        @return: A Deferred that fires once they are closed.
        """
        self._active = False
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._connected = False
        self._started = None
        done = DeferredList([self._commands.stop(), self._subscriber.stop()])
        return done.addCallback(lambda _: None)

    def _firstAttemptOver(self) -> None:
        """
        Fire L{start}'s Deferred, the first time.
        """
        started = self._started
        if started is not None and not started.called:
            started.callback(None)

    # Links

    def _attemptFailed(self, link: RedisLink) -> None:
        """
        A connection attempt failed: the first time in an outage, say so.
        """
        if link is not self._commands:
            return
        self._connected = False
        if self._outageSince is None:
            self._outageSince = self.clock.seconds()
            self._log.warn(
                "Redis for {env} at {redis} is unreachable: {reason}; "
                "serving cached flags",
                env=self.env,
                redis=self.target.describe(),
                reason=link.error,
                event="flags-redis-down",
            )
        self._firstAttemptOver()

    def _linkDown(self, link: RedisLink) -> None:
        """
        A connection is unusable: stale cache, or no subscription.
        """
        if link is self._commands:
            self._connected = False
        else:
            self._subscribed.clear()

    async def _prepare(self, connection: Connection) -> None:
        """
        A new command connection: check it answers, turn on keyspace
        notifications if needed, read every flag; then it is usable.
        """
        await connection.execute("PING")
        if self.watch:
            await self._checkNotifications(connection)
        await self._read(connection)
        if not self._commands.confirm(connection):
            return
        self._connected = True
        if self._outageSince is not None:
            down = self.clock.seconds() - self._outageSince
            self._outageSince = None
            self._log.info(
                "Redis for {env} at {redis} is reachable again after {down} s; "
                "flags read again ({count} set)",
                env=self.env,
                redis=self.target.describe(),
                down=f"{down:.1f}",
                count=len(self.cache.values),
                event="flags-redis-up",
            )
        elif not self._loaded:
            self._log.info(
                "flags for {env} from Redis at {redis}: {count} set",
                env=self.env,
                redis=self.target.describe(),
                count=len(self.cache.values),
                event="flags-redis-connected",
            )
        self._loaded = True
        self._firstAttemptOver()

    async def _checkNotifications(self, connection: Connection) -> None:
        """
        Read C{notify-keyspace-events}; turn on the events the store needs,
        or fall back to polling (logged once) if C{CONFIG} is not allowed.
        """
        try:
            reply = await connection.execute("CONFIG", "GET", "notify-keyspace-events")
            events = (
                asText(reply[1]) if isinstance(reply, list) and len(reply) > 1 else ""
            )
            missing = missingEvents(events)
            if missing:
                await connection.execute(
                    "CONFIG", "SET", "notify-keyspace-events", events + missing
                )
                self._log.info(
                    "Redis for {env} at {redis}: turned on keyspace "
                    "notifications (notify-keyspace-events {new!r}, was {old!r}) "
                    "so that changes made outside bluegreen show at once",
                    env=self.env,
                    redis=self.target.describe(),
                    new=events + missing,
                    old=events,
                    event="flags-notifications-on",
                )
        except RedisReplyError as e:
            self._notifications = False
            if not self._pollingLogged:
                self._pollingLogged = True
                self._log.warn(
                    "Redis for {env} at {redis} does not allow CONFIG "
                    "({error}): cannot turn on keyspace notifications, so "
                    "the flags are read every {poll} s to see changes made "
                    "outside bluegreen",
                    env=self.env,
                    redis=self.target.describe(),
                    error=redisText(e),
                    poll=f"{self.pollInterval:g}",
                    event="flags-polling",
                )
            return
        self._notifications = True

    async def _subscribeAll(self, connection: Connection) -> None:
        """
        A new pub/sub connection: subscribe to the change channel and every
        flag's keyspace channel; then read everything again (messages sent
        while disconnected are lost).
        """
        names = set(self.names)
        channels = [CHANNEL, keyspaceChannel(self.target.db, REGISTRY)]
        channels += [keyspaceChannel(self.target.db, name) for name in sorted(names)]
        await connection.subscribe(channels)
        if not self._subscriber.confirm(connection):
            return
        self._subscribed = names
        missed = set(self.names) - names
        if missed:
            self._watch(missed)
        if self._connected:
            self._scheduleRefresh()

    def _watch(self, names: Iterable[str]) -> None:
        """
        Subscribe to the keyspace channels of new flag names.
        """
        connection = self._subscriber.connection
        new = [n for n in names if n not in self._subscribed]
        if not new or connection is None:
            return
        self._subscribed.update(new)
        channels = [keyspaceChannel(self.target.db, name) for name in new]
        d = Deferred.fromCoroutine(connection.subscribe(channels))
        d.addErrback(lambda f: None)

    def _learn(self, names: Iterable[str]) -> None:
        """
        Add flag names (e.g. from the registry), watching the new ones.
        """
        new = self.cache.learn(names)
        if new:
            self._watch(new)

    # Messages

    def _message(self, channel: str, message: str) -> None:
        """
        A change message or a keyspace notification.
        """
        if channel == CHANNEL:
            self._changeMessage(message)
            return
        prefix = keyspaceChannel(self.target.db, "")
        if not channel.startswith(prefix):
            return
        name = channel[len(prefix) :]
        if name == REGISTRY:
            self._scheduleRefresh()
        elif NAME_RE.fullmatch(name):
            Deferred.fromCoroutine(self._reread(name)).addErrback(lambda f: None)

    def _changeMessage(self, message: str) -> None:
        """
        A change published by a bluegreen (maybe this one).
        """
        try:
            entry = json.loads(message)
            if entry.get("db") != self.target.db:
                return
            change, changeId = parseEntry(entry, self.env)
        except (ValueError, TypeError, AttributeError, KeyError):
            self._log.debug("ignored a malformed message: {message!r}", message=message)
            return
        self._apply(change, changeId)

    async def _reread(self, name: str) -> None:
        """
        Read one flag again (a keyspace notification said it changed).
        """
        connection = self._commands.connection
        if connection is None or not self._connected:
            return
        mark = self.cache.mark
        value = await connection.get(name)
        self._found({name: value}, mark)

    # Cache updates

    def _apply(self, change: FlagChange, changeId: str) -> None:
        """
        Apply a change made through bluegreen (ours or another's), once.
        """
        self._learn([change.flag])
        self.cache.apply(change, changeId)

    def _found(self, values: Mapping[str, str | None], mark: int) -> None:
        """
        Apply values read from Redis; once loaded, report the differences.
        """
        self.cache.found(values, mark, self._loaded)

    # Refreshing

    def _tick(self) -> None:
        """
        Every L{pollInterval}: read the flags if they cannot be watched, or
        if L{refresh} seconds have passed.
        """
        if not self._connected:
            return
        due = (
            self._lastRefresh is None
            or self.clock.seconds() - self._lastRefresh >= self.refresh - 1e-6
        )
        if due or not self.watching:
            self._scheduleRefresh()

    def _scheduleRefresh(self) -> Deferred[None]:
        """
        Read every flag, now or, if a read is under way, once it ends.

        @return: A Deferred firing when a read begun from now has ended
            (never failing).
        """
        if self._refreshing is not None:
            if self._again is None:
                self._again = Deferred()
            waiter: Deferred[None] = Deferred()
            self._again.addBoth(lambda _: waiter.callback(None))
            return waiter
        d = Deferred.fromCoroutine(self._backgroundRefresh())
        self._refreshing = d
        waiter = Deferred()

        def done(_: object) -> None:
            """
            The read ended: wake its waiters, start the one asked for meanwhile.
            """
            self._refreshing = None
            waiter.callback(None)
            again, self._again = self._again, None
            if again is not None and self._active:
                self._scheduleRefresh().chainDeferred(again)
            elif again is not None:
                again.callback(None)

        d.addBoth(done)
        return waiter

    async def _backgroundRefresh(self) -> None:
        """
        Read everything again; log a refused read once.
        """
        connection = self._commands.connection
        if connection is None or not self._connected:
            return
        try:
            await self._read(connection)
        except LinkDown:
            return
        except RedisReplyError as e:
            message = str(e)
            if message != self._refreshError:
                self._refreshError = message
                self._log.warn(
                    "cannot read the flags from Redis for {env} at {redis}: {error}",
                    env=self.env,
                    redis=self.target.describe(),
                    error=message,
                )
            return
        self._refreshError = None

    async def _read(self, connection: Connection) -> None:
        """
        Read the registry and every flag's value into the cache.
        """
        mark = self.cache.mark
        self._learn(await connection.smembers(REGISTRY))
        names = self.names
        values = await connection.mget(names)
        self._found(dict(zip(names, values, strict=True)), mark)
        self._lastRefresh = self.clock.seconds()

    def refreshNow(self) -> Deferred[None]:
        """
        Read every flag from Redis now.

        @return: A Deferred firing when done; failing with
            L{RedisUnavailable} if Redis cannot be reached.
        """
        try:
            self._ready()
        except RedisUnavailable as e:
            failed: Deferred[None] = Deferred()
            failed.errback(Failure(e))
            return failed
        return self._scheduleRefresh()

    # Calls

    def _ready(self) -> Connection:
        """
        The usable command connection.

        @raise RedisUnavailable: If there is none (at once: writes never
            wait for Redis to come back).
        """
        connection = self._commands.connection
        if not self._connected or connection is None:
            raise RedisUnavailable(self.describeUnavailable())
        return connection

    def _unavailable(self, error: LinkDown) -> RedisUnavailable:
        """
        @return: The L{RedisUnavailable} for a command that got no answer.
        """
        return RedisUnavailable(self.describeUnavailable(error.reason))

    def _refused(self, what: str, error: RedisReplyError) -> RedisUnavailable:
        """
        @param what: What Redis would not do, e.g. C{"to read RECENT"}.
        @param error: Its error reply.
        @return: The L{RedisUnavailable} for a command Redis answered with an
            error.
        """
        return RedisUnavailable(
            f"Redis for {self.env} at {self.target.describe()} refused {what}: {error}"
        )

    # Operations

    async def get(self, name: str) -> str | None:
        """
        Read a flag from Redis (and update the cache with it, if it is one
        of this environment's flags).  Any string key can be read, also one
        bluegreen never wrote nor registered (C{redis-cli SET FOO 007}).

        @param name: The flag.
        @return: Its value, or L{None} if it is not set.
        @raise FlagError: For an invalid name.
        @raise RedisUnavailable: If Redis cannot be reached (use L{view}
            for the cached value then).
        """
        validateName(name)
        connection = self._ready()
        mark = self.cache.mark
        try:
            value = await connection.get(name)
        except LinkDown as e:
            raise self._unavailable(e) from None
        except RedisReplyError as e:
            raise self._refused(f"to read {name}", e) from None
        if self.cache.knows(name):
            self._found({name: value}, mark)
        return value

    async def read(self, name: str) -> FlagView:
        """
        A flag as Redis has it now, or as the cache knows it (and marked
        stale) if Redis cannot be reached: never fails for that.

        @param name: The flag (any string key, registered or not).
        @return: Its view.
        @raise FlagError: For an invalid name.
        """
        try:
            value = await self.get(name)
        except RedisUnavailable:
            view = self.view(name)
            return FlagView(view.value, view.on, True)
        return FlagView(value, isOn(value), False)

    async def set(self, name: str, value: str, who: str) -> FlagChange:
        """
        Set a flag (the exact string given; see
        L{bluegreen.flags.model.normalise} for on/off).

        @param name: The flag.
        @param value: Its new value.
        @param who: Who is changing it, for the history.
        @return: The change (with the old value).
        @raise FlagError: For an invalid name or value.
        @raise RedisUnavailable: If Redis cannot be reached.
        """
        return await self._write(validateName(name), validateValue(value), who)

    async def unset(self, name: str, who: str) -> FlagChange:
        """
        Remove a flag (its name stays in the registry: it is off).

        @param name: The flag.
        @param who: Who is removing it, for the history.
        @return: The change (with the old value).
        @raise FlagError: For an invalid name.
        @raise RedisUnavailable: If Redis cannot be reached.
        """
        return await self._write(validateName(name), None, who)

    async def _write(self, name: str, value: str | None, who: str) -> FlagChange:
        """
        Run the change script for C{set} (C{value}) or C{unset} (L{None}).
        """
        connection = self._ready()
        when = self.clock.seconds()
        changeId = uuid.uuid4().hex
        args = scriptArguments(
            when,
            self.env,
            name,
            value,
            who,
            self.target.db,
            changeId,
            self.historyLimit,
        )
        try:
            old = await connection.eval(WRITE_SCRIPT, [name, REGISTRY, HISTORY], args)
        except LinkDown as e:
            raise self._unavailable(e) from None
        except RedisReplyError as e:
            if "WRONGTYPE" in str(e):
                raise FlagError(
                    f"{name} in Redis for {self.env} is not a string key; not changed"
                ) from None
            raise self._refused("the change", e) from None
        change = FlagChange(when, self.env, name, old, value, who)
        self._apply(change, changeId)
        return change

    async def history(self, limit: int = 50) -> list[FlagChange]:
        """
        The recorded changes, newest first.

        @param limit: How many at most (1 to L{HISTORY_LIMIT}).
        @return: The changes (malformed entries are skipped).
        @raise RedisUnavailable: If Redis cannot be reached.
        """
        if not 1 <= limit <= HISTORY_LIMIT:
            raise FlagError(f"limit {limit} is not between 1 and {HISTORY_LIMIT}")
        connection = self._ready()
        try:
            entries = await connection.lrange(HISTORY, 0, limit - 1)
        except LinkDown as e:
            raise self._unavailable(e) from None
        except RedisReplyError as e:
            raise self._refused("to read the history", e) from None
        changes = []
        for text in entries:
            try:
                changes.append(parseEntry(json.loads(text), self.env)[0])
            except (ValueError, TypeError, KeyError):
                continue
        return changes
