# -*- test-case-name: tests.test_flags_cli -*-
"""
C{bluegreen flag ...}: see and change the feature flags of each
environment (see L{bluegreen.flags})::

    bluegreen flag set NAME on|off --env green|blue|all
    bluegreen flag set NAME --raw VALUE --env green|blue|all
    bluegreen flag get NAME [--env green|blue|all]
    bluegreen flag list [--env green|blue|all]
    bluegreen flag unset NAME --env green|blue|all
    bluegreen flag history [--env green|blue|all] [--limit N]

By default the commands go through a running service's admin API
(C{--admin}, C{--token-file} and their environment variables, as the other
commands); with C{--redis URL} they go straight to one environment's Redis
(for when no service runs), and C{--env} then only names that environment
in the history and the output (each Redis call may take at most 1 s).

C{set} normalises C{on}, C{off}, C{true}, C{false}, C{1}, C{0}, C{yes} and
C{no} to C{ON} or C{OFF} (what the app reads); C{--raw VALUE} stores any
string as it is.  C{set} and C{unset} need C{--env} (C{all}: every
environment that has a Redis, one after the other); the others show every
environment unless told.  Changes are recorded as made by C{CLI user
<$USER>} (through the admin API: C{admin API from <address> (CLI user
<$USER>)}).

Through the admin API, C{list} answers from the service's cache and C{get}
reads the key from Redis (any key, also one bluegreen never wrote); when an
environment's Redis cannot be reached they show the last known values,
marked stale, and do not fail.  Writes fail (exit status 1) with the reason,
e.g. C{cannot reach Redis for blue at redis://127.0.0.1:6380/0: connection
refused}.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import quote, urlencode

from twisted.python import usage

from bluegreen.cli.common import (
    ClientReactor,
    CommandOptions,
    CommonOptions,
    Failed,
    Settings,
    Unreachable,
    call,
    runOnReactor,
    useColour,
)
from bluegreen.environment import COLOURS
from bluegreen.flags.format import (
    ALL,
    dump,
    formatChange,
    formatGet,
    formatHistory,
    formatList,
    withValues,
)
from bluegreen.flags.model import (
    FlagError,
    normalise,
    validateName,
    validateValue,
)
from bluegreen.flags.target import RedisTarget, readPasswordFile
from bluegreen.optionfile import readOptionFile

#: The changes C{flag history} shows unless told otherwise.
DEFAULT_LIMIT = 50


def whoAmI(environ: Mapping[str, str]) -> str:
    """
    @return: Who makes a change from this command, for the history:
        C{CLI user <name>}.
    """
    name = environ.get("USER") or environ.get("LOGNAME")
    if not name:
        try:
            name = getpass.getuser()
        except Exception:
            name = "unknown"
    return f"CLI user {name}"


class _FlagCommand(CommandOptions):
    """
    The options of every C{flag} command.
    """

    #: Whether the command needs C{--env}.
    needsEnv = False

    optParameters = [
        [
            "env",
            "e",
            None,
            "The environment: green, blue or all.",
        ],
        [
            "redis",
            None,
            None,
            "Talk straight to this Redis (redis://[user:password@]host:port/db, "
            "rediss://..., unix:///path?db=0) instead of the admin API, for "
            "when no service runs; --env then names its environment.",
        ],
        [
            "redis-password-file",
            None,
            None,
            "File holding the password of --redis.",
        ],
    ]

    def _oneName(self, command: str, args: tuple[str, ...]) -> None:
        """
        Take the command's one argument, a flag name.

        @raise usage.UsageError: Unless there is exactly one, and it is valid.
        """
        if not args:
            raise usage.UsageError(
                f"flag {command}: which flag? e.g. flag {command} RECENT"
            )
        self.refuseArguments(f"flag {command}", args, 1)
        self["name"] = self._flagName(args[0])

    def postOptions(self) -> None:
        """
        Check C{--env}, C{--redis} and the password file.

        @raise usage.UsageError: If they do not fit.
        """
        env = self["env"]
        command = self.synopsis.split()[2]
        if env is not None and env not in (*COLOURS, ALL):
            raise usage.UsageError(
                f"--env: unknown environment {env!r}; expected green, blue or all"
            )
        if self["redis"] is not None:
            password = readOptionFile(
                "--redis-password-file", self["redis-password-file"], readPasswordFile
            )
            try:
                self["target"] = RedisTarget.parse(self["redis"], password)
            except ValueError as e:
                raise usage.UsageError(f"--redis: {e}") from None
            if env == ALL:
                raise usage.UsageError(
                    "--env all: --redis reaches one environment's Redis; "
                    "name it with --env green or --env blue"
                )
            if env is None:
                raise usage.UsageError(
                    f"flag {command}: with --redis, say whose Redis it is: "
                    "--env green or --env blue"
                )
        elif self["redis-password-file"] is not None:
            raise usage.UsageError("--redis-password-file needs --redis URL")
        if env is None and self.needsEnv:
            raise usage.UsageError(
                f"flag {command}: which environment? --env green, blue or all"
            )
        if env is None:
            self["env"] = ALL

    def _flagName(self, name: str) -> str:
        """
        @return: C{name}, a valid flag name.
        @raise usage.UsageError: Otherwise, with the reason.
        """
        try:
            return validateName(name)
        except FlagError as e:
            command = self.synopsis.split()[2]
            raise usage.UsageError(f"flag {command}: {e}") from None


class FlagSetOptions(_FlagCommand):
    """
    C{bluegreen flag set NAME on|off --env ENV}.
    """

    synopsis = (
        "bluegreen flag set NAME on|off|--raw VALUE --env green|blue|all "
        "[--redis URL] [--json]"
    )
    longdesc = (
        "Set a flag: on/true/1/yes store ON, off/false/0/no store OFF (what "
        "the app reads); --raw VALUE stores any string as it is."
    )
    needsEnv = True
    optParameters = [["raw", None, None, "Store VALUE exactly as given."]]

    def parseArgs(self, *args: str) -> None:
        """
        @raise usage.UsageError: Unless there is a name and a value (or
            C{--raw}).
        """
        if not args:
            raise usage.UsageError("flag set: which flag? e.g. flag set RECENT on")
        self.refuseArguments("flag set", args, 2)
        self["name"] = self._flagName(args[0])
        raw = self["raw"]
        if len(args) == 2 and raw is not None:
            raise usage.UsageError(
                f"flag set: give on/off or --raw VALUE, not both ({args[1]!r} "
                f"and --raw {raw!r})"
            )
        if len(args) == 1 and raw is None:
            raise usage.UsageError(
                f"flag set: which value? on or off (e.g. flag set {args[0]} on), "
                "or --raw VALUE"
            )
        try:
            if raw is not None:
                self["value"] = validateValue(raw)
            else:
                self["value"] = normalise(args[1])
        except FlagError as e:
            # normalise's message says to use --raw.
            raise usage.UsageError(f"flag set: {e}") from None


class FlagUnsetOptions(_FlagCommand):
    """
    C{bluegreen flag unset NAME --env ENV}.
    """

    synopsis = "bluegreen flag unset NAME --env green|blue|all [--redis URL] [--json]"
    longdesc = "Remove a flag (the app then reads it as off)."
    needsEnv = True

    def parseArgs(self, *args: str) -> None:
        """
        @raise usage.UsageError: Unless there is one argument, a flag name.
        """
        self._oneName("unset", args)


class FlagGetOptions(_FlagCommand):
    """
    C{bluegreen flag get NAME [--env ENV]}.
    """

    synopsis = "bluegreen flag get NAME [--env green|blue|all] [--redis URL] [--json]"
    longdesc = "Show a flag's value in each environment (or in --env)."

    def parseArgs(self, *args: str) -> None:
        """
        @raise usage.UsageError: Unless there is one argument, a flag name.
        """
        self._oneName("get", args)


class FlagListOptions(_FlagCommand):
    """
    C{bluegreen flag list [--env ENV]}.
    """

    command = "flag list"
    synopsis = "bluegreen flag list [--env green|blue|all] [--redis URL] [--json]"
    longdesc = "Show every flag in each environment (or in --env), as a table."


class FlagHistoryOptions(_FlagCommand):
    """
    C{bluegreen flag history [--env ENV] [--limit N]}.
    """

    command = "flag history"
    synopsis = (
        "bluegreen flag history [--env green|blue|all] [--limit N] "
        "[--redis URL] [--json]"
    )
    longdesc = "Show the recorded flag changes, newest first."
    optParameters = [
        ["limit", "n", str(DEFAULT_LIMIT), "Show at most this many changes."]
    ]

    def postOptions(self) -> None:
        """
        Check C{--limit} too.
        """
        super().postOptions()
        text = self["limit"].strip()
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 1000):
            raise usage.UsageError(
                f"--limit: {self['limit']!r} is not a whole number from 1 to 1000"
            )
        self["limit"] = int(text)


#: The C{flag} commands: name, options, description.
COMMANDS: list[tuple[str, type[_FlagCommand], str]] = [
    ("set", FlagSetOptions, "Set a flag (on, off, or --raw VALUE)."),
    ("get", FlagGetOptions, "Show a flag in each environment."),
    ("list", FlagListOptions, "Show every flag, flag x environment."),
    ("unset", FlagUnsetOptions, "Remove a flag."),
    ("history", FlagHistoryOptions, "Show the flag changes, newest first."),
]


class FlagOptions(CommonOptions):
    """
    C{bluegreen flag COMMAND}.
    """

    synopsis = "bluegreen flag set|get|list|unset|history [options]"
    longdesc = (
        "See and change the feature flags kept in each environment's Redis, "
        "through the admin API or (--redis URL) directly."
    )
    subCommands = [[name, None, kind, doc] for name, kind, doc in COMMANDS]

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse C{options}, naming the C{flag} commands in errors.

        @raise usage.UsageError: For an unknown or missing command.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            message = str(e)
            if message.startswith("Unknown command: "):
                raise usage.UsageError(
                    f"flag: unknown command {message.split(': ', 1)[1]!r}; "
                    "expected set, get, list, unset or history"
                ) from None
            raise

    def parseArgs(self, *args: str) -> None:
        """
        Called only without a command.

        @raise usage.UsageError: Always.
        """
        raise usage.UsageError("flag: which command? set, get, list, unset or history")


async def _api(
    reactor: ClientReactor,
    settings: Settings,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """
    Call the admin API; if it cannot be reached, say how to do without it.
    """
    try:
        return await call(reactor, settings, method, path, body)
    except Unreachable as e:
        raise Failed(
            f"{e} (is bluegreen running? without it, give --redis URL to "
            "reach an environment's Redis directly)"
        ) from None


async def throughAdmin(
    reactor: ClientReactor,
    command: str,
    sub: Mapping[str, Any],
    settings: Settings,
    colour: bool,
    environ: Mapping[str, str],
    err: TextIO,
) -> tuple[str, bool]:
    """
    Run a C{flag} command through the admin API.

    @param sub: The command's parsed options.
    @param err: Where to write the failures of C{--env all} changes.
    @return: What to print, and whether everything succeeded.
    @raise Failed: If it failed.
    """
    env: str = sub["env"]
    if command in ("set", "unset"):
        name: str = sub["name"]
        path = "/api/flags/" + quote(name, safe="")
        if env == ALL:
            table = await _api(reactor, settings, "GET", "/api/flags")
            envs = [
                n
                for n, info in table.get("environments", {}).items()
                if info.get("redis") is not None
            ]
            if not envs:
                raise Failed(
                    "no environment has a Redis (start bluegreen with "
                    "--green-redis URL and/or --blue-redis URL)"
                )
        else:
            envs = [env]
        who = whoAmI(environ)
        answers = []
        ok = True
        for target in envs:
            try:
                if command == "set":
                    answer = await _api(
                        reactor,
                        settings,
                        "PUT",
                        path,
                        {"env": target, "value": sub["value"], "who": who},
                    )
                else:
                    answer = await _api(
                        reactor,
                        settings,
                        "DELETE",
                        f"{path}?{urlencode({'env': target})}",
                        {"who": who},
                    )
            except Failed as e:
                if len(envs) == 1:
                    raise
                print(f"bluegreen: {target}: {e}", file=err)
                ok = False
                continue
            answers.append(answer)
        if settings.json:
            if env != ALL:
                return dump(answers[0]), ok
            return dump(
                {
                    "changes": [a["change"] for a in answers],
                    "flags": answers[-1]["flags"] if answers else None,
                }
            ), ok
        return "".join(formatChange(a["change"], colour) for a in answers), ok
    if command == "history":
        query = {"limit": str(sub["limit"])}
        if env != ALL:
            query["env"] = env
        answer = await _api(
            reactor, settings, "GET", f"/api/flags/history?{urlencode(query)}"
        )
        if settings.json:
            return dump(answer), True
        return formatHistory(answer.get("history", []), colour), True
    table = await _api(reactor, settings, "GET", "/api/flags")
    if command == "get":
        # Checks the environment first (the same messages as for list).
        formatGet(table, sub["name"], env, colour)
        path = "/api/flags/" + quote(sub["name"], safe="")
        if env != ALL:
            path += "?" + urlencode({"env": env})
        answer = await _api(reactor, settings, "GET", path)
        if settings.json:
            return dump(answer), True
        return formatGet(withValues(table, answer), sub["name"], env, colour), True
    text = formatList(table, env, colour)
    return (dump(table) if settings.json else text), True


async def direct(
    reactor: ClientReactor,
    command: str,
    sub: Mapping[str, Any],
    settings: Settings,
    colour: bool,
    environ: Mapping[str, str],
) -> str:
    """
    Run a C{flag} command straight against one Redis (C{--redis URL}).

    @param sub: The command's parsed options.
    @return: What to print.
    @raise Failed: If it failed (e.g. C{cannot reach Redis for blue at
        ...: connection refused}).
    """
    from bluegreen.flags.model import RedisUnavailable
    from bluegreen.flags.store import FlagStore

    env: str = sub["env"]
    target: RedisTarget = sub["target"]
    # One-shot: no pub/sub connection and no CONFIG SET on the server.
    store = FlagStore(env, target, reactor, watch=False)
    try:
        await store.start()
        if store.stale:
            raise RedisUnavailable(store.describeUnavailable())
        if command == "set":
            change = await store.set(sub["name"], sub["value"], whoAmI(environ))
            answer: dict[str, Any] = {"change": change.asJSON()}
            text = formatChange(answer["change"], colour)
        elif command == "unset":
            change = await store.unset(sub["name"], whoAmI(environ))
            answer = {"change": change.asJSON()}
            text = formatChange(answer["change"], colour)
        elif command == "history":
            changes = await store.history(sub["limit"])
            answer = {"history": [c.asJSON() for c in changes]}
            text = formatHistory(answer["history"], colour)
        else:
            flags = store.cached()
            if command == "get":
                value = await store.get(sub["name"])
                if value is None:
                    flags.pop(sub["name"], None)
                else:
                    flags[sub["name"]] = value
            info = {
                "redis": target.describe(),
                "connected": True,
                "stale": False,
                "error": None,
                "updated": store.updated,
                "flags": flags,
            }
            table = {"environments": {env: info}, "names": store.names}
            if command == "get":
                answer = {
                    "flag": sub["name"],
                    "environments": {
                        env: {"value": value, "on": value == "ON", "stale": False}
                    },
                }
                text = formatGet(table, sub["name"], env, colour)
            else:
                answer = table
                text = formatList(table, env, colour)
    except (FlagError, RedisUnavailable) as e:
        raise Failed(str(e)) from None
    finally:
        await store.stop()
    return dump(answer) if settings.json else text


def runFlag(options: usage.Options, settings: Settings) -> int:
    """
    Run C{bluegreen flag ...} on the global reactor and print the outcome.

    @param options: The parsed C{flag} options (with a command).
    @param settings: Where the admin API is.
    @return: The exit code: 0 done, 1 failed.
    """
    command = str(options.subCommand)
    sub: usage.Options = options.subOptions
    colour = not settings.json and useColour(sys.stdout, os.environ)

    async def work(reactor: ClientReactor) -> tuple[str, bool]:
        if sub["redis"] is not None:
            text = await direct(reactor, command, sub, settings, colour, os.environ)
            return text, True
        return await throughAdmin(
            reactor, command, sub, settings, colour, os.environ, sys.stderr
        )

    return runOnReactor(work)
