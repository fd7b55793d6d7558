# -*- test-case-name: tests.test_flags -*-
"""
Feature flags kept in each environment's Redis, read through txredisapi.

A flag is a plain Redis string key, exactly as the application reads it:
C{RECENT} = C{ON} is on; a missing key, C{OFF} or any other value is off
(L{isOn}).  Values are stored and returned as strings, never converted
(C{"007"} stays C{"007"}).  Names match L{NAME_RE}; values are at most
L{MAX_VALUE} bytes of UTF-8.

Each environment (C{--green-redis URL}, C{--blue-redis URL}) has its own
Redis and its own L{FlagStore}; L{FlagService} holds the stores of the
environments that have one.

What is kept in Redis
=====================

  - the flags themselves: one string key per flag (C{SET RECENT ON});
  - C{bluegreen:flags}, a set: the names of the flags bluegreen has written
    (the "registry"; a name stays there after C{unset}).  The flags of an
    environment are the names in its registry plus the names configured
    with C{--flag NAME} (default: C{RECENT});
  - C{bluegreen:flags:history}, a list: one JSON object per change made
    through bluegreen (C{when}, C{env}, C{flag}, C{old}, C{new}, C{who}),
    newest first, capped at L{HISTORY_LIMIT} entries.  Changes made
    directly in Redis (C{redis-cli SET}) are not recorded there.

Every change made through bluegreen is one Lua script (C{EVAL}): read the
old value, C{SET} or C{DEL} the key, C{SADD} the name to the registry,
C{LPUSH} the history entry and C{LTRIM} the list, and C{PUBLISH} the entry on
the C{bluegreen:flags} channel (with the database number, as channels are
shared by all databases).  It happens wholly or not at all.

The cache
=========

The service never waits on Redis to serve traffic: L{FlagStore.view} and
L{FlagService.flagsFor} answer from a cache of each environment's flags,
which is refreshed:

  - when the store connects, and after every reconnection (everything is
    read again and every subscription is made again: txredisapi restores
    neither, and messages published while disconnected are lost);
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

When Redis is down
==================

Every Redis call has a timeout (C{--redis-timeout}, default 1 s): a Redis
that does not answer (txredisapi alone would wait forever) counts as down,
and its connection is dropped.  While down, reads answer from the cache
(flags never seen are off) and say they are stale
(L{FlagView.stale}); writes fail at once with L{RedisUnavailable}
("cannot reach Redis for blue at redis://127.0.0.1:6380/0: connection
refused").  The store reconnects by itself with a growing delay (0.5 s,
doubling, at most 5 s), logs one warning per outage ("Redis for blue at
... is unreachable: connection refused; serving cached flags") and one
line when it is back, never one per request.

Observers (L{FlagService.subscribe}) are told of every change seen: those
made through this service, those other bluegreens publish (with their
C{who}), and values found changed in Redis by notifications or refreshes
(C{who} is then L{OUTSIDE}).

txredisapi imports the global reactor when it is imported, and
L{bluegreen.service.tap} imports this module while twistd parses its options,
before it has chosen a reactor: so txredisapi is imported only inside
functions here, never at module level.  The connections are made and
remade by this module (one for commands, one for pub/sub), with
txredisapi's protocols on them (C{convertNumbers=False}, C{utf-8}):
txredisapi's own reconnecting pool waits forever while Redis is down and
logs every attempt.
"""

from __future__ import annotations

import errno
import json
import os
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from attrs import field, frozen
from twisted.application.service import MultiService, Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    succeed,
)
from twisted.internet.defer import (
    TimeoutError as DeferredTimeoutError,
)
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import (
    ConnectError,
    ConnectionClosed,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.ssl import Certificate
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from bluegreen.environment import Environment
from bluegreen.proxy.pool import endpointFor
from bluegreen.tls import describeTLSError, isTLSError

#: A valid flag name: letters, digits, C{_ - . :}; 1 to 128 characters.
NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

#: The largest value, in bytes of UTF-8.
MAX_VALUE = 1024

#: The flags of an environment when no C{--flag} is given: the workshop's.
DEFAULT_NAMES = ("RECENT",)

#: The Redis set of the names of the flags bluegreen has written.
REGISTRY = "bluegreen:flags"

#: The Redis list of recorded changes, newest first.
HISTORY = "bluegreen:flags:history"

#: The pub/sub channel every change made through bluegreen is published on.
CHANNEL = "bluegreen:flags"

#: The most changes kept in L{HISTORY}.
HISTORY_LIMIT = 1000

#: The C{who} of a change found in Redis rather than made through bluegreen
#: (C{redis-cli SET}, a change made while this service was disconnected).
OUTSIDE = "outside bluegreen"

#: Values L{normalise} turns into C{ON} and C{OFF}.
_ON_WORDS = frozenset(("on", "true", "1", "yes"))
_OFF_WORDS = frozenset(("off", "false", "0", "no"))

#: Keyspace event classes the store needs: strings (C{SET}), generic
#: commands (C{DEL}, C{EXPIRE}, C{RENAME}) and expiry.
_EVENT_CLASSES = "$gx"

#: What C{A} stands for in C{notify-keyspace-events}.
_ALL_CLASSES = "g$lshzxetd"

#: The change script.  KEYS: the flag, L{REGISTRY}, L{HISTORY}.  ARGV:
#: C{set} or C{unset}, the value, the history entry before and after its
#: C{old} value (JSON, built by Python), the channel, the history cap.
#: The message is published first: subscribers then get it before the
#: keyspace notification of the same change, on the same connection, so a
#: change made through bluegreen is never taken for one made outside.
_WRITE_SCRIPT = """\
local old = redis.call('GET', KEYS[1])
local entry = ARGV[3] .. (old and cjson.encode(old) or 'null') .. ARGV[4]
redis.call('PUBLISH', ARGV[5], entry)
if ARGV[1] == 'set' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('LPUSH', KEYS[3], entry)
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
return old
"""


class FlagError(ValueError):
    """
    Invalid input (a flag name, a value, an environment); the message says
    why, e.g. C{"invalid flag name 'a b': use letters, digits, _ - . : (at
    most 128 characters)"}.
    """


class NoRedis(FlagError):
    """
    The environment has no Redis, so it has no flags (which is not an
    error) and none can be changed (which is).
    """

    def __init__(self, env: str) -> None:
        """
        @param env: The environment, e.g. C{"blue"}.
        """
        super().__init__(f"{env} has no Redis (start bluegreen with --{env}-redis URL)")
        self.env = env


class RedisUnavailable(Exception):
    """
    An environment's Redis could not be reached, did not answer in time or
    refused a command, e.g. C{"cannot reach Redis for blue at
    redis://127.0.0.1:6380/0: connection refused"} (or C{": timeout after
    1 s"}, C{": authentication failed (...)"}...).  The message never holds
    a password.

    A change that failed with a timeout or a lost connection may still
    have been made (the command may have reached Redis): read the flag
    again, or look at the history, once Redis is back.
    """


def validateName(name: str) -> str:
    """
    Check a flag name.

    @param name: The name.
    @return: C{name}.
    @raise FlagError: Unless it is 1 to 128 letters, digits, C{_ - . :}.
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise FlagError(
            f"invalid flag name {name!r}: use letters, digits, _ - . : "
            "(at most 128 characters)"
        )
    return name


def validateValue(value: str) -> str:
    """
    Check a flag value (any text of at most L{MAX_VALUE} bytes of UTF-8).

    @param value: The value.
    @return: C{value}.
    @raise FlagError: If it is not text or is too long.
    """
    if not isinstance(value, str):
        raise FlagError(f"a flag value is text, not {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise FlagError("the value is not valid Unicode text") from None
    if size > MAX_VALUE:
        raise FlagError(f"value is {size} bytes; at most {MAX_VALUE}")
    return value


def normalise(value: str) -> str:
    """
    Turn an operator's on/off word into what the application reads.

    @param value: C{on}, C{true}, C{1}, C{yes} or C{off}, C{false}, C{0},
        C{no}, in any case and with surrounding spaces.
    @return: C{"ON"} or C{"OFF"}.
    @raise FlagError: For anything else.
    """
    word = value.strip().lower() if isinstance(value, str) else value
    if word in _ON_WORDS:
        return "ON"
    if word in _OFF_WORDS:
        return "OFF"
    raise FlagError(f"{value!r} is not on or off (use --raw to store any value)")


def isOn(value: str | None) -> bool:
    """
    Whether a flag's value means on: exactly C{"ON"}, as the application
    reads it (C{"on"}, C{"OFF"}, a missing key... are off).
    """
    return value == "ON"


def readPasswordFile(path: str) -> str:
    """
    Read a Redis password from a file (C{--redis-password-file}).

    @param path: The file.
    @return: Its content without surrounding white space.
    @raise ValueError: If it cannot be read or is empty.
    """
    try:
        with open(path, encoding="utf-8") as f:
            password = f.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read {path!r}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path!r} is not UTF-8 text") from None
    if not password:
        raise ValueError(f"{path!r} is empty")
    return password


_URL_FORMS = (
    "redis://[user:password@]host:port/db, rediss:// (TLS) or unix:///path?db=0"
)


def _maskURL(url: str) -> str:
    """
    C{url} with any password replaced by C{***}, for messages.
    """
    return re.sub(r"(://[^:/@]*:).*@", r"\1***@", url)


@frozen
class RedisTarget:
    """
    Where an environment's Redis is: parsed from C{--green-redis} or
    C{--blue-redis}.

    @ivar scheme: C{"redis"}, C{"rediss"} (TLS) or C{"unix"}.
    @ivar host: The host name or IP address (L{None} for C{unix}).
    @ivar port: The TCP port (L{None} for C{unix}).
    @ivar path: The socket path (C{unix} only).
    @ivar db: The database number.
    @ivar username: The ACL user name, or L{None} (the default user).
    @ivar password: The password, or L{None}; never shown by L{describe}
        or C{repr}.
    """

    scheme: str
    host: str | None
    port: int | None
    path: str | None
    db: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        """
        C{True} for C{rediss://}.
        """
        return self.scheme == "rediss"

    @classmethod
    def parse(cls, url: str, password: str | None = None) -> RedisTarget:
        """
        Parse a Redis URL: C{redis://[user:password@]host:port/db} (port
        6379 and database 0 if left out), C{rediss://} for TLS, or
        C{unix://[user:password@]/path?db=0}.

        @param url: The URL.
        @param password: The password to use if the URL has none (from
            C{--redis-password-file}).
        @return: The target.
        @raise ValueError: Saying what is wrong (the password is never in
            the message).
        """
        shown = _maskURL(url)
        text = url.strip()
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 (raises ValueError for a bad port)
        except ValueError as e:
            raise ValueError(f"{shown!r} is not a valid URL ({e})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"{shown!r} is not a Redis URL: use {_URL_FORMS}")
        if parts.fragment:
            raise ValueError(f"{shown!r}: a Redis URL has no #fragment")
        username = unquote(parts.username) if parts.username else None
        urlPassword = unquote(parts.password) if parts.password else None
        secret = urlPassword if urlPassword is not None else (password or None)
        if scheme == "unix":
            return cls._parseUnix(shown, parts.path, parts.query, username, secret)
        host = parts.hostname
        if not host:
            raise ValueError(f"{shown!r} has no host (e.g. redis://127.0.0.1:6379/0)")
        if parts.query:
            raise ValueError(
                f"{shown!r}: unexpected query {parts.query!r}; the database "
                "is the path (redis://host:port/db)"
            )
        port = parts.port if parts.port is not None else 6379
        if not 0 < port < 65536:
            raise ValueError(f"{shown!r}: {port} is not a TCP port number (1-65535)")
        dbText = parts.path.strip("/")
        db = cls._db(shown, dbText or "0")
        return cls(scheme, host, port, None, db, username, secret)

    @classmethod
    def _parseUnix(
        cls,
        shown: str,
        path: str,
        query: str,
        username: str | None,
        password: str | None,
    ) -> RedisTarget:
        """
        Parse the rest of a C{unix://} URL.
        """
        if not path.startswith("/") or path == "/":
            raise ValueError(
                f"{shown!r}: give the socket's absolute path, e.g. "
                "unix:///run/redis/redis.sock?db=0"
            )
        db = 0
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key != "db":
                raise ValueError(f"{shown!r}: unknown parameter {key!r} (only db)")
            db = cls._db(shown, value)
        return cls("unix", None, None, unquote(path), db, username, password)

    @staticmethod
    def _db(shown: str, text: str) -> int:
        """
        A database number.

        @raise ValueError: If C{text} is not one.
        """
        if not (text.isascii() and text.isdigit()) or len(text) > 9:
            raise ValueError(f"{shown!r}: {text!r} is not a database number (e.g. 0)")
        return int(text)

    def describe(self) -> str:
        """
        The URL without the password, e.g. C{redis://127.0.0.1:6380/0},
        C{rediss://alice@redis.example:6380/2}, C{unix:///run/r.sock?db=0}.
        """
        user = f"{self.username}@" if self.username else ""
        if self.scheme == "unix":
            return f"unix://{user}{self.path}?db={self.db}"
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{user}{host}:{self.port}/{self.db}"

    def endpoint(
        self,
        reactor: Any,
        timeout: float,
        trustRoot: Certificate | None = None,
    ) -> IStreamClientEndpoint:
        """
        The client endpoint that reaches this Redis.

        @param reactor: The reactor to connect with.
        @param timeout: Seconds allowed to connect.
        @param trustRoot: The CA to trust for C{rediss://} (the platform's
            when L{None}).
        @return: A TCP, TLS or UNIX endpoint.
        """
        if self.scheme == "unix":
            assert self.path is not None
            return UNIXClientEndpoint(reactor, self.path, timeout=timeout)
        assert self.host is not None and self.port is not None
        where = Environment(
            "redis", "", "https" if self.tls else "http", self.host, self.port
        )
        return endpointFor(reactor, where, timeout, trustRoot)


@frozen
class FlagChange:
    """
    One change of a flag.

    @ivar when: POSIX time it was made (or seen, for L{OUTSIDE} changes).
    @ivar env: The environment.
    @ivar flag: The flag's name.
    @ivar old: The value before (L{None}: it was not set).
    @ivar new: The value after (L{None}: it was removed).
    @ivar who: Who made it (a CLI user, an admin token's name, the
        manhole...), or L{OUTSIDE}.
    """

    when: float
    env: str
    flag: str
    old: str | None
    new: str | None
    who: str

    def asJSON(self) -> dict[str, Any]:
        """
        @return: C{{"when", "env", "flag", "old", "new", "who"}}.
        """
        return {
            "when": self.when,
            "env": self.env,
            "flag": self.flag,
            "old": self.old,
            "new": self.new,
            "who": self.who,
        }


@frozen
class FlagView:
    """
    A flag as the cache knows it.

    @ivar value: Its value, or L{None} if not set (or never seen).
    @ivar on: L{isOn} of the value.
    @ivar stale: C{True} if Redis cannot be reached now (or has not been
        read yet), so the value may be out of date.
    """

    value: str | None
    on: bool
    stale: bool


#: Called with every change a store or service sees.
ChangeObserver = Callable[[FlagChange], None]


def describeRedisFailure(reason: Failure | BaseException, timeout: float) -> str:
    """
    Say in a few words why Redis could not be reached.

    @param reason: A failure to connect, or a lost connection.
    @param timeout: The timeout, for the message.
    @return: E.g. C{"connection refused"}, C{"timeout after 1 s"}.
    """
    error = reason.value if isinstance(reason, Failure) else reason
    if isinstance(error, (DeferredTimeoutError, CancelledError, TimeoutError)):
        return f"timeout after {timeout:g} s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, DNSLookupError):
        return "host name could not be resolved"
    if isTLSError(error):
        return describeTLSError(error)
    if isinstance(error, ConnectionClosed):
        return "connection lost"
    if isinstance(error, ConnectError):
        code = getattr(error, "osError", None)
        if code == errno.ENOENT:
            return "no such socket"
        if code == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(code, int):
            return f"cannot connect ({os.strerror(code)})"
        return f"cannot connect ({error})"
    if type(error).__name__ == "ConnectionError":
        # txredisapi's, for commands cut short by a lost connection.
        return "connection lost"
    return f"{type(error).__name__}: {error}"


def _redisText(error: object) -> str:
    """
    The text of an error answer of Redis, without its C{ERR} prefix.
    """
    text = str(error).strip()
    return text[4:].strip() if text.startswith("ERR ") else text


def _describeRedisError(message: str) -> str:
    """
    Turn an error answer of Redis (or txredisapi's message about one) into
    a reason: authentication problems say what to do.
    """
    text = str(message)
    for prefix in ("Redis error: could not auth: ", "Redis error: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    text = _redisText(text).rstrip(".")
    if text.startswith("NOAUTH"):
        return (
            "authentication required (give the password in the URL or "
            "with --redis-password-file)"
        )
    if text.startswith("could not set dbid="):
        return f"cannot select the database ({text.split(': ', 1)[-1]})"
    if "WRONGPASS" in text or "AUTH" in text or "password" in text.lower():
        return f"authentication failed ({text})"
    return f"Redis said: {text}"


# The protocols: txredisapi's, with the hooks a link needs.  They are made on
# first use (see the module docstring about txredisapi and the reactor).


class _LinkProtocolMixin:
    """
    Tells its L{_Link} when the connection is made, when txredisapi's
    handshake (C{AUTH}, C{SELECT}) is done, when it is lost and, for the
    subscriber, of each message.
    """

    link: _Link

    def connectionMade(self) -> None:
        """
        Start txredisapi's handshake and report its end to the link.
        """
        self.link.made(self)
        done = super().connectionMade()  # type: ignore[misc]
        done.addBoth(lambda _: self.link.handshakeDone(self))

    def connectionLost(self, reason: Failure) -> None:
        """
        Let txredisapi fail the commands waiting, then tell the link.
        """
        try:
            super().connectionLost(reason)  # type: ignore[misc]
        finally:
            self.link.lost(self, reason)

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        """
        A pub/sub message: hand it to the link.
        """
        self.link.message(channel, message)


_PROTOCOL_CLASSES: dict[str, type] = {}


def _txredisapi() -> Any:
    """
    Import txredisapi (it imports the global reactor: call this only once
    the reactor is chosen, i.e. when connecting).
    """
    import txredisapi

    return txredisapi


def _protocolClass(role: str) -> type:
    """
    The protocol class of a link: C{"commands"} or C{"subscriber"}.
    """
    if not _PROTOCOL_CLASSES:
        txredisapi = _txredisapi()
        _PROTOCOL_CLASSES["commands"] = type(
            "_CommandsProtocol", (_LinkProtocolMixin, txredisapi.RedisProtocol), {}
        )
        _PROTOCOL_CLASSES["subscriber"] = type(
            "_SubscriberProtocol",
            (_LinkProtocolMixin, txredisapi.SubscriberProtocol),
            {},
        )
    return _PROTOCOL_CLASSES[role]


class _LinkFactory(Factory):
    """
    Builds one connection attempt's txredisapi protocol, and stands in for
    the C{RedisFactory} the protocol expects (C{stopTrying},
    C{connectionError}, C{isLazy}).
    """

    noisy = False
    isLazy = False

    def __init__(self, link: _Link) -> None:
        """
        @param link: The link the protocol reports to.
        """
        self.link = link
        self.error: str | None = None

    def buildProtocol(self, addr: Any) -> Any:
        """
        A txredisapi protocol: strings as UTF-8, numbers never converted.
        """
        link = self.link
        target = link.store.target
        protocol = _protocolClass(link.role)(
            "utf-8",
            password=target.password,
            dbid=target.db if link.role == "commands" and target.db else None,
            convertNumbers=False,
            username=target.username,
        )
        protocol.factory = self
        protocol.link = link
        return protocol

    def stopTrying(self) -> None:
        """
        Called by txredisapi when the handshake fails: the link decides.
        """

    def connectionError(self, why: str) -> None:
        """
        Called by txredisapi with why the handshake failed.
        """
        self.error = why


class _Link:
    """
    One connection to an environment's Redis, remade with a growing delay
    whenever it fails or is lost.

    A connection is I{ready} once txredisapi's handshake is done; the store
    then prepares it (reads the flags, subscribes) and calls L{confirm}.
    Until then a failure counts as a failed attempt, and the next one waits
    longer.

    @ivar role: C{"commands"} or C{"subscriber"}.
    @ivar protocol: The ready connection's protocol, or L{None}.
    @ivar error: Why the last attempt failed or the connection went.
    @ivar confirmed: C{True} once the store has confirmed the connection.
    """

    def __init__(
        self,
        store: FlagStore,
        role: str,
        onReady: Callable[[Any], None],
        onMessage: Callable[[str, str], None] | None = None,
    ) -> None:
        """
        @param store: The store the connection is for.
        @param role: C{"commands"} or C{"subscriber"}.
        @param onReady: Called with each ready protocol.
        @param onMessage: Called with each pub/sub message's channel and text.
        """
        self.store = store
        self.role = role
        self._onReady = onReady
        self._onMessage = onMessage
        self.protocol: Any = None
        self.error: str | None = None
        self.confirmed = False
        self._current: Any = None
        self._running = False
        self._failures = 0
        self._connecting: Deferred[Any] | None = None
        self._timer: IDelayedCall | None = None
        self._timedOut = False
        self._retry: IDelayedCall | None = None
        self._explicit = False
        self._readyAt = 0.0
        self._stopped: list[Deferred[None]] = []

    # Connecting

    def start(self) -> None:
        """
        Connect now (and again whenever needed until L{stop}).
        """
        self._running = True
        self._connect()

    def _connect(self) -> None:
        """
        Make one connection attempt, bounded by the store's timeout.
        """
        self._retry = None
        if not self._running:
            return
        store = self.store
        self._explicit = False
        self._timedOut = False
        self._timer = store.clock.callLater(store.timeout, self._timeout)
        factory = _LinkFactory(self)
        try:
            endpoint = store.target.endpoint(
                store.reactor, store.timeout, store.trustRoot
            )
            d = endpoint.connect(factory)
        except Exception as e:
            d = Deferred()
            d.errback(Failure(e))
        if d.called:
            d.addCallbacks(lambda _: None, self._connectFailed)
            return
        self._connecting = d
        d.addCallbacks(self._connected, self._connectFailed)

    def _connected(self, protocol: Any) -> None:
        """
        The endpoint connected (the handshake goes on).
        """
        self._connecting = None

    def _connectFailed(self, reason: Failure) -> None:
        """
        The endpoint could not connect: record why, retry later.
        """
        self._connecting = None
        self._cancelTimer()
        if not self._running:
            return
        self.error = (
            f"timeout after {self.store.timeout:g} s"
            if self._timedOut
            else describeRedisFailure(reason, self.store.timeout)
        )
        self._attemptFailed()

    def _timeout(self) -> None:
        """
        The attempt took too long: cancel it, or drop its connection.
        """
        self._timer = None
        self._timedOut = True
        if self._connecting is not None:
            self._connecting.cancel()
        elif self._current is not None and self.protocol is None:
            self.fail(self._current, f"timeout after {self.store.timeout:g} s")

    def _cancelTimer(self) -> None:
        """
        Cancel the attempt's timeout, if pending.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _attemptFailed(self) -> None:
        """
        Count a failed attempt, tell the store, retry after a delay.
        """
        self._failures += 1
        self.store._attemptFailed(self)
        self._schedule(self.store.retryDelay(self._failures))

    def _schedule(self, delay: float) -> None:
        """
        Connect again in C{delay} seconds (unless stopped or booked).
        """
        if self._running and self._retry is None:
            self._retry = self.store.clock.callLater(delay, self._connect)

    # From the protocol

    def made(self, protocol: Any) -> None:
        """
        A connection is made; txredisapi's handshake starts.
        """
        self._current = protocol

    def handshakeDone(self, protocol: Any) -> None:
        """
        txredisapi's handshake is over: ready, or it failed.
        """
        if protocol is not self._current or not self._running:
            return
        self._cancelTimer()
        if protocol._ready:
            self.protocol = protocol
            self._readyAt = self.store.clock.seconds()
            self._onReady(protocol)
        else:
            error = protocol.factory.error or "the handshake failed"
            self.fail(protocol, _describeRedisError(error))

    def lost(self, protocol: Any, reason: Failure) -> None:
        """
        A connection is gone: try again (at once if it was confirmed and
        had lived a while, else after the next delay).
        """
        if protocol is not self._current:
            return
        self._current = None
        self.protocol = None
        self._cancelTimer()
        if not self._running:
            waiting, self._stopped = self._stopped, []
            for d in waiting:
                d.callback(None)
            return
        wasConfirmed, self.confirmed = self.confirmed, False
        if not self._explicit:
            self.error = (
                "connection lost"
                if wasConfirmed
                else describeRedisFailure(reason, self.store.timeout)
            )
        self.store._linkDown(self)
        if wasConfirmed:
            # Not a failed attempt (yet): try again before saying Redis is
            # down (at once, unless connections keep dropping right away).
            lived = self.store.clock.seconds() - self._readyAt
            if lived >= self.store.timeout:
                self._failures = 0
                self._schedule(0)
            else:
                self._failures += 1
                self._schedule(self.store.retryDelay(self._failures))
        else:
            self._attemptFailed()

    def message(self, channel: Any, message: Any) -> None:
        """
        A pub/sub message arrived.
        """
        if self._onMessage is not None and self._running:
            self._onMessage(_text(channel), _text(message))

    # From the store

    def confirm(self, protocol: Any) -> None:
        """
        The store has prepared C{protocol}: the connection is usable.
        """
        if protocol is self.protocol:
            # The delay goes back to nothing once the connection has lived
            # (see lost): one dropped at once must not be remade in a loop.
            self.confirmed = True
            self.error = None

    def fail(self, protocol: Any, error: str) -> None:
        """
        Drop C{protocol}'s connection (it timed out, or is unusable) and
        record why.
        """
        if protocol is not self._current or protocol is None:
            return
        self.error = error
        self._explicit = True
        # Unusable from now on, although the connection is lost only later.
        self.store._linkDown(self)
        transport = protocol.transport
        if transport is not None:
            transport.abortConnection()

    def stop(self) -> Deferred[None]:
        """
        Stop reconnecting and close the connection.

        @return: A Deferred that fires once the connection is closed.
        """
        self._running = False
        self._cancelTimer()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        if self._current is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stopped.append(d)
        transport = self._current.transport
        if transport is not None:
            transport.loseConnection()
        return d


def _text(value: Any) -> str:
    """
    A reply as text (txredisapi gives bytes for what is not UTF-8).
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def _keyspace(db: int, name: str) -> str:
    """
    The keyspace notification channel of key C{name} in database C{db}.
    """
    return f"__keyspace@{db}__:{name}"


def _missingEvents(events: str) -> str:
    """
    The C{notify-keyspace-events} letters the store needs that C{events}
    lacks (C{""} when none).
    """
    have = set(events)
    if "A" in have:
        have |= set(_ALL_CLASSES)
    missing = "" if "K" in have else "K"
    return missing + "".join(c for c in _EVENT_CLASSES if c not in have)


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

    #: Delay before the first reconnection attempt after a failed one.
    initialDelay = 0.5
    #: Longest delay between reconnection attempts.
    maxDelay = 5.0

    def __init__(
        self,
        env: str,
        target: RedisTarget,
        reactor: Any,
        names: Iterable[str] = DEFAULT_NAMES,
        timeout: float = 1.0,
        refresh: float = 30.0,
        pollInterval: float = 1.0,
        trustRoot: Certificate | None = None,
        watch: bool = True,
    ) -> None:
        """
        @param env: The environment's name.
        @param target: Its Redis.
        @param reactor: The reactor (connections and time).
        @param names: The flags configured with C{--flag} (validated).
        @param timeout: Seconds allowed for each Redis call.
        @param refresh: Seconds between full re-reads.
        @param pollInterval: Seconds between re-reads while changes cannot
            be watched.
        @param trustRoot: The CA to trust for C{rediss://}.
        @param watch: C{False} for a one-shot client (the CLI's C{--redis}):
            no subscription, no C{CONFIG}, no periodic reads; the cache
            holds what was read at connection and written since.
        """
        self.env = env
        self.watch = watch
        self.target = target
        self.reactor = reactor
        self.clock: Any = reactor
        self.timeout = timeout
        self.refresh = refresh
        self.pollInterval = pollInterval
        self.trustRoot = trustRoot
        self.historyLimit = HISTORY_LIMIT
        self.configured = tuple(validateName(name) for name in names)
        self._names: set[str] = set(self.configured)
        self._cache: dict[str, str] = {}
        self._observers: list[ChangeObserver] = []
        self._commands = _Link(self, "commands", self._commandsReady)
        self._subscriber = _Link(
            self, "subscriber", self._subscriberReady, self._message
        )
        self._connected = False
        self._loaded = False
        self._notifications: bool | None = None
        self._subscribed: set[str] = set()
        self._updated: float | None = None
        self._lastRefresh: float | None = None
        self._outageSince: float | None = None
        self._pollingLogged = False
        self._refreshError: str | None = None
        self._seq = 0
        self._touched: dict[str, int] = {}
        self._seen: deque[str] = deque(maxlen=256)
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
        return self._updated

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
        return sorted(self._names | set(self._cache))

    def view(self, name: str) -> FlagView:
        """
        A flag as the cache knows it (never waits).

        @param name: The flag.
        @return: Its view; a flag never seen is off.
        """
        value = self._cache.get(name)
        return FlagView(value, isOn(value), self.stale)

    def cached(self) -> dict[str, str]:
        """
        The cached values of the flags that are set (a copy).
        """
        return dict(self._cache)

    def subscribe(self, observer: ChangeObserver) -> None:
        """
        Call C{observer(change)} with every L{FlagChange} seen: own writes,
        other bluegreens' (from their messages) and values found changed in
        Redis (C{who} L{OUTSIDE}).
        """
        self._observers.append(observer)

    def describeUnavailable(self, reason: str | None = None) -> str:
        """
        The message of L{RedisUnavailable} for this store.

        @param reason: Why (the current L{error} if L{None}).
        """
        why = reason or self._commands.error or "not connected yet"
        return f"cannot reach Redis for {self.env} at {self.target.describe()}: {why}"

    def retryDelay(self, failures: int) -> float:
        """
        Seconds before the next connection attempt after C{failures}
        consecutive failed ones: L{initialDelay}, doubling, at most
        L{maxDelay}.
        """
        return float(min(self.maxDelay, self.initialDelay * 2 ** min(failures - 1, 30)))

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

    def _attemptFailed(self, link: _Link) -> None:
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

    def _linkDown(self, link: _Link) -> None:
        """
        A connection is unusable: stale cache, or no subscription.
        """
        if link is self._commands:
            self._connected = False
        else:
            self._subscribed.clear()

    def _commandsReady(self, protocol: Any) -> None:
        """
        A command connection is ready: prepare it.
        """
        Deferred.fromCoroutine(self._prepare(protocol)).addErrback(
            lambda f: self._log.failure("preparing Redis for {env}", f, env=self.env)
        )

    async def _prepare(self, protocol: Any) -> None:
        """
        A new command connection: check it answers, turn on keyspace
        notifications if needed, read every flag; then it is usable.
        """
        link = self._commands
        txredisapi = _txredisapi()
        try:
            await self._call(link, protocol, lambda: protocol.ping())
            if self.watch:
                await self._checkNotifications(protocol)
            await self._read(protocol)
        except RedisUnavailable:
            # The link has the reason (a timeout, a lost connection).
            return
        except txredisapi.ResponseError as e:
            link.fail(protocol, _describeRedisError(str(e)))
            return
        if protocol is not link.protocol:
            return
        link.confirm(protocol)
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
                count=len(self._cache),
                event="flags-redis-up",
            )
        elif not self._loaded:
            self._log.info(
                "flags for {env} from Redis at {redis}: {count} set",
                env=self.env,
                redis=self.target.describe(),
                count=len(self._cache),
                event="flags-redis-connected",
            )
        self._loaded = True
        self._firstAttemptOver()

    async def _checkNotifications(self, protocol: Any) -> None:
        """
        Read C{notify-keyspace-events}; turn on the events the store needs,
        or fall back to polling (logged once) if C{CONFIG} is not allowed.
        """
        txredisapi = _txredisapi()
        link = self._commands
        try:
            reply = await self._call(
                link,
                protocol,
                lambda: protocol.execute_command(
                    "CONFIG", "GET", "notify-keyspace-events"
                ),
            )
            events = (
                _text(reply[1]) if isinstance(reply, list) and len(reply) > 1 else ""
            )
            missing = _missingEvents(events)
            if missing:
                await self._call(
                    link,
                    protocol,
                    lambda: protocol.execute_command(
                        "CONFIG", "SET", "notify-keyspace-events", events + missing
                    ),
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
        except txredisapi.ResponseError as e:
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
                    error=_redisText(e),
                    poll=f"{self.pollInterval:g}",
                    event="flags-polling",
                )
            return
        self._notifications = True

    def _subscriberReady(self, protocol: Any) -> None:
        """
        A pub/sub connection is ready: subscribe.
        """
        Deferred.fromCoroutine(self._subscribeAll(protocol)).addErrback(
            lambda f: self._log.failure("subscribing for {env}", f, env=self.env)
        )

    async def _subscribeAll(self, protocol: Any) -> None:
        """
        A new pub/sub connection: subscribe to the change channel and every
        flag's keyspace channel; then read everything again (messages sent
        while disconnected are lost).
        """
        txredisapi = _txredisapi()
        link = self._subscriber
        names = set(self.names)
        channels = [CHANNEL, _keyspace(self.target.db, REGISTRY)]
        channels += [_keyspace(self.target.db, name) for name in sorted(names)]
        try:
            await self._call(link, protocol, lambda: protocol.subscribe(channels))
        except RedisUnavailable:
            return
        except txredisapi.ResponseError as e:
            link.fail(protocol, _describeRedisError(str(e)))
            return
        if protocol is not link.protocol:
            return
        self._subscribed = names
        link.confirm(protocol)
        missed = set(self.names) - names
        if missed:
            self._watch(missed)
        if self._connected:
            self._scheduleRefresh()

    def _watch(self, names: Iterable[str]) -> None:
        """
        Subscribe to the keyspace channels of new flag names.
        """
        link = self._subscriber
        protocol = link.protocol
        new = [n for n in names if n not in self._subscribed]
        if not new or protocol is None or not link.confirmed:
            return
        self._subscribed.update(new)
        channels = [_keyspace(self.target.db, name) for name in new]
        d = Deferred.fromCoroutine(
            self._call(link, protocol, lambda: protocol.subscribe(channels))
        )
        d.addErrback(lambda f: None)

    def _learn(self, names: Iterable[str]) -> None:
        """
        Add flag names (e.g. from the registry), watching the new ones.
        """
        new = [n for n in names if n not in self._names and NAME_RE.fullmatch(n)]
        if new:
            self._names.update(new)
            self._watch(new)

    # Messages

    def _message(self, channel: str, message: str) -> None:
        """
        A change message or a keyspace notification.
        """
        if channel == CHANNEL:
            self._changeMessage(message)
            return
        prefix = _keyspace(self.target.db, "")
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
            change, changeId = self._parseEntry(entry)
        except (ValueError, TypeError, AttributeError, KeyError):
            self._log.debug("ignored a malformed message: {message!r}", message=message)
            return
        self._apply(change.flag, change.new, change, changeId)

    def _parseEntry(self, entry: Any) -> tuple[FlagChange, str]:
        """
        A history entry or change message as a change and its id.

        @raise ValueError: If it is malformed.
        """
        if not isinstance(entry, dict):
            raise ValueError("not an object")
        flag = entry["flag"]
        old, new = entry.get("old"), entry.get("new")
        if not isinstance(flag, str) or not NAME_RE.fullmatch(flag):
            raise ValueError("bad flag")
        for value in (old, new):
            if value is not None and not isinstance(value, str):
                raise ValueError("bad value")
        change = FlagChange(
            float(entry["when"]), self.env, flag, old, new, str(entry.get("who", ""))
        )
        return change, str(entry.get("id", ""))

    async def _reread(self, name: str) -> None:
        """
        Read one flag again (a keyspace notification said it changed).
        """
        protocol = self._commands.protocol
        if protocol is None or not self._connected:
            return
        mark = self._seq
        value = await self._call(self._commands, protocol, lambda: protocol.get(name))
        self._found({name: None if value is None else _text(value)}, mark)

    # Cache updates

    def _apply(
        self,
        name: str,
        value: str | None,
        change: FlagChange,
        changeId: str,
    ) -> None:
        """
        Apply a change made through bluegreen (ours or another's), once:
        the same change arrives both as our reply and as a message.
        """
        if changeId and changeId in self._seen:
            return
        if changeId:
            self._seen.append(changeId)
        self._seq += 1
        self._touched[name] = self._seq
        self._learn([name])
        if value is None:
            self._cache.pop(name, None)
        else:
            self._cache[name] = value
        self._updated = self.clock.seconds()
        self._emit(change)

    def _found(self, values: Mapping[str, str | None], mark: int) -> None:
        """
        Apply values read from Redis, except those of flags changed since
        the read began (sequence number C{mark}); report differences.
        """
        now = self.clock.seconds()
        for name, value in values.items():
            if self._touched.get(name, 0) > mark:
                continue
            old = self._cache.get(name)
            if value is None:
                self._cache.pop(name, None)
            else:
                self._cache[name] = value
            if old != value and self._loaded:
                self._emit(FlagChange(now, self.env, name, old, value, OUTSIDE))
        self._updated = now

    def _emit(self, change: FlagChange) -> None:
        """
        Tell every observer of C{change}.
        """
        for observer in list(self._observers):
            try:
                observer(change)
            except Exception:
                self._log.failure(
                    "flag observer {observer!r} failed", observer=observer
                )

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
        txredisapi = _txredisapi()
        protocol = self._commands.protocol
        if protocol is None or not self._connected:
            return
        try:
            await self._read(protocol)
        except RedisUnavailable:
            return
        except txredisapi.ResponseError as e:
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

    async def _read(self, protocol: Any) -> None:
        """
        Read the registry and every flag's value into the cache.
        """
        link = self._commands
        mark = self._seq
        registry = await self._call(link, protocol, lambda: protocol.smembers(REGISTRY))
        self._learn(_text(n) for n in registry or ())
        names = self.names
        values = await self._call(link, protocol, lambda: protocol.mget(names))
        self._found(
            {
                name: None if value is None else _text(value)
                for name, value in zip(names, values, strict=True)
            },
            mark,
        )
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

    def _ready(self) -> Any:
        """
        The command connection's protocol, if it is usable.

        @raise RedisUnavailable: If it is not.
        """
        protocol = self._commands.protocol
        if not self._connected or protocol is None:
            raise RedisUnavailable(self.describeUnavailable())
        return protocol

    async def _call(
        self, link: _Link, protocol: Any, command: Callable[[], Any]
    ) -> Any:
        """
        Run a txredisapi command within L{timeout} seconds.

        A timeout drops the connection (Redis is not answering).  Redis's
        error answers (C{txredisapi.ResponseError}) are raised as they are.

        @raise RedisUnavailable: On a timeout or a lost connection.
        """
        txredisapi = _txredisapi()
        try:
            d = command()
        except txredisapi.ConnectionError:
            raise RedisUnavailable(
                self.describeUnavailable("connection lost")
            ) from None
        d.addTimeout(self.timeout, self.clock)
        try:
            return await d
        except (DeferredTimeoutError, CancelledError):
            reason = f"timeout after {self.timeout:g} s"
            link.fail(protocol, reason)
            raise RedisUnavailable(self.describeUnavailable(reason)) from None
        except txredisapi.ResponseError:
            raise
        except txredisapi.ConnectionError:
            raise RedisUnavailable(
                self.describeUnavailable("connection lost")
            ) from None

    # Operations

    async def get(self, name: str) -> str | None:
        """
        Read a flag from Redis (and update the cache with it).

        @param name: The flag.
        @return: Its value, or L{None} if it is not set.
        @raise FlagError: For an invalid name.
        @raise RedisUnavailable: If Redis cannot be reached (use L{view}
            for the cached value then).
        """
        validateName(name)
        protocol = self._ready()
        mark = self._seq
        try:
            value = await self._call(
                self._commands, protocol, lambda: protocol.get(name)
            )
        except _txredisapi().ResponseError as e:
            raise RedisUnavailable(
                f"Redis for {self.env} at {self.target.describe()} refused to "
                f"read {name}: {e}"
            ) from None
        text = None if value is None else _text(value)
        if name in self._names or name in self._cache:
            self._found({name: text}, mark)
        return text

    async def set(self, name: str, value: str, who: str) -> FlagChange:
        """
        Set a flag (the exact string given; see L{normalise} for on/off).

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
        protocol = self._ready()
        when = self.clock.seconds()
        changeId = uuid.uuid4().hex
        entry = {
            "when": when,
            "env": self.env,
            "flag": name,
            "new": value,
            "who": who,
            "db": self.target.db,
            "id": changeId,
        }
        head = json.dumps(entry)[:-1] + ', "old": '
        args = [
            "unset" if value is None else "set",
            "" if value is None else value,
            head,
            "}",
            CHANNEL,
            self.historyLimit,
        ]
        txredisapi = _txredisapi()
        try:
            old = await self._call(
                self._commands,
                protocol,
                lambda: protocol.eval(_WRITE_SCRIPT, [name, REGISTRY, HISTORY], args),
            )
        except txredisapi.ResponseError as e:
            if "WRONGTYPE" in str(e):
                raise FlagError(
                    f"{name} in Redis for {self.env} is not a string key; not changed"
                ) from None
            raise RedisUnavailable(
                f"Redis for {self.env} at {self.target.describe()} refused the "
                f"change: {e}"
            ) from None
        change = FlagChange(
            when, self.env, name, None if old is None else _text(old), value, who
        )
        self._apply(name, value, change, changeId)
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
        protocol = self._ready()
        try:
            entries = await self._call(
                self._commands, protocol, lambda: protocol.lrange(HISTORY, 0, limit - 1)
            )
        except _txredisapi().ResponseError as e:
            raise RedisUnavailable(
                f"Redis for {self.env} at {self.target.describe()} refused to "
                f"read the history: {e}"
            ) from None
        changes = []
        for text in entries or ():
            try:
                changes.append(self._parseEntry(json.loads(_text(text)))[0])
            except (ValueError, TypeError, KeyError):
                continue
        return changes


def noRedisEntry() -> dict[str, Any]:
    """
    @return: The L{FlagService.table} entry of an environment without Redis.
    """
    return {
        "redis": None,
        "connected": False,
        "stale": False,
        "error": None,
        "updated": None,
        "flags": {},
    }


class FlagService(MultiService):
    """
    The flags of every environment that has a Redis (one L{FlagStore} each,
    child services).

    @ivar environments: Every environment's name, with a Redis or not.
    @ivar stores: The stores, by environment name.
    @ivar configured: The names given with C{--flag}.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        targets: Mapping[str, RedisTarget | None],
        names: Iterable[str] = DEFAULT_NAMES,
        timeout: float = 1.0,
        refresh: float = 30.0,
        trustRoot: Certificate | None = None,
    ) -> None:
        """
        @param reactor: The reactor (connections and time).
        @param targets: Each environment's Redis, or L{None} for none.
        @param names: The flags configured with C{--flag}.
        @param timeout: Seconds allowed for each Redis call.
        @param refresh: Seconds between full re-reads.
        @param trustRoot: The CA to trust for C{rediss://}.
        """
        super().__init__()
        self.environments = tuple(targets)
        self.configured = tuple(validateName(name) for name in names)
        self.stores: dict[str, FlagStore] = {}
        self._observers: list[ChangeObserver] = []
        for env, target in targets.items():
            if target is None:
                continue
            store = FlagStore(
                env,
                target,
                reactor,
                self.configured,
                timeout=timeout,
                refresh=refresh,
                trustRoot=trustRoot,
            )
            store.subscribe(self._changed)
            store.setServiceParent(self)
            self.stores[env] = store

    def __repr__(self) -> str:
        """
        The stores.
        """
        return f"<FlagService {sorted(self.stores.values(), key=lambda s: s.env)!r}>"

    def store(self, env: str) -> FlagStore:
        """
        The store of C{env}.

        @raise FlagError: For an unknown environment.
        @raise NoRedis: If C{env} has no Redis.
        """
        if env not in self.environments:
            raise FlagError(
                f"unknown environment {env!r}; expected "
                + " or ".join(self.environments)
            )
        store = self.stores.get(env)
        if store is None:
            raise NoRedis(env)
        return store

    def subscribe(self, observer: ChangeObserver) -> None:
        """
        Call C{observer(change)} with every L{FlagChange} any store sees.
        """
        self._observers.append(observer)

    def _changed(self, change: FlagChange) -> None:
        """
        Pass a store's change on to every observer.
        """
        for observer in list(self._observers):
            try:
                observer(change)
            except Exception:
                self._log.failure(
                    "flag observer {observer!r} failed", observer=observer
                )

    @property
    def names(self) -> list[str]:
        """
        Every flag name known in any environment (and those configured),
        sorted.
        """
        names = set(self.configured)
        for store in self.stores.values():
            names.update(store.names)
        return sorted(names)

    def view(self, env: str, name: str) -> FlagView:
        """
        A flag in one environment, from the cache (never waits).

        @raise FlagError: For an unknown environment.
        @raise NoRedis: If C{env} has no Redis.
        """
        return self.store(env).view(name)

    def flagsFor(self, env: str) -> dict[str, str]:
        """
        For C{--stamp-flags}: C{"on"} or C{"off"} for every flag of C{env},
        from the cache (never waits); C{{}} for an environment without a
        Redis.
        """
        store = self.stores.get(env)
        if store is None:
            return {}
        cache = store._cache
        return {
            name: "on" if isOn(cache.get(name)) else "off"
            for name in sorted(store._names | cache.keys())
        }

    def table(self) -> dict[str, Any]:
        """
        Every environment's flags, JSON-ready::

            {"environments": {env: {"redis": URL or None, "connected": bool,
                                    "stale": bool, "error": str or None,
                                    "updated": float or None,
                                    "flags": {name: value}}},
             "names": [every name, sorted]}

        (URLs without their password; C{flags} holds the flags that are
        set; an environment without a Redis has C{"redis": None}.)
        """
        environments: dict[str, Any] = {}
        for env in self.environments:
            store = self.stores.get(env)
            if store is None:
                environments[env] = noRedisEntry()
                continue
            environments[env] = {
                "redis": store.target.describe(),
                "connected": store.connected,
                "stale": store.stale,
                "error": store.error,
                "updated": store.updated,
                "flags": store.cached(),
            }
        return {"environments": environments, "names": self.names}

    async def set(self, env: str, name: str, value: str, who: str) -> FlagChange:
        """
        Set a flag in one environment (see L{FlagStore.set}).

        @raise FlagError: For an invalid name, value or environment.
        @raise NoRedis: If C{env} has no Redis.
        @raise RedisUnavailable: If its Redis cannot be reached.
        """
        validateName(name)
        validateValue(value)
        return await self.store(env).set(name, value, who)

    async def unset(self, env: str, name: str, who: str) -> FlagChange:
        """
        Remove a flag from one environment (see L{FlagStore.unset}).

        @raise FlagError: For an invalid name or environment.
        @raise NoRedis: If C{env} has no Redis.
        @raise RedisUnavailable: If its Redis cannot be reached.
        """
        validateName(name)
        return await self.store(env).unset(name, who)

    async def history(self, env: str | None, limit: int = 50) -> list[FlagChange]:
        """
        The recorded changes, newest first.

        @param env: One environment, or L{None} for all (merged; those whose
            Redis cannot be reached are left out, unless none can be).
        @param limit: How many at most (1 to L{HISTORY_LIMIT}).
        @raise FlagError: For an unknown environment or a bad limit.
        @raise NoRedis: If C{env} has no Redis.
        @raise RedisUnavailable: If C{env}'s Redis (or, for all, every
            Redis) cannot be reached.
        """
        if env is not None:
            return await self.store(env).history(limit)
        if not 1 <= limit <= HISTORY_LIMIT:
            raise FlagError(f"limit {limit} is not between 1 and {HISTORY_LIMIT}")
        merged: list[FlagChange] = []
        failures: list[RedisUnavailable] = []
        for store in self.stores.values():
            try:
                merged.extend(await store.history(limit))
            except RedisUnavailable as e:
                failures.append(e)
        if failures and len(failures) == len(self.stores):
            raise failures[0]
        merged.sort(key=lambda change: change.when, reverse=True)
        return merged[:limit]
