# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd bluegreen} service tree.

C{twistd -n bluegreen --port 3090 --green URL --blue URL} parses
L{Options} (into a L{Config}), then L{makeService} builds the proxy: a
L{Controller} holding the live environment, a connection pool per
environment and the proxy site listening on C{--port}, with the health
checks, the admin API, the flags, the sync and the manholes as configured.

twistd's plugin (L{twisted.plugins.bluegreen_plugin}) names this module: it
needs L{Options} and L{makeService} here.
"""

from __future__ import annotations

import sys
from typing import Any, cast

from twisted.application.service import IService, IServiceCollection, MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IReactorProcess,
    IReactorTCP,
    IReactorTime,
)
from twisted.logger import ILogObserver, Logger

from bluegreen import __version__
from bluegreen.admin.api import AdminResource
from bluegreen.admin.buffermetrics import BufferMetrics
from bluegreen.admin.metrics import FlagMetrics, Metrics, MetricsResource
from bluegreen.admin.site import adminSite
from bluegreen.controller import Controller
from bluegreen.flags.api import mountFlags
from bluegreen.flags.service import FlagService
from bluegreen.fleet.coordinator import Coordinator
from bluegreen.fleet.metrics import FleetMetrics
from bluegreen.fleet.redis import RedisBackend
from bluegreen.health import HealthMonitor
from bluegreen.healthclient import healthClient
from bluegreen.manhole.auth import ManholeError
from bluegreen.manhole.namespace import LiveObjects
from bluegreen.manhole.service import Manhole
from bluegreen.promote.promoter import Promoter
from bluegreen.promote.wiring import addPromotion
from bluegreen.proxy.accesslog import AccessLog
from bluegreen.proxy.clients import ClientGate
from bluegreen.proxy.limits import DESCRIPTOR_RESERVE, defaultMaxClients
from bluegreen.proxy.pool import UpstreamPool
from bluegreen.proxy.rejections import ClientMetrics, clientStatus
from bluegreen.proxy.resource import ProxyResource, ProxySite
from bluegreen.proxy.spool import TempFiles
from bluegreen.proxy.tunnels import TunnelMetrics, Tunnels
from bluegreen.service.config import Config
from bluegreen.service.descriptors import raiseDescriptorLimit
from bluegreen.service.listener import Listener, StartupError
from bluegreen.service.logs import logObserverFor
from bluegreen.service.options import Options
from bluegreen.sync.api import mountSync
from bluegreen.sync.metrics import SyncMetrics
from bluegreen.sync.service import SyncService

__all__ = ["Options", "ProxyService", "ServiceReactor", "StartupError", "makeService"]


class ServiceReactor(IReactorCore, IReactorTCP, IReactorTime, IReactorProcess):
    """
    The reactor interfaces the service uses: listening and connecting (TCP,
    and UNIX sockets and TLS where configured), timers, and the sync's
    processes.  Only for the type checker; the global reactor provides all.
    """


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
    @ivar promoter: The deployment workflow (preview, promotion, revisions).
    @ivar coordinator: The state shared with other instances, or L{None}
        without C{--coordinate}.
    """

    _log = Logger()
    admin: AdminResource | None = None
    manhole: Manhole | None = None
    metrics: Metrics | None = None
    flags: FlagService | None = None
    sync: SyncService | None = None
    promoter: Promoter | None = None
    coordinator: Coordinator | None = None

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

    #: Counts client connections against C{--max-clients}.
    gate: ClientGate | None = None
    #: C{--max-clients} as given (L{None}: derived at start).
    maxClients: int | None = None
    #: C{--max-connections}, for the derived C{--max-clients}.
    maxConnections: int = 100

    def startService(self) -> None:
        """
        Raise the open-file limit and size C{--max-clients} from it, then
        start listening and checking, and say where traffic goes.
        """
        self._sizeClients()
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

    def _sizeClients(self) -> None:
        """
        Raise the soft C{RLIMIT_NOFILE} to the hard one (logged), and set
        the client limit: C{--max-clients}, or derived from the new limit.
        """
        raised = raiseDescriptorLimit()
        gate = self.gate
        if raised is not None:
            self._log.info(
                "open-file limit: {after} (soft limit was {before}, hard limit "
                "{hard}){error}",
                after=raised.after,
                before=raised.before,
                hard=raised.hard,
                error=f"; could not raise it: {raised.error}" if raised.error else "",
                event="descriptor-limit",
            )
        if gate is None:
            return
        if self.maxClients is not None:
            gate.setLimit(self.maxClients)
            how = "--max-clients"
        elif raised is not None:
            gate.setLimit(defaultMaxClients(raised.after, self.maxConnections))
            how = (
                f"derived: {raised.after} open files - 2 x --max-connections "
                f"{self.maxConnections} - {DESCRIPTOR_RESERVE} reserved"
            )
        else:
            return
        self._log.info(
            "accepting at most {limit} client connections ({how})",
            limit=gate.limit,
            how=how,
            event="max-clients-limit",
        )

    def privilegedStartService(self) -> None:
        """
        Listen on every port, or on none: if one cannot be listened on, stop
        those already listening before raising the L{StartupError}.
        """
        try:
            super().privilegedStartService()
        except StartupError:
            for child in self.listeners():
                if child.port is not None:
                    child.stopService()
            raise

    def listeners(self) -> list[Listener]:
        """
        @return: What listens: C{--port} first, then C{--admin} and the
            manholes, as configured.
        """
        return [child for child in self if isinstance(child, Listener)]

    def whenListening(self, option: str = "port") -> Deferred[IListeningPort]:
        """
        Where an option's listener listens, once it does.

        @param option: C{port}, C{admin}, C{manhole} or C{manhole-ssh}.
        @return: A L{Deferred} firing with the listening port.
        @raise KeyError: If nothing listens for C{option}.
        """
        for listener in self.listeners():
            if listener.option == option:
                return listener.whenListening()
        raise KeyError(option)

    #: Set by C{--log-format json}: installed as the application's log
    #: observer (twistd then uses it instead of its text log).
    logObserver: ILogObserver | None = None

    def setServiceParent(self, parent: IServiceCollection) -> None:
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
        if self.gate is not None:
            self.gate.detach()
        self.controller.stop()
        if self.promoter is not None:
            await self.promoter.stop()
        tunnels = self.resource.tunnels
        if tunnels is not None:
            await tunnels.closeAll()
        await DeferredList([pool.close() for pool in self.pools.values()])
        if self.accessLog is not None:
            self.accessLog.close()


def _syncService(
    config: Config, reactor: ServiceReactor, controller: Controller
) -> SyncService | None:
    """
    The database sync, if both C{--green-db} and C{--blue-db} are given
    (with C{--sync none} it still syncs when asked).

    @raise StartupError: If C{sqlite3} or C{rsync} cannot be found.
    """
    if not config.databases:
        return None
    from bluegreen.sync.locations import sshArguments
    from bluegreen.sync.process import MissingTool, ProcessRunner, Tools
    from bluegreen.sync.syncer import Syncer

    try:
        tools = Tools.find()
    except MissingTool as e:
        raise StartupError(
            f"--green-db/--blue-db: the database sync needs {e}"
        ) from None
    try:
        sshOptions = sshArguments(list(config.sshOptions))
    except ValueError as e:
        raise StartupError(f"--ssh-option: {e}") from None
    return SyncService(
        reactor,
        Syncer(reactor, ProcessRunner(reactor, tools), sshOptions=sshOptions),
        controller,
        config.databases,
        config.syncMode,
        config.mirrorInterval,
        config.appCommands,
    )


def _buffers(config: Config) -> TempFiles | None:
    """
    The temporary files of request and response buffering, or L{None} when
    both are off.

    @raise StartupError: If C{--temp-dir} cannot be made private to us.
    """
    settings = config.buffering
    if not (settings.requestBuffering or settings.responseBuffering):
        return None
    buffers = TempFiles(settings)
    try:
        buffers.checkBase()
    except OSError as e:
        raise StartupError(f"--temp-dir: {settings.tempDir!r}: {e.strerror}") from None
    return buffers


def makeService(
    options: Config | Options, reactor: ServiceReactor | None = None
) -> IService:
    """
    Build the bluegreen service.

    @param options: The settings, or parsed L{Options} (their C{config}).
    @param reactor: The reactor to use (the global one if L{None}).
    @return: The service tree for twistd (a L{ProxyService}).
    @raise StartupError: If the access log file cannot be opened, the
        manhole's SSH host key cannot be read or created, or the sync's
        tools cannot be found.
    """
    config = options.config if isinstance(options, Options) else options
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = cast(ServiceReactor, _reactor)
    environments = config.environments
    settings = config.health
    http, healthPool = healthClient(reactor, config.health.timeout, config.trustRoot)
    monitor = HealthMonitor(dict(environments), settings, reactor, http, healthPool)
    controller = Controller.create(
        environments,
        config.active,
        reactor,
        stateFile=config.state,
        isUp=lambda name: monitor.health[name].up,
        failback=config.failback,
        failbackDelay=config.failbackDelay,
        outageInterval=settings.interval,
    )
    monitor.subscribe(controller.healthChanged)
    pools = {
        name: UpstreamPool(
            reactor,
            environment,
            connectTimeout=config.connectTimeout,
            trustRoot=config.trustRoot,
            maxConnections=config.maxConnections,
            idleTimeout=config.idleTimeout,
        )
        for name, environment in environments.items()
    }
    try:
        accessLog = AccessLog.fromOption(config.accessLog)
    except OSError as e:
        raise StartupError(
            f"--access-log: cannot open {config.accessLog!r}: {e.strerror}"
        ) from None
    metrics = Metrics(controller, monitor)
    flags = None
    if any(target is not None for target in config.redisTargets.values()):
        flags = FlagService(
            reactor,
            config.redisTargets,
            config.flagNames,
            timeout=config.redisTimeout,
            refresh=config.flagRefresh,
        )
    resource = ProxyResource(
        controller,
        pools,
        reactor,
        responseTimeout=config.responseTimeout,
        preserveHost=config.preserveHost,
        accessLog=accessLog,
        health=monitor,
        retry=config.retry,
        metrics=metrics,
        stampFlags=flags.flagsFor if flags and config.stampFlags else None,
        buffers=_buffers(config),
    )
    service = ProxyService(controller, resource, pools, monitor, accessLog)
    service.metrics = metrics
    if resource.buffers is not None:
        resource.buffers.setServiceParent(service)
        metrics.register(BufferMetrics(resource.buffers.stats))
    tunnels = resource.tunnels = Tunnels(reactor, config.tunnel)
    controller.onSwitch.append(tunnels.switched)
    metrics.register(TunnelMetrics(tunnels))
    if flags is not None:
        service.flags = flags
        flags.setServiceParent(service)
    coordinator = None
    if config.coordinate is not None:
        backend = RedisBackend(
            config.coordinate.target, reactor, reactor, config.redisTimeout
        )
        coordinator = Coordinator(
            controller, backend, reactor, config.coordinate.fallback
        )
        service.coordinator = coordinator
        coordinator.setServiceParent(service)
        metrics.register(FleetMetrics(coordinator))
    sync = _syncService(config, reactor, controller)
    if sync is not None:
        service.sync = sync
        sync.setServiceParent(service)
        metrics.register(SyncMetrics(sync))
        if sync.mode != "none":
            # Planned switches sync first; every switch brings over, after
            # it, what the old live database took meanwhile.
            controller.beforeSwitch = (
                sync.beforeSwitch
                if coordinator is None
                else coordinator.exclusive(sync.beforeSwitch)
            )
            controller.onSwitch.append(
                sync.switched
                if coordinator is None
                else coordinator.ifWon(sync.switched)
            )
    service.logObserver = logObserverFor(config.logFormat, sys.stdout)
    monitor.setServiceParent(service)
    limits = config.clientLimits
    # The limit is set at start, once the open-file limit is raised.
    gate = ClientGate(limits.maxClients or 1, reactor)
    service.gate = gate
    service.maxClients = limits.maxClients
    service.maxConnections = config.maxConnections
    metrics.register(ClientMetrics(resource.rejections, gate))
    site = ProxySite(resource, reactor, limits, gate)
    endpoint = serverFromString(reactor, config.endpoint)
    listener = Listener(endpoint, site, config.listen["port"])
    listener.onListen.append(gate.attach)
    listener.setServiceParent(service)
    if flags is not None:
        metrics.register(FlagMetrics(flags))
    if config.adminEndpoint is not None:
        admin = adminSite(
            controller, monitor, reactor, config.adminToken, config.adminNames
        )
        service.admin = admin.admin
        admin.admin.putChild(b"metrics", MetricsResource(metrics))
        mountFlags(admin.admin, flags)
        if flags is not None:
            admin.admin.addStatus("flags", flags.table)
        admin.admin.addStatus("tunnels", tunnels.status)
        mountSync(admin.admin, sync)
        admin.admin.addStatus(
            "clients", lambda: clientStatus(resource.rejections, gate)
        )
        if coordinator is not None:
            admin.admin.addStatus("coordination", coordinator.status)
        if sync is not None:
            admin.admin.addStatus("sync", sync.status)
        if resource.buffers is not None:
            admin.admin.addStatus("buffers", resource.buffers.stats.asDict)
        Listener(
            serverFromString(reactor, config.adminEndpoint),
            admin,
            config.listen["admin"],
            "admin",
        ).setServiceParent(service)
    service.promoter = addPromotion(
        service,
        config.promotion,
        reactor,
        resource,
        metrics,
        service.admin,
        config.trustRoot,
    )
    if config.manhole is not None:
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
            manhole = Manhole.create(config.manhole, shown, reactor)
        except ManholeError as e:
            raise StartupError(str(e)) from None
        service.manhole = manhole
        manhole.setServiceParent(service)
        for option, description, factory in manhole.listeners():
            Listener(
                serverFromString(reactor, description),
                factory,
                config.listen[option],
                option,
            ).setServiceParent(service)
    return service
