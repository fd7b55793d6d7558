# -*- test-case-name: tests.test_tunnel_integration -*-
"""
Upgrades (WebSockets) through the real proxy, over real sockets: a small
WebSocket server plays GREEN and BLUE (L{tests._websocket}), a raw client
does the handshake and sends masked frames.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.trial.unittest import TestCase

from bluegreen.proxy.tunnels import Tunnels

from ._admin import call, listeningPort
from ._backends import (
    ProxyUnderTest,
    closedPortURL,
    delayed,
    echo,
    listen,
    listenTLS,
    named,
    portNumber,
    startBackend,
    startProxy,
)
from ._certificates import makeCertificates
from ._rawclient import connectRaw, fetch, setBuffer
from ._util import PATIENCE, waitFor
from ._waiting import reactor, stalled, withTimeout
from ._websocket import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    WebSocketClient,
    WebSocketServerFactory,
    acceptKey,
    streamBytes,
)


def tunnelsOf(proxy: ProxyUnderTest) -> Tunnels:
    """
    The proxy's tunnel registry.
    """
    tunnels = proxy.resource.tunnels
    assert tunnels is not None
    return tunnels


class TunnelTestCase(TestCase):
    """
    GREEN and BLUE WebSocket servers and the proxy in front of them.
    """

    def startServers(
        self, greenMode: str = "upgrade", *extra: str
    ) -> tuple[WebSocketServerFactory, WebSocketServerFactory, ProxyUnderTest]:
        green = WebSocketServerFactory("green", greenMode)
        blue = WebSocketServerFactory("blue")
        for factory in (green, blue):
            self.addCleanup(factory.stop)
        greenPort, bluePort = listen(self, green), listen(self, blue)
        proxy = startProxy(
            self,
            f"http://127.0.0.1:{greenPort}",
            f"http://127.0.0.1:{bluePort}",
            *extra,
        )
        return green, blue, proxy

    async def connect(
        self, proxy: ProxyUnderTest, upgrade: bool = True
    ) -> WebSocketClient:
        """
        Open a client connection to the proxy and wait for the answer head.
        """
        client = WebSocketClient(upgrade=upgrade)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.port)
        await connectProtocol(endpoint, client)

        def close() -> Deferred[None] | None:
            if client.closed.called:
                return None
            client.transport.abortConnection()
            return client.closed

        self.addCleanup(close)
        await withTimeout(client.answered, "the answer to the handshake")
        return client

    async def receive(self, client: WebSocketClient) -> tuple[int, bytes]:
        result: tuple[int, bytes] = await withTimeout(client.receive(), "a frame")
        return result


class EchoTests(TunnelTestCase):
    """
    A WebSocket through the proxy.
    """

    async def test_echo(self) -> None:
        """
        The handshake reaches the live environment with its C{Upgrade}
        headers, its C{101} reaches the client, and frames go both ways
        (text, ping/pong, close); the tunnel is counted while open.
        """
        logPath = os.path.join(tempfile.mkdtemp(), "access.log")
        green, blue, proxy = self.startServers("upgrade", "--access-log", logPath)
        client = await self.connect(proxy)
        self.assertEqual(client.status, b"HTTP/1.1 101 Switching Protocols")
        self.assertEqual(
            client.headers[b"sec-websocket-accept"], [acceptKey(client.key)]
        )
        line, headers = green.requests[0]
        self.assertEqual(line, b"GET /chat HTTP/1.1")
        self.assertEqual(headers[b"upgrade"], [b"websocket"])
        self.assertIn(b"upgrade", headers[b"connection"][0].lower())
        self.assertEqual(headers[b"x-forwarded-for"], [b"127.0.0.1"])
        self.assertEqual(blue.requests, [])
        self.assertEqual(tunnelsOf(proxy).count("green"), 1)
        self.assertEqual(tunnelsOf(proxy).status()["open"], {"green": 1, "blue": 0})

        client.send(TEXT, b"hello")
        self.assertEqual(await self.receive(client), (TEXT, b"green:hello"))
        client.send(PING, b"p1")
        self.assertEqual(await self.receive(client), (PONG, b"p1"))
        client.send(CLOSE, b"\x03\xe8")
        self.assertEqual(await self.receive(client), (CLOSE, b"\x03\xe8"))
        await withTimeout(client.closed, "the client connection's close")
        await waitFor(
            lambda: tunnelsOf(proxy).count("green") == 0, "the tunnel to be forgotten"
        )
        await proxy.stop()
        with open(logPath) as f:
            lines = [line for line in f if "tunnel" in line]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn('"GET /chat HTTP/1.1" 101 ', lines[0])
        self.assertIn(" green ", lines[0])
        # Client: "hello" (11 bytes masked), ping (8), close (8).
        self.assertIn("up=27 ", lines[0])
        # Server: "green:hello" (13), pong (4), close (4).
        self.assertIn("down=21 ", lines[0])
        self.assertRegex(lines[0], r"end=(server|client) closed")

    async def test_bigMessages(self) -> None:
        """
        A 10 MB message each way arrives whole.
        """
        _, _, proxy = self.startServers()
        client = await self.connect(proxy)
        payload = os.urandom(10 * 1024 * 1024)
        client.send(BINARY, payload)
        digest = hashlib.sha256(payload).hexdigest().encode()
        self.assertEqual(
            await self.receive(client),
            (TEXT, b"green:got %d %s" % (len(payload), digest)),
        )
        size = 10 * 1024 * 1024
        received = hashlib.sha256()
        count = [0]

        def binary(data: bytes) -> None:
            received.update(data)
            count[0] += len(data)

        client.onBinary = binary
        client.send(TEXT, b"stream %d" % size)
        self.assertEqual(await self.receive(client), (TEXT, b"done"))
        self.assertEqual(count[0], size)
        self.assertEqual(
            received.digest(), hashlib.sha256(streamBytes(0, size)).digest()
        )

    async def test_backpressure(self) -> None:
        """
        A client that does not read pauses the environment: the proxy takes
        in only what its buffers hold, not the whole stream; once the client
        reads, all of it arrives intact.
        """
        green, _, proxy = self.startServers()
        client = await self.connect(proxy)
        setBuffer(client.transport, socket.SO_RCVBUF, 64 * 1024)
        received = hashlib.sha256()
        count = [0]

        def binary(data: bytes) -> None:
            received.update(data)
            count[0] += len(data)

        client.onBinary = binary
        client.transport.pauseProducing()
        size = 64 * 1024 * 1024
        client.send(TEXT, b"stream %d" % size)
        server = green.connections[0]
        await waitFor(lambda: server.paused, "the server to be paused")
        (tunnel,) = tunnelsOf(proxy).open["green"]
        taken = await stalled(lambda: tunnel.toClient, "the proxy's reads")
        self.assertLess(taken, 16 * 1024 * 1024)
        # (The kernel buffers between the server and the proxy, not the
        # proxy, hold the rest of what the server sent.)
        self.assertLess(server.streamed, size)
        client.transport.resumeProducing()
        self.assertEqual(await self.receive(client), (TEXT, b"done"))
        self.assertEqual(count[0], size)
        expected = hashlib.sha256()
        for offset in range(0, size, 1024 * 1024):
            expected.update(streamBytes(offset, 1024 * 1024))
        self.assertEqual(received.digest(), expected.digest())


class AnswerTests(TunnelTestCase):
    """
    Answers other than a requested C{101}.
    """

    async def test_notUpgraded(self) -> None:
        """
        An environment that answers an upgrade request with a 200: the
        answer reaches the client as a normal response; that upstream
        connection is closed, and the client's stays usable.
        """
        green, _, proxy = self.startServers("refuse")
        client = await self.connect(proxy)
        self.assertEqual(client.status, b"HTTP/1.1 200 OK")
        await waitFor(
            lambda: client.body == b"green: no upgrade here\n", "the response body"
        )
        await waitFor(lambda: green.lost == 1, "the upstream connection to close")
        self.assertEqual(tunnelsOf(proxy).count("green"), 0)
        client.transport.write(b"GET /again HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        await waitFor(lambda: len(green.requests) == 2, "the next request")
        self.assertEqual(green.requests[1][0], b"GET /again HTTP/1.1")

    async def test_unrequested101(self) -> None:
        """
        A 101 to a request that did not ask to upgrade is a 502.
        """
        _, _, proxy = self.startServers("always")
        response = await fetch(self, proxy.port, b"GET", b"/plain")
        self.assertEqual(response.code, 502)

    async def test_refusedGoesToStandby(self) -> None:
        """
        With C{--retry connect}, an upgrade the live environment refuses to
        connect goes to the standby.
        """
        blue = WebSocketServerFactory("blue")
        self.addCleanup(blue.stop)
        bluePort = listen(self, blue)
        proxy = startProxy(
            self, closedPortURL(), f"http://127.0.0.1:{bluePort}", "--retry", "connect"
        )
        proxy.resource.health = None
        client = await self.connect(proxy)
        self.assertEqual(client.status, b"HTTP/1.1 101 Switching Protocols")
        client.send(TEXT, b"hi")
        self.assertEqual(await self.receive(client), (TEXT, b"blue:hi"))

    async def test_refusedWithoutRetry(self) -> None:
        """
        Without a retry, an upgrade that cannot connect is a 502.
        """
        proxy = startProxy(self, closedPortURL(), closedPortURL())
        client = await self.connect(proxy)
        self.assertEqual(client.status, b"HTTP/1.1 502 Bad Gateway")


class TimeoutAndDrainTests(TunnelTestCase):
    """
    Tunnels closed by the proxy: idle, or left on the old environment.
    """

    async def test_idleTimeout(self) -> None:
        """
        A tunnel that carries nothing for C{--tunnel-idle-timeout} seconds
        is closed.
        """
        _, _, proxy = self.startServers("upgrade", "--tunnel-idle-timeout", "0.3")
        client = await self.connect(proxy)
        client.send(TEXT, b"hello")
        self.assertEqual(await self.receive(client), (TEXT, b"green:hello"))
        await withTimeout(client.closed, "the idle tunnel's close", 0.3 + PATIENCE)
        self.assertEqual(tunnelsOf(proxy).count("green"), 0)

    async def test_switchDrains(self) -> None:
        """
        After a switch, a tunnel on the old environment stays open for
        C{--drain-timeout}, is then closed, and the client's reconnect lands
        on the new live environment.
        """
        _, _, proxy = self.startServers("upgrade", "--drain-timeout", "1")
        client = await self.connect(proxy)
        proxy.controller.switch("blue")
        status = tunnelsOf(proxy).status()
        draining = status["draining"]
        assert isinstance(draining, list)
        self.assertEqual(len(draining), 1)
        self.assertEqual(draining[0]["environment"], "green")
        self.assertEqual(draining[0]["tunnels"], 1)
        # Still open meanwhile (the drain deadline is the clock's).
        client.send(TEXT, b"still")
        self.assertEqual(await self.receive(client), (TEXT, b"green:still"))
        await withTimeout(client.closed, "the drained tunnel's close", 1 + PATIENCE)
        self.assertEqual(tunnelsOf(proxy).status()["draining"], [])
        self.assertEqual(tunnelsOf(proxy).drained, {"green": 1})
        again = await self.connect(proxy)
        again.send(TEXT, b"back")
        self.assertEqual(await self.receive(again), (TEXT, b"blue:back"))

    async def test_failoverClosesAtOnce(self) -> None:
        """
        A failover (the old environment is down) closes its tunnels at once,
        whatever C{--drain-timeout} says.
        """
        _, _, proxy = self.startServers("upgrade", "--drain-timeout", "never")
        client = await self.connect(proxy)
        # The health monitor is out of this test: BLUE counts as up.
        proxy.controller.isUp = lambda name: name == "blue"
        proxy.controller.healthChanged("green", False, "test: down")
        self.assertEqual(proxy.controller.live.name, "blue")
        await withTimeout(client.closed, "the tunnel's close")


class AdminTests(TunnelTestCase):
    """
    The admin API shows the tunnels.
    """

    async def test_statusAndMetrics(self) -> None:
        """
        C{GET /api/status} counts open tunnels per environment and shows
        what is draining until when; C{GET /metrics} counts them too.
        """
        _, _, proxy = self.startServers(
            "upgrade", "--admin", "tcp:0:interface=127.0.0.1", "--drain-timeout", "600"
        )
        admin = portNumber(listeningPort(proxy.service, "admin"))
        base = f"http://127.0.0.1:{admin}"
        await self.connect(proxy)
        status = (await call(base + "/api/status")).json["tunnels"]
        self.assertEqual(status["open"], {"green": 1, "blue": 0})
        self.assertEqual(status["idle_timeout"], 3600)
        self.assertEqual(status["drain_timeout"], 600)
        self.assertEqual(status["draining"], [])
        metrics = (await call(base + "/metrics")).data.decode()
        self.assertIn('bluegreen_tunnels_open{environment="green"} 1.0', metrics)
        self.assertIn(
            'bluegreen_tunnels_opened_total{environment="green"} 1.0', metrics
        )
        proxy.controller.switch("blue")
        (draining,) = (await call(base + "/api/status")).json["tunnels"]["draining"]
        self.assertEqual(draining["environment"], "green")
        self.assertEqual(draining["tunnels"], 1)
        self.assertRegex(draining["until"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertGreater(draining["closes_in"], 590)


class StreamDrainTests(TunnelTestCase):
    """
    Responses still open on the old environment (server-sent events, long
    polls) are drained like tunnels.
    """

    async def test_streamDrained(self) -> None:
        """
        A response that never ends, on GREEN, is cut C{--drain-timeout}
        seconds after a switch to BLUE; the next request goes to BLUE.
        """
        _, greenURL = startBackend(
            self, "green", named("green", parts=10**6, delay=0.05)
        )
        _, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL, "--drain-timeout", "1")
        client = await self.connect(proxy, upgrade=False)
        self.assertEqual(client.status, b"HTTP/1.1 200 OK")
        await waitFor(lambda: b"green;" in client.body, "the stream to flow")
        proxy.controller.switch("blue")
        (draining,) = tunnelsOf(proxy).status()["draining"]
        self.assertEqual((draining["tunnels"], draining["responses"]), (0, 1))
        await withTimeout(client.closed, "the drained stream's close", 1 + PATIENCE)
        self.assertEqual(tunnelsOf(proxy).streamsDrained, {"green": 1})
        response = await fetch(self, proxy.port, b"GET", b"/next")
        self.assertEqual(response.values(b"x-env"), [b"blue"])

    async def test_idleConnectionKept(self) -> None:
        """
        A keep-alive connection with no response open is not cut: its next
        request simply goes to the new live environment.
        """
        _, greenURL = startBackend(self, "green", echo("green"))
        _, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL, "--drain-timeout", "0")
        client = await connectRaw(self, proxy.port)
        first = await client.request(b"GET", b"/one")
        self.assertEqual(first.values(b"x-env"), [b"green"])
        proxy.controller.switch("blue")
        second = await client.request(b"GET", b"/two")
        self.assertEqual(second.values(b"x-env"), [b"blue"])

    async def test_waitingRequestKept(self) -> None:
        """
        A request still waiting for its answer on the old environment is not
        cut by the drain: it gets GREEN's answer.
        """
        green, greenURL = startBackend(self, "green", delayed(0.5, echo("green")))
        _, blueURL = startBackend(self, "blue", echo("blue"))
        proxy = startProxy(self, greenURL, blueURL, "--drain-timeout", "0")
        answer = Deferred.fromCoroutine(fetch(self, proxy.port, b"GET", b"/slow"))
        await waitFor(lambda: green.requests, "the request to reach GREEN")
        proxy.controller.switch("blue")
        response = await withTimeout(answer, "GREEN's answer")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.values(b"x-env"), [b"green"])


class TLSTests(TunnelTestCase):
    """
    A WebSocket over TLS on both sides: C{wss://} to a TLS listener of the
    proxy, and an C{https://} environment.
    """

    async def test_tlsBothSides(self) -> None:
        """
        The handshake and frames go through both TLS connections, a large
        stream included (backpressure through the TLS transports).
        """
        certs = makeCertificates(self.mktemp(), {"good": ["localhost", "127.0.0.1"]})
        keyFile = self.mktemp()
        with open(keyFile, "wb") as f:
            f.write(certs.servers["good"])
        green = WebSocketServerFactory("green")
        self.addCleanup(green.stop)
        greenPort = listenTLS(self, green, certs.serverOptions("good"))
        proxy = startProxy(
            self,
            f"https://localhost:{greenPort}",
            closedPortURL(),
            "--upstream-ca",
            certs.caPath,
            "--port",
            f"ssl:0:privateKey={keyFile}:interface=127.0.0.1",
        )
        client = WebSocketClient()
        endpoint = wrapClientTLS(
            optionsForClientTLS("localhost", Certificate.loadPEM(certs.caPEM)),
            TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.port),
        )
        await connectProtocol(endpoint, client)
        self.addCleanup(lambda: client.transport.abortConnection())
        await withTimeout(client.answered, "the handshake's answer")
        self.assertEqual(client.status, b"HTTP/1.1 101 Switching Protocols")
        client.send(TEXT, b"secret")
        self.assertEqual(await self.receive(client), (TEXT, b"green:secret"))
        size = 8 * 1024 * 1024
        count = [0]
        client.onBinary = lambda data: count.__setitem__(0, count[0] + len(data))
        client.send(TEXT, b"stream %d" % size)
        self.assertEqual(await self.receive(client), (TEXT, b"done"))
        self.assertEqual(count[0], size)
