# -*- test-case-name: tests.test_metrics,tests.test_flags -*-
"""
Telling observers: the controller's switch observers, the health monitor's
check observers and the flag services' change observers are all told the
same way, so that one that fails cannot keep the others from hearing.

A neutral module (it imports nothing of bluegreen), so any component can use
it without loading another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ParamSpec

from twisted.logger import Logger

P = ParamSpec("P")


def tellObservers(
    observers: Iterable[Callable[P, object]],
    log: Logger,
    what: str,
    *args: P.args,
    **kwargs: P.kwargs,
) -> None:
    """
    Call every observer with the same arguments; one that raises is logged
    (C{"<what> observer {observer!r} failed"}) and the rest are called all
    the same.

    @param observers: The observers, in order (pass a copy if one may
        subscribe or unsubscribe while being told).
    @param log: Where a failing observer is logged.
    @param what: What they observe, for the log (e.g. C{"switch"}).
    @param args: The positional arguments of every call.
    @param kwargs: The keyword arguments of every call.
    """
    for observer in observers:
        try:
            observer(*args, **kwargs)
        except Exception:
            log.failure(what + " observer {observer!r} failed", observer=observer)
