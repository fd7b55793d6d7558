# -*- test-case-name: tests.test_proxy_forwarding -*-
"""
One line per proxied request: into a file of its own, or in batches into
the service's log.

The line is formatted once, here, with a plain f-string.  In a file, each
line is an event of a private logger whose observer writes it to a buffered
file, flushed every L{FLUSH_INTERVAL}.  In the service's log (C{--access-log
-}, the default), lines are collected and logged as one event per
L{FLUSH_INTERVAL} (or per L{BATCH_LINES}): twistd's log observer formats the
time and flushes its file for every event, which cost the proxy a third of
its throughput when each request was an event.
"""

from __future__ import annotations

import time
from typing import IO, Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger
from twisted.web.http import Request
from zope.interface import implementer

#: How often a file access log is flushed, and a batch of lines is logged
#: into the service's log, in seconds.
FLUSH_INTERVAL = 1.0

#: The most lines held for the service's log before they are logged.
BATCH_LINES = 1000


class _Stamps:
    """
    Local ISO 8601 times to the second, each formatted once: a busy proxy
    logs many lines a second, and C{strftime} per line would show.
    """

    def __init__(self) -> None:
        self._second = -1
        self._stamp = ""

    def __call__(self, when: float) -> str:
        """
        @param when: Seconds since the epoch.
        @return: C{when} as a local ISO 8601 time to the second.
        """
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
        return self._stamp


@implementer(ILogObserver)
class _LineWriter:
    """
    Writes each access event as one line, prefixed with its local time in
    ISO 8601, to an open (buffered) file.
    """

    def __init__(self, file: IO[str]) -> None:
        self.file = file
        self._stamps = _Stamps()

    def __call__(self, event: dict[str, Any]) -> None:
        stamp = self._stamps(event.get("log_time") or time.time())
        self.file.write(f"{stamp} {event['line']}\n")


class AccessLog:
    """
    Records proxied requests.

    @ivar logger: Where the events go: the service's log (C{-}) or a file.
    """

    def __init__(
        self, logger: Logger, file: IO[str] | None = None, batched: bool = False
    ) -> None:
        """
        @param logger: Emits the events.
        @param file: The file the logger writes to; flushed every
            L{FLUSH_INTERVAL} seconds once L{start} is called, closed by
            L{close}.
        @param batched: Log lines in batches (see L{flush}) rather than one
            event per request.
        """
        self.logger = logger
        self._file = file
        self._flusher: LoopingCall | None = None
        self._batched = batched
        self._lines: list[str] = []
        self._records: list[dict[str, Any]] = []
        self._stamps = _Stamps()

    @classmethod
    def fromOption(cls, value: str) -> AccessLog | None:
        """
        Build the access log an C{--access-log} value asks for.

        @param value: C{-} (the service's log), C{none}, or a file path
            (appended to).
        @return: The access log, or L{None} for C{none}.
        @raise OSError: If the file cannot be opened for appending.
        """
        if value == "none":
            return None
        if value == "-":
            return cls(Logger(namespace="bluegreen.access"), batched=True)
        file = open(value, "a", encoding="utf-8")
        return cls(
            Logger(namespace="bluegreen.access", observer=_LineWriter(file)), file
        )

    def start(self, clock: IReactorTime) -> None:
        """
        Flush periodically: a file log's buffer, or the lines held for the
        service's log.

        @param clock: Times the flushes.
        """
        if (self._file is not None or self._batched) and self._flusher is None:
            self._flusher = LoopingCall(self.flush)
            self._flusher.clock = clock
            self._flusher.start(FLUSH_INTERVAL, now=False)

    def record(
        self,
        request: Request,
        environment: str,
        status: int,
        size: int,
        duration: float,
        tail: str = "",
        **extra: object,
    ) -> None:
        """
        Log one request.

        @param request: The client's request.
        @param environment: The environment that served it.
        @param status: The status sent (499 when the client left first).
        @param size: Response body bytes sent.
        @param duration: Seconds from arrival to the end.
        @param tail: More words at the end of the line (a tunnel's byte
            counts), if any.
        @param extra: More structured fields, for JSON logs.
        """
        client = getattr(request.getClientAddress(), "host", None) or "-"
        method = request.method.decode("latin-1")
        path = request.uri.decode("latin-1")
        protocol = request.clientproto.decode("latin-1")
        milliseconds = duration * 1000.0
        line = (
            f'{client} "{method} {path} {protocol}" {status} {size} {environment} '
            f"{milliseconds:.1f}ms"
        )
        if tail:
            line = f"{line} {tail}"
        fields: dict[str, Any] = {
            "client": client,
            "method": method,
            "path": path,
            "status": status,
            "bytes": size,
            "environment": environment,
            "duration": duration,
            **extra,
        }
        if not self._batched:
            self.logger.info("{line}", line=line, **fields)
            return
        now = time.time()
        fields["time"] = now
        self._lines.append(f"{self._stamps(now)} {line}")
        self._records.append(fields)
        if len(self._lines) >= BATCH_LINES:
            self.flush()

    def flush(self) -> None:
        """
        Log the lines held for the service's log as one event (its
        C{records} hold each request's fields), or flush the file.
        """
        if self._file is not None:
            self._file.flush()
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        records, self._records = self._records, []
        self.logger.info(
            "access log, {count} requests:\n{lines}",
            count=len(lines),
            lines="\n".join(lines),
            records=records,
        )

    def close(self) -> None:
        """
        Stop flushing; log what is held; flush and close the log file, if
        there is one.
        """
        if self._flusher is not None and self._flusher.running:
            self._flusher.stop()
        self._flusher = None
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
