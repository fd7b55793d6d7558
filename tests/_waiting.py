# -*- test-case-name: tests.test_proxy_integration -*-
# mypy: allow-untyped-calls
"""
Real-time waiting in the integration tests, every bound from L{PATIENCE}.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from tests._util import PATIENCE

#: The reactor every test here runs on (trial's real reactor).
reactor: Any = _reactor


def sleep(seconds: float) -> Deferred[None]:
    """
    A Deferred that fires after C{seconds}.
    """
    return deferLater(reactor, seconds)


def withTimeout(d: Deferred[Any], what: str, within: float = PATIENCE) -> Deferred[Any]:
    """
    C{d}, failed with an C{AssertionError} naming C{what} if it has not
    fired within C{within} seconds.

    @param d: What to wait for.
    @param what: What it is, for the failure message.
    @param within: The longest wait: L{PATIENCE} unless a test waits for
        something that has a deadline of its own (then that plus
        L{PATIENCE}).
    @return: A Deferred firing with C{d}'s result.
    """
    done: Deferred[Any] = Deferred()
    call = reactor.callLater(
        within,
        lambda: done.errback(AssertionError(f"{what}: not within {within:g} s")),
    )

    def fired(result: object) -> None:
        if call.active():
            call.cancel()
            done.callback(result)

    d.addBoth(fired)
    return done


async def stalled(
    count: Callable[[], int], what: str, quiet: float = 0.8, step: float = 0.05
) -> int:
    """
    Wait until C{count()} has stopped growing: unchanged for C{quiet}
    seconds (however long it takes to get there, up to L{PATIENCE}).

    A backpressure test uses it twice: once to see the writes stall, once
    more to see that nothing moves while the reader stays paused.

    @param count: Bytes written so far, say.
    @param what: What stalls, for the failure message.
    @param quiet: Seconds without change that count as stalled.
    @param step: Seconds between reads.
    @return: The value it stalled at.
    @raise AssertionError: It was still changing after L{PATIENCE} seconds.
    """
    deadline = time.monotonic() + PATIENCE
    value, since = count(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still moving after {PATIENCE:g} s")
        await deferLater(reactor, step)
        now = count()
        if now != value:
            value, since = now, time.monotonic()
    return value
