# -*- test-case-name: tests.test_cli,tests.test_cli_admin -*-
"""
What every C{bluegreen} command shares: the common options, the settings
they give, calling the admin API, and the terminal's colours and times.

This module is the client's only way to the service: it speaks HTTP to the
admin API and imports no server module.
"""

from __future__ import annotations

import getopt
import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

from attrs import frozen
from treq import collect
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IReactorUNIX
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from bluegreen import __version__
from bluegreen.admin.token import readToken
from bluegreen.checkfailure import describeCheckFailure
from bluegreen.optionfile import readOptionFile

# Shared with the admin site and the manhole; imported from here by the
# commands.
from bluegreen.timetext import ago as ago
from bluegreen.timetext import localTime as localTime

#: Where the admin API is unless told otherwise.
DEFAULT_ADMIN = "http://127.0.0.1:3091"

#: Seconds to wait for an answer unless told otherwise.
DEFAULT_TIMEOUT = 30.0

#: ANSI colours of the environments.
COLOUR_CODES = {"green": "1;32", "blue": "1;34"}

RED = "1;31"


SYNOPSIS = (
    "bluegreen [--admin URL] [--token-file FILE] [--json] "
    "status|switch|check|promote|deployed|flag|sync|demo"
)


class ClientReactor(IReactorTCP, IReactorUNIX, IReactorTime):
    """
    The reactor interfaces a command uses: TCP or UNIX connections to the
    admin API, and time for the timeouts.  Only for the type checker; the
    global reactor provides all.
    """


class CommonOptions(usage.Options):
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


class CommandOptions(CommonOptions):
    """
    A command's options, which may also follow its arguments
    (C{bluegreen switch blue --force}).

    @cvar command: The command's words, for messages (e.g. C{"flag list"}).
    """

    command = ""

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

    def parseArgs(self, *args: str) -> None:
        """
        Take no arguments (a command that takes some says which).

        @raise usage.UsageError: If there are any.
        """
        self.refuseArguments(self.command, args)

    def refuseArguments(
        self, command: str, args: Sequence[str], expected: int = 0
    ) -> None:
        """
        Refuse any argument past the first C{expected} (for C{parseArgs}).

        @param command: The command, for the message (e.g. C{"flag set"}).
        @param args: The arguments given.
        @param expected: How many it takes at the most.
        @raise usage.UsageError: If there are more, naming the first extra.
        """
        if len(args) > expected:
            raise usage.UsageError(f"{command}: unexpected argument {args[expected]!r}")

    def _takesValue(self, option: str) -> bool:
        """
        @return: Whether C{option} (C{--name} or C{-n}) takes a value.
        """
        name = option.lstrip("-")
        if option.startswith("--"):
            return f"{name}=" in self.longOpt
        return f"{name}:" in self.shortOpt


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


def settingsFrom(options: usage.Options, environ: Mapping[str, str]) -> Settings:
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
    token = readOptionFile(tokenName, tokenFile, readToken)
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

    def __init__(self, reactor: IReactorUNIX, path: str) -> None:
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


def describeFailure(reason: Failure, timeout: float) -> str:
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
    reactor: ClientReactor,
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
        reason = describeFailure(Failure(), settings.timeout)
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


def runOnReactor(work: Callable[[ClientReactor], Awaitable[tuple[str, bool]]]) -> int:
    """
    Run a command's work on the global reactor and print the outcome: what
    it returns on stdout, why it failed on stderr.

    @param work: Does the command with the reactor it is given: returns the
        text to print and whether everything succeeded, or raises L{Failed}
        saying why not.
    @return: The exit code: 0 done, 1 refused or failed.
    """
    from twisted.internet.task import react

    async def go(reactor: ClientReactor) -> None:
        try:
            text, ok = await work(reactor)
        except Failed as e:
            print(f"bluegreen: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        except Exception:
            traceback.print_exc()
            print("bluegreen: unexpected error (see above)", file=sys.stderr)
            raise SystemExit(1) from None
        sys.stdout.write(text)
        if not ok:
            raise SystemExit(1)

    try:
        react(go)
    except SystemExit as e:
        if isinstance(e.code, int):
            return e.code
        return 1
    return 0  # pragma: no cover (react always exits)


def paint(text: str, code: str, colour: bool) -> str:
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
