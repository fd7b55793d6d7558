# -*- test-case-name: tests.test_environment,tests.test_options_safety -*-
"""
The two environments bluegreen sits in front of, as immutable values.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from attrs import frozen

#: The environment names, in the order they are shown to operators.
COLOURS = ("green", "blue")


class BadURL(ValueError):
    """
    An environment URL that bluegreen cannot proxy to; the message says why.
    """


@frozen
class Environment:
    """
    One deployment environment: where its app listens.

    Instances are immutable, so a reference to one is a consistent snapshot
    that a request can hold for its whole life.

    @ivar name: C{"green"} or C{"blue"}.
    @ivar url: The base URL as the operator wrote it (normalised).
    @ivar scheme: C{"http"} or C{"https"}.
    @ivar host: Host name or IP address literal (without IPv6 brackets).
    @ivar port: TCP port.
    """

    name: str
    url: str
    scheme: str
    host: str
    port: int

    @property
    def secure(self) -> bool:
        """
        C{True} when the environment is reached over TLS.
        """
        return self.scheme == "https"

    @property
    def hostHeader(self) -> bytes:
        """
        The C{Host} header value that names this environment's origin.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        if self.port != default:
            host = f"{host}:{self.port}"
        return host.encode("idna" if not host.isascii() else "ascii")

    @classmethod
    def fromURL(cls, name: str, url: str) -> Environment:
        """
        Parse an environment's base URL.

        Only the origin is used: a URL with a path, query, fragment or user
        information is refused rather than silently ignored, because the
        proxy forwards the client's path unchanged.

        @param name: The environment's name (C{"green"} or C{"blue"}).
        @param url: An C{http://} or C{https://} URL such as
            C{http://127.0.0.1:5002}.
        @return: The environment.
        @raise BadURL: If C{url} is not usable; the message says why.
        """
        text = url.strip()
        if not text:
            raise BadURL("an empty URL; expected e.g. http://127.0.0.1:5002")
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as e:
            raise BadURL(f"{url!r} is not a valid URL ({e})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise BadURL(
                f"{url!r} must start with http:// or https:// "
                "(e.g. http://127.0.0.1:5002)"
            )
        host = parts.hostname
        if not host:
            raise BadURL(f"{url!r} has no host name")
        if parts.username is not None or parts.password is not None:
            # Not echoed: the user information may hold a password.
            raise BadURL(
                f"the URL for host {parts.hostname!r} must not contain user "
                "information (user:password@)"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise BadURL(
                f"{url!r} must be an origin only (scheme, host and port): "
                "the proxy forwards each request's own path unchanged"
            )
        if port is None:
            port = 443 if scheme == "https" else 80
        if port == 0:
            raise BadURL(f"{url!r}: port 0 is not a port one can connect to")
        display = f"[{host}]" if ":" in host else host
        return cls(
            name=name,
            url=f"{scheme}://{display}:{port}",
            scheme=scheme,
            host=host,
            port=port,
        )


def checkDistinct(environments: Mapping[str, Environment], url: str) -> None:
    """
    Check that the environment added last to C{environments} is not at
    another one's origin (compared normalised: scheme, host and port), for
    GREEN and BLUE must be two apps.

    @param environments: The environments so far, in order.
    @param url: The last one's URL as given, for the message.
    @raise BadURL: If another has the same origin.
    """
    *others, last = environments.values()
    for other in others:
        if other.url == last.url:
            raise BadURL(
                f"{url!r} is the same origin as --{other.name} ({other.url}); "
                f"{other.name.upper()} and {last.name.upper()} must be two "
                "different apps"
            )
