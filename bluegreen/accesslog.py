# -*- test-case-name: tests.test_accesslog -*-
"""
One line per proxied request, through L{twisted.logger}.
"""

from __future__ import annotations

from typing import IO, Any

from twisted.logger import (
    ILogObserver,
    Logger,
    formatEvent,
    formatTime,
)
from zope.interface import implementer

#: The access line's format (a twisted.logger format string).
FORMAT = (
    '{client} "{method} {path} {protocol}" {status} {bytes} {environment} '
    "{duration:.1f}ms"
)


#: Timestamps in the access log file: ISO 8601 with the UTC offset.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


@implementer(ILogObserver)
class _LineWriter:
    """
    Writes each access event as one timestamped line to an open file.
    """

    def __init__(self, file: IO[str]) -> None:
        self.file = file

    def __call__(self, event: dict[str, Any]) -> None:
        when = formatTime(event.get("log_time"), timeFormat=TIME_FORMAT)
        self.file.write(f"{when} {formatEvent(event)}\n")
        self.file.flush()


class AccessLog:
    """
    Records proxied requests.

    @ivar logger: Where the events go: the service's log (C{-}) or a file.
    """

    def __init__(self, logger: Logger, file: IO[str] | None = None) -> None:
        """
        @param logger: Emits the events.
        @param file: The file the logger writes to, closed by L{close}.
        """
        self.logger = logger
        self._file = file

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
        file = open(value, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        return cls(
            Logger(namespace="bluegreen.access", observer=_LineWriter(file)), file
        )

    def record(
        self, request: Any, environment: str, status: int, size: int, duration: float
    ) -> None:
        """
        Log one request.

        @param request: The client's request.
        @param environment: The environment that served it.
        @param status: The status sent (499 when the client left first).
        @param size: Response body bytes sent.
        @param duration: Seconds from arrival to the end.
        """
        address = request.getClientAddress()
        self.logger.info(
            FORMAT,
            client=getattr(address, "host", None) or "-",
            method=request.method.decode("latin-1"),
            path=request.uri.decode("latin-1"),
            protocol=request.clientproto.decode("latin-1"),
            status=status,
            bytes=size,
            environment=environment,
            duration=duration * 1000.0,
        )

    def close(self) -> None:
        """
        Close the log file, if there is one.
        """
        if self._file is not None:
            self._file.close()
            self._file = None
