# -*- test-case-name: tests.test_admin -*-
"""
The JSON of the admin API: its errors, reading a request's JSON body,
checking its fields, and writing a JSON answer.

Shared by every part of the API (L{bluegreen.admin.api},
L{bluegreen.flags.api}, L{bluegreen.sync.api}) so that all of them refuse
the same things with the same words.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from attrs import frozen
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.server import Request

#: A JSON object, as parsed or as sent.
JSONObject = dict[str, Any]


class AdminError(Exception):
    """
    An answer other than success: the status, the message for
    C{{"error": ...}} and any extra headers.

    @ivar code: The HTTP status.
    @ivar message: Why, for the client.
    @ivar headers: Extra response headers (e.g. C{Allow}).
    """

    def __init__(
        self, code: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """
        @param code: The HTTP status.
        @param message: Why, for the client.
        @param headers: Extra response headers (e.g. C{Allow}).
        """
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


@contextmanager
def errorsAnswered(statuses: Mapping[type[Exception], int]) -> Iterator[None]:
    """
    Answer the errors of a block with an HTTP status each: an exception of a
    type in C{statuses} becomes an L{AdminError} with that status and its
    message; any other goes on as it is.

    @param statuses: The status of each exception type, the first that
        matches winning (so a subclass goes before its base).
    @raise AdminError: For an exception of a type in C{statuses}.
    """
    try:
        yield
    except Exception as e:
        for kind, code in statuses.items():
            if isinstance(e, kind):
                raise AdminError(code, str(e)) from None
        raise


@frozen
class Call:
    """
    One admin request, checked and parsed.

    @ivar request: The twisted.web request.
    @ivar client: Who sent it, for logs and the history (an IP address or
        C{"local socket"}).
    @ivar body: The parsed JSON body (empty when there was none).
    """

    request: Request
    client: str
    body: JSONObject


#: Handles a call: returns the JSON to answer with (status 200).
Handler = Callable[[Call], "JSONObject | Awaitable[JSONObject]"]


def clientOf(request: Request) -> str:
    """
    Name the client of C{request} (never from headers, which it chose).

    @param request: The request.
    @return: Its IP address, or C{"local socket"} for a UNIX socket.
    """
    address = request.getClientAddress()
    if isinstance(address, (IPv4Address, IPv6Address)):
        return address.host
    return "local socket"


def jsonType(value: object) -> str:
    """
    @param value: A parsed JSON value.
    @return: The JSON name of its type (C{"string"}, C{"number"}...).
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _noConstants(name: str) -> None:
    """
    Refuse C{NaN} and C{Infinity}, which Python's JSON parser accepts.
    """
    raise ValueError(f"{name} is not valid JSON")


def _noDuplicates(pairs: list[tuple[str, Any]]) -> JSONObject:
    """
    Build an object, refusing a field given twice (rather than silently
    keeping the last).
    """
    result: JSONObject = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate field {key!r}")
        result[key] = value
    return result


def parseBody(request: Request) -> JSONObject:
    """
    Read a request's JSON object body.

    @param request: The request.
    @return: The object; empty if there is no body.
    @raise AdminError: 415 for a body that is not C{application/json}, 400
        for one that is not a JSON object.
    """
    content = request.content
    data = content.read() if content is not None else b""
    if not data:
        return {}
    contentType = request.getHeader(b"content-type")
    mediaType = (contentType or b"").split(b";", 1)[0].strip().lower()
    if mediaType != b"application/json":
        got = "none" if contentType is None else repr(contentType.decode("latin-1"))
        raise AdminError(415, f"Content-Type must be application/json (got {got})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise AdminError(400, "malformed JSON: the body is not UTF-8") from None
    try:
        value = json.loads(
            text, parse_constant=_noConstants, object_pairs_hook=_noDuplicates
        )
    except ValueError as e:
        raise AdminError(400, f"malformed JSON: {e}") from None
    except RecursionError:
        raise AdminError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise AdminError(400, f"the body must be a JSON object, not {jsonType(value)}")
    return value


def checkFields(
    body: JSONObject,
    required: Mapping[str, type] | None = None,
    optional: Mapping[str, type] | None = None,
) -> None:
    """
    Check a body's fields: all C{required} ones present, no others than
    C{required} and C{optional}, each of its type.

    @param body: The parsed body.
    @param required: Field names and their Python types (C{str}, C{bool}).
    @param optional: The same, for fields that may be left out.
    @raise AdminError: 400 naming the first problem.
    """
    required = dict(required or {})
    allowed = {**required, **(optional or {})}
    for name in body:
        if name not in allowed:
            expected = ", ".join(repr(n) for n in allowed) or "none"
            raise AdminError(400, f"unknown field {name!r} (expected: {expected})")
    for name in required:
        if name not in body:
            raise AdminError(400, f"missing field {name!r}")
    for name, kind in allowed.items():
        if name in body and not (
            isinstance(body[name], kind)
            and (kind is bool or not isinstance(body[name], bool))
        ):
            wanted = {str: "a string", bool: "true or false"}.get(kind, kind.__name__)
            raise AdminError(
                400,
                f"field {name!r} must be {wanted}, not {jsonType(body[name])}",
            )


def prepareJSON(
    request: Request,
    code: int,
    body: JSONObject,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """
    Set the status and headers of a JSON answer, for C{render} to return
    (or L{writeJSON} to write) its body.

    @param request: The request to answer.
    @param code: The HTTP status.
    @param body: The JSON object.
    @param headers: Extra headers.
    @return: The body, encoded.
    """
    data = (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    for name, value in (headers or {}).items():
        request.setHeader(name.encode("ascii"), value.encode("latin-1"))
    request.setHeader(b"Content-Length", str(len(data)).encode("ascii"))
    return data


def writeJSON(
    request: Request,
    code: int,
    body: JSONObject,
    headers: Mapping[str, str] | None = None,
) -> None:
    """
    Answer C{request} with C{body} as JSON and finish it.

    @param request: The request to answer.
    @param code: The HTTP status.
    @param body: The JSON object.
    @param headers: Extra headers.
    """
    request.write(prepareJSON(request, code, body, headers))
    request.finish()


def errorAnswer(
    request: Request,
    code: int,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """
    Set up a JSON error answer, C{{"error": message}}, for C{render} to
    return.

    @param request: The request to answer.
    @param code: The HTTP status.
    @param message: Why, for the client.
    @param headers: Extra headers.
    @return: The body.
    """
    return prepareJSON(request, code, {"error": message}, headers)


def refuseUnlessGet(request: Request, hint: str = "") -> bytes | None:
    """
    Refuse what a leaf resource that only reads cannot answer: a longer
    path (404) or another method than C{GET} and C{HEAD} (405, with
    C{Allow}).

    @param request: The request.
    @param hint: Added to the 404 message, e.g. C{" (try GET /metrics)"}.
    @return: The error body, for C{render} to return; L{None} if the
        request is fine.
    """
    path = request.path.decode("latin-1")
    if request.postpath:
        return errorAnswer(request, 404, f"not found: {path}{hint}")
    if request.method not in (b"GET", b"HEAD"):
        method = request.method.decode("latin-1")
        return errorAnswer(
            request,
            405,
            f"method {method} not allowed on {path}",
            {"Allow": "GET, HEAD"},
        )
    return None
