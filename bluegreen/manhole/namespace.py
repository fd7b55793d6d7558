# -*- test-case-name: tests.test_manhole,tests.test_flags -*-
"""
What a manhole session sees: the live objects of the running service under
plain names, and the helpers C{status()}, C{switch()}, C{setFlag()},
C{unsetFlag()} and C{help()}.

The objects are handed over explicitly as one L{LiveObjects} value (built
by L{bluegreen.service.tap.makeService}), so this package never imports the
service that contains it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from pprint import pprint
from typing import Any, Protocol

from attrs import define, field, frozen
from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import IResource

from bluegreen import __version__
from bluegreen.controller import Controller, Switch, SwitchRefused
from bluegreen.health import HealthMonitor
from bluegreen.timetext import ago

_log = Logger(namespace="bluegreen.manhole")


class FlagWriter(Protocol):
    """
    What the manhole needs of the feature flags (a
    L{bluegreen.flags.service.FlagService}): set and unset one flag in one
    environment, recording who did it.
    """

    async def set(self, env: str, name: str, value: str, who: str) -> object:
        """
        Set flag C{name} to C{value} in C{env}'s Redis.

        @param env: The environment.
        @param name: The flag.
        @param value: Its new value.
        @param who: Who is changing it, for the history.
        @return: The change.
        """

    async def unset(self, env: str, name: str, who: str) -> object:
        """
        Remove flag C{name} from C{env}'s Redis.

        @param env: The environment.
        @param name: The flag.
        @param who: Who is removing it, for the history.
        @return: The change.
        """


@frozen
class LiveObjects:
    """
    The running service's objects a manhole shows.

    @ivar controller: The switch.
    @ivar health: The health monitor.
    @ivar proxy: The proxy resource.
    @ivar pools: The upstream connection pools, by environment.
    @ivar service: The whole service tree.
    @ivar flags: The feature flags, or L{None} when no environment has a
        Redis.
    @ivar sync: The database sync (a L{bluegreen.sync.service.SyncService}),
        or L{None} without databases.
    """

    controller: Controller
    health: HealthMonitor
    proxy: IResource
    pools: Mapping[str, object]
    service: IService
    flags: FlagWriter | None = None
    sync: object | None = None


class Text(str):
    """
    Text that the manhole shows as it is: its C{repr} is itself.
    """

    def __repr__(self) -> str:
        """
        @return: The text itself, so the prompt prints it unquoted.
        """
        return str(self)


def describeStatus(
    controller: Controller, health: HealthMonitor | None, clock: IReactorTime
) -> str:
    """
    The live environment and each environment's health, in a few lines.

    @param controller: The switch.
    @param health: The health monitor, if any.
    @param clock: Supplies the time, for "checked 2 s ago".
    @return: The text (no trailing newline).
    """
    now = clock.seconds()
    live = controller.live
    lines = [
        f"live: {live.name} ({controller.why}); mode: {controller.mode}",
    ]
    states = {} if health is None else health.health
    width = max(len(name) for name in controller.environments)
    for name, environment in controller.environments.items():
        state = states.get(name)
        up = {True: "up", False: "down", None: "unknown"}[
            None if state is None else state.up
        ]
        check = "not checked yet"
        if state is not None and state.last is not None:
            last = state.last
            check = (
                f"last check {last.reason}"
                + ("" if last.passive else f" in {last.latency * 1000:.0f} ms")
                + f", {ago(now - last.when)}"
            )
        marker = "  <- live" if name == live.name else ""
        lines.append(f"  {name:<{width}}  {up:<7}  {environment.url}  {check}{marker}")
    if controller.history:
        latest = controller.history[-1]
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(latest.when))
        lines.append(
            f"last switch: {when} {latest.source} -> {latest.to} ({latest.reason}); "
            f"{len(controller.history)} in all"
        )
    else:
        lines.append("no switch yet")
    return "\n".join(lines)


@define(eq=False)
class Namespace:
    """
    Makes each session's namespace: the live objects, anything added with
    L{add}, and the helpers, which record the logged-in user with what they
    change.

    @ivar objects: The live objects.
    @ivar clock: The reactor (everything in a session runs on it).
    """

    objects: LiveObjects
    clock: IReactorTime
    _entries: dict[str, tuple[object, str]] = field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        """
        Name the live objects.
        """
        objects = self.objects
        self.add("controller", objects.controller, "the switch: .active, .history")
        self.add("proxy", objects.proxy, "the proxy resource")
        self.add("health", objects.health, "the health monitor: .health['blue'].up")
        self.add("pools", objects.pools, "upstream connection pools by environment")
        self.add("service", objects.service, "the bluegreen service tree")
        self.add("reactor", self.clock, "the reactor (everything here runs on it)")
        self.add("pprint", pprint, "pprint.pprint")
        if objects.flags is not None:
            self.add(
                "flags",
                objects.flags,
                "the feature flags: .table(), .view('blue', 'RECENT')",
            )
        if objects.sync is not None:
            self.add(
                "sync",
                objects.sync,
                "the database sync: .status(), .start('green', 'blue'), .last",
            )

    def add(self, name: str, value: object, description: str) -> None:
        """
        Put C{value} in every new session's namespace as C{name}, listed by
        C{help()} with C{description}.

        @param name: A Python identifier.
        @param value: The object.
        @param description: A few words for C{help()}.
        @raise ValueError: If C{name} is not a Python identifier.
        """
        if not name.isidentifier():
            raise ValueError(f"{name!r} is not a Python name")
        self._entries[name] = (value, description)

    def namespaceFor(self, who: str) -> dict[str, Any]:
        """
        A new session's namespace.

        @param who: The logged-in user (recorded with each switch).
        @return: The objects by name, with C{switch}, C{status} and C{help}
            (and C{setFlag}, C{unsetFlag} with feature flags).
        """
        namespace: dict[str, Any] = {
            name: value for name, (value, _) in self._entries.items()
        }
        namespace["switch"] = functools.partial(self.switch, who)
        namespace["status"] = self.status
        namespace["help"] = functools.partial(self.help, who)
        if self.objects.flags is not None:
            namespace["setFlag"] = functools.partial(self.setFlag, who)
            namespace["unsetFlag"] = functools.partial(self.unsetFlag, who)
        return namespace

    def setFlag(self, who: str, env: str, name: str, value: str) -> Deferred[object]:
        """
        Set a feature flag in C{env}'s Redis, recorded as C{who}'s change
        from the manhole.  The value is stored as given (C{"ON"} is on).

        @param who: The logged-in user.
        @param env: The environment.
        @param name: The flag.
        @param value: Its new value.
        @return: A Deferred firing with the L{bluegreen.flags.model.FlagChange}
            (the manhole prints it when it fires).
        """
        flags = self.objects.flags
        assert flags is not None
        return Deferred.fromCoroutine(flags.set(env, name, value, f"manhole {who}"))

    def unsetFlag(self, who: str, env: str, name: str) -> Deferred[object]:
        """
        Remove a feature flag from C{env}'s Redis, recorded as C{who}'s.

        @param who: The logged-in user.
        @param env: The environment.
        @param name: The flag.
        @return: A Deferred firing with the L{bluegreen.flags.model.FlagChange}.
        """
        flags = self.objects.flags
        assert flags is not None
        return Deferred.fromCoroutine(flags.unset(env, name, f"manhole {who}"))

    def switch(
        self, who: str, to: str, force: bool = False
    ) -> Switch | Deferred[Switch]:
        """
        Switch traffic to C{to}, recording C{who} did it from the manhole.

        @param who: The logged-in user.
        @param to: C{"green"} or C{"blue"}.
        @param force: Switch even if C{to} is down.
        @return: The switch made, or (when a database sync comes first) a
            Deferred firing with it.
        @raise bluegreen.controller.SwitchRefused: If C{to} is live already,
            or down (without C{force}).
        @raise bluegreen.controller.UnknownEnvironment: For another name.
        """
        controller = self.objects.controller
        reason = f"manual switch via manhole by {who}" + (", forced" if force else "")
        _log.info(
            "manhole: {user} switches to {to}{forced}",
            user=who,
            to=to,
            forced=" (forced)" if force else "",
            event="manhole-switch",
        )
        try:
            if controller.beforeSwitch is not None:
                # Sync first: a Deferred (the manhole prints its result).
                planned = Deferred.fromCoroutine(
                    controller.plannedSwitch(to, reason, force=force)
                )
                return planned.addCallback(lambda result: result[0])
            return controller.switch(to, reason, force=force)
        except SwitchRefused as e:
            _log.warn(
                "manhole: switch to {to} by {user} refused: {why}",
                to=to,
                user=who,
                why=str(e),
                event="manhole-switch-refused",
            )
            raise

    def status(self) -> Text:
        """
        @return: The live environment and each environment's health.
        """
        return Text(
            describeStatus(self.objects.controller, self.objects.health, self.clock)
        )

    def help(self, who: str | None = None) -> Text:
        """
        @param who: The logged-in user, if known.
        @return: What the namespace holds.
        """
        flagRows = [
            ("setFlag(env, name, value)", 'set a flag, e.g. "blue", "RECENT", "ON"'),
            ("unsetFlag(env, name)", "remove a flag"),
        ]
        rows = [
            ("status()", "the live environment and health, in short"),
            (
                "switch(to, force=False)",
                'switch traffic to "green" or "blue", recorded as yours',
            ),
            *(flagRows if self.objects.flags is not None else []),
            *((name, description) for name, (_, description) in self._entries.items()),
            ("help()", "this text"),
        ]
        width = max(len(name) for name, _ in rows)
        user = f", logged in as {who}" if who else ""
        lines = [
            f"bluegreen {__version__} manhole{user}: Python inside the running proxy.",
            "Everything runs on the reactor thread: a slow expression stops "
            "all proxying.",
            "",
            *(f"  {name:<{width}}  {description}" for name, description in rows),
            "",
            "Ctrl-D logs out.",
        ]
        return Text("\n".join(lines))

    def banner(self, who: str) -> str:
        """
        @param who: The logged-in user.
        @return: The first lines of a session.
        """
        return (
            f"bluegreen {__version__} manhole, logged in as {who}; "
            "type help() for the names, Ctrl-D to log out."
        )
