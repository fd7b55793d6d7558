# -*- test-case-name: tests.test_token -*-
"""
The admin API's bearer token file, read the same way by the service and by
the C{bluegreen} command (which must not import the server to do it).
"""

from __future__ import annotations

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
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_FILE + 1)
    except OSError as e:
        raise BadToken(f"cannot read {path!r}: {e.strerror}") from None
    token = data.strip()
    if not token:
        raise BadToken(f"{path!r} is empty")
    if len(data) > MAX_TOKEN_FILE or not all(0x21 <= byte <= 0x7E for byte in token):
        raise BadToken(
            f"{path!r} must hold one token of printable ASCII characters without spaces"
        )
    return token
