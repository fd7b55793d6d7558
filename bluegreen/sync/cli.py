# -*- test-case-name: tests.test_sync -*-
"""
C{bluegreen sync}: bring one SQLite database up to date from another,
without a running service (see L{bluegreen.sync.syncer})::

    bluegreen sync --from LOCATION --to LOCATION --strategy copy|migrate
                   [--dry-run] [--json] [--stop-cmd CMD --start-cmd CMD]
                   [--ssh-option OPT]...

A LOCATION is a local path or C{[user@]host:/path}, reached with C{ssh -o
BatchMode=yes} and C{rsync} over ssh (C{--ssh-option} adds ssh options; the
stop and start commands run on the target's host).

or, through a running service's admin API (L{bluegreen.sync.service}),
naming environments rather than databases::

    bluegreen sync green blue [--strategy copy|migrate] [--dry-run] [--json]

C{--on-conflict keep-target|take-source|newest} says which row stays when
the same row changed on both sides (C{migrate}; the other is kept in the
target's conflicts table either way).  And, for one database (local or remote)::

    bluegreen sync conflicts LOCATION [--json]   list the kept conflicts
                                                 (exit 1 if there are any)
    bluegreen sync uninstall LOCATION            remove everything the change
                                                 capture added

Prints a human summary (or, with C{--json}, the JSON report).  Exit status:
0 when everything was (or, with C{--dry-run}, would be) copied, 1 when
there were conflicts or a failure (the report says which), 2 usage error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python import usage

from bluegreen.cli.common import ClientReactor, CommandOptions, Settings
from bluegreen.environment import COLOURS
from bluegreen.sync.locations import parseLocation, sshArguments
from bluegreen.sync.report import Conflict, SyncReport

#: The commands on one database.
ACTIONS = ("conflicts", "uninstall")

#: The values of C{--on-conflict} (L{bluegreen.sync.apply.POLICIES}).
CONFLICT_POLICIES = ("keep-target", "take-source", "newest")


class SyncOptions(CommandOptions):
    """
    C{bluegreen sync --from PATH --to PATH --strategy copy|migrate}, or
    C{bluegreen sync SOURCE TARGET} (environments, through the admin API).

    @ivar envs: C{(source, target)} environment names, or L{None}.
    """

    envs: tuple[str, str] | None = None
    action: tuple[str, str] | None = None

    synopsis = (
        "bluegreen sync --from LOCATION --to LOCATION --strategy copy|migrate "
        "[--dry-run] [--json] [--stop-cmd CMD --start-cmd CMD] "
        "[--ssh-option OPT]...\n"
        "       bluegreen sync green|blue blue|green [--strategy copy|migrate] "
        "[--dry-run] [--json]\n"
        "       bluegreen sync conflicts LOCATION [--json]\n"
        "       bluegreen sync uninstall LOCATION"
    )
    optFlags = [["dry-run", None, "Report what would be copied; change nothing."]]
    optParameters = [
        [
            "from",
            None,
            None,
            "The source database: a local path or [user@]host:/path (over ssh).",
        ],
        ["to", None, None, "The target database, the same way."],
        ["strategy", None, None, "copy or migrate."],
        [
            "stop-cmd",
            None,
            None,
            "copy: shell command stopping the target app (on the target's host).",
        ],
        ["start-cmd", None, None, "copy: shell command starting it again."],
        [
            "on-conflict",
            None,
            None,
            "migrate: keep-target (default), take-source or newest, when the "
            "same row changed on both sides.",
        ],
    ]

    def opt_ssh_option(self, value: str) -> None:
        """
        More ssh arguments for remote locations (repeatable): '-p 2222',
        '-i KEY', or an ssh_config option such as Port=2222 (passed as -o).
        """
        try:
            arguments = sshArguments([value])
        except ValueError as e:
            raise usage.UsageError(f"sync: --ssh-option {value!r}: {e}") from e
        self.setdefault("sshOptions", []).extend(arguments)

    def parseArgs(self, *args: str) -> None:
        """
        Take C{SOURCE TARGET} environment names, if given.

        @raise usage.UsageError: Unless there are none or two.
        """
        if not args:
            return
        if args[0] in ACTIONS:
            if len(args) != 2:
                raise usage.UsageError(
                    f"sync: {args[0]} takes one database (a local path or "
                    "[user@]host:/path)"
                )
            try:
                parseLocation(args[1])
            except ValueError as e:
                raise usage.UsageError(f"sync {args[0]}: {e}") from e
            self.action = (args[0], args[1])
            return
        if len(args) != 2:
            raise usage.UsageError(
                "sync: give two environments (e.g. bluegreen sync green blue) "
                "or --from PATH --to PATH"
            )
        for name in args:
            if name not in COLOURS:
                raise usage.UsageError(
                    f"sync: unknown environment {name!r}; expected green or blue"
                )
        if args[0] == args[1]:
            raise usage.UsageError(f"sync: cannot sync {args[0]} from itself")
        self.envs = (args[0], args[1])

    def postOptions(self) -> None:
        """
        Check that the paths and a known strategy are given.

        @raise usage.UsageError: If not.
        """
        policy = self["on-conflict"]
        if policy is not None and policy not in CONFLICT_POLICIES:
            raise usage.UsageError(
                f"sync: --on-conflict {policy!r}: expected "
                + " or ".join(CONFLICT_POLICIES)
            )
        if self.action is not None:
            for name in ("from", "to", "strategy", "stop-cmd", "start-cmd"):
                if self[name] is not None:
                    raise usage.UsageError(
                        f"sync {self.action[0]}: --{name} does not apply"
                    )
            if self["dry-run"] or policy is not None:
                raise usage.UsageError(
                    f"sync {self.action[0]}: --dry-run and --on-conflict do not apply"
                )
            return
        if self.envs is not None:
            for name in ("from", "to", "stop-cmd", "start-cmd"):
                if self[name] is not None:
                    raise usage.UsageError(
                        f"sync: --{name} is for syncing paths without a service; "
                        "with environment names the service's databases and "
                        "commands are used"
                    )
            if self["strategy"] not in (None, "copy", "migrate"):
                raise usage.UsageError(
                    f"sync: unknown strategy {self['strategy']!r}; expected copy "
                    "or migrate"
                )
            return
        for name in ("from", "to", "strategy"):
            if not self[name]:
                raise usage.UsageError(f"sync: --{name} is required")
        for name in ("from", "to"):
            try:
                self[f"{name}Location"] = parseLocation(self[name])
            except ValueError as e:
                raise usage.UsageError(f"sync: --{name}: {e}") from e
        if self["strategy"] not in ("copy", "migrate"):
            raise usage.UsageError(
                f"sync: unknown strategy {self['strategy']!r}; expected copy or migrate"
            )
        if self["strategy"] == "migrate" and (self["stop-cmd"] or self["start-cmd"]):
            raise usage.UsageError("sync: --stop-cmd/--start-cmd are for copy only")
        if self["strategy"] == "copy" and policy is not None:
            raise usage.UsageError("sync: --on-conflict is for migrate only")


def runSync(options: usage.Options, settings: Settings) -> int:
    """
    Run the sync on the global reactor and print its report.

    @param options: The parsed L{SyncOptions}.
    @param settings: The common settings (for C{--json}).
    @return: The exit code.
    """
    from bluegreen.sync.process import (
        MissingTool,
        ProcessReactor,
        ProcessRunner,
        Tools,
    )
    from bluegreen.sync.syncer import Syncer

    asJSON = bool(options["json"]) or settings.json
    envs = getattr(options, "envs", None)
    if envs is not None:
        return _throughAdmin(options, settings, envs, asJSON)
    try:
        tools = Tools.find()
    except MissingTool as e:
        print(f"bluegreen: {e}", file=sys.stderr)
        return 1
    outcome: dict[str, int] = {}
    action = getattr(options, "action", None)
    if action is not None:
        return _react(
            lambda reactor: _act(reactor, tools, options, action, asJSON, outcome),
            outcome,
        )

    async def go(reactor: ProcessReactor) -> None:
        syncer = Syncer(
            reactor,
            ProcessRunner(reactor, tools),
            sshOptions=options.get("sshOptions", ()),
        )
        report = await syncer.sync(
            options["fromLocation"],
            options["toLocation"],
            options["strategy"],
            dryRun=bool(options["dry-run"]),
            stopCommand=options["stop-cmd"],
            startCommand=options["start-cmd"],
            onConflict=options["on-conflict"] or "keep-target",
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

    return _react(go, outcome)


async def _act(
    reactor: Any,
    tools: Any,
    options: usage.Options,
    action: tuple[str, str],
    asJSON: bool,
    outcome: dict[str, int],
) -> None:
    """
    C{bluegreen sync conflicts|uninstall LOCATION}: print, set the exit code.
    """
    from bluegreen.sync.conflicts import describe, listConflicts, uninstall
    from bluegreen.sync.errors import SyncError
    from bluegreen.sync.hosts import Hosts
    from bluegreen.sync.locations import resolveLocation
    from bluegreen.sync.process import ProcessFailed, ProcessRunner

    hosts = Hosts(ProcessRunner(reactor, tools), options.get("sshOptions", ()))
    name, where = action
    database = resolveLocation(parseLocation(where))
    try:
        if name == "uninstall":
            removed = await uninstall(hosts, database)
            print(
                f"removed the change capture from {database}"
                if removed
                else f"{database}: nothing to remove (no change capture)"
            )
            outcome["code"] = 0
            return
        found = await listConflicts(hosts, database)
    except (SyncError, ProcessFailed) as e:
        print(f"bluegreen: sync {name}: {e}", file=sys.stderr)
        outcome["code"] = 1
        return
    if asJSON:
        sys.stdout.write(json.dumps(found, indent=2, ensure_ascii=False) + "\n")
    elif not found:
        print(f"{database}: no conflicts kept")
    else:
        for conflict in found:
            print(describe(conflict))
        print(
            f"{len(found)} conflict{'s' if len(found) != 1 else ''} kept in {database}"
        )
    outcome["code"] = 1 if found else 0


def _react(
    main: Callable[[Any], Coroutine[Any, Any, None]], outcome: dict[str, int]
) -> int:
    """
    Run C{main} with the global reactor, until it is done.

    @param main: Takes the reactor; puts the exit code in C{outcome}.
    @param outcome: Where C{main} puts C{code}.
    @return: The exit code (1 if C{main} did not set one).
    """
    from twisted.internet.task import react

    try:
        react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            return e.code if isinstance(e.code, int) else 1
    return outcome.get("code", 1)


def reportFromJSON(data: dict[str, Any]) -> SyncReport:
    """
    Rebuild a report from its JSON (L{SyncReport.asJSON}), e.g. the admin
    API's, to print its summary.

    @param data: The report's JSON.
    @return: The report.
    """
    return SyncReport(
        strategy=data["strategy"],
        source=data["source"],
        target=data["target"],
        dryRun=bool(data["dry_run"]),
        copied=dict(data.get("copied") or {}),
        targetOnly=dict(data.get("target_only") or {}),
        conflicts=tuple(
            Conflict(
                c["table"],
                c["kind"],
                tuple(c["key"]) if c.get("key") is not None else None,
                c.get("source"),
                c.get("target"),
                c.get("detail") or "",
            )
            for c in data.get("conflicts") or []
        ),
        error=data.get("error"),
        backup=data.get("backup"),
        seconds=float(data.get("seconds") or 0.0),
        method=data.get("method"),
        changes=int(data.get("changes") or 0),
        notes=tuple(data.get("notes") or ()),
    )


def _throughAdmin(
    options: usage.Options,
    settings: Settings,
    envs: tuple[str, str],
    asJSON: bool,
) -> int:
    """
    Ask the running service to sync (C{POST /api/sync}) and print the
    report.

    @return: The exit code: 0 complete, 1 incomplete, failed or refused.
    """
    from bluegreen.cli.common import Failed, call

    body: dict[str, Any] = {"from": envs[0], "to": envs[1]}
    if options["strategy"] is not None:
        body["strategy"] = options["strategy"]
    if options["dry-run"]:
        body["dry_run"] = True
    if options["on-conflict"] is not None:
        body["on_conflict"] = options["on-conflict"]
    outcome: dict[str, int] = {}

    async def go(reactor: ClientReactor) -> None:
        try:
            answer = await call(reactor, settings, "POST", "/api/sync", body)
        except Failed as e:
            print(f"bluegreen: {e}", file=sys.stderr)
            outcome["code"] = 1
            return
        report = answer["report"]
        if asJSON:
            sys.stdout.write(json.dumps(answer, indent=2, ensure_ascii=False) + "\n")
        else:
            sys.stdout.write(reportFromJSON(report).summary())
        if report.get("error"):
            print(f"bluegreen: sync failed: {report['error']}", file=sys.stderr)
        outcome["code"] = 0 if report.get("complete") else 1

    return _react(go, outcome)
