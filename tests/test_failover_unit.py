# -*- test-case-name: tests.test_failover_unit -*-
"""
Deterministic tests of failover: the controller's state machine, the state
file, the health monitor driving the controller, and the proxy's passive
detection and retry on the standby.

Everything runs on a L{Clock}.  The controller tests feed
L{Controller.healthChanged} directly, with a dictionary standing in for the
monitor's tri-state answer (C{None} before the first check).  The chain tests
wire a real L{HealthMonitor} to the controller as C{makeService} does, the
monitor checking twisted.web resources through L{treq.testing.StubTreq}.  The
proxy tests send requests to a real L{ProxySite} over a L{StringTransport}
and let its pools connect in memory (L{twisted.test.iosim}) to twisted.web
backends, or fail to connect.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from attrs import frozen
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

import bluegreen.statefile as statefile
from bluegreen.controller import Controller, Switch, SwitchRefused
from bluegreen.environment import Environment
from bluegreen.health import HealthMonitor, HealthSettings
from bluegreen.proxy.pool import UpstreamPool
from bluegreen.proxy.resource import ProxyResource, ProxySite

GREEN = Environment.fromURL("green", "http://127.0.0.1:5002")
BLUE = Environment.fromURL("blue", "http://127.0.0.1:5001")
BOTH = {"green": GREEN, "blue": BLUE}

#: What the controller logs when it switches, for the given reason.
SWITCHED = "switched live environment {} -> {} ({})"


class Health:
    """
    The health monitor's answer to C{isUp}, kept in a dictionary: C{None}
    before an environment's first check, then C{True} or C{False}.

    @ivar up: The state of each environment.
    """

    def __init__(self) -> None:
        self.up: dict[str, bool | None] = {"green": None, "blue": None}

    def __call__(self, name: str) -> bool | None:
        """
        @return: What is known of C{name}.
        """
        return self.up[name]


class LogMixin(SynchronousTestCase):
    """
    Captures what bluegreen logs during each test.
    """

    def setUp(self) -> None:
        """
        Start capturing the log.
        """
        self.events: Sequence[LogEvent] = self.enterContext(capturedLogs())

    def logged(self, level: LogLevel) -> list[str]:
        """
        @return: The text of each event bluegreen logged at C{level}, in
            order.
        """
        return [
            formatEvent(event)
            for event in self.events
            if event["log_level"] == level
            and event.get("log_namespace", "").startswith("bluegreen.")
        ]


class ControllerMixin(LogMixin):
    """
    Builds controllers on a L{Clock} whose health is a L{Health}.
    """

    def setUp(self) -> None:
        """
        Make a clock at 1000 s, and health with neither environment checked.
        """
        super().setUp()
        self.clock = Clock()
        self.clock.advance(1000)
        self.health = Health()
        self.controller: Controller

    def make(
        self, active: str = "green", stateFile: str | None = None, **settings: Any
    ) -> Controller:
        """
        Make C{self.controller}, stopped at cleanup.

        @param active: The C{--active} environment.
        @param stateFile: The C{--state} file.
        @param settings: Further controller settings.
        """
        self.controller = Controller.create(
            BOTH,
            active,
            self.clock,
            stateFile=stateFile,
            isUp=self.health,
            **settings,
        )
        self.addCleanup(self.controller.stop)
        return self.controller

    def change(self, name: str, up: bool, reason: str | None = None) -> None:
        """
        Report a change of state as the monitor does: the new state is
        visible through C{isUp} before the observer is told.

        @param name: The environment.
        @param up: Its new state.
        @param reason: The check result (C{"status 200"} or C{"status 500"}
            by default).
        """
        self.health.up[name] = up
        if reason is None:
            reason = "status 200" if up else "status 500"
        self.controller.healthChanged(name, up, reason)

    def bothUp(self) -> None:
        """
        Both environments pass their first checks.
        """
        self.change("green", True)
        self.change("blue", True)

    def assertState(self, active: str, mode: str, switches: int) -> None:
        """
        Assert which environment is live, the mode and the number of
        switches made.
        """
        controller = self.controller
        self.assertEqual(
            (controller.active, controller.mode, len(controller.history)),
            (active, mode, switches),
        )
        self.assertIs(controller.live, BOTH[active])

    def assertNoTimers(self) -> None:
        """
        Assert that nothing is scheduled on the clock.
        """
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def tick(self, seconds: float) -> None:
        """
        Advance the clock by C{seconds}, at most a second at a time (one big
        step would run a L{LoopingCall} only once).
        """
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(1.0, end - self.clock.seconds()))


class ServingTests(ControllerMixin):
    """
    The C{serving} state: the live environment is up or not yet checked.
    """

    def test_initial(self) -> None:
        """
        A new controller serves C{--active}, before any check.
        """
        self.make()
        self.assertState("green", "serving", 0)
        self.assertEqual(self.controller.why, "start")

    def test_failover(self) -> None:
        """
        The live environment going down while the standby is up switches to
        the standby at once: recorded in the history with the reason, given
        as the reason it is live, and logged as a warning.
        """
        self.make()
        self.bothUp()
        self.clock.advance(5)
        self.change("green", False, "status 500")
        reason = "failover: green down: status 500"
        self.assertState("blue", "serving", 1)
        self.assertEqual(
            self.controller.history, [Switch(1005.0, "green", "blue", reason)]
        )
        self.assertEqual(self.controller.why, reason)
        self.assertEqual(
            self.logged(LogLevel.warn), [SWITCHED.format("green", "blue", reason)]
        )
        self.assertEqual(self.logged(LogLevel.error), [])
        self.assertNoTimers()

    def test_failoverFromBlue(self) -> None:
        """
        Failover works from either colour.
        """
        self.make("blue")
        self.bothUp()
        self.change("blue", False, "connection refused")
        self.assertState("green", "serving", 1)
        self.assertEqual(
            self.controller.history[0].reason,
            "failover: blue down: connection refused",
        )

    def test_failoverFromUnchecked(self) -> None:
        """
        The live environment's first check failing (it was never up) fails
        over to a standby that is up.
        """
        self.make()
        self.change("blue", True)
        self.change("green", False)
        self.assertState("blue", "serving", 1)

    def test_standbyDown(self) -> None:
        """
        The live environment going down while the standby is down too keeps
        it live (entering an outage): never switch to a standby that is down.
        """
        self.make()
        self.health.up["blue"] = False
        self.change("green", False)
        self.assertState("green", "outage", 0)

    def test_standbyUnchecked(self) -> None:
        """
        A standby not checked yet is not known to be up: no switch to it, and
        no outage declared before its first check.
        """
        self.make()
        self.change("green", False)
        self.assertState("green", "serving", 0)
        self.assertEqual(self.logged(LogLevel.warn), [])

    def test_liveRecovered(self) -> None:
        """
        The live environment coming up changes nothing and logs nothing.
        """
        self.make()
        self.change("green", True)
        self.assertState("green", "serving", 0)
        self.assertEqual(self.logged(LogLevel.warn), [])
        self.assertEqual(self.logged(LogLevel.info), [])

    def test_standbyRecovered(self) -> None:
        """
        The standby coming up changes nothing.
        """
        self.make()
        self.change("green", True)
        self.change("blue", True)
        self.assertState("green", "serving", 0)
        self.assertNoTimers()

    def test_standbyLost(self) -> None:
        """
        The standby going down changes nothing.
        """
        self.make()
        self.bothUp()
        self.change("blue", False)
        self.assertState("green", "serving", 0)
        self.assertEqual(self.logged(LogLevel.error), [])

    def test_failoverOnce(self) -> None:
        """
        After a failover, the old live environment staying down (its reports
        say so again) switches nothing more.
        """
        self.make()
        self.bothUp()
        self.change("green", False)
        self.change("green", False, "timeout after 2 s")
        self.assertState("blue", "serving", 1)

    def test_failoverBack(self) -> None:
        """
        After a failover, the new live environment failing while the old one
        is back up fails over again.
        """
        self.make()
        self.bothUp()
        self.change("green", False)
        self.change("green", True)
        self.clock.advance(60)
        self.change("blue", False, "connection refused")
        self.assertState("green", "serving", 2)
        self.assertEqual(
            self.controller.history[1],
            Switch(1060.0, "blue", "green", "failover: blue down: connection refused"),
        )


class OutageTests(ControllerMixin):
    """
    The C{outage} state: both environments are down.
    """

    details = "green: status 500; blue: connection refused"

    def outage(self, **settings: Any) -> None:
        """
        Green live and up, blue down; then green goes down too.
        """
        self.make(**settings)
        self.change("green", True)
        self.change("blue", False, "connection refused")
        self.change("green", False, "status 500")

    def outageMessage(self, live: str = "green", details: str | None = None) -> str:
        """
        @return: The error an outage logs.
        """
        return (
            f"both environments are down ({details or self.details}); still "
            f"sending traffic to {live}, will switch as soon as one is up"
        )

    def test_enter(self) -> None:
        """
        Both down: the live environment stays live, the mode is C{outage},
        and an error naming both reasons is logged at once.
        """
        self.outage()
        self.assertState("green", "outage", 0)
        self.assertEqual(self.logged(LogLevel.error), [self.outageMessage()])
        self.assertEqual(self.logged(LogLevel.warn), [])

    def test_uncheckedStandby(self) -> None:
        """
        The live environment failing before the standby's first check is not
        an outage yet: nothing is logged or switched until the standby's
        first result, which then decides (down: the outage starts).
        """
        self.make()
        self.change("green", False, "connection refused")
        self.assertState("green", "serving", 0)
        self.assertEqual(self.logged(LogLevel.error), [])
        self.change("blue", False, "connection refused")
        self.assertState("green", "outage", 0)
        self.assertEqual(
            self.logged(LogLevel.error),
            [
                self.outageMessage(
                    details="green: connection refused; blue: connection refused"
                )
            ],
        )

    def test_uncheckedStandbyComesUp(self) -> None:
        """
        The live environment failing before the standby's first check: a
        passing first check of the standby moves traffic to it at once.
        """
        self.make()
        self.change("green", False, "connection refused")
        self.change("blue", True)
        self.assertState("blue", "serving", 1)
        self.assertEqual(self.logged(LogLevel.error), [])

    def test_everyInterval(self) -> None:
        """
        The outage is logged again once per C{outageInterval}, not more
        often, whatever else is reported meanwhile.
        """
        self.outage(outageInterval=5.0)
        self.clock.advance(4.9)
        self.assertEqual(len(self.logged(LogLevel.error)), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.logged(LogLevel.error)), 2)
        # Repeated reports of the same states add nothing.
        self.change("green", False, "status 500")
        self.change("blue", False, "connection refused")
        self.assertEqual(len(self.logged(LogLevel.error)), 2)
        for _ in range(4):
            self.clock.advance(1)
        self.assertEqual(len(self.logged(LogLevel.error)), 2)
        self.clock.advance(1)
        self.assertEqual(len(self.logged(LogLevel.error)), 3)
        self.tick(50)
        self.assertEqual(len(self.logged(LogLevel.error)), 13)
        self.assertEqual(set(self.logged(LogLevel.error)), {self.outageMessage()})
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_standbyRecovers(self) -> None:
        """
        The standby coming back ends the outage by switching to it at once;
        the error logs stop.
        """
        self.outage()
        self.tick(12)
        self.change("blue", True, "status 200")
        reason = "failover: blue recovered while green is down"
        self.assertState("blue", "serving", 1)
        self.assertEqual(
            self.controller.history, [Switch(1012.0, "green", "blue", reason)]
        )
        self.assertEqual(
            self.logged(LogLevel.warn), [SWITCHED.format("green", "blue", reason)]
        )
        self.assertEqual(self.logged(LogLevel.info), ["outage over: blue is up"])
        errors = len(self.logged(LogLevel.error))
        self.assertEqual(errors, 3)
        self.tick(60)
        self.assertEqual(len(self.logged(LogLevel.error)), errors)
        self.assertNoTimers()

    def test_liveRecovers(self) -> None:
        """
        The live environment coming back ends the outage without a switch.
        """
        self.outage()
        self.change("green", True)
        self.assertState("green", "serving", 0)
        self.assertEqual(self.logged(LogLevel.info), ["outage over: green is up"])
        self.tick(60)
        self.assertEqual(len(self.logged(LogLevel.error)), 1)
        self.assertNoTimers()

    def test_thenFailover(self) -> None:
        """
        After an outage ended by the live environment, its failing again
        while the standby is up is an ordinary failover.
        """
        self.outage()
        self.change("green", True)
        self.change("blue", True)
        self.change("green", False)
        self.assertState("blue", "serving", 1)

    def test_thenOutageAgain(self) -> None:
        """
        A second outage is logged afresh, with a single timer.
        """
        self.outage()
        self.change("green", True)
        self.change("green", False)
        self.assertState("green", "outage", 0)
        self.assertEqual(len(self.logged(LogLevel.error)), 2)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_liveFailedStandbyUp(self) -> None:
        """
        A report that the live environment is down while the standby is (by
        then) up ends the outage with a failover.  (The monitor would have
        reported the standby coming up first; this covers the transition
        anyway.)
        """
        self.outage()
        self.health.up["blue"] = True
        self.controller.healthChanged("green", False, "status 503")
        self.assertState("blue", "serving", 1)
        self.assertEqual(
            self.controller.history[0].reason, "failover: green down: status 503"
        )
        self.assertEqual(self.logged(LogLevel.info), ["outage over: blue is up"])
        self.assertNoTimers()

    def test_refusedSwitch(self) -> None:
        """
        During an outage an operator cannot switch to the other environment,
        which is down, without force.
        """
        self.outage()
        error = self.assertRaises(SwitchRefused, self.controller.switch, "blue")
        self.assertEqual(
            str(error), "blue is down (connection refused); use force to switch anyway"
        )
        self.assertState("green", "outage", 0)

    def test_forcedSwitch(self) -> None:
        """
        A forced switch during an outage moves traffic and stays in the
        outage, whose logs now name the new live environment.
        """
        self.outage()
        self.controller.switch("blue", "operator", force=True)
        self.assertState("blue", "outage", 1)
        self.clock.advance(5)
        self.assertEqual(self.logged(LogLevel.error)[-1], self.outageMessage("blue"))
        self.change("blue", True)
        self.assertState("blue", "serving", 1)
        self.assertEqual(self.logged(LogLevel.info), ["outage over: blue is up"])

    def test_preferredRecoversAsStandby(self) -> None:
        """
        With C{--failback auto}, the preferred environment recovering during
        an outage while the other one is live is switched to at once (no
        failback delay: the live one is down).
        """
        self.make(failback="auto")
        self.bothUp()
        self.change("green", False)
        self.assertState("blue", "serving", 1)
        self.change("blue", False)
        self.assertState("blue", "outage", 1)
        self.change("green", True)
        self.assertState("green", "serving", 2)
        self.assertEqual(
            self.controller.history[1].reason,
            "failover: green recovered while blue is down",
        )
        self.assertNoTimers()

    def test_otherRecoversAuto(self) -> None:
        """
        With C{--failback auto} and the preferred environment live, the other
        recovering during an outage takes the traffic; the preferred coming
        back later starts the failback timer.
        """
        self.outage(failback="auto")
        self.change("blue", True)
        self.assertState("blue", "serving", 1)
        self.assertNoTimers()
        self.change("green", True)
        self.assertState("blue", "failback-pending", 1)

    def test_stop(self) -> None:
        """
        Stopping the controller stops the outage logs.
        """
        self.outage()
        self.controller.stop()
        self.assertNoTimers()
        self.tick(60)
        self.assertEqual(len(self.logged(LogLevel.error)), 1)


class ManualFailbackTests(ControllerMixin):
    """
    With C{--failback manual} (the default), nothing switches back by itself,
    and L{Controller.switch} refuses an environment that is down.
    """

    def failover(self) -> None:
        """
        Green fails over to blue.
        """
        self.make()
        self.bothUp()
        self.change("green", False)

    def test_default(self) -> None:
        """
        Failback is manual by default.
        """
        self.assertEqual(self.make().failback, "manual")

    def test_noFailback(self) -> None:
        """
        The preferred environment coming back stays a healthy standby.
        """
        self.failover()
        self.change("green", True)
        self.assertState("blue", "serving", 1)
        self.assertNoTimers()
        self.clock.advance(3600)
        self.assertState("blue", "serving", 1)

    def test_switchBack(self) -> None:
        """
        An operator switches back once the preferred environment is up.
        """
        self.failover()
        self.change("green", True)
        self.clock.advance(10)
        record = self.controller.switch("green")
        self.assertEqual(record, Switch(1010.0, "blue", "green", "manual switch"))
        self.assertState("green", "serving", 2)
        self.assertEqual(self.controller.why, "manual switch")

    def test_refused(self) -> None:
        """
        A switch to an environment that is down is refused with its last
        check result, and changes and logs nothing.
        """
        self.make()
        self.change("green", True)
        self.change("blue", False, "status 500")
        error = self.assertRaises(SwitchRefused, self.controller.switch, "blue")
        self.assertEqual(
            str(error), "blue is down (status 500); use force to switch anyway"
        )
        self.assertState("green", "serving", 0)
        self.assertEqual(self.logged(LogLevel.warn), [])

    def test_refusedAfterFailover(self) -> None:
        """
        The environment that failed cannot be switched back to while down.
        """
        self.failover()
        error = self.assertRaises(SwitchRefused, self.controller.switch, "green")
        self.assertEqual(
            str(error), "green is down (status 500); use force to switch anyway"
        )

    def test_refusedNoReason(self) -> None:
        """
        An environment known to be down without a reported reason is refused
        in general terms.
        """
        self.make()
        self.health.up["blue"] = False
        error = self.assertRaises(SwitchRefused, self.controller.switch, "blue")
        self.assertEqual(
            str(error),
            "blue is down (failing its health checks); use force to switch anyway",
        )

    def test_forced(self) -> None:
        """
        With C{force}, an operator can switch to an environment that is down.
        """
        self.make()
        self.change("green", True)
        self.change("blue", False)
        record = self.controller.switch("blue", "maintenance", force=True)
        self.assertEqual(record, Switch(1000.0, "green", "blue", "maintenance"))
        self.assertState("blue", "serving", 1)

    def test_forcedThenStandbyFails(self) -> None:
        """
        After a forced switch onto a down environment, the standby going
        down too is an outage (logged, and left as soon as either is up).
        """
        self.make()
        self.change("green", True)
        self.change("blue", False)
        self.controller.switch("blue", "maintenance", force=True)
        self.change("green", False, "connection refused")
        self.assertState("blue", "outage", 1)
        self.assertEqual(len(self.logged(LogLevel.error)), 1)
        self.change("green", True)
        self.assertState("green", "serving", 2)
        self.assertEqual(
            self.controller.history[-1].reason,
            "failover: green recovered while blue is down",
        )

    def test_forcedThenStandbyRecovers(self) -> None:
        """
        After a forced switch onto a down environment with the standby also
        down, the outage begins at once, and whichever comes up first takes
        the traffic.
        """
        self.make()
        self.change("green", False)
        self.change("blue", False)
        self.assertState("green", "outage", 0)
        self.controller.switch("blue", "maintenance", force=True)
        self.assertState("blue", "outage", 1)
        self.change("green", True)
        self.assertState("green", "serving", 2)
        self.assertNoTimers()

    def test_forcedOntoDownWhileStandbyUp(self) -> None:
        """
        A forced switch onto a down environment while the other is up is the
        operator's choice: traffic stays (serving) until health changes; if
        the forced environment recovers, nothing moves.
        """
        self.make()
        self.change("green", True)
        self.change("blue", False)
        self.controller.switch("blue", "maintenance", force=True)
        self.assertState("blue", "serving", 1)
        self.change("blue", True)
        self.assertState("blue", "serving", 1)

    def test_unchecked(self) -> None:
        """
        An environment not checked yet is not known to be down: the switch
        is allowed.
        """
        self.make()
        self.controller.switch("blue")
        self.assertState("blue", "serving", 1)

    def test_alreadyLive(self) -> None:
        """
        A switch to the live environment is refused, even with force.
        """
        self.make()
        self.bothUp()
        for force in (False, True):
            error = self.assertRaises(
                SwitchRefused, self.controller.switch, "green", force=force
            )
            self.assertEqual(str(error), "green is already live")
        self.assertState("green", "serving", 0)


class AutoFailbackTests(ControllerMixin):
    """
    With C{--failback auto}, traffic returns to the preferred environment
    once it has stayed up for C{failbackDelay} seconds.
    """

    def failover(self, **settings: Any) -> None:
        """
        Green (preferred) fails over to blue.
        """
        self.make(failback="auto", failbackDelay=30.0, **settings)
        self.bothUp()
        self.change("green", False)
        self.assertState("blue", "serving", 1)

    def test_pending(self) -> None:
        """
        The preferred environment coming back starts the delay: the mode is
        C{failback-pending} and the traffic stays on blue.
        """
        self.failover()
        self.change("green", True)
        self.assertState("blue", "failback-pending", 1)
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 1030.0)
        self.assertEqual(
            self.logged(LogLevel.info)[-1],
            "green is up: failing back in 30.0 s unless it fails again",
        )

    def test_failback(self) -> None:
        """
        After the delay, traffic returns to the preferred environment, with
        the reason recorded and logged.
        """
        self.failover()
        self.change("green", True)
        self.clock.advance(29.9)
        self.assertState("blue", "failback-pending", 1)
        self.clock.advance(0.1)
        reason = "failback: green up for 30 s"
        self.assertState("green", "serving", 2)
        self.assertEqual(
            self.controller.history[1], Switch(1030.0, "blue", "green", reason)
        )
        self.assertEqual(self.controller.why, reason)
        self.assertEqual(
            self.logged(LogLevel.warn)[-1], SWITCHED.format("blue", "green", reason)
        )
        self.assertNoTimers()

    def test_fractionalDelay(self) -> None:
        """
        The reason gives the delay as configured.
        """
        self.failover()
        self.controller.failbackDelay = 2.5
        self.change("green", True)
        self.clock.advance(2.5)
        self.assertEqual(
            self.controller.history[-1].reason, "failback: green up for 2.5 s"
        )

    def test_flapping(self) -> None:
        """
        The preferred environment going down again before the delay is over
        cancels the failback; coming up again starts a whole new delay.
        """
        self.failover()
        self.change("green", True)
        self.clock.advance(20)
        self.change("green", False)
        self.assertState("blue", "serving", 1)
        self.assertNoTimers()
        self.clock.advance(60)
        self.assertState("blue", "serving", 1)
        self.change("green", True)
        self.clock.advance(29)
        self.assertState("blue", "failback-pending", 1)
        self.clock.advance(1)
        self.assertState("green", "serving", 2)

    def test_liveFails(self) -> None:
        """
        The live environment failing while the failback is pending fails
        over to the preferred one at once, once.
        """
        self.failover()
        self.change("green", True)
        self.clock.advance(10)
        self.change("blue", False, "connection refused")
        self.assertState("green", "serving", 2)
        self.assertEqual(
            self.controller.history[1],
            Switch(1010.0, "blue", "green", "failover: blue down: connection refused"),
        )
        self.assertNoTimers()
        self.clock.advance(60)
        self.assertState("green", "serving", 2)

    def test_liveFailsNoStandby(self) -> None:
        """
        If the preferred environment is known to be down by the time the live
        one fails during the delay, the failback is cancelled and an outage
        begins.  (The monitor reports the preferred going down first; this
        covers the transition anyway.)
        """
        self.failover()
        self.change("green", True)
        self.health.up["green"] = False
        self.change("blue", False)
        self.assertState("blue", "outage", 1)
        self.assertEqual(len(self.logged(LogLevel.error)), 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.tick(30)
        self.assertState("blue", "outage", 1)

    def test_manualSwitch(self) -> None:
        """
        An operator switching back during the delay cancels the timer.
        """
        self.failover()
        self.change("green", True)
        self.controller.switch("green", "deploy checked")
        self.assertState("green", "serving", 2)
        self.assertEqual(self.controller.history[1].reason, "deploy checked")
        self.assertNoTimers()
        self.clock.advance(60)
        self.assertState("green", "serving", 2)

    def test_otherReportsKeepWaiting(self) -> None:
        """
        Reports that change nothing (the live environment up, the preferred
        up again) leave the timer running.
        """
        self.failover()
        self.change("green", True)
        self.clock.advance(10)
        self.change("blue", True)
        self.change("green", True)
        self.assertState("blue", "failback-pending", 1)
        self.clock.advance(20)
        self.assertState("green", "serving", 2)

    def test_notPreferred(self) -> None:
        """
        Only the preferred environment is failed back to: with green live,
        blue coming up starts nothing.
        """
        self.make(failback="auto")
        self.change("green", True)
        self.change("blue", False)
        self.change("blue", True)
        self.assertState("green", "serving", 0)
        self.assertNoTimers()

    def test_preferredBlue(self) -> None:
        """
        The preferred environment is C{--active}, whatever its colour.
        """
        self.make("blue", failback="auto", failbackDelay=10.0)
        self.bothUp()
        self.change("blue", False)
        self.assertState("green", "serving", 1)
        self.change("blue", True)
        self.clock.advance(10)
        self.assertState("blue", "serving", 2)
        self.assertEqual(
            self.controller.history[1].reason, "failback: blue up for 10 s"
        )

    def test_preferredLostWhileServing(self) -> None:
        """
        The preferred environment going down while it is the standby and no
        failback is pending changes nothing.
        """
        self.make(failback="auto")
        self.bothUp()
        self.controller.switch("blue")
        self.change("green", False)
        self.assertState("blue", "serving", 1)
        self.assertNoTimers()

    def test_stop(self) -> None:
        """
        Stopping the controller cancels a pending failback.
        """
        self.failover()
        self.change("green", True)
        self.controller.stop()
        self.assertNoTimers()
        self.assertState("blue", "failback-pending", 1)
        self.clock.advance(60)
        self.assertEqual(self.controller.active, "blue")

    def test_stopIdle(self) -> None:
        """
        Stopping a controller with no timers is harmless, and can be
        repeated.
        """
        self.make(failback="auto")
        self.controller.stop()
        self.controller.stop()
        self.assertNoTimers()


class StateFileTests(ControllerMixin):
    """
    With C{--state}, the live colour and the history survive a restart.
    """

    def setUp(self) -> None:
        """
        Make a directory for the state file.
        """
        super().setUp()
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "state.json")

    def test_firstStart(self) -> None:
        """
        Without a file yet, the start is from C{--active}, quietly, and the
        file is not created until a switch.
        """
        self.make(stateFile=self.path)
        self.assertState("green", "serving", 0)
        self.assertEqual(self.controller.why, "start")
        self.assertEqual(self.logged(LogLevel.error), [])
        self.assertFalse(os.path.exists(self.path))

    def test_eachSwitchSaved(self) -> None:
        """
        Every switch, automatic or manual, is saved.
        """
        self.make(stateFile=self.path, failback="auto", failbackDelay=30.0)
        self.bothUp()
        self.change("green", False)
        saved = statefile.load(self.path, ("green", "blue"))
        assert saved is not None
        self.assertEqual(saved.live, "blue")
        self.assertEqual(
            saved.history,
            (
                statefile.SwitchRecord(
                    1000.0, "green", "blue", "failover: green down: status 500"
                ),
            ),
        )
        self.change("green", True)
        self.clock.advance(30)
        saved = statefile.load(self.path, ("green", "blue"))
        assert saved is not None
        self.assertEqual(saved.live, "green")
        self.assertEqual(len(saved.history), 2)
        self.controller.switch("blue", "by hand")
        saved = statefile.load(self.path, ("green", "blue"))
        assert saved is not None
        self.assertEqual((saved.live, saved.history[-1].reason), ("blue", "by hand"))

    def test_restart(self) -> None:
        """
        A controller made from the file of an earlier one has its live
        colour and history, and says where they came from.
        """
        self.make(stateFile=self.path)
        self.bothUp()
        self.change("green", False)
        before = list(self.controller.history)
        self.controller.stop()
        restarted = Controller.create(BOTH, "green", Clock(), stateFile=self.path)
        self.assertEqual(restarted.active, "blue")
        self.assertEqual(restarted.history, before)
        self.assertEqual(restarted.why, f"restored from {self.path}")
        self.assertEqual(restarted.preferred, "green")
        restarted.switch("green")
        saved = statefile.load(self.path, ("green", "blue"))
        assert saved is not None
        self.assertEqual(len(saved.history), 2)

    def test_restartAutoFailback(self) -> None:
        """
        Restored on the other colour with C{--failback auto}, the preferred
        environment's first good check starts the failback delay.
        """
        statefile.save(self.path, "blue", [])
        self.make(stateFile=self.path, failback="auto", failbackDelay=30.0)
        self.assertState("blue", "serving", 0)
        self.change("blue", True)
        self.change("green", True)
        self.assertState("blue", "failback-pending", 0)
        self.clock.advance(30)
        self.assertState("green", "serving", 1)

    def assertCorrupt(self, content: bytes, error: str) -> None:
        """
        A state file holding C{content} is reported as an error ending with
        C{error}, and the controller starts from C{--active}.
        """
        with open(self.path, "wb") as f:
            f.write(content)
        self.make("green", stateFile=self.path)
        self.assertState("green", "serving", 0)
        self.assertEqual(self.controller.why, "start")
        self.assertEqual(
            self.logged(LogLevel.error),
            [f"state file ignored, starting with green live: {error}"],
        )

    def test_corrupt(self) -> None:
        """
        Invalid JSON is logged, not raised.
        """
        self.assertCorrupt(
            b'{"version": 1, "live": "bl',
            f"{self.path} is not valid JSON (Unterminated string starting at: "
            "line 1 column 24 (char 23))",
        )

    def test_binary(self) -> None:
        """
        Binary garbage is logged, not raised.
        """
        self.assertCorrupt(
            b"\x00\xff\xfe",
            f"{self.path} is not valid JSON (not UTF-8: invalid start byte at byte 1)",
        )

    def test_unknownColour(self) -> None:
        """
        A file naming an environment that does not exist is logged.
        """
        self.assertCorrupt(
            b'{"version": 1, "live": "red", "history": []}',
            f"{self.path}: 'live' is 'red', expected one of ('green', 'blue')",
        )

    def test_unreadable(self) -> None:
        """
        A file that cannot be read (here a directory) is logged.
        """
        os.mkdir(self.path)
        self.make("blue", stateFile=self.path)
        self.assertState("blue", "serving", 0)
        self.assertEqual(
            self.logged(LogLevel.error),
            [
                "state file ignored, starting with blue live: "
                f"cannot read {self.path}: Is a directory"
            ],
        )

    def test_corruptReplaced(self) -> None:
        """
        After a corrupt file was ignored, the next switch replaces it.
        """
        with open(self.path, "w") as f:
            f.write("garbage")
        self.make(stateFile=self.path)
        self.controller.switch("blue")
        saved = statefile.load(self.path, ("green", "blue"))
        assert saved is not None
        self.assertEqual(saved.live, "blue")

    def test_saveFails(self) -> None:
        """
        A switch whose state cannot be saved still happens; the failure is
        logged as an error.
        """
        path = os.path.join(self.directory, "missing", "state.json")
        self.make(stateFile=path)
        self.bothUp()
        self.change("green", False)
        self.assertState("blue", "serving", 1)
        [error] = self.logged(LogLevel.error)
        self.assertTrue(
            error.startswith(f"cannot save state to {path}: [Errno 2] "), error
        )


class Backend(Resource):
    """
    An environment's application, answering every request with C{code}.

    @ivar name: Put in each response body.
    @ivar code: The status to answer with.
    @ivar requests: C{(method, path, body)} of each request.
    @ivar times: The clock's time at each request.
    """

    isLeaf = True

    def __init__(self, name: str, clock: Clock) -> None:
        super().__init__()
        self.name = name
        self.clock = clock
        self.code = 200
        self.requests: list[tuple[bytes, bytes, bytes]] = []
        self.times: list[float] = []

    def render(self, request: Request) -> bytes:
        """
        Answer C{"<name> <method> <body>"}, with C{code}.
        """
        body = request.content.read() if request.content is not None else b""
        method = request.method
        self.requests.append((method, request.uri, body))
        self.times.append(self.clock.seconds())
        request.setResponseCode(self.code)
        return b"%s %s %s" % (self.name.encode(), method, body)


class Router(Resource):
    """
    Hands each request to the backend of the environment it was sent to (all
    of StubTreq's requests reach this one resource).
    """

    isLeaf = True

    def __init__(self, backends: dict[int, Backend]) -> None:
        super().__init__()
        self.backends = backends

    def render(self, request: Request) -> bytes:
        """
        Dispatch on the port the request was made to.
        """
        return self.backends[request.getHost().port].render(request)


class ChainMixin(LogMixin):
    """
    A real L{HealthMonitor} checking both environments through StubTreq and
    driving a L{Controller}, wired as C{makeService} wires them.
    """

    def setUp(self) -> None:
        """
        Make a clock at 0 and a backend per environment, both answering 200.
        """
        super().setUp()
        self.clock = MemoryReactorClock()
        self.green = Backend("green", self.clock)
        self.blue = Backend("blue", self.clock)
        self.stub = StubTreq(Router({GREEN.port: self.green, BLUE.port: self.blue}))

    def start(
        self, fall: int = 1, rise: int = 2, **settings: Any
    ) -> tuple[HealthMonitor, Controller]:
        """
        Start a monitor checking every 5 s (every 1 s while an environment
        changes state) and a controller with green preferred.

        @param fall: Failures that mark an environment down.
        @param rise: Successes that mark it up.
        @param settings: Controller settings.
        @return: The monitor and the controller, stopped at cleanup.
        """
        health = HealthSettings(interval=5.0, fastInterval=1.0, fall=fall, rise=rise)
        monitor = HealthMonitor(dict(BOTH), health, self.clock, self.stub)
        controller = Controller.create(
            BOTH,
            "green",
            self.clock,
            isUp=lambda name: monitor.health[name].up,
            outageInterval=health.interval,
            **settings,
        )
        monitor.subscribe(controller.healthChanged)
        self.addCleanup(self.stop, monitor, controller)
        monitor.startService()
        return monitor, controller

    def stop(self, monitor: HealthMonitor, controller: Controller) -> None:
        """
        Stop both, as the service does.
        """
        controller.stop()
        if monitor.running:
            self.successResultOf(monitor.stopService())
        self.stub.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def advanceTo(self, when: float) -> None:
        """
        Advance the clock to C{when}, at most a second at a time.
        """
        while self.clock.seconds() < when:
            self.clock.advance(min(1.0, when - self.clock.seconds()))


class ChainTests(ChainMixin):
    """
    Health checks through the monitor's thresholds and intervals switch the
    controller.
    """

    def test_start(self) -> None:
        """
        The first checks decide at once; with both up nothing switches.
        """
        monitor, controller = self.start()
        self.assertEqual(
            {name: state.up for name, state in monitor.health.items()},
            {"green": True, "blue": True},
        )
        self.assertEqual((controller.active, controller.history), ("green", []))

    def test_fallOne(self) -> None:
        """
        With C{fall=1}, one failed check of the live environment fails over.
        """
        _monitor, controller = self.start(fall=1)
        self.green.code = 500
        self.clock.advance(4.9)
        self.assertEqual(controller.active, "green")
        self.clock.advance(0.1)
        self.assertEqual(controller.active, "blue")
        self.assertEqual(
            controller.history,
            [
                Switch(
                    5.0,
                    "green",
                    "blue",
                    "failover: green down: status 500 (expected 200)",
                )
            ],
        )
        self.assertEqual(self.green.times, [0.0, 5.0])

    def test_fallThree(self) -> None:
        """
        With C{fall=3}, the live environment fails over after three failed
        checks in a row, the second and third at the fast interval.
        """
        monitor, controller = self.start(fall=3)
        self.green.code = 500
        self.advanceTo(6)
        self.assertEqual(controller.active, "green")
        self.assertEqual(monitor.health["green"].failures, 2)
        self.clock.advance(1)
        self.assertEqual(controller.active, "blue")
        self.assertEqual(self.green.times, [0.0, 5.0, 6.0, 7.0])
        self.assertEqual(controller.history[0].when, 7.0)

    def test_fallThreeRecovered(self) -> None:
        """
        Failures short of C{fall}, followed by a success, switch nothing.
        """
        _monitor, controller = self.start(fall=3)
        self.green.code = 500
        self.advanceTo(6)
        self.green.code = 200
        self.advanceTo(60)
        self.assertEqual((controller.active, controller.history), ("green", []))

    def test_riseTwoManual(self) -> None:
        """
        After a failover the old environment is up again only after C{rise}
        good checks, the second at the fast interval; with manual failback
        it then waits as the standby until an operator switches.
        """
        monitor, controller = self.start(fall=1, rise=2)
        self.green.code = 500
        self.advanceTo(5)
        self.green.code = 200
        self.advanceTo(10)
        self.assertFalse(monitor.health["green"].up)
        self.assertRaises(SwitchRefused, controller.switch, "green")
        self.advanceTo(11)
        self.assertTrue(monitor.health["green"].up)
        self.assertEqual(self.green.times, [0.0, 5.0, 10.0, 11.0])
        self.advanceTo(120)
        self.assertEqual((controller.active, len(controller.history)), ("blue", 1))
        controller.switch("green")
        self.assertEqual(controller.active, "green")

    def test_autoFailback(self) -> None:
        """
        With automatic failback, traffic returns once the preferred
        environment has risen and stayed up for the delay.
        """
        _monitor, controller = self.start(
            fall=1, rise=2, failback="auto", failbackDelay=30.0
        )
        self.green.code = 500
        self.advanceTo(5)
        self.green.code = 200
        self.advanceTo(11)
        self.assertEqual(controller.mode, "failback-pending")
        self.advanceTo(40.5)
        self.assertEqual(controller.active, "blue")
        self.advanceTo(41)
        self.assertEqual(controller.active, "green")
        self.assertEqual(
            controller.history[-1],
            Switch(41.0, "blue", "green", "failback: green up for 30 s"),
        )

    def test_autoFailbackFlapping(self) -> None:
        """
        A preferred environment that fails a check during the delay does not
        get the traffic back.
        """
        _monitor, controller = self.start(
            fall=1, rise=2, failback="auto", failbackDelay=30.0
        )
        self.green.code = 500
        self.advanceTo(5)
        self.green.code = 200
        self.advanceTo(11)
        self.assertEqual(controller.mode, "failback-pending")
        self.green.code = 500
        self.advanceTo(16)
        self.assertEqual(controller.mode, "serving")
        self.green.code = 200
        self.advanceTo(45)
        self.assertEqual(controller.active, "blue")
        self.assertEqual(controller.mode, "failback-pending")

    def test_bothDown(self) -> None:
        """
        Both down: the live environment stays, an error is logged every
        interval, and the first to recover gets the traffic.
        """
        _monitor, controller = self.start(fall=1, rise=2)
        self.blue.code = 500
        self.advanceTo(5)
        self.green.code = 500
        self.advanceTo(10)
        self.assertEqual((controller.active, controller.mode), ("green", "outage"))
        self.assertEqual(len(self.logged(LogLevel.error)), 1)
        self.advanceTo(20)
        self.assertEqual(len(self.logged(LogLevel.error)), 3)
        self.blue.code = 200
        self.advanceTo(25)
        self.assertEqual(controller.mode, "outage")
        self.advanceTo(26)
        self.assertEqual((controller.active, controller.mode), ("blue", "serving"))
        self.assertEqual(
            controller.history,
            [
                Switch(
                    26.0,
                    "green",
                    "blue",
                    "failover: blue recovered while green is down",
                )
            ],
        )
        errors = self.logged(LogLevel.error)
        self.assertEqual(len(errors), 4)
        self.assertIn("green: status 500 (expected 200)", errors[0])
        self.advanceTo(60)
        self.assertEqual(len(self.logged(LogLevel.error)), 4)

    def test_passive(self) -> None:
        """
        A failure seen on proxied traffic counts at once: with C{fall=1} it
        fails over without waiting for the next check.
        """
        monitor, controller = self.start(fall=1)
        self.clock.advance(1)
        monitor.reportPassive("green", "proxied request: refused the connection")
        self.assertEqual(
            controller.history,
            [
                Switch(
                    1.0,
                    "green",
                    "blue",
                    "failover: green down: proxied request: refused the connection",
                )
            ],
        )

    def test_passiveFastCheck(self) -> None:
        """
        A passive failure also checks the environment at once, so with
        C{fall=2} a failing application fails over immediately.
        """
        monitor, controller = self.start(fall=2)
        self.green.code = 500
        self.clock.advance(1)
        monitor.reportPassive("green", "proxied request: connection reset")
        self.assertEqual(self.green.times, [0.0, 1.0])
        self.assertEqual(controller.active, "blue")
        self.assertEqual(controller.history[0].when, 1.0)


class ResetOnRequest(Protocol):
    """
    A server that closes the connection as soon as a request arrives,
    before any response byte.
    """

    def dataReceived(self, data: bytes) -> None:
        """
        Hang up.
        """
        assert self.transport is not None
        self.transport.loseConnection()


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    Connects the proxy's pool to a backend in memory, or fails to connect.

    @ivar mode: C{"serve"} (answer with the backend), C{"refuse"} (the
        connect fails) or C{"reset"} (accept, then hang up on the request).
    @ivar attempts: How many connects were tried.
    @ivar pumps: The in-memory connections made.
    """

    def __init__(self, backend: Backend, clock: Clock) -> None:
        self.site = Site(backend, reactor=clock)
        self.mode = "serve"
        self.attempts = 0
        self.pumps: list[iosim.IOPump] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect a protocol from C{factory}, as the mode says.
        """
        self.attempts += 1
        if self.mode == "refuse":
            return fail(ConnectionRefusedError("Connection refused"))
        address = IPv4Address("TCP", "127.0.0.1", 5000)
        server: IProtocol | None = (
            self.site.buildProtocol(address) if self.mode == "serve" else None
        )
        if server is None:
            server = ResetOnRequest()
        client = factory.buildProtocol(address)
        assert client is not None
        pump = iosim.connect(
            server,
            iosim.makeFakeServer(server),
            client,
            iosim.makeFakeClient(client),
            greet=False,
        )
        self.pumps.append(pump)
        return succeed(client)


class ProxyTests(ChainMixin):
    """
    The proxy reports environments it cannot reach to the monitor, and
    retries a request on the standby when nothing of it can have been
    processed.
    """

    def setUp(self) -> None:
        """
        Make an in-memory endpoint per environment for the proxy's pools.
        """
        super().setUp()
        self.endpoints = {
            "green": MemoryEndpoint(self.green, self.clock),
            "blue": MemoryEndpoint(self.blue, self.clock),
        }

    def proxy(
        self, retry: bool = True, fall: int = 1, responseTimeout: float = 60.0
    ) -> tuple[HealthMonitor, Controller]:
        """
        Start the monitor and controller, and a proxy in front of them.
        """
        monitor, controller = self.start(fall=fall)
        pools = {
            name: UpstreamPool(self.clock, BOTH[name], endpoint=endpoint)
            for name, endpoint in self.endpoints.items()
        }
        self.resource = ProxyResource(
            controller,
            pools,
            self.clock,
            responseTimeout=responseTimeout,
            health=monitor,
            retry=retry,
        )
        self.site = ProxySite(self.resource, self.clock)
        self.addCleanup(self.closePools, list(pools.values()))
        return monitor, controller

    def closePools(self, pools: list[UpstreamPool]) -> None:
        """
        Close the proxy's pools, delivering the closes in memory.
        """
        closed = [pool.close(0) for pool in pools]
        self.clock.advance(0)
        self.flush()
        for d in closed:
            self.successResultOf(d)

    def request(self, raw: bytes, *more: tuple[float, bytes]) -> bytes:
        """
        Send a raw request to the proxy and run everything to completion.

        @param raw: The request, or its beginning.
        @param more: C{(seconds, data)}: advance the clock, then send more.
        @return: What the proxy answered.
        """
        channel = self.site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40000))
        assert channel is not None
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 40000))
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, Failure(ConnectionDone()))
        channel.dataReceived(raw)
        self.clock.advance(0)
        self.flush()
        for seconds, data in more:
            self.clock.advance(seconds)
            self.flush()
            channel.dataReceived(data)
            self.clock.advance(0)
            self.flush()
        return transport.value()

    def flush(self) -> None:
        """
        Move bytes over every in-memory connection until nothing moves.
        """
        moved = True
        while moved:
            moved = False
            for endpoint in self.endpoints.values():
                for pump in list(endpoint.pumps):
                    moved = pump.pump() or moved

    def passive(self, monitor: HealthMonitor, name: str) -> list[str]:
        """
        @return: The passive failures recorded for C{name}.
        """
        return [r.reason for r in monitor.health[name].history if r.passive]

    def assertAnswered(self, response: bytes, status: bytes, body: bytes) -> None:
        """
        Assert the status line and the end of the body of C{response}.
        """
        self.assertTrue(
            response.startswith(b"HTTP/1.1 " + status + b" "), response[:200]
        )
        self.assertTrue(response.endswith(body), response)

    def test_served(self) -> None:
        """
        With the live environment reachable, it answers and nothing is
        reported.
        """
        monitor, _controller = self.proxy()
        response = self.request(b"GET /a HTTP/1.1\r\nHost: example\r\n\r\n")
        self.assertAnswered(response, b"200", b"green GET ")
        self.assertEqual(self.passive(monitor, "green"), [])

    def test_responseTimeoutStartsAfterUpload(self) -> None:
        """
        An upload that takes longer than the response timeout (a byte every
        0.1 s for 1 s, against 0.5 s) is not cut off: the timeout counts
        from the end of the request.
        """
        self.proxy(responseTimeout=0.5)
        response = self.request(
            b"PUT /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
            *[(0.1, b"z")] * 10,
        )
        self.assertAnswered(response, b"200", b"green PUT zzzzzzzzzz")
        proxied = [r for r in self.green.requests if r[1] != b"/"]
        self.assertEqual(proxied, [(b"PUT", b"/slow", b"z" * 10)])

    def test_app500NotPassive(self) -> None:
        """
        A 500 from the application is passed on, and neither counts as a
        failed check nor is retried.
        """
        monitor, controller = self.proxy()
        self.green.code = 500
        response = self.request(b"GET /a HTTP/1.1\r\nHost: example\r\n\r\n")
        self.assertAnswered(response, b"500", b"green GET ")
        self.assertEqual(self.passive(monitor, "green"), [])
        self.assertEqual(self.blue.requests, [(b"GET", b"/", b"")])
        self.assertEqual(controller.active, "green")

    def test_refusedGETRetried(self) -> None:
        """
        A GET that cannot connect to the live environment is answered by the
        standby; the live environment is reported at once (with C{fall=1},
        failing over).
        """
        monitor, controller = self.proxy()
        self.endpoints["green"].mode = "refuse"
        response = self.request(b"GET /a HTTP/1.1\r\nHost: example\r\n\r\n")
        self.assertAnswered(response, b"200", b"blue GET ")
        self.assertEqual(
            self.passive(monitor, "green"), ["proxied request: refused the connection"]
        )
        self.assertEqual(controller.active, "blue")
        self.assertEqual(
            controller.history[0].reason,
            "failover: green down: proxied request: refused the connection",
        )

    def test_refusedPOSTRetried(self) -> None:
        """
        A request whose connect failed was never sent, so it is retried on
        the standby whatever its method, body included.
        """
        monitor, controller = self.proxy(fall=3)
        self.endpoints["green"].mode = "refuse"
        response = self.request(
            b"POST /p HTTP/1.1\r\nHost: example\r\nContent-Length: 5\r\n\r\nhello"
        )
        self.assertAnswered(response, b"200", b"blue POST hello")
        self.assertEqual(self.blue.requests[-1], (b"POST", b"/p", b"hello"))
        self.assertEqual(len(self.passive(monitor, "green")), 1)
        self.assertEqual(controller.active, "green")

    def test_resetGETRetried(self) -> None:
        """
        A GET on a connection closed before any response byte is retried on
        the standby, and reported.
        """
        monitor, _controller = self.proxy(fall=3)
        self.endpoints["green"].mode = "reset"
        response = self.request(b"GET /a HTTP/1.1\r\nHost: example\r\n\r\n")
        self.assertAnswered(response, b"200", b"blue GET ")
        self.assertEqual(
            self.passive(monitor, "green"),
            ["proxied request: closed the connection before responding"],
        )

    def test_resetPOSTNotRetried(self) -> None:
        """
        A POST that was sent before the connection closed may have been acted
        on: it is not retried (but is reported).
        """
        monitor, _controller = self.proxy(fall=3)
        self.endpoints["green"].mode = "reset"
        response = self.request(
            b"POST /p HTTP/1.1\r\nHost: example\r\nContent-Length: 5\r\n\r\nhello"
        )
        self.assertAnswered(
            response,
            b"502",
            b"bluegreen: green (http://127.0.0.1:5002) closed the connection "
            b"before responding\n",
        )
        self.assertEqual(self.endpoints["blue"].attempts, 0)
        self.assertEqual(len(self.passive(monitor, "green")), 1)

    def test_retryNone(self) -> None:
        """
        With C{--retry none}, a failed connect is answered with 502, and
        still reported.
        """
        monitor, _controller = self.proxy(retry=False, fall=3)
        self.endpoints["green"].mode = "refuse"
        response = self.request(b"GET /a HTTP/1.1\r\nHost: example\r\n\r\n")
        self.assertAnswered(
            response,
            b"502",
            b"bluegreen: green (http://127.0.0.1:5002) refused the connection\n",
        )
        self.assertEqual(self.endpoints["blue"].attempts, 0)
        self.assertEqual(len(self.passive(monitor, "green")), 1)

    def test_standbyDownNotRetried(self) -> None:
        """
        A standby that is down is not tried: the client gets the 502.
        """
        self.blue.code = 500
        monitor, _controller = self.proxy(fall=3)
        self.assertFalse(monitor.health["blue"].up)
        self.endpoints["green"].mode = "refuse"
        response = self.request(b"GET /a HTTP/1.1\r\nHost: example\r\n\r\n")
        self.assertAnswered(
            response,
            b"502",
            b"bluegreen: green (http://127.0.0.1:5002) refused the connection\n",
        )
        self.assertEqual(self.endpoints["blue"].attempts, 0)

    def test_retriedOnce(self) -> None:
        """
        When the standby cannot be reached either, the client gets its 502:
        a request is retried once, and both failures are reported.
        """
        monitor, _controller = self.proxy(fall=3)
        self.endpoints["green"].mode = "refuse"
        self.endpoints["blue"].mode = "refuse"
        response = self.request(b"GET /a HTTP/1.1\r\nHost: example\r\n\r\n")
        self.assertAnswered(
            response,
            b"502",
            b"bluegreen: blue (http://127.0.0.1:5001) refused the connection\n",
        )
        self.assertEqual(
            (self.endpoints["green"].attempts, self.endpoints["blue"].attempts),
            (1, 1),
        )
        self.assertEqual(len(self.passive(monitor, "green")), 1)
        self.assertEqual(len(self.passive(monitor, "blue")), 1)


class PlannedSwitchTests(ControllerMixin):
    """
    With database sync, planned switches (an operator's, an automatic
    failback) wait for the target's database to be brought up to date.
    """

    def makeSynced(self, **settings: Any) -> list[tuple[str, str, Deferred[Any]]]:
        """
        A controller whose C{beforeSwitch} records its calls and lets the
        test fire them.
        """
        calls: list[tuple[str, str, Deferred[Any]]] = []

        def beforeSwitch(source: str, target: str) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            calls.append((source, target, d))
            return d

        self.make(**settings)
        self.controller.beforeSwitch = beforeSwitch
        return calls

    def test_operatorWaitsForSync(self) -> None:
        """
        C{plannedSwitch} syncs live -> target, then switches; meanwhile
        C{syncing} says what is happening.
        """
        calls = self.makeSynced()
        self.bothUp()
        d = Deferred.fromCoroutine(self.controller.plannedSwitch("blue", "op"))
        [(source, target, sync)] = calls
        self.assertEqual((source, target), ("green", "blue"))
        self.assertState("green", "serving", 0)
        self.assertEqual(
            self.controller.syncing,
            "bringing blue's database up to date from green",
        )
        report = SimpleReport(complete=True)
        sync.callback(report)
        record, got = self.successResultOf(d)
        self.assertIs(got, report)
        self.assertEqual(record.to, "blue")
        self.assertIsNone(self.controller.syncing)
        self.assertState("blue", "serving", 1)

    def test_incompleteRefused(self) -> None:
        """
        An incomplete sync refuses the switch (the reason says why), unless
        forced.
        """
        calls = self.makeSynced()
        self.bothUp()
        d = Deferred.fromCoroutine(self.controller.plannedSwitch("blue"))
        calls[0][2].callback(SimpleReport(complete=False, conflicts=(1, 2)))
        error = self.failureResultOf(d, SwitchRefused)
        self.assertEqual(
            error.getErrorMessage(),
            "blue's database could not be brought up to date from green: "
            "2 conflicts; use force to switch anyway",
        )
        self.assertState("green", "serving", 0)
        forced = Deferred.fromCoroutine(
            self.controller.plannedSwitch("blue", force=True)
        )
        calls[1][2].callback(SimpleReport(complete=False, error="disk full"))
        self.successResultOf(forced)
        self.assertState("blue", "serving", 1)

    def test_refusedBeforeSync(self) -> None:
        """
        A switch that would be refused anyway (already live, target down)
        is refused before any sync starts.
        """
        calls = self.makeSynced()
        self.change("green", True)
        self.change("blue", False)
        d = Deferred.fromCoroutine(self.controller.plannedSwitch("blue"))
        self.failureResultOf(d, SwitchRefused)
        self.assertEqual(calls, [])

    def test_failbackSyncsFirst(self) -> None:
        """
        An automatic failback syncs the preferred environment's database
        first, then switches.
        """
        calls = self.makeSynced(failback="auto", failbackDelay=30.0)
        self.bothUp()
        self.change("green", False)
        self.assertState("blue", "serving", 1)
        self.change("green", True)
        self.clock.advance(30)
        [(source, target, sync)] = calls
        self.assertEqual((source, target), ("blue", "green"))
        self.assertState("blue", "failback-pending", 1)
        sync.callback(SimpleReport(complete=True))
        self.assertState("green", "serving", 2)
        self.assertNoTimers()

    def test_failbackPostponed(self) -> None:
        """
        An incomplete sync postpones the failback by another delay (logged),
        and it is tried again.
        """
        calls = self.makeSynced(failback="auto", failbackDelay=30.0)
        self.bothUp()
        self.change("green", False)
        self.change("green", True)
        self.clock.advance(30)
        calls[0][2].callback(SimpleReport(complete=False, conflicts=(1,)))
        self.assertState("blue", "failback-pending", 1)
        self.assertIn(
            "failback to green postponed 30 s: its database could not be "
            "brought up to date from blue: 1 conflict",
            self.logged(LogLevel.warn),
        )
        self.clock.advance(30)
        calls[1][2].callback(SimpleReport(complete=True))
        self.assertState("green", "serving", 2)

    def test_failbackCancelledDuringSync(self) -> None:
        """
        If the preferred environment fails again while its database is
        being synced, the failback does not happen.
        """
        calls = self.makeSynced(failback="auto", failbackDelay=30.0)
        self.bothUp()
        self.change("green", False)
        self.change("green", True)
        self.clock.advance(30)
        self.change("green", False)
        calls[0][2].callback(SimpleReport(complete=True))
        self.assertState("blue", "serving", 1)
        self.assertNoTimers()


@frozen
class SimpleReport:
    """
    The part of a sync report the controller reads.
    """

    complete: bool
    conflicts: tuple[object, ...] = ()
    error: str | None = None
