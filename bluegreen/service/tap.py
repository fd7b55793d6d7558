# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd bluegreen} command line and service tree.

C{twistd -n bluegreen --port 3090 --green URL --blue URL} parses
L{Options}, then L{makeService} builds the proxy: a L{Controller} holding the
live environment, a connection pool per environment and the proxy site
listening on C{--port}.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from treq.client import HTTPClient
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint
from twisted.logger import (
    ILogObserver,
    Logger,
    formatEvent,
    formatTime,
)
from twisted.python import usage
from twisted.web.client import (
    URI,
    Agent,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from bluegreen import __version__
from bluegreen.admin.api import AdminResource, adminSite
from bluegreen.admin.metrics import FlagMetrics, Metrics, MetricsResource
from bluegreen.admin.token import BadToken, readToken
from bluegreen.controller import Controller
from bluegreen.environment import COLOURS, BadURL, Environment
from bluegreen.exposure import exposedInterface
from bluegreen.flags.api import mountFlags
from bluegreen.flags.store import (
    DEFAULT_NAMES,
    FlagError,
    FlagService,
    RedisTarget,
    readPasswordFile,
    validateName,
)
from bluegreen.health import HealthMonitor, HealthSettings, StatusSet
from bluegreen.manhole.auth import ManholeError
from bluegreen.manhole.namespace import LiveObjects
from bluegreen.manhole.service import (
    SSH_EXAMPLES,
    TELNET_EXAMPLES,
    Manhole,
)
from bluegreen.manhole.service import checkOptions as checkManholeOptions
from bluegreen.proxy.accesslog import AccessLog
from bluegreen.proxy.pool import UpstreamPool, endpointFor, loadTrustRoot
from bluegreen.proxy.resource import ProxyResource, ProxySite
from bluegreen.sync.api import mountSync
from bluegreen.sync.service import SyncMetrics, SyncService


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
        endpoint = serverFromString(_NO_REACTOR, text)
    except Exception as e:
        raise usage.UsageError(
            f"--{name}: {value!r} is not a valid endpoint (e.g. {examples}): {e}"
        ) from None
    # serverFromString checks neither the range of a tcp port nor that a
    # unix socket has a path; both would otherwise fail only when listening.
    number = getattr(endpoint, "_port", None)
    if isinstance(number, int) and not 0 <= number < 65536:
        raise usage.UsageError(
            f"--{name}: {value!r}: {number} is not a TCP port number (0-65535)"
        )
    if getattr(endpoint, "_address", None) == "":
        raise usage.UsageError(
            f"--{name}: {value!r} has no socket path (e.g. unix:/run/bg.sock)"
        )
    return text


# Endpoint strings are parsed (not listened on) while the options are
# checked, before twistd has chosen its reactor.
_NO_REACTOR: Any = object()


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise usage.UsageError(
            f"--{name}: {value!r} is not a positive number of seconds"
        )
    return seconds


def _count(name: str, value: str) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise usage.UsageError(f"--{name}: {value!r} is not a whole number >= 1")
    return int(text)


class Options(usage.Options):
    """
    Command-line options for C{twistd bluegreen}.
    """

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
            "5",
            "Seconds between passes of --sync mirror (live -> standby).",
        ],
        ["green-stop", None, None, "Shell command stopping GREEN's app (copy)."],
        ["green-start", None, None, "Shell command starting GREEN's app (copy)."],
        ["blue-stop", None, None, "Shell command stopping BLUE's app (copy)."],
        ["blue-start", None, None, "Shell command starting BLUE's app (copy)."],
    ]

    optFlags = [
        [
            "stamp-flags",
            None,
            "Send the live environment's flags with each proxied request, as "
            "X-Feature-<NAME>: on|off (from the cache: never waits on Redis).",
        ],
    ]

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
        self.setdefault("sshOptions", []).append(value)

    def opt_flag(self, name: str) -> None:
        """
        A flag to show and stamp even while unset (repeatable; default: RECENT).
        """
        self.setdefault("flagNames", []).append(name)

    def _healthSettings(self) -> HealthSettings:
        interval = _seconds("health-interval", self["health-interval"])
        fast = _seconds("fast-interval", self["fast-interval"])
        timeout = _seconds("health-timeout", self["health-timeout"])
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
        return HealthSettings(
            interval=interval,
            fastInterval=fast,
            path=path,
            expect=expect,
            timeout=timeout,
            fall=_count("fall", self["fall"]),
            rise=_count("rise", self["rise"]),
        )

    def _adminOptions(self) -> None:
        """
        Check C{--admin} and C{--admin-token-file}; set C{adminEndpoint}
        (L{None} for C{none}) and C{adminToken} (L{None} without a file).

        @raise usage.UsageError: For a bad endpoint, an unusable token file,
            the proxied port, or an admin API that other machines could reach
            without a token.
        """
        self["adminToken"] = None
        if self["admin-token-file"] is not None:
            try:
                self["adminToken"] = readToken(self["admin-token-file"])
            except BadToken as e:
                raise usage.UsageError(f"--admin-token-file: {e}") from None
        value = self["admin"]
        self["adminEndpoint"] = None
        if value.strip().lower() == "none":
            return
        text = portToEndpoint(
            value, "admin", "tcp:3091:interface=127.0.0.1, unix:/run/bg-admin.sock"
        )
        admin = serverFromString(_NO_REACTOR, text)
        proxy = serverFromString(_NO_REACTOR, self["endpoint"])
        for attribute in ("_port", "_address"):
            mine = getattr(admin, attribute, None)
            if mine and mine == getattr(proxy, attribute, None):
                raise usage.UsageError(
                    f"--admin: {value!r} is the proxied port (--port "
                    f"{self['port']}); the admin API needs its own"
                )
        exposed = exposedInterface(admin)
        if exposed is not None and self["adminToken"] is None:
            raise usage.UsageError(
                f"--admin: {value!r} listens on {exposed}, so other machines "
                "could switch traffic: give --admin-token-file FILE, or listen "
                "on loopback only (e.g. --admin tcp:3091:interface=127.0.0.1)"
            )
        self["adminEndpoint"] = text

    def _flagOptions(self) -> None:
        """
        Check the feature flag options; set C{redisTargets} (each
        environment's L{RedisTarget}, or L{None} without a Redis),
        C{flagNames}, C{redisTimeout} and C{flagRefresh}.

        @raise usage.UsageError: For a bad URL, password file, flag name or
            number, or C{--stamp-flags} without any Redis.
        """
        password = None
        if self["redis-password-file"] is not None:
            try:
                password = readPasswordFile(self["redis-password-file"])
            except ValueError as e:
                raise usage.UsageError(f"--redis-password-file: {e}") from None
        targets: dict[str, RedisTarget | None] = {}
        for colour in COLOURS:
            url = self[f"{colour}-redis"]
            try:
                targets[colour] = (
                    None if url is None else RedisTarget.parse(url, password)
                )
            except ValueError as e:
                raise usage.UsageError(f"--{colour}-redis: {e}") from None
        self["redisTargets"] = targets
        names = self.get("flagNames") or list(DEFAULT_NAMES)
        for name in names:
            try:
                validateName(name)
            except FlagError as e:
                raise usage.UsageError(f"--flag: {e}") from None
        self["flagNames"] = list(dict.fromkeys(names))
        self["redisTimeout"] = _seconds("redis-timeout", self["redis-timeout"])
        self["flagRefresh"] = _seconds("flag-refresh", self["flag-refresh"])
        if self["stamp-flags"] and not any(targets.values()):
            raise usage.UsageError(
                "--stamp-flags: no environment has a Redis (give --green-redis "
                "and/or --blue-redis)"
            )

    def _syncOptions(self) -> None:
        """
        Check the database sync options: C{--green-db}, C{--blue-db},
        C{--sync}, C{--mirror-interval} and the stop/start commands.

        @raise usage.UsageError: Naming the option.
        """
        from bluegreen.sync.service import SYNC_MODES

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
        self["syncMode"] = mode
        self["databases"] = databases if both else {}
        self["mirrorInterval"] = _seconds("mirror-interval", self["mirror-interval"])

    def postOptions(self) -> None:
        """
        Check every option; the error names the option and the problem.

        @raise usage.UsageError: On any invalid option.
        """
        self["endpoint"] = portToEndpoint(self["port"])
        self._adminOptions()
        self["manholeSettings"] = checkManholeOptions(
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
            except BadURL as e:
                raise usage.UsageError(f"--{colour}: {e}") from None
        self["environments"] = environments
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
        self["trustRoot"] = None
        if self["upstream-ca"] is not None:
            try:
                self["trustRoot"] = loadTrustRoot(self["upstream-ca"])
            except ValueError as e:
                raise usage.UsageError(f"--upstream-ca: {e}") from None
        self["connectTimeout"] = _seconds("connect-timeout", self["connect-timeout"])
        self["responseTimeout"] = _seconds("response-timeout", self["response-timeout"])
        self["idleTimeout"] = _seconds("idle-timeout", self["idle-timeout"])
        self["maxConnections"] = _count("max-connections", self["max-connections"])
        self["healthSettings"] = self._healthSettings()
        for name, choices in (
            ("retry", ("connect", "none")),
            ("failback", ("manual", "auto")),
        ):
            if self[name] not in choices:
                raise usage.UsageError(
                    f"--{name}: {self[name]!r} must be "
                    + " or ".join(repr(c) for c in choices)
                )
        self["failbackDelay"] = _seconds("failback-delay", self["failback-delay"])
        self._flagOptions()
        self._syncOptions()
        if self["state"] is not None:
            _checkWritableFile("state", self["state"])
        if self.get("sshOptions"):
            from bluegreen.sync.strategies import sshArguments

            try:
                sshArguments(self["sshOptions"])
            except ValueError as e:
                raise usage.UsageError(f"--ssh-option: {e}") from None
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError(
                f"--log-format: {self['log-format']!r} must be 'text' or 'json'"
            )
        accessLog = self["access-log"]
        if accessLog not in ("-", "none"):
            directory = os.path.dirname(os.path.abspath(accessLog))
            if os.path.isdir(accessLog) or not os.path.isdir(directory):
                raise usage.UsageError(
                    f"--access-log: {accessLog!r} is not a file in an existing "
                    "directory"
                )
            if os.path.exists(accessLog) and not os.access(accessLog, os.W_OK):
                raise usage.UsageError(f"--access-log: {accessLog!r} is not writable")
            if not os.path.exists(accessLog) and not os.access(directory, os.W_OK):
                raise usage.UsageError(
                    f"--access-log: cannot create {accessLog!r} (directory not "
                    "writable)"
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
    or C{[user@]host:/path} (L{bluegreen.sync.strategies.parseLocation}); a local
    file need not exist yet, but its directory must.

    @return: C{location}.
    @raise usage.UsageError: Naming C{--name} and the problem.
    """
    from bluegreen.sync.strategies import parseLocation

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


class StartupError(SystemExit, Exception):
    """
    bluegreen cannot start; the message says why, naming the option.

    twistd shows start-up failures as Python tracebacks.  This exception is
    a L{SystemExit} carrying its message, so when it reaches the top of
    C{twistd} Python prints just C{bluegreen: <message>} and exits with
    status 1; it is also an L{Exception}, so twistd's own clean-up on a
    failed start (removing the pidfile, telling a daemon's parent process
    why) still runs.
    """

    def __init__(self, message: str) -> None:
        """
        @param message: What went wrong, without the C{bluegreen:} prefix.
        """
        super().__init__(f"bluegreen: {message}")


class _Listener(StreamServerEndpointService):
    """
    Listens on C{--port} (or C{--admin}); a failure to bind stops start-up
    with a L{StartupError} that names the option.
    """

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: Any,
        description: str,
        option: str = "port",
    ):
        super().__init__(endpoint, factory)
        self._raiseSynchronously = True
        self.description = description
        self.option = option

    def privilegedStartService(self) -> None:
        """
        Listen now (twistd calls this before dropping privileges).

        @raise StartupError: If the port cannot be listened on.
        """
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise StartupError(
                f"cannot listen on --{self.option} {self.description}: {e.socketError}"
            ) from None


def jsonLinesObserver(stream: Any) -> ILogObserver:
    """
    A log observer writing each event as one line of JSON: C{time} (ISO
    8601), C{level}, C{namespace}, C{text} (the formatted message), every
    structured field whose value is a JSON scalar (e.g. C{env}, C{reason},
    C{to}), and C{traceback} for a failure.

    @param stream: Where to write (a text stream).
    @return: The observer.
    """

    @implementer(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        level = event.get("log_level")
        record: dict[str, Any] = {
            "time": formatTime(event.get("log_time")),
            "level": getattr(level, "name", "info"),
            "namespace": event.get("log_namespace", "-"),
            "text": formatEvent(event),
        }
        for key, value in event.items():
            if key.startswith("log_") or key in _JSON_SKIP or key in record:
                continue
            if value is None or isinstance(value, (str, int, float, bool)):
                record[key] = value
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        stream.write(json.dumps(record) + "\n")
        stream.flush()

    return observe


# Keys of legacy log events that repeat what the record already says.
_JSON_SKIP = frozenset(("message", "format", "isError", "system"))


class ProxyService(MultiService):
    """
    The bluegreen service: the listener and health monitor, plus the
    resources they share (pools, access log), closed on shutdown.

    @ivar controller: The switch (see L{Controller.switch}).
    @ivar resource: The proxy resource.
    @ivar pools: Connection pools by environment name.
    @ivar health: The health monitor.
    @ivar admin: The admin API, or L{None} with C{--admin none}.
    @ivar manhole: The manholes, or L{None} without C{--manhole} or
        C{--manhole-ssh}.
    @ivar metrics: The metrics (C{GET /metrics} on the admin API).
    @ivar flags: The feature flags, or L{None} when no environment has a
        Redis (C{--green-redis}, C{--blue-redis}).
    @ivar sync: The database sync, or L{None} without C{--green-db} and
        C{--blue-db}.
    """

    _log = Logger()
    admin: AdminResource | None = None
    manhole: Manhole | None = None
    metrics: Metrics | None = None
    flags: FlagService | None = None
    sync: SyncService | None = None

    def __init__(
        self,
        controller: Controller,
        resource: ProxyResource,
        pools: dict[str, UpstreamPool],
        health: HealthMonitor,
        accessLog: AccessLog | None,
    ) -> None:
        super().__init__()
        self.controller = controller
        self.resource = resource
        self.pools = pools
        self.health = health
        self.accessLog = accessLog

    def startService(self) -> None:
        """
        Start listening and checking, and say where traffic goes.
        """
        live = self.controller.live
        self._log.info(
            "bluegreen {version}: live environment {env} ({url}, {why})",
            version=__version__,
            env=live.name,
            url=live.url,
            why=self.controller.why,
        )
        if self.accessLog is not None:
            self.accessLog.start(self.resource.clock)
        super().startService()

    def privilegedStartService(self) -> None:
        """
        Listen on every port, or on none: if one cannot be listened on, stop
        those already listening before raising the L{StartupError}.
        """
        try:
            super().privilegedStartService()
        except StartupError:
            for child in self:
                if isinstance(child, _Listener) and child._waitingForPort is not None:
                    child.stopService()
            raise

    #: Set by C{--log-format json}: installed as the application's log
    #: observer (twistd then uses it instead of its text log).
    logObserver: ILogObserver | None = None

    def setServiceParent(self, parent: Any) -> None:
        """
        Join twistd's application, giving it our log observer if we have one.
        """
        super().setServiceParent(parent)
        if self.logObserver is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.logObserver)

    def stopService(self) -> Deferred[Any]:
        """
        Stop listening and checking, then close the upstream pools (letting
        requests in flight finish for a few seconds) and the access log.
        """
        d: Deferred[Any] = Deferred.fromCoroutine(self._stop())
        return d

    async def _stop(self) -> None:
        await super().stopService()
        self.controller.stop()
        await DeferredList([pool.close() for pool in self.pools.values()])
        if self.accessLog is not None:
            self.accessLog.close()


class _QuietClientFactory(_HTTP11ClientFactory):
    """
    The pool's connection factory, without its start/stop log lines.
    """

    noisy = False


@implementer(IAgentEndpointFactory)
class _DirectEndpoints:
    """
    The health checks' endpoints: the proxy's own (L{endpointFor}), so an IP
    address is connected to directly.  L{HostnameEndpoint}, which a plain
    L{Agent} uses, reports a refused connection only after its 0.3 s
    attempt delay, slowing every check of a dead environment.
    """

    def __init__(self, reactor: Any, timeout: float, trustRoot: Any) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.trustRoot = trustRoot

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """
        @return: The endpoint for C{uri}'s scheme, host and port.
        """
        host = uri.host.decode("idna").strip("[]")
        where = Environment("health", "", uri.scheme.decode("ascii"), host, uri.port)
        return endpointFor(self.reactor, where, self.timeout, self.trustRoot)


def healthClient(reactor: Any, options: Options) -> tuple[Any, HTTPConnectionPool]:
    """
    The treq client the health checks use: its own pool, a new connection
    per check (a reused connection would hide connect failures), https
    verified like the proxy's.

    @return: C{(client, pool)}; the pool is closed when the monitor stops.
    """
    pool = HTTPConnectionPool(reactor, persistent=False)
    # One "Starting factory" log line per check would bury the real news.
    pool._factory = _QuietClientFactory
    endpoints = _DirectEndpoints(
        reactor, options["healthSettings"].timeout, options["trustRoot"]
    )
    agent = Agent.usingEndpointFactory(reactor, endpoints, pool=pool)
    return HTTPClient(agent), pool


def _syncService(
    options: Options, reactor: Any, controller: Controller
) -> SyncService | None:
    """
    The database sync, if both C{--green-db} and C{--blue-db} are given
    (with C{--sync none} it still syncs when asked).

    @raise StartupError: If C{sqlite3} or C{rsync} cannot be found.
    """
    databases: dict[str, str] = options.get("databases") or {}
    if not databases:
        return None
    from bluegreen.sync.process import MissingTool, ProcessRunner, Tools
    from bluegreen.sync.strategies import Syncer, sshArguments

    try:
        tools = Tools.find()
    except MissingTool as e:
        raise StartupError(
            f"--green-db/--blue-db: the database sync needs {e}"
        ) from None
    try:
        sshOptions = sshArguments(options.get("sshOptions", []))
    except ValueError as e:
        raise StartupError(f"--ssh-option: {e}") from None
    return SyncService(
        reactor,
        Syncer(reactor, ProcessRunner(reactor, tools), sshOptions=sshOptions),
        controller,
        databases,
        options["syncMode"],
        options["mirrorInterval"],
        {
            colour: (options[f"{colour}-stop"], options[f"{colour}-start"])
            for colour in databases
        },
    )


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    Build the bluegreen service from parsed options.

    @param options: Parsed and checked L{Options}.
    @param reactor: The reactor to use (the global one if L{None}).
    @return: The service tree for twistd.
    @raise StartupError: If the access log file cannot be opened, or the
        manhole's SSH host key cannot be read or created.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    environments: dict[str, Environment] = options["environments"]
    settings: HealthSettings = options["healthSettings"]
    http, healthPool = healthClient(reactor, options)
    monitor = HealthMonitor(environments, settings, reactor, http, healthPool)
    controller = Controller.create(
        environments,
        options["active"],
        reactor,
        stateFile=options["state"],
        isUp=lambda name: monitor.health[name].up,
        failback=options["failback"],
        failbackDelay=options["failbackDelay"],
        outageInterval=settings.interval,
    )
    monitor.subscribe(controller.healthChanged)
    pools = {
        name: UpstreamPool(
            reactor,
            environment,
            connectTimeout=options["connectTimeout"],
            trustRoot=options["trustRoot"],
            maxConnections=options["maxConnections"],
            idleTimeout=options["idleTimeout"],
        )
        for name, environment in environments.items()
    }
    try:
        accessLog = AccessLog.fromOption(options["access-log"])
    except OSError as e:
        raise StartupError(
            f"--access-log: cannot open {options['access-log']!r}: {e.strerror}"
        ) from None
    metrics = Metrics(controller, monitor)
    flags = None
    targets = options.get("redisTargets") or {}
    if any(target is not None for target in targets.values()):
        flags = FlagService(
            reactor,
            targets,
            options["flagNames"],
            timeout=options["redisTimeout"],
            refresh=options["flagRefresh"],
        )
    resource = ProxyResource(
        controller,
        pools,
        reactor,
        responseTimeout=options["responseTimeout"],
        preserveHost=options["upstream-host-header"] == "client",
        accessLog=accessLog,
        health=monitor,
        retry=options["retry"] == "connect",
        metrics=metrics,
        stampFlags=flags.flagsFor if flags and options["stamp-flags"] else None,
    )
    service = ProxyService(controller, resource, pools, monitor, accessLog)
    service.metrics = metrics
    if flags is not None:
        service.flags = flags
        flags.setServiceParent(service)
    sync = _syncService(options, reactor, controller)
    if sync is not None:
        service.sync = sync
        sync.setServiceParent(service)
        metrics.register(SyncMetrics(sync))
        if sync.mode != "none":
            # Planned switches sync first; every switch brings over, after
            # it, what the old live database took meanwhile.
            controller.beforeSwitch = sync.beforeSwitch
            controller.onSwitch.append(sync.switched)
    if options["log-format"] == "json":
        service.logObserver = jsonLinesObserver(sys.stdout)
    monitor.setServiceParent(service)
    site = ProxySite(resource, reactor)
    endpoint = serverFromString(reactor, options["endpoint"])
    listener = _Listener(endpoint, site, options["port"])
    listener.setServiceParent(service)
    if flags is not None:
        metrics.register(FlagMetrics(flags))
    if options["adminEndpoint"] is not None:
        admin = adminSite(controller, monitor, reactor, options["adminToken"])
        service.admin = admin.admin
        admin.admin.putChild(b"metrics", MetricsResource(metrics))
        mountFlags(admin.admin, flags)
        if flags is not None:
            admin.admin.addStatus("flags", flags.table)
        mountSync(admin.admin, sync)
        if sync is not None:
            admin.admin.addStatus("sync", sync.status)
        _Listener(
            serverFromString(reactor, options["adminEndpoint"]),
            admin,
            options["admin"],
            "admin",
        ).setServiceParent(service)
    if options.get("manholeSettings") is not None:
        shown = LiveObjects(
            controller=controller,
            health=monitor,
            proxy=resource,
            pools=pools,
            service=service,
            flags=flags,
            sync=sync,
        )
        try:
            manhole = Manhole.create(options["manholeSettings"], shown, reactor)
        except ManholeError as e:
            raise StartupError(str(e)) from None
        service.manhole = manhole
        manhole.setServiceParent(service)
        for option, description, factory in manhole.listeners():
            _Listener(
                serverFromString(reactor, description), factory, options[option], option
            ).setServiceParent(service)
    return service
