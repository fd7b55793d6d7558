# -*- test-case-name: tests.test_admin_site,tests.test_admin_guard -*-
"""
The admin API's site: its requests (bodies of at most L{MAX_BODY} bytes,
refused with 413 as soon as they are known to be larger; a C{Host} or
C{Origin} that is not this site's refused with 421 or 403, see
L{bluegreen.admin.guard}) and idle connections closed after
L{IDLE_TIMEOUT} seconds.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.server import Request, Site

from bluegreen.admin.api import AdminResource
from bluegreen.admin.guard import AdminNames, hostRefusal, originRefusal
from bluegreen.admin.jsonapi import AdminError, clientOf, prepareJSON
from bluegreen.controller import Controller
from bluegreen.health import HealthMonitor

#: The largest request body accepted (a larger one gets 413).
MAX_BODY = 64 * 1024

#: Seconds an idle admin connection is kept open.
IDLE_TIMEOUT = 60

#: Seconds a refused upload may go on before its connection is cut.
LINGER = 2

#: Reason phrases twisted.web does not know (RFC 9110 section 15.5.20).
PHRASES = {421: b"Misdirected Request"}

_log = Logger(namespace="bluegreen.admin")


class AdminRequest(Request):
    """
    A request of the admin API: its body is at most L{MAX_BODY} bytes.

    A larger one is refused with C{413} as soon as that is known (from
    C{Content-Length}, or as a chunked body grows), and the connection
    closed: what the client still sends is dropped unread, for at most
    L{LINGER} seconds.
    """

    _tooLarge = False
    _received = 0

    def gotLength(self, length: int | None) -> None:
        """
        The headers are in: refuse a body declared too large at once.

        @param length: The declared length, or L{None} if chunked.
        """
        # Never a temporary file: the body is small or refused.
        self.content = BytesIO()
        if length is not None and length > MAX_BODY:
            self._refuseTooLarge()

    def handleContentChunk(self, data: bytes) -> None:
        """
        Keep a chunk of body, unless it takes the body over the limit.

        @param data: The chunk.
        """
        if self._tooLarge:
            return
        self._received += len(data)
        if self._received > MAX_BODY:
            self._refuseTooLarge()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        """
        Handle the request, unless it was refused already, or does not name
        this site (421) or comes from another site's page (403): checked
        here, once, before any resource (the API, the dashboard, the
        events, the metrics, the flags and sync endpoints) sees it.
        """
        if self._tooLarge:
            return
        refusal = self._misdirected()
        if refusal is None:
            super().process()
            return
        _log.warn(
            "admin API from {client}: {method} {path} refused: {error}",
            client=clientOf(self),
            method=self.method.decode("latin-1"),
            path=self.path.decode("latin-1"),
            error=refusal.message,
            event="admin-foreign",
        )
        # What Request.process would have set first (a typed HTTPChannel
        # does not declare the site its Site gave it).
        channel: Any = self.channel
        self.site = channel.site
        body = prepareJSON(
            self, refusal.code, {"error": refusal.message}, refusal.headers
        )
        # twisted.web knows no phrase for 421 ("Unknown Status").
        self.setResponseCode(refusal.code, PHRASES.get(refusal.code))
        self.write(body)
        self.finish()

    def _misdirected(self) -> AdminError | None:
        """
        @return: Why this request is refused (L{bluegreen.admin.guard}), or
            L{None}.
        """
        channel: Any = self.channel
        site = channel.site
        names = site.names if isinstance(site, AdminSite) else AdminNames()
        headers = self.requestHeaders
        hosts = headers.getRawHeaders(b"host") or []
        return hostRefusal(
            names, hosts, self.uri, self.clientproto, self.getHost()
        ) or originRefusal(
            self.method,
            headers.getRawHeaders(b"origin") or [],
            hosts,
            self.isSecure(),
        )

    def _refuseTooLarge(self) -> None:
        """
        Answer 413 straight onto the connection and close it.
        """
        self._tooLarge = True
        # No "100 Continue" after a final answer.
        self.requestHeaders.removeHeader(b"Expect")
        # Its methods are swapped below (public ones: the channel's
        # dataReceived, timeoutConnection, forceAbortClient), which mypy
        # rightly refuses on a typed object.
        channel: Any = self.channel
        client = clientOf(self)
        _log.info(
            "admin API from {client}: request body over {limit} bytes refused",
            client=client,
            limit=MAX_BODY,
            event="admin-error",
        )
        body = (
            json.dumps({"error": f"request body larger than {MAX_BODY} bytes"}) + "\n"
        ).encode("utf-8")
        channel.transport.write(
            b"HTTP/1.1 413 Content Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode("ascii") + b"\r\n"
            b"Connection: close\r\n\r\n" + body
        )
        # A lingering close: closing at once with the rest of the body
        # unread would make the kernel reset the connection, and the client
        # might lose the answer.  So stop sending, drop whatever still comes,
        # and cut the connection if the client has not closed it within
        # LINGER seconds.
        channel.dataReceived = lambda data: None
        channel.timeoutConnection = channel.forceAbortClient
        channel.setTimeout(LINGER)
        transport = channel.transport
        getattr(transport, "loseWriteConnection", transport.loseConnection)()


class AdminSite(Site):
    """
    The admin API's site: L{AdminRequest}s, idle connections closed after
    L{IDLE_TIMEOUT} seconds, no access log of twisted.web's own (the API
    logs what it does).

    @ivar admin: The API.
    @ivar names: The names it answers to beyond loopback and its own
        address (C{--admin-host}).
    """

    requestFactory = AdminRequest
    noisy = False

    def __init__(
        self, resource: AdminResource, names: AdminNames | None = None, **kwargs: Any
    ) -> None:
        """
        @param resource: The API.
        @param names: The C{--admin-host} names.
        @param kwargs: For L{Site}.
        """
        super().__init__(resource, **kwargs)
        self.admin = resource
        self.names = names or AdminNames()

    def log(self, request: http.Request) -> None:
        """
        Do nothing: the admin API logs its actions itself.

        @param request: The request done.
        """


def adminSite(
    controller: Controller,
    health: HealthMonitor | None,
    reactor: IReactorTime,
    token: bytes | None = None,
    names: AdminNames | None = None,
) -> AdminSite:
    """
    Make the admin API's site.

    @param controller: The switch.
    @param health: The health monitor, if any.
    @param reactor: Runs the site's connections and tells the time.
    @param token: The bearer token mutating calls need, or L{None}.
    @param names: The C{--admin-host} names it answers to.
    @return: The site, to listen on C{--admin}.
    """
    site = AdminSite(
        AdminResource(controller, health, reactor, token),
        names,
        timeout=IDLE_TIMEOUT,
        reactor=reactor,
    )
    return site
