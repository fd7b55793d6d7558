# -*- test-case-name: tests.test_meow -*-
"""
Run the sample app::

    python -m bluegreen.demo.meow --port tcp:3000:interface=127.0.0.1 \\
        --db data/meowio.db --redis redis://127.0.0.1:6379/0 --name green

It logs to standard output, including C{meow <name> listening on
http://HOST:PORT/} once it accepts connections, and stops on C{SIGTERM} or
C{SIGINT}.
"""

from __future__ import annotations

import sys

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.python import usage
from twisted.web.server import Site

from .app import Root
from .db import Database
from .flag import FlagReactor, FlagReader, RedisURL

_log = Logger()


class Options(usage.Options):
    """
    The app's command line.
    """

    optParameters = [
        ["port", "p", "tcp:3000:interface=127.0.0.1", "Where to listen (endpoint)."],
        ["db", "d", "data/meowio.db", "The SQLite database (created if missing)."],
        ["redis", "r", "redis://127.0.0.1:6379/0", "This environment's Redis."],
        ["name", "n", "meow", "This environment's name, shown on the page."],
        ["redis-timeout", None, "0.5", "Seconds a flag read may take."],
    ]

    def postOptions(self) -> None:
        """
        Check the Redis URL and the timeout.
        """
        try:
            self["redisURL"] = RedisURL.parse(self["redis"])
        except ValueError as e:
            raise usage.UsageError(f"--redis: {e}") from None
        try:
            self["redis-timeout"] = float(self["redis-timeout"])
        except ValueError:
            raise usage.UsageError("--redis-timeout must be a number") from None
        if not self["redis-timeout"] > 0:
            raise usage.UsageError("--redis-timeout must be positive")


async def run(reactor: FlagReactor, options: Options) -> None:
    """
    Open the database, listen, and serve until the reactor stops.

    @param reactor: The reactor.
    @param options: The parsed command line.
    """
    db = Database(options["db"])
    await db.open()
    flags = FlagReader(reactor, options["redisURL"], options["redis-timeout"])
    site = Site(Root(options["name"], db, flags))
    site.displayTracebacks = False
    endpoint = serverFromString(reactor, options["port"])
    port = await endpoint.listen(site)
    address = port.getHost()
    _log.info(
        "meow {name} listening on http://{host}:{port}/",
        name=options["name"],
        host=address.host,
        port=address.port,
    )
    await Deferred()


def main(reactor: FlagReactor, *argv: str) -> Deferred[None]:
    """
    The entry point for L{twisted.internet.task.react}.

    @param reactor: The reactor.
    @param argv: The arguments.
    @return: Fires when the app is done (never, unless it fails to start).
    """
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        sys.stderr.write(f"{options}\nerror: {e}\n")
        raise SystemExit(2) from None
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    return Deferred.fromCoroutine(run(reactor, options))


if __name__ == "__main__":
    from twisted.internet.task import react

    react(main, sys.argv[1:])
