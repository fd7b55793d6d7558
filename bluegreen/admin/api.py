# -*- test-case-name: tests.test_admin -*-
"""
The admin HTTP API: see and change what bluegreen does.

It is served on C{--admin} (by default C{tcp:3091:interface=127.0.0.1}),
never on the proxied port::

    GET  /             the dashboard, a web page (see L{bluegreen.admin.dashboard})
    GET  /api/status   the live environment and why, each environment's URL
                       and health (with its last checks), the switch history
                       (JSON)
    GET  /api/events   the same status as server-sent events, whenever it
                       changes (for the dashboard)
    POST /api/switch   {"to": "blue", "force": false}: switch, or 409 with
                       the reason (target down, already live)
    POST /api/check    run the health checks now, then answer as
                       GET /api/status
    GET  /api/flags    the feature flags of each environment; also
                       GET|PUT|DELETE /api/flags/{name} and
                       GET /api/flags/history (see L{bluegreen.flags.api})
    GET  /api/sync     the last database syncs and the mirror's lag; also
                       POST /api/sync {"from": "green", "to": "blue"} (see
                       L{bluegreen.sync.api})
    GET  /metrics      Prometheus metrics, in the text format (added by
                       L{bluegreen.service.tap.makeService}; see
                       L{bluegreen.admin.metrics})

Every answer but C{/}, C{/api/events} and C{/metrics} is JSON; errors are
C{{"error": "..."}} with the fitting status (400 bad request body, 401
missing or wrong token, 404 unknown path, 405 wrong method (with C{Allow}),
409 switch refused (or a flag change where there is no Redis), 413 body
over 64 KiB, 415 a body that is not C{application/json}, 503 health checks
not running or a Redis that cannot be reached).  Before any of that, on
every path: 421 for a C{Host} that does not name the admin API, 403 for a
change carrying another site's C{Origin} (L{bluegreen.admin.guard}).

With C{--admin-token-file}, the C{POST}, C{PUT} and C{DELETE} calls need
C{Authorization: Bearer <token>}; the C{GET}s stay open.  A C{POST}
with a body must say C{Content-Type: application/json}; one without a body
(C{POST /api/check}) needs no content type.  Insisting on JSON means a web
page in an operator's browser cannot switch through the loopback API with a
"simple" cross-site request: a JSON body needs a CORS preflight, which this
API never grants.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from bluegreen import __version__
from bluegreen.admin.dashboard import DashboardPage, StatusEvents
from bluegreen.admin.jsonapi import AdminError, Call, JSONObject, checkFields
from bluegreen.admin.routes import Directory, Endpoint, NotFound
from bluegreen.controller import Controller, Switch, SwitchRefused, UnknownEnvironment
from bluegreen.health import CheckResult, EnvironmentHealth, HealthMonitor
from bluegreen.timetext import isoTime

_log = Logger(namespace="bluegreen.admin")


def _checkResult(result: CheckResult | None) -> JSONObject | None:
    """
    @return: A health check's result as JSON, or L{None} for no check.
    """
    if result is None:
        return None
    return {
        "ok": result.ok,
        "reason": result.reason,
        "when": result.when,
        "at": isoTime(result.when),
        "latency": result.latency,
        "status": result.status,
        "passive": result.passive,
    }


def _check(result: CheckResult) -> JSONObject:
    """
    @return: A check of the recent history as JSON (the dashboard's strip).
    """
    return {
        "ok": result.ok,
        "when": result.when,
        "reason": result.reason,
        "latency": result.latency,
        "passive": result.passive,
    }


def _health(state: EnvironmentHealth | None) -> JSONObject:
    """
    @return: An environment's health as JSON: C{state} is C{"up"},
        C{"down"} or C{"unknown"} (not checked yet, or no monitor);
        C{checks} are the last L{bluegreen.health.HISTORY} checks, oldest
        first; C{passiveFailures} counts the proxied requests that could
        not reach it (not checks: they never mark it down).
    """
    if state is None or state.up is None:
        word = "unknown"
    else:
        word = "up" if state.up else "down"
    last = None if state is None else state.last
    return {
        "state": word,
        "up": None if state is None else state.up,
        "successes": 0 if state is None else state.successes,
        "failures": 0 if state is None else state.failures,
        # Proxied requests that could not reach it: evidence, not checks.
        "passiveFailures": 0 if state is None else state.passiveFailures,
        "lastCheck": _checkResult(last),
        "checks": [] if state is None else [_check(r) for r in state.history],
    }


def _switch(record: Switch) -> JSONObject:
    """
    @return: A switch of the history as JSON.
    """
    return {
        "when": record.when,
        "at": isoTime(record.when),
        "from": record.source,
        "to": record.to,
        "reason": record.reason,
    }


class AdminResource(Resource):
    """
    The root of the admin API: C{/api/status}, C{/api/switch}, C{/api/check},
    and the dashboard: C{/} and C{/api/events}.

    @ivar controller: The switch.
    @ivar health: The health monitor, or L{None} (no health checks).
    @ivar token: The bearer token the C{POST} calls need, or L{None}.
    @ivar clock: Tells the time for C{now} in the status.
    @ivar statusProviders: Extra sections of the status (e.g. C{flags},
        C{sync}), by name; see L{addStatus}.
    @ivar api: C{/api}, where the components mount their endpoints
        (C{flags}, C{sync}).
    @ivar events: C{/api/events}, the status as server-sent events.
    """

    def __init__(
        self,
        controller: Controller,
        health: HealthMonitor | None,
        clock: IReactorTime,
        token: bytes | None = None,
    ) -> None:
        """
        @param controller: The switch.
        @param health: The health monitor, if there is one.
        @param clock: Tells the time.
        @param token: The bearer token mutating calls need, if any.
        """
        super().__init__()
        self.controller = controller
        self.health = health
        self.clock = clock
        self.token = token
        self.statusProviders: dict[str, Callable[[], Any]] = {}
        self.api = Directory()
        self.putChild(b"api", self.api)
        self.api.putChild(b"status", Endpoint(self, {b"GET": self.status}))
        self.api.putChild(b"switch", Endpoint(self, {b"POST": self.switch}))
        self.api.putChild(b"check", Endpoint(self, {b"POST": self.check}))
        self.putChild(b"", DashboardPage())
        self.events = StatusEvents(self.status, clock)
        self.api.putChild(b"events", self.events)

    def getChild(self, path: bytes, request: Request) -> Resource:
        """
        Anything but C{/api/...} is not found.

        @param path: The path segment.
        @param request: The request.
        @return: A L{NotFound}.
        """
        return NotFound()

    def render(self, request: Request) -> int:
        """
        C{/} itself is not found (the dashboard is its child C{b""}).

        @param request: The request.
        @return: L{NOT_DONE_YET<twisted.web.server.NOT_DONE_YET>}.
        """
        return NotFound().render(request)

    def addStatus(self, name: str, provider: Callable[[], Any]) -> None:
        """
        Add a section to C{GET /api/status}.

        @param name: Its key in the status object (e.g. C{"flags"}).
        @param provider: Called for each status; returns JSON-able data.
        """
        self.statusProviders[name] = provider

    def authorize(self, request: Request) -> None:
        """
        Check a mutating call's bearer token (in constant time).

        @param request: The call's request.
        @raise AdminError: 401 if a token is configured and the request does
            not carry it.
        """
        if self.token is None:
            return
        values = request.requestHeaders.getRawHeaders(b"authorization") or []
        problem = "missing Authorization: Bearer <token>"
        if len(values) == 1:
            scheme, _, credentials = values[0].strip().partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                given = hashlib.sha256(credentials.strip()).digest()
                expected = hashlib.sha256(self.token).digest()
                if hmac.compare_digest(given, expected):
                    return
                problem = "wrong token"
        elif values:
            problem = "more than one Authorization header"
        raise AdminError(
            401, problem, {"WWW-Authenticate": 'Bearer realm="bluegreen admin"'}
        )

    # The endpoints

    def status(self, call: Call | None = None) -> JSONObject:
        """
        C{GET /api/status}: everything an operator wants to see.

        @return: The status object.
        """
        controller = self.controller
        states = {} if self.health is None else self.health.health
        environments = {
            name: {
                "url": environment.url,
                "live": name == controller.live.name,
                "health": _health(states.get(name)),
            }
            for name, environment in controller.environments.items()
        }
        status: JSONObject = {
            "version": __version__,
            "now": self.clock.seconds(),
            "live": controller.live.name,
            "why": controller.why,
            "since": controller.history[-1].when if controller.history else None,
            "mode": controller.mode,
            "syncing": controller.syncing,
            "environments": environments,
            "history": [_switch(record) for record in controller.history],
        }
        for name, provider in self.statusProviders.items():
            status[name] = provider()
        return status

    async def switch(self, call: Call) -> JSONObject:
        """
        C{POST /api/switch}: C{{"to": "blue", "force": false}}.

        With database sync on, C{to}'s database is brought up to date from
        the live one first (see L{Controller.plannedSwitch}); the answer then
        carries the sync's report as C{"sync"}.

        @return: The switch made and the new status.
        @raise AdminError: 400 for an unknown environment, 409 if the switch
            is refused.
        """
        checkFields(call.body, required={"to": str}, optional={"force": bool})
        to: str = call.body["to"]
        force: bool = call.body.get("force", False)
        environments = self.controller.environments
        if to not in environments:
            # Checked before logging: the log shows only known names.
            raise AdminError(
                400,
                f"unknown environment {to!r}; expected {' or '.join(environments)}",
            )
        _log.info(
            "admin API from {client}: switch to {to}{forced}",
            client=call.client,
            to=to,
            forced=" (forced)" if force else "",
            event="admin-switch",
        )
        reason = f"manual switch via admin API from {call.client}"
        if force:
            reason += ", forced"
        report = None
        try:
            record, report = await self.controller.plannedSwitch(
                to, reason, force=force
            )
        except UnknownEnvironment as e:
            raise AdminError(400, str(e)) from None
        except SwitchRefused as e:
            _log.warn(
                "admin API from {client}: switch to {to} refused: {why}",
                client=call.client,
                to=to,
                why=str(e),
                event="admin-switch-refused",
            )
            raise AdminError(409, str(e)) from None
        answer: JSONObject = {"switched": _switch(record), "status": self.status()}
        if report is not None:
            answer["sync"] = report.asJSON()
        return answer

    async def check(self, call: Call) -> JSONObject:
        """
        C{POST /api/check}: run every health check now and wait for them.

        @return: The status once the checks are done.
        @raise AdminError: 503 if the health checks are not running.
        """
        checkFields(call.body)
        monitor = self.health
        if monitor is None or not monitor.running:
            raise AdminError(503, "health checks are not running")
        _log.info(
            "admin API from {client}: running the health checks now",
            client=call.client,
            event="admin-check",
        )
        await monitor.checkNow()
        results = ", ".join(
            f"{name} {_health(state)['state']}"
            + (f" ({state.last.reason})" if state.last else "")
            for name, state in monitor.health.items()
        )
        _log.info(
            "admin API from {client}: health checks done: {results}",
            client=call.client,
            results=results,
            event="admin-check-done",
        )
        return self.status()
