# -*- test-case-name: tests.test_dashboard_sync -*-
"""
Tests for the dashboard's Database sync section: the page's own script,
run in node (skipped without it), turns the status's C{sync} section into
text (C{describeSync}) and draws it (against a stand-in DOM,
C{tests/_fakedom.js}).  The page in a real browser is
L{tests.test_dashboard_browser}.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests._util import PATIENCE

from ._admin import call
from .test_dashboard import packagedPage
from .test_syncservice import startSynced

#: Runs the page's pure functions in these tests (they are skipped without).
NODE = shutil.which("node")


def describeSync(sync: dict[str, Any], now: float) -> Any:
    """
    Run the page's own C{describeSync} in node, in UTC.

    @param sync: The status's C{sync} section.
    @param now: The server's time.
    @return: What it returns.
    """
    assert NODE is not None
    page = packagedPage().decode("utf-8")
    begin = page.index("// -- pure functions: begin")
    end = page.index("// -- pure functions: end")
    program = (
        "var input = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
        + page[begin:end]
        + "\nprocess.stdout.write(JSON.stringify(describeSync(input.sync, input.now)));"
    )
    return json.loads(runNode(["-e", program], json.dumps({"sync": sync, "now": now})))


def runNode(arguments: list[str], stdin: str = "") -> str:
    """
    Run node, in UTC (so local times are known), and check it succeeded.

    @param arguments: Its arguments.
    @param stdin: Its input.
    @return: Its output.
    """
    assert NODE is not None
    result = subprocess.run(
        [NODE, *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        env={**os.environ, "TZ": "UTC"},
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout


def pageScript(testCase: SynchronousTestCase) -> str:
    """
    @return: A file holding the page's script, for node.
    """
    [script] = re.findall(rb"<script>(.*?)</script>", packagedPage(), re.DOTALL)
    path = testCase.mktemp() + ".js"
    with open(path, "wb") as f:
        f.write(script)
    return path


#: 2024-05-01 12:00:00 UTC.
NOON = 1714564800.0


def lastSync(**changes: Any) -> dict[str, Any]:
    """
    @return: One direction's last sync, as the status gives it, with
        C{changes}.
    """
    return {
        "when": NOON,
        "strategy": "migrate",
        "rows_copied": 12,
        "conflicts": 0,
        "seconds": 0.812,
        "complete": True,
        "error": None,
        "who": "admin API from 127.0.0.1",
        **changes,
    }


def syncStatus(**changes: Any) -> dict[str, Any]:
    """
    @return: A status's C{sync} section, with C{changes}.
    """
    return {
        "mode": "migrate",
        "databases": {"green": "/srv/g.db", "blue": "/srv/b.db"},
        "running": [],
        "last": {},
        "mirror": None,
        **changes,
    }


class SyncSectionTests(TestCase):
    """
    The page's sync section: C{describeSync} turns the status's C{sync}
    section into the text the page shows.
    """

    if NODE is None:
        skip = "node is not installed"

    def test_directions(self) -> None:
        """
        Each direction's last sync is a row: its strategy, whether it was
        complete, the rows copied and conflicts, how long ago (and the local
        time) and who asked; the mode and the databases are said above.
        """
        view = describeSync(
            syncStatus(
                last={
                    "blue->green": lastSync(
                        when=NOON - 3600 * 3,
                        strategy="copy",
                        rows_copied=0,
                        conflicts=2,
                        complete=False,
                        seconds=12.4,
                        who="mirror",
                    ),
                    "green->blue": lastSync(),
                }
            ),
            NOON + 12,
        )
        self.assertEqual(
            view["mode"],
            "Sync: migrate before each planned switch and after every switch. "
            "Databases: GREEN /srv/g.db, BLUE /srv/b.db.",
        )
        self.assertEqual(view["notes"], [])
        self.assertEqual(
            view["rows"],
            [
                {
                    "key": "blue->green",
                    "direction": "BLUE \u2192 GREEN",
                    "strategy": "copy",
                    "result": "INCOMPLETE",
                    "resultClass": "incomplete",
                    "error": "",
                    "rowsCopied": "0",
                    "conflicts": "2",
                    "when": "3 h ago (2024-05-01 09:00:00), took 12 s",
                    "who": "mirror",
                },
                {
                    "key": "green->blue",
                    "direction": "GREEN \u2192 BLUE",
                    "strategy": "migrate",
                    "result": "complete",
                    "resultClass": "complete",
                    "error": "",
                    "rowsCopied": "12",
                    "conflicts": "0",
                    "when": "12 s ago (2024-05-01 12:00:00), took 0.8 s",
                    "who": "admin API from 127.0.0.1",
                },
            ],
        )

    def test_failed(self) -> None:
        """
        A sync that failed says FAILED and why.
        """
        view = describeSync(
            syncStatus(
                last={"green->blue": lastSync(complete=False, error="disk full")}
            ),
            NOON + 75,
        )
        [row] = view["rows"]
        self.assertEqual(
            (row["result"], row["resultClass"], row["error"], row["when"]),
            (
                "FAILED",
                "failed",
                "disk full",
                "1 min ago (2024-05-01 12:00:00), took 0.8 s",
            ),
        )

    def test_running(self) -> None:
        """
        A running sync is said, with how long it has run and who asked.
        """
        view = describeSync(
            syncStatus(
                mode="none",
                running=[
                    {
                        "from": "green",
                        "to": "blue",
                        "strategy": "copy",
                        "dry_run": True,
                        "who": "CLI",
                        "since": NOON,
                    }
                ],
            ),
            NOON + 3,
        )
        self.assertEqual(
            view["mode"],
            "Sync: on request only (bluegreen sync, the admin API or the "
            "manhole). Databases: GREEN /srv/g.db, BLUE /srv/b.db.",
        )
        self.assertEqual(
            view["notes"],
            [
                {
                    "kind": "running",
                    "text": "Running now: copy GREEN \u2192 BLUE (dry run), for 3 s, "
                    "asked by CLI.",
                }
            ],
        )
        self.assertEqual(view["rows"], [])

    def test_mirror(self) -> None:
        """
        The mirror's direction, interval, lag and the rows of its last pass.
        """
        mirror = {
            "interval": 5.0,
            "running": True,
            "direction": "blue->green",
            "lag": 3.25,
            "last_rows": 1,
            "last_pass": None,
            "failing": False,
            "failures": 0,
            "error": None,
        }
        view = describeSync(syncStatus(mode="mirror", mirror=mirror), NOON)
        self.assertEqual(
            view["notes"],
            [
                {
                    "kind": "",
                    "text": "Mirror BLUE \u2192 GREEN (every 5 s): lag 3.3 s; the "
                    "last pass copied 1 row.",
                }
            ],
        )
        view = describeSync(
            syncStatus(mode="mirror", mirror={**mirror, "lag": None}), NOON
        )
        self.assertEqual(
            view["notes"],
            [
                {
                    "kind": "quiet",
                    "text": "Mirror BLUE \u2192 GREEN (every 5 s): no complete "
                    "pass yet.",
                }
            ],
        )

    def test_mirrorFailing(self) -> None:
        """
        A failing mirror says so, with how many passes failed and why.
        """
        mirror = {
            "interval": 5.0,
            "running": True,
            "direction": "green->blue",
            "lag": 125.0,
            "last_rows": 0,
            "last_pass": None,
            "failing": True,
            "failures": 3,
            "error": "1 conflict",
        }
        view = describeSync(syncStatus(mode="mirror", mirror=mirror), NOON)
        self.assertEqual(
            view["notes"],
            [
                {
                    "kind": "failing",
                    "text": "Mirror GREEN \u2192 BLUE (every 5 s) is FAILING (3 "
                    "passes in a row: 1 conflict); lag 2 min.",
                }
            ],
        )

    def test_scriptParses(self) -> None:
        """
        The page's whole script is valid JavaScript.
        """
        self.assertEqual(runNode(["--check", pageScript(self)]), "")

    def test_drawn(self) -> None:
        """
        The page draws the section from a status (here in node, against a
        stand-in DOM: see C{tests/_fakedom.js}): the mode, a note per
        running sync and for the mirror, a row per direction; neither it
        nor an empty C{syncing} is also drawn as a generic section.
        """
        now = NOON + 12
        status = {
            "version": "1",
            "now": now,
            "live": "green",
            "why": "start",
            "since": None,
            "mode": "serving",
            "history": [],
            "environments": {
                "green": {"url": "http://g", "live": True, "health": {}},
                "blue": {"url": "http://b", "live": False, "health": {}},
            },
            # No switch is waiting for a sync: nothing to say about it.
            "syncing": None,
            "sync": syncStatus(
                mode="mirror",
                running=[
                    {
                        "from": "green",
                        "to": "blue",
                        "strategy": "mirror",
                        "dry_run": False,
                        "who": "mirror",
                        "since": now - 2,
                    }
                ],
                last={"green->blue": lastSync(strategy="mirror", who="mirror")},
                mirror={
                    "interval": 5.0,
                    "running": True,
                    "direction": "green->blue",
                    "lag": 1.5,
                    "last_rows": 12,
                    "last_pass": None,
                    "failing": False,
                    "failures": 0,
                    "error": None,
                },
            ),
        }
        fakeDOM = os.path.join(os.path.dirname(__file__), "_fakedom.js")
        ids = ["sync", "sync-mode", "sync-notes", "sync-table", "sync-empty", "extras"]
        output = runNode([fakeDOM, pageScript(self), *ids], json.dumps(status))
        drawn = json.loads(output)
        self.assertFalse(drawn["sync"]["hidden"])
        self.assertEqual(
            drawn["sync-mode"]["text"],
            "Sync: mirror, continuously from the live database to the "
            "standby's. Databases: GREEN /srv/g.db, BLUE /srv/b.db.",
        )
        self.assertEqual(
            [(n["className"], n["text"]) for n in drawn["sync-notes"]["children"]],
            [
                (
                    "running",
                    "Running now: mirror GREEN → BLUE, for 2 s, asked by mirror.",
                ),
                (
                    "",
                    "Mirror GREEN → BLUE (every 5 s): lag 1.5 s; the last "
                    "pass copied 12 rows.",
                ),
            ],
        )
        [row] = drawn["sync-table"]["body"]
        self.assertEqual(
            [(cell["className"], cell["text"]) for cell in row["children"]],
            [
                ("direction", "GREEN → BLUE"),
                ("strategy", "mirror"),
                ("result complete", "complete"),
                ("number rows", "12"),
                ("number conflicts", "0"),
                ("when", "12 s ago (2024-05-01 12:00:00), took 0.8 s"),
                ("who", "mirror"),
            ],
        )
        self.assertFalse(drawn["sync-table"]["hidden"])
        self.assertTrue(drawn["sync-empty"]["hidden"])
        self.assertEqual(drawn["extras"]["children"], [])

    async def test_realStatus(self) -> None:
        """
        The section of a running service, after a sync through the API, is
        described as one complete row.
        """
        synced = await startSynced(self)
        answer = await call(
            synced.base + "/api/sync", "POST", payload={"from": "green", "to": "blue"}
        )
        self.assertEqual(answer.code, 200)
        status = (await call(synced.base + "/api/status")).json
        view = describeSync(status["sync"], status["now"])
        [row] = view["rows"]
        self.assertEqual(
            (
                row["direction"],
                row["strategy"],
                row["result"],
                row["rowsCopied"],
                row["conflicts"],
            ),
            ("GREEN \u2192 BLUE", "migrate", "complete", "1", "0"),
        )
        self.assertRegex(row["when"], r"^\d+ s ago \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)")
        self.assertTrue(view["mode"].startswith("Sync: migrate before"), view["mode"])
