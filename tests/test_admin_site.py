# -*- test-case-name: tests.test_admin_site -*-
"""
Tests for L{bluegreen.admin.site}: request bodies over 64 KiB refused with
413 as soon as that is known, and the admin API on a UNIX socket.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from attrs import define
from treq.client import HTTPClient
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.client import URI, Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from bluegreen.admin.site import MAX_BODY
from tests._admin import (
    call,
    captureEvents,
    globalReactor,
    messages,
    rawExchange,
    startService,
)


class BodySizeTests(TestCase):
    """
    Bodies over 64 KiB get 413, as soon as that is known.
    """

    async def test_declaredTooLarge(self) -> None:
        """
        A C{Content-Length} over the limit is refused as soon as the headers
        are in: 413, and the connection is closed.
        """
        events = captureEvents(self)
        running = await startService(self)
        data = await rawExchange(
            running.adminPort,
            b"POST /api/switch HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1,),
        )
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "), data)
        self.assertIn(b"\r\nConnection: close", head)
        self.assertEqual(
            json.loads(body), {"error": "request body larger than 65536 bytes"}
        )
        self.assertIn(
            "admin API from 127.0.0.1: request body over 65536 bytes refused",
            messages(events),
        )

    async def test_noContinue(self) -> None:
        """
        A client that expects C{100 Continue} gets the 413 instead.
        """
        running = await startService(self)
        data = await rawExchange(
            running.adminPort,
            b"POST /api/switch HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n",
        )
        self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data)
        self.assertNotIn(b"100 Continue", data)

    async def test_sentTooLarge(self) -> None:
        """
        A body sent (here, uploaded after the 413) is read and dropped, so
        the client gets the answer rather than a reset connection.
        """
        running = await startService(self)
        data = await rawExchange(
            running.adminPort,
            b"POST /api/switch HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: 200000\r\n\r\n",
            b"x" * 200000,
        )
        self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data)

    async def test_chunkedTooLarge(self) -> None:
        """
        A chunked body is refused once it grows past the limit.
        """
        running = await startService(self)
        chunk = b"x" * 40000
        data = await rawExchange(
            running.adminPort,
            b"POST /api/switch HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            b"%x\r\n%s\r\n" % (len(chunk), chunk),
            b"%x\r\n%s\r\n" % (len(chunk), chunk),
        )
        self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data)
        self.assertEqual(running.service.controller.live.name, "green")

    async def test_atTheLimit(self) -> None:
        """
        A body of exactly 64 KiB is read (and here refused for its content).
        """
        running = await startService(self)
        body = b'{"to": "blue", "pad": "'
        body += b"x" * (MAX_BODY - len(body) - 2) + b'"}'
        self.assertEqual(len(body), MAX_BODY)
        answer = await call(
            running.base + "/api/switch",
            "POST",
            body=body,
            headers={b"content-type": [b"application/json"]},
        )
        self.assertEqual(
            (answer.code, answer.error),
            (400, "unknown field 'pad' (expected: 'to', 'force')"),
        )


@implementer(IAgentEndpointFactory)
@define
class UNIXSocket:
    """
    Connects an L{Agent} to a UNIX socket, whatever the URL's host.

    @ivar path: The socket.
    """

    path: str

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """
        @return: An endpoint for the socket.
        """
        return UNIXClientEndpoint(globalReactor(), self.path)


class UNIXSocketTests(TestCase):
    """
    The admin API on a UNIX socket.
    """

    async def test_switch(self) -> None:
        """
        Over a UNIX socket, the history says the switch came from a local
        socket.
        """
        # Short: trial's temporary paths can exceed AF_UNIX's 108 bytes.
        directory = tempfile.mkdtemp(prefix="bg-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "admin.sock")
        running = await startService(self, "--admin", f"unix:{path}")
        pool = HTTPConnectionPool(globalReactor(), persistent=False)
        agent = Agent.usingEndpointFactory(globalReactor(), UNIXSocket(path), pool=pool)
        response = await HTTPClient(agent).post(
            "http://localhost/api/switch", json={"to": "blue"}
        )
        self.assertEqual(response.code, 200)
        await response.content()
        self.assertEqual(
            running.service.controller.history[-1].reason,
            "manual switch via admin API from local socket",
        )
