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
not running or a Redis that cannot be reached).

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
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from io import BytesIO
from typing import Any

from attrs import frozen
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from bluegreen import __version__
from bluegreen.admin.dashboard import DashboardPage, StatusEvents
from bluegreen.controller import Controller, Switch, SwitchRefused, UnknownEnvironment
from bluegreen.health import CheckResult, EnvironmentHealth, HealthMonitor

#: The largest request body accepted (a larger one gets 413).
MAX_BODY = 64 * 1024

#: Seconds an idle admin connection is kept open.
IDLE_TIMEOUT = 60

#: Seconds a refused upload may go on before its connection is cut.
LINGER = 2

#: The endpoints, for the 404 message.
ENDPOINTS = (
    "GET /, GET /api/status, GET /api/events, POST /api/switch, POST /api/check, "
    "GET /api/flags, GET|PUT|DELETE /api/flags/{name}, GET /api/flags/history, "
    "GET|POST /api/sync, "
    "GET /metrics"
)

_log = Logger(namespace="bluegreen.admin")

#: A JSON object, as parsed or as sent.
JSONObject = dict[str, Any]


class AdminError(Exception):
    """
    An answer other than success: the status, the message for
    C{{"error": ...}} and any extra headers.
    """

    def __init__(
        self, code: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """
        @param code: The HTTP status.
        @param message: Why, for the client.
        @param headers: Extra response headers (e.g. C{Allow}).
        """
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


@frozen
class Call:
    """
    One admin request, checked and parsed.

    @ivar request: The twisted.web request.
    @ivar client: Who sent it, for logs and the history (an IP address or
        C{"local socket"}).
    @ivar body: The parsed JSON body (empty when there was none).
    """

    request: Request
    client: str
    body: JSONObject


#: Handles a call: returns the JSON to answer with (status 200).
Handler = Callable[[Call], "JSONObject | Awaitable[JSONObject]"]


def clientOf(request: Request) -> str:
    """
    Name the client of C{request} (never from headers, which it chose).

    @return: Its IP address, or C{"local socket"} for a UNIX socket.
    """
    address = request.getClientAddress()
    if isinstance(address, (IPv4Address, IPv6Address)):
        return address.host
    return "local socket"


def _isoTime(when: float) -> str:
    """
    @return: C{when} (POSIX seconds) as ISO 8601 UTC, e.g.
        C{2024-05-01T12:00:00.250Z}.
    """
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
    return f"{stamp}.{int(when % 1 * 1000):03d}Z"


def _jsonType(value: object) -> str:
    """
    @return: The JSON name of C{value}'s type (C{"string"}, C{"number"}...).
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _noConstants(name: str) -> None:
    """
    Refuse C{NaN} and C{Infinity}, which Python's JSON parser accepts.
    """
    raise ValueError(f"{name} is not valid JSON")


def _noDuplicates(pairs: list[tuple[str, Any]]) -> JSONObject:
    """
    Build an object, refusing a field given twice (rather than silently
    keeping the last).
    """
    result: JSONObject = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate field {key!r}")
        result[key] = value
    return result


def parseBody(request: Request) -> JSONObject:
    """
    Read a request's JSON object body.

    @return: The object; empty if there is no body.
    @raise AdminError: 415 for a body that is not C{application/json}, 400
        for one that is not a JSON object.
    """
    content = request.content
    data = content.read() if content is not None else b""
    if not data:
        return {}
    contentType = request.getHeader(b"content-type")
    mediaType = (contentType or b"").split(b";", 1)[0].strip().lower()
    if mediaType != b"application/json":
        got = "none" if contentType is None else repr(contentType.decode("latin-1"))
        raise AdminError(415, f"Content-Type must be application/json (got {got})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise AdminError(400, "malformed JSON: the body is not UTF-8") from None
    try:
        value = json.loads(
            text, parse_constant=_noConstants, object_pairs_hook=_noDuplicates
        )
    except ValueError as e:
        raise AdminError(400, f"malformed JSON: {e}") from None
    except RecursionError:
        raise AdminError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise AdminError(400, f"the body must be a JSON object, not {_jsonType(value)}")
    return value


def checkFields(
    body: JSONObject,
    required: Mapping[str, type] | None = None,
    optional: Mapping[str, type] | None = None,
) -> None:
    """
    Check a body's fields: all C{required} ones present, no others than
    C{required} and C{optional}, each of its type.

    @param body: The parsed body.
    @param required: Field names and their Python types (C{str}, C{bool}).
    @param optional: The same, for fields that may be left out.
    @raise AdminError: 400 naming the first problem.
    """
    required = dict(required or {})
    allowed = {**required, **(optional or {})}
    for name in body:
        if name not in allowed:
            expected = ", ".join(repr(n) for n in allowed) or "none"
            raise AdminError(400, f"unknown field {name!r} (expected: {expected})")
    for name in required:
        if name not in body:
            raise AdminError(400, f"missing field {name!r}")
    for name, kind in allowed.items():
        if name in body and not (
            isinstance(body[name], kind)
            and (kind is bool or not isinstance(body[name], bool))
        ):
            wanted = {str: "a string", bool: "true or false"}.get(kind, kind.__name__)
            raise AdminError(
                400,
                f"field {name!r} must be {wanted}, not {_jsonType(body[name])}",
            )


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
        "at": _isoTime(result.when),
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
        first.
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
        "lastCheck": _checkResult(last),
        "checks": [] if state is None else [_check(r) for r in state.history],
    }


def _switch(record: Switch) -> JSONObject:
    """
    @return: A switch of the history as JSON.
    """
    return {
        "when": record.when,
        "at": _isoTime(record.when),
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
        api = _NotFoundDirectory()
        self.putChild(b"api", api)
        api.putChild(b"status", _Endpoint(self, {b"GET": self.status}))
        api.putChild(b"switch", _Endpoint(self, {b"POST": self.switch}))
        api.putChild(b"check", _Endpoint(self, {b"POST": self.check}))
        self.putChild(b"", DashboardPage())
        self.events = StatusEvents(self.status, clock)
        api.putChild(b"events", self.events)

    def getChild(self, path: bytes, request: Any) -> Resource:
        """
        Anything but C{/api/...} is not found.
        """
        return _NotFound()

    def render(self, request: Any) -> int:
        """
        C{/} itself is not found.
        """
        return _NotFound().render(request)

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


def _writeJSON(
    request: Any, code: int, body: JSONObject, headers: Mapping[str, str] = {}
) -> None:
    """
    Answer C{request} with C{body} as JSON and finish it.
    """
    data = (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    for name, value in headers.items():
        request.setHeader(name.encode("ascii"), value.encode("latin-1"))
    request.setHeader(b"Content-Length", str(len(data)).encode("ascii"))
    request.write(data)
    request.finish()


class _NotFound(Resource):
    """
    A JSON 404 for any method.
    """

    isLeaf = True

    def render(self, request: Any) -> int:
        """
        Answer 404, listing the endpoints.
        """
        path = request.path.decode("latin-1")
        _writeJSON(request, 404, {"error": f"not found: {path} (try {ENDPOINTS})"})
        return NOT_DONE_YET


class _NotFoundDirectory(Resource):
    """
    A resource whose only content is its children: itself and anything else
    below it is a JSON 404.
    """

    def getChild(self, path: bytes, request: Any) -> Resource:
        """
        Anything but the children is not found.
        """
        return _NotFound()

    def render(self, request: Any) -> int:
        """
        The directory itself is not found either.
        """
        return _NotFound().render(request)


class _Endpoint(Resource):
    """
    One API path: checks the method, the token (for C{POST}) and the body,
    calls the handler and answers with its JSON.

    @ivar admin: The API (its token).
    @ivar handlers: The handler of each method.
    """

    isLeaf = True

    def __init__(self, admin: AdminResource, handlers: dict[bytes, Handler]) -> None:
        """
        @param admin: The API.
        @param handlers: The handler of each method (C{GET} also serves
            C{HEAD}; other methods need the token).
        """
        super().__init__()
        self.admin = admin
        self.handlers = handlers

    def render(self, request: Any) -> int:
        """
        Answer C{request} (asynchronously, if the handler is).
        """
        if request.postpath:
            # /api/status/ or /api/status/more
            return _NotFound().render(request)
        client = clientOf(request)
        finished = Deferred.fromCoroutine(self._answer(request, client))
        finished.addErrback(
            lambda f: _log.failure("admin API answer failed", f)  # pragma: no cover
        )
        return NOT_DONE_YET

    async def _answer(self, request: Any, client: str) -> None:
        """
        Check, handle and answer C{request}; errors become JSON answers.
        A client that left before the answer gets none.
        """
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        method = request.method
        path = request.path.decode("latin-1")
        lookup = b"GET" if method == b"HEAD" else method
        try:
            handler = self.handlers.get(lookup)
            if handler is None:
                allowed = sorted(self.handlers)
                if b"GET" in self.handlers:
                    allowed.append(b"HEAD")
                raise AdminError(
                    405,
                    f"method {method.decode('latin-1')} not allowed on {path}",
                    {"Allow": ", ".join(m.decode("ascii") for m in allowed)},
                )
            if lookup != b"GET":
                self.admin.authorize(request)
            body = parseBody(request) if lookup != b"GET" else {}
            result = handler(Call(request, client, body))
            if not isinstance(result, dict):
                result = await result
            code, answer, headers = 200, result, {}
        except AdminError as e:
            if e.code in (401, 403):
                _log.warn(
                    "admin API from {client}: {method} {path} refused: {error}",
                    client=client,
                    method=method.decode("latin-1"),
                    path=path,
                    error=e.message,
                    event="admin-unauthorized",
                )
            elif e.code != 409:
                _log.info(
                    "admin API from {client}: {method} {path}: {code} {error}",
                    client=client,
                    method=method.decode("latin-1"),
                    path=path,
                    code=e.code,
                    error=e.message,
                    event="admin-error",
                )
            code, answer, headers = e.code, {"error": e.message}, e.headers
        except Exception:
            _log.failure(
                "admin API from {client}: {method} {path} failed",
                client=client,
                method=method.decode("latin-1"),
                path=path,
            )
            code, answer, headers = 500, {"error": "internal error (see the log)"}, {}
        if not gone:
            _writeJSON(request, code, answer, headers)


class AdminRequest(Request):
    """
    A request of the admin API: its body is at most L{MAX_BODY} bytes.

    A larger one is refused with C{413} as soon as that is known (from
    C{Content-Length}, or as a chunked body grows), and the connection
    closed: what the client still sends is dropped unread, for at most
    L{LINGER} seconds.
    """

    _tooLarge = False
    _received = 0

    def gotLength(self, length: int | None) -> None:
        """
        The headers are in: refuse a body declared too large at once.

        @param length: The declared length, or L{None} if chunked.
        """
        # Never a temporary file: the body is small or refused.
        self.content = BytesIO()
        if length is not None and length > MAX_BODY:
            self._refuseTooLarge()

    def handleContentChunk(self, data: bytes) -> None:
        """
        Keep a chunk of body, unless it takes the body over the limit.
        """
        if self._tooLarge:
            return
        self._received += len(data)
        if self._received > MAX_BODY:
            self._refuseTooLarge()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        """
        Handle the request, unless it was refused already.
        """
        if not self._tooLarge:
            super().process()

    def _refuseTooLarge(self) -> None:
        """
        Answer 413 straight onto the connection and close it.
        """
        self._tooLarge = True
        # No "100 Continue" after a final answer.
        self.requestHeaders.removeHeader(b"Expect")
        channel: Any = self.channel
        client = clientOf(self)
        _log.info(
            "admin API from {client}: request body over {limit} bytes refused",
            client=client,
            limit=MAX_BODY,
            event="admin-error",
        )
        body = (
            json.dumps({"error": f"request body larger than {MAX_BODY} bytes"}) + "\n"
        ).encode("utf-8")
        channel.transport.write(
            b"HTTP/1.1 413 Content Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode("ascii") + b"\r\n"
            b"Connection: close\r\n\r\n" + body
        )
        # A lingering close: closing at once with the rest of the body
        # unread would make the kernel reset the connection, and the client
        # might lose the answer.  So stop sending, drop whatever still comes,
        # and cut the connection if the client has not closed it within
        # LINGER seconds.
        channel.dataReceived = lambda data: None
        channel.timeoutConnection = channel.forceAbortClient
        channel.setTimeout(LINGER)
        transport = channel.transport
        getattr(transport, "loseWriteConnection", transport.loseConnection)()


class AdminSite(Site):
    """
    The admin API's site: L{AdminRequest}s, idle connections closed after
    L{IDLE_TIMEOUT} seconds, no access log of twisted.web's own (the API
    logs what it does).
    """

    requestFactory = AdminRequest
    noisy = False

    def __init__(self, resource: AdminResource, **kwargs: Any) -> None:
        """
        @param resource: The API.
        @param kwargs: For L{Site}.
        """
        super().__init__(resource, **kwargs)
        self.admin = resource

    def log(self, request: Any) -> None:
        """
        Do nothing: the admin API logs its actions itself.
        """


def adminSite(
    controller: Controller,
    health: HealthMonitor | None,
    reactor: Any,
    token: bytes | None = None,
) -> AdminSite:
    """
    Make the admin API's site.

    @param controller: The switch.
    @param health: The health monitor, if any.
    @param reactor: Runs the site's connections and tells the time.
    @param token: The bearer token mutating calls need, or L{None}.
    @return: The site, to listen on C{--admin}.
    """
    site = AdminSite(
        AdminResource(controller, health, reactor, token),
        timeout=IDLE_TIMEOUT,
        reactor=reactor,
    )
    return site
