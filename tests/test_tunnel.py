# -*- test-case-name: tests.test_tunnel -*-
"""
Tunnels (upgraded connections) on a memory reactor and a L{Clock}: which
requests upgrade, the idle and response timeouts, draining after a switch,
and the options.
"""

from __future__ import annotations

from typing import Any, cast

from attrs import define, field
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from bluegreen.controller import Controller, Switch
from bluegreen.environment import Environment
from bluegreen.proxy.channel import ProxyChannel
from bluegreen.proxy.clients import ClientGate
from bluegreen.proxy.limits import ClientLimits
from bluegreen.proxy.pool import UpstreamPool
from bluegreen.proxy.rejections import Rejections
from bluegreen.proxy.request import ProxyRequest
from bluegreen.proxy.resource import ProxyResource, ProxySite
from bluegreen.proxy.tunnel import CLOSE_GRACE
from bluegreen.proxy.tunnels import TunnelMetrics, Tunnels, TunnelSettings
from bluegreen.proxy.upgrade import wantsUpgrade
from bluegreen.service.options import Options

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)

SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


@define
class FrontDoorStub:
    """
    What a L{ProxyChannel} needs of its site, with the default limits.
    """

    limits: ClientLimits = field(factory=ClientLimits)
    rejections: Rejections = field(factory=Rejections)
    gate: ClientGate | None = None
    reactor: Clock = field(factory=Clock)


def request(
    *headers: tuple[bytes, bytes], version: bytes = b"HTTP/1.1"
) -> ProxyRequest:
    """
    A request on a L{ProxyChannel} (its site's limits the defaults, its
    timers on a L{Clock}), with C{headers}.
    """
    channel = ProxyChannel()
    channel.site = FrontDoorStub()
    channel.makeConnection(StringTransport())
    req = ProxyRequest(channel)
    req.clientproto = version
    for name, value in headers:
        req.requestHeaders.addRawHeader(name, value)
    return req


class WantsUpgradeTests(SynchronousTestCase):
    """
    L{wantsUpgrade} picks the requests that go through a tunnel.
    """

    def test_upgrade(self) -> None:
        """
        C{Connection: upgrade} (any case, among other tokens) and an
        C{Upgrade} header: a tunnel.
        """
        for connection in (b"Upgrade", b"keep-alive, upgrade", b"UPGRADE"):
            self.assertTrue(
                wantsUpgrade(
                    request((b"Connection", connection), (b"Upgrade", b"websocket"))
                ),
                connection,
            )

    def test_notUpgrade(self) -> None:
        """
        Without either header, over HTTP/1.0, or with a body: no tunnel.
        """
        self.assertFalse(wantsUpgrade(request((b"Upgrade", b"websocket"))))
        self.assertFalse(wantsUpgrade(request((b"Connection", b"upgrade"))))
        self.assertFalse(
            wantsUpgrade(
                request((b"Connection", b"keep-alive"), (b"Upgrade", b"websocket"))
            )
        )
        self.assertFalse(
            wantsUpgrade(
                request(
                    (b"Connection", b"upgrade"),
                    (b"Upgrade", b"websocket"),
                    version=b"HTTP/1.0",
                )
            )
        )
        withBody = request((b"Connection", b"upgrade"), (b"Upgrade", b"h2c"))
        # (Any body: only its presence counts.)
        withBody.body = cast(Any, "a body")
        self.assertFalse(wantsUpgrade(withBody))


class Harness:
    """
    The proxy on a memory reactor, one client connection on a
    L{StringTransport}, and the upstream connections it makes.
    """

    def __init__(self, settings: TunnelSettings) -> None:
        self.reactor = MemoryReactorClock()
        environments = {
            "green": Environment.fromURL("green", "http://127.0.0.1:5002"),
            "blue": Environment.fromURL("blue", "http://127.0.0.1:5001"),
        }
        self.controller = Controller.create(environments, "green", self.reactor)
        pools = {
            name: UpstreamPool(self.reactor, env) for name, env in environments.items()
        }
        self.resource = ProxyResource(
            self.controller, pools, self.reactor, responseTimeout=5.0
        )
        self.tunnels = self.resource.tunnels = Tunnels(self.reactor, settings)
        self.controller.onSwitch.append(self.tunnels.switched)
        self.site = ProxySite(self.resource, self.reactor)

    def connect(self) -> tuple[ProxyChannel, StringTransport]:
        """
        A client connection, and its transport.
        """
        channel = self.site.buildProtocol(None)
        assert isinstance(channel, ProxyChannel)
        client = StringTransport()
        channel.makeConnection(client)
        return channel, client

    def upstream(self) -> tuple[Any, StringTransport, int]:
        """
        Accept the latest upstream connection attempt.

        @return: Its protocol, transport and port.
        """
        _, port, factory, _, _ = self.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport, port

    def open(self) -> tuple[ProxyChannel, StringTransport, Any, StringTransport]:
        """
        An open tunnel to the live environment.
        """
        channel, client = self.connect()
        channel.dataReceived(UPGRADE)
        upstream, server, _ = self.upstream()
        upstream.dataReceived(SWITCHING)
        return channel, client, upstream, server


class TunnelClockTests(SynchronousTestCase):
    """
    One tunnel, driven by hand.
    """

    def test_handshake(self) -> None:
        """
        The request goes upstream with its upgrade headers, the C{101} comes
        back verbatim, then bytes go through untouched both ways.
        """
        harness = Harness(TunnelSettings(idleTimeout=10.0))
        channel, client = harness.connect()
        channel.dataReceived(UPGRADE + b"early")
        upstream, server, port = harness.upstream()
        self.assertEqual(port, 5002)
        head = server.value()
        self.assertTrue(head.startswith(b"GET /ws HTTP/1.1\r\n"), head)
        self.assertIn(b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", head)
        self.assertIn(
            b"\r\nsec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n", head.lower()
        )
        self.assertNotIn(b"keep-alive", head)
        server.clear()
        upstream.dataReceived(SWITCHING + b"first")
        self.assertEqual(client.value(), SWITCHING + b"first")
        # What the client sent after its request was held, then sent on.
        self.assertEqual(server.value(), b"early")
        channel.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(server.value(), b"earlyGET / HTTP/1.1\r\n\r\n")
        self.assertEqual(harness.tunnels.count("green"), 1)

    def test_idle(self) -> None:
        """
        A tunnel that carries nothing either way for the idle timeout is
        closed; any byte either way starts the wait again.
        """
        harness = Harness(TunnelSettings(idleTimeout=10.0))
        channel, client, upstream, server = harness.open()
        clock = harness.reactor
        clock.advance(9)
        channel.dataReceived(b"ping")
        clock.advance(9)
        upstream.dataReceived(b"pong")
        clock.advance(9)
        self.assertFalse(client.disconnecting or server.disconnecting)
        clock.advance(1)
        self.assertTrue(client.disconnecting)
        self.assertTrue(server.disconnecting)
        self.assertEqual(harness.tunnels.count("green"), 0)
        (tunnel,) = harness.tunnels._pending
        self.assertEqual(tunnel.ended, "idle")
        self.assertEqual((tunnel.toUpstream, tunnel.toClient), (4, 4))
        # Both sides close: nothing is left scheduled.
        channel.connectionLost(Failure(ConnectionDone()))
        upstream.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(harness.reactor.getDelayedCalls(), [])
        self.assertEqual(harness.tunnels._pending, set())

    def test_closeGrace(self) -> None:
        """
        A side that does not take what it was sent before the close is cut
        off after L{CLOSE_GRACE} seconds; one that closes in time is not.
        """
        harness = Harness(TunnelSettings(idleTimeout=10.0))
        channel, client, upstream, server = harness.open()
        harness.reactor.advance(10)
        self.assertTrue(client.disconnecting and server.disconnecting)
        upstream.connectionLost(Failure(ConnectionDone()))
        harness.reactor.advance(CLOSE_GRACE - 0.1)
        self.assertFalse(client.disconnected)
        harness.reactor.advance(0.1)
        self.assertTrue(client.disconnected)
        self.assertFalse(server.disconnected)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_responseTimeout(self) -> None:
        """
        No answer to the upgrade within the response timeout: 504.
        """
        harness = Harness(TunnelSettings())
        channel, client = harness.connect()
        channel.dataReceived(UPGRADE)
        _, server, _ = harness.upstream()
        harness.reactor.advance(5)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 504 "), client.value())
        self.assertTrue(server.disconnecting)

    def test_badAnswer(self) -> None:
        """
        An answer that is not HTTP: 502.
        """
        harness = Harness(TunnelSettings())
        channel, client = harness.connect()
        channel.dataReceived(UPGRADE)
        upstream, _, _ = harness.upstream()
        upstream.dataReceived(b"SSH-2.0-OpenSSH\r\n\r\n")
        self.assertTrue(client.value().startswith(b"HTTP/1.1 502 "), client.value())

    def test_interim(self) -> None:
        """
        An interim answer (C{100 Continue}) before the C{101} is skipped.
        """
        harness = Harness(TunnelSettings())
        channel, client = harness.connect()
        channel.dataReceived(UPGRADE)
        upstream, _, _ = harness.upstream()
        upstream.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n" + SWITCHING)
        self.assertEqual(client.value(), SWITCHING)

    def test_notUpgraded(self) -> None:
        """
        A final answer other than C{101} is passed back as a response, and
        its connection is closed once it is complete.
        """
        harness = Harness(TunnelSettings())
        channel, client = harness.connect()
        channel.dataReceived(UPGRADE)
        upstream, server, _ = harness.upstream()
        upstream.dataReceived(
            b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n"
            b"Connection: keep-alive\r\nUpgrade: websocket\r\n\r\nnope"
        )
        answer = client.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 426 Upgrade Required\r\n"))
        self.assertTrue(answer.endswith(b"\r\n\r\nnope"), answer)
        self.assertNotIn(b"Upgrade: websocket", answer)
        self.assertTrue(server.disconnecting)
        self.assertEqual(harness.tunnels.count("green"), 0)


class DrainTests(SynchronousTestCase):
    """
    Tunnels left on an environment a switch moved away from.
    """

    def test_drainAfterTimeout(self) -> None:
        """
        After a switch, the old environment's tunnels stay open for the
        drain timeout, shown in the status, then close; new upgrades go to
        the new live environment.
        """
        harness = Harness(TunnelSettings(drainTimeout=30.0))
        _, client, _, server = harness.open()
        harness.reactor.advance(100)
        harness.controller.switch("blue")
        status = harness.tunnels.status()
        self.assertEqual(
            status["draining"],
            [
                {
                    "environment": "green",
                    "tunnels": 1,
                    "responses": 0,
                    "since": "1970-01-01T00:01:40.000Z",
                    "until": "1970-01-01T00:02:10.000Z",
                    "closes_in": 30.0,
                }
            ],
        )
        harness.reactor.advance(29.9)
        self.assertFalse(client.disconnecting)
        harness.reactor.advance(0.1)
        self.assertTrue(client.disconnecting)
        self.assertTrue(server.disconnecting)
        self.assertEqual(harness.tunnels.status()["draining"], [])
        self.assertEqual(harness.tunnels.drained, {"green": 1})
        channel, _ = harness.connect()
        channel.dataReceived(UPGRADE)
        _, _, port = harness.upstream()
        self.assertEqual(port, 5001)

    def test_zero(self) -> None:
        """
        A drain timeout of 0 closes them at once.
        """
        harness = Harness(TunnelSettings(drainTimeout=0.0))
        _, client, _, _ = harness.open()
        harness.controller.switch("blue")
        self.assertTrue(client.disconnecting)

    def test_never(self) -> None:
        """
        C{never}: a switch leaves them open.
        """
        harness = Harness(TunnelSettings(idleTimeout=1e6, drainTimeout=None))
        _, client, _, _ = harness.open()
        harness.controller.switch("blue")
        harness.reactor.advance(10000)
        self.assertFalse(client.disconnecting)
        self.assertEqual(harness.tunnels.status()["draining"], [])

    def test_failover(self) -> None:
        """
        A failover or a switch to a recovered standby (the old environment
        is down) closes them at once, even with C{never}.
        """
        for kind in ("failover", "recovered"):
            harness = Harness(TunnelSettings(drainTimeout=None))
            _, client, _, _ = harness.open()
            harness.tunnels.switched(Switch(0.0, "green", "blue", "down"), kind)
            self.assertTrue(client.disconnecting, kind)

    def test_switchBack(self) -> None:
        """
        Switching back before the drain ends keeps the tunnels: their
        environment is live again.
        """
        harness = Harness(TunnelSettings(drainTimeout=30.0))
        _, client, _, _ = harness.open()
        harness.controller.switch("blue")
        harness.reactor.advance(10)
        harness.controller.switch("green")
        harness.reactor.advance(100)
        self.assertFalse(client.disconnecting)
        self.assertEqual(harness.tunnels.status()["draining"], [])

    def test_metrics(self) -> None:
        """
        The metrics count open, opened and drained tunnels per environment.
        """
        harness = Harness(TunnelSettings(drainTimeout=0.0))
        harness.open()
        harness.open()
        samples = {
            (sample.name, sample.labels["environment"]): sample.value
            for metric in TunnelMetrics(harness.tunnels).collect()
            for sample in metric.samples
        }
        self.assertEqual(samples[("bluegreen_tunnels_open", "green")], 2)
        self.assertEqual(samples[("bluegreen_tunnels_open", "blue")], 0)
        harness.controller.switch("blue")
        samples = {
            (sample.name, sample.labels["environment"]): sample.value
            for metric in TunnelMetrics(harness.tunnels).collect()
            for sample in metric.samples
        }
        self.assertEqual(samples[("bluegreen_tunnels_open", "green")], 0)
        self.assertEqual(samples[("bluegreen_tunnels_opened_total", "green")], 2)
        self.assertEqual(samples[("bluegreen_tunnels_drained_total", "green")], 2)


def parse(*args: str) -> Options:
    """
    Parse options with both URLs and C{args}.
    """
    options = Options()
    options.parseOptions(
        ["--green", "http://127.0.0.1:5002", "--blue", "http://127.0.0.1:5001", *args]
    )
    return options


class OptionTests(SynchronousTestCase):
    """
    C{--tunnel-idle-timeout} and C{--drain-timeout}.
    """

    def test_defaults(self) -> None:
        """
        One hour idle (HAProxy's C{timeout tunnel} order of magnitude), a
        30 s drain.
        """
        self.assertEqual(parse().config.tunnel, TunnelSettings(3600.0, 30.0))

    def test_values(self) -> None:
        """
        Seconds, C{0} for the drain, or C{never}.
        """
        self.assertEqual(
            parse("--tunnel-idle-timeout", "0.5", "--drain-timeout", "0").config.tunnel,
            TunnelSettings(0.5, 0.0),
        )
        self.assertEqual(
            parse("--drain-timeout", "never").config.tunnel,
            TunnelSettings(3600.0, None),
        )

    def test_bad(self) -> None:
        """
        A bad value is refused with a message naming the option.
        """
        for args, message in [
            (
                ["--tunnel-idle-timeout", "0"],
                "--tunnel-idle-timeout: '0' is not a positive number of seconds",
            ),
            (
                ["--tunnel-idle-timeout", "forever"],
                "--tunnel-idle-timeout: 'forever' is not a positive number of seconds",
            ),
            (
                ["--drain-timeout", "-1"],
                "--drain-timeout: '-1' is not a number of seconds (0 or more) "
                "or 'never'",
            ),
            (
                ["--drain-timeout", "nan"],
                "--drain-timeout: 'nan' is not a number of seconds (0 or more) "
                "or 'never'",
            ),
        ]:
            error = self.assertRaises(usage.UsageError, parse, *args)
            self.assertEqual(str(error), message)
