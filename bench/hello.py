#!/usr/bin/env python
"""
The benchmark's Twisted hello-world server.

A plain L{twisted.web.server.Site} with default settings whose root is a leaf
L{Resource} answering every C{GET} with C{hello world}: the yardstick for
"what does Twisted Web itself cost per request".

Run as C{python bench/hello.py PORT}; it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import sys

from _serve import serve
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

BODY = b"hello world\n"


class Hello(Resource):
    """
    A leaf resource that renders L{BODY} for every path.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        """
        Answer with L{BODY}.

        @param request: the request being answered.
        @return: L{BODY}.
        """
        request.setHeader(b"content-type", b"text/plain")
        return BODY


def main(argv: list[str]) -> None:
    """
    Serve L{Hello} on 127.0.0.1 until killed.

    @param argv: C{[PORT]}.
    """
    (port,) = argv
    serve(port, Site(Hello()))


if __name__ == "__main__":
    main(sys.argv[1:])
