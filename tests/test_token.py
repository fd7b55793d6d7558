# -*- test-case-name: tests.test_token -*-
"""
Tests for L{bluegreen.admin.token}: reading the admin API's token file.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bluegreen.admin.token import MAX_TOKEN_FILE, BadToken, readToken


class ReadTokenTests(SynchronousTestCase):
    """
    L{readToken}.
    """

    def test_readToken(self) -> None:
        """
        The token is the file's content without the white space around it.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\n  abc.DEF-123_~+/=  \r\n")
        self.assertEqual(readToken(path), b"abc.DEF-123_~+/=")

    def test_readTokenTooLarge(self) -> None:
        """
        A token file larger than 64 KiB is refused (it is not a token).
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"x" * (MAX_TOKEN_FILE + 1))
        self.assertRaises(BadToken, readToken, path)
