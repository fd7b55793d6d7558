# -*- test-case-name: tests.test_flags -*-
"""
What a feature flag is: its name, its value, its changes, and how flags are
kept in Redis.

A flag is a plain Redis string key, exactly as the application reads it:
C{RECENT} = C{ON} is on; a missing key, C{OFF} or any other value is off
(L{isOn}).  Values are stored and returned as strings, never converted
(C{"007"} stays C{"007"}).  Names match L{NAME_RE}; values are at most
L{MAX_VALUE} bytes of UTF-8.

What is kept in Redis
=====================

  - the flags themselves: one string key per flag (C{SET RECENT ON});
  - L{REGISTRY} (C{bluegreen:flags}), a set: the names of the flags
    bluegreen has written (a name stays there after C{unset}).  The flags of
    an environment are the names in its registry plus the names configured
    with C{--flag NAME} (default: C{RECENT});
  - L{HISTORY} (C{bluegreen:flags:history}), a list: one JSON object per
    change made through bluegreen (C{when}, C{env}, C{flag}, C{old},
    C{new}, C{who}), newest first, capped at L{HISTORY_LIMIT} entries.
    Changes made directly in Redis (C{redis-cli SET}) are not recorded
    there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from attrs import frozen

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
