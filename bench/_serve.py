"""
How the benchmark's own servers listen: on 127.0.0.1 only, with a deep
backlog (wrk opens its connections all at once), until killed.

Imported by C{bench/backend.py}, C{bench/hello.py} and C{bench/stockproxy.py}
(each run as a script, so this directory is on the path).
"""

from __future__ import annotations

from twisted.internet.interfaces import IProtocolFactory


def serve(port: str, factory: IProtocolFactory) -> None:
    """
    Serve C{factory} on 127.0.0.1:C{port} until killed.

    @param port: The port number, as given on the command line.
    @param factory: Builds the server's protocols.
    """
    from twisted.internet import reactor

    # Twisted annotates listenTCP's factory as ServerFactory[_ProtoWithFactory],
    # which no other factory matches (Factory is invariant in its protocol
    # type), although any IProtocolFactory works.
    reactor.listenTCP(
        int(port),
        factory,  # type: ignore[arg-type]
        backlog=1024,
        interface="127.0.0.1",
    )
    reactor.run()
