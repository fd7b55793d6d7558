# -*- test-case-name: tests.test_failover_integration,tests.test_failover_evidence -*-
"""
A small backend app whose behaviour can be changed while it runs, for the
failover tests and C{bench/failover.py}.

Run it as a separate process::

    python tests/_apps.py --port 0 --name green

It listens on 127.0.0.1 (C{--port 0} picks a free port) and, once listening,
prints one JSON line on standard output, e.g.
C{{"ready": true, "name": "green", "port": 41234}}; its own log goes to
standard error.

Requests:

  - C{GET /...}: C{200} with the JSON body C{{"env": NAME, "method": "GET",
    "path": "/..."}};
  - C{POST /...}: C{200} with C{{"env": NAME, "method": "POST", "path": ...,
    "echo": BODY}} (the request body, as text);
  - C{/_drop/NAME}: if NAME is the app's name or C{all}, the connection is
    closed without an answer (one route's bug), in every mode;
  - C{POST /_control/mode} with the body C{ok}, C{fail500} or C{hang}:
    changes how every other request is answered, answers C{200} with the
    new mode; C{GET /_control/mode} says the current mode.

Modes:

  - C{ok}: as above;
  - C{fail500}: C{500} with C{{"env": NAME, "error": "failing on purpose"}};
  - C{hang}: the request is accepted and never answered (the connection
    stays open until the client gives up).

The control endpoint answers in every mode.  Every response carries a
C{Content-Length}, so it leaves in one write.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IListeningPort
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

#: The modes C{POST /_control/mode} accepts.
MODES = ("ok", "fail500", "hang")

#: The control endpoint.
CONTROL_PATH = b"/_control/mode"

#: Requests under this prefix naming the app (or C{all}) are dropped.
DROP_PREFIX = b"/_drop/"


class App(Resource):
    """
    The whole app: one leaf resource answering every path.

    @ivar name: The environment it plays (C{green}, C{blue}), named in
        every response.
    @ivar mode: How it answers: one of L{MODES}.
    @ivar hanging: The requests held open in C{hang} mode.
    """

    isLeaf = True

    def __init__(self, name: str, mode: str = "ok") -> None:
        super().__init__()
        self.name = name
        self.mode = mode
        self.hanging: set[Request] = set()

    def render(self, request: Request) -> bytes | int:
        """
        Answer C{request} as the current mode says.
        """
        if request.path == CONTROL_PATH:
            return self._control(request)
        if request.path.startswith(DROP_PREFIX) and request.path[
            len(DROP_PREFIX) :
        ] in (self.name.encode(), b"all"):
            # Hang up before any response byte, as a route that crashes its
            # worker does.
            request.loseConnection()
            return NOT_DONE_YET
        if self.mode == "hang":
            self._hang(request)
            return NOT_DONE_YET
        method = (request.method or b"").decode("ascii", "replace")
        path = (request.uri or b"").decode("utf-8", "replace")
        if self.mode == "fail500":
            return self._json(
                request, 500, {"env": self.name, "error": "failing on purpose"}
            )
        document: dict[str, Any] = {"env": self.name, "method": method, "path": path}
        if method == "POST":
            content = request.content
            data = content.read() if content is not None else b""
            document["echo"] = data.decode("utf-8", "replace")
        return self._json(request, 200, document)

    def _control(self, request: Request) -> bytes:
        if request.method == b"POST":
            content = request.content
            wanted = (content.read() if content is not None else b"").strip()
            mode = wanted.decode("ascii", "replace")
            if mode not in MODES:
                return self._json(
                    request,
                    400,
                    {"env": self.name, "error": f"unknown mode {mode!r}"},
                )
            self.mode = mode
        return self._json(request, 200, {"env": self.name, "mode": self.mode})

    def _hang(self, request: Request) -> None:
        self.hanging.add(request)
        request.notifyFinish().addBoth(lambda _: self.hanging.discard(request))

    @staticmethod
    def _json(request: Request, code: int, document: dict[str, Any]) -> bytes:
        body = json.dumps(document).encode("utf-8")
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        return body


class QuietSite(Site):
    """
    A L{Site} that writes no access log (thousands of lines per test).
    """

    def log(self, request: Any) -> None:
        """
        Do nothing.
        """


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    """
    @param argv: The arguments, or L{None} for C{sys.argv}.
    @return: The parsed arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--name", required=True, help="green or blue")
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--interface", default="127.0.0.1")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """
    Listen, print the ready line and serve until SIGTERM.
    """
    args = parseArgs(argv)
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    app = App(args.name, args.mode)
    site = QuietSite(app)
    site.noisy = False
    port: IListeningPort = reactor.listenTCP(args.port, site, interface=args.interface)
    number = port.getHost().port  # type: ignore[attr-defined]
    print(
        json.dumps({"ready": True, "name": args.name, "port": number}),
        flush=True,
    )
    reactor.run()


if __name__ == "__main__":
    main()
