# -*- test-case-name: tests.test_admin -*-
"""
The admin API's paths: twisted.web's own resource tree (C{putChild},
C{getChild}) with two kinds of leaves of ours, an L{Endpoint} per API path
and the JSON L{NotFound} for everything else.

An L{Endpoint} maps each method to a handler that takes a L{Call} and
returns JSON; it answers a wrong method with a JSON 405 and C{Allow}, checks
the token of every method but C{GET}/C{HEAD}, reads the JSON body, and turns
an L{AdminError} into its JSON answer.  Components mount their endpoints
below C{/api} (C{/api/flags} by L{bluegreen.flags.api}, C{/api/sync} by
L{bluegreen.sync.api}).
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from bluegreen.admin.jsonapi import (
    AdminError,
    Call,
    Handler,
    clientOf,
    parseBody,
    writeJSON,
)

#: The endpoints, for the 404 message.
ENDPOINTS = (
    "GET /, GET /api/status, GET /api/events, POST /api/switch, POST /api/check, "
    "GET /api/flags, GET|PUT|DELETE /api/flags/{name}, GET /api/flags/history, "
    "GET|POST /api/sync, "
    "GET /metrics"
)

_log = Logger(namespace="bluegreen.admin")


class Authorizer(Protocol):
    """
    What checks the token of a call that changes something (the admin API,
    L{bluegreen.admin.api.AdminResource}).
    """

    def authorize(self, request: Request) -> None:
        """
        Check C{request}'s credentials.

        @param request: The request.
        @raise AdminError: 401 if they are missing or wrong.
        """


class NotFound(Resource):
    """
    A JSON 404 for any method, listing the endpoints.
    """

    isLeaf = True

    def render(self, request: Request) -> int:
        """
        Answer 404.

        @param request: The request.
        @return: L{NOT_DONE_YET} (the answer is written).
        """
        path = request.path.decode("latin-1")
        writeJSON(request, 404, {"error": f"not found: {path} (try {ENDPOINTS})"})
        return NOT_DONE_YET


class Directory(Resource):
    """
    A resource whose only content is its children (C{/api}): itself and
    anything else below it is a JSON 404.
    """

    def getChild(self, path: bytes, request: Request) -> Resource:
        """
        Anything but the children is not found.

        @param path: The path segment.
        @param request: The request.
        @return: A L{NotFound}.
        """
        return NotFound()

    def render(self, request: Request) -> int:
        """
        The directory itself is not found either.

        @param request: The request.
        @return: L{NOT_DONE_YET} (the 404 is written).
        """
        return NotFound().render(request)


class Endpoint(Resource):
    """
    One API path: checks the method, the token (for all but C{GET}) and the
    body, calls the handler and answers with its JSON.

    @ivar authorizer: Checks the token of the calls that change something.
    @ivar handlers: The handler of each method.
    """

    isLeaf = True

    def __init__(self, authorizer: Authorizer, handlers: dict[bytes, Handler]) -> None:
        """
        @param authorizer: Checks the token (the admin API).
        @param handlers: The handler of each method (C{GET} also serves
            C{HEAD}; other methods need the token).
        """
        super().__init__()
        self.authorizer = authorizer
        self.handlers = handlers

    def render(self, request: Request) -> int:
        """
        Answer C{request} (asynchronously, if the handler is).

        @param request: The request.
        @return: L{NOT_DONE_YET}.
        """
        if request.postpath:
            # /api/status/ or /api/status/more
            return NotFound().render(request)
        client = clientOf(request)
        finished = Deferred.fromCoroutine(self._answer(request, client))
        finished.addErrback(
            lambda f: _log.failure("admin API answer failed", f)  # pragma: no cover
        )
        return NOT_DONE_YET

    def _allowed(self) -> str:
        """
        @return: The C{Allow} header of this path.
        """
        allowed = sorted(self.handlers)
        if b"GET" in self.handlers:
            allowed.append(b"HEAD")
        return ", ".join(m.decode("ascii") for m in allowed)

    async def _answer(self, request: Request, client: str) -> None:
        """
        Check, handle and answer C{request}; errors become JSON answers.
        A client that left before the answer gets none.
        """
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        method = request.method
        path = request.path.decode("latin-1")
        lookup = b"GET" if method == b"HEAD" else method
        try:
            handler = self.handlers.get(lookup)
            if handler is None:
                raise AdminError(
                    405,
                    f"method {method.decode('latin-1')} not allowed on {path}",
                    {"Allow": self._allowed()},
                )
            if lookup != b"GET":
                self.authorizer.authorize(request)
            body = parseBody(request) if lookup != b"GET" else {}
            result = handler(Call(request, client, body))
            if not isinstance(result, dict):
                result = await result
            code, answer, headers = 200, result, {}
        except AdminError as e:
            _logRefusal(e, client, method, path)
            code, answer, headers = e.code, {"error": e.message}, e.headers
        except Exception:
            _log.failure(
                "admin API from {client}: {method} {path} failed",
                client=client,
                method=method.decode("latin-1"),
                path=path,
            )
            code, answer, headers = 500, {"error": "internal error (see the log)"}, {}
        if not gone:
            writeJSON(request, code, answer, headers)


def _logRefusal(error: AdminError, client: str, method: bytes, path: str) -> None:
    """
    Log a refused call: a warning for a missing or wrong token, a note for
    other errors; a refused switch (409) is logged by the switch itself.
    """
    fields = {
        "client": client,
        "method": method.decode("latin-1"),
        "path": path,
        "error": error.message,
    }
    if error.code in (401, 403):
        _log.warn(
            "admin API from {client}: {method} {path} refused: {error}",
            event="admin-unauthorized",
            **fields,
        )
    elif error.code != 409:
        _log.info(
            "admin API from {client}: {method} {path}: {code} {error}",
            code=error.code,
            event="admin-error",
            **fields,
        )
