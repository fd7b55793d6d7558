# -*- test-case-name: tests.test_promote_integration -*-
"""
Add the deployment workflow to the service tree (called by
L{bluegreen.service.tap.makeService}): the C{--preview} listener, the
L{Promoter} and its admin endpoints and metrics, and the post-promotion
L{Analysis} fed by the main listener's responses.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString

from bluegreen.admin.api import AdminResource
from bluegreen.admin.metrics import Metrics
from bluegreen.controller import Controller
from bluegreen.healthclient import healthClient
from bluegreen.promote.analysis import Analysis, ObservedMetrics
from bluegreen.promote.api import RevisionMetrics, mountPromotion
from bluegreen.promote.promoter import Promoter
from bluegreen.promote.settings import PromotionSettings
from bluegreen.promote.verify import MissingShell, Verifier, findShell
from bluegreen.proxy.resource import ProxyResource, ProxySite
from bluegreen.service.listener import Listener, StartupError


def addPromotion(
    service: MultiService,
    settings: PromotionSettings,
    reactor: Any,
    resource: ProxyResource,
    metrics: Metrics,
    admin: AdminResource | None,
    trustRoot: Any = None,
) -> Promoter:
    """
    Build the workflow's parts into C{service}.

    @param service: The service tree (a L{bluegreen.service.tap.ProxyService}).
    @param settings: The workflow's settings.
    @param reactor: The service's reactor.
    @param resource: The main listener's proxy: the preview's is a copy of
        it that proxies to the standby and never retries on the live
        environment.
    @param metrics: Where C{bluegreen_revision_info} is exported.
    @param admin: The admin API, or L{None}.
    @param trustRoot: The CA trusted for C{https} environments, or L{None}.
    @return: The promoter (C{service} must call its C{stop}).
    @raise StartupError: If C{--verify-command} is given and C{sh} or
        C{setsid} cannot be found.
    """
    controller: Controller = resource.controller
    listener = None
    if settings.preview is not None:
        preview = ProxyResource(
            controller,
            resource.pools,
            resource.clock,
            responseTimeout=resource.responseTimeout,
            preserveHost=resource.preserveHost,
            accessLog=resource.accessLog,
            health=resource.health,
            # A retry from the preview would land on the live environment.
            retry=False,
            metrics=resource.metrics,
            stampFlags=resource.stampFlags,
            side="standby",
        )
        listener = Listener(
            serverFromString(reactor, settings.preview),
            ProxySite(preview, reactor),
            settings.previewListen,
            "preview",
        )
        listener.setServiceParent(service)

    def previewURL() -> str | None:
        if listener is None or listener.port is None:
            return None
        return urlOf(listener.port.getHost())

    tools = None
    if settings.command is not None:
        try:
            tools = findShell()
        except MissingShell as e:
            raise StartupError(f"--verify-command: {e}") from None
    http, pool = healthClient(reactor, settings.timeout, trustRoot)
    verifier = Verifier(reactor, http, settings, controller, previewURL, tools)
    controller.verify = verifier.verify if settings.verifies else None
    promoter = Promoter(controller, verifier, reactor, pool, previewURL)
    # Only the main listener's responses are judged (the preview's go to
    # the standby, never to the environment watched).
    promoter.analysis = Analysis(controller, reactor, settings.analysis)
    resource.metrics = ObservedMetrics(resource.metrics, promoter.analysis)
    metrics.register(RevisionMetrics(controller))
    if admin is not None:
        mountPromotion(admin, promoter)
    return promoter


def urlOf(address: Any) -> str | None:
    """
    @param address: Where a listener listens (its port's C{getHost()}).
    @return: An C{http} URL reaching it from this machine, or L{None} for
        a UNIX socket.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
