# -*- test-case-name: tests.test_promote,tests.test_promote_integration -*-
"""
The workflow's commands of the C{bluegreen} console script (see
L{bluegreen.cli.main})::

    bluegreen promote [--check-only|--force]  run the promotion checks against the
                                       standby and switch to it if they pass
    bluegreen deployed green|blue --revision REV [--message TEXT]
                                       record what an environment runs now

and the lines C{bluegreen status} shows for them (L{promotionLines}).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from bluegreen.cli.common import (
    COLOUR_CODES,
    ClientReactor,
    CommandOptions,
    Failed,
    Settings,
    call,
    paint,
    runOnReactor,
)
from bluegreen.environment import COLOURS


class PromoteOptions(CommandOptions):
    """
    C{bluegreen promote [--check-only | --force]}.
    """

    command = "promote"
    synopsis = "bluegreen promote [--check-only | --force] [--json]"
    longdesc = (
        "Run the promotion checks (--verify, --verify-command) against the "
        "standby and make it live if all pass; a failed check refuses the "
        "promotion (exit status 1) and says what it got."
    )
    optFlags = [
        ["check-only", None, "Run the checks, switch nothing."],
        ["force", "f", "Skip the checks and switch (even to a standby that is down)."],
    ]

    def postOptions(self) -> None:
        """
        @raise usage.UsageError: For C{--check-only} with C{--force}.
        """
        if self["check-only"] and self["force"]:
            raise usage.UsageError(
                "promote: --check-only and --force contradict each other"
            )


class DeployedOptions(CommandOptions):
    """
    C{bluegreen deployed green|blue --revision REV [--message TEXT]}.
    """

    command = "deployed"
    synopsis = "bluegreen deployed green|blue --revision REV [--message TEXT]"
    longdesc = (
        "Record what an environment runs now (a commit, a version), shown by "
        "status, the dashboard, the metrics and the switch history."
    )
    optParameters = [
        ["revision", "r", None, "The revision now running (e.g. a commit)."],
        ["message", "m", "", "What it is, in words (e.g. 'fix votes')."],
    ]

    def parseArgs(self, *args: str) -> None:
        """
        @raise usage.UsageError: Unless there is one argument, an
            environment's name.
        """
        if not args:
            raise usage.UsageError("deployed: which environment? green or blue")
        self.refuseArguments("deployed", args, 1)
        if args[0] not in COLOURS:
            raise usage.UsageError(
                f"deployed: unknown environment {args[0]!r}; expected green or blue"
            )
        self["env"] = args[0]

    def postOptions(self) -> None:
        """
        @raise usage.UsageError: Without C{--revision}.
        """
        if not (self["revision"] or "").strip():
            raise usage.UsageError("deployed: --revision REV is required")


def formatVerification(verification: Mapping[str, Any]) -> list[str]:
    """
    @param verification: A verification's JSON.
    @return: A line per check: C{"  ok    GET /fact/1: status 200"}.
    """
    lines = []
    for check in verification.get("checks", []):
        word = "ok  " if check.get("ok") else "FAIL"
        got = check.get("got")
        if not check.get("ok"):
            got = f"expected {check.get('expected')}, got {got}"
        lines.append(f"  {word}  {check.get('check')}: {got}")
    return lines


def promotionLines(status: Mapping[str, Any]) -> list[str]:
    """
    The workflow's lines of C{bluegreen status}: the preview, and what each
    environment runs.

    @param status: The admin API's status.
    @return: The lines (none when there is nothing to say).
    """
    lines = []
    promotion = status.get("promotion")
    if isinstance(promotion, Mapping) and promotion.get("preview"):
        lines.append(
            f"preview: {promotion['preview']} (shows {promotion.get('previewShows')})"
        )
    for name, info in dict(status.get("environments", {})).items():
        running = info.get("revision") if isinstance(info, Mapping) else None
        if isinstance(running, Mapping):
            text = f"{name} runs {running.get('revision')}"
            if running.get("message"):
                text += f" ({running['message']})"
            lines.append(text)
    return ["", *lines] if lines else []


async def _promote(
    reactor: ClientReactor, options: usage.Options, settings: Settings
) -> tuple[str, bool]:
    """
    Promote, or only check.
    """
    if options["check-only"]:
        answer = await call(reactor, settings, "POST", "/api/verify", {})
        verification = answer["verification"]
        ok = bool(verification.get("passed"))
        head = f"checks of {verification.get('environment')} at "
        head += f"{verification.get('target')}: {'passed' if ok else 'FAILED'}"
        text = "\n".join([head, *formatVerification(verification)]) + "\n"
    else:
        try:
            answer = await call(
                reactor,
                settings,
                "POST",
                "/api/promote",
                {"force": bool(options["force"])},
            )
        except Failed as e:
            raise Failed(str(e).replace(" (HTTP 409)", "")) from None
        switched = answer["switched"]
        to = str(switched.get("to"))
        name = paint(to.upper(), COLOUR_CODES.get(to, ""), False)
        lines = formatVerification(answer.get("verification") or {})
        lines.append(
            f"promoted {name} (was {switched.get('from')}): {switched.get('reason')}"
        )
        text = "\n".join(lines) + "\n"
        ok = True
    if settings.json:
        return json.dumps(answer, indent=2, ensure_ascii=False) + "\n", ok
    return text, ok


async def _deployed(
    reactor: ClientReactor, options: usage.Options, settings: Settings
) -> tuple[str, bool]:
    """
    Record a revision.
    """
    body = {
        "env": options["env"],
        "revision": options["revision"].strip(),
        "message": options["message"],
    }
    answer = await call(reactor, settings, "POST", "/api/deployed", body)
    if settings.json:
        return json.dumps(answer, indent=2, ensure_ascii=False) + "\n", True
    text = f"{options['env']} runs {body['revision']}"
    if body["message"]:
        text += f" ({body['message']})"
    return text + "\n", True


def runPromotion(command: str, options: usage.Options, settings: Settings) -> int:
    """
    Run C{promote} or C{deployed} on the global reactor.

    @param command: C{"promote"} or C{"deployed"}.
    @param options: The command's parsed options.
    @param settings: The common settings.
    @return: The exit code: 0 done, 1 refused or failed.
    """
    work = _promote if command == "promote" else _deployed

    async def go(reactor: ClientReactor) -> tuple[str, bool]:
        return await work(reactor, options, settings)

    sys.stdout.flush()
    return runOnReactor(go)
