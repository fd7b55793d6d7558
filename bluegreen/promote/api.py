# -*- test-case-name: tests.test_promote_integration,tests.test_promote -*-
"""
The deployment workflow's endpoints of the admin API (see
L{bluegreen.admin.api})::

    POST /api/promote   {"force": false}: run the promotion checks against
                        the standby and switch to it if all pass; 409 naming
                        each failed check and what it got (or why else the
                        switch is refused)
    POST /api/verify    run the checks against the standby, switch nothing:
                        {"verification": ..., "status": ...}
    POST /api/deployed  {"env": "blue", "revision": "a1b2c3", "message":
                        "fix votes"}: record what an environment runs now

and L{RevisionMetrics}: C{bluegreen_revision_info{env, revision}} (1 for
each environment whose revision was reported).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from bluegreen.admin.api import AdminResource
from bluegreen.admin.jsonapi import AdminError, Call, JSONObject, checkFields
from bluegreen.admin.routes import Endpoint
from bluegreen.controller import Controller, SwitchRefused, UnknownEnvironment
from bluegreen.promote.promoter import Promoter
from bluegreen.timetext import isoTime

#: The longest revision and message accepted.
MAX_REVISION = 100
MAX_MESSAGE = 200


def mountPromotion(admin: AdminResource, promoter: Promoter) -> None:
    """
    Serve C{/api/promote}, C{/api/verify} and C{/api/deployed} on C{admin},
    and add the C{promotion} section to its status.

    @param admin: The admin API.
    @param promoter: The workflow's service.
    """
    api = PromotionAPI(admin, promoter)
    children = admin.children[b"api"]
    children.putChild(b"promote", Endpoint(admin, {b"POST": api.promote}))
    children.putChild(b"verify", Endpoint(admin, {b"POST": api.verify}))
    children.putChild(b"deployed", Endpoint(admin, {b"POST": api.deployed}))
    admin.addStatus("promotion", promoter.status)


class PromotionAPI:
    """
    The handlers of the workflow's endpoints.

    @ivar admin: The admin API.
    @ivar promoter: The workflow's service.
    """

    def __init__(self, admin: AdminResource, promoter: Promoter) -> None:
        """
        @param admin: The admin API.
        @param promoter: The workflow's service.
        """
        self.admin = admin
        self.promoter = promoter

    async def promote(self, call: Call) -> JSONObject:
        """
        C{POST /api/promote}.

        @raise AdminError: 409 if refused (a check failed, the standby is
            down, its database could not be synced).
        """
        checkFields(call.body, optional={"force": bool})
        force: bool = call.body.get("force", False)
        try:
            record, report = await self.promoter.promote(
                f"admin API from {call.client}", force=force
            )
        except (SwitchRefused, UnknownEnvironment) as e:
            raise AdminError(409, str(e)) from None
        last = self.promoter.verifier.last
        answer: JSONObject = {
            "switched": {
                "when": record.when,
                "at": isoTime(record.when),
                "from": record.source,
                "to": record.to,
                "reason": record.reason,
                "revision": record.revision,
            },
            "verification": None if force or last is None else last.asJSON(),
            "status": self.admin.status(),
        }
        if report is not None:
            answer["sync"] = report.asJSON()
        return answer

    async def verify(self, call: Call) -> JSONObject:
        """
        C{POST /api/verify}: the checks only.
        """
        checkFields(call.body)
        standby = self.promoter.controller.standby().name
        result = await self.promoter.verifier.run(standby)
        return {"verification": result.asJSON(), "status": self.admin.status()}

    def deployed(self, call: Call) -> JSONObject:
        """
        C{POST /api/deployed}.

        @raise AdminError: 400 for an unknown environment, or a revision or
            message that is too long or not printable.
        """
        checkFields(
            call.body,
            required={"env": str, "revision": str},
            optional={"message": str},
        )
        body: dict[str, Any] = call.body
        revision = body["revision"].strip()
        message = body.get("message", "").strip()
        if not revision or len(revision) > MAX_REVISION or not revision.isprintable():
            raise AdminError(
                400,
                f"field 'revision' must be 1 to {MAX_REVISION} printable characters",
            )
        if len(message) > MAX_MESSAGE or not message.isprintable():
            raise AdminError(
                400,
                f"field 'message' must be at most {MAX_MESSAGE} printable characters",
            )
        try:
            self.promoter.controller.deployed(body["env"], revision, message)
        except UnknownEnvironment as e:
            raise AdminError(400, str(e)) from None
        return self.admin.status()


class RevisionMetrics:
    """
    C{bluegreen_revision_info{env, revision}}: a collector for
    L{bluegreen.admin.metrics.Metrics.register}, read from the controller
    when scraped.

    @ivar controller: Holds the revisions.
    """

    def __init__(self, controller: Controller) -> None:
        """
        @param controller: Holds the revisions.
        """
        self.controller = controller

    def describe(self) -> Iterable[Any]:
        """
        The metric family, without samples.
        """
        return [_family()]

    def collect(self) -> Iterable[Any]:
        """
        The family with a sample per environment whose revision is known.
        """
        family = _family()
        for name, running in sorted(self.controller.revisions.items()):
            family.add_metric([name, running.revision], 1)
        return [family]


def _family() -> GaugeMetricFamily:
    """
    @return: C{bluegreen_revision_info}, empty.
    """
    return GaugeMetricFamily(
        "bluegreen_revision_info",
        "The revision each environment runs, as last reported (always 1).",
        labels=["env", "revision"],
    )
