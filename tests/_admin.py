# -*- test-case-name: tests.test_admin -*-
"""
Helpers for the tests of the admin site: a running bluegreen service (built
by L{bluegreen.service.tap.makeService}) with its admin API on a free port
of 127.0.0.1, in front of real backends; calls to it; its log events.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any, cast

from attrs import define, field
from treq import content
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
)
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorTCP,
    IReactorTime,
    IReactorUNIX,
)
from twisted.internet.protocol import Protocol
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from bluegreen.admin import api as admin
from bluegreen.service.tap import ProxyService
from tests._backends import buildService
from tests._util import LOOPBACK, PATIENCE, freePort, proxyArguments, waitFor


class _Reactor(IReactorTCP, IReactorTime, IReactorUNIX):
    """
    The reactor interfaces these tests use (for type checking only).
    """


def globalReactor() -> _Reactor:
    """
    @return: The global reactor.
    """
    return cast(_Reactor, reactor)


class _Hello(Resource):
    """
    A backend's only page: its name.
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render_GET(self, request: Any) -> bytes:
        return f"{self.name}\n".encode()


@define
class Backend:
    """
    An environment's app: a tiny twisted.web site on 127.0.0.1, which can
    be started and stopped (to be up or down).

    @ivar name: What it answers.
    @ivar port: Its TCP port (fixed, so it can come back).
    @ivar listening: Its listening port while it is started.
    """

    name: str
    port: int = field(factory=freePort)
    listening: IListeningPort | None = None

    @property
    def url(self) -> str:
        """
        Its URL.
        """
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """
        Start answering.
        """
        site: Any = Site(_Hello(self.name))
        site.noisy = False
        self.listening = globalReactor().listenTCP(
            self.port, site, interface="127.0.0.1"
        )

    async def stop(self) -> None:
        """
        Stop answering.
        """
        listening, self.listening = self.listening, None
        if listening is not None:
            stopped = listening.stopListening()
            if stopped is not None:
                await stopped


@define
class Running:
    """
    A running bluegreen service with its admin API.

    @ivar service: The service.
    @ivar adminPort: Where the admin API listens.
    @ivar green: The GREEN backend.
    @ivar blue: The BLUE backend.
    """

    service: ProxyService
    adminPort: int
    green: Backend
    blue: Backend

    @property
    def admin(self) -> admin.AdminResource:
        """
        The admin API's resource.
        """
        assert self.service.admin is not None
        return self.service.admin

    @property
    def base(self) -> str:
        """
        The admin API's base URL.
        """
        return f"http://127.0.0.1:{self.adminPort}"


def listeningPort(service: ProxyService, option: str) -> IListeningPort:
    """
    Find where the service listens.

    @param service: The running service.
    @param option: C{"admin"} for the admin API, C{"port"} for the proxy.
    @return: The listening port of the service's C{--option} listener.
    """
    [listener] = [child for child in service.listeners() if child.option == option]
    # TCP and UNIX listening is synchronous: the port is known already.
    assert listener.port is not None, f"--{option} is not listening"
    return listener.port


#: Health settings under which the checks stay out of a test's way: one
#: check at start, the next only after five minutes.
QUIET_HEALTH = ("--health-interval", "300", "--fast-interval", "300", "--rise", "1")


def serviceArguments(green: str, blue: str, *extra: str) -> list[str]:
    """
    The command line of a test service: the proxy and its admin API on free
    ports of 127.0.0.1 in front of C{green} and C{blue}, no access log.

    @param extra: More options.
    """
    return proxyArguments(
        green, blue, "--admin", LOOPBACK, "--access-log", "none", *extra
    )


def runService(
    addCleanup: Callable[..., object], arguments: Sequence[str]
) -> ProxyService:
    """
    Build the service from C{arguments} and start it, stopped at cleanup.
    """
    service = buildService(arguments)
    service.startService()
    addCleanup(service.stopService)
    return service


async def startService(
    testCase: TestCase,
    *extra: str,
    green: bool = True,
    blue: bool = True,
    token: str | None = None,
) -> Running:
    """
    Start two backends and a bluegreen service in front of them with its
    admin API on a free port, all stopped when the test ends; wait for the
    first health checks.

    The health checks run at start (rise 1, so one passed check is "up")
    and then only when asked (the interval is long).

    @param extra: More options.
    @param green: Start the GREEN backend (else it is down).
    @param blue: Start the BLUE backend (else it is down).
    @param token: Guard the admin API with this token.
    @return: The service.
    """
    backends = Backend("green"), Backend("blue")
    for backend, up in zip(backends, (green, blue), strict=True):
        if up:
            backend.start()
        testCase.addCleanup(backend.stop)
    args = serviceArguments(backends[0].url, backends[1].url, *QUIET_HEALTH)
    if token is not None:
        path = os.path.abspath(testCase.mktemp())
        with open(path, "w") as f:
            f.write(token + "\n")
        # Only its owner may read it (--admin-token-file insists).
        os.chmod(path, 0o600)
        args += ["--admin-token-file", path]
    service = runService(testCase.addCleanup, [*args, *extra])
    # A UNIX socket has no port number.
    adminPort = getattr(listeningPort(service, "admin").getHost(), "port", 0)
    running = Running(service, adminPort, *backends)
    await settled(running)
    return running


async def assertBrokenStatus(testCase: TestCase, path: str) -> Running:
    """
    Start a service with a status section that raises; assert that C{GET
    path} is answered with a JSON 500 that gives nothing away, and that the
    error was logged (once).

    @return: The service.
    """
    running = await startService(testCase)

    def broken() -> None:
        raise RuntimeError("secret detail")

    running.admin.addStatus("broken", broken)
    answer = await call(running.base + path)
    testCase.assertEqual(
        (answer.code, answer.error), (500, "internal error (see the log)")
    )
    testCase.assertEqual(len(testCase.flushLoggedErrors(RuntimeError)), 1)
    return running


async def assertHeadOnly(testCase: TestCase, path: str, contentType: bytes) -> None:
    """
    Assert that C{HEAD path} on a new service's admin API answers 200 with
    the C{contentType} a C{GET} has, and no body.
    """
    running = await startService(testCase)
    answer = await call(running.base + path, "HEAD")
    testCase.assertEqual((answer.code, answer.data), (200, b""))
    testCase.assertEqual(answer.headers.getRawHeaders(b"content-type"), [contentType])


async def settled(running: Running) -> None:
    """
    Wait until the health monitor has decided on every environment.
    """
    states = running.service.health.health.values()
    await waitFor(
        lambda: all(state.up is not None for state in states),
        "the first health checks",
    )


@define
class Answer:
    """
    An admin API answer.

    @ivar code: The status.
    @ivar headers: The headers.
    @ivar data: The body.
    """

    code: int
    headers: Headers
    data: bytes

    @property
    def json(self) -> Any:
        """
        The body, parsed (it must be JSON).
        """
        contentType = self.headers.getRawHeaders(b"content-type")
        assert contentType == [b"application/json"], contentType
        return json.loads(self.data)

    @property
    def error(self) -> str:
        """
        The error message of an C{{"error": ...}} body.
        """
        body = self.json
        assert list(body) == ["error"], body
        message: str = body["error"]
        return message


async def call(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[bytes, list[bytes]] | None = None,
    payload: Any = None,
) -> Answer:
    """
    Make one request with a fresh connection.

    @param url: Where to.
    @param method: The method.
    @param body: The raw body, if any (no content type is added).
    @param headers: The request headers.
    @param payload: A JSON body (sent with C{Content-Type: application/json}).
    @return: The answer.
    """
    pool = HTTPConnectionPool(globalReactor(), persistent=False)
    client = HTTPClient(Agent(globalReactor(), pool=pool))
    allHeaders = Headers(dict(headers or {}))
    extra: dict[str, Any] = {}
    if payload is not None:
        allHeaders.setRawHeaders(b"content-type", [b"application/json"])
        extra["data"] = json.dumps(payload).encode("utf-8")
    elif body is not None:
        extra["data"] = body
    response = await client.request(method, url, headers=allHeaders, **extra)
    data = await content(response)
    return Answer(response.code, response.headers, data)


class _Collect(Protocol):
    """
    Collects everything received until the connection is closed.
    """

    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.done.callback(self.data)


async def rawExchange(port: int, *writes: bytes, close: bool = False) -> bytes:
    """
    Send raw bytes to C{port} and collect the answer until the server
    closes the connection.

    @param writes: What to send, in separate writes.
    @param close: Close the connection right after sending (and return
        what had arrived by then).
    @return: Everything received.
    """
    protocol = _Collect()
    endpoint = TCP4ClientEndpoint(globalReactor(), "127.0.0.1", port)
    await connectProtocol(endpoint, protocol)
    assert protocol.transport is not None
    for data in writes:
        protocol.transport.write(data)
    if close:
        protocol.transport.loseConnection()
    done = protocol.done
    done.addTimeout(PATIENCE, globalReactor())
    return await done


def captureEvents(testCase: TestCase) -> list[LogEvent]:
    """
    Collect the log events of the admin API during the test.

    @return: The list that fills up.
    """
    events: list[LogEvent] = []

    def observer(event: LogEvent) -> None:
        if event.get("log_namespace") == "bluegreen.admin":
            events.append(event)

    globalLogPublisher.addObserver(cast(ILogObserver, observer))
    testCase.addCleanup(globalLogPublisher.removeObserver, cast(ILogObserver, observer))
    return events


def messages(events: list[LogEvent]) -> list[str]:
    """
    @return: The formatted C{events}.
    """
    return [formatEvent(event) for event in events]
