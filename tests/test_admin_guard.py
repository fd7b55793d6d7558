# -*- test-case-name: tests.test_admin_guard -*-
"""
Tests for L{bluegreen.admin.guard}: the admin site answers only requests
that name it in C{Host} (421 otherwise) and, for changes, come from no page
or from its own (403 otherwise): the decisions, table by table (RFC 9110
sections 7.2 and 7.4, DNS rebinding), then a real service over real
sockets.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from treq.client import HTTPClient
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from bluegreen.admin.guard import (
    AdminNames,
    BadHost,
    hostRefusal,
    originRefusal,
    splitAuthority,
)
from tests._admin import (
    Answer,
    Running,
    call,
    captureEvents,
    globalReactor,
    messages,
    rawExchange,
    startService,
)
from tests.test_admin_site import UNIXSocket

#: The address a connection came in on, in the unit tests.
LOCAL = IPv4Address("TCP", "10.1.2.3", 3091)

#: The C{--admin-host} names of the unit tests.
NAMES = AdminNames.fromOptions(["ops.example", "[2001:db8::7]"])

#: C{Host} values the admin site answers (on HTTP/1.1, connected to LOCAL).
ALLOWED_HOSTS = [
    b"localhost",
    b"localhost:3091",
    # RFC 3986: an empty port is the same as none.
    b"localhost:",
    b"LOCALHOST:3091",
    b"LocalHost",
    b"127.0.0.1",
    b"127.0.0.1:3091",
    b"127.0.0.1:8080",
    b"127.1.2.3:80",
    b"[::1]",
    b"[::1]:3091",
    b"[0:0:0:0:0:0:0:1]:3091",
    b"[::ffff:127.0.0.1]:3091",
    # The address the connection came in on (e.g. with --admin
    # tcp:3091:interface=0.0.0.0 and a token).
    b"10.1.2.3",
    b"10.1.2.3:3091",
    b"[::ffff:10.1.2.3]:3091",
    # --admin-host names, without case, any port.
    b"ops.example",
    b"OPS.Example:8443",
    b"[2001:db8::7]:3091",
]

#: C{Host} values refused with 421, and the name the message suggests for
#: --admin-host.
FOREIGN_HOSTS = [
    (b"evil.example:3091", "evil.example"),
    (b"EVIL.example", "evil.example"),
    # DNS rebinding with names that only look local.
    (b"127.0.0.1.evil.example:3091", "127.0.0.1.evil.example"),
    (b"localhost.evil.example", "localhost.evil.example"),
    (b"evil.localhost:3091", "evil.localhost"),
    # The root-anchored name: a resolver may ask DNS about it.
    (b"localhost.:3091", "localhost."),
    (b"127.1", "127.1"),
    (b"local%68ost", "local%68ost"),
    (b"ops.example.evil.example", "ops.example.evil.example"),
    # Another address of this machine than the connection's.
    (b"10.1.2.4:3091", "10.1.2.4"),
    (b"[::2]:3091", "::2"),
    (b"[2001:db8::8]", "2001:db8::8"),
]

#: C{Host} values that are not a host and an optional port.
MALFORMED_HOSTS = [
    b"",
    b"::1",
    b"[::1",
    b"[::1]x",
    b"[127.0.0.1]",
    b"localhost:abc",
    b"localhost:65536",
    b"localhost:3091:3091",
    b"user@localhost",
    b"local host",
    b"\xe9vil.example",
]


def misdirected(
    hosts: list[bytes],
    uri: bytes = b"/api/status",
    version: bytes = b"HTTP/1.1",
    local: IAddress | None = LOCAL,
) -> str | None:
    """
    @return: The 421 message for a request, or L{None} if it is answered.
    """
    refusal = hostRefusal(NAMES, hosts, uri, version, local)
    if refusal is None:
        return None
    assert refusal.code == 421, refusal.code
    return refusal.message


class HostTests(SynchronousTestCase):
    """
    L{hostRefusal}: only this admin site's names are answered.
    """

    def test_allowed(self) -> None:
        """
        Loopback names and addresses, the connection's own address and the
        C{--admin-host} names are answered, with or without a port, in any
        case.
        """
        for host in ALLOWED_HOSTS:
            self.assertIsNone(misdirected([host]), host)

    def test_foreign(self) -> None:
        """
        Any other name or address gets 421, naming C{--admin-host} and the
        name to give it.
        """
        for host, name in FOREIGN_HOSTS:
            self.assertEqual(
                misdirected([host]),
                f"Host {host.decode()!r} is not this admin API; to reach it by "
                f"that name, start bluegreen with --admin-host {name}",
                host,
            )

    def test_rebinding(self) -> None:
        """
        The request of the issue's rebinding page gets the issue's answer.
        """
        self.assertEqual(
            misdirected([b"evil.example:3091"]),
            "Host 'evil.example:3091' is not this admin API; to reach it by "
            "that name, start bluegreen with --admin-host evil.example",
        )

    def test_malformed(self) -> None:
        """
        A C{Host} that is not C{uri-host [":" port]} gets 421 saying so.
        """
        for host in MALFORMED_HOSTS:
            self.assertEqual(
                misdirected([host]),
                f"Host {host.decode('latin-1')!r} is not a host and optional "
                "port; the admin API answers localhost, 127.0.0.1, [::1] and "
                "its own address, and the names given with --admin-host",
                host,
            )

    def test_missing(self) -> None:
        """
        An HTTP/1.1 request without C{Host} (RFC 9110 section 7.2: a client
        must send one) gets 421; twisted.web itself answers it as any other.
        """
        self.assertEqual(
            misdirected([]),
            "no Host header; a request to the admin API must name it "
            "(localhost, 127.0.0.1, [::1] and its own address, or a name given "
            "with --admin-host)",
        )

    def test_missingHTTP10(self) -> None:
        """
        An HTTP/1.0 request without C{Host} names no host at all, so nothing
        was rebound (browsers always send one): it is answered.
        """
        self.assertIsNone(misdirected([], version=b"HTTP/1.0"))
        self.assertIsNotNone(misdirected([b"evil.example"], version=b"HTTP/1.0"))

    def test_repeated(self) -> None:
        """
        Two C{Host} headers (RFC 9112 section 3.2: a 400 elsewhere) get 421,
        even when both are loopback names.
        """
        for hosts in ([b"localhost", b"localhost"], [b"localhost", b"evil"]):
            self.assertEqual(
                misdirected(hosts),
                "more than one Host header; a request to the admin API names it "
                "once (localhost, 127.0.0.1, [::1] and its own address, or a "
                "name given with --admin-host)",
            )

    def test_absoluteForm(self) -> None:
        """
        The authority of an absolute-form target replaces C{Host} (RFC 9112
        section 3.2.2).
        """
        self.assertIsNotNone(
            misdirected([b"localhost"], b"http://evil.example:3091/api/switch")
        )
        self.assertIsNone(
            misdirected([b"evil.example"], b"HTTP://127.0.0.1:3091/api/status")
        )

    def test_ipv6Connection(self) -> None:
        """
        Over IPv6, the connection's own address is the one answered.
        """
        local = IPv6Address("TCP", "2001:db8::1", 3091)
        self.assertIsNone(misdirected([b"[2001:DB8:0::1]:3091"], local=local))
        self.assertIsNotNone(misdirected([b"[2001:db8::2]:3091"], local=local))

    def test_unixSocket(self) -> None:
        """
        On a UNIX socket (no address to compare) the loopback names and
        C{--admin-host} are answered, nothing else: the C{bluegreen} command
        sends C{Host: localhost}.
        """
        local = UNIXAddress(b"/run/bg-admin.sock")
        self.assertIsNone(misdirected([b"localhost"], local=local))
        self.assertIsNone(misdirected([b"ops.example"], local=local))
        self.assertIsNotNone(misdirected([b"evil.example"], local=local))

    def test_quotedCut(self) -> None:
        """
        A very long C{Host} is cut in the message.
        """
        message = misdirected([b"a" * 1000 + b".example"])
        assert message is not None
        self.assertIn("'" + "a" * 200 + "...'", message)
        self.assertLess(len(message), 1400)


class SplitAuthorityTests(SynchronousTestCase):
    """
    L{splitAuthority} and L{AdminNames.fromOptions}.
    """

    def test_split(self) -> None:
        """
        A host is normalised; the port is a number or L{None}.
        """
        self.assertEqual(splitAuthority("Example.COM:80"), ("example.com", 80))
        self.assertEqual(splitAuthority("[::0:1]"), ("::1", None))
        self.assertEqual(splitAuthority("127.0.0.1:"), ("127.0.0.1", None))

    def test_names(self) -> None:
        """
        C{--admin-host} takes names and addresses (IPv6 with or without
        brackets), never a port or scheme.
        """
        self.assertEqual(
            AdminNames.fromOptions(["Ops.Example", "::1", "[2001:db8::1]"]).names,
            frozenset({"ops.example", "::1", "2001:db8::1"}),
        )
        for bad in ("ops.example:3091", "http://ops.example", "", "a b"):
            self.assertRaises(BadHost, AdminNames.fromOptions, [bad])


#: The C{Host} of the unit tests of L{originRefusal}.
HOST = [b"127.0.0.1:3091"]


def crossSite(
    origins: list[bytes],
    method: bytes = b"POST",
    hosts: list[bytes] = HOST,
    secure: bool = False,
) -> str | None:
    """
    @return: The 403 message for a request, or L{None} if it may go on.
    """
    refusal = originRefusal(method, origins, hosts, secure)
    if refusal is None:
        return None
    assert refusal.code == 403, refusal.code
    return refusal.message


class OriginTests(SynchronousTestCase):
    """
    L{originRefusal}: a change carrying C{Origin} must come from this site.
    """

    def test_noOrigin(self) -> None:
        """
        Without C{Origin} (curl, the C{bluegreen} command) nothing is asked.
        """
        for method in (b"POST", b"PUT", b"DELETE", b"PATCH"):
            self.assertIsNone(crossSite([], method))

    def test_safeMethods(self) -> None:
        """
        C{GET}, C{HEAD}, C{OPTIONS}, C{TRACE} change nothing: any C{Origin}
        (the browser keeps the answer from a foreign page anyway).
        """
        for method in (b"GET", b"HEAD", b"OPTIONS", b"TRACE"):
            self.assertIsNone(crossSite([b"http://evil.example"], method))

    def test_sameOrigin(self) -> None:
        """
        The page's own origin: the same scheme, host and port as the
        request, compared normalised (case, default ports, IPv6 forms).
        """
        for origins, hosts, secure in [
            ([b"http://127.0.0.1:3091"], HOST, False),
            ([b"HTTP://127.0.0.1:3091"], HOST, False),
            ([b"http://localhost"], [b"localhost"], False),
            ([b"http://localhost:80"], [b"LOCALHOST"], False),
            ([b"http://localhost"], [b"localhost:80"], False),
            ([b"https://localhost"], [b"localhost:443"], True),
            ([b"https://localhost:3091"], [b"localhost:3091"], True),
            ([b"http://[::1]:3091"], [b"[0::1]:3091"], False),
            ([b"http://ops.example:8080"], [b"Ops.Example:8080"], False),
        ]:
            self.assertIsNone(crossSite(origins, hosts=hosts, secure=secure), origins)

    def test_foreign(self) -> None:
        """
        Another scheme, host or port, C{null} (a sandboxed or file page), or
        something that is not an origin: 403 naming the origin.
        """
        for origin in [
            b"http://evil.example:3091",
            b"null",
            b"https://127.0.0.1:3091",
            b"http://127.0.0.1:3092",
            b"http://127.0.0.1",
            b"http://localhost:3091",
            b"http://127.0.0.1:3091/",
            b"http://user@127.0.0.1:3091",
            b"ws://127.0.0.1:3091",
            b"",
        ]:
            self.assertEqual(
                crossSite([origin]),
                f"Origin {origin.decode()!r} is not this admin site "
                "(http://127.0.0.1:3091): a page from another site cannot "
                "change anything here",
            )

    def test_anyMethod(self) -> None:
        """
        Every method but the safe ones is checked, known or not.
        """
        for method in (b"POST", b"PUT", b"DELETE", b"PATCH", b"PURGE"):
            self.assertIsNotNone(crossSite([b"http://evil.example"], method))

    def test_repeated(self) -> None:
        """
        Two C{Origin} headers: 403.
        """
        self.assertEqual(
            crossSite([b"http://127.0.0.1:3091", b"http://127.0.0.1:3091"]),
            "more than one Origin header; refused",
        )

    def test_scheme(self) -> None:
        """
        Over TLS, the site's origin is C{https}.
        """
        self.assertEqual(
            crossSite([b"http://127.0.0.1:3091"], secure=True),
            "Origin 'http://127.0.0.1:3091' is not this admin site "
            "(https://127.0.0.1:3091): a page from another site cannot change "
            "anything here",
        )


def hostOf(running: Running, name: str = "evil.example") -> bytes:
    """
    @return: C{name} with the admin API's port, as a rebinding page's
        browser would send it.
    """
    return f"{name}:{running.adminPort}".encode()


async def switchWith(running: Running, headers: dict[bytes, list[bytes]]) -> Answer:
    """
    @return: The answer to C{POST /api/switch {"to": "blue"}} with C{headers}.
    """
    return await call(
        running.base + "/api/switch", "POST", headers=headers, payload={"to": "blue"}
    )


class ServiceTests(TestCase):
    """
    A running service, over real sockets: foreign names and pages are
    refused on every route, before anything is done.
    """

    async def test_rebindingSwitch(self) -> None:
        """
        The issue's rebinding request, C{POST /api/switch} with C{Host:
        evil.example:PORT} and C{Origin: http://evil.example:PORT}, gets 421
        and switches nothing; the refusal is logged.
        """
        events = captureEvents(self)
        running = await startService(self)
        history = list(running.service.controller.history)
        host = hostOf(running)
        answer = await switchWith(
            running, {b"host": [host], b"origin": [b"http://" + host]}
        )
        message = (
            f"Host 'evil.example:{running.adminPort}' is not this admin API; to "
            "reach it by that name, start bluegreen with --admin-host evil.example"
        )
        self.assertEqual((answer.code, answer.error), (421, message))
        self.assertEqual(running.service.controller.live.name, "green")
        self.assertEqual(list(running.service.controller.history), history)
        self.assertIn(
            f"admin API from 127.0.0.1: POST /api/switch refused: {message}",
            messages(events),
        )

    async def test_rebindingWithToken(self) -> None:
        """
        With a token, the right token does not make a foreign C{Host} or
        C{Origin} good.
        """
        running = await startService(self, token="t0ken")
        bearer = [b"Bearer t0ken"]
        host = hostOf(running)
        answer = await switchWith(running, {b"host": [host], b"authorization": bearer})
        self.assertEqual(answer.code, 421)
        answer = await switchWith(
            running,
            {b"origin": [b"http://" + hostOf(running)], b"authorization": bearer},
        )
        self.assertEqual(answer.code, 403)
        self.assertEqual(running.service.controller.live.name, "green")

    async def test_statusHidden(self) -> None:
        """
        C{GET /api/status} with a foreign C{Host} gets 421 and none of the
        environments' URLs.
        """
        running = await startService(self)
        answer = await call(
            running.base + "/api/status", headers={b"host": [hostOf(running)]}
        )
        self.assertEqual(answer.code, 421)
        self.assertEqual(list(answer.json), ["error"])
        for backend in (running.green, running.blue):
            self.assertNotIn(str(backend.port).encode(), answer.data)

    async def test_everyRoute(self) -> None:
        """
        Every route of the admin site (the dashboard, the events, the
        metrics, the flags and sync endpoints mounted on it, an unknown
        path, C{HEAD}) answers a foreign C{Host} with the same JSON 421.
        """
        running = await startService(self)
        for method, path in [
            ("GET", "/"),
            ("GET", "/api/events"),
            ("GET", "/metrics"),
            ("GET", "/api/flags"),
            ("PUT", "/api/flags/RECENT"),
            ("GET", "/api/sync"),
            ("POST", "/api/check"),
            ("GET", "/nowhere"),
            ("HEAD", "/api/status"),
        ]:
            answer = await call(
                running.base + path, method, headers={b"host": [hostOf(running)]}
            )
            self.assertEqual(answer.code, 421, (method, path))
            self.assertEqual(
                answer.headers.getRawHeaders(b"content-type"), [b"application/json"]
            )
            if method != "HEAD":
                self.assertIn("--admin-host evil.example", answer.error)

    async def test_adminHost(self) -> None:
        """
        C{--admin-host ops.example} makes that name (and its pages) good:
        status and a switch from its own page.
        """
        running = await startService(self, "--admin-host", "ops.example")
        host = hostOf(running, "ops.example")
        status = await call(running.base + "/api/status", headers={b"host": [host]})
        self.assertEqual(status.code, 200)
        answer = await switchWith(
            running, {b"host": [host], b"origin": [b"http://" + host]}
        )
        self.assertEqual(answer.code, 200, answer.data)
        self.assertEqual(running.service.controller.live.name, "blue")

    async def test_foreignOrigin(self) -> None:
        """
        A switch with a good C{Host} but another site's C{Origin} gets 403
        naming the origin, and switches nothing.
        """
        running = await startService(self)
        answer = await switchWith(running, {b"origin": [b"http://evil.example"]})
        self.assertEqual(
            (answer.code, answer.error),
            (
                403,
                "Origin 'http://evil.example' is not this admin site "
                f"(http://127.0.0.1:{running.adminPort}): a page from another "
                "site cannot change anything here",
            ),
        )
        answer = await switchWith(running, {b"origin": [b"null"]})
        self.assertEqual(answer.code, 403)
        self.assertEqual(running.service.controller.live.name, "green")

    async def test_ownOrigin(self) -> None:
        """
        The dashboard's own page (same origin) may switch, under any
        loopback name it was opened with.
        """
        running = await startService(self)
        origin = f"http://localhost:{running.adminPort}".encode()
        answer = await switchWith(
            running, {b"host": [hostOf(running, "localhost")], b"origin": [origin]}
        )
        self.assertEqual(answer.code, 200, answer.data)
        self.assertEqual(running.service.controller.live.name, "blue")

    async def test_rawHost(self) -> None:
        """
        Over a raw connection: no C{Host} on HTTP/1.1 and two C{Host}
        headers get 421; HTTP/1.0 without C{Host} is answered.
        """
        running = await startService(self)
        for request, status in [
            (b"GET /api/status HTTP/1.1\r\nConnection: close\r\n\r\n", b"421"),
            (
                b"GET /api/status HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n"
                b"Connection: close\r\n\r\n",
                b"421",
            ),
            (b"GET /api/status HTTP/1.0\r\n\r\n", b"200"),
            (
                b"POST http://evil.example/api/switch HTTP/1.1\r\nHost: localhost\r\n"
                b"Connection: close\r\nContent-Length: 0\r\n\r\n",
                b"421",
            ),
        ]:
            data = await rawExchange(running.adminPort, request)
            self.assertEqual(data.split(b" ", 2)[1], status, data)
            if status == b"421":
                self.assertTrue(
                    data.startswith(b"HTTP/1.1 421 Misdirected Request\r\n"), data
                )
        self.assertEqual(running.service.controller.live.name, "green")

    async def test_unixSocket(self) -> None:
        """
        On a UNIX socket, C{Host: localhost} (what the C{bluegreen} command
        sends) is answered and a foreign name is not.
        """
        directory = tempfile.mkdtemp(prefix="bg-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "admin.sock")
        await startService(self, "--admin", f"unix:{path}")
        pool = HTTPConnectionPool(globalReactor(), persistent=False)
        agent = Agent.usingEndpointFactory(globalReactor(), UNIXSocket(path), pool=pool)
        client = HTTPClient(agent)
        good = await client.get("http://localhost/api/status")
        self.assertEqual(good.code, 200)
        await good.content()
        bad = await client.get(
            "http://localhost/api/status",
            headers=Headers({b"host": [b"evil.example"]}),
        )
        self.assertEqual(bad.code, 421)
        self.assertEqual(
            json.loads(await bad.content())["error"],
            "Host 'evil.example' is not this admin API; to reach it by that "
            "name, start bluegreen with --admin-host evil.example",
        )
