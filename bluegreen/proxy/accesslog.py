# -*- test-case-name: tests.test_proxy_forwarding -*-
"""
One line per proxied request, through L{twisted.logger}.

The line is formatted once, here, with a plain f-string, and carried in the
event as C{line} (alongside the structured fields): twisted.logger's format
machinery on every request would cost the proxy a third of its throughput.
"""

from __future__ import annotations

import time
from typing import IO, Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger
from twisted.web.http import Request
from zope.interface import implementer

#: How often a file access log is flushed, in seconds.
FLUSH_INTERVAL = 1.0


@implementer(ILogObserver)
class _LineWriter:
    """
    Writes each access event as one line, prefixed with its local time in
    ISO 8601, to an open (buffered) file.
    """

    def __init__(self, file: IO[str]) -> None:
        self.file = file
        self._second = -1
        self._stamp = ""

    def __call__(self, event: dict[str, Any]) -> None:
        when = event.get("log_time") or time.time()
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
        self.file.write(f"{self._stamp} {event['line']}\n")


class AccessLog:
    """
    Records proxied requests.

    @ivar logger: Where the events go: the service's log (C{-}) or a file.
    """

    def __init__(self, logger: Logger, file: IO[str] | None = None) -> None:
        """
        @param logger: Emits the events.
        @param file: The file the logger writes to; flushed every
            L{FLUSH_INTERVAL} seconds once L{start} is called, closed by
            L{close}.
        """
        self.logger = logger
        self._file = file
        self._flusher: LoopingCall | None = None

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
            return cls(Logger(namespace="bluegreen.access"))
        file = open(value, "a", encoding="utf-8")
        return cls(
            Logger(namespace="bluegreen.access", observer=_LineWriter(file)), file
        )

    def start(self, clock: IReactorTime) -> None:
        """
        Flush a file log periodically (lines are buffered between flushes).

        @param clock: Times the flushes.
        """
        if self._file is not None and self._flusher is None:
            self._flusher = LoopingCall(self._file.flush)
            self._flusher.clock = clock
            self._flusher.start(FLUSH_INTERVAL, now=False)

    def record(
        self,
        request: Request,
        environment: str,
        status: int,
        size: int,
        duration: float,
    ) -> None:
        """
        Log one request.

        @param request: The client's request.
        @param environment: The environment that served it.
        @param status: The status sent (499 when the client left first).
        @param size: Response body bytes sent.
        @param duration: Seconds from arrival to the end.
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
        self.logger.info(
            "{line}",
            line=line,
            client=client,
            method=method,
            path=path,
            status=status,
            bytes=size,
            environment=environment,
            duration=duration,
        )

    def close(self) -> None:
        """
        Stop flushing, flush and close the log file, if there is one.
        """
        if self._flusher is not None and self._flusher.running:
            self._flusher.stop()
        self._flusher = None
        if self._file is not None:
            self._file.close()
            self._file = None
