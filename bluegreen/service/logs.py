# -*- test-case-name: tests.test_logging -*-
"""
How the service logs: C{--log-format text} leaves twistd's own log
observer in place; C{--log-format json} writes one JSON object per event.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from twisted.logger import ILogObserver, LogEvent, formatEvent, formatTime
from zope.interface import implementer

# Keys of legacy log events that repeat what the record already says.
_JSON_SKIP = frozenset(("message", "format", "isError", "system"))


class TextStream(Protocol):
    """
    Where JSON lines go: a text stream such as C{sys.stdout}.
    """

    def write(self, text: str, /) -> object:
        """
        @param text: Text to write.
        """

    def flush(self) -> object:
        """
        Push what was written to the file.
        """


def jsonLinesObserver(stream: TextStream) -> ILogObserver:
    """
    A log observer writing each event as one line of JSON: C{time} (ISO
    8601), C{level}, C{namespace}, C{text} (the formatted message), every
    structured field whose value is a JSON scalar (e.g. C{env}, C{reason},
    C{to}), and C{traceback} for a failure.

    @param stream: Where to write.
    @return: The observer.
    """

    @implementer(ILogObserver)
    def observe(event: LogEvent) -> None:
        level = event.get("log_level")
        records = event.get("records")
        if event.get("log_namespace") == "bluegreen.access" and records:
            # A batch of access lines: one JSON object per request.
            for fields in records:
                access = {
                    "time": formatTime(fields["time"]),
                    "level": getattr(level, "name", "info"),
                    "namespace": "bluegreen.access",
                    **{k: v for k, v in fields.items() if k != "time"},
                }
                stream.write(json.dumps(access) + "\n")
            stream.flush()
            return
        record: dict[str, Any] = {
            "time": formatTime(event.get("log_time")),
            "level": getattr(level, "name", "info"),
            "namespace": event.get("log_namespace", "-"),
            "text": formatEvent(event),
        }
        for key, value in event.items():
            if key.startswith("log_") or key in _JSON_SKIP or key in record:
                continue
            if value is None or isinstance(value, (str, int, float, bool)):
                record[key] = value
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        stream.write(json.dumps(record) + "\n")
        stream.flush()

    return observe


def logObserverFor(logFormat: str, stream: TextStream) -> ILogObserver | None:
    """
    The log observer C{--log-format} asks for.

    @param logFormat: C{text} or C{json}.
    @param stream: Where C{json} lines go (standard output).
    @return: The observer for twistd's application, or L{None} to keep
        twistd's own text log.
    """
    return jsonLinesObserver(stream) if logFormat == "json" else None
