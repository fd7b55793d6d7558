# -*- test-case-name: tests.test_spool -*-
"""
Tests for L{bluegreen.proxy.spool}: the spool and body store keep bytes in
order across memory and a temporary file, count them, and give the file
back; the temporary directory is private, and a gone process's directory is
removed at start.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from types import SimpleNamespace
from typing import Any, cast

from twisted.trial.unittest import SynchronousTestCase

from bluegreen.proxy.body import RequestBody
from bluegreen.proxy.spool import (
    BodyStore,
    BufferSettings,
    Closeable,
    Spool,
    TempFiles,
)


def openTempFiles(directory: str) -> list[str]:
    """
    @return: What this process has open under C{directory}.
    """
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(os.path.join("/proc/self/fd", name))
        except OSError:
            continue
        if target.startswith(directory + os.sep):
            found.append(target)
    return found


def deadPid() -> int:
    """
    @return: The pid of a process that has ended (and been reaped).
    """
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


class TempFilesMixin:
    """
    A L{TempFiles} in a fresh directory.
    """

    def makeFiles(self: SynchronousTestCase) -> TempFiles:  # type: ignore[misc]
        """
        @return: A started L{TempFiles} (stopped at cleanup).
        """
        base = os.path.abspath(self.mktemp())
        files = TempFiles(BufferSettings(tempDir=base))
        files.startService()
        self.addCleanup(lambda: files.stopService() if files.running else None)
        return files


class SpoolTests(SynchronousTestCase, TempFilesMixin):
    """
    L{Spool} is a first-in first-out buffer: memory, then a file.
    """

    def test_memoryThenFile(self) -> None:
        """
        Bytes past the memory bound go to a file; reading gives them all
        back in order, and the figures follow.
        """
        files = self.makeFiles()
        spool = Spool(files, memoryLimit=10, diskLimit=100)
        spool.write(b"abcdef")
        self.assertEqual((files.stats.memory, files.stats.disk), (6, 0))
        spool.write(b"ghijkl")
        spool.write(b"mn")
        self.assertEqual((files.stats.memory, files.stats.disk), (6, 8))
        self.assertEqual(files.stats.files, 1)
        self.assertEqual(len(spool), 14)
        self.assertEqual(len(openTempFiles(files.directory)), 1)
        # The file is unlinked at once: nothing to find in the directory.
        self.assertEqual(os.listdir(files.directory), [])
        out = b""
        while True:
            data = spool.read(4)
            if not data:
                break
            out += data
        self.assertEqual(out, b"abcdefghijklmn")
        self.assertEqual((files.stats.memory, files.stats.disk), (0, 0))
        spool.close()
        self.assertEqual(files.stats.files, 0)
        self.assertEqual(openTempFiles(files.directory), [])

    def test_orderWhileFileHoldsData(self) -> None:
        """
        While the file holds bytes, new bytes go after them even if memory
        has room again; once the file is read out, memory is used again.
        """
        files = self.makeFiles()
        spool = Spool(files, memoryLimit=4, diskLimit=100)
        spool.write(b"1234")
        spool.write(b"5678")
        self.assertEqual(spool.read(), b"1234")
        spool.write(b"9")
        self.assertEqual(files.stats.disk, 5)
        self.assertEqual(spool.read(), b"56789")
        spool.write(b"ab")
        self.assertEqual((files.stats.memory, files.stats.disk), (2, 0))
        self.assertEqual(spool.read(), b"ab")
        spool.close()

    def test_full(self) -> None:
        """
        A spool is full once it holds its memory and disk bounds; with no
        disk, memory alone.
        """
        files = self.makeFiles()
        spool = Spool(files, memoryLimit=4, diskLimit=4)
        spool.write(b"1234567")
        self.assertFalse(spool.full)
        spool.write(b"8")
        self.assertTrue(spool.full)
        spool.close()
        memoryOnly = Spool(files, memoryLimit=4, diskLimit=0)
        memoryOnly.write(b"123456")
        self.assertTrue(memoryOnly.full)
        self.assertEqual(files.stats.files, 0)
        self.assertEqual(memoryOnly.read(100), b"123456")
        memoryOnly.close()

    def test_closeGivesBack(self) -> None:
        """
        Closing a spool with bytes in it takes them off the figures and
        closes its file; writing afterwards does nothing.
        """
        files = self.makeFiles()
        spool = Spool(files, memoryLimit=2, diskLimit=100)
        spool.write(b"abcdef")
        spool.close()
        spool.write(b"more")
        self.assertEqual(
            (files.stats.memory, files.stats.disk, files.stats.files), (0, 0, 0)
        )
        self.assertEqual(openTempFiles(files.directory), [])


class BodyStoreTests(SynchronousTestCase, TempFilesMixin):
    """
    L{BodyStore} keeps a whole body and reads it by offset, again and again.
    """

    def test_readTwice(self) -> None:
        """
        A body larger than memory is read back whole, twice.
        """
        files = self.makeFiles()
        store = BodyStore(files, memoryLimit=5)
        store.write(b"0123")
        store.write(b"456789")
        self.assertEqual((files.stats.memory, files.stats.disk), (5, 5))
        for _ in range(2):
            offset, out = 0, b""
            while data := store.read(offset, 3):
                out += data
                offset += len(data)
            self.assertEqual(out, b"0123456789")
        store.close()
        self.assertEqual(
            (files.stats.memory, files.stats.disk, files.stats.files), (0, 0, 0)
        )
        self.assertEqual(openTempFiles(files.directory), [])


class TempFilesTests(SynchronousTestCase):
    """
    L{TempFiles} owns a private directory per process.
    """

    def test_private(self) -> None:
        """
        The directories are made with mode 0700, and a base directory others
        could read is made private.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        os.chmod(base, 0o755)
        files = TempFiles(BufferSettings(tempDir=base))
        files.startService()
        self.addCleanup(files.stopService)
        self.assertEqual(stat.S_IMODE(os.stat(base).st_mode), 0o700)
        self.assertEqual(files.directory, os.path.join(base, str(os.getpid())))
        self.assertEqual(stat.S_IMODE(os.stat(files.directory).st_mode), 0o700)

    def test_staleRemoved(self) -> None:
        """
        At start, the directory of a process that is gone is removed with
        what it holds; a live process's directory is left alone.
        """
        base = os.path.abspath(self.mktemp())
        stale = os.path.join(base, str(deadPid()))
        live = os.path.join(base, str(os.getppid()))
        for directory in (stale, live):
            os.makedirs(directory)
            with open(os.path.join(directory, "1"), "wb") as f:
                f.write(b"left behind")
        files = TempFiles(BufferSettings(tempDir=base))
        files.startService()
        self.addCleanup(files.stopService)
        self.assertFalse(os.path.exists(stale))
        self.assertTrue(os.path.exists(os.path.join(live, "1")))

    def test_stopClosesEverything(self) -> None:
        """
        Stopping closes every file still open and removes the directory.
        """
        base = os.path.abspath(self.mktemp())
        files = TempFiles(BufferSettings(tempDir=base))
        files.startService()
        spool = Spool(files, memoryLimit=1, diskLimit=100)
        spool.write(b"abc")
        store = BodyStore(files, memoryLimit=1)
        store.write(b"abc")
        self.assertEqual(len(openTempFiles(base)), 2)
        files.stopService()
        self.assertEqual(openTempFiles(base), [])
        self.assertEqual(
            (files.stats.memory, files.stats.disk, files.stats.files), (0, 0, 0)
        )
        self.assertFalse(os.path.exists(files.directory))

    def test_directoryRemovedUnderUs(self) -> None:
        """
        If the directory is removed while the proxy runs (a cleaner of the
        system's temporary directory, say), the next file makes it again.
        """
        base = os.path.abspath(self.mktemp())
        files = TempFiles(BufferSettings(tempDir=base))
        files.startService()
        self.addCleanup(files.stopService)
        os.rmdir(files.directory)
        spool = Spool(files, memoryLimit=1, diskLimit=100)
        spool.write(b"abc")
        self.assertEqual(files.stats.files, 1)
        self.assertTrue(os.path.isdir(files.directory))
        self.assertEqual(spool.read(), b"abc")
        spool.close()

    def test_notADirectory(self) -> None:
        """
        A base directory that is not a directory is refused (L{OSError}).
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("")
        files = TempFiles(BufferSettings(tempDir=path))
        self.assertRaises(OSError, files.checkBase)


class _DiskFull(TempFiles):
    """
    Temporary files that cannot be made: the disk is full.
    """

    def openFile(self, holder: Closeable) -> int:
        """
        @raise OSError: Always (C{ENOSPC}).
        """
        raise OSError(errno.ENOSPC, "No space left on device")


class _Upstream:
    """
    What a request body is sent on, recorded.
    """

    def __init__(self) -> None:
        self.body = b""
        self.ended = False

    def registerBodyProducer(self, producer: object) -> None:
        """
        Nothing to pause in this fake.
        """

    def unregisterBodyProducer(self) -> None:
        """
        Nothing to pause in this fake.
        """

    def writeBody(self, data: bytes) -> None:
        """
        Record the bytes.
        """
        self.body += data

    def endBody(self) -> None:
        """
        Record the end.
        """
        self.ended = True


class BodyFallbackTests(SynchronousTestCase):
    """
    A request body whose temporary file cannot be written streams instead,
    every byte in order.
    """

    def test_diskFullStreams(self) -> None:
        """
        The disk is full when the body first passes the memory bound: what
        was received is sent, in order, and the rest as it comes.
        """
        files = _DiskFull(BufferSettings(tempDir=os.path.abspath(self.mktemp())))
        request: Any = SimpleNamespace(channel=None)
        body = RequestBody(request, None)
        body.dataReceived(b"ab")
        self.assertTrue(body.buffer(files, memoryLimit=4, limit=1000))
        ready: list[bool] = []
        body.whenReady(lambda: ready.append(True))
        body.dataReceived(b"cdefgh")
        self.assertEqual(ready, [True])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        upstream = _Upstream()
        body.attach(cast(Any, upstream))
        body.dataReceived(b"ij")
        body.finished()
        self.assertEqual((upstream.body, upstream.ended), (b"abcdefghij", True))
        self.assertEqual((files.stats.memory, files.stats.disk), (0, 0))


class SpoolFallbackTests(SynchronousTestCase):
    """
    A spool whose temporary file cannot be made keeps to memory, and is then
    full (so the upstream is paused).
    """

    def test_diskFullMemoryOnly(self) -> None:
        """
        Past the memory bound with no file to be had, the bytes are kept in
        memory, in order, and the spool says it is full.
        """
        files = _DiskFull(BufferSettings(tempDir=os.path.abspath(self.mktemp())))
        spool = Spool(files, memoryLimit=4, diskLimit=100)
        spool.write(b"abc")
        self.assertFalse(spool.full)
        spool.write(b"defg")
        self.assertTrue(spool.full)
        self.assertEqual((files.stats.memory, files.stats.disk), (7, 0))
        self.assertEqual(spool.read(), b"abc")
        self.assertEqual(spool.read(), b"defg")
        spool.close()
        self.assertEqual(files.stats.memory, 0)
