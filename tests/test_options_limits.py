# -*- test-case-name: tests.test_options_limits -*-
"""
Tests for L{bluegreen.service.limitoptions}: the client limit options, their
defaults, their values, and the message for each bad value.
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from bluegreen.proxy.limits import ClientLimits
from bluegreen.service.tap import Options

REQUIRED = [
    "--green",
    "http://127.0.0.1:5002",
    "--blue",
    "http://127.0.0.1:5001",
    "--admin",
    "none",
]


def limitsFor(*args: str) -> ClientLimits:
    """
    @return: The client limits the options give.
    """
    options = Options()
    options.parseOptions([*REQUIRED, *args])
    return options.config.clientLimits


class LimitOptionsTests(SynchronousTestCase):
    """
    The client limit options.
    """

    def assertBad(self, option: str, value: str, message: str) -> None:
        """
        Assert that C{option value} is refused with exactly C{message}.
        """
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, [*REQUIRED, option, value]
        )
        self.assertEqual(str(error), message)

    def test_defaults(self) -> None:
        """
        Without options: 10 s for a head, 60 s idle, 8 KiB request line,
        64 KiB and 100 fields of header, 100 MiB of body, clients derived.
        """
        self.assertEqual(
            limitsFor(),
            ClientLimits(
                headerTimeout=10.0,
                idleTimeout=60.0,
                requestLineLimit=8192,
                headerSectionLimit=65536,
                headerFieldsLimit=100,
                maxBodySize=100 * 1024 * 1024,
                maxClients=None,
            ),
        )

    def test_values(self) -> None:
        """
        Each option sets its limit; sizes take K, M and G suffixes; a body
        size of 0 means no limit.
        """
        limits = limitsFor(
            "--client-header-timeout",
            "2.5",
            "--client-idle-timeout",
            "75",
            "--max-request-line",
            "4k",
            "--max-header-size",
            "1M",
            "--max-header-fields",
            "50",
            "--max-body-size",
            "0",
            "--max-clients",
            "5",
        )
        self.assertEqual(
            limits,
            ClientLimits(
                headerTimeout=2.5,
                idleTimeout=75.0,
                requestLineLimit=4096,
                headerSectionLimit=1024 * 1024,
                headerFieldsLimit=50,
                maxBodySize=None,
                maxClients=5,
            ),
        )
        self.assertEqual(limitsFor("--max-body-size", "2g").maxBodySize, 2 * 1024**3)

    def test_badTimeouts(self) -> None:
        """
        A timeout must be a positive, finite number of seconds.
        """
        for option in ("--client-header-timeout", "--client-idle-timeout"):
            for value in ("0", "-1", "soon", "inf", "nan"):
                self.assertBad(
                    option,
                    value,
                    f"{option}: {value!r} is not a positive number of seconds",
                )

    def test_badSizes(self) -> None:
        """
        A size must be a whole number of bytes (0 only for the body).
        """
        for option in ("--max-request-line", "--max-header-size"):
            for value in ("0", "-5", "8kb", "1.5k", "lots"):
                self.assertBad(
                    option,
                    value,
                    f"{option}: {value!r} is not a whole number of bytes >= 1 "
                    "(e.g. 8192, 64K, 100M)",
                )
        self.assertBad(
            "--max-body-size",
            "1t",
            "--max-body-size: '1t' is not a whole number of bytes >= 0 "
            "(e.g. 8192, 64K, 100M)",
        )

    def test_badCounts(self) -> None:
        """
        The header fields and clients are whole numbers >= 1 (clients may
        also be C{auto}).
        """
        self.assertBad(
            "--max-header-fields",
            "0",
            "--max-header-fields: '0' is not a whole number >= 1",
        )
        self.assertBad(
            "--max-clients",
            "many",
            "--max-clients: 'many' is not a whole number >= 1 or 'auto'",
        )
        self.assertBad(
            "--max-clients",
            "0",
            "--max-clients: '0' is not a whole number >= 1 or 'auto'",
        )
