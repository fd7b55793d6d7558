# -*- test-case-name: tests.test_flags_api -*-
"""
The feature flag endpoints of the admin API (see L{bluegreen.flags}).

::

    GET    /api/flags                  every flag in every environment: the
                                       service's cache, with each
                                       environment's Redis, whether it is
                                       reachable and whether the values are
                                       stale (the C{flags} section of
                                       C{GET /api/status})
    GET    /api/flags/history          the recorded changes, newest first:
                                       C{?env=blue} (default: every
                                       environment), C{&limit=50} (1-1000)
    GET    /api/flags/{name}           one flag in each environment with a
                                       Redis (C{?env=blue}: in that one),
                                       read from Redis: any string key
    PUT    /api/flags/{name}           C{{"env": "blue", "value": "ON"}}: set
                                       it; optional C{"normalise": true}
                                       (C{on}/C{off}/C{true}/C{1}... become
                                       C{ON}/C{OFF}) and C{"who": "CLI user
                                       alice"} (added to the history's who)
    DELETE /api/flags/{name}?env=blue  remove it (optional body
                                       C{{"who": "..."}})

C{PUT} and C{DELETE} change one environment each (C{"green"} or
C{"blue"}, never both at once: C{bluegreen flag set --env all} makes one
call per environment).  The value is stored exactly as given (a string of
at most L{bluegreen.flags.model.MAX_VALUE} bytes) unless C{"normalise"} asks for
C{ON}/C{OFF}.  Each change is recorded with who made it: C{admin API from
<client>}, followed by the body's C{who} in parentheses if there is one.
A flag named C{history} can be changed with C{PUT}/C{DELETE} like any
other, and read from C{GET /api/flags} (C{GET /api/flags/history} is the
history).

The answers are JSON, errors C{{"error": "..."}} as in the rest of the API:
400 for an invalid name or value, an unknown environment, a bad body or
query; 401 without the token (when C{--admin-token-file} is set: like
C{POST /api/switch}, C{PUT} and C{DELETE} need it); 409 for an environment
that has no Redis (C{"blue has no Redis (start bluegreen with --blue-redis
URL)"}: the service runs without flags there, which is not an error, but
a change there cannot be made); 503 when the environment's Redis cannot be
reached (C{"cannot reach Redis for blue at redis://...: connection
refused"}); reads never fail for that: they answer from the cache and say
it is stale.  C{GET /api/flags} never waits on Redis; C{GET
/api/flags/{name}} asks Redis (at most C{--redis-timeout} seconds each) so
that it also shows keys bluegreen never wrote (C{redis-cli SET FOO 007}).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, cast

from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Request

from bluegreen.admin.api import AdminResource
from bluegreen.admin.jsonapi import (
    AdminError,
    Call,
    JSONObject,
    checkFields,
    errorsAnswered,
)
from bluegreen.admin.routes import Endpoint, NotFound
from bluegreen.flags.model import (
    HISTORY_LIMIT,
    FlagChange,
    FlagError,
    NoRedis,
    RedisUnavailable,
    normalise,
    validateName,
    validateValue,
)
from bluegreen.flags.service import FlagService, noRedisEntry

#: The most changes C{GET /api/flags/history} returns.
MAX_LIMIT = HISTORY_LIMIT

#: The changes C{GET /api/flags/history} returns unless told otherwise.
DEFAULT_LIMIT = 50

#: The longest C{"who"} a client may add to the history.
MAX_WHO = 200

_log = Logger(namespace="bluegreen.admin")


def mountFlags(admin: AdminResource, flags: FlagService | None) -> FlagsResource:
    """
    Serve C{/api/flags} on C{admin}; also without a flag service (no
    C{--green-redis} nor C{--blue-redis}), so that a change is refused with
    the reason rather than a 404.

    @param admin: The admin API.
    @param flags: The flag service, or L{None}.
    @return: The new C{/api/flags} resource.
    """
    resource = FlagsResource(admin, flags)
    admin.children[b"api"].putChild(b"flags", resource)
    return resource


def _emptyTable(environments: Mapping[str, Any]) -> JSONObject:
    """
    @return: The flag table of a service with no Redis at all.
    """
    return {
        "environments": {name: noRedisEntry() for name in environments},
        "names": [],
    }


class FlagsResource(Resource):
    """
    C{/api/flags} and what is below it.

    @ivar admin: The admin API (its token, its environments).
    @ivar flags: The flag service, or L{None} when no environment has Redis.
    """

    def __init__(self, admin: AdminResource, flags: FlagService | None) -> None:
        """
        @param admin: The admin API.
        @param flags: The flag service, if any.
        """
        super().__init__()
        self.admin = admin
        self.flags = flags
        self._table = Endpoint(admin, {b"GET": self.table})
        self._history = Endpoint(admin, {b"GET": self.history})

    def getChild(self, path: bytes, request: IRequest) -> Resource:
        """
        C{/api/flags/history} or C{/api/flags/{name}}.
        """
        if not path:
            return NotFound()
        if path == b"history" and request.method in (b"GET", b"HEAD"):
            return self._history
        try:
            name = path.decode("utf-8")
        except UnicodeDecodeError:
            name = path.decode("latin-1")
        return Endpoint(
            self.admin,
            {
                b"GET": functools.partial(self.get, name),
                b"PUT": functools.partial(self.put, name),
                b"DELETE": functools.partial(self.delete, name),
            },
        )

    def render(self, request: IRequest) -> int:
        """
        C{/api/flags} itself: the table.
        """
        # Resources are handed twisted.web.server.Request objects; the
        # endpoint reads their body and channel, which IRequest does not name.
        result: int = self._table.render(cast(Request, request))
        return result

    # Checking requests

    def _environment(self, env: str) -> str:
        """
        @return: C{env}, a known environment.
        @raise AdminError: 400 otherwise.
        """
        environments = self.admin.controller.environments
        if env not in environments:
            raise AdminError(
                400,
                f"unknown environment {env!r}; expected {' or '.join(environments)}",
            )
        return env

    def _query(
        self, call: Call, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, str]:
        """
        Read the query's parameters: each at most once, only C{allowed} ones.

        @return: The parameters given.
        @raise AdminError: 400 naming the first problem.
        """
        args: dict[bytes, list[bytes]] = call.request.args or {}
        query: dict[str, str] = {}
        for raw, values in args.items():
            key = raw.decode("utf-8", "replace")
            if key not in allowed:
                expected = ", ".join(repr(name) for name in allowed) or "none"
                raise AdminError(
                    400, f"unknown query parameter {key!r} (expected: {expected})"
                )
            if len(values) != 1:
                raise AdminError(400, f"query parameter {key!r} given more than once")
            try:
                query[key] = values[0].decode("utf-8")
            except UnicodeDecodeError:
                raise AdminError(400, f"query parameter {key!r} is not UTF-8") from None
        for key in required:
            if key not in query:
                raise AdminError(
                    400, f"missing query parameter {key!r} (e.g. ?{key}=blue)"
                )
        return query

    def _name(self, name: str) -> str:
        """
        @return: C{name}, a valid flag name.
        @raise AdminError: 400 otherwise, with the reason.
        """
        try:
            return validateName(name)
        except FlagError as e:
            raise AdminError(400, str(e)) from None

    def _who(self, call: Call) -> str:
        """
        @return: Who makes the change, for the history: C{admin API from
            <client>}, and the body's C{who} in parentheses if given.
        @raise AdminError: 400 for an unusable C{who}.
        """
        who = f"admin API from {call.client}"
        extra = call.body.get("who")
        if extra is None:
            return who
        assert isinstance(extra, str)
        extra = extra.strip()
        if not extra:
            return who
        if len(extra) > MAX_WHO or not extra.isprintable():
            raise AdminError(
                400,
                f"field 'who' must be at most {MAX_WHO} printable characters",
            )
        return f"{who} ({extra})"

    def _service(self, env: str) -> FlagService:
        """
        @return: The flag service.
        @raise NoRedis: If there is none (no environment has Redis).
        """
        if self.flags is None:
            raise NoRedis(env)
        return self.flags

    # The endpoints

    def table(self, call: Call) -> JSONObject:
        """
        C{GET /api/flags}: the flag table (never waits on Redis).
        """
        self._query(call, ())
        if self.flags is None:
            return _emptyTable(self.admin.controller.environments)
        return dict(self.flags.table())

    async def get(self, name: str, call: Call) -> JSONObject:
        """
        C{GET /api/flags/{name}}: the flag in each environment that has
        Redis, or in C{?env=}, read from Redis (any string key, also one
        bluegreen never wrote); from the cache, marked stale, where Redis
        cannot be reached.

        @return: C{{"flag": name, "environments": {env: {"value", "on",
            "stale"}}}}; C{value} is L{None} for a flag that is not set.
        @raise AdminError: 400 for a bad name or environment; 409 for
            C{?env=} an environment without Redis.
        """
        query = self._query(call, ("env",))
        name = self._name(name)
        wanted = (
            [self._environment(query["env"])]
            if "env" in query
            else list(self.admin.controller.environments)
        )
        environments: JSONObject = {}
        for env in wanted:
            try:
                view = await self._service(env).read(env, name)
            except NoRedis as e:
                if "env" in query:
                    raise AdminError(409, str(e)) from None
                continue
            environments[env] = {
                "value": view.value,
                "on": view.on,
                "stale": view.stale,
            }
        return {"flag": name, "environments": environments}

    async def put(self, name: str, call: Call) -> JSONObject:
        """
        C{PUT /api/flags/{name}}: C{{"env": "blue", "value": "ON"}}.

        @return: C{{"change": ..., "flags": <the table>}}.
        """
        self._query(call, ())
        checkFields(
            call.body,
            required={"env": str, "value": str},
            optional={"normalise": bool, "who": str},
        )
        env = self._environment(call.body["env"])
        name = self._name(name)
        value: str = call.body["value"]
        if call.body.get("normalise"):
            try:
                value = normalise(value)
            except FlagError:
                raise AdminError(
                    400,
                    f'{value!r} is not on or off (leave out "normalise" to '
                    "store any value as it is)",
                ) from None
        try:
            validateValue(value)
        except FlagError as e:
            raise AdminError(400, str(e)) from None
        who = self._who(call)
        return await self._change(call, env, name, value, who)

    async def delete(self, name: str, call: Call) -> JSONObject:
        """
        C{DELETE /api/flags/{name}?env=blue}.

        @return: C{{"change": ..., "flags": <the table>}}.
        """
        query = self._query(call, ("env",), ("env",))
        checkFields(call.body, optional={"who": str})
        env = self._environment(query["env"])
        name = self._name(name)
        who = self._who(call)
        return await self._change(call, env, name, None, who)

    async def _change(
        self, call: Call, env: str, name: str, value: str | None, who: str
    ) -> JSONObject:
        """
        Set (or, for C{value} L{None}, remove) a flag and log it.

        @raise AdminError: 400, 409 or 503 with the reason.
        """
        with errorsAnswered({NoRedis: 409, FlagError: 400, RedisUnavailable: 503}):
            service = self._service(env)
            change: FlagChange
            if value is None:
                change = await service.unset(env, name, who)
            else:
                change = await service.set(env, name, value, who)
        _log.info(
            "admin API from {client}: flag {flag} in {env}: {old} -> {new}",
            client=call.client,
            flag=name,
            env=env,
            old=_show(change.old),
            new=_show(change.new),
            who=who,
            event="admin-flag",
        )
        return {"change": change.asJSON(), "flags": dict(service.table())}

    async def history(self, call: Call) -> JSONObject:
        """
        C{GET /api/flags/history?env=blue&limit=50}: the recorded changes,
        newest first.

        @raise AdminError: 400 for a bad query, 409 for C{env} without
            Redis, 503 if a Redis cannot be reached.
        """
        query = self._query(call, ("env", "limit"))
        env = self._environment(query["env"]) if "env" in query else None
        text = query.get("limit", str(DEFAULT_LIMIT))
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LIMIT):
            raise AdminError(
                400,
                f"limit must be a whole number from 1 to {MAX_LIMIT}, not {text!r}",
            )
        if self.flags is None:
            if env is not None:
                raise AdminError(409, str(NoRedis(env)))
            return {"history": []}
        with errorsAnswered({NoRedis: 409, RedisUnavailable: 503}):
            changes = await self.flags.history(env, int(text))
        return {"history": [change.asJSON() for change in changes]}


def _show(value: str | None) -> str:
    """
    @return: A value for the log: quoted, or C{unset}.
    """
    return "unset" if value is None else repr(value)
