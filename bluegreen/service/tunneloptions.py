# -*- test-case-name: tests.test_tunnel -*-
"""
The options of tunnels (upgraded connections, e.g. WebSockets):
C{--tunnel-idle-timeout} and C{--drain-timeout}, appended to
L{bluegreen.service.options.Options.optParameters}, and their check
(L{tunnelSettings}).
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.python import usage

from bluegreen.proxy.tunnels import TunnelSettings

#: The options, in the form of C{Options.optParameters}.
TUNNEL_PARAMETERS: list[list[str | None]] = [
    [
        "tunnel-idle-timeout",
        None,
        "3600",
        "Seconds an upgraded connection (WebSocket...) may carry nothing, "
        "either way, before it is closed (like HAProxy's timeout tunnel).",
    ],
    [
        "drain-timeout",
        None,
        "30",
        "Seconds upgraded connections and responses left on the old "
        "environment stay open after a switch before they are closed (0: at "
        "once; 'never': leave them); a failover closes them at once.",
    ],
]


def _number(name: str, value: str, zero: bool) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not (seconds >= 0 if zero else seconds > 0) or seconds == float("inf"):
        kind = (
            "a number of seconds (0 or more)"
            if zero
            else "a positive number of seconds"
        )
        raise usage.UsageError(f"--{name}: {value!r} is not {kind}")
    return seconds


def tunnelSettings(options: Mapping[str, str]) -> TunnelSettings:
    """
    Check the tunnel options.

    @param options: The parsed options (by name).
    @return: The settings.
    @raise usage.UsageError: Naming the option and the problem.
    """
    idle = _number("tunnel-idle-timeout", options["tunnel-idle-timeout"], False)
    drain = options["drain-timeout"]
    if drain.strip().lower() == "never":
        return TunnelSettings(idle, None)
    try:
        return TunnelSettings(idle, _number("drain-timeout", drain, True))
    except usage.UsageError:
        raise usage.UsageError(
            f"--drain-timeout: {drain!r} is not a number of seconds (0 or "
            "more) or 'never'"
        ) from None
