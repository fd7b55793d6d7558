# -*- test-case-name: tests.test_options,tests.test_cli,tests.test_flags_cli -*-
"""
Reading the file an option names (a token or password file), the same way
for the service's options and the C{bluegreen} command's.

A neutral module (it imports nothing of bluegreen), so the client CLI can
use it without loading the service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.python import usage

T = TypeVar("T")


def readOptionFile(option: str, path: str | None, read: Callable[[str], T]) -> T | None:
    """
    Read the file an option names, if it names one.

    @param option: Where the path came from, for the message (e.g.
        C{"--admin-token-file"} or C{"BLUEGREEN_TOKEN_FILE"}).
    @param path: The file, or L{None} if the option was not given.
    @param read: Reads the file; raises L{ValueError} (e.g.
        L{bluegreen.admin.token.BadToken}) saying why it cannot be used.
    @return: What C{read} returned, or L{None} without a path.
    @raise usage.UsageError: If C{read} failed, prefixed with C{option}.
    """
    if path is None:
        return None
    try:
        return read(path)
    except ValueError as e:
        raise usage.UsageError(f"{option}: {e}") from None
