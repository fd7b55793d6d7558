# -*- test-case-name: tests.test_options,tests.test_options_safety -*-
"""
The checks of the admin API's options that need more than parsing: where
C{--admin} listens against C{--port} and the token (L{checkAdminListening}),
and the C{--admin-host} names (L{adminNames}).

Kept out of L{bluegreen.service.options} so that module stays one screenful
of option definitions and their order of checks.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.python import usage

from bluegreen.admin.guard import AdminNames, BadHost
from bluegreen.exposure import exposedInterface, listeningOn


def checkAdminListening(
    value: str, admin: str, port: str, proxy: str, token: bytes | None
) -> None:
    """
    Refuse an admin API on the proxied port, or one other machines could
    reach without a token.

    @param value: C{--admin} as given, for messages.
    @param admin: Its endpoint description.
    @param port: C{--port} as given, for messages.
    @param proxy: The proxy's endpoint description.
    @param token: The admin token, if any.
    @raise usage.UsageError: Naming C{--admin} and the problem.
    """
    listening, proxied = listeningOn(admin), listeningOn(proxy)
    if listening is not None and proxied is not None:
        # Port 0 (any free port) is never the same port twice.
        same = bool(listening.port and listening.port == proxied.port) or bool(
            listening.path and listening.path == proxied.path
        )
        if same:
            raise usage.UsageError(
                f"--admin: {value!r} is the proxied port (--port "
                f"{port}); the admin API needs its own"
            )
    exposed = exposedInterface(admin)
    if exposed is not None and token is None:
        raise usage.UsageError(
            f"--admin: {value!r} listens on {exposed}, so other machines "
            "could switch traffic: give --admin-token-file FILE, or listen "
            "on loopback only (e.g. --admin tcp:3091:interface=127.0.0.1)"
        )


def adminNames(values: Iterable[str]) -> AdminNames:
    """
    Check the C{--admin-host} values.

    @param values: The values, in order.
    @return: The names the admin API answers to beyond loopback and its own
        address.
    @raise usage.UsageError: Naming C{--admin-host}, for a value that is no
        host name or IP address (a port or scheme with it, say).
    """
    try:
        return AdminNames.fromOptions(values)
    except BadHost as e:
        raise usage.UsageError(
            f"--admin-host: {e}; give a name or address only, without "
            "scheme or port (e.g. --admin-host ops.example)"
        ) from None
