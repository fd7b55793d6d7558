# -*- test-case-name: tests.test_state -*-
"""
Tests for L{bluegreen.statefile}: the C{--state} file.
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from bluegreen.statefile import (
    KEEP,
    VERSION,
    SavedState,
    StateError,
    SwitchRecord,
    load,
    save,
)

COLOURS = ("green", "blue")

FIRST = SwitchRecord(1000.0, "green", "blue", "failover: green down: status 500")
SECOND = SwitchRecord(1030.5, "blue", "green", "failback: green up for 30 s")


class Unserializable:
    """
    A switch whose reason JSON cannot encode, to make L{save} fail halfway.
    """

    when = 1.0
    source = "green"
    to = "blue"
    reason = object()


class StateMixin(SynchronousTestCase):
    """
    Gives each test a directory of its own.
    """

    def setUp(self) -> None:
        """
        Make an empty directory; C{self.path} is a state file in it (not
        created).
        """
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "state.json")

    def write(self, content: str | bytes) -> None:
        """
        Put C{content} in the state file.
        """
        data = content.encode("utf-8") if isinstance(content, str) else content
        with open(self.path, "wb") as f:
            f.write(data)

    def writeJSON(self, data: object) -> None:
        """
        Put C{data}, as JSON, in the state file.
        """
        self.write(json.dumps(data))

    def loadError(self) -> str:
        """
        Load the state file, which must fail.

        @return: The L{StateError}'s message.
        """
        error = self.assertRaises(StateError, load, self.path, COLOURS)
        return str(error)

    def read(self) -> bytes:
        """
        @return: The state file's bytes.
        """
        with open(self.path, "rb") as f:
            return f.read()


class RoundTripTests(StateMixin):
    """
    What L{save} writes, L{load} reads back.
    """

    def test_roundTrip(self) -> None:
        """
        The live colour and the history, in order, survive a save and a load.
        """
        save(self.path, "green", [FIRST, SECOND])
        self.assertEqual(load(self.path, COLOURS), SavedState("green", (FIRST, SECOND)))

    def test_emptyHistory(self) -> None:
        """
        A state with no switches yet round-trips too.
        """
        save(self.path, "blue", [])
        self.assertEqual(load(self.path, COLOURS), SavedState("blue", ()))

    def test_controllerSwitches(self) -> None:
        """
        Any object with C{when}, C{source}, C{to} and C{reason} can be saved,
        like the controller's L{bluegreen.controller.Switch}.
        """
        from bluegreen.controller import Switch

        save(self.path, "blue", [Switch(5.0, "green", "blue", "manual switch")])
        saved = load(self.path, COLOURS)
        assert saved is not None
        self.assertEqual(
            saved.history, (SwitchRecord(5.0, "green", "blue", "manual switch"),)
        )

    def test_format(self) -> None:
        """
        The file is versioned JSON naming the colours C{from} and C{to}.
        """
        save(self.path, "blue", [FIRST])
        self.assertEqual(
            json.loads(self.read()),
            {
                "version": VERSION,
                "live": "blue",
                "history": [
                    {
                        "when": 1000.0,
                        "from": "green",
                        "to": "blue",
                        "reason": "failover: green down: status 500",
                    }
                ],
            },
        )

    def test_keep(self) -> None:
        """
        Only the newest L{KEEP} switches are stored, oldest first.
        """
        self.assertEqual(KEEP, 200)
        history = [
            SwitchRecord(float(i), "green", "blue", f"switch {i}")
            for i in range(KEEP + 50)
        ]
        save(self.path, "blue", history)
        saved = load(self.path, COLOURS)
        assert saved is not None
        self.assertEqual(len(saved.history), KEEP)
        self.assertEqual(saved.history, tuple(history[50:]))
        self.assertEqual(saved.history[0].reason, "switch 50")
        self.assertEqual(saved.history[-1].reason, f"switch {KEEP + 49}")

    def test_historyLeftAlone(self) -> None:
        """
        Saving does not trim the caller's own list.
        """
        history = [FIRST] * (KEEP + 1)
        save(self.path, "blue", history)
        self.assertEqual(len(history), KEEP + 1)

    def test_missing(self) -> None:
        """
        A file that does not exist (the first start) loads as L{None}.
        """
        self.assertIsNone(load(self.path, COLOURS))

    def test_noHistoryKey(self) -> None:
        """
        A file without a history loads with an empty one.
        """
        self.writeJSON({"version": VERSION, "live": "green"})
        self.assertEqual(load(self.path, COLOURS), SavedState("green", ()))

    def test_coloursGiven(self) -> None:
        """
        The live colour is checked against the colours given, not a fixed
        list.
        """
        save(self.path, "blue", [])
        self.assertEqual(load(self.path, ("blue",)), SavedState("blue", ()))
        error = self.assertRaises(StateError, load, self.path, ("green",))
        self.assertEqual(
            str(error), f"{self.path}: 'live' is 'blue', expected one of ('green',)"
        )


class LoadErrorTests(StateMixin):
    """
    A file that exists but cannot be used raises L{StateError} with a message
    an operator can act on.
    """

    def test_notJSON(self) -> None:
        """
        Truncated JSON is reported with the parser's complaint.
        """
        self.write('{"version": 1, "live": "gr')
        message = self.loadError()
        self.assertTrue(
            message.startswith(f"{self.path} is not valid JSON (Unterminated string"),
            message,
        )

    def test_empty(self) -> None:
        """
        An empty file (say, a disk that filled up) is not valid JSON.
        """
        self.write("")
        self.assertTrue(self.loadError().startswith(f"{self.path} is not valid JSON ("))

    def test_notUTF8(self) -> None:
        """
        Binary garbage is reported as invalid JSON, not raised as a
        L{UnicodeDecodeError}.
        """
        self.write(b"\xff\xfe\x00garbage")
        self.assertEqual(
            self.loadError(),
            f"{self.path} is not valid JSON (not UTF-8: invalid start byte at byte 0)",
        )

    def test_nestedTooDeeply(self) -> None:
        """
        JSON nested deeper than the parser can go is reported, not raised as
        a L{RecursionError}.
        """
        self.write("[" * 100_000)
        self.assertEqual(
            self.loadError(), f"{self.path} is not valid JSON (nested too deeply)"
        )

    def test_notAnObject(self) -> None:
        """
        JSON that is not an object is not a state file.
        """
        self.writeJSON(["green"])
        self.assertEqual(
            self.loadError(),
            f"{self.path} is not a bluegreen state file (version 1)",
        )

    def test_noVersion(self) -> None:
        """
        An object without a version is not a state file.
        """
        self.writeJSON({"live": "green", "history": []})
        self.assertEqual(
            self.loadError(),
            f"{self.path} is not a bluegreen state file (version 1)",
        )

    def test_wrongVersion(self) -> None:
        """
        A version this bluegreen does not know is refused.
        """
        self.writeJSON({"version": 2, "live": "green", "history": []})
        self.assertEqual(
            self.loadError(),
            f"{self.path} is not a bluegreen state file (version 1)",
        )

    def test_unknownColour(self) -> None:
        """
        A live colour that is not an environment is refused, naming it.
        """
        self.writeJSON({"version": 1, "live": "red", "history": []})
        self.assertEqual(
            self.loadError(),
            f"{self.path}: 'live' is 'red', expected one of ('green', 'blue')",
        )

    def test_noLive(self) -> None:
        """
        A file without a live colour is refused.
        """
        self.writeJSON({"version": 1, "history": []})
        self.assertEqual(
            self.loadError(),
            f"{self.path}: 'live' is None, expected one of ('green', 'blue')",
        )

    def test_historyNotList(self) -> None:
        """
        A history that is not a list is refused.
        """
        self.writeJSON({"version": 1, "live": "green", "history": {"a": 1}})
        self.assertEqual(self.loadError(), f"{self.path}: 'history' is not a list")

    def test_entryMissingKey(self) -> None:
        """
        A history entry without a reason is refused, and shown.
        """
        entry = {"when": 1.0, "from": "green", "to": "blue"}
        self.writeJSON({"version": 1, "live": "blue", "history": [entry]})
        self.assertEqual(
            self.loadError(),
            f"{self.path}: a history entry is malformed: {entry!r}",
        )

    def test_entryBadTime(self) -> None:
        """
        A history entry whose time is not a number is refused.
        """
        entry = {"when": "soon", "from": "green", "to": "blue", "reason": "x"}
        self.writeJSON({"version": 1, "live": "blue", "history": [entry]})
        self.assertEqual(
            self.loadError(),
            f"{self.path}: a history entry is malformed: {entry!r}",
        )

    def test_entryNotObject(self) -> None:
        """
        A history entry that is not an object is refused.
        """
        self.writeJSON({"version": 1, "live": "blue", "history": [FIRST.reason]})
        self.assertEqual(
            self.loadError(),
            f"{self.path}: a history entry is malformed: {FIRST.reason!r}",
        )

    def test_directory(self) -> None:
        """
        A path that is a directory cannot be read, and says why.
        """
        os.mkdir(self.path)
        self.assertEqual(self.loadError(), f"cannot read {self.path}: Is a directory")

    def test_unreadable(self) -> None:
        """
        A file without read permission cannot be read, and says why.
        """
        if os.getuid() == 0:
            raise self.skipTest("root can read any file (see test_directory)")
        save(self.path, "green", [])
        os.chmod(self.path, 0)
        self.addCleanup(os.chmod, self.path, 0o600)
        self.assertEqual(
            self.loadError(), f"cannot read {self.path}: Permission denied"
        )


class AtomicSaveTests(StateMixin):
    """
    L{save} replaces the file in one step, and a failed save leaves the old
    file as it was.
    """

    def test_replace(self) -> None:
        """
        Saving over an existing file replaces its content and leaves no
        temporary file behind.
        """
        save(self.path, "green", [])
        save(self.path, "blue", [FIRST])
        self.assertEqual(os.listdir(self.directory), ["state.json"])
        self.assertEqual(load(self.path, COLOURS), SavedState("blue", (FIRST,)))

    def test_manySaves(self) -> None:
        """
        Repeated saves leave exactly one file.
        """
        history: list[SwitchRecord] = []
        for i in range(10):
            history.append(SwitchRecord(float(i), "green", "blue", str(i)))
            save(self.path, "blue", history)
        self.assertEqual(os.listdir(self.directory), ["state.json"])
        saved = load(self.path, COLOURS)
        assert saved is not None
        self.assertEqual(len(saved.history), 10)

    def test_relativePath(self) -> None:
        """
        A relative path is saved in the current directory (the temporary
        file goes next to it, so the rename stays on one file system).
        """
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.directory)
        save("relative.json", "blue", [])
        self.assertEqual(os.listdir("."), ["relative.json"])
        self.assertEqual(load("relative.json", COLOURS), SavedState("blue", ()))

    def test_failedWriteKeepsOld(self) -> None:
        """
        A save that fails while writing raises, removes its temporary file
        and leaves the old file byte for byte.
        """
        save(self.path, "green", [FIRST])
        before = self.read()
        self.assertRaises(TypeError, save, self.path, "blue", [Unserializable()])
        self.assertEqual(self.read(), before)
        self.assertEqual(os.listdir(self.directory), ["state.json"])

    def test_failedRenameCleansUp(self) -> None:
        """
        A save whose rename fails (the path is a non-empty directory) raises
        L{OSError}, leaves the path alone and removes its temporary file.
        """
        os.mkdir(self.path)
        with open(os.path.join(self.path, "keep"), "w") as f:
            f.write("x")
        self.assertRaises(OSError, save, self.path, "blue", [FIRST])
        self.assertEqual(os.listdir(self.directory), ["state.json"])
        self.assertEqual(os.listdir(self.path), ["keep"])

    def test_missingDirectory(self) -> None:
        """
        A save into a directory that does not exist raises L{OSError} and
        creates nothing.
        """
        path = os.path.join(self.directory, "missing", "state.json")
        self.assertRaises(OSError, save, path, "blue", [FIRST])
        self.assertEqual(os.listdir(self.directory), [])

    def test_readOnlyDirectory(self) -> None:
        """
        A save into a directory that cannot be written raises L{OSError} and
        leaves the old file as it was.
        """
        if os.getuid() == 0:
            raise self.skipTest(
                "root can write any directory (see test_missingDirectory and "
                "test_failedRenameCleansUp)"
            )
        save(self.path, "green", [FIRST])
        before = self.read()
        os.chmod(self.directory, 0o500)
        self.addCleanup(os.chmod, self.directory, 0o700)
        self.assertRaises(OSError, save, self.path, "blue", [FIRST, SECOND])
        self.assertEqual(self.read(), before)
        self.assertEqual(os.listdir(self.directory), ["state.json"])
