# -*- test-case-name: tests.test_sync -*-
"""
C{bluegreen sync}: bring one SQLite database up to date from another,
without a running service (see L{bluegreen.sync})::

    bluegreen sync --from PATH --to PATH --strategy copy|migrate
                   [--dry-run] [--json] [--stop-cmd CMD --start-cmd CMD]

Prints a human summary (or, with C{--json}, the JSON report).  Exit status:
0 when everything was (or, with C{--dry-run}, would be) copied, 1 when
there were conflicts or a failure (the report says which), 2 usage error.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.python import usage

from .cli import Settings, _Common


class SyncOptions(_Common):
    """
    C{bluegreen sync --from PATH --to PATH --strategy copy|migrate}.
    """

    synopsis = (
        "bluegreen sync --from PATH --to PATH --strategy copy|migrate "
        "[--dry-run] [--json] [--stop-cmd CMD --start-cmd CMD]"
    )
    optFlags = [["dry-run", None, "Report what would be copied; change nothing."]]
    optParameters = [
        ["from", None, None, "The source database (a local path)."],
        ["to", None, None, "The target database (a local path)."],
        ["strategy", None, None, "copy or migrate."],
        ["stop-cmd", None, None, "copy: shell command stopping the target app."],
        ["start-cmd", None, None, "copy: shell command starting it again."],
    ]

    def postOptions(self) -> None:
        """
        Check that the paths and a known strategy are given.

        @raise usage.UsageError: If not.
        """
        for name in ("from", "to", "strategy"):
            if not self[name]:
                raise usage.UsageError(f"sync: --{name} is required")
        if self["strategy"] not in ("copy", "migrate"):
            raise usage.UsageError(
                f"sync: unknown strategy {self['strategy']!r}; expected copy or migrate"
            )
        if self["strategy"] == "migrate" and (self["stop-cmd"] or self["start-cmd"]):
            raise usage.UsageError("sync: --stop-cmd/--start-cmd are for copy only")


def runSync(options: usage.Options, settings: Settings) -> int:
    """
    Run the sync on the global reactor and print its report.

    @param options: The parsed L{SyncOptions}.
    @param settings: The common settings (for C{--json}).
    @return: The exit code.
    """
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    from ._process import MissingTool, ProcessRunner, Tools
    from .sync import Syncer

    asJSON = bool(options["json"]) or settings.json
    try:
        tools = Tools.find()
    except MissingTool as e:
        print(f"bluegreen: {e}", file=sys.stderr)
        return 1
    outcome: dict[str, int] = {}

    async def go(reactor: Any) -> None:
        syncer = Syncer(reactor, ProcessRunner(reactor, tools))
        report = await syncer.sync(
            options["from"],
            options["to"],
            options["strategy"],
            dryRun=bool(options["dry-run"]),
            stopCommand=options["stop-cmd"],
            startCommand=options["start-cmd"],
        )
        if asJSON:
            sys.stdout.write(
                json.dumps(report.asJSON(), indent=2, ensure_ascii=False) + "\n"
            )
        else:
            sys.stdout.write(report.summary())
        if report.error:
            print(f"bluegreen: sync failed: {report.error}", file=sys.stderr)
        outcome["code"] = 0 if report.complete else 1

    try:
        react(lambda reactor: Deferred.fromCoroutine(go(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            return e.code if isinstance(e.code, int) else 1
    return outcome.get("code", 1)
