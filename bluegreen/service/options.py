# -*- test-case-name: tests.test_options,tests.test_options_safety -*-
"""
The C{twistd bluegreen} command line: L{Options} checks every option and
ends in a L{Config}, the typed settings L{bluegreen.service.tap.makeService}
builds the service from.

Nothing here listens or imports the reactor: twistd parses the options
before it installs the reactor chosen with C{--reactor}.
"""

from __future__ import annotations

import os

from twisted.python import usage

from bluegreen import __version__
from bluegreen.admin.token import readPrivateToken
from bluegreen.environment import COLOURS, BadURL, Environment, checkDistinct
from bluegreen.exposure import listeningOn
from bluegreen.flags.model import DEFAULT_NAMES, FlagError, validateName
from bluegreen.flags.target import RedisTarget, readPasswordFile
from bluegreen.health import HealthSettings, StatusSet
from bluegreen.manhole.service import SSH_EXAMPLES, TELNET_EXAMPLES
from bluegreen.manhole.service import checkOptions as checkManholeOptions
from bluegreen.optionfile import readOptionFile
from bluegreen.proxy.pool import loadTrustRoot
from bluegreen.service.adminoptions import adminNames, checkAdminListening
from bluegreen.service.bufferoptions import BUFFER_PARAMETERS, bufferSettings
from bluegreen.service.config import Config
from bluegreen.service.fleetoptions import FLEET_PARAMETERS, coordinateSettings
from bluegreen.service.limitoptions import LIMIT_PARAMETERS, clientLimits
from bluegreen.service.optionvalues import byteSize, choice, count, seconds
from bluegreen.service.promoteoptions import PromoteOptions, promotionSettings
from bluegreen.service.tunneloptions import TUNNEL_PARAMETERS, tunnelSettings
from bluegreen.sync.locations import parseLocation, sshArguments
from bluegreen.sync.service import SYNC_MODES


def portToEndpoint(
    value: str,
    name: str = "port",
    examples: str = "3090, tcp:3090:interface=127.0.0.1, unix:/run/bg.sock",
) -> str:
    """
    Turn a C{--port} (or C{--admin}) value into a server endpoint description.

    A bare port number listens on every interface (as the workshop's proxy
    did); anything else must be a Twisted endpoint string such as
    C{tcp:3090:interface=127.0.0.1} or C{unix:/run/bluegreen.sock}.

    @param value: The option's value.
    @param name: The option's name, for the messages.
    @param examples: Good values, for the messages.
    @return: An endpoint description.
    @raise usage.UsageError: If C{value} is not usable.
    """
    text = value.strip()
    if text.isascii() and text.isdigit():
        port = int(text)
        if not 0 < port < 65536:
            raise usage.UsageError(
                f"--{name}: {value!r} is not a TCP port number (1-65535)"
            )
        return f"tcp:{port}"
    if not text:
        raise usage.UsageError(
            f"--{name}: empty; give a port number or endpoint string"
        )
    try:
        where = listeningOn(text)
    except Exception as e:
        raise usage.UsageError(
            f"--{name}: {value!r} is not a valid endpoint (e.g. {examples}): {e}"
        ) from None
    # Parsing checks neither the range of a tcp port nor that a unix socket
    # has a path; both would otherwise fail only when listening.
    number = where.port if where is not None else None
    address = where.path if where is not None else None
    if number is not None and not 0 <= number < 65536:
        raise usage.UsageError(
            f"--{name}: {value!r}: {number} is not a TCP port number (0-65535)"
        )
    if address == "":
        raise usage.UsageError(
            f"--{name}: {value!r} has no socket path (e.g. unix:/run/bg.sock)"
        )
    return text


class Options(PromoteOptions):
    """
    Command-line options for C{twistd bluegreen}; once parsed, L{config}
    holds what they mean.

    @ivar config: The checked settings (set by L{postOptions}).
    """

    config: Config

    synopsis = "[options] --green URL --blue URL"
    longdesc = (
        "Run the blue-green front end: a reverse proxy on --port that sends "
        "every request to the live environment (--active at start)."
    )

    optParameters = [
        [
            "port",
            "p",
            "3090",
            "Where to listen: a port number (all interfaces) or a Twisted "
            "endpoint string, e.g. tcp:3090:interface=127.0.0.1.",
        ],
        ["green", None, None, "URL of the GREEN environment (http:// or https://)."],
        ["blue", None, None, "URL of the BLUE environment (http:// or https://)."],
        ["active", None, "green", "The environment that is live at start."],
        ["upstream-ca", None, None, "PEM CA certificate to trust for https URLs."],
        [
            "upstream-host-header",
            None,
            "client",
            "Host header sent upstream: 'client' (keep the client's) or "
            "'target' (the environment's host:port).",
        ],
        ["connect-timeout", None, "5", "Seconds to connect to an environment."],
        [
            "response-timeout",
            None,
            "60",
            "Seconds for an environment to start its response, and the "
            "longest silence allowed within a response body.",
        ],
        [
            "max-connections",
            None,
            "100",
            "Most connections open to each environment at once.",
        ],
        [
            "idle-timeout",
            None,
            "4",
            "Seconds an idle upstream connection is kept for reuse.",
        ],
        [
            "health-interval",
            None,
            "5",
            "Seconds between health checks of each environment.",
        ],
        [
            "fast-interval",
            None,
            "1",
            "Seconds between checks while an environment is changing state.",
        ],
        ["health-path", None, "/", "Path (and query) the health checks GET."],
        [
            "health-expect",
            None,
            "200",
            "Healthy statuses: e.g. 200, 200,204, 2xx or 200-399.",
        ],
        [
            "health-timeout",
            None,
            "2",
            "Seconds for a whole health response, body included.",
        ],
        [
            "health-max-body",
            None,
            "64K",
            "Bytes of a health response body read at most (e.g. 65536, 64K, "
            "1M); the rest is not read and is no reason to fail.",
        ],
        [
            "health-expect-body",
            None,
            None,
            "Text a healthy body holds within its first --health-max-body bytes.",
        ],
        ["fall", None, "1", "Consecutive failed checks that mark an environment down."],
        ["rise", None, "2", "Consecutive passed checks that mark it up again."],
        [
            "retry",
            None,
            "connect",
            "'connect': a request that cannot reach the live environment is "
            "retried once on the standby (if it is up); 'none': never.",
        ],
        [
            "failback",
            None,
            "manual",
            "'manual': traffic stays on the standby after a failover until an "
            "operator switches; 'auto': back to --active once it has stayed up "
            "for --failback-delay.",
        ],
        [
            "failback-delay",
            None,
            "30",
            "Seconds --active must stay up before an automatic failback.",
        ],
        [
            "state",
            None,
            None,
            "File that keeps the live environment and the switch history "
            "across restarts.",
        ],
        [
            "log-format",
            None,
            "text",
            "'text' (twistd's log) or 'json' (one JSON object per event on "
            "standard output, with every structured field; use with -n).",
        ],
        [
            "access-log",
            None,
            "-",
            "Access log: '-' (the service log), 'none', or a file path.",
        ],
        [
            "admin",
            None,
            "tcp:3091:interface=127.0.0.1",
            "Where the admin API listens (an endpoint string), or 'none'.",
        ],
        [
            "admin-token-file",
            None,
            None,
            "File holding the token the admin API requires for changes "
            "(Authorization: Bearer <token>).",
        ],
        [
            "manhole",
            None,
            None,
            "Telnet manhole (a Python prompt inside the proxy) on this endpoint, "
            "loopback or UNIX socket only, e.g. tcp:6023:interface=127.0.0.1. "
            "Needs --manhole-passwd. Off by default.",
        ],
        [
            "manhole-ssh",
            None,
            None,
            "SSH manhole on this endpoint, e.g. tcp:6022:interface=127.0.0.1. "
            "Needs --manhole-keys and/or --manhole-passwd. Off by default.",
        ],
        [
            "manhole-passwd",
            None,
            None,
            "Manhole logins: user:password lines (plaintext or a bcrypt hash); "
            "must not be readable by other users.",
        ],
        [
            "manhole-keys",
            None,
            None,
            "authorized_keys file of the public keys that may log in to the "
            "SSH manhole.",
        ],
        [
            "manhole-host-key",
            None,
            None,
            "SSH manhole host key, created (mode 0600) if missing; default "
            "~/.local/state/bluegreen/manhole_host_key.",
        ],
        [
            "green-redis",
            None,
            None,
            "GREEN's Redis, for its feature flags: redis://[user:password@]"
            "host:port/db, rediss:// (TLS) or unix:///path?db=0.",
        ],
        ["blue-redis", None, None, "BLUE's Redis (as --green-redis)."],
        [
            "redis-password-file",
            None,
            None,
            "File holding the Redis password, for URLs without one.",
        ],
        ["redis-timeout", None, "1", "Seconds allowed for each Redis call."],
        [
            "flag-refresh",
            None,
            "30",
            "Seconds between full re-reads of the flags (changes normally "
            "show at once, by notification).",
        ],
        [
            "green-db",
            None,
            None,
            "GREEN's SQLite database, for the database sync: a local path "
            "or [user@]host:/path.",
        ],
        ["blue-db", None, None, "BLUE's SQLite database (as --green-db)."],
        [
            "sync",
            None,
            None,
            "Automatic database sync: none, copy, migrate or mirror (default "
            "migrate when --green-db and --blue-db are given, else none).",
        ],
        [
            "mirror-interval",
            None,
            "1",
            "Seconds between passes of --sync mirror (live -> standby).",
        ],
        ["green-stop", None, None, "Shell command stopping GREEN's app (copy)."],
        ["green-start", None, None, "Shell command starting GREEN's app (copy)."],
        ["blue-stop", None, None, "Shell command stopping BLUE's app (copy)."],
        ["blue-start", None, None, "Shell command starting BLUE's app (copy)."],
        *BUFFER_PARAMETERS,
        *TUNNEL_PARAMETERS,
    ]
    optParameters += FLEET_PARAMETERS

    optFlags = [
        [
            "stamp-flags",
            None,
            "Send the live environment's flags with each proxied request, as "
            "X-Feature-<NAME>: on|off (from the cache: never waits on Redis).",
        ],
    ]
    optParameters += LIMIT_PARAMETERS

    def __init__(self) -> None:
        """
        Start with no repeatable option given (C{--ssh-option}, C{--flag}).
        """
        super().__init__()
        self["sshOptions"] = []
        self["flagNames"] = []
        self["adminHosts"] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse and check the options.

        Run as twistd's subcommand (the options have a C{parent}), a usage
        error ends the process with one line on standard error, naming the
        option and pointing to C{--help}, and status 1: twistd itself would
        print the whole usage, then the error, on standard output.

        @param options: The arguments; C{sys.argv[1:]} if L{None}.
        @raise usage.UsageError: On any invalid option, when not run as
            twistd's subcommand.
        @raise SystemExit: On any invalid option, run as twistd's subcommand.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            raise SystemExit(oneLineUsageError(e)) from None

    def opt_version(self) -> None:
        """
        Print the version and exit.
        """
        print(f"bluegreen {__version__}")
        raise SystemExit(0)

    def opt_ssh_option(self, value: str) -> None:
        """
        More ssh arguments for remote databases (repeatable), e.g. '-p 2222'
        or Port=2222 (passed as -o).
        """
        self["sshOptions"].append(value)

    def opt_admin_host(self, name: str) -> None:
        """
        Another name the admin API answers to (repeatable), e.g. ops.example.
        """
        self["adminHosts"].append(name)

    def opt_flag(self, name: str) -> None:
        """
        A flag to show and stamp even while unset (repeatable; default: RECENT).
        """
        self["flagNames"].append(name)

    def _healthSettings(self) -> HealthSettings:
        """
        @return: The health check settings.
        @raise usage.UsageError: Naming the option.
        """
        interval = seconds("health-interval", self["health-interval"])
        fast = seconds("fast-interval", self["fast-interval"])
        timeout = seconds("health-timeout", self["health-timeout"])
        path = self["health-path"]
        if not path.startswith("/") or any(c.isspace() or ord(c) < 32 for c in path):
            raise usage.UsageError(
                f"--health-path: {path!r} must start with / and contain no "
                "spaces or control characters"
            )
        try:
            expect = StatusSet.parse(self["health-expect"])
        except ValueError as e:
            raise usage.UsageError(f"--health-expect: {e}") from None
        maxBody = byteSize("health-max-body", self["health-max-body"])
        expectBody = self._expectBody(maxBody)
        return HealthSettings(
            interval=interval,
            fastInterval=fast,
            path=path,
            expect=expect,
            timeout=timeout,
            fall=count("fall", self["fall"]),
            rise=count("rise", self["rise"]),
            maxBody=maxBody,
            expectBody=expectBody,
        )

    def _expectBody(self, maxBody: int) -> bytes | None:
        """
        Check C{--health-expect-body} against the window it is looked for in.

        @param maxBody: C{--health-max-body}, checked.
        @return: The text, UTF-8 encoded, or L{None} if not given.
        @raise usage.UsageError: For an empty text (always found), or one
            longer than the window (never found).
        """
        text: str | None = self["health-expect-body"]
        if text is None:
            return None
        if not text:
            raise usage.UsageError(
                "--health-expect-body: the text is empty (leave the option out "
                "to check the status only)"
            )
        encoded = text.encode("utf-8", "surrogateescape")
        if len(encoded) > maxBody:
            raise usage.UsageError(
                f"--health-expect-body: {text!r} is {len(encoded)} bytes, more "
                f"than --health-max-body ({maxBody}) lets a check read"
            )
        return encoded

    def _admin(self, endpoint: str) -> tuple[str | None, bytes | None]:
        """
        Check C{--admin} and C{--admin-token-file}.

        @param endpoint: The proxy's endpoint description.
        @return: The admin API's endpoint description (L{None} for C{none})
            and its token (L{None} without a file).
        @raise usage.UsageError: For a bad endpoint, an unusable token file,
            the proxied port, or an admin API that other machines could reach
            without a token.
        """
        token = readOptionFile(
            "--admin-token-file", self["admin-token-file"], readPrivateToken
        )
        value = self["admin"]
        if value.strip().lower() == "none":
            return None, token
        text = portToEndpoint(
            value, "admin", "tcp:3091:interface=127.0.0.1, unix:/run/bg-admin.sock"
        )
        checkAdminListening(value, text, self["port"], endpoint, token)
        return text, token

    def _redisTargets(self) -> dict[str, RedisTarget | None]:
        """
        @return: Each environment's Redis, or L{None} without one.
        @raise usage.UsageError: For a bad URL or password file.
        """
        password = readOptionFile(
            "--redis-password-file", self["redis-password-file"], readPasswordFile
        )
        targets: dict[str, RedisTarget | None] = {}
        for colour in COLOURS:
            url = self[f"{colour}-redis"]
            try:
                targets[colour] = (
                    None if url is None else RedisTarget.parse(url, password)
                )
            except ValueError as e:
                raise usage.UsageError(f"--{colour}-redis: {e}") from None
        return targets

    def _flagNames(self) -> tuple[str, ...]:
        """
        @return: The C{--flag} names (default L{DEFAULT_NAMES}), each once.
        @raise usage.UsageError: For a bad name.
        """
        names = self["flagNames"] or list(DEFAULT_NAMES)
        for name in names:
            try:
                validateName(name)
            except FlagError as e:
                raise usage.UsageError(f"--flag: {e}") from None
        return tuple(dict.fromkeys(names))

    def _databases(self) -> tuple[dict[str, str], str]:
        """
        Check C{--green-db}, C{--blue-db}, C{--sync} and the stop/start
        commands.

        @return: The databases (empty unless both are given) and the sync
            mode.
        @raise usage.UsageError: Naming the option.
        """
        databases: dict[str, str] = {}
        for colour in COLOURS:
            location = self[f"{colour}-db"]
            if location is not None:
                databases[colour] = _checkDatabase(f"{colour}-db", location)
            stop, start = self[f"{colour}-stop"], self[f"{colour}-start"]
            if (stop is None) != (start is None):
                raise usage.UsageError(
                    f"--{colour}-stop and --{colour}-start go together (an app "
                    "stopped for a copy must be started again)"
                )
        both = len(databases) == len(COLOURS)
        mode = self["sync"]
        if mode is None:
            mode = "migrate" if both else "none"
        if mode not in SYNC_MODES:
            raise usage.UsageError(
                f"--sync: {mode!r} must be "
                + ", ".join(SYNC_MODES[:-1])
                + f" or {SYNC_MODES[-1]}"
            )
        if mode != "none" and not both:
            raise usage.UsageError(f"--sync {mode} needs both --green-db and --blue-db")
        return (databases if both else {}), mode

    def _environments(self) -> dict[str, Environment]:
        """
        @return: GREEN and BLUE from C{--green} and C{--blue}.
        @raise usage.UsageError: For a missing or bad URL.
        """
        environments: dict[str, Environment] = {}
        for colour in COLOURS:
            url = self[colour]
            if url is None:
                raise usage.UsageError(
                    f"--{colour} is required: the URL of the {colour.upper()} "
                    "environment, e.g. --"
                    f"{colour} http://127.0.0.1:{5002 if colour == 'green' else 5001}"
                )
            try:
                environments[colour] = Environment.fromURL(colour, url)
                checkDistinct(environments, url)
            except BadURL as e:
                raise usage.UsageError(f"--{colour}: {e}") from None
        return environments

    def postOptions(self) -> None:
        """
        Check every option and set L{config}; the error names the option and
        the problem.

        @raise usage.UsageError: On any invalid option.
        """
        endpoint = portToEndpoint(self["port"])
        adminEndpoint, adminToken = self._admin(endpoint)
        manhole = checkManholeOptions(
            self,
            *(
                None
                if self[name] is None
                else portToEndpoint(self[name], name, examples)
                for name, examples in (
                    ("manhole", TELNET_EXAMPLES),
                    ("manhole-ssh", SSH_EXAMPLES),
                )
            ),
        )
        environments = self._environments()
        if self["active"] not in COLOURS:
            raise usage.UsageError(
                f"--active: unknown environment {self['active']!r}; "
                "expected green or blue"
            )
        if self["upstream-host-header"] not in ("client", "target"):
            raise usage.UsageError(
                f"--upstream-host-header: {self['upstream-host-header']!r} "
                "must be 'client' or 'target'"
            )
        trustRoot = None
        if self["upstream-ca"] is not None:
            try:
                trustRoot = loadTrustRoot(self["upstream-ca"])
            except ValueError as e:
                raise usage.UsageError(f"--upstream-ca: {e}") from None
        connectTimeout = seconds("connect-timeout", self["connect-timeout"])
        responseTimeout = seconds("response-timeout", self["response-timeout"])
        idleTimeout = seconds("idle-timeout", self["idle-timeout"])
        maxConnections = count("max-connections", self["max-connections"])
        health = self._healthSettings()
        retry = choice("retry", self["retry"], ("connect", "none"))
        failback = choice("failback", self["failback"], ("manual", "auto"))
        failbackDelay = seconds("failback-delay", self["failback-delay"])
        redisTargets = self._redisTargets()
        flagNames = self._flagNames()
        redisTimeout = seconds("redis-timeout", self["redis-timeout"])
        flagRefresh = seconds("flag-refresh", self["flag-refresh"])
        if self["stamp-flags"] and not any(redisTargets.values()):
            raise usage.UsageError(
                "--stamp-flags: no environment has a Redis (give --green-redis "
                "and/or --blue-redis)"
            )
        databases, syncMode = self._databases()
        mirrorInterval = seconds("mirror-interval", self["mirror-interval"])
        if self["state"] is not None:
            _checkWritableFile("state", self["state"])
        if self["sshOptions"]:
            try:
                sshArguments(self["sshOptions"])
            except ValueError as e:
                raise usage.UsageError(f"--ssh-option: {e}") from None
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError(
                f"--log-format: {self['log-format']!r} must be 'text' or 'json'"
            )
        _checkAccessLog(self["access-log"])
        self.config = Config(
            listen={
                name: self[name]
                for name in ("port", "admin", "manhole", "manhole-ssh")
                if self[name] is not None
            },
            endpoint=endpoint,
            adminEndpoint=adminEndpoint,
            adminToken=adminToken,
            adminNames=adminNames(self["adminHosts"]),
            manhole=manhole,
            environments=environments,
            active=self["active"],
            preserveHost=self["upstream-host-header"] == "client",
            trustRoot=trustRoot,
            connectTimeout=connectTimeout,
            responseTimeout=responseTimeout,
            idleTimeout=idleTimeout,
            maxConnections=maxConnections,
            health=health,
            retry=retry == "connect",
            failback=failback,
            failbackDelay=failbackDelay,
            state=self["state"],
            logFormat=self["log-format"],
            accessLog=self["access-log"],
            redisTargets=redisTargets,
            flagNames=flagNames,
            redisTimeout=redisTimeout,
            flagRefresh=flagRefresh,
            stampFlags=bool(self["stamp-flags"]),
            databases=databases,
            syncMode=syncMode,
            mirrorInterval=mirrorInterval,
            appCommands={
                colour: (self[f"{colour}-stop"], self[f"{colour}-start"])
                for colour in databases
            },
            sshOptions=tuple(self["sshOptions"]),
            promotion=promotionSettings(
                self, portToEndpoint, {"port": endpoint, "admin": adminEndpoint}
            ),
            clientLimits=clientLimits(self),
            buffering=bufferSettings(self),
            tunnel=tunnelSettings(self),
            coordinate=coordinateSettings(self),
        )


def oneLineUsageError(error: usage.UsageError) -> str:
    """
    The one line a usage error of C{twistd bluegreen} is reported with.

    @param error: The error; its message names the option.
    @return: C{bluegreen: <message>; see --help}.
    """
    return f"bluegreen: {error}; see --help"


def _checkAccessLog(accessLog: str) -> None:
    """
    Check that C{--access-log} is C{-}, C{none} or a file that can be
    appended to or created.

    @raise usage.UsageError: Naming C{--access-log} and the problem.
    """
    if accessLog in ("-", "none"):
        return
    directory = os.path.dirname(os.path.abspath(accessLog))
    if os.path.isdir(accessLog) or not os.path.isdir(directory):
        raise usage.UsageError(
            f"--access-log: {accessLog!r} is not a file in an existing directory"
        )
    if os.path.exists(accessLog) and not os.access(accessLog, os.W_OK):
        raise usage.UsageError(f"--access-log: {accessLog!r} is not writable")
    if not os.path.exists(accessLog) and not os.access(directory, os.W_OK):
        raise usage.UsageError(
            f"--access-log: cannot create {accessLog!r} (directory not writable)"
        )


def _checkWritableFile(name: str, path: str) -> None:
    """
    Check that C{path} names a file that can be created or replaced.

    @raise usage.UsageError: Naming C{--name} and the problem.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(directory):
        raise usage.UsageError(
            f"--{name}: {path!r} is not a file in an existing directory"
        )
    if not os.access(directory, os.W_OK):
        raise usage.UsageError(
            f"--{name}: cannot write in {directory!r} (directory not writable)"
        )


def _checkDatabase(name: str, location: str) -> str:
    """
    Check a database location (C{--green-db}, C{--blue-db}): a local path
    or C{[user@]host:/path} (L{parseLocation}); a local file need not exist
    yet, but its directory must.

    @return: C{location}.
    @raise usage.UsageError: Naming C{--name} and the problem.
    """
    try:
        parsed = parseLocation(location)
    except ValueError as e:
        raise usage.UsageError(f"--{name}: {e}") from None
    if not parsed.remote:
        directory = os.path.dirname(os.path.abspath(location))
        if os.path.isdir(location) or not os.path.isdir(directory):
            raise usage.UsageError(
                f"--{name}: {location!r} is not a file in an existing directory"
            )
    return location
