# -*- test-case-name: tests.test_promote_integration -*-
"""
The deployment workflow with real processes: GREEN and BLUE are test apps
(L{tests._apps}, separate processes, told over HTTP to answer 500), the
proxy is a real service with its admin API and C{--preview} listener on
free ports, and C{bluegreen promote|deployed|switch|status} run as the
installed console script.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import sys
from typing import Any, cast

from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from bluegreen.controller import Controller
from bluegreen.service.tap import ProxyService, StartupError, makeService
from tests._admin import (
    QUIET_HEALTH,
    call,
    listeningPort,
    runService,
    serviceArguments,
)
from tests._util import LOOPBACK, freePort, waitFor
from tests.test_cli_admin import bluegreen
from tests.test_failover_integration import App, setMode, startApp
from tests.test_options import parse
from tests.test_tap import accepts, takenPort


class Workflow:
    """
    Two app processes and a service in front of them with a preview.

    @ivar green: The GREEN app.
    @ivar blue: The BLUE app.
    @ivar service: The service.
    """

    def __init__(self, green: App, blue: App, service: ProxyService) -> None:
        self.green = green
        self.blue = blue
        self.service = service

    @property
    def controller(self) -> Controller:
        """
        The service's controller.
        """
        return self.service.controller

    def url(self, option: str) -> str:
        """
        @return: The base URL of the C{--option} listener.
        """
        return f"http://127.0.0.1:{listeningPort(self.service, option).getHost().port}"  # type: ignore[attr-defined]

    async def served(self, option: str, path: str = "/") -> tuple[int, Any]:
        """
        @return: The status and JSON body of C{GET path} on a listener.
        """
        answer = await call(self.url(option) + path)
        return answer.code, json.loads(answer.data)

    async def cli(self, *args: str) -> tuple[str, str, int]:
        """
        Run C{bluegreen --admin URL ARGS}.
        """
        return await bluegreen("--admin", self.url("admin"), *args)


class WorkflowTests(TestCase):
    """
    Preview, verified promotion and revisions, end to end.
    """

    timeout = 60

    async def start(self, *extra: str) -> Workflow:
        """
        Start both apps and the service (preview on a free port, quiet
        health checks, C{extra} options); wait for the first checks.
        """
        green = await startApp(self, "green")
        blue = await startApp(self, "blue")
        args = serviceArguments(
            green.url, blue.url, *QUIET_HEALTH, "--preview", LOOPBACK, *extra
        )
        service = runService(self.addCleanup, args)
        states = service.health.health.values()
        await waitFor(lambda: all(s.up for s in states), "both apps up")
        self.pool = HTTPConnectionPool(_reactor(), persistent=False)
        return Workflow(green, blue, service)

    async def test_previewFollowsStandby(self) -> None:
        """
        The preview listener serves the standby, and follows each switch;
        the status names its URL and what it shows.
        """
        flow = await self.start()
        self.assertEqual((await flow.served("port"))[1]["env"], "green")
        self.assertEqual((await flow.served("preview", "/p?q=1"))[1]["path"], "/p?q=1")
        self.assertEqual((await flow.served("preview"))[1]["env"], "blue")
        status = (await call(flow.url("admin") + "/api/status")).json
        self.assertEqual(
            (status["promotion"]["preview"], status["promotion"]["previewShows"]),
            (flow.url("preview"), "blue"),
        )
        for live, standby in (("blue", "green"), ("green", "blue")):
            out, err, code = await flow.cli("switch", live)
            self.assertEqual((code, err), (0, ""))
            self.assertEqual((await flow.served("port"))[1]["env"], live)
            self.assertEqual((await flow.served("preview"))[1]["env"], standby)
        out, err, code = await flow.cli("status")
        self.assertIn(f"preview: {flow.url('preview')} (shows blue)", out)

    async def test_previewNeverRetriesOnLive(self) -> None:
        """
        A preview request that cannot reach the standby gets a 502: it is
        not retried on the live environment (the main listener would).
        """
        flow = await self.start("--retry", "connect")
        await flow.blue.process.kill()
        answer = await call(flow.url("preview") + "/")
        self.assertEqual(
            (answer.code, answer.data),
            (
                502,
                f"bluegreen: blue ({flow.blue.url}) refused the connection\n".encode(),
            ),
        )
        self.assertEqual((await flow.served("port"))[1]["env"], "green")

    async def test_failingPathCheckRefuses(self) -> None:
        """
        C{bluegreen promote} with a C{--verify} check the standby fails:
        exit status 1 naming the check and what it got; GREEN stays live.
        """
        flow = await self.start("--verify", "/=200", "--verify", "/fact/1=200")
        await setMode(self.pool, flow.blue, "fail500")
        out, err, code = await flow.cli("promote")
        self.assertEqual(
            (out, err, code),
            (
                "",
                "bluegreen: blue failed its promotion checks: GET / expected 200, "
                "got status 500; GET /fact/1 expected 200, got status 500; use "
                "force to switch anyway\n",
                1,
            ),
        )
        self.assertEqual(flow.controller.active, "green")
        self.assertEqual((await flow.served("port"))[1]["env"], "green")
        # bluegreen switch runs them too, unless --force.
        out, err, code = await flow.cli("switch", "blue")
        self.assertEqual(code, 1)
        self.assertIn("switch refused: blue failed its promotion checks: GET /", err)
        self.assertEqual(flow.controller.active, "green")
        out, err, code = await flow.cli("switch", "blue", "--force")
        self.assertEqual((code, flow.controller.active), (0, "blue"))

    async def test_forcedPromotion(self) -> None:
        """
        C{bluegreen promote --force} skips the failing checks and switches,
        saying it was forced; with C{--check-only} it is a usage error.
        """
        flow = await self.start("--verify", "/=200")
        await setMode(self.pool, flow.blue, "fail500")
        _out, err, code = await flow.cli("promote", "--check-only", "--force")
        self.assertEqual(
            (code, err.splitlines()[0]),
            (2, "bluegreen: promote: --check-only and --force contradict each other"),
        )
        self.assertEqual(flow.controller.active, "green")
        out, err, code = await flow.cli("promote", "--force")
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn("promoted BLUE (was green)", out)
        self.assertIn("forced", out)
        self.assertEqual(flow.controller.active, "blue")

    async def test_failingCommandRefuses(self) -> None:
        """
        A C{--verify-command} exiting non-zero refuses the promotion, naming
        the command, its exit code and its last line of output (which shows
        that it was given C{BLUEGREEN_PREVIEW_URL}).
        """
        command = 'echo "smoke test of $BLUEGREEN_PREVIEW_URL failed" >&2; exit 3'
        flow = await self.start("--verify-command", command)
        out, err, code = await flow.cli("promote")
        self.assertEqual(
            (out, err, code),
            (
                "",
                f"bluegreen: blue failed its promotion checks: command {command!r} "
                "expected exit 0, got exited with code 3: smoke test of "
                f"{flow.url('preview')} failed; use force to switch anyway\n",
                1,
            ),
        )
        self.assertEqual(flow.controller.active, "green")

    async def test_commandTimesOut(self) -> None:
        """
        A C{--verify-command} that runs past C{--verify-timeout} is killed
        and fails its check.
        """
        flow = await self.start(
            "--verify-command", "sleep 30", "--verify-timeout", "0.5"
        )
        _out, err, code = await flow.cli("promote")
        self.assertEqual(code, 1)
        self.assertIn("got timeout after 0.5 s (killed by signal", err)
        self.assertEqual(flow.controller.active, "green")

    async def test_passingPromotes(self) -> None:
        """
        When every check passes (paths, and a command that fetches the
        preview URL and finds BLUE there), C{bluegreen promote} switches.
        """
        script = (
            "import os, sys, urllib.request; "
            "url = os.environ['BLUEGREEN_PREVIEW_URL'] + '/'; "
            "sys.exit(0 if b'blue' in urllib.request.urlopen(url).read() else 1)"
        )
        command = shlex.join([sys.executable, "-c", script])
        flow = await self.start("--verify", "/", "--verify-command", command)
        out, err, code = await flow.cli("promote")
        self.assertEqual((err, code), ("", 0))
        self.assertEqual(
            out,
            "  ok    GET /: status 200\n"
            f"  ok    command {command!r}: exit 0\n"
            f"promoted BLUE (was green): promoted via admin API from 127.0.0.1, "
            "2 checks passed\n",
        )
        self.assertEqual((await flow.served("port"))[1]["env"], "blue")
        # GREEN is the standby now: the command finds no BLUE there.
        out, err, code = await flow.cli("promote", "--check-only")
        self.assertEqual(
            (out, code),
            (
                f"checks of green at {flow.url('preview')}: FAILED\n"
                "  ok    GET /: status 200\n"
                f"  FAIL  command {command!r}: expected exit 0, got exited with "
                "code 1\n",
                1,
            ),
        )
        self.assertEqual(flow.controller.active, "blue")

    async def test_revisions(self) -> None:
        """
        C{bluegreen deployed} records a revision: status, metrics, the
        state file and the history of the switch that makes it live show it.
        """
        state = self.mktemp()
        flow = await self.start("--state", state)
        out, err, code = await flow.cli(
            "deployed", "blue", "--revision", "a1b2c3", "--message", "fix votes"
        )
        self.assertEqual((out, err, code), ("blue runs a1b2c3 (fix votes)\n", "", 0))
        out, err, code = await flow.cli("status")
        self.assertIn("\nblue runs a1b2c3 (fix votes)\n", out)
        metrics = await call(flow.url("admin") + "/metrics")
        self.assertIn(
            b'bluegreen_revision_info{env="blue",revision="a1b2c3"} 1.0', metrics.data
        )
        out, err, code = await flow.cli("promote")
        self.assertIn("promoted BLUE (was green): promoted via admin API", out)
        self.assertIn(": a1b2c3 (fix votes)", out)
        out, err, code = await flow.cli("status")
        self.assertIn("[a1b2c3]", out)
        with open(state) as f:
            saved = json.load(f)
        self.assertEqual(saved["revisions"]["blue"]["revision"], "a1b2c3")
        self.assertEqual(saved["history"][-1]["revision"], "a1b2c3")

    async def test_deployedRefusals(self) -> None:
        """
        A revision for no environment, or without a revision: usage error;
        an unprintable one is refused by the API.
        """
        flow = await self.start()
        _out, err, code = await flow.cli("deployed", "red", "--revision", "x")
        self.assertEqual(code, 2)
        self.assertIn("deployed: unknown environment 'red'", err)
        _out, err, code = await flow.cli("deployed", "blue")
        self.assertEqual(
            (code, err.splitlines()[0]),
            (2, "bluegreen: deployed: --revision REV is required"),
        )
        answer = await call(
            flow.url("admin") + "/api/deployed",
            "POST",
            payload={"env": "blue", "revision": "a\x07"},
        )
        self.assertEqual(
            (answer.code, answer.error),
            (400, "field 'revision' must be 1 to 100 printable characters"),
        )

    async def test_autoPromote(self) -> None:
        """
        With C{--auto-promote}, a revision reported on the standby goes live
        by itself once its checks pass; a failing one does not (logged).
        """
        logged: list[str] = []

        def observer(event: LogEvent) -> None:
            logged.append(formatEvent(event))

        globalLogPublisher.addObserver(cast(ILogObserver, observer))
        self.addCleanup(globalLogPublisher.removeObserver, cast(ILogObserver, observer))
        flow = await self.start("--verify", "/=200", "--auto-promote", "0.2")
        await setMode(self.pool, flow.blue, "fail500")
        await flow.cli("deployed", "blue", "--revision", "bad1")
        await waitFor(
            lambda: any("auto-promotion of bad1 refused" in m for m in logged),
            "the refused auto-promotion",
        )
        self.assertEqual(flow.controller.active, "green")
        await setMode(self.pool, flow.blue, "ok")
        await flow.cli("deployed", "blue", "--revision", "good2")
        await waitFor(lambda: flow.controller.active == "blue", "auto-promotion")
        self.assertEqual(flow.controller.history[-1].revision, "good2")


def _reactor() -> Any:
    """
    @return: The global reactor.
    """
    from twisted.internet import reactor

    return reactor


class PreviewListenTests(TestCase):
    """
    The preview listener's start-up.
    """

    async def test_previewPortInUse(self) -> None:
        """
        A C{--preview} port in use stops the start with one line naming
        C{--preview}; the proxy's port, already bound, is closed again.
        """
        proxyPort = freePort()
        with takenPort() as (_port, value):
            service = makeService(
                parse(
                    "--port",
                    f"tcp:{proxyPort}:interface=127.0.0.1",
                    "--preview",
                    value,
                    "--access-log",
                    "none",
                )
            )
            error = self.assertRaises(StartupError, service.privilegedStartService)
        self.assertEqual(
            error.code,
            f"bluegreen: cannot listen on --preview {value}: "
            f"[Errno {errno.EADDRINUSE}] {os.strerror(errno.EADDRINUSE)}",
        )
        await waitFor(lambda: not accepts(proxyPort), "the proxy's port closed")
