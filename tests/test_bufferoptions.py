# -*- test-case-name: tests.test_bufferoptions -*-
"""
Tests for L{bluegreen.service.bufferoptions}: the buffering options, their
defaults, and the message for each bad value.
"""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from bluegreen.proxy.spool import BufferSettings, defaultTempDir
from bluegreen.service.options import Options

REQUIRED = [
    "--green",
    "http://127.0.0.1:5002",
    "--blue",
    "http://127.0.0.1:5001",
    "--admin",
    "none",
]

SIZE = "(a whole number, optionally with K, M or G, e.g. 64k)"


def parse(*args: str) -> BufferSettings:
    """
    @return: The buffering settings of a command line with C{args}.
    """
    options = Options()
    options.parseOptions([*REQUIRED, *args])
    return options.config.buffering


class BufferOptionsTests(SynchronousTestCase):
    """
    The options become a L{BufferSettings}.
    """

    def test_defaults(self) -> None:
        """
        Both kinds of buffering are on by default, with the documented
        sizes, in C{bluegreen-UID} under the system's temporary directory.
        """
        self.assertEqual(
            parse(),
            BufferSettings(
                requestBuffering=True,
                responseBuffering=True,
                clientBodyBuffer=64 * 1024,
                maxBufferedBody=64 * 1024 * 1024,
                proxyBuffer=256 * 1024,
                maxTempFile=1024 * 1024 * 1024,
                tempDir=defaultTempDir(),
            ),
        )

    def test_given(self) -> None:
        """
        Every option is read, sizes with or without a suffix, in any case.
        """
        tempDir = self.mktemp()
        settings = parse(
            "--request-buffering",
            "off",
            "--response-buffering",
            "off",
            "--client-body-buffer",
            "8K",
            "--max-buffered-body",
            "1048576",
            "--proxy-buffer",
            "1m",
            "--max-temp-file",
            "2G",
            "--temp-dir",
            tempDir,
        )
        self.assertEqual(
            settings,
            BufferSettings(
                requestBuffering=False,
                responseBuffering=False,
                clientBodyBuffer=8 * 1024,
                maxBufferedBody=1024 * 1024,
                proxyBuffer=1024 * 1024,
                maxTempFile=2 * 1024 * 1024 * 1024,
                tempDir=os.path.abspath(tempDir),
            ),
        )


class BadBufferOptionTests(SynchronousTestCase):
    """
    Each bad value is a usage error naming the option and the problem.
    """

    def assertBad(self, message: str, *args: str) -> None:
        """
        Assert that C{args} fail with exactly C{message}.
        """
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, [*REQUIRED, *args]
        )
        self.assertEqual(str(error), message)

    def test_requestBuffering(self) -> None:
        """
        C{--request-buffering} is C{on} or C{off}.
        """
        self.assertBad(
            "--request-buffering: 'yes' must be 'on' or 'off'",
            "--request-buffering",
            "yes",
        )

    def test_responseBuffering(self) -> None:
        """
        C{--response-buffering} is C{on} or C{off}.
        """
        self.assertBad(
            "--response-buffering: '1' must be 'on' or 'off'",
            "--response-buffering",
            "1",
        )

    def test_clientBodyBuffer(self) -> None:
        """
        C{--client-body-buffer} is a size.
        """
        self.assertBad(
            f"--client-body-buffer: '64kb' is not a size in bytes {SIZE}",
            "--client-body-buffer",
            "64kb",
        )

    def test_maxBufferedBody(self) -> None:
        """
        C{--max-buffered-body} is a size, not a negative number.
        """
        self.assertBad(
            f"--max-buffered-body: '-1' is not a size in bytes {SIZE}",
            "--max-buffered-body",
            "-1",
        )

    def test_proxyBuffer(self) -> None:
        """
        C{--proxy-buffer} is a size of at least 1 KiB.
        """
        self.assertBad(
            f"--proxy-buffer: '100' is not a size in bytes >= 1024 {SIZE}",
            "--proxy-buffer",
            "100",
        )

    def test_maxTempFile(self) -> None:
        """
        C{--max-temp-file} is a size.
        """
        self.assertBad(
            f"--max-temp-file: '1.5g' is not a size in bytes {SIZE}",
            "--max-temp-file",
            "1.5g",
        )

    def test_tempDirIsAFile(self) -> None:
        """
        C{--temp-dir} must not be a file.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("")
        self.assertBad(f"--temp-dir: {path!r} is not a directory", "--temp-dir", path)

    def test_tempDirParentMissing(self) -> None:
        """
        C{--temp-dir} is made if missing, but only in an existing directory.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "a", "b")
        self.assertBad(
            f"--temp-dir: cannot create {path!r} (its parent is not a "
            "writable directory)",
            "--temp-dir",
            path,
        )

    def test_tempDirNotWritable(self) -> None:
        """
        C{--temp-dir} must be writable.
        """
        if os.getuid() == 0:
            # root writes anywhere: a read-only directory is still writable.
            path = "/proc"
        else:
            path = os.path.abspath(self.mktemp())
            os.makedirs(path)
            os.chmod(path, 0o500)
        if os.access(path, os.W_OK):
            self.skipTest(f"{path} is writable for this user")
        self.assertBad(f"--temp-dir: {path!r} is not writable", "--temp-dir", path)
