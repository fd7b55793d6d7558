# -*- test-case-name: tests.test_meow -*-
"""
Helpers for the app's resources: asynchronous rendering and small
responses.
"""

from __future__ import annotations

import json
from collections.abc import Coroutine
from typing import Any
from weakref import WeakSet

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

_log = Logger()

#: Requests whose client left before the answer was ready (an answer written
#: to them would fail: twisted.web refuses to finish them).
_gone: WeakSet[Request] = WeakSet()


def finish(request: Request, code: int, body: bytes, contentType: bytes) -> None:
    """
    Answer, unless the client has gone.

    @param request: The request.
    @param code: The status.
    @param body: The body.
    @param contentType: Its media type.
    """
    if request.finished or request in _gone:
        return
    request.setResponseCode(code)
    request.setHeader(b"content-type", contentType)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.setHeader(b"cache-control", b"no-store")
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


def sendJSON(request: Request, code: int, value: object) -> None:
    """
    Answer with JSON.

    @param request: The request.
    @param code: The status.
    @param value: What to send.
    """
    body = json.dumps(value).encode("utf-8") + b"\n"
    finish(request, code, body, b"application/json")


def sendError(request: Request, code: int, message: str) -> None:
    """
    Answer with an error: C{{"error": message}}.

    @param request: The request.
    @param code: The status.
    @param message: What went wrong, for the client.
    """
    sendJSON(request, code, {"error": message})


def render(request: Request, work: Coroutine[Any, Any, None]) -> int:
    """
    Run C{work}, which answers C{request}; answer 500 if it fails.

    @param request: The request.
    @param work: Answers the request.
    @return: L{NOT_DONE_YET}, for C{render_*}.
    """

    def failed(failure: Failure) -> None:
        _log.failure(
            "{method} {uri} failed", failure, method=request.method, uri=request.uri
        )
        sendError(request, 500, "internal error")

    request.notifyFinish().addErrback(lambda _: _gone.add(request))
    Deferred.fromCoroutine(work).addErrback(failed)
    return NOT_DONE_YET
