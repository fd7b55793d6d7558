# -*- test-case-name: tests.test_meow -*-
"""
Tests for L{bluegreen.demo.meow}, the workshop's sample app: unit tests of
its helpers, and the app run as a real process (C{python -m
bluegreen.demo.meow}) on a free port, with a temporary database and a real
C{redis-server} (L{tests._redis}), spoken to over HTTP.
"""

from __future__ import annotations

import json
import os
import re
import sys
from io import BytesIO
from typing import Any, cast

import treq
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.test.requesthelper import DummyChannel

from bluegreen.demo.meow import _web, index
from bluegreen.demo.meow._images import PALETTE, catPNG
from bluegreen.demo.meow.app import MAX_IMAGE, imageType
from bluegreen.demo.meow.db import seedFacts, seedImages
from bluegreen.demo.meow.flag import FlagReactor, FlagReader, RedisURL, encode
from tests._util import PATIENCE

from ._redis import Collect as _Collect
from ._redis import RedisProcess, startRedis

reactor: Any = _reactor

#: The recent uploads' images on the home page, in order.
_CAT = re.compile(rb'data-cat="(\d+)"')


class HelperTests(SynchronousTestCase):
    """
    The app's pure helpers.
    """

    def test_redisURL(self) -> None:
        """
        C{redis://} and C{unix://} URLs are parsed; others are refused.
        """
        self.assertEqual(
            RedisURL.parse("redis://:s%40cret@127.0.0.1:7000/2"),
            RedisURL("127.0.0.1", 7000, None, 2, "s@cret"),
        )
        self.assertEqual(
            RedisURL.parse("redis://localhost"),
            RedisURL("localhost", 6379, None, 0, None),
        )
        self.assertEqual(
            RedisURL.parse("unix:///tmp/r.sock?db=3"),
            RedisURL(None, 0, "/tmp/r.sock", 3, None),
        )
        self.assertRaises(ValueError, RedisURL.parse, "http://x/")

    def test_encode(self) -> None:
        """
        Commands are encoded in RESP.
        """
        self.assertEqual(
            encode(b"GET", b"RECENT"), b"*2\r\n$3\r\nGET\r\n$6\r\nRECENT\r\n"
        )

    def test_imageType(self) -> None:
        """
        PNG, JPEG and GIF are told by their first bytes; nothing else passes.
        """
        self.assertEqual(imageType(catPNG()), "image/png")
        self.assertEqual(imageType(b"\xff\xd8\xff\xe0rest"), "image/jpeg")
        self.assertEqual(imageType(b"GIF89a..."), "image/gif")
        self.assertIsNone(imageType(b"<svg/>"))
        self.assertIsNone(imageType(b""))

    def test_seeds(self) -> None:
        """
        The app ships a few dozen facts and a handful of PNG images.
        """
        self.assertGreaterEqual(len(seedFacts()), 30)
        images = seedImages()
        self.assertGreaterEqual(len(images), 5)
        for image in images:
            self.assertEqual(imageType(image), "image/png")
        self.assertEqual(
            images, [catPNG(fur, background) for _, fur, background in PALETTE]
        )

    def test_status(self) -> None:
        """
        The home page's status is one constant, 200 (the bad commit's line).
        """
        self.assertEqual(index.STATUS, 200)


class RenderTests(SynchronousTestCase):
    """
    L{_web.render} answers when the work is done, unless the client has gone.
    """

    def request(self) -> tuple[Request, DummyChannel]:
        """
        @return: A real twisted.web request on a channel that records writes.
        """
        channel = DummyChannel()
        request = Request(channel)
        request.method = b"GET"
        request.uri = request.path = b"/"
        request.clientproto = b"HTTP/1.1"
        return request, channel

    def test_answers(self) -> None:
        """
        The answer is written once the work finishes.
        """
        request, channel = self.request()
        ready: Deferred[None] = Deferred()

        async def work() -> None:
            await ready
            _web.finish(request, 200, b"meow", b"text/plain")

        self.assertEqual(_web.render(request, work()), NOT_DONE_YET)
        self.assertFalse(request.finished)
        ready.callback(None)
        self.assertTrue(request.finished)
        self.assertIn(b"meow", channel.transport.written.getvalue())

    def test_clientGone(self) -> None:
        """
        A client that left before the work finished gets nothing, and
        nothing is logged as failed (twisted.web would refuse to finish it).
        """
        request, channel = self.request()
        ready: Deferred[None] = Deferred()

        async def work() -> None:
            await ready
            _web.finish(request, 200, b"meow", b"text/plain")

        _web.render(request, work())
        request.connectionLost(Failure(ConnectionDone()))
        ready.callback(None)
        self.assertFalse(request.finished)
        self.assertEqual(channel.transport.written.getvalue(), b"")
        self.assertEqual(self.flushLoggedErrors(), [])


class MeowApp:
    """
    The app, run as a process by a test.

    @ivar port: Its HTTP port on 127.0.0.1.
    """

    def __init__(self, testCase: TestCase, redis: RedisProcess) -> None:
        """
        @param testCase: The test (for clean-up).
        @param redis: The environment's Redis.
        """
        self.testCase = testCase
        self.redis = redis
        self.directory = testCase.mktemp()
        self.db = os.path.join(self.directory, "data", "meowio.db")
        self.port = 0
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self._protocol: _Collect | None = None
        self._process: Any = None

    @property
    def output(self) -> str:
        """
        What the app has printed.
        """
        assert self._protocol is not None
        return (self._protocol.out + self._protocol.err).decode("utf-8", "replace")

    async def start(self) -> None:
        """
        Start it and wait until it listens.
        """
        protocol = _Collect("listening on")
        self._protocol = protocol
        args = [
            sys.executable,
            "-m",
            "bluegreen.demo.meow",
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--db",
            self.db,
            "--redis",
            self.redis.url,
            "--name",
            "green",
        ]
        self._process = reactor.spawnProcess(
            protocol, sys.executable, args, env=dict(os.environ)
        )
        self.testCase.addCleanup(lambda: Deferred.fromCoroutine(self.stop()))
        ready = protocol.ready
        ready.addTimeout(20, reactor)
        await ready
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", self.output)
        assert found is not None, self.output
        self.port = int(found.group(1))

    async def stop(self) -> None:
        """
        Stop it (C{SIGTERM}) and wait until it is gone.
        """
        protocol = self._protocol
        if protocol is None or protocol.exited:
            return
        self._process.signalProcess("TERM")
        await protocol.ended

    def url(self, path: str) -> str:
        """
        @param path: A path.
        @return: Its URL on the app.
        """
        return f"http://127.0.0.1:{self.port}{path}"

    async def get(self, path: str) -> tuple[int, bytes]:
        """
        @return: The status and body of C{GET path}.
        """
        response = await treq.get(self.url(path), pool=self.pool)
        return response.code, await treq.content(response)

    async def postJSON(self, path: str, body: bytes) -> tuple[int, Any]:
        """
        @return: The status and decoded JSON of C{POST path}.
        """
        response = await treq.post(
            self.url(path),
            data=body,
            headers=Headers({b"Content-Type": [b"application/json"]}),
            pool=self.pool,
        )
        return response.code, json.loads(await treq.content(response))

    async def upload(
        self, data: bytes, field: str = "image"
    ) -> tuple[int, dict[str, Any]]:
        """
        Upload C{data} as multipart form data.

        @return: The status and decoded JSON.
        """
        response = await treq.post(
            self.url("/upload"),
            files={field: ("cat.png", "image/png", FileBodyProducer(BytesIO(data)))},
            pool=self.pool,
        )
        return response.code, json.loads(await treq.content(response))

    async def recent(self) -> list[int] | None:
        """
        @return: The ids of the recent uploads on the home page, or L{None}
            when the page does not show them.
        """
        code, body = await self.get("/")
        assert code == 200, (code, body)
        if b"Recent uploads" not in body:
            return None
        return [int(n) for n in _CAT.findall(body)]


class FlagTimeoutTests(SynchronousTestCase):
    """
    L{FlagReader} never lets a page wait on Redis: the timing, on a clock.
    """

    def reader(self) -> tuple[FlagReader, MemoryReactorClock, Deferred[bool]]:
        """
        Start reading C{RECENT} from a Redis (a UNIX socket) on a memory
        reactor.

        @return: The reader, its reactor, and the read.
        """
        clock = MemoryReactorClock()
        url = RedisURL.parse("unix:///run/redis.sock")
        reader = FlagReader(cast(FlagReactor, clock), url, 0.5)
        return reader, clock, Deferred.fromCoroutine(reader.isOn("RECENT"))

    def test_frozen(self) -> None:
        """
        A Redis that accepts the connection but never answers reads as off
        once the timeout has passed, and not before.
        """
        _, clock, read = self.reader()
        [(path, factory, _, _)] = clock.unixClients
        self.assertEqual(path, "/run/redis.sock")
        factory.buildProtocol(None).makeConnection(StringTransport())
        clock.advance(0.49)
        self.assertNoResult(read)
        clock.advance(0.01)
        self.assertIs(self.successResultOf(read), False)

    def test_unreachable(self) -> None:
        """
        A Redis whose connection never completes reads as off once the
        timeout has passed.
        """
        _, clock, read = self.reader()
        clock.advance(0.49)
        self.assertNoResult(read)
        clock.advance(0.01)
        self.assertIs(self.successResultOf(read), False)


class MeowProcessTests(TestCase):
    """
    The app as a process, with a real Redis.
    """

    #: Each test starts a Redis and the app, then waits on them a few times.
    timeout = 4 * PATIENCE

    async def setUp(self) -> None:  # type: ignore[override]
        """
        Start a Redis and the app.
        """
        self.redis = await startRedis(self)
        self.app = MeowApp(self, self.redis)
        await self.app.start()

    async def test_home(self) -> None:
        """
        The home page says which environment it is and lists the best facts;
        without C{RECENT} it shows no recent uploads.
        """
        code, body = await self.app.get("/")
        self.assertEqual(code, 200)
        self.assertIn(b'id="environment">green<', body)
        self.assertIn(b"Best cat facts", body)
        self.assertEqual(len(re.findall(rb'<li id="fact-', body)), 10)
        self.assertIsNone(await self.app.recent())
        self.assertTrue(os.path.exists(self.app.db))

    async def test_recentFlag(self) -> None:
        """
        C{RECENT} = C{ON} shows the 5 newest images, read on every request;
        anything else hides them.
        """
        await self.redis.cli("SET", "RECENT", "OFF")
        self.assertIsNone(await self.app.recent())
        await self.redis.cli("SET", "RECENT", "ON")
        self.assertEqual(await self.app.recent(), [6, 5, 4, 3, 2])
        code, body = await self.app.get("/cat/6")
        self.assertEqual(code, 200)
        self.assertEqual(imageType(body), "image/png")
        await self.redis.cli("SET", "RECENT", "on please")
        self.assertIsNone(await self.app.recent())

    async def test_redisDown(self) -> None:
        """
        With its Redis killed, or frozen, the home page still answers 200,
        without the recent uploads; once Redis is back, the flag counts
        again.  (That it answers promptly, within the flag's timeout, is
        L{FlagTimeoutTests}' part, on a clock.)
        """
        await self.redis.cli("SET", "RECENT", "ON")
        self.assertIsNotNone(await self.app.recent())
        await self.redis.kill()
        self.assertIsNone(await self.app.recent())
        await self.redis.start()
        self.redis.pause()
        self.assertIsNone(await self.app.recent())
        self.redis.resume()
        await self.redis.cli("SET", "RECENT", "ON")
        self.assertIsNotNone(await self.app.recent())
        self.assertIn("Redis unavailable", self.app.output)

    async def test_upload(self) -> None:
        """
        An uploaded PNG is stored, served, and first in the recent uploads.
        """
        await self.redis.cli("SET", "RECENT", "ON")
        image = catPNG((10, 200, 10), (0, 0, 0), size=20)
        code, result = await self.app.upload(image)
        self.assertEqual(code, 201)
        self.assertEqual(result["content_type"], "image/png")
        catId = result["id"]
        self.assertEqual(await self.app.recent(), [catId, 6, 5, 4, 3])
        self.assertEqual(await self.app.get(f"/cat/{catId}"), (200, image))
        code, _ = await self.app.get("/cat/9999")
        self.assertEqual(code, 404)

    async def test_badUploads(self) -> None:
        """
        Something that is not an image, an image too large and a missing
        field are refused with 400 and a clear message; nothing is stored.
        """
        await self.redis.cli("SET", "RECENT", "ON")
        code, result = await self.app.upload(b"<html>not a cat</html>")
        self.assertEqual(code, 400)
        self.assertIn("not an image", result["error"])
        big = catPNG() + b"\0" * MAX_IMAGE
        code, result = await self.app.upload(big)
        self.assertEqual(code, 400)
        self.assertIn("too large", result["error"])
        code, result = await self.app.upload(catPNG(), field="picture")
        self.assertEqual(code, 400)
        self.assertIn("missing field image", result["error"])
        code, result = await self.app.postJSON("/upload", b"{}")
        self.assertEqual(code, 400)
        self.assertIn("multipart/form-data", result["error"])
        self.assertEqual(await self.app.recent(), [6, 5, 4, 3, 2])

    async def test_facts(self) -> None:
        """
        A fact is served by id; unknown ids are 404.
        """
        code, body = await self.app.get("/fact/3")
        self.assertEqual(code, 200)
        fact = json.loads(body)
        self.assertEqual(fact["id"], 3)
        self.assertEqual(fact["text"], seedFacts()[2])
        self.assertEqual((fact["votes"], fact["score"]), (0, 0))
        for path in ("/fact/9999", "/fact/abc", "/fact/3/nope", "/nothing"):
            code, body = await self.app.get(path)
            self.assertEqual(code, 404, path)
            self.assertIn("error", json.loads(body))

    async def test_votes(self) -> None:
        """
        Valid votes are counted and move the fact up the home page; invalid
        ones are 400 and votes for unknown facts 404.
        """
        code, fact = await self.app.postJSON("/fact/20/vote", b'{"score": 5}')
        self.assertEqual(code, 201)
        self.assertEqual((fact["id"], fact["votes"], fact["score"]), (20, 1, 5))
        code, fact = await self.app.postJSON("/fact/20/vote", b'{"score": 1}')
        self.assertEqual((code, fact["votes"], fact["score"]), (201, 2, 6))
        _, body = await self.app.get("/")
        self.assertLess(body.index(b'id="fact-20"'), body.index(b'id="fact-1"'))
        for bad in (
            b'{"score": 0}',
            b'{"score": 6}',
            b'{"score": 2.5}',
            b'{"score": "3"}',
            b'{"score": true}',
            b"{}",
            b"[5]",
            b"not json",
            b'{"score": 5' + b" " * 2000 + b"}",
        ):
            code, result = await self.app.postJSON("/fact/20/vote", bad)
            self.assertEqual(code, 400, bad)
            self.assertIn("score", result["error"])
        code, result = await self.app.postJSON("/fact/9999/vote", b'{"score": 3}')
        self.assertEqual(code, 404)
        _, body = await self.app.get("/fact/20")
        self.assertEqual(json.loads(body)["votes"], 2)

    async def test_health(self) -> None:
        """
        C{/health} answers 200 with the environment's name, even without
        Redis.
        """
        await self.redis.kill()
        code, body = await self.app.get("/health")
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body), {"status": "ok", "name": "green"})

    async def test_restartKeepsData(self) -> None:
        """
        The database is created once: a restarted app finds the votes and
        uploads made before, and does not seed again.
        """
        await self.app.postJSON("/fact/7/vote", b'{"score": 4}')
        _, result = await self.app.upload(catPNG())
        await self.app.stop()
        await self.app.start()
        _, body = await self.app.get("/fact/7")
        self.assertEqual(json.loads(body)["votes"], 1)
        await self.redis.cli("SET", "RECENT", "ON")
        self.assertEqual(await self.app.recent(), [result["id"], 6, 5, 4, 3])
