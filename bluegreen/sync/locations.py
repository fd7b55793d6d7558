# -*- test-case-name: tests.test_sync_remote -*-
"""
Where a database is: a local path, or C{[user@]host:/path} reached with
C{ssh -o BatchMode=yes} (and C{rsync} over ssh).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable

from attrs import frozen


@frozen
class Location:
    """
    Where a database is: a local path, or a path on a host reached with
    C{ssh -o BatchMode=yes} (and C{rsync} over C{ssh}).

    @ivar host: The host, or L{None} for a local path.
    @ivar user: The user to log in as (L{None}: ssh's default).
    @ivar path: The database file (absolute on a remote host).
    """

    host: str | None
    user: str | None
    path: str

    @classmethod
    def local(cls, path: str) -> Location:
        """
        @param path: A path on this host.
        @return: The local path C{path}.
        """
        return cls(None, None, path)

    @property
    def remote(self) -> bool:
        """
        Whether the file is on another host.
        """
        return self.host is not None

    @property
    def login(self) -> str:
        """
        C{user@host} (or C{host}) as ssh and rsync take it.
        """
        if self.host is None:
            raise ValueError(f"{self.path} is a local path")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" if self.user is not None else host

    @property
    def sshLogin(self) -> str:
        """
        C{user@host} (or C{host}) as ssh takes it (no brackets).
        """
        if self.host is None:
            raise ValueError(f"{self.path} is a local path")
        return f"{self.user}@{self.host}" if self.user is not None else self.host

    def at(self, path: str) -> Location:
        """
        @param path: Another path on the same host.
        @return: Another file on the same host.
        """
        return Location(self.host, self.user, path)

    def __str__(self) -> str:
        """
        @return: The location as L{parseLocation} reads it.
        """
        return f"{self.login}:{self.path}" if self.remote else self.path


def parseLocation(text: str) -> Location:
    """
    Read a database location: a local path, or C{[user@]host:/path}.  As
    with rsync, a C{:} before any C{/} makes it remote (so C{./a:b} and
    C{/x/a:b} are local paths); an IPv6 address goes in brackets
    (C{[::1]:/path}).

    @param text: The location.
    @return: The L{Location} (a local path is returned as given).
    @raise ValueError: Saying what is wrong with C{text}.
    """
    if not text:
        raise ValueError("empty database location")
    colon = text.find(":")
    slash = text.find("/")
    if colon < 0 or 0 <= slash < colon:
        if text.endswith("/"):
            raise ValueError(f"{text!r} names a directory, not a database file")
        return Location.local(text)
    at = text.find("@", 0, colon)
    user = text[:at] if at >= 0 else None
    rest = text[at + 1 :]
    if rest.startswith("["):
        close = rest.find("]:")
        if close < 0:
            raise ValueError(
                f"{text!r}: an IPv6 address in brackets must be followed by "
                "':' and the path ([user@][ADDRESS]:/path)"
            )
        host, path = rest[1:close], rest[close + 2 :]
    else:
        host, _, path = rest.partition(":")
    if user is not None and not user:
        raise ValueError(f"{text!r}: empty user name before '@'")
    if not host:
        raise ValueError(f"{text!r}: empty host name before ':'")
    if host.startswith("-") or any(c.isspace() or c in "@/[]" for c in host):
        raise ValueError(f"{text!r}: {host!r} is not a host name")
    if user is not None and (
        user.startswith("-") or any(c.isspace() or c in ":/@" for c in user)
    ):
        raise ValueError(f"{text!r}: {user!r} is not a user name")
    if not path:
        raise ValueError(f"{text!r}: no path after '{host}:'")
    if not path.startswith("/"):
        raise ValueError(
            f"{text!r}: the path on {host} must be absolute ([user@]host:/path)"
        )
    if path.endswith("/"):
        raise ValueError(f"{text!r} names a directory, not a database file")
    return Location(host, user, path)


def sshArguments(options: Iterable[str]) -> tuple[str, ...]:
    """
    Turn C{--ssh-option} values into ssh arguments: one starting with C{-}
    is split like a shell would (C{"-p 2222"}, C{"-i /key"}), anything else
    is an ssh_config option (C{Port=2222} becomes C{-o Port=2222}).

    @param options: The values, in order.
    @return: The arguments, in order.
    @raise ValueError: If a value cannot be split.
    """
    out: list[str] = []
    for option in options:
        if option.startswith("-"):
            out.extend(shlex.split(option))
        elif option.strip():
            out.extend(("-o", option.strip()))
    return tuple(out)


def resolveLocation(where: str | Location) -> Location:
    """
    @param where: A local path or a L{Location}.
    @return: C{where} as a L{Location}, a local path made absolute (a
        L{str} is always a local path).
    """
    if isinstance(where, str):
        return Location.local(os.path.abspath(where))
    if not where.remote:
        return Location.local(os.path.abspath(where.path))
    return where
