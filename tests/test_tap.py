# -*- test-case-name: tests.test_tap -*-
"""
Tests for L{bluegreen.service.tap} and L{bluegreen.service.listener}: the
service tree, listening, and the plugin run by a real C{twistd}.  (The
options are L{tests.test_options}'.)
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from attrs import evolve
from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorProcess,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ProcessProtocol, ServerFactory
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from bluegreen import __version__
from bluegreen.admin.site import AdminSite
from bluegreen.environment import Environment
from bluegreen.proxy.resource import ProxyResource, ProxySite
from bluegreen.service.listener import Listener
from bluegreen.service.tap import (
    ProxyService,
    ServiceReactor,
    StartupError,
    makeService,
)
from tests._util import PATIENCE, freePort, waitFor
from tests.test_options import BLUE_URL, BOGUS_PORT, GREEN_URL, REQUIRED, parse


class _Reactor(IReactorProcess, IReactorTime):
    """
    The reactor interfaces the process tests use (for type checking only).
    """


def globalReactor() -> _Reactor:
    """
    @return: The global reactor, which runs the processes.
    """
    return cast(_Reactor, reactor)


def accepts(port: int) -> bool:
    """
    @param port: A TCP port on 127.0.0.1.
    @return: Whether something accepts connections on it.
    """
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


async def assertListensWhileRunning(
    testCase: SynchronousTestCase, service: IService, port: int
) -> None:
    """
    Start C{service}: it must accept connections on C{port}; stop it: it
    must no longer.
    """
    service.startService()
    try:
        testCase.assertTrue(accepts(port))
    finally:
        await service.stopService()
    testCase.assertFalse(accepts(port))


@contextmanager
def takenPort() -> Iterator[tuple[int, str]]:
    """
    A port of 127.0.0.1 that something else listens on, for the duration.

    @return: A context manager giving the port and its endpoint
        description, C{tcp:PORT:interface=127.0.0.1}.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port: int = taken.getsockname()[1]
        yield port, f"tcp:{port}:interface=127.0.0.1"


def answers(port: int) -> bool:
    """
    @param port: A TCP port on 127.0.0.1 where an HTTP server may listen.
    @return: Whether it answers a malformed request (with C{400}), which
        the proxy does itself once its reactor runs.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as s:
            s.sendall(b"NOT HTTP\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.1 ")
    except OSError:
        return False


class MakeServiceTests(SynchronousTestCase):
    """
    L{makeService} builds the service tree on the given reactor.
    """

    def make(self, *args: str) -> tuple[ProxyService, MemoryReactorClock]:
        """
        Build the service for C{args} on a memory reactor.

        @param args: Options besides the required URLs.
        @return: The service and its reactor.
        """
        memory = MemoryReactorClock()
        service = makeService(parse(*args), cast(ServiceReactor, memory))
        assert isinstance(service, ProxyService)
        return service, memory

    def test_service(self) -> None:
        """
        The result is an L{IService} named nothing in particular, not yet
        running.
        """
        service, _ = self.make()
        self.assertTrue(IService.providedBy(service))
        self.assertFalse(service.running)

    def test_listensWhenStarted(self) -> None:
        """
        Starting the service listens on the C{--port} endpoint, serving the
        proxy site; nothing listens before.
        """
        service, memory = self.make("--port", "tcp:4567:interface=127.0.0.1")
        self.assertEqual(memory.tcpServers, [])
        service.startService()
        self.addCleanup(service.stopService)
        [(port, factory, _, interface)] = memory.tcpServers
        self.assertEqual((port, interface), (4567, "127.0.0.1"))
        assert isinstance(factory, ProxySite)
        self.assertIs(factory.resource, service.resource)

    def test_barePortAllInterfaces(self) -> None:
        """
        A bare port listens on every interface.
        """
        service, memory = self.make("--port", "4568")
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(
            [(port, interface) for port, _, _, interface in memory.tcpServers],
            [(4568, "")],
        )

    def test_controller(self) -> None:
        """
        The controller has both environments with C{--active} live, and the
        proxy resource uses it.
        """
        service, _ = self.make("--active", "blue")
        self.assertEqual(service.controller.active, "blue")
        self.assertEqual(
            dict(service.controller.environments),
            {
                "green": Environment.fromURL("green", GREEN_URL),
                "blue": Environment.fromURL("blue", BLUE_URL),
            },
        )
        self.assertIsInstance(service.resource, ProxyResource)
        self.assertIs(service.resource.controller, service.controller)

    def test_controllerClock(self) -> None:
        """
        The controller times switches with the reactor's clock.
        """
        service, memory = self.make()
        memory.advance(12.5)
        record = service.controller.switch("blue")
        assert record is not None
        self.assertEqual(record.when, 12.5)

    def test_pools(self) -> None:
        """
        There is one pool per environment, configured from the options.
        """
        service, memory = self.make(
            "--connect-timeout",
            "2",
            "--max-connections",
            "9",
            "--idle-timeout",
            "3",
        )
        self.assertIs(service.resource.pools, service.pools)
        self.assertEqual(
            {
                name: (
                    pool.environment,
                    pool.connectTimeout,
                    pool.maxConnections,
                    pool.idleTimeout,
                    pool.reactor is memory,
                )
                for name, pool in service.pools.items()
            },
            {
                "green": (service.controller.environments["green"], 2.0, 9, 3.0, True),
                "blue": (service.controller.environments["blue"], 2.0, 9, 3.0, True),
            },
        )

    def test_resource(self) -> None:
        """
        The proxy resource gets the response timeout and keeps the client's
        C{Host} by default.
        """
        service, _ = self.make("--response-timeout", "7")
        self.assertEqual(
            (service.resource.responseTimeout, service.resource.preserveHost),
            (7.0, True),
        )

    def test_targetHost(self) -> None:
        """
        C{--upstream-host-header target} makes the proxy send the
        environment's C{Host}.
        """
        service, _ = self.make("--upstream-host-header", "target")
        self.assertFalse(service.resource.preserveHost)

    def test_accessLogNone(self) -> None:
        """
        C{--access-log none} means no access log.
        """
        service, _ = self.make("--access-log", "none")
        self.assertIsNone(service.accessLog)
        self.assertIsNone(service.resource.accessLog)

    def test_accessLogFile(self) -> None:
        """
        An C{--access-log} file is opened (created) by L{makeService} and
        used by the proxy resource.
        """
        path = os.path.abspath(self.mktemp())
        service, _ = self.make("--access-log", path)
        assert service.accessLog is not None
        self.addCleanup(service.accessLog.close)
        self.assertTrue(os.path.isfile(path))
        self.assertIsNotNone(service.accessLog)
        self.assertIs(service.resource.accessLog, service.accessLog)

    def test_accessLogCannotOpen(self) -> None:
        """
        If the access log cannot be opened after all (its directory went
        away since the options were checked), L{makeService} raises a
        L{StartupError} naming the option and the file.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "access.log")
        config = evolve(parse().config, accessLog=path)
        error = self.assertRaises(
            StartupError, makeService, config, MemoryReactorClock()
        )
        self.assertEqual(
            error.code,
            f"bluegreen: --access-log: cannot open {path!r}: No such file or directory",
        )

    def test_startLogs(self) -> None:
        """
        Starting logs the version and the live environment.
        """
        service, _ = self.make("--active", "blue")
        with capturedLogs() as events:
            service.startService()
        self.addCleanup(service.stopService)
        self.assertIn(
            f"bluegreen {__version__}: live environment blue ({BLUE_URL}, start)",
            [formatEvent(event) for event in events],
        )

    def test_stopService(self) -> None:
        """
        Stopping the service stops its children (the temporary files, the
        listener and the health monitor) and fires once the pools are closed.
        """
        service, _ = self.make()
        service.startService()
        self.assertEqual([child.running for child in service], [1, 1, 1])
        self.successResultOf(service.stopService())
        self.assertFalse(service.running)
        self.assertEqual([child.running for child in service], [0, 0, 0])


class AdminServiceTests(SynchronousTestCase):
    """
    L{makeService} adds the admin API's listener when C{--admin} is not
    C{none}.
    """

    def make(self, *args: str) -> tuple[ProxyService, MemoryReactorClock]:
        """
        Build the service for C{args} on a memory reactor.
        """
        memory = MemoryReactorClock()
        service = makeService(parse(*args), cast(ServiceReactor, memory))
        assert isinstance(service, ProxyService)
        return service, memory

    def test_none(self) -> None:
        """
        With C{--admin none} there is no admin API: one listener only.
        """
        service, memory = self.make("--port", "tcp:4567:interface=127.0.0.1")
        self.assertIsNone(service.admin)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual([port for port, *_ in memory.tcpServers], [4567])

    def test_listens(self) -> None:
        """
        The admin API listens on C{--admin}, serving an L{AdminResource} on
        the service's controller and health monitor.
        """
        service, memory = self.make(
            "--port",
            "tcp:4567:interface=127.0.0.1",
            "--admin",
            "tcp:4568:interface=127.0.0.1",
        )
        service.startService()
        self.addCleanup(service.stopService)
        [proxy, admin] = memory.tcpServers
        self.assertEqual((proxy[0], admin[0], admin[3]), (4567, 4568, "127.0.0.1"))
        site = admin[1]
        assert isinstance(site, AdminSite)
        self.assertIs(site.admin, service.admin)
        assert service.admin is not None
        self.assertIs(service.admin.controller, service.controller)
        self.assertIs(service.admin.health, service.health)
        self.assertIsNone(service.admin.token)

    def test_token(self) -> None:
        """
        The token read from C{--admin-token-file} guards the admin API.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("tok3n\n")
        os.chmod(path, 0o600)
        service, _ = self.make(
            "--admin", "tcp:4568:interface=127.0.0.1", "--admin-token-file", path
        )
        assert service.admin is not None
        self.assertEqual(service.admin.token, b"tok3n")

    def test_stops(self) -> None:
        """
        Stopping the service stops the admin listener too.
        """
        service, _ = self.make("--admin", "tcp:4568:interface=127.0.0.1")
        service.startService()
        self.assertEqual([child.running for child in service], [1, 1, 1, 1])
        self.successResultOf(service.stopService())
        self.assertEqual([child.running for child in service], [0, 0, 0, 0])


class StartupErrorTests(SynchronousTestCase):
    """
    L{StartupError} ends C{twistd} with one line and status 1.
    """

    def test_exits(self) -> None:
        """
        It is a L{SystemExit} whose code is the message with a C{bluegreen:}
        prefix (which Python prints, exiting with status 1).
        """
        error = StartupError("--port 1: no")
        self.assertIsInstance(error, SystemExit)
        self.assertEqual(error.code, "bluegreen: --port 1: no")

    def test_isException(self) -> None:
        """
        It is also an L{Exception}, so twistd's clean-up on a failed start
        (which catches L{Exception}) runs.
        """
        self.assertIsInstance(StartupError("x"), Exception)


class ListenTests(TestCase):
    """
    Listening with the real reactor.
    """

    def test_portInUse(self) -> None:
        """
        If C{--port} is in use, starting the service raises a L{StartupError}
        naming the option, its value and the socket error, and listens on
        nothing.
        """
        with takenPort() as (port, value):
            service = makeService(parse("--port", value, "--access-log", "none"))
            error = self.assertRaises(StartupError, service.privilegedStartService)
        self.assertEqual(
            error.code,
            f"bluegreen: cannot listen on --port {value}: "
            f"[Errno {errno.EADDRINUSE}] {os.strerror(errno.EADDRINUSE)}",
        )
        self.assertFalse(accepts(port))

    async def test_listensAndStops(self) -> None:
        """
        Started on the global reactor, the service accepts connections on
        C{--port}; once stopped it no longer does.
        """
        port = freePort()
        service = makeService(
            parse("--port", f"tcp:{port}:interface=127.0.0.1", "--access-log", "none")
        )
        await assertListensWhileRunning(self, service, port)


@implementer(IStreamServerEndpoint)
class SlowEndpoint:
    """
    An endpoint that listens when told to: L{listen} answers a L{Deferred}
    fired later by the test.

    @ivar listening: The L{Deferred}s L{listen} answered, in order.
    """

    def __init__(self) -> None:
        self.listening: list[Deferred[IListeningPort]] = []

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        @return: A L{Deferred} the test fires.
        """
        d: Deferred[IListeningPort] = Deferred()
        self.listening.append(d)
        return d


class ListenerTests(SynchronousTestCase):
    """
    L{Listener}: listening through the endpoint's public C{listen}, with
    the port published as C{port} and by L{Listener.whenListening}.
    """

    def test_synchronous(self) -> None:
        """
        An endpoint that listens at once (TCP) gives the port as soon as
        the service starts; stopping closes it.
        """
        memory = MemoryReactorClock()
        listener = Listener(
            TCP4ServerEndpoint(memory, 0), ServerFactory(), "tcp:0", "admin"
        )
        waiting = listener.whenListening()
        self.assertNoResult(waiting)
        listener.privilegedStartService()
        listener.startService()
        port = self.successResultOf(waiting)
        self.assertIs(listener.port, port)
        self.assertIs(self.successResultOf(listener.whenListening()), port)
        self.assertEqual(len(memory.tcpServers), 1)
        self.successResultOf(listener.stopService())
        self.assertIsNone(listener.port)

    def test_later(self) -> None:
        """
        An endpoint that listens later gives the port when it does.
        """
        endpoint = SlowEndpoint()
        listener = Listener(endpoint, ServerFactory(), "slow:1")
        listener.startService()
        waiting = listener.whenListening()
        self.assertNoResult(waiting)
        port = MemoryReactorClock().listenTCP(0, ServerFactory())
        endpoint.listening[0].callback(port)
        self.assertIs(self.successResultOf(waiting), port)
        self.assertIs(listener.port, port)

    def test_failsLater(self) -> None:
        """
        An endpoint that fails to listen later fails those waiting for the
        port.
        """
        endpoint = SlowEndpoint()
        listener = Listener(endpoint, ServerFactory(), "slow:1")
        listener.startService()
        waiting = listener.whenListening()
        endpoint.listening[0].errback(CannotListenError("", 1, OSError("no")))
        self.failureResultOf(waiting, CannotListenError)
        self.assertIsNone(listener.port)

    def test_stoppedBeforeListening(self) -> None:
        """
        Stopped before its endpoint listens, the listener cancels the
        listening.
        """
        endpoint = SlowEndpoint()
        listener = Listener(endpoint, ServerFactory(), "slow:1")
        listener.startService()
        waiting = listener.whenListening()
        self.successResultOf(listener.stopService())
        self.assertTrue(endpoint.listening[0].called)
        self.failureResultOf(waiting, CancelledError)


class AdminListenTests(TestCase):
    """
    The admin listener with the real reactor.
    """

    async def test_adminPortInUse(self) -> None:
        """
        If C{--admin} is in use, starting the service raises a
        L{StartupError} naming C{--admin}, and the proxy port it had already
        bound is closed again.
        """
        proxyPort = freePort()
        with takenPort() as (port, value):
            service = makeService(
                parse(
                    "--port",
                    f"tcp:{proxyPort}:interface=127.0.0.1",
                    "--admin",
                    value,
                    "--access-log",
                    "none",
                )
            )
            error = self.assertRaises(StartupError, service.privilegedStartService)
        self.assertEqual(
            error.code,
            f"bluegreen: cannot listen on --admin {value}: "
            f"[Errno {errno.EADDRINUSE}] {os.strerror(errno.EADDRINUSE)}",
        )
        # The proxy's port closes on the next turns of the reactor.
        await waitFor(lambda: not accepts(proxyPort), "the proxy's port closed")
        self.assertFalse(accepts(proxyPort))
        self.assertFalse(accepts(port))

    async def test_listensAndStops(self) -> None:
        """
        Started on the global reactor, the admin API accepts connections on
        C{--admin}; once stopped it no longer does.
        """
        port = freePort()
        service = makeService(
            parse(
                "--port",
                "tcp:0:interface=127.0.0.1",
                "--admin",
                f"tcp:{port}:interface=127.0.0.1",
                "--access-log",
                "none",
            )
        )
        await assertListensWhileRunning(self, service, port)


def twistd() -> list[str]:
    """
    @return: The command that runs C{twistd} from this environment.
    """
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.isfile(script):
        return [script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def childEnvironment() -> dict[str, str]:
    """
    @return: The environment variables for a child process: C{PATH}, and
        C{PYTHONPATH} if the tests have one.
    """
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


class Child(ProcessProtocol):
    """
    A child process whose output is collected.

    @ivar output: Everything written to stdout and stderr, in order.
    @ivar reason: Why it ended, once it has.
    """

    def __init__(self) -> None:
        self.output = b""
        self.reason: Failure | None = None
        self._waiting: list[Deferred[Failure]] = []

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """
        Collect output.
        """
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        """
        Remember why the process ended and tell those waiting.
        """
        self.reason = reason
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(reason)

    def whenEnded(self) -> Deferred[Failure]:
        """
        @return: A Deferred that fires with the reason the process ended.
        """
        if self.reason is not None:
            return succeed(self.reason)
        d: Deferred[Failure] = Deferred()
        self._waiting.append(d)
        return d

    def text(self) -> str:
        """
        @return: The output so far, decoded.
        """
        return self.output.decode("utf-8", "replace")


class ProcessTestMixin(TestCase):
    """
    Runs real processes, killing any still running when a test ends.
    """

    def spawn(self, args: list[str]) -> Child:
        """
        Start a process in a new temporary directory.

        @param args: The command line.
        @return: The child.
        """
        child = Child()
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        transport = globalReactor().spawnProcess(
            child, args[0], args, env=childEnvironment(), path=directory
        )

        def kill() -> Deferred[Failure] | None:
            if child.reason is not None:
                return None
            transport.signalProcess("KILL")
            return child.whenEnded()

        self.addCleanup(kill)
        return child

    async def ended(self, child: Child) -> Failure:
        """
        Wait for C{child} to end, failing the test if it takes longer than
        L{PATIENCE}.

        @param child: A spawned child.
        @return: Why it ended.
        """
        try:
            await waitFor(lambda: child.reason is not None, "the process ending")
        except AssertionError as e:
            self.fail(f"{e}:\n{child.text()}")
        assert child.reason is not None
        return child.reason

    def assertCannotListen(
        self, code: int | None, output: str, option: str, value: str
    ) -> None:
        """
        Assert that twistd exited with status 1 after printing one line
        saying C{option value} is in use, and no traceback.
        """
        self.assertEqual(code, 1, output)
        self.assertIn(
            f"bluegreen: cannot listen on {option} {value}: "
            f"[Errno {errno.EADDRINUSE}] Address already in use\n",
            output,
        )
        self.assertNotIn("Traceback", output)

    async def runToEnd(self, args: list[str]) -> tuple[int | None, str]:
        """
        Run a process to its end.

        @param args: The command line.
        @return: Its exit code (L{None} if a signal ended it) and output.
        """
        child = self.spawn(args)
        reason = await self.ended(child)
        ended = reason.value
        assert isinstance(ended, (ProcessDone, ProcessTerminated)), reason
        code: int | None = ended.exitCode
        return code, child.text()


class TwistdTests(ProcessTestMixin):
    """
    C{twistd bluegreen} run as a real process.
    """

    async def test_portInUse(self) -> None:
        """
        If C{--port} is in use, twistd exits with status 1 after printing one
        line naming the option and the error (no traceback), and leaves
        nothing listening.
        """
        with takenPort() as (port, value):
            code, output = await self.runToEnd(
                [*twistd(), "-n", "--pidfile=", "bluegreen", "--port", value, *REQUIRED]
            )
        self.assertCannotListen(code, output, "--port", value)
        self.assertFalse(accepts(port))

    async def test_portInUsePidfile(self) -> None:
        """
        If C{--port} is in use, twistd still removes its pidfile.
        """
        pidfile = os.path.abspath(self.mktemp())
        with takenPort() as (port, _):
            code, output = await self.runToEnd(
                [
                    *twistd(),
                    "-n",
                    f"--pidfile={pidfile}",
                    "bluegreen",
                    "--port",
                    f"tcp:{port}:interface=127.0.0.1",
                    *REQUIRED,
                ]
            )
        self.assertEqual(code, 1, output)
        self.assertIn("cannot listen on --port", output)
        self.assertFalse(os.path.exists(pidfile))

    async def test_portInUseDaemon(self) -> None:
        """
        Started as a daemon, twistd tells the shell that started it that it
        could not listen, exits with status 1, and the daemon logs the line,
        removes its pidfile and exits.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        pidfile = os.path.join(directory, "twistd.pid")
        logfile = os.path.join(directory, "twistd.log")

        def killDaemon() -> None:
            # In case of a regression that leaves the daemon running.
            try:
                with open(pidfile) as f:
                    os.kill(int(f.read()), signal.SIGKILL)
            except (OSError, ValueError):
                pass

        self.addCleanup(killDaemon)
        with takenPort() as (_port, value):
            code, output = await self.runToEnd(
                [
                    *twistd(),
                    f"--pidfile={pidfile}",
                    f"--logfile={logfile}",
                    "bluegreen",
                    "--port",
                    value,
                    *REQUIRED,
                ]
            )
            self.assertEqual(code, 1, output)
            self.assertIn("An error has occurred: ", output)
            self.assertIn("cannot listen on --port", output)
            line = (
                f"bluegreen: cannot listen on --port {value}: "
                f"[Errno {errno.EADDRINUSE}] Address already in use\n"
            )

            def logged() -> bool:
                with open(logfile) as f:
                    return line in f.read() and not os.path.exists(pidfile)

            await waitFor(logged, "the daemon's log line and its pidfile gone")
        with open(logfile) as f:
            log = f.read()
        self.assertIn(line, log)
        self.assertNotIn("Traceback", log)
        self.assertFalse(os.path.exists(pidfile))

    async def test_missingGreen(self) -> None:
        """
        Without C{--green}, twistd exits with status 1 and says so.
        """
        code, output = await self.runToEnd(
            [*twistd(), "-n", "--pidfile=", "bluegreen", "--blue", BLUE_URL]
        )
        self.assertEqual(code, 1, output)
        self.assertIn(
            ": --green is required: the URL of the GREEN environment, "
            "e.g. --green http://127.0.0.1:5002; see --help\n",
            output,
        )
        self.assertNotIn("Traceback", output)

    async def test_wrongOptionOneLine(self) -> None:
        """
        A wrong option (a bad value, or an option that does not exist) makes
        twistd exit with status 1 after one line on standard error naming
        the option and pointing to C{--help}; nothing on standard output
        (twistd alone would print its whole usage there first).
        """
        for args, line in (
            (["--fall", "x"], "bluegreen: --fall: 'x' is not a whole number >= 1"),
            (["--nope"], "bluegreen: option --nope not recognized"),
        ):
            command = [*twistd(), "-n", "--pidfile=", "bluegreen", *REQUIRED, *args]
            d: Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
                command[0], command[1:], env=childEnvironment()
            )
            out, err, code = await d
            self.assertEqual(
                (out.decode(), err.decode(), code),
                ("", f"{line}; see --help\n", 1),
                f"twistd bluegreen {' '.join(args)}",
            )

    async def test_badPort(self) -> None:
        """
        A bad C{--port} makes twistd exit with status 1 and say why.
        """
        code, output = await self.runToEnd(
            [*twistd(), "-n", "--pidfile=", "bluegreen", "--port", "bogus:1", *REQUIRED]
        )
        self.assertEqual(code, 1, output)
        self.assertIn(BOGUS_PORT, output)
        self.assertNotIn("Traceback", output)

    async def test_pollReactor(self) -> None:
        """
        C{twistd --reactor=poll bluegreen} runs on the poll reactor (the
        plugin does not install a reactor first) and listens on C{--port};
        on SIGTERM it shuts down cleanly and stops listening.

        twistd then ends itself with the signal it received (see
        C{twisted.application.app._exitWithSignal}), so the exit status is
        "terminated by SIGTERM", which service managers count as a clean
        stop, rather than 0.
        """
        port = freePort()
        child = self.spawn(
            [
                *twistd(),
                "--reactor=poll",
                "-n",
                "--pidfile=",
                "bluegreen",
                "--port",
                f"tcp:{port}:interface=127.0.0.1",
                "--access-log",
                "none",
                *REQUIRED,
            ]
        )

        def listening() -> bool:
            if child.reason is not None:
                self.fail(f"twistd ended before listening:\n{child.text()}")
            # An answer means the reactor runs, so its SIGTERM handler is in
            # place (a port merely accepting is listened on before that).
            return answers(port)

        await waitFor(listening, f"twistd listening on {port}:\n{child.text()}")
        cast(Any, child.transport).signalProcess("TERM")
        reason = await self.ended(child)
        output = child.text()
        ended = reason.value
        assert isinstance(ended, ProcessTerminated), output
        self.assertEqual(
            (ended.exitCode, ended.signal),
            (None, signal.SIGTERM),
            output,
        )
        self.assertIn("reactor class: twisted.internet.pollreactor.PollReactor", output)
        self.assertIn("Received SIGTERM, shutting down.", output)
        self.assertIn("Server Shut Down.", output)
        self.assertIn(
            f"bluegreen {__version__}: live environment green ({GREEN_URL}, start)",
            output,
        )
        self.assertNotIn("Traceback", output)
        self.assertFalse(accepts(port))


class AdminTwistdTests(ProcessTestMixin):
    """
    C{twistd bluegreen} with the admin API options.
    """

    async def test_exposedWithoutToken(self) -> None:
        """
        An admin API on every interface without a token stops twistd with
        status 1 and one line saying why (no traceback), before listening.
        """
        port = freePort()
        code, output = await self.runToEnd(
            [
                *twistd(),
                "-n",
                "--pidfile=",
                "bluegreen",
                *REQUIRED,
                "--port",
                f"tcp:{port}:interface=127.0.0.1",
                "--admin",
                "tcp:0",
            ]
        )
        self.assertEqual(code, 1, output)
        self.assertIn(
            "--admin: 'tcp:0' listens on all interfaces, so other machines could "
            "switch traffic: give --admin-token-file FILE, or listen on loopback "
            "only (e.g. --admin tcp:3091:interface=127.0.0.1); see --help\n",
            output,
        )
        self.assertNotIn("Traceback", output)
        self.assertFalse(accepts(port))

    async def test_adminPortInUse(self) -> None:
        """
        If C{--admin} is in use, twistd exits with status 1 after one line
        naming C{--admin}, and leaves the proxy port closed.
        """
        proxyPort = freePort()
        with takenPort() as (_port, value):
            code, output = await self.runToEnd(
                [
                    *twistd(),
                    "-n",
                    "--pidfile=",
                    "bluegreen",
                    *REQUIRED,
                    "--port",
                    f"tcp:{proxyPort}:interface=127.0.0.1",
                    "--admin",
                    value,
                ]
            )
        self.assertCannotListen(code, output, "--admin", value)
        self.assertFalse(accepts(proxyPort))


class PluginImportTests(ProcessTestMixin):
    """
    The plugin module is imported by every C{twistd} run, so it must stay
    light.
    """

    async def test_light(self) -> None:
        """
        Importing the plugin module (and reading the plugin's name) in a
        fresh interpreter imports neither the reactor nor L{bluegreen.service.tap}.
        """
        program = (
            "import json, sys\n"
            "from twisted.plugins import bluegreen_plugin\n"
            "assert bluegreen_plugin.bluegreen.tapname == 'bluegreen'\n"
            "print(json.dumps([m for m in ('twisted.internet.reactor', "
            "'bluegreen.service.tap') if m in sys.modules]))\n"
        )
        code, output = await self.runToEnd([sys.executable, "-c", program])
        self.assertEqual(code, 0, output)
        self.assertEqual(json.loads(output), [])

    async def test_tapImportsNoReactor(self) -> None:
        """
        Parsing the options (as twistd does before it installs the reactor
        chosen with C{--reactor}) does not import the reactor either.
        """
        program = (
            "import sys\n"
            "from bluegreen.service.tap import Options\n"
            f"Options().parseOptions({REQUIRED!r})\n"
            "print('twisted.internet.reactor' in sys.modules)\n"
        )
        code, output = await self.runToEnd([sys.executable, "-c", program])
        self.assertEqual((code, output), (0, "False\n"))
