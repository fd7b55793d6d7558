# -*- test-case-name: tests.test_environment -*-
"""
Tests for L{bluegreen.environment}.
"""

from __future__ import annotations

import attrs
from twisted.trial.unittest import SynchronousTestCase

from bluegreen.environment import COLOURS, BadURL, Environment


class FromURLTests(SynchronousTestCase):
    """
    L{Environment.fromURL} parses an environment's base URL.
    """

    def test_http(self) -> None:
        """
        An C{http} URL with a port gives its scheme, host and port.
        """
        env = Environment.fromURL("green", "http://127.0.0.1:5002")
        self.assertEqual(
            env,
            Environment(
                name="green",
                url="http://127.0.0.1:5002",
                scheme="http",
                host="127.0.0.1",
                port=5002,
            ),
        )
        self.assertFalse(env.secure)

    def test_httpDefaultPort(self) -> None:
        """
        An C{http} URL without a port means port 80, written out in C{url}.
        """
        env = Environment.fromURL("blue", "http://example.com")
        self.assertEqual((env.port, env.url), (80, "http://example.com:80"))

    def test_httpsDefaultPort(self) -> None:
        """
        An C{https} URL without a port means port 443, and is secure.
        """
        env = Environment.fromURL("blue", "https://example.com")
        self.assertEqual(
            (env.scheme, env.port, env.url),
            ("https", 443, "https://example.com:443"),
        )
        self.assertTrue(env.secure)

    def test_emptyPortIsDefault(self) -> None:
        """
        A colon with no port after it means the scheme's default port.
        """
        env = Environment.fromURL("green", "http://example.com:")
        self.assertEqual(env.port, 80)

    def test_ipv6Literal(self) -> None:
        """
        An IPv6 literal is given in brackets; C{host} holds the bare address
        and C{url} puts the brackets back.
        """
        env = Environment.fromURL("green", "http://[::1]:5002")
        self.assertEqual(
            (env.host, env.port, env.url), ("::1", 5002, "http://[::1]:5002")
        )

    def test_ipv6LiteralDefaultPort(self) -> None:
        """
        An IPv6 literal without a port gets the scheme's default port.
        """
        env = Environment.fromURL("blue", "https://[2001:db8::1]")
        self.assertEqual(
            (env.host, env.port, env.url),
            ("2001:db8::1", 443, "https://[2001:db8::1]:443"),
        )

    def test_normalisation(self) -> None:
        """
        Surrounding spaces, upper-case scheme and host, and a trailing slash
        are normalised away.
        """
        env = Environment.fromURL("green", "  HTTP://Example.COM:8080/  ")
        self.assertEqual(
            env,
            Environment(
                name="green",
                url="http://example.com:8080",
                scheme="http",
                host="example.com",
                port=8080,
            ),
        )

    def test_nameKept(self) -> None:
        """
        The environment's name is the one given.
        """
        self.assertEqual(Environment.fromURL("blue", "http://h:1").name, "blue")

    def test_immutable(self) -> None:
        """
        An environment cannot be changed after it is made.
        """
        env = Environment.fromURL("green", "http://127.0.0.1:5002")
        with self.assertRaises(attrs.exceptions.FrozenInstanceError):
            env.port = 5001  # type: ignore[misc]

    def test_colours(self) -> None:
        """
        The environments are green and blue, in that order.
        """
        self.assertEqual(COLOURS, ("green", "blue"))


class BadURLTests(SynchronousTestCase):
    """
    L{Environment.fromURL} refuses URLs it cannot proxy to, saying why.
    """

    def assertBad(self, url: str, message: str) -> None:
        """
        Assert that C{url} is refused with exactly C{message}.

        @param url: The URL to parse.
        @param message: The expected message.
        """
        error = self.assertRaises(BadURL, Environment.fromURL, "green", url)
        self.assertEqual(str(error), message)

    def assertNotOrigin(self, url: str) -> None:
        """
        Assert that C{url} is refused for having more than an origin.
        """
        self.assertBad(
            url,
            f"{url!r} must be an origin only (scheme, host and "
            "port): the proxy forwards each request's own path unchanged",
        )

    def test_isValueError(self) -> None:
        """
        L{BadURL} is a L{ValueError}.
        """
        self.assertTrue(issubclass(BadURL, ValueError))

    def test_empty(self) -> None:
        """
        An empty (or blank) URL is refused.
        """
        self.assertBad("  ", "an empty URL; expected e.g. http://127.0.0.1:5002")

    def test_otherScheme(self) -> None:
        """
        A scheme other than http or https is refused.
        """
        self.assertBad(
            "ftp://example.com",
            "'ftp://example.com' must start with http:// or https:// "
            "(e.g. http://127.0.0.1:5002)",
        )

    def test_noScheme(self) -> None:
        """
        A bare host and port (no scheme) is refused.
        """
        self.assertBad(
            "127.0.0.1:5002",
            "'127.0.0.1:5002' must start with http:// or https:// "
            "(e.g. http://127.0.0.1:5002)",
        )

    def test_noHost(self) -> None:
        """
        A URL with a port but no host is refused.
        """
        self.assertBad("http://:5002", "'http://:5002' has no host name")

    def test_nothingAfterScheme(self) -> None:
        """
        A URL that is only a scheme is refused.
        """
        self.assertBad("https://", "'https://' has no host name")

    def test_path(self) -> None:
        """
        A URL with a path is refused: the client's path is forwarded as is.
        """
        self.assertNotOrigin("http://127.0.0.1:5002/x")

    def test_query(self) -> None:
        """
        A URL with a query is refused.
        """
        self.assertNotOrigin("http://h:1?a=b")

    def test_fragment(self) -> None:
        """
        A URL with a fragment is refused.
        """
        self.assertNotOrigin("http://h:1#top")

    def test_userInfo(self) -> None:
        """
        A URL with user information is refused, without echoing it (it may
        hold a password).
        """
        self.assertBad(
            "http://user:secret@h:1",
            "the URL for host 'h' must not contain user information (user:password@)",
        )

    def test_portOutOfRange(self) -> None:
        """
        A port above 65535 is refused.
        """
        self.assertBad(
            "http://h:99999",
            "'http://h:99999' is not a valid URL (Port out of range 0-65535)",
        )

    def test_portNotANumber(self) -> None:
        """
        A port that is not a number is refused.
        """
        error = self.assertRaises(BadURL, Environment.fromURL, "green", "http://h:abc")
        self.assertTrue(
            str(error).startswith("'http://h:abc' is not a valid URL ("), str(error)
        )

    def test_portZero(self) -> None:
        """
        Port 0 is refused: nothing can be connected to there.
        """
        self.assertBad(
            "http://h:0", "'http://h:0': port 0 is not a port one can connect to"
        )

    def test_unclosedIPv6(self) -> None:
        """
        An IPv6 literal without its closing bracket is refused.
        """
        self.assertBad(
            "http://[::1", "'http://[::1' is not a valid URL (Invalid IPv6 URL)"
        )


class HostHeaderTests(SynchronousTestCase):
    """
    L{Environment.hostHeader} names the environment's origin, omitting the
    scheme's default port.
    """

    def hostHeader(self, url: str) -> bytes:
        """
        @param url: An environment URL.
        @return: The environment's C{Host} header value.
        """
        return Environment.fromURL("green", url).hostHeader

    def test_httpDefaultPortOmitted(self) -> None:
        """
        Port 80 is left out for http.
        """
        self.assertEqual(self.hostHeader("http://example.com:80"), b"example.com")

    def test_httpsDefaultPortOmitted(self) -> None:
        """
        Port 443 is left out for https.
        """
        self.assertEqual(self.hostHeader("https://example.com"), b"example.com")

    def test_otherPortKept(self) -> None:
        """
        Any other port is given.
        """
        self.assertEqual(self.hostHeader("http://127.0.0.1:5002"), b"127.0.0.1:5002")

    def test_defaultPortOfOtherScheme(self) -> None:
        """
        Port 443 on http, and port 80 on https, are not defaults and are given.
        """
        self.assertEqual(
            (
                self.hostHeader("http://example.com:443"),
                self.hostHeader("https://example.com:80"),
            ),
            (b"example.com:443", b"example.com:80"),
        )

    def test_ipv6(self) -> None:
        """
        An IPv6 literal is bracketed, with or without a port.
        """
        self.assertEqual(
            (self.hostHeader("http://[::1]:5002"), self.hostHeader("http://[::1]")),
            (b"[::1]:5002", b"[::1]"),
        )

    def test_internationalName(self) -> None:
        """
        A non-ASCII host name is sent IDNA-encoded.
        """
        self.assertEqual(
            self.hostHeader(
                "http://b\N{LATIN SMALL LETTER U WITH DIAERESIS}cher.example:8080"
            ),
            b"xn--bcher-kva.example:8080",
        )
