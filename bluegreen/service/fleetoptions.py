# -*- test-case-name: tests.test_fleet -*-
"""
The options of several instances sharing their state (C{--coordinate},
C{--coordinate-fallback}), kept out of L{bluegreen.service.options} (one
screenful of option definitions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen
from twisted.python import usage

from bluegreen.flags.target import RedisTarget, readPasswordFile
from bluegreen.fleet.coordinator import FALLBACKS
from bluegreen.optionfile import readOptionFile

#: Added to L{bluegreen.service.options.Options.optParameters}.
FLEET_PARAMETERS: list[list[Any]] = [
    [
        "coordinate",
        None,
        None,
        "Share the live environment, its generation and the switch history "
        "with the other bluegreens using this Redis: redis://[user:password@]"
        "host:port/db, rediss:// (TLS) or unix:///path?db=0.",
    ],
    [
        "coordinate-fallback",
        None,
        "none",
        "While the --coordinate Redis cannot be reached: none (keep the last "
        "known live environment, never switch alone) or local (switch alone).",
    ],
]


@frozen
class CoordinateSettings:
    """
    How this instance shares its state.

    @ivar target: The Redis (C{--coordinate}).
    @ivar fallback: C{none} or C{local} (C{--coordinate-fallback}).
    """

    target: RedisTarget
    fallback: str


def coordinateSettings(options: Mapping[str, Any]) -> CoordinateSettings | None:
    """
    Check C{--coordinate} and C{--coordinate-fallback}.

    @param options: The parsed options.
    @return: The settings, or L{None} without C{--coordinate}.
    @raise usage.UsageError: Naming the option and the problem.
    """
    fallback = options["coordinate-fallback"]
    if fallback not in FALLBACKS:
        raise usage.UsageError(
            f"--coordinate-fallback: {fallback!r} must be 'none' (keep the "
            "last known live environment) or 'local' (switch alone)"
        )
    url = options["coordinate"]
    if url is None:
        if fallback != "none":
            raise usage.UsageError(
                "--coordinate-fallback: only with --coordinate redis://host:port/db"
            )
        return None
    password = readOptionFile(
        "--redis-password-file", options["redis-password-file"], readPasswordFile
    )
    try:
        target = RedisTarget.parse(url, password)
    except ValueError as e:
        raise usage.UsageError(f"--coordinate: {e}") from None
    return CoordinateSettings(target, fallback)
