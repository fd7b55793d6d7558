# -*- test-case-name: tests.test_failover_unit -*-
"""
Deterministic tests of failover: the controller's state machine, fed
L{Controller.healthChanged} directly, with a dictionary standing in for the
monitor's tri-state answer (C{None} before the first check); on a L{Clock}.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import LogLevel

from bluegreen.controller import Switch, SwitchRefused
from tests._failover import (
    SWITCHED,
    ControllerMixin,
)


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
        self.assertSecondFailoverFromBlue(1060.0)


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
        self.assertSecondFailoverFromBlue(1010.0)
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
