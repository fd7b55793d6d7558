# -*- test-case-name: tests.test_contrib -*-
"""
Tests for C{contrib/systemd}: the units pass C{systemd-analyze verify}, the
options of the environment file parse, and bluegreen serves on a socket
handed over by systemd (C{systemd-socket-activate}, as a C{.socket} unit
would).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import treq
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from bluegreen.service.options import Options
from tests._processes import REPO, spawn, twistdPath
from tests._rawclient import treqPool
from tests._util import PATIENCE, freePort

UNITS = REPO / "contrib" / "systemd"


def tool(name: str) -> str:
    """
    @return: The path of a systemd tool.
    @raise SkipTest: If it is not installed.
    """
    path = shutil.which(name)
    if path is None:
        raise SkipTest(f"{name} not found (Debian package systemd)")
    return path


def environmentOptions() -> list[str]:
    """
    @return: C{BLUEGREEN_OPTIONS} of C{bluegreen.env}, split as systemd
        splits an unbraced C{$VARIABLE}: on whitespace.
    """
    for line in (UNITS / "bluegreen.env").read_text().splitlines():
        if line.startswith("BLUEGREEN_OPTIONS="):
            return line.split("=", 1)[1].split()
    raise AssertionError("bluegreen.env sets no BLUEGREEN_OPTIONS")


class UnitTests(TestCase):
    """
    The unit files, checked by systemd's own tool.
    """

    async def test_verify(self) -> None:
        """
        C{systemd-analyze verify} finds nothing to say about the units (its
        warnings, such as an unknown key, exit 0 too: the output must be
        empty).  The paths of the installed layout are replaced by this
        checkout's, since it checks that the programs exist.
        """
        analyze = tool("systemd-analyze")
        where = Path(self.mktemp()).absolute()
        where.mkdir()
        for name in ("bluegreen.socket", "bluegreen.env"):
            shutil.copy(UNITS / name, where / name)
        service = (UNITS / "bluegreen.service").read_text()
        self.assertIn("/opt/bluegreen/.venv/bin/twistd", service)
        service = service.replace(
            "/opt/bluegreen/.venv/bin/twistd", twistdPath()
        ).replace("/etc/bluegreen/bluegreen.env", str(where / "bluegreen.env"))
        (where / "bluegreen.service").write_text(service)
        out, err, code = await getProcessOutputAndValue(
            analyze,
            ["verify", "./bluegreen.socket", "./bluegreen.service"],
            path=str(where),
        )
        self.assertEqual((code, out + err), (0, b""))

    def test_socketNamed(self) -> None:
        """
        The service listens on the socket unit's descriptor by its name.
        """
        socket = (UNITS / "bluegreen.socket").read_text()
        service = (UNITS / "bluegreen.service").read_text()
        self.assertIn("FileDescriptorName=http", socket)
        self.assertIn("--port systemd:domain=INET:name=http", service)


class EnvironmentFileTests(SynchronousTestCase):
    """
    The example options are options bluegreen accepts.
    """

    def test_parses(self) -> None:
        """
        C{BLUEGREEN_OPTIONS}, with the service's C{--port} (a TCP port here:
        no systemd socket in a test) and a real private token file, parse.
        """
        token = Path(self.mktemp())
        token.write_text("s3cret-token-for-the-admin-api\n")
        token.chmod(0o600)
        arguments = [
            str(token) if a == "/etc/bluegreen/admin.token" else a
            for a in environmentOptions()
        ]
        options = Options()
        options.parseOptions(["--port", "tcp:0:interface=127.0.0.1", *arguments])
        config = options.config
        self.assertEqual(config.environments["green"].port, 3000)
        self.assertEqual(config.syncMode, "migrate")
        self.assertEqual(config.sshOptions, ("-i/etc/bluegreen/sync_key",))

    def test_systemdWithoutSocket(self) -> None:
        """
        The service's C{--port} outside systemd (no socket handed over) is
        refused with a message saying how to hand one over.
        """
        options = Options()
        error = self.assertRaises(
            usage.UsageError,
            options.parseOptions,
            [
                "--port",
                "systemd:domain=INET:name=http",
                "--green",
                "http://127.0.0.1:5002",
                "--blue",
                "http://127.0.0.1:5001",
            ],
        )
        self.assertEqual(
            str(error),
            "--port: 'systemd:domain=INET:name=http' is not a valid endpoint "
            "(e.g. 3090, tcp:3090:interface=127.0.0.1, unix:/run/bg.sock): "
            "systemd handed over no listening socket with that index or name "
            "(run it from a .socket unit with FileDescriptorName=, or under "
            "systemd-socket-activate --fdname=NAME)",
        )


class SocketActivationTests(TestCase):
    """
    bluegreen started by systemd-socket-activate serves on the socket it
    was handed.
    """

    timeout = 4 * PATIENCE

    async def test_serves(self) -> None:
        """
        The first connection starts bluegreen on the handed-over socket
        (as the C{.socket} unit would) and is answered by GREEN; so is the
        next one.
        """
        activate = tool("systemd-socket-activate")
        apps = {}
        for name in ("green", "blue"):
            app = spawn(
                self,
                f"app {name}",
                sys.executable,
                ["tests/_apps.py", "--name", name, "--port", "0"],
            )
            match = await app.waitForLine(r'^\{"ready": true.*"port": (\d+)\}$')
            apps[name] = f"http://127.0.0.1:{match.group(1)}"
        port = freePort()
        command = [
            twistdPath(),
            "-n",
            "--pidfile=",
            "bluegreen",
            "--port",
            "systemd:domain=INET:name=http",
            "--green",
            apps["green"],
            "--blue",
            apps["blue"],
            "--admin",
            "none",
        ]
        proxy = spawn(
            self,
            "bluegreen (socket-activated)",
            activate,
            ["-l", f"127.0.0.1:{port}", "--fdname=http", *command],
        )
        await proxy.waitForLine(r"Listening on 127\.0\.0\.1:\d+")
        pool = treqPool(self, 2)
        for path in ("/first", "/second"):
            response = await treq.get(
                f"http://127.0.0.1:{port}{path}", pool=pool, timeout=PATIENCE
            )
            document = await treq.json_content(response)
            self.assertEqual(
                (response.code, document["env"], document["path"]),
                (200, "green", path),
                shlex.join(command),
            )
        await proxy.waitForLine(r"ProxySite starting on \d+")
