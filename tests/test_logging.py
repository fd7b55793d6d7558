# -*- test-case-name: tests.test_logging -*-
"""
Tests for C{--log-format}: twistd's text log or one JSON object per event.
"""

from __future__ import annotations

import io
import json
import os
import sys

from twisted.application.service import Application, IService, MultiService
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bluegreen.service.logs import jsonLinesObserver
from bluegreen.service.tap import Options, ProxyService, makeService
from tests._util import proxyArguments

REQUIRED = proxyArguments(
    "http://127.0.0.1:5002", "http://127.0.0.1:5001", "--admin", "none"
)


class JSONObserverTests(SynchronousTestCase):
    """
    L{jsonLinesObserver} writes one parseable line per event.
    """

    def record(self, emit: object) -> dict[str, object]:
        """
        Emit through a logger observed by a JSON observer; return the record.
        """
        stream = io.StringIO()
        log = Logger(namespace="bluegreen.test", observer=jsonLinesObserver(stream))
        assert callable(emit)
        emit(log)
        lines = stream.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        record = json.loads(lines[0])
        assert isinstance(record, dict)
        return record

    def test_fields(self) -> None:
        """
        The record has the time, level, namespace, formatted text and the
        event's scalar fields; objects that are not JSON are left out.
        """
        record = self.record(
            lambda log: log.warn(
                "switched {source} -> {to}",
                source="green",
                to="blue",
                up=False,
                count=3,
                opaque=object(),
            )
        )
        self.assertEqual(record["level"], "warn")
        self.assertEqual(record["namespace"], "bluegreen.test")
        self.assertEqual(record["text"], "switched green -> blue")
        self.assertEqual(
            (record["source"], record["to"], record["up"], record["count"]),
            ("green", "blue", False, 3),
        )
        self.assertNotIn("opaque", record)
        self.assertRegex(str(record["time"]), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")

    def test_failure(self) -> None:
        """
        A logged failure carries its traceback.
        """
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            failure = Failure()
        record = self.record(lambda log: log.failure("it broke", failure))
        self.assertEqual(record["level"], "critical")
        self.assertIn("ZeroDivisionError", str(record["traceback"]))


class OptionTests(SynchronousTestCase):
    """
    C{--log-format} is checked and wired into twistd's application.
    """

    def test_bad(self) -> None:
        """
        Anything but text or json is a usage error naming the option.
        """
        options = Options()
        error = self.assertRaises(
            usage.UsageError,
            options.parseOptions,
            [*REQUIRED, "--log-format", "xml"],
        )
        self.assertEqual(str(error), "--log-format: 'xml' must be 'text' or 'json'")

    def test_text(self) -> None:
        """
        By default the application gets no observer: twistd's text log runs.
        """
        options = Options()
        options.parseOptions(REQUIRED)
        service = makeService(options)
        application = Application("bluegreen")
        service.setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))

    def test_json(self) -> None:
        """
        With json, the application's log observer is the JSON one.
        """
        options = Options()
        options.parseOptions([*REQUIRED, "--log-format", "json"])
        service = makeService(options)
        assert isinstance(service, ProxyService)
        application = Application("bluegreen")
        service.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), service.logObserver)

    def test_plainParent(self) -> None:
        """
        A parent that is not an application (tests, other tools) is fine.
        """
        options = Options()
        options.parseOptions([*REQUIRED, "--log-format", "json"])
        service = makeService(options)
        service.setServiceParent(MultiService())
        self.assertTrue(IService.providedBy(service))


class TwistdJSONTests(TestCase):
    """
    A real C{twistd -n bluegreen --log-format json} logs JSON lines.
    """

    def test_twistd(self) -> None:
        """
        Every line twistd writes is a JSON object, including bluegreen's own
        start-up line with its fields.
        """
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        script = (
            "import sys; from twisted.internet import reactor;"
            "reactor.callLater(1.5, reactor.stop);"
            "from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
        )
        d: Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
            sys.executable,
            [
                "-c",
                script,
                "-n",
                "--pidfile=",
                "bluegreen",
                *REQUIRED,
                "--log-format",
                "json",
                "--health-interval",
                "60",
            ],
            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.getcwd()},
            path=os.path.dirname(twistd),
            reactor=reactor,
        )

        def check(result: tuple[bytes, bytes, int]) -> None:
            out, err, _ = result
            lines = out.decode().splitlines()
            self.assertTrue(lines, err)
            records = [json.loads(line) for line in lines]
            starts = [r for r in records if r.get("why") == "start"]
            self.assertEqual(len(starts), 1, lines)
            self.assertEqual(starts[0]["env"], "green")
            self.assertEqual(starts[0]["level"], "info")

        return d.addCallback(check)  # type: ignore[return-value]
