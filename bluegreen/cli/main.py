# -*- test-case-name: tests.test_cli,tests.test_cli_admin -*-
"""
The C{bluegreen} console command: talks to a running service's admin API.

::

    bluegreen status                 which environment is live, and why;
                                     the health of each; the last switches
    bluegreen switch blue [--force]  make BLUE live
    bluegreen check                  run the health checks now
    bluegreen promote [--check-only] run the promotion checks against the
                                     standby, make it live if they pass
    bluegreen deployed green|blue --revision REV [--message TEXT]
                                     record what an environment runs
                                     (see L{bluegreen.promote.cli})
    bluegreen flag set|get|list|unset|history ...
                                     the feature flags of each environment
                                     (see L{bluegreen.flags.cli})
    bluegreen sync --from PATH --to PATH --strategy copy|migrate ...
                                     sync a database (see L{bluegreen.sync.cli})
    bluegreen sync green blue [--strategy copy|migrate] [--dry-run]
                                     sync through the running service
    bluegreen demo [--dir DIR] [--port 3090]
                                     run the workshop on this machine
                                     (see L{bluegreen.demo.workshop})

Common options (before or after the command): C{--admin URL} (default
C{$BLUEGREEN_ADMIN}, else C{http://127.0.0.1:3091}; C{unix:/path} for a
UNIX socket), C{--token-file FILE} (default C{$BLUEGREEN_TOKEN_FILE}),
C{--json} (print the API's JSON), C{--timeout SECONDS}.

Exit status: 0 done, 1 refused or failed (the reason on stderr), 2 usage
error.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from twisted.python import usage

from bluegreen.cli.common import (
    COLOUR_CODES,
    RED,
    SYNOPSIS,
    ClientReactor,
    CommandOptions,
    CommonOptions,
    Settings,
    ago,
    call,
    localTime,
    paint,
    runOnReactor,
    settingsFrom,
    useColour,
)
from bluegreen.environment import COLOURS

#: Switches shown by C{status}.
SHOWN_SWITCHES = 5


class StatusOptions(CommandOptions):
    """
    C{bluegreen status}.
    """

    command = "status"
    synopsis = "bluegreen status [--json]"
    longdesc = (
        "Show which environment is live and why, the health of each, and the "
        "last switches."
    )


class CheckOptions(StatusOptions):
    """
    C{bluegreen check}.
    """

    command = "check"
    synopsis = "bluegreen check [--json]"
    longdesc = "Run the health checks now and show the result."


class SwitchOptions(CommandOptions):
    """
    C{bluegreen switch ENVIRONMENT [--force]}.
    """

    synopsis = "bluegreen switch green|blue [--force] [--json]"
    longdesc = (
        "Make an environment live.  It is refused if that environment is "
        "already live or is down (unless --force)."
    )
    optFlags = [["force", "f", "Switch even to an environment that is down."]]

    def parseArgs(self, *args: str) -> None:
        """
        @raise usage.UsageError: Unless there is one argument, an
            environment's name.
        """
        if not args:
            raise usage.UsageError("switch: which environment? green or blue")
        self.refuseArguments("switch", args, 1)
        if args[0] not in COLOURS:
            raise usage.UsageError(
                f"switch: unknown environment {args[0]!r}; expected green or blue"
            )
        self["to"] = args[0]


class Options(CommonOptions):
    """
    C{bluegreen [options] COMMAND}.
    """

    synopsis = SYNOPSIS
    longdesc = (
        "See and switch a running bluegreen service through its admin API, "
        "sync databases, or run the workshop on this machine.  "
        "'bluegreen COMMAND --help' says more about each command.  Exit "
        "status: 0 done, 1 refused or failed, 2 usage error."
    )
    subCommands: list[tuple[str, None, Callable[[], usage.Options], str]] = [
        ("status", None, StatusOptions, "Show what is live and the health."),
        ("switch", None, SwitchOptions, "Make green or blue live."),
        ("check", None, CheckOptions, "Run the health checks now."),
        ("promote", None, lambda: _promoteOptions(), "Check and promote the standby."),
        ("deployed", None, lambda: _deployedOptions(), "Record a revision."),
        ("flag", None, lambda: _flagOptions(), "See and change the feature flags."),
        ("sync", None, lambda: _syncOptions(), "Sync one database from another."),
        ("demo", None, lambda: _demoOptions(), "Run the workshop on this machine."),
    ]


#: The commands, in the order of the usage.
COMMANDS = tuple(name for name, *_ in Options.subCommands)


def _flagOptions() -> usage.Options:
    """
    @return: The options of C{bluegreen flag} (imported only when used).
    """
    from bluegreen.flags.cli import FlagOptions

    return FlagOptions()


def _promoteOptions() -> usage.Options:
    """
    @return: The options of C{bluegreen promote} (imported only when used).
    """
    from bluegreen.promote.cli import PromoteOptions

    return PromoteOptions()


def _deployedOptions() -> usage.Options:
    """
    @return: The options of C{bluegreen deployed} (imported only when used).
    """
    from bluegreen.promote.cli import DeployedOptions

    return DeployedOptions()


def _demoOptions() -> usage.Options:
    """
    @return: The options of C{bluegreen demo} (imported only when used).
    """
    from bluegreen.demo.workshop import DemoOptions

    return DemoOptions()


def _syncOptions() -> usage.Options:
    """
    @return: The options of C{bluegreen sync} (imported only when used).
    """
    from bluegreen.sync.cli import SyncOptions

    return SyncOptions()


# Text output


def formatHealth(status: Mapping[str, Any], colour: bool = False) -> list[str]:
    """
    One line per environment: name, state, URL, the last check.

    @param status: The admin API's status object.
    @param colour: Use ANSI colours.
    @return: The lines.
    """
    now = float(status.get("now") or time.time())
    environments: Mapping[str, Any] = status.get("environments", {})
    width = max((len(name) for name in environments), default=0)
    lines = []
    for name, info in environments.items():
        health = info.get("health", {})
        state = str(health.get("state", "unknown"))
        label = paint(f"{name:<{width}}", COLOUR_CODES.get(name, ""), colour)
        stateText = paint(f"{state:<7}", RED if state == "down" else "", colour)
        line = f"  {label}  {stateText} {info.get('url', '')}"
        if info.get("live"):
            line += "  (live)"
        last = health.get("lastCheck")
        if last:
            detail = str(last.get("reason", ""))
            latency = last.get("latency")
            if isinstance(latency, (int, float)):
                detail += f" in {latency * 1000:.0f} ms"
            if last.get("passive"):
                detail += " (seen on proxied traffic)"
            run = health.get("successes") or health.get("failures") or 0
            word = "passed" if health.get("successes") else "failed"
            detail += f"; {run} {word} in a row"
            when = float(last.get("when", now))
            detail += f"; checked {localTime(when)} ({ago(now - when)})"
            line += f"\n  {' ' * width}  {detail}"
        else:
            line += f"\n  {' ' * width}  not checked yet"
        lines.append(line)
    return lines


def formatStatus(status: Mapping[str, Any], colour: bool = False) -> str:
    """
    Say what is live and why, the health of each environment and the last
    switches.

    @param status: The admin API's status object.
    @param colour: Use ANSI colours.
    @return: The text, ending in a newline.
    """
    now = float(status.get("now") or time.time())
    lines = [_liveLine(status, colour)]
    why = f"why:  {status.get('why', '?')}"
    since = status.get("since")
    if isinstance(since, (int, float)):
        why += f"; since {localTime(since)} ({ago(now - since)})"
    lines.append(why)
    mode = status.get("mode", "serving")
    if mode == "outage":
        lines.append(paint("OUTAGE: both environments are down", RED, colour))
    elif mode != "serving":
        lines.append(f"mode: {mode}")
    lines += ["", "health:", *formatHealth(status, colour), ""]
    history: list[Mapping[str, Any]] = list(status.get("history", []))
    if history:
        lines.append("last switches:")
        for record in reversed(history[-SHOWN_SWITCHES:]):
            lines.append(
                f"  {localTime(float(record.get('when', 0)))}  "
                f"{record.get('from')} -> {record.get('to')}  {record.get('reason')}"
                + (f"  [{record['revision']}]" if record.get("revision") else "")
            )
    else:
        lines.append("no switches yet")
    lines += _promotionLines(status)
    lines += _flagLines(status.get("flags")) + _syncLines(status.get("sync"), now)
    syncing = status.get("syncing")
    if syncing:
        lines.append(f"now: {syncing}")
    return "\n".join(lines) + "\n"


def _promotionLines(status: Mapping[str, Any]) -> list[str]:
    """
    @return: The preview and the revisions (see L{bluegreen.promote.cli}).
    """
    from bluegreen.promote.cli import promotionLines

    return promotionLines(status)


def _flagLines(flags: Any) -> list[str]:
    """
    @return: A line per environment with Redis: its flags, or why they are
        stale.
    """
    if not isinstance(flags, Mapping):
        return []
    lines = ["", "flags:"]
    for env, table in sorted(dict(flags.get("environments", {})).items()):
        if not isinstance(table, Mapping) or table.get("redis") is None:
            lines.append(f"  {env:<6} no Redis")
            continue
        values = dict(table.get("flags", {}))
        text = ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "none set"
        if table.get("stale"):
            text += f"  (STALE: {table.get('error') or 'Redis unreachable'})"
        lines.append(f"  {env:<6} {text}")
    return lines


def _syncLines(sync: Any, now: float) -> list[str]:
    """
    @return: The sync mode, the mirror's lag and the last sync each way.
    """
    if not isinstance(sync, Mapping):
        return []
    lines = ["", f"database sync: {sync.get('mode', '?')}"]
    mirror = sync.get("mirror")
    if isinstance(mirror, Mapping):
        lag = mirror.get("lag")
        lagText = "no complete pass yet" if lag is None else f"lag {lag:.1f} s"
        failing = f"; FAILING: {mirror.get('error')}" if mirror.get("failing") else ""
        lines.append(f"  mirror {mirror.get('direction', '?')}: {lagText}{failing}")
    for way, last in sorted(dict(sync.get("last", {})).items()):
        if not isinstance(last, Mapping):
            continue
        when = last.get("when")
        since = f" ({ago(now - when)})" if isinstance(when, (int, float)) else ""
        result = "complete" if last.get("complete") else "INCOMPLETE"
        lines.append(
            f"  {way}: {last.get('strategy')} {result}, "
            f"{last.get('rows_copied', 0)} rows, {last.get('conflicts', 0)} "
            f"conflicts{since}"
        )
    return lines


def _liveLine(status: Mapping[str, Any], colour: bool) -> str:
    """
    @return: C{live: GREEN  URL}.
    """
    live = str(status.get("live", "?"))
    environments: Mapping[str, Any] = status.get("environments", {})
    url = environments.get(live, {}).get("url", "")
    return f"live: {paint(live.upper(), COLOUR_CODES.get(live, ''), colour)}  {url}"


def formatSwitch(answer: Mapping[str, Any], colour: bool = False) -> str:
    """
    Say what a switch did.

    @param answer: The admin API's answer to C{POST /api/switch}.
    @param colour: Use ANSI colours.
    @return: The text, ending in a newline.
    """
    switched: Mapping[str, Any] = answer.get("switched", {})
    to = str(switched.get("to", "?"))
    name = paint(to.upper(), COLOUR_CODES.get(to, ""), colour)
    synced = _switchSyncLine(answer.get("sync"), str(switched.get("from")), to)
    return (
        synced
        + f"switched to {name} (was {switched.get('from')}): {switched.get('reason')}\n"
    )


def _switchSyncLine(sync: Any, source: str, to: str) -> str:
    """
    Say what the sync before a switch copied.

    @param sync: The sync report of the switch's answer (C{"sync"}), if any.
    @param source: The environment that was live (the sync's source).
    @param to: The environment switched to (the sync's target).
    @return: E.g. C{"synced blue -> green first: 3 rows copied (cats 2,
        votes 1), 0 conflicts\n"}, or C{""} without a sync.
    """
    if not isinstance(sync, Mapping):
        return ""
    copied = {str(k): v for k, v in dict(sync.get("copied") or {}).items()}
    rows = sync.get("rows_copied", sum(copied.values()))
    line = f"synced {source} -> {to} first: {rows} row{_s(rows)} copied"
    if copied:
        line += " (" + ", ".join(f"{t} {n}" for t, n in sorted(copied.items())) + ")"
    conflicts = len(sync.get("conflicts") or ())
    line += f", {conflicts} conflict{_s(conflicts)}"
    if sync.get("error"):
        line += f"; FAILED: {sync['error']}"
    return line + "\n"


def _s(count: object) -> str:
    """
    @return: C{"s"} unless C{count} is 1.
    """
    return "" if count == 1 else "s"


def formatCheck(status: Mapping[str, Any], colour: bool = False) -> str:
    """
    Say what the health checks found.

    @param status: The admin API's answer to C{POST /api/check}.
    @param colour: Use ANSI colours.
    @return: The text, ending in a newline.
    """
    lines = ["health checks done:", *formatHealth(status, colour)]
    lines.append(_liveLine(status, colour))
    return "\n".join(lines) + "\n"


# Running


async def run(
    reactor: ClientReactor,
    command: str,
    to: str | None,
    force: bool,
    settings: Settings,
    colour: bool,
) -> str:
    """
    Run a command against the admin API.

    @return: What to print.
    @raise Failed: If it failed or was refused.
    """
    if command == "switch":
        answer = await call(
            reactor, settings, "POST", "/api/switch", {"to": to, "force": force}
        )
        text = formatSwitch(answer, colour)
    elif command == "check":
        answer = await call(reactor, settings, "POST", "/api/check")
        text = formatCheck(answer, colour)
    else:
        answer = await call(reactor, settings, "GET", "/api/status")
        text = formatStatus(answer, colour)
    if settings.json:
        return json.dumps(answer, indent=2, ensure_ascii=False) + "\n"
    return text


def main(argv: list[str] | None = None) -> int:
    """
    Run the command.

    @param argv: Arguments (without the program name); C{sys.argv[1:]} if
        L{None}.
    @return: The exit code: 0 ok, 1 refused or failed, 2 usage error.
    """
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
        if options.subCommand is None:
            # A command is needed: say which there are.
            print(str(options), end="", file=sys.stderr)
            return 2
        settings = settingsFrom(options, os.environ)
    except usage.UsageError as e:
        message = str(e)
        if message.startswith("option "):
            # An option that does not exist or lacks its value: the line
            # says which, and --help says what there is.
            print(f"bluegreen: {message}; see --help", file=sys.stderr)
            return 2
        sub = getattr(options, "subOptions", None)
        leaf = getattr(sub, "subOptions", None) or sub
        synopsis = (leaf or options).synopsis
        if message.startswith("Unknown command: "):
            message = (
                f"unknown command {message.split(': ', 1)[1]!r}; expected "
                f"{', '.join(COMMANDS[:-1])} or {COMMANDS[-1]}"
            )
        print(f"bluegreen: {message}", file=sys.stderr)
        print(f"usage: {synopsis}", file=sys.stderr)
        return 2
    sub = options.subOptions
    command: str = options.subCommand
    if command == "flag":
        from bluegreen.flags.cli import runFlag

        return runFlag(sub, settings)
    if command == "sync":
        from bluegreen.sync.cli import runSync

        return runSync(sub, settings)
    if command in ("promote", "deployed"):
        from bluegreen.promote.cli import runPromotion

        return runPromotion(command, sub, settings)
    if command == "demo":
        from bluegreen.demo.workshop import runDemo

        return runDemo(sub)
    to = sub.get("to")
    force = bool(sub.get("force"))
    colour = not settings.json and useColour(sys.stdout, os.environ)
    return _react(command, to, force, settings, colour)


def _react(
    command: str, to: str | None, force: bool, settings: Settings, colour: bool
) -> int:
    """
    Run C{command} on the global reactor and print the outcome.

    @return: The exit code.
    """

    async def work(reactor: ClientReactor) -> tuple[str, bool]:
        return await run(reactor, command, to, force, settings, colour), True

    return runOnReactor(work)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
