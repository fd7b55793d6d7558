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

from _serve import serve


def main(argv: list[str]) -> None:
    """
    Proxy every request on 127.0.0.1:PORT to 127.0.0.1:BACKENDPORT until
    killed.

    @param argv: C{[PORT, BACKENDPORT]}.
    """
    # twisted.web.proxy builds on deprecated APIs (HTTPClient and friends);
    # their warnings are noise here.
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    from twisted.web.proxy import ReverseProxyResource
    from twisted.web.server import Site

    port, backendPort = argv
    serve(port, Site(ReverseProxyResource("127.0.0.1", int(backendPort), b"")))


if __name__ == "__main__":
    main(sys.argv[1:])
