#!/usr/bin/env python
"""
The benchmark's stock Twisted reverse proxy.

A plain L{twisted.web.server.Site} with default settings whose root is a
L{twisted.web.proxy.ReverseProxyResource} pointing at the fast backend.  It
opens a new backend connection (HTTP/1.0, C{Connection: close}) per request,
which is the main thing bluegreen is meant to do better.

Run as C{python bench/stockproxy.py PORT BACKENDPORT}; both are on 127.0.0.1.
"""

from __future__ import annotations

import sys
import warnings


def main(argv: list[str]) -> None:
    """
    Proxy every request on 127.0.0.1:PORT to 127.0.0.1:BACKENDPORT until
    killed.

    @param argv: C{[PORT, BACKENDPORT]}.
    """
    # twisted.web.proxy builds on deprecated APIs (HTTPClient and friends);
    # their warnings are noise here.
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    from twisted.internet import reactor
    from twisted.web.proxy import ReverseProxyResource
    from twisted.web.server import Site

    port, backendPort = argv
    root = ReverseProxyResource("127.0.0.1", int(backendPort), b"")
    # Twisted annotates listenTCP's factory as ServerFactory[_ProtoWithFactory],
    # which Site (a ServerFactory[HTTPChannel]) does not match: Factory is
    # invariant in its protocol type.
    reactor.listenTCP(
        int(port),
        Site(root),  # type: ignore[arg-type]
        backlog=1024,
        interface="127.0.0.1",
    )
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
