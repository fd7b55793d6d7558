# -*- test-case-name: tests.test_fleet -*-
"""
The state several instances share (L{FleetState}), and how each recorded
switch (L{SharedSwitch}) is written in Redis: one JSON object per switch,
in the order of the generations.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen

from bluegreen.controller import Switch

#: Every key and the channel start with it.
PREFIX = "bluegreen:fleet:"

#: The hash of the live colour, the generation and why.
STATE_KEY = PREFIX + "state"

#: The list of recorded switches (JSON), oldest first.
HISTORY_KEY = PREFIX + "history"

#: Held (the instance's name) while an instance syncs before its switch.
SYNC_KEY = PREFIX + "sync"

#: Seconds the sync claim lasts if its holder never releases it (it died).
SYNC_CLAIM = 600.0

#: The channel every switch is announced on.
CHANNEL = PREFIX + "switches"

#: Switches kept in the shared history (older ones are dropped).
HISTORY_LIMIT = 200


class BadRecord(ValueError):
    """
    A record or message in Redis that is not what bluegreen writes.
    """


@frozen
class SharedSwitch:
    """
    One switch as every instance records it.

    @ivar generation: The generation it made (the first switch makes 1).
    @ivar when: POSIX time of the switch.
    @ivar source: The environment live before.
    @ivar to: The environment live after.
    @ivar reason: Why.
    @ivar kind: C{failover}, C{recovered}, C{failback} or C{manual}.
    @ivar instance: The instance that won the switch.
    """

    generation: int
    when: float
    source: str
    to: str
    reason: str
    kind: str
    instance: str

    def asSwitch(self) -> Switch:
        """
        @return: The controller's record of it.
        """
        return Switch(
            when=self.when, source=self.source, to=self.to, reason=self.reason
        )

    def asJSON(self) -> dict[str, Any]:
        """
        @return: Its fields, for Redis and C{/api/status}.
        """
        return {
            "generation": self.generation,
            "when": self.when,
            "source": self.source,
            "to": self.to,
            "reason": self.reason,
            "kind": self.kind,
            "instance": self.instance,
        }

    def encode(self) -> str:
        """
        @return: The JSON text kept in the history list.
        """
        return json.dumps(self.asJSON(), sort_keys=True)

    @classmethod
    def decode(cls, text: str) -> SharedSwitch:
        """
        Read a record of the history list.

        @raise BadRecord: If it is not one.
        """
        try:
            data = json.loads(text)
            return cls(
                generation=_integer(data["generation"]),
                when=float(data["when"]),
                source=str(data["source"]),
                to=str(data["to"]),
                reason=str(data["reason"]),
                kind=str(data.get("kind", "manual")),
                instance=str(data.get("instance", "")),
            )
        except (ValueError, TypeError, KeyError) as e:
            raise BadRecord(f"not a switch record: {text[:80]!r} ({e})") from None


@frozen
class FleetState:
    """
    The shared state as one instance last read or followed it.

    @ivar live: The live environment.
    @ivar generation: How many switches were made through Redis (C{0}
        before the first).
    @ivar history: The recorded switches, oldest first (at most
        L{HISTORY_LIMIT}).
    """

    live: str
    generation: int
    history: tuple[SharedSwitch, ...] = ()

    @property
    def why(self) -> str:
        """
        Why the live environment is live: the last switch's reason.
        """
        return self.history[-1].reason if self.history else "start"

    def followed(self, record: SharedSwitch) -> FleetState:
        """
        @return: The state after C{record} (the next generation).
        """
        history = (*self.history, record)[-HISTORY_LIMIT:]
        return FleetState(record.to, record.generation, history)


def _integer(value: object) -> int:
    """
    An integer field.

    @raise ValueError: If C{value} is not one.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


def parseGeneration(value: object) -> int:
    """
    A generation as Redis gives it (an integer or its text).

    @raise BadRecord: If it is not one.
    """
    try:
        return _integer(value)
    except ValueError as e:
        raise BadRecord(str(e)) from None
