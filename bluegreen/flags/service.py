# -*- test-case-name: tests.test_flags -*-
"""
L{FlagService}: the flags of every environment, one L{FlagStore} for each
environment that has a Redis (C{--green-redis URL}, C{--blue-redis URL}).

Observers (L{FlagService.subscribe}) are told of every change seen: those
made through this service, those other bluegreens publish (with their
C{who}), and values found changed in Redis by notifications or refreshes
(C{who} is then L{bluegreen.flags.model.OUTSIDE}).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorTCP
from twisted.logger import Logger

from bluegreen.flags.model import (
    DEFAULT_NAMES,
    HISTORY_LIMIT,
    ChangeObserver,
    FlagChange,
    FlagError,
    FlagView,
    NoRedis,
    RedisUnavailable,
    isOn,
    validateName,
    validateValue,
)
from bluegreen.flags.store import FlagStore
from bluegreen.flags.target import RedisTarget, TrustRoot
from bluegreen.observers import tellObservers


def noRedisEntry() -> dict[str, Any]:
    """
    @return: The L{FlagService.table} entry of an environment without Redis.
    """
    return {
        "redis": None,
        "connected": False,
        "stale": False,
        "error": None,
        "updated": None,
        "flags": {},
    }


class FlagService(MultiService):
    """
    The flags of every environment that has a Redis (one L{FlagStore} each,
    child services).

    @ivar environments: Every environment's name, with a Redis or not.
    @ivar stores: The stores, by environment name.
    @ivar configured: The names given with C{--flag}.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTCP,
        targets: Mapping[str, RedisTarget | None],
        names: Iterable[str] = DEFAULT_NAMES,
        timeout: float = 1.0,
        refresh: float = 30.0,
        trustRoot: TrustRoot | None = None,
    ) -> None:
        """
        @param reactor: The reactor (connections and time).
        @param targets: Each environment's Redis, or L{None} for none.
        @param names: The flags configured with C{--flag}.
        @param timeout: Seconds allowed for each Redis call.
        @param refresh: Seconds between full re-reads.
        @param trustRoot: The CA to trust for C{rediss://}.
        """
        super().__init__()
        self.environments = tuple(targets)
        self.configured = tuple(validateName(name) for name in names)
        self.stores: dict[str, FlagStore] = {}
        self._observers: list[ChangeObserver] = []
        for env, target in targets.items():
            if target is None:
                continue
            store = FlagStore(
                env,
                target,
                reactor,
                self.configured,
                timeout=timeout,
                refresh=refresh,
                trustRoot=trustRoot,
            )
            store.subscribe(self._changed)
            store.setServiceParent(self)
            self.stores[env] = store

    def __repr__(self) -> str:
        """
        The stores.
        """
        return f"<FlagService {sorted(self.stores.values(), key=lambda s: s.env)!r}>"

    def store(self, env: str) -> FlagStore:
        """
        The store of C{env}.

        @raise FlagError: For an unknown environment.
        @raise NoRedis: If C{env} has no Redis.
        """
        if env not in self.environments:
            raise FlagError(
                f"unknown environment {env!r}; expected "
                + " or ".join(self.environments)
            )
        store = self.stores.get(env)
        if store is None:
            raise NoRedis(env)
        return store

    def subscribe(self, observer: ChangeObserver) -> None:
        """
        Call C{observer(change)} with every L{FlagChange} any store sees.
        """
        self._observers.append(observer)

    def _changed(self, change: FlagChange) -> None:
        """
        Pass a store's change on to every observer.
        """
        # A copy: an observer may unsubscribe while being told.
        tellObservers(list(self._observers), self._log, "flag", change)

    @property
    def names(self) -> list[str]:
        """
        Every flag name known in any environment (and those configured),
        sorted.
        """
        names = set(self.configured)
        for store in self.stores.values():
            names.update(store.names)
        return sorted(names)

    async def read(self, env: str, name: str) -> FlagView:
        """
        A flag in one environment as its Redis has it now (any string key,
        also one bluegreen never wrote), or from the cache, marked stale, if
        that Redis cannot be reached.

        @raise FlagError: For an unknown environment or an invalid name.
        @raise NoRedis: If C{env} has no Redis.
        """
        return await self.store(env).read(name)

    def view(self, env: str, name: str) -> FlagView:
        """
        A flag in one environment, from the cache (never waits).

        @raise FlagError: For an unknown environment.
        @raise NoRedis: If C{env} has no Redis.
        """
        return self.store(env).view(name)

    def flagsFor(self, env: str) -> dict[str, str]:
        """
        For C{--stamp-flags}: C{"on"} or C{"off"} for every flag of C{env},
        from the cache (never waits); C{{}} for an environment without a
        Redis.
        """
        store = self.stores.get(env)
        if store is None:
            return {}
        values = store.values
        return {name: "on" if isOn(values.get(name)) else "off" for name in store.names}

    def table(self) -> dict[str, Any]:
        """
        Every environment's flags, JSON-ready::

            {"environments": {env: {"redis": URL or None, "connected": bool,
                                    "stale": bool, "error": str or None,
                                    "updated": float or None,
                                    "flags": {name: value}}},
             "names": [every name, sorted]}

        (URLs without their password; C{flags} holds the flags that are
        set; an environment without a Redis has C{"redis": None}.)
        """
        environments: dict[str, Any] = {}
        for env in self.environments:
            store = self.stores.get(env)
            if store is None:
                environments[env] = noRedisEntry()
                continue
            environments[env] = {
                "redis": store.target.describe(),
                "connected": store.connected,
                "stale": store.stale,
                "error": store.error,
                "updated": store.updated,
                "flags": store.cached(),
            }
        return {"environments": environments, "names": self.names}

    async def set(self, env: str, name: str, value: str, who: str) -> FlagChange:
        """
        Set a flag in one environment (see L{FlagStore.set}).

        @raise FlagError: For an invalid name, value or environment.
        @raise NoRedis: If C{env} has no Redis.
        @raise RedisUnavailable: If its Redis cannot be reached.
        """
        validateName(name)
        validateValue(value)
        return await self.store(env).set(name, value, who)

    async def unset(self, env: str, name: str, who: str) -> FlagChange:
        """
        Remove a flag from one environment (see L{FlagStore.unset}).

        @raise FlagError: For an invalid name or environment.
        @raise NoRedis: If C{env} has no Redis.
        @raise RedisUnavailable: If its Redis cannot be reached.
        """
        validateName(name)
        return await self.store(env).unset(name, who)

    async def history(self, env: str | None, limit: int = 50) -> list[FlagChange]:
        """
        The recorded changes, newest first.

        @param env: One environment, or L{None} for all (merged; those whose
            Redis cannot be reached are left out, unless none can be).
        @param limit: How many at most (1 to L{HISTORY_LIMIT}).
        @raise FlagError: For an unknown environment or a bad limit.
        @raise NoRedis: If C{env} has no Redis.
        @raise RedisUnavailable: If C{env}'s Redis (or, for all, every
            Redis) cannot be reached.
        """
        if env is not None:
            return await self.store(env).history(limit)
        if not 1 <= limit <= HISTORY_LIMIT:
            raise FlagError(f"limit {limit} is not between 1 and {HISTORY_LIMIT}")
        merged: list[FlagChange] = []
        failures: list[RedisUnavailable] = []
        for store in self.stores.values():
            try:
                merged.extend(await store.history(limit))
            except RedisUnavailable as e:
                failures.append(e)
        if failures and len(failures) == len(self.stores):
            raise failures[0]
        merged.sort(key=lambda change: change.when, reverse=True)
        return merged[:limit]
