# -*- test-case-name: tests.test_bufferoptions -*-
"""
The options of request and response buffering (L{BUFFER_PARAMETERS},
appended to L{bluegreen.service.options.Options.optParameters}) and their
checks (L{bufferSettings}), kept here so the options module stays within
its size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from bluegreen.proxy.spool import BufferSettings, defaultTempDir

#: The options, as C{optParameters} rows.
BUFFER_PARAMETERS: list[list[Any]] = [
    [
        "request-buffering",
        None,
        "on",
        "on: receive a request body whole (memory, then a temporary file) "
        "before taking an upstream connection, so a slow upload never holds "
        "one (nginx proxy_request_buffering); off: stream it as it comes.",
    ],
    [
        "response-buffering",
        None,
        "on",
        "on: read a response ahead of a slow client (memory, then a "
        "temporary file), so the upstream connection is free as soon as the "
        "upstream is done (nginx proxy_buffering); off: a slow client pauses "
        "the upstream.",
    ],
    [
        "client-body-buffer",
        None,
        "64k",
        "Bytes of a buffered request body kept in memory; the rest goes to a "
        "temporary file (K, M, G suffixes).",
    ],
    [
        "max-buffered-body",
        None,
        "64m",
        "A request body declared larger streams to the environment as it "
        "arrives; a chunked one larger has this much buffered, then streams.",
    ],
    [
        "proxy-buffer",
        None,
        "256k",
        "Bytes of a response kept in memory for a slow client; the rest goes "
        "to a temporary file.",
    ],
    [
        "max-temp-file",
        None,
        "1g",
        "Bytes of a response kept on disk for a slow client; past it the "
        "environment is paused until the client catches up (0: memory only; "
        "nginx proxy_max_temp_file_size).",
    ],
    [
        "temp-dir",
        None,
        None,
        "Directory for the temporary files (a subdirectory per process, mode "
        "0700); default: bluegreen-UID in the system's temporary directory.",
    ],
]

#: The multipliers of a size's suffixes.
_SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size(name: str, value: str, least: int = 0) -> int:
    """
    Read a size option.

    @param name: The option, for messages.
    @param value: As given: a whole number of bytes with an optional K, M or
        G suffix (powers of 1024), in either case.
    @param least: The smallest value allowed.
    @return: The number of bytes.
    @raise usage.UsageError: Naming C{--name}, if it is no such size.
    """
    text = value.strip().lower()
    suffix = text[-1:] if text[-1:] in ("k", "m", "g") else ""
    digits = text[: len(text) - len(suffix)]
    if not (digits.isascii() and digits.isdigit()) or (
        int(digits) * _SUFFIXES[suffix] < least
    ):
        low = f" >= {least}" if least else ""
        raise usage.UsageError(
            f"--{name}: {value!r} is not a size in bytes{low} "
            "(a whole number, optionally with K, M or G, e.g. 64k)"
        )
    return int(digits) * _SUFFIXES[suffix]


def _onOff(name: str, value: str) -> bool:
    """
    @return: C{True} for C{on}, C{False} for C{off}.
    @raise usage.UsageError: Naming C{--name}, for anything else.
    """
    if value not in ("on", "off"):
        raise usage.UsageError(f"--{name}: {value!r} must be 'on' or 'off'")
    return value == "on"


def _tempDir(value: str | None) -> str:
    """
    @return: The C{--temp-dir} to use, absolute.
    @raise usage.UsageError: If it is not a directory we can write in, and
        cannot be created in one.
    """
    path = os.path.abspath(value if value is not None else defaultTempDir())
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise usage.UsageError(f"--temp-dir: {path!r} is not writable")
        return path
    if os.path.exists(path):
        raise usage.UsageError(f"--temp-dir: {path!r} is not a directory")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise usage.UsageError(
            f"--temp-dir: cannot create {path!r} (its parent is not a "
            "writable directory)"
        )
    return path


def bufferSettings(options: Mapping[str, Any]) -> BufferSettings:
    """
    Check the buffering options.

    @param options: The parsed options.
    @return: The settings.
    @raise usage.UsageError: Naming the option and the problem.
    """
    return BufferSettings(
        requestBuffering=_onOff("request-buffering", options["request-buffering"]),
        responseBuffering=_onOff("response-buffering", options["response-buffering"]),
        clientBodyBuffer=size("client-body-buffer", options["client-body-buffer"]),
        maxBufferedBody=size("max-buffered-body", options["max-buffered-body"]),
        proxyBuffer=size("proxy-buffer", options["proxy-buffer"], least=1024),
        maxTempFile=size("max-temp-file", options["max-temp-file"]),
        tempDir=_tempDir(options["temp-dir"]),
    )
