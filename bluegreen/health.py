# -*- test-case-name: tests.test_health,tests.test_health_monitor,tests.test_health_body,tests.test_health_local -*-  # noqa: E501
"""
Active health checks of both environments, with rise/fall thresholds.

Each environment is checked by its own L{LoopingCall}: C{GET} of the health
path through treq, with its own connection pool, no redirects followed.  A
check passes when the status is expected and the body (its first
C{maxBody} bytes: the rest is not read, the connection is dropped) arrived
within the timeout, and holds C{expectBody} if one is set.  A check that
could not run because bluegreen itself is out of descriptors or memory is
logged and counts neither way.  C{fall} consecutive failures mark an
environment down and C{rise} consecutive successes mark it up; while an
environment is between the two, it is checked every C{fastInterval} seconds
(HAProxy's C{fastinter}).  The first check after start decides at once.

A request the proxy could not get through to an environment is evidence,
not a verdict (HAProxy's C{observe layer4} with C{on-error fastinter}): it
is counted, checks that environment at once and then every C{fastInterval}
until an active check passes, but only active checks move it up or down.
A crashed backend refuses that immediate check, so it still goes down at
once with C{fall} 1; a route that fails while the health path answers
never does.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast
from typing import Protocol as TypingProtocol

from attrs import define, field, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from bluegreen.checkfailure import describeCheckFailure, localResourceError
from bluegreen.environment import Environment
from bluegreen.observers import tellObservers

#: Checks remembered per environment (the dashboard's strip).
HISTORY = 50


#: Seconds during which passive failures of one path of one environment
#: are logged once (the rest are only counted).
PASSIVE_LOG_PERIOD = 60.0


#: The default C{--health-max-body}: bytes of a health body read.
DEFAULT_MAX_BODY = 64 * 1024


class _BodyReader(Protocol):
    """
    Read the first C{limit} bytes of a health response body, then stop.

    Past its window the body is not read on: the connection is dropped
    (the checks' pool is not persistent, so nothing is lost), and the check
    is decided on what was read.  A big home page is no reason to fail.

    Unlike C{treq.collect}, cancelling L{done} (the check timed out, or the
    monitor stopped) drops the connection, so a backend that stalls in the
    middle of a body does not keep one connection per check open.

    Dropping is C{stopProducing} on the body's transport: the HTTP client
    relays it to the connection's transport, which closes a TCP connection
    and aborts one of L{bluegreen.healthclient}'s (TLS too) without reading
    on.

    @ivar limit: Bytes read at most.
    @ivar keep: Whether to keep the bytes read (only for
        C{--health-expect-body}; otherwise they are counted and dropped).
    @ivar size: Bytes received so far (at most C{limit} counted).
    @ivar window: The bytes kept.
    @ivar done: Fires with L{window} when the whole body, or C{limit} bytes
        of it, arrived; fails with the reason the body was cut short.
    """

    def __init__(self, limit: int, keep: bool) -> None:
        self.limit = limit
        self.keep = keep
        self.size = 0
        self.window: list[bytes] = []
        self.done: Deferred[bytes] = Deferred(lambda _: self._close())

    def _close(self) -> None:
        """
        Drop the connection the body arrives on (if it is still known).
        """
        if self.transport is not None:
            # IResponse.deliverBody gives the body protocol a transport that
            # provides IPushProducer (typed as the plain ITransport here).
            cast(IPushProducer, self.transport).stopProducing()

    def _enough(self) -> None:
        """
        The window is full: close the connection, then decide on the window.
        """
        self._close()
        self.done.callback(b"".join(self.window))

    def connectionMade(self) -> None:
        """
        With a window of 0 bytes there is nothing to wait for.
        """
        if self.limit == 0:
            self._enough()

    def dataReceived(self, data: bytes) -> None:
        """
        Count (and keep, if asked) the bytes up to C{limit}; once there,
        close and fire L{done}.
        """
        if self.done.called:
            return
        data = data[: self.limit - self.size]
        self.size += len(data)
        if self.keep:
            self.window.append(data)
        if self.size >= self.limit:
            self._enough()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fire L{done}: with the window for a complete body, else with
        C{reason}.
        """
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.window))
        else:
            self.done.errback(reason)


def _readBody(response: IResponse, limit: int, keep: bool) -> Deferred[bytes]:
    """
    Read at most C{limit} bytes of C{response}'s body with a L{_BodyReader}.

    @param keep: Whether to keep the bytes (else the result is empty).
    @return: L{_BodyReader.done}.
    """
    reader = _BodyReader(limit, keep)
    response.deliverBody(reader)
    return reader.done


@frozen
class StatusSet:
    """
    The statuses a healthy response may have, e.g. C{200,204} or C{2xx}.

    @ivar ranges: Inclusive C{(low, high)} status ranges.
    @ivar text: The specification as given.
    """

    ranges: tuple[tuple[int, int], ...]
    text: str

    @classmethod
    def parse(cls, text: str) -> StatusSet:
        """
        Parse a list of statuses, C{Nxx} classes and C{low-high} ranges.

        @param text: E.g. C{200}, C{200,204}, C{2xx}, C{200-299,304}.
        @return: The set.
        @raise ValueError: With the offending item, if any is malformed.
        """
        ranges: list[tuple[int, int]] = []
        for raw in text.split(","):
            item = raw.strip().lower()
            if re.fullmatch(r"[1-5]xx", item):
                low = int(item[0]) * 100
                ranges.append((low, low + 99))
            elif re.fullmatch(r"\d{3}", item):
                ranges.append((int(item), int(item)))
            elif re.fullmatch(r"\d{3}-\d{3}", item):
                low, high = (int(part) for part in item.split("-"))
                if low > high:
                    raise ValueError(f"{raw.strip()!r}: the range is backwards")
                ranges.append((low, high))
            else:
                raise ValueError(
                    f"{raw.strip()!r} is not a status, class or range "
                    "(e.g. 200, 2xx, 200-299)"
                )
            if not all(100 <= bound <= 599 for bound in ranges[-1]):
                raise ValueError(f"{raw.strip()!r} is outside 100-599")
        return cls(tuple(ranges), text.strip())

    def __contains__(self, code: object) -> bool:
        return isinstance(code, int) and any(
            low <= code <= high for low, high in self.ranges
        )


@frozen
class HealthSettings:
    """
    How environments are checked.

    @ivar interval: Seconds between checks of a steady environment.
    @ivar fastInterval: Seconds between checks while one changes state.
    @ivar path: The path requested (with any query).
    @ivar expect: The statuses that pass.
    @ivar timeout: Seconds for the whole response, body included.
    @ivar fall: Consecutive failures that mark an environment down.
    @ivar rise: Consecutive successes that mark it up.
    @ivar maxBody: Bytes of the body read at most; the rest is not read
        (the connection is closed) and is no reason to fail.
    @ivar expectBody: Bytes that must appear within the first C{maxBody}
        bytes of the body for a check to pass, or L{None}.
    """

    interval: float = 5.0
    fastInterval: float = 1.0
    path: str = "/"
    expect: StatusSet = StatusSet(((200, 200),), "200")
    timeout: float = 2.0
    fall: int = 1
    rise: int = 2
    maxBody: int = DEFAULT_MAX_BODY
    expectBody: bytes | None = None


@frozen
class CheckResult:
    """
    The outcome of one check.

    @ivar ok: Whether it passed.
    @ivar reason: Why not (or C{"status 200"} when it passed).
    @ivar when: POSIX time the check finished.
    @ivar latency: Seconds it took.
    @ivar status: The response status, if a response arrived.
    @ivar passive: C{True} for a failure seen on proxied traffic.
    """

    ok: bool
    reason: str
    when: float
    latency: float
    status: int | None = None
    passive: bool = False


@define
class EnvironmentHealth:
    """
    What is known of one environment's health.

    @ivar up: C{True}/C{False} once the first check has decided, L{None}
        before.
    @ivar successes: Consecutive passed checks.
    @ivar failures: Consecutive failed checks.
    @ivar last: The latest check, if any.
    @ivar history: The latest L{HISTORY} checks, oldest first.
    @ivar localError: C{True} once a check could not run for a local
        reason (see L{localResourceError}) and until a check runs again:
        the streak's first such failure is logged, the others are not.
    @ivar passiveFailures: Proxied requests that could not reach the
        environment, since start (every one counted; none is a check).
    @ivar passiveCounted: C{True} once a passive failure is in L{history}
        and until the next active check: a burst is one entry there.
    @ivar suspected: C{True} from a passive failure until an active check
        passes: the environment is checked at the fast interval meanwhile.
    @ivar passiveLogged: When a passive failure was last logged, by path.
    """

    environment: Environment
    up: bool | None = None
    successes: int = 0
    failures: int = 0
    last: CheckResult | None = None
    history: deque[CheckResult] = field(factory=lambda: deque(maxlen=HISTORY))
    passiveFailures: int = 0
    passiveCounted: bool = False
    suspected: bool = False
    passiveLogged: dict[str, float] = field(factory=dict)
    localError: bool = False

    @property
    def transitional(self) -> bool:
        """
        C{True} while the environment is heading for the other state, or
        is suspected on passive evidence.
        """
        return bool(
            (self.up and (self.failures or self.suspected))
            or (not self.up and self.successes)
        )


class CachedConnections(TypingProtocol):
    """
    The checks' connection pool, as the monitor uses it (an
    L{twisted.web.client.HTTPConnectionPool}).
    """

    def closeCachedConnections(self) -> Deferred[None]:
        """
        Close the pool's connections.

        @return: Fires once they are closed.
        """


#: Called with (environment name, up, reason) whenever one changes state.
StateObserver = Callable[[str, bool, str], None]

#: Called with (environment name, result) for every check result recorded.
CheckObserver = Callable[[str, CheckResult], None]


@define(slots=False, eq=False)
class HealthMonitor(Service):
    """
    Checks every environment in a loop of its own and reports changes.

    @ivar environments: What to check, by name.
    @ivar settings: How.
    @ivar clock: Schedules the checks.
    @ivar http: A treq C{HTTPClient} (its pool owned by C{pool}).
    @ivar pool: The client's connection pool, closed on stop (or L{None}).
    @ivar health: The state of each environment, by name.
    """

    environments: dict[str, Environment]
    settings: HealthSettings
    clock: IReactorTime
    http: Any
    pool: CachedConnections | None = None
    health: dict[str, EnvironmentHealth] = field(init=False)
    _observers: list[StateObserver] = field(factory=list, init=False)
    _checkObservers: list[CheckObserver] = field(factory=list, init=False)
    _loops: dict[str, LoopingCall] = field(factory=dict, init=False)
    _inflight: dict[str, Deferred[None]] = field(factory=dict, init=False)
    _waiting: dict[str, list[Deferred[None]]] = field(factory=dict, init=False)
    _confirming: set[str] = field(factory=set, init=False)
    _log: Logger = field(factory=Logger, init=False)

    def __attrs_post_init__(self) -> None:
        self.health = {
            name: EnvironmentHealth(environment)
            for name, environment in self.environments.items()
        }

    def subscribe(self, observer: StateObserver) -> None:
        """
        Call C{observer(name, up, reason)} on every change of state
        (including the first decision after start).
        """
        self._observers.append(observer)

    def subscribeChecks(self, observer: CheckObserver) -> None:
        """
        Call C{observer(name, result)} with every check result recorded
        (passive ones included; not those of checks cancelled by a stop):
        after the result is in the environment's L{EnvironmentHealth}
        counts, before any change of state it causes is decided.
        """
        self._checkObservers.append(observer)

    def isUp(self, name: str) -> bool:
        """
        @return: C{True} if C{name} is known to be up.
        """
        state = self.health.get(name)
        return state is not None and state.up is True

    # Service

    def startService(self) -> None:
        """
        Start checking every environment now.
        """
        super().startService()
        for name in self.environments:
            self._startLoop(name, self.settings.interval)

    def stopService(self) -> Deferred[None]:
        """
        Stop the loops, cancel checks in flight and close the pool.
        """
        super().stopService()
        for loop in self._loops.values():
            if loop.running:
                loop.stop()
        self._loops.clear()
        inflight = list(self._inflight.values())
        for check in inflight:
            check.cancel()
        done: Deferred[Any] = DeferredList(inflight)
        if self.pool is not None:
            pool = self.pool
            done.addCallback(lambda _: pool.closeCachedConnections())
        return done.addCallback(lambda _: None)

    def _startLoop(self, name: str, interval: float) -> None:
        loop = LoopingCall(self._loopCheck, name)
        loop.clock = self.clock
        self._loops[name] = loop
        # The loop never fails (checks catch everything), but a Deferred
        # that errbacks unobserved would be logged as an unhandled error.
        loop.start(interval, now=True).addErrback(
            lambda f: self._log.failure("health loop for {name} failed", f, name=name)
        )

    def _loopCheck(self, name: str) -> Deferred[None]:
        return self.check(name)

    # Checks

    def checkNow(self, names: Iterable[str] | None = None) -> Deferred[Any]:
        """
        Check now, outside the schedule (an operator asked, or traffic saw a
        failure); a check already in flight is not duplicated.

        @param names: The environments to check (all when L{None}).
        @return: A Deferred firing when the checks are done.
        """
        return DeferredList([self.check(name) for name in names or self.environments])

    def check(self, name: str) -> Deferred[None]:
        """
        Run one check of C{name} and record it.  Never fails.

        @return: A Deferred that fires once the result is recorded.
        """
        if name in self._inflight:
            return self._waiter(name)
        started = self.clock.seconds()
        # None: the check could not run (a local error), so no result.
        d: Deferred[CheckResult | None] = Deferred.fromCoroutine(
            self._probe(name, started)
        )
        d.addTimeout(self.settings.timeout, self.clock)

        def failed(reason: Failure) -> CheckResult | None:
            local = localResourceError(reason.value)
            if local is not None:
                self._localError(name, local)
                return None
            now = self.clock.seconds()
            return CheckResult(
                False,
                describeCheckFailure(reason, self.settings.timeout),
                now,
                now - started,
            )

        def recordResult(result: CheckResult | None) -> None:
            if result is not None:
                self.record(name, result)

        d.addErrback(failed)
        recorded = d.addCallback(recordResult)
        self._inflight[name] = recorded

        def done(result: Failure | None) -> None:
            if isinstance(result, Failure):
                self._log.failure(
                    "recording a check of {name} failed", result, name=name
                )
            self._inflight.pop(name, None)
            self._confirming.discard(name)
            for waiter in self._waiting.pop(name, []):
                waiter.callback(None)

        recorded.addBoth(done)
        return recorded

    def _waiter(self, name: str) -> Deferred[None]:
        """
        @return: A Deferred firing when the check of C{name} in flight is
            recorded; cancelling it only forgets it.
        """
        waiters = self._waiting.setdefault(name, [])

        def forget(waiter: Deferred[None]) -> None:
            if waiter in waiters:
                waiters.remove(waiter)

        waiter: Deferred[None] = Deferred(forget)
        waiters.append(waiter)
        return waiter

    def confirming(self, name: str) -> Deferred[None] | None:
        """
        Wait for the check that a passive failure of C{name} started.

        While it runs, the proxy holds new requests for C{name} rather than
        send them to an environment that may be dying: a killed app's port
        can still complete connections for a moment (the kernel accepts
        them) and then reset them, and a C{POST} sent on one would be lost.
        The check gives the verdict, usually in milliseconds.

        @param name: The environment.
        @return: A Deferred firing (never failing) once that check is
            recorded, or L{None} when no such check is running.
        """
        if name not in self._confirming or name not in self._inflight:
            return None
        return self._waiter(name)

    async def _probe(self, name: str, started: float) -> CheckResult | None:
        environment = self.environments[name]
        url = environment.url + self.settings.path
        response = await self.http.get(
            url,
            allow_redirects=False,
            headers={b"User-Agent": [b"bluegreen-health"]},
        )
        settings = self.settings
        expectBody = settings.expectBody
        window = await _readBody(response, settings.maxBody, expectBody is not None)
        now = self.clock.seconds()
        code = response.code
        ok = code in settings.expect
        reason = f"status {code}" + (
            "" if ok else f" (expected {settings.expect.text})"
        )
        if ok and expectBody is not None and expectBody not in window:
            # A deploy that answers its error page with 200 is caught here.
            ok = False
            text = expectBody.decode("utf-8")
            reason = f"body lacks {text!r} in its first {settings.maxBody} bytes"
        return CheckResult(ok, reason, now, now - started, code)

    def _localError(self, name: str, why: str) -> None:
        """
        A check of C{name} could not run for want of a local resource: not
        a result, so neither thresholds nor schedule move; said once per
        streak (a process out of descriptors would otherwise log a line per
        check of every environment).

        @param name: The environment.
        @param why: What ran out, from L{localResourceError}.
        """
        state = self.health.get(name)
        if state is None or not self.running or state.localError:
            return
        state.localError = True
        self._log.error(
            "health check of {name} could not run: {why}; not counted against {name}",
            name=name,
            why=why,
            env=name,
            localError=why,
        )

    def reportPassive(self, name: str, reason: str, path: str = "") -> None:
        """
        Take a failure seen on proxied traffic as evidence: count it, check
        C{name} at once, and at the fast interval until a check passes.

        It is not a failed check: only active checks move an environment
        up or down, so one route that fails while the health path answers
        never switches production, and a request both environments fail
        switches nothing.  A crash is still seen at once: the check this
        starts is refused.  The failure appears once in the history between
        two active checks (a burst is one piece of evidence), and is logged
        at most once per path per L{PASSIVE_LOG_PERIOD}; an environment
        already down is left to its own loop.

        @param name: The environment.
        @param reason: What the proxy saw.
        @param path: The request's path (without its query), for the log.
        """
        state = self.health.get(name)
        if state is None or not self.running:
            return
        state.passiveFailures += 1
        now = self.clock.seconds()
        self._logPassive(state, name, reason, path, now)
        if state.up is False:
            # Already down: its own loop (at the fast interval while it
            # recovers) is checking it; a check per failed request would be
            # a storm.
            return
        if not state.passiveCounted:
            state.passiveCounted = True
            self.record(name, CheckResult(False, reason, now, 0.0, passive=True))
        self.check(name)
        if name in self._inflight:
            self._confirming.add(name)

    def _logPassive(
        self, state: EnvironmentHealth, name: str, reason: str, path: str, now: float
    ) -> None:
        """
        Log a passive failure unless one of the same path of the same
        environment was logged less than L{PASSIVE_LOG_PERIOD} ago.
        """
        logged = state.passiveLogged
        last = logged.get(path)
        if last is not None and now - last < PASSIVE_LOG_PERIOD:
            return
        # Forget paths not seen for a period, so the table holds only the
        # paths of the last minute however many a client makes up.
        for old in [p for p, t in logged.items() if now - t >= PASSIVE_LOG_PERIOD]:
            del logged[old]
        logged[path] = now
        self._log.warn(
            "{name}: {reason} on {path} ({count} passive failures so far;"
            " checking {name} now)",
            name=name,
            reason=reason,
            path=path or "?",
            count=state.passiveFailures,
            env=name,
            passive=True,
        )

    def record(self, name: str, result: CheckResult) -> None:
        """
        Apply one check's result: thresholds, state changes, schedule.

        @param name: The environment.
        @param result: The check's outcome.
        """
        if not self.running:
            # Checks cancelled by stopService say nothing about health.
            return
        state = self.health[name]
        state.history.append(result)
        if result.passive:
            # Evidence only: shown and counted, then the check it started
            # decides.  The fast interval runs until an active check passes.
            state.suspected = True
            tellObservers(self._checkObservers, self._log, "check", name, result)
            self._reschedule(name, state)
            return
        state.last = result
        state.passiveCounted = False
        # A check ran to its end: local resources were there again.
        state.localError = False
        if result.ok:
            state.suspected = False
            state.successes += 1
            state.failures = 0
        else:
            state.failures += 1
            state.successes = 0
        tellObservers(self._checkObservers, self._log, "check", name, result)
        settings = self.settings
        changed: bool | None = None
        if state.up is None:
            changed = result.ok
        elif state.up and state.failures >= settings.fall:
            changed = False
        elif not state.up and state.successes >= settings.rise:
            changed = True
        if changed is not None:
            state.up = changed
            self._log.info(
                "{name} is {state}: {reason}",
                name=name,
                state="up" if changed else "down",
                reason=result.reason,
                env=name,
                up=changed,
            )
            for observer in list(self._observers):
                try:
                    observer(name, changed, result.reason)
                except Exception:
                    self._log.failure(
                        "health observer {observer!r} failed", observer=observer
                    )
        self._reschedule(name, state)

    def _reschedule(self, name: str, state: EnvironmentHealth) -> None:
        """
        Run C{name}'s loop at the fast interval while it is transitional,
        else at the normal one.
        """
        settings = self.settings
        loop = self._loops.get(name)
        interval = settings.fastInterval if state.transitional else settings.interval
        if loop is not None and loop.interval != interval:
            loop.interval = interval
            if loop.running:
                # A result from outside the loop (reportPassive, checkNow)
                # finds the next turn booked at the old interval: book it
                # again.  (Inside the loop there is no booking yet and this
                # does nothing; the loop books the new interval itself.)
                loop.reset()
