# -*- test-case-name: tests.test_token,tests.test_options_safety -*-
"""
The admin API's bearer token file, read the same way by the service and by
the C{bluegreen} command (which must not import the server to do it).

The service refuses a token file that its group or other users could read
or write (L{readPrivateToken}), as OpenSSH refuses an unprotected private
key.  The command does not: its file is the operator's own copy of a
secret they already hold, and refusing it would only break their scripts.
"""

from __future__ import annotations

import os
import shlex
import stat

#: The largest token file read, in bytes.
MAX_TOKEN_FILE = 64 * 1024


class BadToken(ValueError):
    """
    A token file that cannot be used; the message says why.
    """


def readToken(path: str) -> bytes:
    """
    Read a bearer token from a file: its content without surrounding
    whitespace (so a trailing newline does not count).

    @param path: The file.
    @return: The token.
    @raise BadToken: If the file cannot be read, is empty, or holds
        something that cannot be sent in an C{Authorization} header
        (anything but printable ASCII without spaces).
    """
    return _parse(path, _read(path, private=False))


def readPrivateToken(path: str) -> bytes:
    """
    Read a bearer token from a file that only its owner may read or write
    (the service's C{--admin-token-file}), as L{readToken} does.

    @param path: The file.
    @return: The token.
    @raise BadToken: As L{readToken}, and if the file's group or other
        users may read or write it (the message gives the C{chmod} to run).
    """
    return _parse(path, _read(path, private=True))


def _read(path: str, private: bool) -> bytes:
    """
    @return: The first bytes of C{path} (one more than a token may have).
    @raise BadToken: If it cannot be read, or (C{private}) it is open to
        others.
    """
    try:
        with open(path, "rb") as f:
            # The mode of the file opened, not of whatever the path names
            # by the time it is checked.
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            if private and mode & 0o077:
                raise BadToken(
                    f"{path!r} is {_openTo(mode)} (mode {mode:04o}); run: "
                    f"chmod 600 {shlex.quote(path)}"
                )
            return f.read(MAX_TOKEN_FILE + 1)
    except OSError as e:
        raise BadToken(f"cannot read {path!r}: {e.strerror}") from None


def _openTo(mode: int) -> str:
    """
    @return: Who else may read or write a file of this mode, in words.
    """
    if mode & stat.S_IROTH:
        return "readable by others"
    if mode & stat.S_IRGRP:
        return "readable by its group"
    if mode & stat.S_IWOTH:
        return "writable by others"
    if mode & stat.S_IWGRP:
        return "writable by its group"
    return "open to its group or others"


def _parse(path: str, data: bytes) -> bytes:
    """
    @return: The token C{data} holds.
    @raise BadToken: If it holds none, or not a usable one.
    """
    token = data.strip()
    if not token:
        raise BadToken(f"{path!r} is empty")
    if len(data) > MAX_TOKEN_FILE or not all(0x21 <= byte <= 0x7E for byte in token):
        raise BadToken(
            f"{path!r} must hold one token of printable ASCII characters without spaces"
        )
    return token
