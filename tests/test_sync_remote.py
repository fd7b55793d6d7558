# -*- test-case-name: tests.test_sync_remote -*-
"""
Tests for remote locations in L{bluegreen.sync.syncer} (C{[user@]host:/path}):
a real C{sshd} on a free port of 127.0.0.1, started by each test with its
own host key, client key and C{authorized_keys}; real C{ssh}, C{rsync} and
C{sqlite3} children.  "Remote" files are in a directory under C{/tmp} of
this same machine, so the tests can look at them directly.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import sqlite3
import tempfile
import time
from shlex import quote
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from bluegreen.sync.locations import Location, parseLocation, sshArguments
from bluegreen.sync.process import ProcessResult, ProcessRunner, Tools
from bluegreen.sync.report import (
    COLUMN_ONLY_ON_SOURCE,
    FK_ORPHAN,
    KEY_CONFLICT,
    TABLE_ONLY_ON_SOURCE,
    UNIQUE_CONFLICT,
    SyncReport,
)
from bluegreen.sync.syncer import Syncer
from tests._util import PATIENCE, freePort, waitFor

from .test_cli_admin import bluegreen
from .test_sync import build, content, rows

reactor: Any = _reactor

SSHD = "/usr/sbin/sshd"
KEYGEN = "/usr/bin/ssh-keygen"


def accepts(port: int) -> bool:
    """
    @return: Whether something accepts connections on 127.0.0.1:C{port}.
    """
    with socket.socket() as s:
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            return False
        return True


class _Daemon(ProcessProtocol):
    """
    Keeps C{sshd -D -e}'s log and tells when it has ended.
    """

    def __init__(self) -> None:
        self.log = b""
        self.ended: Deferred[None] = Deferred()
        self.running = True

    def errReceived(self, data: bytes) -> None:
        self.log += data

    def outReceived(self, data: bytes) -> None:
        self.log += data

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        self.ended.callback(None)


def keygen(path: str) -> None:
    """
    Make an ed25519 key pair at C{path} (and C{path}.pub), no passphrase.
    """
    import subprocess

    subprocess.run(
        [KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "bluegreen-test", "-f", path],
        check=True,
        capture_output=True,
    )


class SSHServer:
    """
    A private C{sshd} on 127.0.0.1 that lets our client key in.

    @ivar port: Its port.
    @ivar key: The client key it accepts.
    @ivar dir: Its files (keys, config, pid file).
    """

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bgssh", dir="/tmp")
        self.port = freePort()
        self.key = os.path.join(self.dir, "id")
        self.protocol = _Daemon()

    async def start(self) -> None:
        """
        Make the keys and the config, start C{sshd} and wait until it
        accepts connections.

        @raise SkipTest: If C{sshd} is not installed or does not start.
        """
        for tool in (SSHD, KEYGEN):
            if not os.access(tool, os.X_OK):
                raise SkipTest(
                    f"{tool} is not installed (apt-get install openssh-server "
                    "openssh-client)"
                )
        try:
            os.makedirs("/run/sshd", exist_ok=True)  # privilege separation
        except OSError:
            pass
        keygen(os.path.join(self.dir, "host_key"))
        keygen(self.key)
        shutil.copy(self.key + ".pub", os.path.join(self.dir, "authorized_keys"))
        config = os.path.join(self.dir, "sshd_config")
        with open(config, "w") as f:
            f.write(
                f"Port {self.port}\n"
                "ListenAddress 127.0.0.1\n"
                f"HostKey {self.dir}/host_key\n"
                f"AuthorizedKeysFile {self.dir}/authorized_keys\n"
                f"PidFile {self.dir}/sshd.pid\n"
                "StrictModes no\n"
                "UsePAM no\n"
                "PermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "LogLevel ERROR\n"
            )
        reactor.spawnProcess(
            self.protocol,
            SSHD,
            [SSHD, "-D", "-e", "-f", config],
            env={"PATH": "/usr/sbin:/usr/bin:/bin"},
        )
        try:
            await waitFor(
                lambda: not self.protocol.running or accepts(self.port),
                "sshd accepting connections",
                step=0.05,
            )
        except AssertionError:
            pass
        if not self.protocol.running or not accepts(self.port):
            await self.stop()
            raise SkipTest(
                "sshd did not start: " + self.protocol.log.decode("utf-8", "replace")
            )

    async def stop(self) -> None:
        """
        C{TERM} the daemon, wait for it to end and remove its files.
        """
        transport = self.protocol.transport
        if self.protocol.running and transport is not None:
            try:
                transport.signalProcess("TERM")
            except Exception:
                pass
            await self.protocol.ended
        shutil.rmtree(self.dir, ignore_errors=True)

    def options(self, key: str | None = None) -> tuple[str, ...]:
        """
        @param key: The client key (ours if L{None}).
        @return: The C{--ssh-option} values that reach this server.
        """
        return (
            f"-p {self.port}",
            f"-i {key or self.key}",
            "-o StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "LogLevel=ERROR",
        )


def recordingRunner(commands: list[tuple[str, ...]]) -> ProcessRunner:
    """
    @return: A runner that appends every command it runs to C{commands}.
    """

    class Recording(ProcessRunner):
        def run(self, argv: Any, *a: Any, **kw: Any) -> Deferred[ProcessResult]:
            commands.append(tuple(argv))
            return super().run(argv, *a, **kw)

    return Recording(reactor, Tools.find())


class RemoteTestCase(TestCase):
    """
    An sshd, a local directory and a "remote" one.
    """

    timeout = 3 * PATIENCE
    server: SSHServer

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        test: Any = self
        self.local = os.path.abspath(test.mktemp())
        os.makedirs(self.local)
        # A space and a quote: the remote shell must see them quoted.
        self.remote = tempfile.mkdtemp(prefix="bgremote it's ", dir="/tmp")
        test.addCleanup(shutil.rmtree, self.remote, True)
        self.user = getpass.getuser()
        self.server = SSHServer()

        # Registered before starting: a set-up cut short (a timeout under
        # load) must still stop the daemon, which outlives trial otherwise.
        test.addCleanup(lambda: Deferred.fromCoroutine(self.server.stop()))
        return Deferred.fromCoroutine(self.server.start())

    def at(self, name: str) -> Location:
        """
        @return: C{name} in the remote directory, as a remote location.
        """
        return Location("127.0.0.1", self.user, os.path.join(self.remote, name))

    def syncer(self, key: str | None = None) -> Syncer:
        """
        @return: A syncer reaching the server (with C{key}), whose runner
            records its commands in C{self.commands}.
        """
        self.commands: list[tuple[str, ...]] = []
        return Syncer(
            reactor,
            recordingRunner(self.commands),
            sshOptions=sshArguments(self.server.options(key)),
            # A loaded machine's sshd may take seconds to answer: ssh waits
            # as long as the suite is patient.
            connectTimeout=int(PATIENCE),
        )

    def assertClean(self, directory: str, allow: tuple[str, ...] = ()) -> None:
        """
        No sidecar or staging file is left in C{directory}.
        """
        test: Any = self
        left = sorted(
            f
            for f in os.listdir(directory)
            if (f.endswith(("-wal", "-shm", "-journal")) or ".sync-" in f)
            and f not in allow
        )
        test.assertEqual(left, [])

    def assertNoLocalSqliteOnRemote(self) -> None:
        """
        Every C{sqlite3} that touched the remote directory ran through ssh.
        """
        test: Any = self
        for argv in self.commands:
            if argv[0].endswith("/sqlite3"):
                test.assertFalse(any(self.remote in a for a in argv), argv)

    def usedSSH(self) -> bool:
        """
        @return: Whether some command went through ssh.
        """
        return any(argv[0].endswith("/ssh") or "-e" in argv for argv in self.commands)


MERGE = (
    "INSERT INTO facts(id, text) VALUES (3, 'green'), (4, 'x' || 'y');"
    "INSERT INTO votes VALUES (1, 3, 1);"
    "INSERT INTO cats VALUES (2, 'felix', zeroblob(9000));"
    "INSERT INTO pairs VALUES ('x', 2, 'é'), ('y', 1, NULL);"
    "INSERT INTO wr VALUES ('k2', NULL);"
    "INSERT INTO tags VALUES ('a', 1), ('a', 1), (NULL, NULL);"
)
COPIED = {"facts": 2, "votes": 1, "cats": 1, "pairs": 2, "wr": 1, "tags": 3}


class RemoteMigrateTests(RemoteTestCase):
    """
    C{migrate} with a remote source, target or both.
    """

    async def _migrate(self, source: Location, target: Location) -> None:
        build(source.path, "wal", MERGE)
        build(target.path, "wal", "INSERT INTO facts(id, text) VALUES (10, 'blue');")
        hops: list[str] = []
        mkdtemp = tempfile.mkdtemp

        def recording(*a: Any, **kw: Any) -> str:
            hops.append(mkdtemp(*a, **kw))
            return hops[-1]

        self.patch(tempfile, "mkdtemp", recording)
        syncer = self.syncer()
        report = await syncer.sync(source, target, "migrate")
        self.assertIsNone(report.error)
        self.assertEqual(report.conflicts, ())
        self.assertEqual(report.copied, COPIED)
        self.assertEqual(report.targetOnly["facts"], 1)
        self.assertEqual((report.source, report.target), (str(source), str(target)))
        src, dst = content(source.path), content(target.path)
        for name in ("votes", "cats", "pairs", "wr", "tags"):
            self.assertEqual(src[name], dst[name], name)
        self.assertEqual(rows(target.path, "PRAGMA integrity_check"), [("ok",)])
        self.assertTrue(self.usedSSH())
        self.assertNoLocalSqliteOnRemote()
        again = await syncer.sync(source, target, "migrate")
        self.assertTrue(again.complete, again.summary())
        self.assertEqual(sum(again.copied.values()), 0)
        self.assertEqual(content(target.path), dst)
        self.assertClean(self.remote)
        self.assertClean(self.local)
        # One snapshot (the first sync seeds); the second applies changes.
        self.assertEqual(len(hops), 1 if source.remote and target.remote else 0)
        self.assertEqual([h for h in hops if os.path.exists(h)], [])

    def test_localToRemote(self) -> Deferred[None]:
        """
        A local source merged into a remote target.
        """
        source = Location.local(os.path.join(self.local, "green.db"))
        return Deferred.fromCoroutine(self._migrate(source, self.at("blue.db")))

    def test_remoteToLocal(self) -> Deferred[None]:
        """
        A remote source merged into a local target.
        """
        target = Location.local(os.path.join(self.local, "blue.db"))
        return Deferred.fromCoroutine(self._migrate(self.at("green.db"), target))

    def test_remoteToRemote(self) -> Deferred[None]:
        """
        Both remote: the snapshot goes through a local hop, removed after.
        """
        return Deferred.fromCoroutine(
            self._migrate(self.at("green.db"), self.at("blue.db"))
        )

    def test_conflictsAsLocal(self) -> Deferred[None]:
        """
        Conflicts are reported exactly as for local files, and nothing of
        them is copied.
        """

        async def go() -> None:
            # Explicit times: CURRENT_TIMESTAMP would differ between the
            # local and the remote build when a second ticks between them,
            # and the conflicts carry the rows.
            script = (
                "INSERT INTO facts(id, text, created_at) "
                "VALUES (3, 'green three', '2026-01-01 00:00:00');"
                "INSERT INTO cats VALUES (5, 'garfield', NULL);"
                "INSERT INTO votes VALUES (7, 99, 1);"
                "ALTER TABLE wr ADD COLUMN extra;"
                "CREATE TABLE newer(x); INSERT INTO newer VALUES (1);"
            )
            targetScript = (
                "INSERT INTO facts(id, text, created_at) "
                "VALUES (3, 'blue three', '2026-01-01 00:00:01');"
                "INSERT INTO cats VALUES (6, 'garfield', NULL);"
            )
            reports: list[SyncReport] = []
            for source, target in (
                (
                    Location.local(os.path.join(self.local, "g.db")),
                    Location.local(os.path.join(self.local, "b.db")),
                ),
                (self.at("green.db"), self.at("blue.db")),
            ):
                build(source.path, "wal", script)
                build(target.path, "wal", targetScript)
                reports.append(await self.syncer().sync(source, target, "migrate"))
            local, remote = reports
            self.assertEqual(remote.conflicts, local.conflicts)
            self.assertEqual(remote.copied, local.copied)
            self.assertEqual(
                sorted((c.kind, c.table) for c in remote.conflicts),
                [
                    (COLUMN_ONLY_ON_SOURCE, "wr"),
                    (FK_ORPHAN, "votes"),
                    (KEY_CONFLICT, "facts"),
                    (TABLE_ONLY_ON_SOURCE, "newer"),
                    (UNIQUE_CONFLICT, "cats"),
                ],
            )
            self.assertFalse(remote.complete)
            self.assertEqual(
                rows(self.at("blue.db").path, "SELECT text FROM facts WHERE id=3"),
                [("blue three",)],
            )
            self.assertIn("CONFLICT unique_conflict: cats key (5)", remote.summary())
            self.assertClean(self.remote)

        return Deferred.fromCoroutine(go())


class RemoteCopyTests(RemoteTestCase):
    """
    C{copy} to a remote target.
    """

    def test_copy(self) -> Deferred[None]:
        """
        The remote target becomes the source's content; the stop and start
        commands run on the target's host; the old file is kept there; WAL
        mode is kept; nothing is left behind.
        """

        async def go() -> None:
            source = Location.local(os.path.join(self.local, "green.db"))
            target = self.at("blue.db")
            build(source.path, "delete", "INSERT INTO facts(text) VALUES ('new');")
            build(target.path, "wal")
            marks = os.path.join(self.remote, "marks")
            report = await self.syncer().sync(
                source,
                target,
                "copy",
                stopCommand=f'echo stop >> {quote(marks)}; echo "$SSH_CONNECTION" '
                f"> {quote(self.remote + '/where')}",
                startCommand=f"echo start >> {quote(marks)}",
            )
            self.assertTrue(report.complete, report.summary())
            self.assertEqual(content(target.path), content(source.path))
            with open(marks) as f:
                self.assertEqual(f.read(), "stop\nstart\n")
            with open(os.path.join(self.remote, "where")) as f:
                self.assertIn(f" {self.server.port}", f.read())  # over ssh
            assert report.backup is not None
            self.assertTrue(report.backup.startswith(f"{self.user}@127.0.0.1:/"))
            backup = parseLocation(report.backup).path
            self.assertTrue(os.path.isfile(backup))
            self.assertEqual(rows(target.path, "PRAGMA journal_mode"), [("wal",)])
            self.assertClean(self.remote)
            self.assertClean(self.local)
            self.assertNoLocalSqliteOnRemote()

        return Deferred.fromCoroutine(go())

    def test_copyRemoteToRemoteNew(self) -> Deferred[None]:
        """
        A copy between two remote locations creates a missing target.
        """

        async def go() -> None:
            source, target = self.at("green.db"), self.at("new.db")
            build(source.path, "wal", MERGE)
            report = await self.syncer().sync(source, target, "copy")
            self.assertTrue(report.complete, report.summary())
            self.assertIsNone(report.backup)
            self.assertEqual(content(target.path), content(source.path))
            self.assertClean(self.remote, allow=("green.db-wal", "green.db-shm"))

        return Deferred.fromCoroutine(go())

    def test_appStillRunning(self) -> Deferred[None]:
        """
        A remote target app holding its database open blocks the swap; the
        target is untouched and the staging files are removed on the
        remote side.
        """

        async def go() -> None:
            source = Location.local(os.path.join(self.local, "green.db"))
            target = self.at("blue.db")
            build(source.path, "wal")
            build(target.path, "wal")
            before = content(target.path)
            app = sqlite3.connect(target.path)
            app.execute("SELECT count(*) FROM facts").fetchall()
            self.addCleanup(app.close)
            report = await self.syncer().sync(source, target, "copy")
            assert report.error is not None
            self.assertIn("is the target app still running", report.error)
            self.assertIn(str(target), report.error)
            self.assertEqual(content(target.path), before)
            self.assertEqual(
                sorted(f for f in os.listdir(self.remote) if ".sync-" in f), []
            )

        return Deferred.fromCoroutine(go())

    def test_refuseTargetAhead(self) -> Deferred[None]:
        """
        A remote target that took writes is refused, as a local one is.
        """

        async def go() -> None:
            source = self.at("green.db")
            target = Location.local(os.path.join(self.local, "blue.db"))
            build(source.path, "wal")
            build(target.path, "wal", "INSERT INTO facts(text) VALUES ('mine');")
            report = await self.syncer().sync(source, target, "copy")
            assert report.error is not None
            self.assertIn("facts: 1 row(s) only on the target", report.error)
            self.assertClean(self.remote, allow=("green.db-wal", "green.db-shm"))
            self.assertClean(self.local)

        return Deferred.fromCoroutine(go())


class UnreachableTests(RemoteTestCase):
    """
    Hosts that cannot be reached, or do not let us in.
    """

    def test_noSuchServer(self) -> Deferred[None]:
        """
        Nothing listening: the report names the host, quickly.
        """

        async def go() -> None:
            source = Location.local(os.path.join(self.local, "green.db"))
            build(source.path, "wal")
            self.server.port = freePort()
            started = time.monotonic()
            report = await self.syncer().sync(source, self.at("blue.db"), "migrate")
            assert report.error is not None
            self.assertIn(f"cannot reach {self.user}@127.0.0.1 over ssh", report.error)
            self.assertIn("Connection refused", report.error)
            # Refused, not timed out: no step waited for its timeout.
            self.assertNotIn("timed out", report.error)
            self.assertLess(time.monotonic() - started, PATIENCE)
            self.assertClean(self.local)

        return Deferred.fromCoroutine(go())

    def test_batchMode(self) -> Deferred[None]:
        """
        A key the server does not accept fails at once (C{BatchMode=yes}:
        no prompt waits), naming the host.
        """

        async def go() -> None:
            stranger = os.path.join(self.server.dir, "stranger")
            keygen(stranger)
            source = self.at("green.db")
            build(source.path, "wal")
            started = time.monotonic()
            syncer = self.syncer(key=stranger)
            report = await syncer.sync(
                source, Location.local(os.path.join(self.local, "b.db")), "copy"
            )
            assert report.error is not None
            self.assertIn(f"cannot reach {self.user}@127.0.0.1 over ssh", report.error)
            self.assertIn("Permission denied", report.error)
            # Refused, not timed out: no prompt waited.
            self.assertNotIn("timed out", report.error)
            self.assertLess(time.monotonic() - started, PATIENCE)
            ssh = [a for a in self.commands if a[0].endswith("/ssh")]
            self.assertTrue(ssh)
            for argv in ssh:
                self.assertEqual(argv[1:3], ("-o", "BatchMode=yes"))

        return Deferred.fromCoroutine(go())


class CommandLineTests(RemoteTestCase):
    """
    C{bluegreen sync} with remote locations.
    """

    def _options(self) -> list[str]:
        out: list[str] = []
        for option in self.server.options():
            out += ["--ssh-option", option]
        return out

    def test_migrate(self) -> Deferred[None]:
        """
        Remote to local through the command line: exit 0 and the summary.
        """

        async def go() -> None:
            build(self.at("green.db").path, "wal", MERGE)
            target = os.path.join(self.local, "blue.db")
            build(target, "wal")
            out, err, code = await bluegreen(
                "sync",
                "--from",
                str(self.at("green.db")),
                "--to",
                target,
                "--strategy",
                "migrate",
                *self._options(),
            )
            self.assertEqual((code, err), (0, ""))
            self.assertIn(f"migrate {self.at('green.db')} -> {target}", out)
            self.assertIn("complete: copied 10 rows, 0 conflicts", out)
            self.assertClean(self.remote, allow=("green.db-wal", "green.db-shm"))

        return Deferred.fromCoroutine(go())

    def test_unreachable(self) -> Deferred[None]:
        """
        An unreachable host: exit 1, an error naming it, no traceback.
        """

        async def go() -> None:
            source = os.path.join(self.local, "green.db")
            build(source, "wal")
            out, err, code = await bluegreen(
                "sync",
                "--from",
                source,
                "--to",
                "nobody@127.0.0.1:/tmp/nowhere/blue.db",
                "--strategy",
                "migrate",
                "--ssh-option",
                f"-p {freePort()}",
                "--ssh-option",
                "ConnectTimeout=3",
            )
            self.assertEqual(code, 1)
            self.assertIn("cannot reach nobody@127.0.0.1 over ssh", err)
            self.assertNotIn("Traceback", out + err)
            self.assertIn("FAILED: cannot reach nobody@127.0.0.1", out)

        return Deferred.fromCoroutine(go())


class ParseTests(SynchronousTestCase):
    """
    L{parseLocation} and L{sshArguments}.
    """

    def test_local(self) -> None:
        """
        Paths without a C{:} before their first C{/} are local.
        """
        for text in ("blue.db", "/srv/a:b.db", "./a:b.db", "data/x.db"):
            location = parseLocation(text)
            self.assertEqual(location, Location.local(text))
            self.assertFalse(location.remote)
            self.assertEqual(str(location), text)

    def test_remote(self) -> None:
        """
        C{[user@]host:/path}, IPv6 in brackets.
        """
        cases = {
            "db1:/srv/blue.db": Location("db1", None, "/srv/blue.db"),
            "me@db1.example:/a b/x.db": Location("db1.example", "me", "/a b/x.db"),
            "root@[::1]:/x.db": Location("::1", "root", "/x.db"),
            "h:/a:b": Location("h", None, "/a:b"),
        }
        for text, expected in cases.items():
            location = parseLocation(text)
            self.assertEqual(location, expected)
            self.assertEqual(str(location), text)
        self.assertEqual(parseLocation("root@[::1]:/x.db").sshLogin, "root@::1")
        self.assertEqual(parseLocation("root@[::1]:/x.db").login, "root@[::1]")

    def test_errors(self) -> None:
        """
        Clear messages for what is not a location.
        """
        cases = {
            "": "empty database location",
            "h:": "no path after 'h:'",
            "h:rel.db": "the path on h must be absolute",
            "@h:/x": "empty user name",
            "u@:/x": "empty host name",
            "-oProxyCommand=x:/x": "is not a host name",
            "a b:/x": "is not a host name",
            "h:/dir/": "names a directory",
            "[::1:/x": "IPv6 address in brackets",
        }
        for text, message in cases.items():
            e = self.assertRaises(ValueError, parseLocation, text)
            self.assertIn(message, str(e), text)

    def test_sshArguments(self) -> None:
        """
        Dashed values are split; others are ssh_config options for C{-o}.
        """
        self.assertEqual(
            sshArguments(["-p 2222", "-i '/a key'", "Port=22", "-oX=y"]),
            ("-p", "2222", "-i", "/a key", "-o", "Port=22", "-oX=y"),
        )


class ServiceRemoteTests(RemoteTestCase):
    """
    The running service syncs remote databases too (C{--green-db
    user@host:/path} with C{--ssh-option}).
    """

    def test_apiSyncsRemote(self) -> Deferred[None]:
        """
        C{POST /api/sync} from a remote GREEN database to a local BLUE one
        copies the rows over ssh.
        """
        from ._admin import call, startService

        async def go() -> None:
            build(self.at("green.db").path, "wal", MERGE)
            target = os.path.join(self.local, "blue.db")
            build(target, "wal")
            ssh: list[str] = []
            for option in self.server.options():
                ssh += ["--ssh-option", option]
            running = await startService(
                self,
                "--green-db",
                str(self.at("green.db")),
                "--blue-db",
                target,
                "--sync",
                "migrate",
                *ssh,
            )
            answer = await call(
                running.base + "/api/sync",
                "POST",
                payload={"from": "green", "to": "blue"},
            )
            self.assertEqual(answer.code, 200, answer.data)
            report = answer.json["report"]
            self.assertTrue(report["complete"], report)
            self.assertEqual(report["copied"], COPIED)
            self.assertEqual(report["source"], str(self.at("green.db")))

        return Deferred.fromCoroutine(go())
