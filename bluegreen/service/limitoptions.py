# -*- test-case-name: tests.test_options_limits -*-
"""
The options of the proxy's client limits and timeouts, and the
L{ClientLimits} they give (L{clientLimits}).

Kept out of L{bluegreen.service.options} so that module stays one screenful
of option definitions and their order of checks; L{LIMIT_PARAMETERS} is
appended to its C{optParameters}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from bluegreen.proxy import limits as defaults
from bluegreen.proxy.limits import ClientLimits
from bluegreen.service.optionvalues import count, seconds

#: The multipliers of a size's suffixes.
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _size(value: int) -> str:
    """
    @return: C{value} bytes as the option would be given (C{64k}, C{100m}).
    """
    for suffix in ("g", "m", "k"):
        if value % _UNITS[suffix] == 0:
            return f"{value // _UNITS[suffix]}{suffix}"
    return str(value)


#: The options, in C{optParameters} form.
LIMIT_PARAMETERS: list[list[Any]] = [
    [
        "client-header-timeout",
        None,
        f"{defaults.HEADER_TIMEOUT:g}",
        "Seconds a client has to send a whole request head (from its first "
        "byte; for a new connection, from its start); then 408.",
    ],
    [
        "client-idle-timeout",
        None,
        f"{defaults.IDLE_TIMEOUT:g}",
        "Seconds an idle keep-alive client connection is kept, and the "
        "longest silence allowed within a request body (then 408).",
    ],
    [
        "max-request-line",
        None,
        _size(defaults.REQUEST_LINE_LIMIT),
        "Longest request line in bytes (K/M suffixes); longer: 414.",
    ],
    [
        "max-header-size",
        None,
        _size(defaults.HEADER_SECTION_LIMIT),
        "Largest request header section in bytes (K/M suffixes); larger: 431.",
    ],
    [
        "max-header-fields",
        None,
        str(defaults.HEADER_FIELDS_LIMIT),
        "Most request header fields; more: 431.",
    ],
    [
        "max-body-size",
        None,
        _size(defaults.MAX_BODY_SIZE),
        "Largest request body in bytes (K/M/G suffixes; 0: no limit); "
        "larger: 413, before any upstream is contacted when declared.",
    ],
    [
        "max-clients",
        None,
        "auto",
        "Most client connections at once; at the limit new connections wait "
        "(not accepted) until one closes.  auto: the open-file limit minus "
        f"2 x --max-connections minus {defaults.DESCRIPTOR_RESERVE}.",
    ],
]


def _bytes(options: Mapping[str, Any], name: str, zero: bool = False) -> int:
    """
    @param zero: Whether 0 is allowed.
    @return: The option's value, a whole number of bytes with an optional
        C{K}, C{M} or C{G} suffix (powers of 1024).
    @raise usage.UsageError: Naming C{--name}, if it is not one.
    """
    value = options[name]
    text = str(value).strip().lower()
    suffix = text[-1:] if text[-1:] in _UNITS else ""
    digits = text[: len(text) - len(suffix)]
    least = 0 if zero else 1
    if not (digits.isascii() and digits.isdigit()) or int(digits) < least:
        raise usage.UsageError(
            f"--{name}: {value!r} is not a whole number of bytes >= {least} "
            "(e.g. 8192, 64K, 100M)"
        )
    return int(digits) * _UNITS[suffix]


def clientLimits(options: Mapping[str, Any]) -> ClientLimits:
    """
    Check the client limit options.

    @param options: The parsed options (L{bluegreen.service.options.Options}).
    @return: The limits they give.
    @raise usage.UsageError: Naming the option, for a bad value.
    """
    maxBody = _bytes(options, "max-body-size", zero=True)
    clients = str(options["max-clients"]).strip()
    return ClientLimits(
        headerTimeout=seconds(
            "client-header-timeout", options["client-header-timeout"]
        ),
        idleTimeout=seconds("client-idle-timeout", options["client-idle-timeout"]),
        requestLineLimit=_bytes(options, "max-request-line"),
        headerSectionLimit=_bytes(options, "max-header-size"),
        headerFieldsLimit=count("max-header-fields", options["max-header-fields"]),
        maxBodySize=maxBody or None,
        maxClients=None if clients == "auto" else _maxClients(clients),
    )


def _maxClients(value: str) -> int:
    """
    @return: C{--max-clients} as a number.
    @raise usage.UsageError: If it is neither C{auto} nor a whole number >= 1.
    """
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise usage.UsageError(
            f"--max-clients: {value!r} is not a whole number >= 1 or 'auto'"
        )
    return int(value)
