# -*- test-case-name: tests.test_cli,tests.test_cli_admin -*-
"""
The C{bluegreen} console command: talks to a running service's admin API.

::

    bluegreen status                 which environment is live, and why;
                                     the health of each; the last switches
    bluegreen switch blue [--force]  make BLUE live
    bluegreen check                  run the health checks now
    bluegreen flag set|get|list|unset|history ...
                                     the feature flags of each environment
                                     (see L{bluegreen.flags.cli})
    bluegreen sync --from PATH --to PATH --strategy copy|migrate ...
                                     sync a database (see L{bluegreen.sync.cli})
    bluegreen sync green blue [--strategy copy|migrate] [--dry-run]
                                     sync through the running service
    bluegreen demo [--dir DIR] [--port 3090]
                                     run the workshop on this machine
                                     (see L{bluegreen.demo._run})

Common options (before or after the command): C{--admin URL} (default
C{$BLUEGREEN_ADMIN}, else C{http://127.0.0.1:3091}; C{unix:/path} for a
UNIX socket), C{--token-file FILE} (default C{$BLUEGREEN_TOKEN_FILE}),
C{--json} (print the API's JSON), C{--timeout SECONDS}.

Exit status: 0 done, 1 refused or failed (the reason on stderr), 2 usage
error.
"""

from __future__ import annotations

import getopt
import json
import os
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import urlsplit

from attrs import frozen
from treq import collect
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from bluegreen import __version__
from bluegreen.admin.api import BadToken, readToken
from bluegreen.environment import COLOURS
from bluegreen.health import describeCheckFailure

#: Where the admin API is unless told otherwise.
DEFAULT_ADMIN = "http://127.0.0.1:3091"

#: Seconds to wait for an answer unless told otherwise.
DEFAULT_TIMEOUT = 30.0

#: Switches shown by C{status}.
SHOWN_SWITCHES = 5

#: ANSI colours of the environments.
_COLOURS = {"green": "1;32", "blue": "1;34"}
_RED = "1;31"

SYNOPSIS = (
    "bluegreen [--admin URL] [--token-file FILE] [--json] status|switch|check|flag"
)


class _Common(usage.Options):
    """
    The options every command takes (before or after the command's name).
    """

    synopsis = SYNOPSIS
    optFlags = [["json", None, "Print the admin API's JSON answer."]]
    optParameters = [
        [
            "admin",
            None,
            None,
            "The admin API: http://HOST:PORT, https://..., or unix:/PATH "
            f"(default: $BLUEGREEN_ADMIN, else {DEFAULT_ADMIN}).",
        ],
        [
            "token-file",
            None,
            None,
            "File holding the admin token (default: $BLUEGREEN_TOKEN_FILE).",
        ],
        [
            "timeout",
            None,
            None,
            f"Seconds to wait for an answer (default {DEFAULT_TIMEOUT:g}).",
        ],
    ]

    def opt_version(self) -> None:
        """
        Print the version and exit.
        """
        print(f"bluegreen {__version__}")
        raise SystemExit(0)

    def getSynopsis(self) -> str:
        """
        @return: The usage line for C{--help}.
        """
        return f"Usage: {self.synopsis}"


class _Command(_Common):
    """
    A command's options, which may also follow its arguments
    (C{bluegreen switch blue --force}).
    """

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse C{options}, the options in any order with the arguments.

        @raise usage.UsageError: For unknown options or bad arguments.
        """
        args = sys.argv[1:] if options is None else list(options)
        try:
            opts, rest = getopt.gnu_getopt(args, self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e)) from None
        ordered: list[str] = []
        for option, value in opts:
            ordered += [option, value] if self._takesValue(option) else [option]
        super().parseOptions([*ordered, "--", *rest])

    def _takesValue(self, option: str) -> bool:
        """
        @return: Whether C{option} (C{--name} or C{-n}) takes a value.
        """
        name = option.lstrip("-")
        if option.startswith("--"):
            return f"{name}=" in self.longOpt
        return f"{name}:" in self.shortOpt


class StatusOptions(_Command):
    """
    C{bluegreen status}.
    """

    synopsis = "bluegreen status [--json]"
    longdesc = (
        "Show which environment is live and why, the health of each, and the "
        "last switches."
    )

    def parseArgs(self, *args: str) -> None:
        """
        @raise usage.UsageError: If there are any arguments.
        """
        if args:
            raise usage.UsageError(f"status: unexpected argument {args[0]!r}")


class CheckOptions(StatusOptions):
    """
    C{bluegreen check}.
    """

    synopsis = "bluegreen check [--json]"
    longdesc = "Run the health checks now and show the result."

    def parseArgs(self, *args: str) -> None:
        """
        @raise usage.UsageError: If there are any arguments.
        """
        if args:
            raise usage.UsageError(f"check: unexpected argument {args[0]!r}")


class SwitchOptions(_Command):
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
        if len(args) > 1:
            raise usage.UsageError(f"switch: unexpected argument {args[1]!r}")
        if args[0] not in COLOURS:
            raise usage.UsageError(
                f"switch: unknown environment {args[0]!r}; expected green or blue"
            )
        self["to"] = args[0]


class Options(_Common):
    """
    C{bluegreen [options] COMMAND}.
    """

    synopsis = SYNOPSIS
    subCommands = [
        ["status", None, StatusOptions, "Show what is live and the health."],
        ["switch", None, SwitchOptions, "Make green or blue live."],
        ["check", None, CheckOptions, "Run the health checks now."],
        ["flag", None, lambda: _flagOptions(), "See and change the feature flags."],
        ["sync", None, lambda: _syncOptions(), "Sync one database from another."],
        ["demo", None, lambda: _demoOptions(), "Run the workshop on this machine."],
    ]


def _flagOptions() -> usage.Options:
    """
    @return: The options of C{bluegreen flag} (imported only when used).
    """
    from bluegreen.flags.cli import FlagOptions

    return FlagOptions()


def _demoOptions() -> usage.Options:
    """
    @return: The options of C{bluegreen demo} (imported only when used).
    """
    from bluegreen.demo._run import DemoOptions

    return DemoOptions()


def _syncOptions() -> usage.Options:
    """
    @return: The options of C{bluegreen sync} (imported only when used).
    """
    from bluegreen.sync.cli import SyncOptions

    return SyncOptions()


@frozen
class Settings:
    """
    Where and how to reach the admin API.

    @ivar admin: The admin API as the user gave it (for messages).
    @ivar base: The base URL requests go to (C{http://localhost} for a
        UNIX socket).
    @ivar socket: The UNIX socket's path, or L{None} for TCP.
    @ivar token: The bearer token, or L{None}.
    @ivar json: Print JSON rather than text.
    @ivar timeout: Seconds to wait for an answer.
    """

    admin: str
    base: str
    socket: str | None
    token: bytes | None
    json: bool
    timeout: float


def settingsFrom(options: Options, environ: Mapping[str, str]) -> Settings:
    """
    Work out the settings: the command's options, else the global ones,
    else the environment variables, else the defaults.

    @param options: Parsed options (with a subcommand).
    @param environ: The environment variables.
    @return: The settings.
    @raise usage.UsageError: For a bad URL, token file or timeout.
    """
    sub = options.subOptions
    # The command's options, then its parent's (bluegreen flag set ...).
    chain = [o for o in (getattr(sub, "subOptions", None), sub) if o is not None]

    def pick(name: str) -> Any:
        for level in chain:
            if level[name] is not None:
                return level[name]
        return options[name]

    admin, adminName = pick("admin"), "--admin"
    if admin is None and environ.get("BLUEGREEN_ADMIN"):
        admin, adminName = environ["BLUEGREEN_ADMIN"], "BLUEGREEN_ADMIN"
    admin = (admin or DEFAULT_ADMIN).strip()
    socket = None
    if admin.startswith("unix:"):
        socket = admin[len("unix:") :]
        if not socket:
            raise usage.UsageError(f"{adminName}: {admin!r} has no socket path")
        base = "http://localhost"
    else:
        parts = urlsplit(admin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise usage.UsageError(
                f"{adminName}: {admin!r} is not an http:// or https:// URL "
                f"(e.g. {DEFAULT_ADMIN}) or unix:/PATH"
            )
        try:
            parts.port  # noqa: B018 (checks the port)
        except ValueError:
            raise usage.UsageError(f"{adminName}: {admin!r} has a bad port") from None
        base = admin.rstrip("/")
    tokenFile, tokenName = pick("token-file"), "--token-file"
    if tokenFile is None and environ.get("BLUEGREEN_TOKEN_FILE"):
        tokenFile, tokenName = environ["BLUEGREEN_TOKEN_FILE"], "BLUEGREEN_TOKEN_FILE"
    token = None
    if tokenFile is not None:
        try:
            token = readToken(tokenFile)
        except BadToken as e:
            raise usage.UsageError(f"{tokenName}: {e}") from None
    timeoutText = pick("timeout")
    timeout = DEFAULT_TIMEOUT
    if timeoutText is not None:
        try:
            timeout = float(timeoutText)
        except ValueError:
            timeout = -1.0
        if not 0 < timeout < float("inf"):
            raise usage.UsageError(
                f"--timeout: {timeoutText!r} is not a positive number of seconds"
            )
    return Settings(
        admin=admin,
        base=base,
        socket=socket,
        token=token,
        json=bool(options["json"] or any(level["json"] for level in chain)),
        timeout=timeout,
    )


class Failed(Exception):
    """
    The command failed or was refused; the message says why.
    """


class Unreachable(Failed):
    """
    The admin API could not be reached.
    """


@implementer(IAgentEndpointFactory)
class _UNIXEndpointFactory:
    """
    Connects every request to one UNIX socket.
    """

    def __init__(self, reactor: Any, path: str) -> None:
        """
        @param reactor: Makes the connections.
        @param path: The socket.
        """
        self.reactor = reactor
        self.path = path

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        """
        @return: An endpoint for the socket, whatever the URI.
        """
        return UNIXClientEndpoint(self.reactor, self.path)


def _describe(reason: Failure, timeout: float) -> str:
    """
    Say why the admin API could not be reached.

    @param reason: The request's failure.
    @param timeout: The timeout, for the message.
    @return: E.g. C{"connection refused"}, C{"no such file or directory"}.
    """
    error = reason.value
    if (
        isinstance(error, ConnectError)
        and not isinstance(error, ConnectionRefusedError)
        and isinstance(error.osError, int)
    ):
        return os.strerror(error.osError).lower()
    return describeCheckFailure(reason, timeout)


async def call(
    reactor: Any,
    settings: Settings,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """
    Make one admin API call.

    @param reactor: Runs the request.
    @param settings: Where to, with which token.
    @param method: C{"GET"} or C{"POST"}.
    @param path: E.g. C{/api/status}.
    @param body: A JSON body to send, if any.
    @return: The answer's JSON object (status 2xx).
    @raise Failed: If the API cannot be reached, answers with an error or
        with something that is not its JSON.
    """
    pool = HTTPConnectionPool(reactor, persistent=False)
    if settings.socket is not None:
        agent = Agent.usingEndpointFactory(
            reactor, _UNIXEndpointFactory(reactor, settings.socket), pool=pool
        )
    else:
        agent = Agent(reactor, connectTimeout=settings.timeout, pool=pool)
    client = HTTPClient(agent)
    headers = Headers(
        {
            b"Accept": [b"application/json"],
            b"User-Agent": [f"bluegreen-cli/{__version__}".encode("ascii")],
        }
    )
    if settings.token is not None:
        headers.setRawHeaders(b"Authorization", [b"Bearer " + settings.token])
    chunks: list[bytes] = []
    try:
        extra: dict[str, Any] = {} if body is None else {"json": body}
        d: Deferred[Any] = client.request(
            method, settings.base + path, headers=headers, **extra
        )
        d.addTimeout(settings.timeout, reactor)
        response = await d
        collecting: Deferred[None] = collect(response, chunks.append)
        collecting.addTimeout(settings.timeout, reactor)
        await collecting
    except Exception:
        reason = _describe(Failure(), settings.timeout)
        raise Unreachable(
            f"cannot reach bluegreen admin at {settings.admin}: {reason}"
        ) from None
    code: int = response.code
    contentType = response.headers.getRawHeaders(b"content-type", [b""])[0]
    try:
        if not contentType.startswith(b"application/json"):
            raise ValueError("not JSON")
        answer = json.loads(b"".join(chunks).decode("utf-8"))
        if not isinstance(answer, dict):
            raise ValueError("not a JSON object")
    except ValueError:
        raise Failed(
            f"unexpected answer from {settings.admin}{path}: HTTP {code} "
            f"({contentType.decode('latin-1') or 'no content type'}); "
            "is it bluegreen's admin API?"
        ) from None
    if not 200 <= code < 300:
        error = str(answer.get("error", f"HTTP {code}"))
        if code == 401:
            hint = (
                "give --token-file FILE or set BLUEGREEN_TOKEN_FILE"
                if settings.token is None
                else "check the token file"
            )
            raise Failed(f"not authorized: {error} ({hint})")
        if code == 409 and path == "/api/switch":
            raise Failed(f"switch refused: {error}")
        if code in (400, 409, 503) and path.startswith("/api/flags"):
            # The reason says it all: "cannot reach Redis for blue at ...".
            raise Failed(error)
        raise Failed(f"{error} (HTTP {code})")
    return answer


# Text output


def _paint(text: str, code: str, colour: bool) -> str:
    """
    @return: C{text} in the ANSI colour C{code}, if C{colour}.
    """
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code else text


def useColour(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """
    Whether to colour text written to C{stream}: only on a terminal, and
    not with C{NO_COLOR} set (see no-color.org) or C{TERM=dumb}.
    """
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


def _ago(seconds: float) -> str:
    """
    @return: E.g. C{"5 s ago"}, C{"3 min ago"}.
    """
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def _localTime(when: float) -> str:
    """
    @return: C{when} (POSIX seconds) in local time.
    """
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


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
        label = _paint(f"{name:<{width}}", _COLOURS.get(name, ""), colour)
        stateText = _paint(f"{state:<7}", _RED if state == "down" else "", colour)
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
            detail += f"; checked {_localTime(when)} ({_ago(now - when)})"
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
        why += f"; since {_localTime(since)} ({_ago(now - since)})"
    lines.append(why)
    mode = status.get("mode", "serving")
    if mode == "outage":
        lines.append(_paint("OUTAGE: both environments are down", _RED, colour))
    elif mode != "serving":
        lines.append(f"mode: {mode}")
    lines += ["", "health:", *formatHealth(status, colour), ""]
    history: list[Mapping[str, Any]] = list(status.get("history", []))
    if history:
        lines.append("last switches:")
        for record in reversed(history[-SHOWN_SWITCHES:]):
            lines.append(
                f"  {_localTime(float(record.get('when', 0)))}  "
                f"{record.get('from')} -> {record.get('to')}  {record.get('reason')}"
            )
    else:
        lines.append("no switches yet")
    lines += _flagLines(status.get("flags")) + _syncLines(status.get("sync"), now)
    syncing = status.get("syncing")
    if syncing:
        lines.append(f"now: {syncing}")
    return "\n".join(lines) + "\n"


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
        ago = f" ({_ago(now - when)})" if isinstance(when, (int, float)) else ""
        result = "complete" if last.get("complete") else "INCOMPLETE"
        lines.append(
            f"  {way}: {last.get('strategy')} {result}, "
            f"{last.get('rows_copied', 0)} rows, {last.get('conflicts', 0)} "
            f"conflicts{ago}"
        )
    return lines


def _liveLine(status: Mapping[str, Any], colour: bool) -> str:
    """
    @return: C{live: GREEN  URL}.
    """
    live = str(status.get("live", "?"))
    environments: Mapping[str, Any] = status.get("environments", {})
    url = environments.get(live, {}).get("url", "")
    return f"live: {_paint(live.upper(), _COLOURS.get(live, ''), colour)}  {url}"


def formatSwitch(answer: Mapping[str, Any], colour: bool = False) -> str:
    """
    Say what a switch did.

    @param answer: The admin API's answer to C{POST /api/switch}.
    @param colour: Use ANSI colours.
    @return: The text, ending in a newline.
    """
    switched: Mapping[str, Any] = answer.get("switched", {})
    to = str(switched.get("to", "?"))
    name = _paint(to.upper(), _COLOURS.get(to, ""), colour)
    return (
        f"switched to {name} (was {switched.get('from')}): {switched.get('reason')}\n"
    )


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
    reactor: Any,
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
            print(str(options), end="")
            return 0
        settings = settingsFrom(options, os.environ)
    except usage.UsageError as e:
        sub = getattr(options, "subOptions", None)
        leaf = getattr(sub, "subOptions", None) or sub
        synopsis = (leaf or options).synopsis
        message = str(e)
        if message.startswith("Unknown command: "):
            message = (
                f"unknown command {message.split(': ', 1)[1]!r}; "
                "expected status, switch, check or flag"
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
    if command == "demo":
        from bluegreen.demo._run import runDemo

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
    from twisted.internet.task import react

    async def go(reactor: Any) -> None:
        try:
            text = await run(reactor, command, to, force, settings, colour)
        except Failed as e:
            print(f"bluegreen: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        except Exception:
            traceback.print_exc()
            print("bluegreen: unexpected error (see above)", file=sys.stderr)
            raise SystemExit(1) from None
        sys.stdout.write(text)

    try:
        react(go)
    except SystemExit as e:
        if isinstance(e.code, int):
            return e.code
        return 1
    return 0  # pragma: no cover (react always exits)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
