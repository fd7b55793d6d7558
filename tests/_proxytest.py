# -*- test-case-name: tests.test_proxy_integration -*-
"""
The base of the proxy's integration tests.

Each test runs real backends (L{tests._backends.BackendFactory}) and the real
proxy (built from L{bluegreen.service.tap} options) on 127.0.0.1 with free
ports, and talks to the proxy with a real client: treq over a persistent
connection pool, or L{tests._rawclient.RawClient} when exact bytes matter.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests._backends import (
    BackendFactory,
    Handler,
    ProxyUnderTest,
    startProxyFor,
)
from tests._logs import failOnLoggedErrors
from tests._rawclient import RawResponse
from tests._util import PATIENCE


def tokens(body: bytes) -> list[bytes]:
    """
    The environment names a L{named} body is made of.
    """
    return [token for token in body.split(b";") if token]


class IntegrationTestCase(TestCase):
    """
    Captures the global log and fails the test if anything logged an error
    (checked after every cleanup, so shutdown errors count too).
    """

    timeout = 2 * PATIENCE

    def setUp(self) -> None:
        """
        Start capturing the log.
        """
        self.logs = failOnLoggedErrors(self)

    def startProxyFor(
        self,
        handler: Handler,
        *extra: str,
        onHead: Handler | None = None,
        health: bool = False,
    ) -> tuple[BackendFactory, ProxyUnderTest]:
        """
        See L{tests._backends.startProxyFor}.
        """
        return startProxyFor(self, handler, *extra, onHead=onHead, health=health)

    def assertPlainError(self, response: RawResponse, status: int, *words: str) -> None:
        """
        Assert C{response} is the proxy's plain-text error C{status} naming
        the GREEN environment and every one of C{words}, without a traceback.
        """
        self.assertEqual(response.code, status, response.text)
        self.assertTrue(response.complete)
        self.assertEqual(
            response.values(b"content-type"), [b"text/plain; charset=utf-8"]
        )
        text = response.text
        self.assertIn("green", text)
        for word in words:
            self.assertIn(word, text)
        self.assertNotIn("Traceback", text)
        self.assertNotIn('File "', text)
        self.assertLess(len(text), 500, text)
