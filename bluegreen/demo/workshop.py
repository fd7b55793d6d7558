# -*- test-case-name: tests.test_demo -*-
"""
C{bluegreen demo}: the workshop's infrastructure on one machine.

Under C{DIR} (default C{./bluegreen-demo}), for each of GREEN and BLUE:

    - C{DIR/green.git}, a bare repository whose C{post-receive} hook checks
      the pushed C{master} (or C{main}) out into C{DIR/green/www}, creates
      the database C{DIR/green/meow.db} if it is missing, and writes
      C{DIR/green/restart}, which this process polls to restart the app;
    - a C{redis-server} on a free port of 127.0.0.1, its data (append-only
      file) in C{DIR/green/redis};
    - the app, C{python -m meow} run from the checkout, supervised by
      L{twisted.runner.procmon.ProcessMonitor}.

C{DIR/meow} is a working clone of the sample app with remotes C{green} and
C{blue}, already pushed.  The bluegreen service (L{bluegreen.service.tap}) runs in
this process on C{--port}, with its admin API, the flags of both Redis
servers and the C{migrate} sync between the databases.

The process ids of the children are written to C{DIR/run/*.pid} (and this
process's to C{DIR/run/demo.pid}); stopping (Ctrl-C, C{SIGTERM}) stops every
child and waits for it to exit.  Running again on the same C{DIR} reuses
the repositories, the databases and the Redis data.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

from treq.client import HTTPClient
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.python import usage
from twisted.runner.procmon import ProcessMonitor
from twisted.web.client import Agent, HTTPConnectionPool

from bluegreen.cli.common import CommandOptions

if TYPE_CHECKING:
    from bluegreen.service.tap import ProxyService, ServiceReactor

#: The environments, in order.
COLOURS = ("green", "blue")

#: The sample app's package, copied into the working clone.
APP_SOURCE = Path(__file__).parent / "meow"

#: The package's name in the clone (C{python -m meow}).
APP_PACKAGE = "meow"

#: Seconds between looks for a deploy's restart request.
POLL = 0.5

#: Seconds between health checks (faster than the service's default).
HEALTH_INTERVAL = "2"

#: Seconds bluegreen waits for both apps to answer before it starts
#: checking them (and would report an outage).
APPS_WAIT = 30.0

INSTALL_REDIS = (
    "bluegreen demo needs redis-server, which is not on PATH.  Install it, "
    "e.g.:\n    sudo apt-get install redis-server     (Debian, Ubuntu)\n"
    "    brew install redis                     (macOS)\n"
    "then run bluegreen demo again."
)

_log = Logger()

_HOOK = """#!/bin/sh
# post-receive: deploy the pushed master (or main) to {name}.
# Written by bluegreen demo.
set -e
while read old new ref; do
    case "$ref" in
        refs/heads/master|refs/heads/main) branch="${{ref#refs/heads/}}" ;;
        *) echo "{upper}: ignoring $ref (push master)"; continue ;;
    esac
    mkdir -p {www}
    git --work-tree={www} --git-dir={git} checkout -f "$branch"
    # No stale bytecode: an edit in the same second, of the same size, as
    # the last deploy would not be seen.
    find {www} -name __pycache__ -prune -exec rm -rf {{}} +
    if [ ! -e {db} ]; then
        {python} -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).close()' {db}
        echo "{upper}: created the database {db}"
    fi
    touch {restart}
    short=$(git --git-dir={git} rev-parse --short "$new")
    echo "{upper}: deployed $branch ($short); the app restarts"
    # Tell bluegreen what {name} runs now (the demo may not be running).
    subject=$(git --git-dir={git} log -1 --format=%s "$new")
    admin=$({python} -c 'import json, sys
print(json.load(open(sys.argv[1]))["admin"])' {ports} 2>/dev/null) || admin=
    if [ -n "$admin" ] && BLUEGREEN_ADMIN="http://127.0.0.1:$admin" \
        {bluegreen} deployed {name} --revision "$short" \
        --message "$subject" >/dev/null 2>&1; then
        echo "{upper}: bluegreen knows {name} runs $short ($subject)"
    fi
done
"""


class DemoOptions(CommandOptions):
    """
    C{bluegreen demo [--dir DIR] [--port 3090] [--admin-port 3091]}.
    """

    command = "demo"
    synopsis = "bluegreen demo [--dir DIR] [--port 3090] [--admin-port 3091]"
    longdesc = (
        "Run the workshop on this machine: GREEN and BLUE (git-push deploys, "
        "Redis, the meow sample app) behind bluegreen, in the foreground. "
        "Ctrl-C stops everything."
    )
    optParameters = [
        ["dir", "d", "bluegreen-demo", "Where everything lives (reused)."],
        ["port", "p", "3090", "The proxy's port (127.0.0.1)."],
        [
            "admin-port",
            None,
            None,
            "The admin API's port (default 3091, else a free one).",
        ],
    ]

    def postOptions(self) -> None:
        """
        @raise usage.UsageError: For a bad port.
        """
        for name in ("port", "admin-port"):
            value = self[name]
            if value is not None and not (value.isdigit() and 0 < int(value) < 65536):
                raise usage.UsageError(f"--{name}: {value!r} is not a port number")


class DemoError(Exception):
    """
    The demo cannot run; the message says why.
    """


def _portFree(port: int) -> bool:
    """
    @return: Whether nothing listens on C{port} of 127.0.0.1 (connections
        of a previous run waiting in C{TIME_WAIT} do not count: servers set
        C{SO_REUSEADDR}).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _freePort(avoid: set[int]) -> int:
    """
    @return: A free port of 127.0.0.1 not in C{avoid}.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in avoid:
            avoid.add(port)
            return port


def writeAtomically(path: Path, text: str) -> None:
    """
    Replace C{path} with C{text} in one step (a temporary file renamed over
    it), so a reader never sees it half written.

    @param path: The file.
    @param text: Its new content.
    """
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _git(*args: str, cwd: Path | None = None) -> None:
    """
    Run C{git}, quietly unless it fails.

    @raise DemoError: If it fails.
    """
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise DemoError(f"git {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


def choosePorts(root: Path, proxy: int, admin: int | None) -> dict[str, int]:
    """
    The ports: those of the last run (C{DIR/ports.json}) when still free,
    else free ones.

    @param root: C{DIR}.
    @param proxy: The proxy's port.
    @param admin: The admin API's port, or L{None} for 3091 if free.
    @return: C{proxy}, C{admin}, C{preview}, C{green-app}, C{green-redis}, ...
    @raise DemoError: If the proxy's or the admin API's port is taken.
    """
    if not _portFree(proxy):
        raise DemoError(f"port {proxy} is in use: give --port another one")
    avoid = {proxy, 3090, 3091, 6379}
    if admin is None:
        admin = 3091 if proxy != 3091 and _portFree(3091) else _freePort(avoid)
    elif not _portFree(admin):
        raise DemoError(f"port {admin} is in use: give --admin-port another one")
    avoid.add(admin)
    saved: dict[str, int] = {}
    try:
        saved = json.loads((root / "ports.json").read_text())
    except (OSError, ValueError):
        pass
    ports = {"proxy": proxy, "admin": admin}
    # The preview (the standby through the proxy) on 3092 beside the
    # default 3090 and 3091, else anywhere free.
    free3092 = proxy == 3090 and 3092 not in avoid and _portFree(3092)
    preview = 3092 if free3092 else _freePort(avoid)
    ports["preview"] = preview
    avoid.add(preview)
    for colour in COLOURS:
        for kind in ("app", "redis"):
            key = f"{colour}-{kind}"
            old = saved.get(key)
            if isinstance(old, int) and old not in avoid and _portFree(old):
                ports[key] = old
                avoid.add(old)
            else:
                ports[key] = _freePort(avoid)
    writeAtomically(root / "ports.json", json.dumps(ports, indent=2) + "\n")
    return ports


def prepare(root: Path) -> None:
    """
    Create what is missing under C{root}: the working clone, the bare
    repositories with their hooks, and the first deploy to each.

    @param root: C{DIR}.
    @raise DemoError: If git fails.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "run").mkdir(exist_ok=True)
    clone = root / "meow"
    if not (clone / ".git").exists():
        clone.mkdir(exist_ok=True)
        shutil.copytree(
            APP_SOURCE,
            clone / APP_PACKAGE,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            dirs_exist_ok=True,
        )
        (clone / "README.txt").write_text(
            "The meow sample app, deployed by git push to green and blue.\n"
            f"Run it: python -m {APP_PACKAGE} --port tcp:8080 --db meow.db "
            "--name green\n"
        )
        _git("init", "-q", "-b", "master", cwd=clone)
        _git("config", "user.name", "bluegreen demo", cwd=clone)
        _git("config", "user.email", "demo@bluegreen.invalid", cwd=clone)
        _git("add", "-A", cwd=clone)
        _git("commit", "-q", "-m", "The meow sample app", cwd=clone)
    python = shlex.quote(sys.executable)
    for colour in COLOURS:
        bare = root / f"{colour}.git"
        home = root / colour
        home.mkdir(exist_ok=True)
        (home / "redis").mkdir(exist_ok=True)
        fresh = not bare.exists()
        if fresh:
            _git("init", "-q", "--bare", "-b", "master", str(bare))
        hook = bare / "hooks" / "post-receive"
        hook.write_text(
            _HOOK.format(
                name=colour,
                upper=colour.upper(),
                www=shlex.quote(str(home / "www")),
                git=shlex.quote(str(bare)),
                db=shlex.quote(str(home / "meow.db")),
                restart=shlex.quote(str(home / "restart")),
                python=python,
                ports=shlex.quote(str(root / "ports.json")),
                bluegreen=consoleScript(),
            )
        )
        hook.chmod(0o755)
        result = subprocess.run(
            ["git", "remote"], cwd=clone, capture_output=True, text=True, check=False
        )
        if colour not in result.stdout.split():
            _git("remote", "add", colour, str(bare), cwd=clone)
        if fresh or not (home / "www" / APP_PACKAGE).exists():
            _git("push", "-q", colour, "HEAD:master", cwd=clone)
        (home / "restart").unlink(missing_ok=True)


class DemoService(MultiService):
    """
    The children (under a L{ProcessMonitor}) and the bluegreen service;
    stopping it waits until every child has exited.

    The bluegreen service listens at once, but starts (its health checks
    first of all) only once both apps answer: checked while the apps are
    still starting, both would be found down, and the demo's log would
    begin with an outage that never was.

    @ivar monitor: Runs the children.
    @ivar root: C{DIR}.
    @ivar proxy: The bluegreen service, or L{None} before L{build} sets it.
    @ivar apps: The apps' URLs, which must answer before C{proxy} starts.
    """

    proxy: ProxyService | None = None

    def __init__(
        self, reactor: ServiceReactor, root: Path, monitor: ProcessMonitor
    ) -> None:
        """
        @param reactor: Runs everything.
        @param root: C{DIR}.
        @param monitor: Runs the children.
        """
        super().__init__()
        self.reactor = reactor
        self.root = root
        self.monitor = monitor
        self.apps: list[str] = []
        self._pids: dict[str, int] = {}
        self._poll = LoopingCall(self._tick)
        self._poll.clock = reactor
        self._http = HTTPClient(
            Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        )
        self._waitingForApps: Deferred[None] | None = None

    def startService(self) -> None:
        """
        Start the children and listen on the proxy's ports (a port in use
        stops the demo at once); start the bluegreen service once both apps
        answer; poll for deploys.

        @raise bluegreen.service.tap.StartupError: If a port cannot be
            listened on.
        """
        super().startService()
        if self.proxy is not None:
            self.proxy.privilegedStartService()
            self._waitingForApps = Deferred.fromCoroutine(self._startProxy(self.proxy))
        self._poll.start(POLL, now=False)

    async def _startProxy(self, proxy: ProxyService) -> None:
        """
        Wait until every app answers HTTP (any status, so a deployed bad
        commit counts), then start C{proxy}; after L{APPS_WAIT} seconds
        start it anyway, so an app that never comes up is failed over from
        as usual.
        """
        deadline = self.reactor.seconds() + APPS_WAIT
        waiting = list(self.apps)
        while waiting and self.reactor.seconds() < deadline:
            waiting = [url for url in waiting if not await self._answers(url)]
            if waiting:
                pause: Deferred[None] = Deferred()
                self.reactor.callLater(POLL / 5, pause.callback, None)
                await pause
        if waiting:
            _log.warn(
                "{apps} not answering after {seconds} s: starting bluegreen anyway",
                apps=" and ".join(waiting),
                seconds=APPS_WAIT,
            )
        else:
            _log.info("both apps answer: starting bluegreen")
        proxy.startService()

    async def _answers(self, url: str) -> bool:
        """
        @return: Whether C{url} answers HTTP at all.
        """

        async def fetch() -> None:
            response = await self._http.get(url)
            await response.content()

        # Timed on our reactor (treq's own timeout uses the global one).
        answer = Deferred.fromCoroutine(fetch())
        answer.addTimeout(POLL * 4, self.reactor)
        try:
            await answer
        except Exception:
            return False
        return True

    def _tick(self) -> None:
        """
        Restart the apps whose deploy asked for it; record the children's
        process ids.
        """
        for colour in COLOURS:
            request = self.root / colour / "restart"
            if request.exists():
                request.unlink(missing_ok=True)
                self.restartApp(f"{colour}-app")
        pids = {}
        for name, protocol in self.monitor.protocols.items():
            pid = getattr(protocol.transport, "pid", None)
            if pid is not None:
                pids[name] = pid
        if pids != self._pids:
            for name in set(self._pids) - set(pids):
                (self.root / "run" / f"{name}.pid").unlink(missing_ok=True)
            for name, pid in pids.items():
                writeAtomically(self.root / "run" / f"{name}.pid", f"{pid}\n")
            self._pids = pids

    def restartApp(self, name: str) -> None:
        """
        Restart one app: stop it (the monitor starts it again), or start it
        now if it is waiting to be restarted.

        @param name: E.g. C{green-app}.
        """
        _log.info("deploy: restarting {name}", name=name)
        monitor = self.monitor
        monitor.delay[name] = monitor.minRestartDelay
        if name in monitor.protocols:
            monitor.stopProcess(name)
            return
        pending = monitor.restart.get(name)
        if pending is not None and pending.active():
            pending.cancel()
        monitor.startProcess(name)

    async def _stop(self) -> None:
        """
        Stop the bluegreen service and the children; wait until they exit.
        """
        if self._poll.running:
            self._poll.stop()
        if self._waitingForApps is not None:
            self._waitingForApps.cancel()
        proxy = self.proxy
        if proxy is not None and proxy.running:
            await proxy.stopService()
        elif proxy is not None:
            for listener in proxy.listeners():
                await listener.stopService()
        await super().stopService()
        while self.monitor.protocols:
            wait: Deferred[None] = Deferred()
            self.reactor.callLater(0.1, wait.callback, None)
            await wait
        for name in list(self._pids):
            (self.root / "run" / f"{name}.pid").unlink(missing_ok=True)

    def stopService(self) -> Deferred[None]:
        """
        @return: Fires once every child has exited.
        """
        return Deferred.fromCoroutine(self._stop())


def build(reactor: ServiceReactor, root: Path, ports: dict[str, int]) -> DemoService:
    """
    Build the demo's services (not started).

    @param reactor: Runs everything.
    @param root: C{DIR}, prepared by L{prepare}.
    @param ports: From L{choosePorts}.
    @return: The service.
    @raise DemoError: If bluegreen's options are refused.
    """
    from bluegreen.service.tap import Options, ProxyService, StartupError, makeService

    redisServer = shutil.which("redis-server")
    if redisServer is None:
        raise DemoError(INSTALL_REDIS)
    monitor = ProcessMonitor(reactor)
    monitor.maxRestartDelay = 5
    service = DemoService(reactor, root, monitor)
    monitor.setServiceParent(service)
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "HOME")}
    for colour in COLOURS:
        home = root / colour
        monitor.addProcess(
            f"{colour}-redis",
            [
                redisServer,
                "--port",
                str(ports[f"{colour}-redis"]),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(home / "redis"),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--daemonize",
                "no",
            ],
            env=base,
            cwd=str(home / "redis"),
        )
        monitor.addProcess(
            f"{colour}-app",
            [
                sys.executable,
                "-m",
                APP_PACKAGE,
                "--port",
                f"tcp:{ports[f'{colour}-app']}:interface=127.0.0.1",
                "--db",
                str(home / "meow.db"),
                "--redis",
                f"redis://127.0.0.1:{ports[f'{colour}-redis']}/0",
                "--name",
                colour,
            ],
            env={
                **base,
                "PYTHONPATH": str(home / "www"),
                "PYTHONUNBUFFERED": "1",
                # Deploys may change a file within a second of the last one.
                "PYTHONDONTWRITEBYTECODE": "1",
            },
            cwd=str(home / "www"),
        )
    options = Options()
    try:
        options.parseOptions(
            [
                "--port",
                f"tcp:{ports['proxy']}:interface=127.0.0.1",
                "--admin",
                f"tcp:{ports['admin']}:interface=127.0.0.1",
                "--preview",
                f"tcp:{ports['preview']}:interface=127.0.0.1",
                "--verify",
                "/=200",
                "--green",
                f"http://127.0.0.1:{ports['green-app']}",
                "--blue",
                f"http://127.0.0.1:{ports['blue-app']}",
                "--green-redis",
                f"redis://127.0.0.1:{ports['green-redis']}/0",
                "--blue-redis",
                f"redis://127.0.0.1:{ports['blue-redis']}/0",
                "--green-db",
                str(root / "green" / "meow.db"),
                "--blue-db",
                str(root / "blue" / "meow.db"),
                "--sync",
                "migrate",
                "--state",
                str(root / "state.json"),
                "--health-interval",
                HEALTH_INTERVAL,
                "--access-log",
                str(root / "access.log"),
            ]
        )
        proxy = makeService(options, reactor)
    except (usage.UsageError, StartupError) as e:
        raise DemoError(f"bluegreen: {e}") from None
    assert isinstance(proxy, ProxyService)
    service.proxy = proxy
    service.apps = [f"http://127.0.0.1:{ports[f'{c}-app']}/" for c in COLOURS]
    return service


def consoleScript() -> str:
    """
    The C{bluegreen} command as a new shell can run it: the absolute path of
    the console script installed next to this Python (a new shell's C{PATH}
    need not hold the virtualenv's C{bin}), else this Python running the
    command's module.

    @return: A shell word (or two), quoted.
    """
    script = Path(sys.executable).parent / "bluegreen"
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m bluegreen.cli.main"


def nextSteps(root: Path, ports: dict[str, int]) -> str:
    """
    The URLs and the workshop's steps (README's "The workshop, step by
    step"), each command runnable as printed in a new shell.

    @param root: C{DIR}.
    @param ports: From L{choosePorts}.
    @return: The text.
    """
    admin = f"http://127.0.0.1:{ports['admin']}"
    env = "" if ports["admin"] == 3091 else f"BLUEGREEN_ADMIN={admin} "
    bluegreen = env + consoleScript()
    clone = shlex.quote(str(root / "meow"))
    proxy = f"http://127.0.0.1:{ports['proxy']}"
    return f"""\
bluegreen demo is running (Ctrl-C stops everything).

  the app, through bluegreen:  {proxy}/
  the dashboard and admin API: {admin}/
  the standby (preview):       http://127.0.0.1:{ports["preview"]}/
  GREEN directly:              http://127.0.0.1:{ports["green-app"]}/
  BLUE directly:               http://127.0.0.1:{ports["blue-app"]}/
  logs:                        {root / "demo.log"}

The workshop, step by step (in another terminal):

  1. GREEN is live.
       curl {proxy}/
     shows the meow app with a green badge; the dashboard is at {admin}/.
     Vote and upload cats on the page: they go to GREEN's database.
  2. A bad commit.
       cd {clone}
       perl -pi -e 's/STATUS = 200/STATUS = 500/' {APP_PACKAGE}/index.py
       git commit -am "bad commit"
       git push green master
     GREEN answers 500; within a health interval ({HEALTH_INTERVAL} s here)
     bluegreen fails over and the page shows the blue badge.  This says why:
       {bluegreen} status
     The votes and uploads made on GREEN are copied to BLUE's database
     right after the switch.
  3. A feature flag.
       {bluegreen} flag set RECENT on --env blue
     The page now shows the recent uploads; off hides them again.
  4. Fix and switch back.
       cd {clone}
       git revert --no-edit HEAD && git push green master
     Once GREEN is up again (see status), this first brings GREEN's
     database up to date from BLUE, then moves the traffic back:
       {bluegreen} switch green
"""


def whenBothUp(
    service: DemoService, reactor: IReactorTime, limit: float = 30.0
) -> Deferred[None]:
    """
    Wait until the health checks have found GREEN and BLUE both up (at most
    C{limit} seconds), so the printed next steps work at once: a bad commit
    pushed before BLUE is known to be up would meet a failover with nowhere
    to go.

    @return: Fires when both are up, or after C{limit} seconds.
    """
    done: Deferred[None] = Deferred()
    deadline = reactor.seconds() + limit

    def check() -> None:
        health = service.proxy.health if service.proxy is not None else None
        if (
            health is None
            or all(health.isUp(name) for name in ("green", "blue"))
            or reactor.seconds() >= deadline
        ):
            done.callback(None)
        else:
            reactor.callLater(0.2, check)

    check()
    return done


def runDemo(options: DemoOptions) -> int:
    """
    Run the demo in the foreground until Ctrl-C or C{SIGTERM}.

    @param options: The parsed options.
    @return: The exit code.
    """
    from twisted.internet import reactor as _reactor

    reactor = cast("ServiceReactor", _reactor)
    root = Path(options["dir"]).absolute()
    adminPort = options["admin-port"]
    try:
        if shutil.which("redis-server") is None:
            raise DemoError(INSTALL_REDIS)
        if shutil.which("git") is None:
            raise DemoError("bluegreen demo needs git: sudo apt-get install git")
        pidFile = root / "run" / "demo.pid"
        try:
            other = int(pidFile.read_text())
            os.kill(other, 0)
        except (OSError, ValueError):
            pass
        else:
            raise DemoError(f"bluegreen demo already runs on {root} (pid {other})")
        prepare(root)
        ports = choosePorts(
            root, int(options["port"]), None if adminPort is None else int(adminPort)
        )
        service = build(reactor, root, ports)
    except DemoError as e:
        print(f"bluegreen demo: {e}", file=sys.stderr)
        return 1
    writeAtomically(pidFile, f"{os.getpid()}\n")
    logFile = (root / "demo.log").open("a", encoding="utf-8")
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(logFile)], redirectStandardIO=False
    )
    failed: list[BaseException] = []

    def start() -> None:
        try:
            service.startService()
        except Exception as e:
            failed.append(e)
            print(f"bluegreen demo: {e}", file=sys.stderr)
            reactor.stop()
            return
        whenBothUp(service, reactor).addCallback(
            lambda _: print(nextSteps(root, ports), flush=True)
        )

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    try:
        reactor.run()
    finally:
        pidFile.unlink(missing_ok=True)
        logFile.close()
    print("bluegreen demo: stopped; everything it started has exited.", flush=True)
    return 1 if failed else 0
