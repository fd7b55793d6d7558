# -*- test-case-name: tests.test_options -*-
"""
L{Config}: what the options of C{twistd bluegreen} mean, checked and
converted once by L{bluegreen.service.options.Options}.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import field, frozen
from twisted.internet.ssl import Certificate

from bluegreen.admin.guard import AdminNames
from bluegreen.environment import Environment
from bluegreen.flags.target import RedisTarget
from bluegreen.health import HealthSettings
from bluegreen.manhole.service import ManholeSettings
from bluegreen.promote.settings import PromotionSettings
from bluegreen.proxy.limits import ClientLimits
from bluegreen.proxy.spool import BufferSettings
from bluegreen.proxy.tunnels import TunnelSettings
from bluegreen.service.fleetoptions import CoordinateSettings


@frozen
class Config:
    """
    The checked settings of C{twistd bluegreen}: what every option means,
    converted and derived once, for L{bluegreen.service.tap.makeService}.

    @ivar listen: Each listening option's value as the user gave it, by
        option name (C{port}, C{admin}, C{manhole}, C{manhole-ssh}), for
        messages.
    @ivar endpoint: Where the proxy listens (a server endpoint description).
    @ivar adminEndpoint: Where the admin API listens, or L{None} for
        C{--admin none}.
    @ivar adminToken: The token the admin API requires for changes, or
        L{None}.
    @ivar adminNames: The names the admin API answers to beyond loopback
        and its own address (C{--admin-host}).
    @ivar manhole: The manholes' settings, or L{None} when both are off.
    @ivar environments: GREEN and BLUE, by name.
    @ivar active: The environment live at start.
    @ivar preserveHost: Send the client's C{Host} upstream (C{client}), not
        the environment's (C{target}).
    @ivar trustRoot: The CA trusted for C{https} environments, or L{None}
        for the system's.
    @ivar connectTimeout: Seconds to connect to an environment.
    @ivar responseTimeout: Seconds for a response to start, and the longest
        silence within its body.
    @ivar idleTimeout: Seconds an idle upstream connection is kept.
    @ivar maxConnections: Most connections open to each environment.
    @ivar health: How the environments are checked.
    @ivar retry: Retry a request that cannot reach the live environment on
        the standby.
    @ivar failback: C{manual} or C{auto}.
    @ivar failbackDelay: Seconds C{--active} must stay up before an
        automatic failback.
    @ivar state: The state file, or L{None}.
    @ivar logFormat: C{text} or C{json}.
    @ivar accessLog: C{-}, C{none} or a file path.
    @ivar redisTargets: Each environment's Redis, or L{None} without one.
    @ivar flagNames: The flags shown and stamped even while unset.
    @ivar redisTimeout: Seconds allowed for each Redis call.
    @ivar flagRefresh: Seconds between full re-reads of the flags.
    @ivar stampFlags: Send the live environment's flags with each request.
    @ivar databases: Each environment's database, when both are given;
        otherwise empty (no sync).
    @ivar syncMode: One of L{bluegreen.sync.service.SYNC_MODES}.
    @ivar mirrorInterval: Seconds between passes of C{--sync mirror}.
    @ivar appCommands: Each environment's C{(stop, start)} shell commands
        (either may be L{None}).
    @ivar sshOptions: The C{--ssh-option} values, in order.
    @ivar promotion: The deployment workflow's settings (C{--preview},
        C{--verify}...).
    @ivar clientLimits: The client limits and timeouts (C{--max-clients},
        C{--client-header-timeout}...).
    @ivar buffering: How request and response bodies are buffered for slow
        clients (C{--request-buffering} and the options after it).
    @ivar tunnel: How upgraded connections (WebSockets) are timed and
        drained (C{--tunnel-idle-timeout}, C{--drain-timeout}).
    @ivar coordinate: The state shared with other instances, or L{None}.
    """

    listen: Mapping[str, str]
    endpoint: str
    adminEndpoint: str | None
    adminToken: bytes | None
    adminNames: AdminNames
    manhole: ManholeSettings | None
    environments: Mapping[str, Environment]
    active: str
    preserveHost: bool
    trustRoot: Certificate | None
    connectTimeout: float
    responseTimeout: float
    idleTimeout: float
    maxConnections: int
    health: HealthSettings
    retry: bool
    failback: str
    failbackDelay: float
    state: str | None
    logFormat: str
    accessLog: str
    redisTargets: Mapping[str, RedisTarget | None]
    flagNames: tuple[str, ...]
    redisTimeout: float
    flagRefresh: float
    stampFlags: bool
    databases: Mapping[str, str]
    syncMode: str
    mirrorInterval: float
    appCommands: Mapping[str, tuple[str | None, str | None]]
    sshOptions: tuple[str, ...]
    buffering: BufferSettings
    clientLimits: ClientLimits
    promotion: PromotionSettings = field(factory=PromotionSettings)
    tunnel: TunnelSettings = field(factory=TunnelSettings)
    coordinate: CoordinateSettings | None = None
