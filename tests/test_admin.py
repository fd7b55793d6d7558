# -*- test-case-name: tests.test_admin -*-
"""
Tests for L{bluegreen.admin.api}, L{bluegreen.admin.routes} and
L{bluegreen.admin.jsonapi}: the admin HTTP API, served by a real service
(see L{tests._admin}) on a free port of 127.0.0.1, in front of real backends.
"""

from __future__ import annotations

import hmac
from typing import Any

from twisted.trial.unittest import TestCase

from bluegreen import __version__
from tests._admin import (
    Answer,
    Running,
    assertBrokenStatus,
    assertHeadOnly,
    call,
    captureEvents,
    messages,
    rawExchange,
    startService,
)
from tests._util import waitFor

#: The endpoints, as the 404 message lists them.
TRY = (
    "(try GET /, GET /api/status, GET /api/events, POST /api/switch, "
    "POST /api/check, GET /api/flags, GET|PUT|DELETE /api/flags/{name}, "
    "GET /api/flags/history, GET|POST /api/sync, GET /metrics)"
)


async def postSwitch(
    running: Running,
    payload: Any = None,
    *,
    body: bytes | None = None,
    contentType: bytes | None = None,
    authorization: list[bytes] | None = None,
) -> Answer:
    """
    C{POST /api/switch} to the running service's admin API.

    @param payload: A JSON body (see L{call}).
    @param body: A raw body (see L{call}).
    @param contentType: The C{Content-Type} of a raw body.
    @param authorization: The C{Authorization} headers.
    """
    headers: dict[bytes, list[bytes]] = {}
    if contentType is not None:
        headers[b"content-type"] = [contentType]
    if authorization is not None:
        headers[b"authorization"] = authorization
    return await call(
        running.base + "/api/switch", "POST", body, headers, payload=payload
    )


class StatusTests(TestCase):
    """
    C{GET /api/status}.
    """

    async def test_status(self) -> None:
        """
        The status says what is live and why, each environment's URL and
        health (state, consecutive checks, last check's time, reason and
        latency), and the (empty) history.
        """
        running = await startService(self, blue=False)
        answer = await call(running.base + "/api/status")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.headers.getRawHeaders(b"cache-control"), [b"no-store"])
        status = answer.json
        self.assertEqual(
            {
                key: status[key]
                for key in ("version", "live", "why", "since", "mode", "history")
            },
            {
                "version": __version__,
                "live": "green",
                "why": "start",
                "since": None,
                "mode": "serving",
                "history": [],
            },
        )
        self.assertIsInstance(status["now"], float)
        self.assertEqual(list(status["environments"]), ["green", "blue"])
        green, blue = status["environments"]["green"], status["environments"]["blue"]
        self.assertEqual(
            (green["url"], green["live"], blue["url"], blue["live"]),
            (running.green.url, True, running.blue.url, False),
        )
        self.assertEqual(
            {key: green["health"][key] for key in ("state", "up", "successes")},
            {"state": "up", "up": True, "successes": 1},
        )
        self.assertEqual(
            {key: blue["health"][key] for key in ("state", "up", "failures")},
            {"state": "down", "up": False, "failures": 1},
        )
        last = green["health"]["lastCheck"]
        self.assertEqual(
            (last["ok"], last["reason"], last["status"], last["passive"]),
            (True, "status 200", 200, False),
        )
        self.assertLessEqual(last["when"], status["now"])
        self.assertGreaterEqual(last["latency"], 0)
        self.assertRegex(last["at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(blue["health"]["lastCheck"]["reason"], "connection refused")

    async def test_statusAfterSwitch(self) -> None:
        """
        After a switch, the status has it in the history, and says why the
        environment is live and since when.
        """
        running = await startService(self)
        record = running.service.controller.switch("blue", "deploy 42")
        status = (await call(running.base + "/api/status")).json
        self.assertEqual(
            (status["live"], status["why"], status["since"]),
            ("blue", "deploy 42", record.when),
        )
        [entry] = status["history"]
        self.assertEqual(
            {key: entry[key] for key in ("when", "from", "to", "reason")},
            {"when": record.when, "from": "green", "to": "blue", "reason": "deploy 42"},
        )

    async def test_head(self) -> None:
        """
        C{HEAD /api/status} answers like C{GET}, without the body.
        """
        await assertHeadOnly(self, "/api/status", b"application/json")

    async def test_statusProviders(self) -> None:
        """
        Sections added with L{AdminResource.addStatus} (what later features
        report, such as flags) appear in the status.
        """
        running = await startService(self)
        running.admin.addStatus("flags", lambda: {"newCheckout": True})
        status = (await call(running.base + "/api/status")).json
        self.assertEqual(status["flags"], {"newCheckout": True})

    async def test_statusNeedsNoToken(self) -> None:
        """
        Reading the status needs no token, even when changes do.
        """
        running = await startService(self, token="t0ken")
        answer = await call(running.base + "/api/status")
        self.assertEqual(answer.code, 200)

    async def test_internalError(self) -> None:
        """
        An unexpected exception is logged and answered with 500 and a JSON
        error that gives nothing away.
        """
        await assertBrokenStatus(self, "/api/status")


class SwitchTests(TestCase):
    """
    C{POST /api/switch}.
    """

    async def test_switch(self) -> None:
        """
        A switch to an environment that is up makes it live; the history
        says who asked, and so does the log.
        """
        events = captureEvents(self)
        running = await startService(self)
        answer = await postSwitch(running, {"to": "blue"})
        self.assertEqual(answer.code, 200)
        controller = running.service.controller
        self.assertEqual(controller.live.name, "blue")
        reason = "manual switch via admin API from 127.0.0.1"
        self.assertEqual(
            (controller.history[-1].reason, controller.why), (reason, reason)
        )
        body = answer.json
        self.assertEqual(
            {key: body["switched"][key] for key in ("from", "to", "reason")},
            {"from": "green", "to": "blue", "reason": reason},
        )
        self.assertEqual(body["status"]["live"], "blue")
        self.assertIn("admin API from 127.0.0.1: switch to blue", messages(events))

    async def test_alreadyLive(self) -> None:
        """
        A switch to the live environment is refused with 409 and the
        reason, which is logged.
        """
        events = captureEvents(self)
        running = await startService(self)
        answer = await postSwitch(running, {"to": "green"})
        self.assertEqual((answer.code, answer.error), (409, "green is already live"))
        self.assertEqual(running.service.controller.history, [])
        self.assertIn(
            "admin API from 127.0.0.1: switch to green refused: green is already live",
            messages(events),
        )

    async def test_targetDown(self) -> None:
        """
        A switch to an environment that is down is refused with 409, saying
        why it is down.
        """
        running = await startService(self, blue=False)
        answer = await postSwitch(running, {"to": "blue", "force": False})
        self.assertEqual(
            (answer.code, answer.error),
            (409, "blue is down (connection refused); use force to switch anyway"),
        )
        self.assertEqual(running.service.controller.live.name, "green")

    async def test_force(self) -> None:
        """
        With C{"force": true} a switch to an environment that is down is
        made, and the history says it was forced.
        """
        running = await startService(self, blue=False)
        answer = await postSwitch(running, {"to": "blue", "force": True})
        self.assertEqual(answer.code, 200)
        controller = running.service.controller
        self.assertEqual(
            (controller.live.name, controller.history[-1].reason),
            ("blue", "manual switch via admin API from 127.0.0.1, forced"),
        )

    async def test_forceAlreadyLive(self) -> None:
        """
        Forcing does not make a switch to the live environment happen.
        """
        running = await startService(self)
        answer = await postSwitch(running, {"to": "green", "force": True})
        self.assertEqual((answer.code, answer.error), (409, "green is already live"))

    async def test_unknownEnvironment(self) -> None:
        """
        An unknown environment is a bad request.
        """
        running = await startService(self)
        answer = await postSwitch(running, {"to": "purple"})
        self.assertEqual(
            (answer.code, answer.error),
            (400, "unknown environment 'purple'; expected green or blue"),
        )

    async def test_charset(self) -> None:
        """
        C{application/json} with parameters (a charset) is JSON too.
        """
        running = await startService(self)
        answer = await postSwitch(
            running,
            body=b'{"to": "blue"}',
            contentType=b"Application/JSON; charset=utf-8",
        )
        self.assertEqual(answer.code, 200)


class BadRequestTests(TestCase):
    """
    Bad bodies get 400 (or 415) with the reason, and change nothing.
    """

    async def assertBad(
        self,
        body: bytes,
        code: int,
        error: str,
        contentType: bytes | None = b"application/json",
        path: str = "/api/switch",
    ) -> None:
        """
        Assert that posting C{body} to C{path} is refused with C{code} and
        C{error}, and changes nothing.
        """
        running = await startService(self)
        headers = {} if contentType is None else {b"content-type": [contentType]}
        answer = await call(running.base + path, "POST", body=body, headers=headers)
        self.assertEqual((answer.code, answer.error), (code, error))
        self.assertEqual(running.service.controller.live.name, "green")

    async def test_malformed(self) -> None:
        """
        Malformed JSON.
        """
        await self.assertBad(
            b'{"to": "blue"',
            400,
            "malformed JSON: Expecting ',' delimiter: line 1 column 14 (char 13)",
        )

    async def test_notAnObject(self) -> None:
        """
        JSON that is not an object.
        """
        await self.assertBad(
            b'["blue"]', 400, "the body must be a JSON object, not array"
        )

    async def test_unknownField(self) -> None:
        """
        A field the call does not know.
        """
        await self.assertBad(
            b'{"to": "blue", "now": true}',
            400,
            "unknown field 'now' (expected: 'to', 'force')",
        )

    async def test_missingField(self) -> None:
        """
        A missing required field, or no body at all.
        """
        await self.assertBad(b'{"force": true}', 400, "missing field 'to'")

    async def test_noBody(self) -> None:
        """
        A switch without a body misses its C{to}.
        """
        await self.assertBad(b"", 400, "missing field 'to'", contentType=None)

    async def test_toNotAString(self) -> None:
        """
        C{to} must be a string.
        """
        await self.assertBad(
            b'{"to": 1}', 400, "field 'to' must be a string, not number"
        )

    async def test_forceNotABoolean(self) -> None:
        """
        C{force} must be a boolean: not a string, not a number.
        """
        await self.assertBad(
            b'{"to": "blue", "force": "yes"}',
            400,
            "field 'force' must be true or false, not string",
        )

    async def test_forceNumber(self) -> None:
        """
        C{1} is not C{true}.
        """
        await self.assertBad(
            b'{"to": "blue", "force": 1}',
            400,
            "field 'force' must be true or false, not number",
        )

    async def test_toBoolean(self) -> None:
        """
        A boolean is not a string either.
        """
        await self.assertBad(
            b'{"to": true}', 400, "field 'to' must be a string, not boolean"
        )

    async def test_nan(self) -> None:
        """
        C{NaN} is not JSON.
        """
        await self.assertBad(
            b'{"to": "blue", "force": NaN}',
            400,
            "malformed JSON: NaN is not valid JSON",
        )

    async def test_duplicateField(self) -> None:
        """
        A field given twice is refused rather than one of them picked.
        """
        await self.assertBad(
            b'{"to": "green", "to": "blue"}',
            400,
            "malformed JSON: duplicate field 'to'",
        )

    async def test_notUTF8(self) -> None:
        """
        JSON is UTF-8.
        """
        await self.assertBad(
            b'{"to": "\xff"}', 400, "malformed JSON: the body is not UTF-8"
        )

    async def test_form(self) -> None:
        """
        A form is not JSON: 415.
        """
        await self.assertBad(
            b"to=blue",
            415,
            "Content-Type must be application/json "
            "(got 'application/x-www-form-urlencoded')",
            contentType=b"application/x-www-form-urlencoded",
        )

    async def test_noContentType(self) -> None:
        """
        A body without a content type is refused too (415): a browser can
        send one cross-site without asking first.
        """
        await self.assertBad(
            b'{"to": "blue"}',
            415,
            "Content-Type must be application/json (got none)",
            contentType=None,
        )

    async def test_checkUnknownField(self) -> None:
        """
        C{POST /api/check} takes no fields.
        """
        await self.assertBad(
            b'{"all": true}',
            400,
            "unknown field 'all' (expected: none)",
            path="/api/check",
        )


class CheckTests(TestCase):
    """
    C{POST /api/check}.
    """

    async def test_check(self) -> None:
        """
        The checks run at once (here the interval is 300 s) and the answer
        is the status once they are done: an environment that came up is
        seen up.
        """
        events = captureEvents(self)
        running = await startService(self, blue=False)
        running.blue.start()
        answer = await call(running.base + "/api/check", "POST")
        self.assertEqual(answer.code, 200)
        health = answer.json["environments"]["blue"]["health"]
        self.assertEqual(
            (health["state"], health["lastCheck"]["reason"]), ("up", "status 200")
        )
        self.assertTrue(running.service.health.isUp("blue"))
        self.assertIn(
            "admin API from 127.0.0.1: running the health checks now",
            messages(events),
        )
        self.assertIn(
            "admin API from 127.0.0.1: health checks done: green up (status 200), "
            "blue up (status 200)",
            messages(events),
        )

    async def test_emptyObject(self) -> None:
        """
        An empty JSON object is an empty body.
        """
        running = await startService(self)
        answer = await call(running.base + "/api/check", "POST", payload={})
        self.assertEqual(answer.code, 200)

    async def test_notRunning(self) -> None:
        """
        When the health monitor is not running, the checks cannot be run:
        503.
        """
        running = await startService(self)
        await running.service.health.stopService()
        answer = await call(running.base + "/api/check", "POST")
        self.assertEqual(
            (answer.code, answer.error), (503, "health checks are not running")
        )

    async def test_clientLeaves(self) -> None:
        """
        A client that leaves while the checks run is not answered (and
        nothing fails).
        """
        events = captureEvents(self)
        running = await startService(self)
        checked = len(running.service.health.health["green"].history)
        await rawExchange(
            running.adminPort,
            b"POST /api/check HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
            close=True,
        )
        # The call is logged as done just before its answer would be
        # written, in the same turn of the reactor.
        await waitFor(
            lambda: any(e.get("event") == "admin-check-done" for e in events),
            "the checks of the call",
        )
        self.assertGreater(len(running.service.health.health["green"].history), checked)


class AuthorizationTests(TestCase):
    """
    With C{--admin-token-file}, changes need the token.
    """

    async def test_missing(self) -> None:
        """
        A switch without a token gets 401 (with C{WWW-Authenticate}), does
        not switch, and is logged.
        """
        events = captureEvents(self)
        running = await startService(self, token="t0ken")
        answer = await postSwitch(running, {"to": "blue"})
        self.assertEqual(
            (answer.code, answer.error), (401, "missing Authorization: Bearer <token>")
        )
        self.assertEqual(
            answer.headers.getRawHeaders(b"www-authenticate"),
            [b'Bearer realm="bluegreen admin"'],
        )
        self.assertEqual(running.service.controller.live.name, "green")
        self.assertIn(
            "admin API from 127.0.0.1: POST /api/switch refused: missing "
            "Authorization: Bearer <token>",
            messages(events),
        )

    async def test_wrong(self) -> None:
        """
        A wrong token gets 401.
        """
        running = await startService(self, token="t0ken")
        answer = await postSwitch(
            running, {"to": "blue"}, authorization=[b"Bearer t0kem"]
        )
        self.assertEqual((answer.code, answer.error), (401, "wrong token"))
        self.assertEqual(running.service.controller.live.name, "green")

    async def test_prefix(self) -> None:
        """
        A prefix of the token is a wrong token.
        """
        running = await startService(self, token="t0ken")
        answer = await postSwitch(
            running, {"to": "blue"}, authorization=[b"Bearer t0k"]
        )
        self.assertEqual((answer.code, answer.error), (401, "wrong token"))

    async def test_otherScheme(self) -> None:
        """
        Only the C{Bearer} scheme counts.
        """
        running = await startService(self, token="t0ken")
        answer = await postSwitch(
            running, {"to": "blue"}, authorization=[b"Basic dDBrZW4="]
        )
        self.assertEqual(
            (answer.code, answer.error), (401, "missing Authorization: Bearer <token>")
        )

    async def test_twoHeaders(self) -> None:
        """
        Two C{Authorization} headers are refused, even if one is right.
        """
        running = await startService(self, token="t0ken")
        answer = await postSwitch(
            running, {"to": "blue"}, authorization=[b"Bearer t0ken", b"Bearer x"]
        )
        self.assertEqual(
            (answer.code, answer.error), (401, "more than one Authorization header")
        )

    async def test_right(self) -> None:
        """
        With the right token (the scheme in any case) the switch is made;
        the token is compared in constant time.
        """
        compared: list[tuple[bytes, bytes]] = []
        real = hmac.compare_digest

        def compare(a: bytes, b: bytes) -> bool:
            compared.append((a, b))
            return real(a, b)

        self.patch(hmac, "compare_digest", compare)
        running = await startService(self, token="t0ken")
        answer = await postSwitch(
            running, {"to": "blue"}, authorization=[b"bearer t0ken"]
        )
        self.assertEqual(answer.code, 200)
        self.assertEqual(running.service.controller.live.name, "blue")
        self.assertEqual(len(compared), 1)

    async def test_checkNeedsToken(self) -> None:
        """
        Running the checks is a change too: it needs the token.
        """
        running = await startService(self, token="t0ken")
        answer = await call(running.base + "/api/check", "POST")
        self.assertEqual(answer.code, 401)
        answer = await call(
            running.base + "/api/check",
            "POST",
            headers={b"authorization": [b"Bearer t0ken"]},
        )
        self.assertEqual(answer.code, 200)

    async def test_tokenBeforeBody(self) -> None:
        """
        Without the token, a bad body is not even looked at: 401, not 400.
        """
        running = await startService(self, token="t0ken")
        answer = await postSwitch(running, body=b"{", contentType=b"application/json")
        self.assertEqual(answer.code, 401)


class RoutingTests(TestCase):
    """
    Unknown paths and wrong methods.
    """

    async def test_notFound(self) -> None:
        """
        Unknown paths get a JSON 404 listing the endpoints.
        """
        running = await startService(self)
        # (/ itself is the dashboard: see tests.test_dashboard.)
        for path in ("/api", "/api/", "/api/nope", "/api/status/", "/x/y"):
            answer = await call(running.base + path)
            self.assertEqual(
                (answer.code, answer.error),
                (404, f"not found: {path} {TRY}"),
                path,
            )

    async def test_notFoundPost(self) -> None:
        """
        Unknown paths are 404 for any method.
        """
        running = await startService(self)
        answer = await call(running.base + "/api/nope", "POST", payload={})
        self.assertEqual(answer.code, 404)

    async def test_methodNotAllowed(self) -> None:
        """
        A wrong method gets a JSON 405 with C{Allow}.
        """
        running = await startService(self)
        for method, path, allow in [
            ("GET", "/api/switch", b"POST"),
            ("GET", "/api/check", b"POST"),
            ("POST", "/api/status", b"GET, HEAD"),
            ("DELETE", "/api/status", b"GET, HEAD"),
            ("PUT", "/api/switch", b"POST"),
        ]:
            answer = await call(running.base + path, method)
            self.assertEqual(
                (answer.code, answer.error),
                (405, f"method {method} not allowed on {path}"),
            )
            self.assertEqual(answer.headers.getRawHeaders(b"allow"), [allow])
