# -*- test-case-name: tests.test_promote_options -*-
"""
Tests for the workflow's options of C{twistd bluegreen}
(L{bluegreen.service.promoteoptions}): what each means, and the message
for each bad value.
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from bluegreen.promote.settings import AnalysisSettings, PathCheck, PromotionSettings
from bluegreen.service.options import Options
from tests.test_options import REQUIRED, parse


class BadValues(SynchronousTestCase):
    """
    Asserts the message of bad values.
    """

    def assertBad(self, message: str, *args: str) -> None:
        """
        Assert that C{args} (with the required options) fail with exactly
        C{message}.
        """
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, [*REQUIRED, *args]
        )
        self.assertEqual(str(error), message)


class PromoteOptionTests(BadValues):
    """
    C{--preview}, C{--verify}, C{--verify-command}, C{--verify-timeout},
    C{--auto-promote}.
    """

    def test_defaults(self) -> None:
        """
        Without the options: no preview, no checks, no auto-promotion.
        """
        self.assertEqual(parse().config.promotion, PromotionSettings())
        self.assertFalse(PromotionSettings().verifies)

    def test_all(self) -> None:
        """
        Every option, converted.
        """
        config = parse(
            "--preview",
            "3092",
            "--verify",
            "/",
            "--verify",
            "/fact/1=200,204",
            "--verify-command",
            "./smoke.sh",
            "--verify-timeout",
            "2.5",
            "--auto-promote",
            "30",
        ).config
        self.assertEqual(
            config.promotion,
            PromotionSettings(
                preview="tcp:3092",
                previewListen="3092",
                checks=(
                    PathCheck("/"),
                    PathCheck("/fact/1", frozenset({200, 204})),
                ),
                command="./smoke.sh",
                timeout=2.5,
                autoPromote=30.0,
            ),
        )
        self.assertTrue(config.promotion.verifies)

    def test_previewBad(self) -> None:
        """
        A C{--preview} that is no port or endpoint is refused.
        """
        self.assertBad(
            "--preview: '70000' is not a TCP port number (1-65535)",
            "--preview",
            "70000",
        )

    def test_previewSamePort(self) -> None:
        """
        A C{--preview} on the proxied port or the admin port is refused.
        """
        self.assertBad(
            "--preview: 'tcp:3090:interface=127.0.0.1' is the port of --port; "
            "the preview needs its own",
            "--port",
            "3090",
            "--preview",
            "tcp:3090:interface=127.0.0.1",
        )
        self.assertBad(
            "--preview: '3091' is the port of --admin; the preview needs its own",
            "--admin",
            "tcp:3091:interface=127.0.0.1",
            "--preview",
            "3091",
        )

    def test_verifyBadPath(self) -> None:
        """
        A C{--verify} path must start with C{/}.
        """
        self.assertBad(
            "--verify: 'fact=200': the path must start with / and contain no "
            "spaces (e.g. --verify /fact/1=200)",
            "--verify",
            "fact=200",
        )

    def test_verifyBadStatus(self) -> None:
        """
        A C{--verify} status must be 100-599.
        """
        self.assertBad(
            "--verify: '/=200,2x': '2x' is not an HTTP status (100-599); give "
            "e.g. /=200 or /=200,204",
            "--verify",
            "/=200,2x",
        )
        self.assertBad(
            "--verify: '/=600': '600' is not an HTTP status (100-599); give "
            "e.g. /=200 or /=200,204",
            "--verify",
            "/=600",
        )

    def test_verifyCommandEmpty(self) -> None:
        """
        An empty C{--verify-command} is refused.
        """
        self.assertBad(
            "--verify-command: empty; give a shell command", "--verify-command", " "
        )

    def test_verifyTimeoutBad(self) -> None:
        """
        C{--verify-timeout} must be a positive number of seconds.
        """
        for value in ("0", "-1", "soon", "inf", "nan"):
            self.assertBad(
                f"--verify-timeout: {value!r} is not a positive number of seconds",
                "--verify-timeout",
                value,
            )

    def test_autoPromoteBad(self) -> None:
        """
        C{--auto-promote} must be a positive number of seconds.
        """
        self.assertBad(
            "--auto-promote: 'later' is not a positive number of seconds",
            "--verify",
            "/",
            "--auto-promote",
            "later",
        )

    def test_autoPromoteNeedsChecks(self) -> None:
        """
        C{--auto-promote} without any check is refused: nothing would stand
        between a report and the switch.
        """
        self.assertBad(
            "--auto-promote: give the checks that must pass first (--verify "
            "PATH[=STATUSES] and/or --verify-command CMD)",
            "--auto-promote",
            "30",
        )


class AnalysisOptionTests(BadValues):
    """
    C{--analysis-window}, C{--analysis-min-requests}, C{--max-error-rate},
    C{--max-p95}.
    """

    def test_defaults(self) -> None:
        """
        A 60 s window, 20 requests, 5 %, no latency bound.
        """
        self.assertEqual(parse().config.promotion.analysis, AnalysisSettings())
        self.assertEqual(AnalysisSettings(), AnalysisSettings(60.0, 20, 5.0, None))

    def test_given(self) -> None:
        """
        Each option, converted; C{%} is allowed; a window of 0 turns the
        analysis off.
        """
        analysis = parse(
            "--analysis-window",
            "0",
            "--analysis-min-requests",
            "50",
            "--max-error-rate",
            "2.5%",
            "--max-p95",
            "0.8",
        ).config.promotion.analysis
        self.assertEqual(analysis, AnalysisSettings(0.0, 50, 2.5, 0.8))

    def test_windowBad(self) -> None:
        """
        A window that is no number of seconds is refused.
        """
        self.assertBad(
            "--analysis-window: '-5' is not a positive number of seconds",
            "--analysis-window",
            "-5",
        )

    def test_minRequestsBad(self) -> None:
        """
        The minimum of requests must be a whole number >= 1.
        """
        for value in ("0", "2.5", "many"):
            self.assertBad(
                f"--analysis-min-requests: {value!r} is not a whole number >= 1",
                "--analysis-min-requests",
                value,
            )

    def test_maxErrorRateBad(self) -> None:
        """
        The error rate must be a percentage.
        """
        for value in ("101", "-1", "five"):
            self.assertBad(
                f"--max-error-rate: {value!r} is not a percentage from 0 to 100 "
                "(e.g. 5 or 5%)",
                "--max-error-rate",
                value,
            )

    def test_maxP95Bad(self) -> None:
        """
        The p95 bound must be a positive number of seconds.
        """
        self.assertBad(
            "--max-p95: '0' is not a positive number of seconds", "--max-p95", "0"
        )


class PathCheckTests(SynchronousTestCase):
    """
    L{PathCheck}.
    """

    def test_defaultStatuses(self) -> None:
        """
        Without statuses, 2xx and 3xx pass.
        """
        check = PathCheck("/")
        self.assertEqual(
            [check.passes(code) for code in (199, 200, 302, 399, 400, 500)],
            [False, True, True, True, False, False],
        )
        self.assertEqual(check.expected(), "2xx or 3xx")

    def test_statuses(self) -> None:
        """
        With statuses, exactly those pass.
        """
        check = PathCheck("/a", frozenset({204, 200}))
        self.assertEqual(
            [check.passes(c) for c in (200, 204, 201)], [True, True, False]
        )
        self.assertEqual((check.expected(), check.describe()), ("200 or 204", "GET /a"))
