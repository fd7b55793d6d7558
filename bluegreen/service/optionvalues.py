# -*- test-case-name: tests.test_options -*-
"""
Reading the values of C{twistd bluegreen}'s options: seconds, counts, sizes
and choices, each refused with a one-line message naming the option.
"""

from __future__ import annotations

from twisted.python import usage


def seconds(name: str, value: str) -> float:
    """
    @return: C{value} as a positive, finite number of seconds.
    @raise usage.UsageError: Naming C{--name}, if it is not one.
    """
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise usage.UsageError(
            f"--{name}: {value!r} is not a positive number of seconds"
        )
    return seconds


def count(name: str, value: str) -> int:
    """
    @return: C{value} as a whole number >= 1.
    @raise usage.UsageError: Naming C{--name}, if it is not one.
    """
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise usage.UsageError(f"--{name}: {value!r} is not a whole number >= 1")
    return int(text)


#: The multipliers of a number of bytes' suffixes.
BYTE_SUFFIXES = {"": 1, "k": 1024, "m": 1024 * 1024}


def byteSize(name: str, value: str) -> int:
    """
    @return: C{value} as a whole number of bytes >= 0, with an optional
        C{K} (1024) or C{M} (1024 * 1024) suffix, in either case.
    @raise usage.UsageError: Naming C{--name}, if it is not one.
    """
    text = value.strip().lower()
    suffix = text[-1:] if text[-1:] in ("k", "m") else ""
    digits = text[: len(text) - len(suffix)]
    if not (digits.isascii() and digits.isdigit()):
        raise usage.UsageError(
            f"--{name}: {value!r} is not a whole number of bytes >= 0 "
            "(e.g. 65536, 64K, 1M)"
        )
    return int(digits) * BYTE_SUFFIXES[suffix]


def choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """
    @return: C{value}, one of C{choices}.
    @raise usage.UsageError: Naming C{--name} and the choices, if it is not.
    """
    if value not in choices:
        raise usage.UsageError(
            f"--{name}: {value!r} must be " + " or ".join(repr(c) for c in choices)
        )
    return value
