# -*- test-case-name: tests.test_meow -*-
"""
Read a feature flag from the environment's Redis, on every request.

A flag is a plain Redis string key: C{RECENT} = C{ON} is on; a missing key,
C{OFF}, any other value, and a Redis that is down, refuses us or does not
answer within the timeout all mean off.  The page never fails and never
waits long because of Redis.

This is a tiny RESP client over a Twisted endpoint: one short connection per
read (C{AUTH} if the URL has a password, C{SELECT} the database, C{GET} the
key, pipelined), so there is no reconnecting client whose state could go
stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.interfaces import (
    IReactorTCP,
    IReactorTime,
    IReactorUNIX,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

_log = Logger()

#: The value that turns a flag on.
ON = b"ON"


class RedisError(Exception):
    """
    Redis answered with an error reply.
    """


class FlagReactor(IReactorTCP, IReactorUNIX, IReactorTime):
    """
    The reactor interfaces reading a flag uses: a TCP or UNIX connection to
    Redis, and time for the timeout.  Only for the type checker.
    """


@dataclass(frozen=True)
class RedisURL:
    """
    Where the environment's Redis is.

    @ivar host: The host (L{None} for a UNIX socket).
    @ivar port: The TCP port.
    @ivar path: The UNIX socket's path, or L{None}.
    @ivar db: The database number.
    @ivar password: The password, or L{None}.
    """

    host: str | None
    port: int
    path: str | None
    db: int
    password: str | None

    @classmethod
    def parse(cls, url: str) -> RedisURL:
        """
        Parse C{redis://[:password@]host[:port][/db]} or
        C{unix://[:password@]/path[?db=N]}.

        @param url: The URL.
        @return: The parsed URL.
        @raise ValueError: If it is not one of those.
        """
        parts = urlsplit(url)
        password = unquote(parts.password) if parts.password else None
        if parts.scheme == "redis":
            if not parts.hostname:
                raise ValueError(f"no host in Redis URL {url!r}")
            db = parts.path.strip("/") or "0"
            return cls(parts.hostname, parts.port or 6379, None, int(db), password)
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError(f"no socket path in Redis URL {url!r}")
            db = parse_qs(parts.query).get("db", ["0"])[0]
            return cls(None, 0, parts.path, int(db), password)
        raise ValueError(f"not a redis:// or unix:// URL: {url!r}")

    def endpoint(self, reactor: FlagReactor, timeout: float) -> IStreamClientEndpoint:
        """
        @param reactor: Makes the connection.
        @param timeout: The connection timeout.
        @return: An endpoint that connects to this Redis.
        """
        if self.path is not None:
            return UNIXClientEndpoint(reactor, self.path, timeout=timeout)
        assert self.host is not None
        return HostnameEndpoint(reactor, self.host, self.port, timeout=timeout)


def encode(*args: bytes) -> bytes:
    """
    @param args: A command and its arguments.
    @return: The command in RESP.
    """
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class _Commands(Protocol):
    """
    Send some commands, collect as many simple replies (status, error,
    integer, bulk string), then hang up.  L{done} fires with the replies
    (errors as L{RedisError} instances), or fails if the connection is lost
    first; cancelling it aborts the connection.
    """

    def __init__(self, commands: list[tuple[bytes, ...]]) -> None:
        """
        @param commands: The commands.
        """
        self.commands = commands
        self.replies: list[object] = []
        self.buffer = b""
        self.done: Deferred[list[object]] = Deferred(self._cancel)

    def _cancel(self, d: Deferred[list[object]]) -> None:
        """
        Abort the connection.
        """
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def connectionMade(self) -> None:
        """
        Send the commands, pipelined.
        """
        assert self.transport is not None
        self.transport.write(b"".join(encode(*c) for c in self.commands))

    def _parseOne(self) -> tuple[object, bytes] | None:
        """
        @return: One reply and what follows it, or L{None} if incomplete.
        """
        end = self.buffer.find(b"\r\n")
        if end < 0:
            return None
        kind, line, rest = self.buffer[:1], self.buffer[1:end], self.buffer[end + 2 :]
        if kind == b"+":
            return line, rest
        if kind == b"-":
            return RedisError(line.decode("utf-8", "replace")), rest
        if kind == b":":
            return int(line), rest
        if kind == b"$":
            length = int(line)
            if length < 0:
                return None, rest
            if len(rest) < length + 2:
                return None
            return rest[:length], rest[length + 2 :]
        raise RedisError(f"unexpected reply type {kind!r}")

    def dataReceived(self, data: bytes) -> None:
        """
        Collect replies; when all are in, hang up and fire L{done}.
        """
        assert self.transport is not None
        self.buffer += data
        while len(self.replies) < len(self.commands):
            try:
                parsed = self._parseOne()
            except (ValueError, RedisError) as e:
                transport: Any = self.transport
                transport.abortConnection()
                if not self.done.called:
                    self.done.errback(Failure(RedisError(str(e))))
                return
            if parsed is None:
                return
            reply, self.buffer = parsed
            self.replies.append(reply)
        self.transport.loseConnection()
        if not self.done.called:
            self.done.callback(self.replies)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fail L{done} if not every reply came.
        """
        if not self.done.called:
            self.done.errback(reason)


class FlagReader:
    """
    Reads flags from one Redis, with a timeout, treating every failure as
    off (logged once when Redis goes away, and once when it is back).

    @ivar url: Where Redis is.
    @ivar timeout: Seconds a read may take in all.
    """

    def __init__(
        self, reactor: FlagReactor, url: RedisURL, timeout: float = 0.5
    ) -> None:
        """
        @param reactor: Makes connections and times out.
        @param url: Where Redis is.
        @param timeout: Seconds a read may take in all.
        """
        self.reactor = reactor
        self.url = url
        self.timeout = timeout
        self._failing = False

    async def _get(self, name: str) -> object:
        """
        Read one key.
        """
        commands: list[tuple[bytes, ...]] = []
        if self.url.password is not None:
            commands.append((b"AUTH", self.url.password.encode("utf-8")))
        commands.append((b"SELECT", b"%d" % self.url.db))
        commands.append((b"GET", name.encode("utf-8")))
        protocol = _Commands(commands)
        endpoint = self.url.endpoint(self.reactor, self.timeout)
        await endpoint.connect(_OneShot(protocol))
        replies = await protocol.done
        for reply in replies:
            if isinstance(reply, RedisError):
                raise reply
        return replies[-1]

    async def isOn(self, name: str) -> bool:
        """
        @param name: The flag, e.g. C{"RECENT"}.
        @return: Whether Redis says C{name} = C{ON}; C{False} when it
            cannot be read within the timeout.
        """
        d = Deferred.fromCoroutine(self._get(name))
        d.addTimeout(self.timeout, self.reactor)
        try:
            value = await d
        except Exception as e:
            if not self._failing:
                self._failing = True
                _log.warn(
                    "Redis unavailable, flag {flag} is off: {error}",
                    flag=name,
                    error=repr(e),
                )
            return False
        if self._failing:
            self._failing = False
            _log.info("Redis is back")
        return value == ON


class _OneShot(Factory):
    """
    Makes one given protocol, quietly.
    """

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        """
        @param protocol: The protocol to connect.
        """
        self.one = protocol

    def buildProtocol(self, addr: object) -> Protocol:
        """
        @return: The protocol.
        """
        self.one.factory = self
        return self.one
