# -*- test-case-name: tests.test_flags -*-
"""
Where an environment's Redis is (L{RedisTarget}: C{redis://}, C{rediss://}
and C{unix://} URLs, the password file), and saying in a few words why it
cannot be reached.  Passwords never appear in a message or a C{repr}.
"""

from __future__ import annotations

import errno
import os
import re
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from attrs import field, frozen
from twisted.internet.defer import CancelledError
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import (
    ConnectError,
    ConnectionClosed,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.internet.interfaces import IReactorTCP, IReactorUNIX, IStreamClientEndpoint
from twisted.internet.ssl import Certificate
from twisted.python.failure import Failure

from bluegreen.environment import Environment
from bluegreen.tls import describeTLSError, isTLSError

if TYPE_CHECKING:
    from bluegreen.proxy.pool import ConnectingReactor

#: The CA certificate a C{rediss://} connection trusts (what
#: L{bluegreen.proxy.pool.loadTrustRoot} reads; the platform's CAs when
#: L{None}).  Twisted's trust-root interface is named only in a private
#: module, so the public certificate type stands for it.
TrustRoot = Certificate


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


def maskURL(url: str) -> str:
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
        shown = maskURL(url)
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
        reactor: IReactorTCP,
        timeout: float,
        trustRoot: TrustRoot | None = None,
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
            return UNIXClientEndpoint(IReactorUNIX(reactor), self.path, timeout=timeout)
        assert self.host is not None and self.port is not None
        # Imported here: the CLI parses Redis URLs without loading the proxy.
        from bluegreen.proxy.pool import endpointFor

        where = Environment(
            "redis", "", "https" if self.tls else "http", self.host, self.port
        )
        # endpointFor also names hosts (HostnameEndpoint times its
        # attempts), so it asks for a reactor with timers too; every reactor
        # given here is the real one, which has them.
        return endpointFor(
            cast("ConnectingReactor", reactor), where, timeout, trustRoot
        )


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
    return f"{type(error).__name__}: {error}"


def redisText(error: object) -> str:
    """
    The text of an error answer of Redis, without its C{ERR} prefix.
    """
    text = str(error).strip()
    return text[4:].strip() if text.startswith("ERR ") else text


def describeRedisError(message: str) -> str:
    """
    Turn an error answer of Redis into a reason: authentication problems
    say what to do.

    @param message: The answer, e.g. C{"WRONGPASS invalid username-password
        pair or user is disabled."}.
    @return: E.g. C{"authentication failed (WRONGPASS ...)"}.
    """
    text = redisText(message).rstrip(".")
    if text.startswith("NOAUTH"):
        return (
            "authentication required (give the password in the URL or "
            "with --redis-password-file)"
        )
    if "WRONGPASS" in text or "AUTH" in text or "password" in text.lower():
        return f"authentication failed ({text})"
    return f"Redis said: {text}"
