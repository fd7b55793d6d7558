# -*- test-case-name: tests.test_tap -*-
"""
Listening on C{--port}, C{--admin} and the manholes' endpoints, with
start-up failures reported as one line naming the option.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure


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


class Listener(Service):
    """
    Listens on one endpoint while running; a failure to bind stops start-up
    with a L{StartupError} that names the option.

    Twisted's C{StreamServerEndpointService} reports a failure to listen
    synchronously only through private attributes, so this small service
    listens itself, with L{IStreamServerEndpoint.listen}.

    @ivar endpoint: Where to listen.
    @ivar factory: The factory of the connections' protocols.
    @ivar description: The option's value, for messages.
    @ivar option: The option's name (C{port}, C{admin}, ...).
    @ivar port: The listening port, or L{None} when not listening.
    @ivar onListen: Called with the port each time listening starts (the
        proxy's client gate pauses it at C{--max-clients}).
    """

    _log = Logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        description: str,
        option: str = "port",
    ) -> None:
        """
        @param endpoint: Where to listen.
        @param factory: The factory of the connections' protocols.
        @param description: The option's value, for messages.
        @param option: The option's name.
        """
        self.endpoint = endpoint
        self.factory = factory
        self.description = description
        self.option = option
        self.port: IListeningPort | None = None
        self._listening: Deferred[IListeningPort] | None = None
        self._waiters: list[Deferred[IListeningPort]] = []
        self.onListen: list[Callable[[IListeningPort], object]] = []

    def privilegedStartService(self) -> None:
        """
        Listen now (twistd calls this before dropping privileges).

        @raise StartupError: If the endpoint cannot be listened on (TCP and
            UNIX endpoints say so at once).
        """
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        """
        Start, listening unless L{privilegedStartService} already did.

        @raise StartupError: If the endpoint cannot be listened on.
        """
        super().startService()
        if self._listening is None:
            self._listen()

    def _listen(self) -> None:
        """
        Start listening; a failure known at once is raised.

        @raise StartupError: If the endpoint cannot be listened on.
        """
        outcome: list[IListeningPort | Failure] = []

        def settled(result: IListeningPort | Failure) -> None:
            if not started:
                outcome.append(result)
            elif isinstance(result, Failure):
                self._fail(result)
            else:
                self._listened(result)

        started = False
        self._listening = self.endpoint.listen(self.factory)
        self._listening.addBoth(settled)
        started = True
        if not outcome:
            return
        result = outcome[0]
        if not isinstance(result, Failure):
            self._listened(result)
            return
        self._listening = None
        if self._waiters:
            self._fail(result)
        error = result.value
        if isinstance(error, CannotListenError):
            raise StartupError(
                f"cannot listen on --{self.option} {self.description}: "
                f"{error.socketError}"
            )
        result.raiseException()

    def _listened(self, port: IListeningPort) -> None:
        """
        Remember the port and tell those waiting for it.
        """
        self.port = port
        for f in self.onListen:
            f(port)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(port)

    def _fail(self, failure: Failure) -> None:
        """
        Tell those waiting for the port that there will be none (or log why,
        if nobody waits).
        """
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(failure)
        if not waiters and not failure.check(CancelledError):
            self._log.failure(
                "cannot listen on --{option} {description}",
                failure,
                option=self.option,
                description=self.description,
            )

    def whenListening(self) -> Deferred[IListeningPort]:
        """
        @return: A L{Deferred} that fires with the listening port (at once if
            already listening; the port's C{getHost()} says where).
        """
        if self.port is not None:
            return succeed(self.port)
        waiter: Deferred[IListeningPort] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def stopService(self) -> Deferred[Any]:
        """
        Stop listening.

        @return: A L{Deferred} that fires once the port is closed.
        """
        super().stopService()
        port, self.port = self.port, None
        listening, self._listening = self._listening, None
        if port is not None:
            return Deferred.fromCoroutine(_stopListening(port))
        if listening is not None:
            listening.cancel()
        return succeed(None)


async def _stopListening(port: IListeningPort) -> None:
    """
    Close C{port}.
    """
    stopped = port.stopListening()
    if stopped is not None:
        await stopped
