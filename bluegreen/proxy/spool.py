# -*- test-case-name: tests.test_spool,tests.test_buffering -*-
"""
Where the proxy keeps bytes a slow peer has not taken yet: in memory up to a
bound, then in a temporary file.

L{BufferSettings} says how much (the C{--request-buffering},
C{--response-buffering}, C{--client-body-buffer}, C{--max-buffered-body},
C{--proxy-buffer}, C{--max-temp-file} and C{--temp-dir} options).
L{TempFiles} owns the process's temporary directory (C{<temp-dir>/<pid>},
mode 0700): it creates it at start, removes the directories of processes
that are gone (a killed proxy leaves one behind), counts the bytes held in
memory and on disk (L{BufferStats}), and closes every file at stop.  Each
file is unlinked as soon as it is opened (as nginx does with its proxy
temporary files), so it lives exactly as long as its descriptor: closing it,
or the process ending for any reason, gives the disk space back.

L{Spool} is a first-in first-out buffer for a response the client reads
slower than the upstream sends; L{BodyStore} keeps a whole request body, so
it can be sent (and sent again) once it is complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections import deque
from typing import Protocol

from attrs import define, field, frozen
from twisted.application.service import Service
from twisted.logger import Logger

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: The largest piece read back from a spool or store at once.
READ_SIZE = 64 * KiB

_log = Logger(namespace="bluegreen.proxy")


@frozen
class BufferSettings:
    """
    How the proxy buffers bodies.

    @ivar requestBuffering: Receive a request body whole before taking an
        upstream connection (C{--request-buffering on}).
    @ivar responseBuffering: Read a response ahead of a slow client
        (C{--response-buffering on}), so the upstream connection is free as
        soon as the upstream has sent it.
    @ivar clientBodyBuffer: Bytes of a request body kept in memory; the rest
        goes to a temporary file.
    @ivar maxBufferedBody: A request body declared larger (C{Content-Length})
        streams to the upstream as it arrives, as with request buffering
        off; a chunked body past this size has its first part sent, then
        streams.
    @ivar proxyBuffer: Bytes of a response kept in memory for a slow client;
        the rest goes to a temporary file.
    @ivar maxTempFile: Bytes of a response kept on disk for a slow client;
        past it the upstream is paused until the client catches up (0: no
        temporary file, memory only).
    @ivar tempDir: The directory the per-process temporary directory is made
        in.
    """

    requestBuffering: bool = True
    responseBuffering: bool = True
    clientBodyBuffer: int = 64 * KiB
    maxBufferedBody: int = 64 * MiB
    proxyBuffer: int = 256 * KiB
    maxTempFile: int = 1 * GiB
    tempDir: str = field(factory=lambda: defaultTempDir())


def defaultTempDir() -> str:
    """
    @return: The default C{--temp-dir}: C{bluegreen-<uid>} in the system's
        temporary directory.
    """
    return os.path.join(tempfile.gettempdir(), f"bluegreen-{os.getuid()}")


@define
class BufferStats:
    """
    What the proxy holds for slow peers right now, and since start.

    @ivar memory: Bytes in memory (spools and request bodies).
    @ivar disk: Bytes in temporary files.
    @ivar files: Temporary files open.
    @ivar spilled: Bodies that went to disk, since start.
    """

    memory: int = 0
    disk: int = 0
    files: int = 0
    spilled: int = 0

    def asDict(self) -> dict[str, int]:
        """
        @return: The figures, for C{/api/status}.
        """
        return {
            "memoryBytes": self.memory,
            "diskBytes": self.disk,
            "tempFiles": self.files,
            "spilledTotal": self.spilled,
        }


class Closeable(Protocol):
    """
    Something holding a temporary file that L{TempFiles.stopService} closes.
    """

    def close(self) -> None:
        """
        Give back the memory and the file.
        """


def _alive(pid: int) -> bool:
    """
    @return: C{False} if no process C{pid} exists.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TempFiles(Service):
    """
    The process's temporary directory and the accounts of what is buffered.

    @ivar settings: The buffering settings.
    @ivar stats: Bytes held now.
    @ivar directory: This process's directory (C{<tempDir>/<pid>}).
    """

    def __init__(self, settings: BufferSettings) -> None:
        """
        @param settings: The buffering settings.
        """
        self.settings = settings
        self.stats = BufferStats()
        self.directory = os.path.join(settings.tempDir, str(os.getpid()))
        self._holders: set[Closeable] = set()
        self._ready = False
        self._counter = 0

    def checkBase(self) -> None:
        """
        Make C{--temp-dir} if it is missing (mode 0700), and check that it is
        a directory of ours that only we can read.

        @raise OSError: If it cannot be made, or belongs to another user.
        """
        base = self.settings.tempDir
        os.makedirs(base, mode=0o700, exist_ok=True)
        info = os.lstat(base)
        if not stat.S_ISDIR(info.st_mode):
            raise OSError(errno.ENOTDIR, "not a directory", base)
        if info.st_uid != os.getuid():
            raise OSError(errno.EPERM, "belongs to another user", base)
        if info.st_mode & 0o077:
            os.chmod(base, 0o700)

    def prepare(self) -> None:
        """
        Make the directories (mode 0700) and remove those of processes that
        are gone.

        @raise OSError: If the directory cannot be made or is not private.
        """
        self.checkBase()
        base = self.settings.tempDir
        self.directory = os.path.join(base, str(os.getpid()))
        for name in os.listdir(base):
            if name.isdigit() and int(name) != os.getpid() and not _alive(int(name)):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)
                _log.info(
                    "removed the temporary files of process {pid}, which is gone",
                    pid=name,
                )
        # Shared by every proxy of this process (tests run several).
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._ready = True

    def startService(self) -> None:
        """
        Prepare the directory (see L{prepare}).
        """
        super().startService()
        if not self._ready:
            try:
                self.prepare()
            except OSError as e:
                # Bodies then stream (see RequestBody and Exchange).
                _log.error(
                    "cannot prepare the temporary directory {path}: {error}",
                    path=self.directory,
                    error=e.strerror,
                )

    def stopService(self) -> None:
        """
        Close every temporary file still open and remove the directory.
        """
        super().stopService()
        for holder in list(self._holders):
            holder.close()
        self._holders.clear()
        if self._ready:
            self._ready = False
            with contextlib.suppress(OSError):
                # Empty unless another proxy of this process is running.
                os.rmdir(self.directory)

    def openFile(self, holder: Closeable) -> int:
        """
        A new temporary file, already unlinked.

        @param holder: Closed at stop if it has not closed itself by then.
        @return: A file descriptor open for reading and writing.
        @raise OSError: If the file cannot be made.
        """
        if not self._ready:
            self.prepare()
        self._counter += 1
        path = os.path.join(self.directory, f"{id(self):x}-{self._counter}")
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            # The directory was removed under us: make it again.
            self.prepare()
            fd = os.open(path, flags, 0o600)
        os.unlink(path)
        self._holders.add(holder)
        self.stats.files += 1
        self.stats.spilled += 1
        return fd

    def closeFile(self, holder: Closeable, fd: int) -> None:
        """
        Close a file from L{openFile}.

        @param holder: What L{openFile} was given.
        @param fd: The descriptor.
        """
        self._holders.discard(holder)
        self.stats.files -= 1
        os.close(fd)


class Spool:
    """
    A first-in first-out byte buffer: memory up to C{memoryLimit}, then a
    temporary file up to C{diskLimit}.

    Data written while the file holds some goes to the file, so order is
    kept; once the file is read to its end it is truncated, and memory is
    used again.
    """

    def __init__(self, files: TempFiles, memoryLimit: int, diskLimit: int) -> None:
        """
        @param files: Where temporary files come from and bytes are counted.
        @param memoryLimit: Bytes held in memory.
        @param diskLimit: Bytes held on disk (0: none).
        """
        self._files = files
        self._memoryLimit = memoryLimit
        self._diskLimit = diskLimit
        self._memory: deque[bytes] = deque()
        self._memoryBytes = 0
        self._fd: int | None = None
        self._readAt = 0
        self._writeAt = 0
        self._closed = False

    def __len__(self) -> int:
        """
        @return: Bytes held.
        """
        return self._memoryBytes + self._writeAt - self._readAt

    @property
    def full(self) -> bool:
        """
        C{True} when the writer should be paused.
        """
        return len(self) >= self._memoryLimit + self._diskLimit

    def write(self, data: bytes) -> None:
        """
        Add bytes at the end.

        @param data: The bytes.
        @raise OSError: If the temporary file cannot be made or written.
        """
        if self._closed or not data:
            return
        stats = self._files.stats
        if self._writeAt == self._readAt and (
            self._memoryBytes + len(data) <= self._memoryLimit or not self._diskLimit
        ):
            self._memory.append(data)
            self._memoryBytes += len(data)
            stats.memory += len(data)
            return
        if self._fd is None:
            try:
                self._fd = self._files.openFile(self)
            except OSError as e:
                # No file (disk full, say): memory only from now on, so the
                # spool is full and the writer is paused (backpressure).
                _log.warn(
                    "cannot make a temporary file ({error}): a slow client's "
                    "response waits in memory only",
                    error=e.strerror,
                )
                self._diskLimit = 0
                self._memory.append(data)
                self._memoryBytes += len(data)
                stats.memory += len(data)
                return
        written = os.pwrite(self._fd, data, self._writeAt)
        while written < len(data):
            written += os.pwrite(self._fd, data[written:], self._writeAt + written)
        self._writeAt += len(data)
        stats.disk += len(data)

    def read(self, size: int = READ_SIZE) -> bytes:
        """
        Take bytes from the start.

        @param size: The most to take.
        @return: Up to C{size} bytes (empty when the spool is).
        """
        stats = self._files.stats
        if self._memory:
            data = self._memory.popleft()
            if len(data) > size:
                self._memory.appendleft(data[size:])
                data = data[:size]
            self._memoryBytes -= len(data)
            stats.memory -= len(data)
            return data
        if self._fd is None or self._readAt == self._writeAt:
            return b""
        data = os.pread(self._fd, min(size, self._writeAt - self._readAt), self._readAt)
        self._readAt += len(data)
        stats.disk -= len(data)
        if self._readAt == self._writeAt:
            os.ftruncate(self._fd, 0)
            self._readAt = self._writeAt = 0
        return data

    def close(self) -> None:
        """
        Drop what is held and close the file.
        """
        if self._closed:
            return
        self._closed = True
        stats = self._files.stats
        stats.memory -= self._memoryBytes
        stats.disk -= self._writeAt - self._readAt
        self._memory.clear()
        self._memoryBytes = 0
        self._readAt = self._writeAt = 0
        fd, self._fd = self._fd, None
        if fd is not None:
            self._files.closeFile(self, fd)


class BodyStore:
    """
    A whole request body: its first C{memoryLimit} bytes in memory, the rest
    in a temporary file; read by offset, as often as needed.
    """

    def __init__(self, files: TempFiles, memoryLimit: int) -> None:
        """
        @param files: Where temporary files come from and bytes are counted.
        @param memoryLimit: Bytes held in memory.
        """
        self._files = files
        self._memoryLimit = memoryLimit
        self._memory = bytearray()
        self._fd: int | None = None
        self._fileBytes = 0
        self._closed = False

    def __len__(self) -> int:
        """
        @return: Bytes held.
        """
        return len(self._memory) + self._fileBytes

    def write(self, data: bytes) -> None:
        """
        Add bytes at the end.

        @param data: The bytes.
        @raise OSError: If the temporary file cannot be made or written.
        """
        if self._closed:
            return
        stats = self._files.stats
        room = self._memoryLimit - len(self._memory)
        if room > 0 and not self._fileBytes:
            head, data = data[:room], data[room:]
            self._memory += head
            stats.memory += len(head)
        if not data:
            return
        if self._fd is None:
            self._fd = self._files.openFile(self)
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, self._fileBytes)
            self._fileBytes += written
            stats.disk += written
            view = view[written:]

    def read(self, offset: int, size: int = READ_SIZE) -> bytes:
        """
        Bytes from C{offset} on.

        @param offset: Where to start.
        @param size: The most to return.
        @return: Up to C{size} bytes (empty at the end).
        """
        inMemory = len(self._memory)
        if offset < inMemory:
            return bytes(self._memory[offset : offset + size])
        if self._fd is None:
            return b""
        offset -= inMemory
        return os.pread(self._fd, min(size, self._fileBytes - offset), offset)

    def close(self) -> None:
        """
        Drop what is held and close the file.
        """
        if self._closed:
            return
        self._closed = True
        stats = self._files.stats
        stats.memory -= len(self._memory)
        stats.disk -= self._fileBytes
        self._memory = bytearray()
        self._fileBytes = 0
        fd, self._fd = self._fd, None
        if fd is not None:
            self._files.closeFile(self, fd)
