# -*- test-case-name: tests.test_proxy_integration -*-
# mypy: allow-untyped-calls
"""
Capturing the global log in a test, and failing it on logged errors.
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer

# Logs


@implementer(ILogObserver)
class LogCapture:
    """
    Collects every log event published while a test runs.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def errors(self) -> list[dict[str, Any]]:
        """
        The events that report errors (failures, C{isError}, level error or
        critical).
        """
        gc.collect()  # surface "Unhandled error in Deferred" now
        return [
            event
            for event in self.events
            if event.get("log_failure") is not None
            or event.get("isError")
            or getattr(event.get("log_level"), "name", "") in ("error", "critical")
        ]

    def namespace(self, namespace: str) -> list[dict[str, Any]]:
        """
        The events logged in C{namespace}.
        """
        return [e for e in self.events if e.get("log_namespace") == namespace]


def captureLogs(testCase: TestCase) -> LogCapture:
    """
    Capture the global log for the rest of the test.
    """
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    testCase.addCleanup(globalLogPublisher.removeObserver, capture)
    return capture


def failOnLoggedErrors(testCase: TestCase) -> LogCapture:
    """
    Capture the global log and fail the test if anything logged an error, a
    failure or an unhandled Deferred error (checked after the test's later
    cleanups, so errors logged while shutting down count too).
    """
    capture = captureLogs(testCase)

    def check() -> None:
        errors = capture.errors()
        testCase.assertEqual(
            [formatEvent(event) for event in errors],
            [],
            "errors were logged during the test",
        )

    testCase.addCleanup(check)
    return capture
