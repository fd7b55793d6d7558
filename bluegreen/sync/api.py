# -*- test-case-name: tests.test_syncservice -*-
"""
The database sync endpoints of the admin API (see L{bluegreen.admin.api} and
L{bluegreen.sync.service})::

    GET  /api/sync   the last sync of each direction, the running one and
                     the mirror's lag (the status' C{sync} section)
    POST /api/sync   {"from": "green", "to": "blue", "strategy": "migrate",
                     "dry_run": false, "who": "...",
                     "on_conflict": "keep-target"}: sync now and answer
                     {"report": <the report>, "sync": <as GET>} (200 also
                     when the sync was incomplete or failed: the report's
                     "complete" and "error" say so)

Errors: 400 bad body (unknown environment or strategy, same environment
twice), 401 without the token (when one is set), 409 "a sync is already
running" (one asked for here, by the CLI or the manhole; a running mirror
pass is waited for instead) or no databases configured, 503 the service is
stopping.
"""

from __future__ import annotations

from typing import Any

from bluegreen.admin.api import AdminResource
from bluegreen.admin.jsonapi import AdminError, Call, JSONObject, checkFields
from bluegreen.admin.routes import Endpoint
from bluegreen.sync.service import SyncBusy, SyncService, SyncUnavailable

#: The longest C{who}.
MAX_WHO = 200

#: Why a sync is refused when there are no databases.
NO_DATABASES = "no databases configured (start bluegreen with --green-db and --blue-db)"


def mountSync(admin: AdminResource, sync: SyncService | None) -> Endpoint:
    """
    Serve C{/api/sync} on C{admin}; also without a sync service, so that a
    sync is refused with the reason rather than a 404.

    @param admin: The admin API.
    @param sync: The sync service, or L{None}.
    @return: The new C{/api/sync} resource.
    """
    api = SyncAPI(admin, sync)
    endpoint = Endpoint(admin, {b"GET": api.get, b"POST": api.post})
    admin.children[b"api"].putChild(b"sync", endpoint)
    return endpoint


class SyncAPI:
    """
    The handlers of C{/api/sync}.

    @ivar admin: The admin API.
    @ivar sync: The sync service, or L{None} (no databases).
    """

    def __init__(self, admin: AdminResource, sync: SyncService | None) -> None:
        """
        @param admin: The admin API.
        @param sync: The sync service, or L{None} (no databases).
        """
        self.admin = admin
        self.sync = sync

    def get(self, call: Call) -> JSONObject:
        """
        C{GET /api/sync}.
        """
        if self.sync is None:
            return {
                "mode": "none",
                "databases": {},
                "running": [],
                "last": {},
                "mirror": None,
            }
        return self.sync.status()

    async def post(self, call: Call) -> JSONObject:
        """
        C{POST /api/sync}.

        @raise AdminError: See the module docstring.
        """
        checkFields(
            call.body,
            required={"from": str, "to": str},
            optional={
                "strategy": str,
                "dry_run": bool,
                "who": str,
                "on_conflict": str,
            },
        )
        body: dict[str, Any] = call.body
        who = f"admin API from {call.client}"
        extra = body.get("who", "").strip()
        if extra:
            if len(extra) > MAX_WHO or not extra.isprintable():
                raise AdminError(
                    400,
                    f"field 'who' must be at most {MAX_WHO} printable characters",
                )
            who += f" ({extra})"
        if self.sync is None:
            raise AdminError(409, NO_DATABASES)
        try:
            report = await self.sync.sync(
                body["from"],
                body["to"],
                body.get("strategy"),
                dryRun=body.get("dry_run", False),
                who=who,
                onConflict=body.get("on_conflict"),
            )
        except ValueError as e:
            raise AdminError(400, str(e)) from None
        except SyncBusy as e:
            raise AdminError(409, str(e)) from None
        except SyncUnavailable as e:
            raise AdminError(503, str(e)) from None
        return {"report": report.asJSON(), "sync": self.sync.status()}
