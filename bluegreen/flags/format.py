# -*- test-case-name: tests.test_flags_cli -*-
"""
The output of the C{bluegreen flag} commands: tables, single flags,
changes and the history, for a person (or as JSON with L{dump}).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bluegreen.cli.common import (
    COLOUR_CODES,
    RED,
    Failed,
    ago,
    localTime,
    paint,
)

#: The most characters of a value shown in C{flag list}'s table.
SHOWN_VALUE = 40

#: Every environment, as C{--env} says it.
ALL = "all"


def showValue(value: str | None, limit: int | None = None) -> str:
    """
    @param value: A flag's value, or L{None} if it is not set.
    @param limit: Shorten longer values to this many characters.
    @return: The value for a person: C{-} if not set, as it is if it is
        plain, else quoted (empty, spaces, control characters...).
    """
    if value is None:
        return "-"
    plain = (
        value != "-"
        and value != ""
        and value[0] not in "\"'"
        and all(c.isprintable() and not c.isspace() for c in value)
    )
    text = value if plain else json.dumps(value, ensure_ascii=False)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return text


def _env(name: str, colour: bool, width: int = 0) -> str:
    """
    @return: An environment's name, padded to C{width}, in its colour.
    """
    return paint(f"{name:<{width}}", COLOUR_CODES.get(name, ""), colour)


def _wanted(table: Mapping[str, Any], env: str) -> list[str]:
    """
    @return: The environments C{env} (C{all} or a name) stands for, in the
        table's order.
    @raise Failed: For an environment the service does not have.
    """
    environments: Mapping[str, Any] = table.get("environments", {})
    if env == ALL:
        return list(environments)
    if env not in environments:
        raise Failed(f"the service has no environment {env!r}")
    return [env]


def _noRedis(name: str) -> str:
    return f"{name} has no Redis (start bluegreen with --{name}-redis URL)"


#: What C{list} and C{get} say when no environment has a Redis.
_NO_REDIS_ANYWHERE = (
    "no environment has a Redis (start bluegreen with --green-redis URL "
    "and/or --blue-redis URL)"
)


def _shown(table: Mapping[str, Any], env: str) -> tuple[list[str], Mapping[str, Any]]:
    """
    @return: The environments C{env} stands for (see L{_wanted}), and the
        table's entry of every environment.
    @raise Failed: If C{env} is unknown or (not C{all}) has no Redis.
    """
    names = _wanted(table, env)
    environments: Mapping[str, Any] = table.get("environments", {})
    if env != ALL and environments[env].get("redis") is None:
        raise Failed(_noRedis(env))
    return names, environments


def _withNotes(
    lines: list[str],
    table: Mapping[str, Any],
    names: Sequence[str],
    now: float | None,
    colour: bool,
) -> str:
    """
    @return: C{lines}, then the L{_notes} on C{names} after a blank line,
        as text ending in a newline.
    """
    notes = _notes(table, names, time.time() if now is None else now, colour)
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _notes(
    table: Mapping[str, Any], names: Sequence[str], now: float, colour: bool
) -> list[str]:
    """
    @return: A line for each environment of C{names} without Redis or with
        stale values.
    """
    lines = []
    environments: Mapping[str, Any] = table.get("environments", {})
    for name in names:
        info = environments[name]
        if info.get("redis") is None:
            lines.append(
                f"{_env(name, colour)}: no Redis (start bluegreen with "
                f"--{name}-redis URL)"
            )
        elif info.get("stale"):
            why = info.get("error") or "its Redis cannot be reached"
            updated = info.get("updated")
            when = (
                f"last read {localTime(updated)} ({ago(now - updated)})"
                if isinstance(updated, (int, float))
                else "never read"
            )
            lines.append(
                f"{_env(name, colour)}: {paint('STALE', RED, colour)}: {why}; "
                f"values as {when}"
            )
    return lines


def formatList(
    table: Mapping[str, Any], env: str, colour: bool = False, now: float | None = None
) -> str:
    """
    The flags as a table, one row per flag (every flag known: set in an
    environment, or configured, or ever set through bluegreen), one column
    per environment that has Redis; stale columns are marked with C{*}, and
    explained below with the environments that have no Redis.

    @param table: The flag table (C{GET /api/flags}).
    @param env: C{all} or one environment.
    @param colour: Use ANSI colours.
    @param now: The time (for "N s ago").
    @return: The text, ending in a newline.
    @raise Failed: If C{env} (not C{all}) has no Redis.
    """
    names, environments = _shown(table, env)
    columns = [name for name in names if environments[name].get("redis") is not None]
    flags = sorted(
        {flag for name in columns for flag in environments[name].get("flags", {})}
        | set(table.get("names", []))
    )
    lines: list[str] = []
    if not columns:
        return _NO_REDIS_ANYWHERE + "\n"
    if not flags:
        lines.append("no flags set in " + " or ".join(columns))
    else:
        headers = [
            name.upper() + ("*" if environments[name].get("stale") else "")
            for name in columns
        ]
        cells = [
            [
                showValue(environments[name].get("flags", {}).get(flag), SHOWN_VALUE)
                for name in columns
            ]
            for flag in flags
        ]
        first = max(len("FLAG"), *(len(flag) for flag in flags))
        widths = [
            max(len(header), *(len(row[i]) for row in cells))
            for i, header in enumerate(headers)
        ]
        head = f"{'FLAG':<{first}}"
        for name, header, width in zip(columns, headers, widths, strict=True):
            head += "  " + paint(
                f"{header:<{width}}", COLOUR_CODES.get(name, ""), colour
            )
        lines.append(head.rstrip())
        for flag, row in zip(flags, cells, strict=True):
            line = f"{flag:<{first}}"
            for cell, width in zip(row, widths, strict=True):
                line += f"  {cell:<{width}}"
            lines.append(line.rstrip())
        if any(environments[name].get("stale") for name in columns):
            lines.append("* stale: the last known values (see below)")
    return _withNotes(lines, table, names, now, colour)


def formatGet(
    table: Mapping[str, Any],
    flag: str,
    env: str,
    colour: bool = False,
    now: float | None = None,
) -> str:
    """
    One flag in each environment: C{RECENT in blue: ON (on)}.

    @param table: The flag table (C{GET /api/flags}).
    @param flag: The flag's name.
    @param env: C{all} or one environment.
    @param colour: Use ANSI colours.
    @param now: The time (for "N s ago").
    @return: The text, ending in a newline.
    @raise Failed: If C{env} (not C{all}) has no Redis.
    """
    names, environments = _shown(table, env)
    lines = []
    for name in names:
        info = environments[name]
        if info.get("redis") is None:
            continue
        value = info.get("flags", {}).get(flag)
        state = "on" if value == "ON" else "off"
        text = "not set" if value is None else showValue(value)
        line = f"{flag} in {_env(name, colour)}: {text} ({state})"
        if info.get("stale"):
            line += " " + paint("[stale]", RED, colour)
        lines.append(line)
    if not lines:
        lines.append(_NO_REDIS_ANYWHERE)
    return _withNotes(lines, table, names, now, colour)


def formatChange(change: Mapping[str, Any], colour: bool = False) -> str:
    """
    Say what a change did: C{RECENT = ON in blue (was OFF)}, C{RECENT
    removed from green (was ON)}.

    @param change: A change as JSON (L{bluegreen.flags.store.FlagChange.asJSON}).
    @param colour: Use ANSI colours.
    @return: One line, ending in a newline.
    """
    flag = change.get("flag")
    env = _env(str(change.get("env")), colour)
    old, new = change.get("old"), change.get("new")
    was = "was not set" if old is None else f"was {showValue(old)}"
    if old == new:
        was = "unchanged" if new is not None else "was not set"
    if new is None:
        if old is None:
            return f"{flag} was not set in {env}\n"
        return f"{flag} removed from {env} ({was})\n"
    return f"{flag} = {showValue(new)} in {env} ({was})\n"


def formatHistory(changes: Sequence[Mapping[str, Any]], colour: bool = False) -> str:
    """
    The changes, one a line, as given (newest first): when, environment,
    flag, old and new value, who.

    @param changes: Changes as JSON.
    @param colour: Use ANSI colours.
    @return: The text, ending in a newline.
    """
    if not changes:
        return "no flag changes recorded\n"
    envWidth = max(len(str(c.get("env"))) for c in changes)
    flagWidth = max(len(str(c.get("flag"))) for c in changes)
    moves = [f"{showValue(c.get('old'))} -> {showValue(c.get('new'))}" for c in changes]
    moveWidth = max(len(move) for move in moves)
    lines = []
    for change, move in zip(changes, moves, strict=True):
        when = change.get("when")
        stamp = localTime(when) if isinstance(when, (int, float)) else "?"
        lines.append(
            f"{stamp}  {_env(str(change.get('env')), colour, envWidth)}  "
            f"{change.get('flag')!s:<{flagWidth}}  {move:<{moveWidth}}  "
            f"{change.get('who')}"
        )
    return "\n".join(lines) + "\n"


# Running


def dump(answer: object) -> str:
    return json.dumps(answer, indent=2, ensure_ascii=False) + "\n"


def withValues(table: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
    """
    The flag table with one flag's values as read from Redis
    (C{GET /api/flags/{name}}), for L{formatGet}: a flag bluegreen never
    registered is not in the table's cached values.

    @param table: The flag table (C{GET /api/flags}).
    @param answer: C{{"flag": name, "environments": {env: {"value",
        "stale"}}}}.
    @return: A copy of C{table} with those values (and staleness).
    """
    flag = answer.get("flag")
    environments = dict(table.get("environments", {}))
    for env, read in answer.get("environments", {}).items():
        if env not in environments or not isinstance(flag, str):
            continue
        info = dict(environments[env])
        flags = dict(info.get("flags") or {})
        if read.get("value") is None:
            flags.pop(flag, None)
        else:
            flags[flag] = read["value"]
        info["flags"] = flags
        info["stale"] = bool(read.get("stale"))
        environments[env] = info
    return {**table, "environments": environments}
