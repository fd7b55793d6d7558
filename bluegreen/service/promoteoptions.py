# -*- test-case-name: tests.test_promote_options -*-
"""
The options of the deployment workflow (C{--preview}, C{--verify},
C{--verify-command}, C{--verify-timeout}, C{--auto-promote}, and the
post-promotion analysis: C{--analysis-window}, C{--analysis-min-requests},
C{--max-error-rate}, C{--max-p95}) and their checks, turned into one
L{PromotionSettings}.

L{PromoteOptions} is a base class of L{bluegreen.service.options.Options}:
C{usage.Options} gathers the C{optParameters} and C{opt_*} methods of every
base class, so these options join the others without growing that module.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.python import usage

from bluegreen.exposure import listeningOn
from bluegreen.promote.settings import AnalysisSettings, PathCheck, PromotionSettings
from bluegreen.service.optionvalues import seconds


def parseCheck(value: str) -> PathCheck:
    """
    Parse one C{--verify PATH[=STATUSES]}.

    @param value: E.g. C{/}, C{/fact/1=200} or C{/health=200,204}.
    @return: The check.
    @raise usage.UsageError: Naming C{--verify} and the problem.
    """
    path, sep, codes = value.partition("=")
    if not path.startswith("/") or not path.isprintable() or " " in path:
        raise usage.UsageError(
            f"--verify: {value!r}: the path must start with / and contain no "
            "spaces (e.g. --verify /fact/1=200)"
        )
    statuses: set[int] = set()
    if sep:
        for code in codes.split(","):
            text = code.strip()
            if not (text.isascii() and text.isdigit() and 100 <= int(text) <= 599):
                raise usage.UsageError(
                    f"--verify: {value!r}: {code!r} is not an HTTP status "
                    "(100-599); give e.g. /=200 or /=200,204"
                )
            statuses.add(int(text))
    return PathCheck(path, frozenset(statuses))


class PromoteOptions(usage.Options):
    """
    The workflow's options, a base class of C{twistd bluegreen}'s options.
    """

    optParameters = [
        [
            "preview",
            None,
            None,
            "Where the preview listener listens (a port or endpoint string, "
            "e.g. tcp:3092:interface=127.0.0.1): it proxies every request to "
            "the standby, to try a release before promoting it.",
        ],
        [
            "verify-command",
            None,
            None,
            "A shell command run before a planned switch, with "
            "BLUEGREEN_PREVIEW_URL set to the standby's address; exit 0 "
            "passes.",
        ],
        [
            "verify-timeout",
            None,
            "10",
            "Seconds each --verify check and the --verify-command may take.",
        ],
        [
            "auto-promote",
            None,
            None,
            "Promote the standby by itself this many seconds after a new "
            "revision is reported on it (bluegreen deployed), if its checks "
            "pass.",
        ],
        [
            "analysis-window",
            None,
            "60",
            "Seconds the new live environment's responses are watched after "
            "each planned switch (0: never); a bad one is rolled back.",
        ],
        [
            "analysis-min-requests",
            None,
            "20",
            "Responses needed in the window before it is judged.",
        ],
        [
            "max-error-rate",
            None,
            "5",
            "The highest share of 5xx responses tolerated in the window, in "
            "per cent (e.g. 5 or 5%).",
        ],
        [
            "max-p95",
            None,
            None,
            "The highest p95 latency tolerated in the window, in seconds "
            "(default: latency is not judged).",
        ],
    ]

    def opt_verify(self, value: str) -> None:
        """
        A check run on the standby before a planned switch (repeatable):
        PATH[=STATUSES], e.g. /=200 or /fact/1=200,204 (default 2xx or 3xx).
        """
        self.setdefault("verifyChecks", []).append(parseCheck(value))


def promotionSettings(
    options: usage.Options,
    toEndpoint: Callable[[str, str], str],
    others: dict[str, str | None],
) -> PromotionSettings:
    """
    Check the workflow's options.

    @param options: The parsed options (a L{PromoteOptions}).
    @param toEndpoint: Turns an option's value into an endpoint description
        (C{portToEndpoint}), given the value and the option's name.
    @param others: The endpoints of the other listeners, by option name, to
        refuse a C{--preview} on the same port.
    @return: The settings.
    @raise usage.UsageError: Naming the option and the problem.
    """
    preview = None
    if options["preview"] is not None:
        preview = toEndpoint(options["preview"], "preview")
        where = listeningOn(preview)
        for name, endpoint in others.items():
            there = None if endpoint is None else listeningOn(endpoint)
            if (
                where is not None
                and there is not None
                and (
                    bool(where.port and where.port == there.port)
                    or bool(where.path and where.path == there.path)
                )
            ):
                raise usage.UsageError(
                    f"--preview: {options['preview']!r} is the port of --{name}; "
                    "the preview needs its own"
                )
    command = options["verify-command"]
    if command is not None and not command.strip():
        raise usage.UsageError("--verify-command: empty; give a shell command")
    timeout = seconds("verify-timeout", options["verify-timeout"])
    autoPromote = None
    if options["auto-promote"] is not None:
        autoPromote = seconds("auto-promote", options["auto-promote"])
    checks = tuple(options.get("verifyChecks", ()))
    if autoPromote is not None and not checks and command is None:
        raise usage.UsageError(
            "--auto-promote: give the checks that must pass first (--verify "
            "PATH[=STATUSES] and/or --verify-command CMD)"
        )
    return PromotionSettings(
        analysis=_analysis(options),
        preview=preview,
        previewListen=options["preview"] or "",
        checks=checks,
        command=command,
        timeout=timeout,
        autoPromote=autoPromote,
    )


def _analysis(options: usage.Options) -> AnalysisSettings:
    """
    Check the post-promotion analysis options.

    @raise usage.UsageError: Naming the option and the problem.
    """
    text = options["analysis-window"].strip()
    window = 0.0 if text in ("0", "0.0") else seconds("analysis-window", text)
    count = options["analysis-min-requests"].strip()
    if not (count.isascii() and count.isdigit()) or int(count) < 1:
        raise usage.UsageError(
            f"--analysis-min-requests: {count!r} is not a whole number >= 1"
        )
    rate = options["max-error-rate"].strip().removesuffix("%").strip()
    try:
        maxErrorRate = float(rate)
    except ValueError:
        maxErrorRate = -1.0
    if not 0 <= maxErrorRate <= 100:
        raise usage.UsageError(
            f"--max-error-rate: {options['max-error-rate']!r} is not a "
            "percentage from 0 to 100 (e.g. 5 or 5%)"
        )
    maxP95 = None
    if options["max-p95"] is not None:
        maxP95 = seconds("max-p95", options["max-p95"])
    return AnalysisSettings(window, int(count), maxErrorRate, maxP95)
