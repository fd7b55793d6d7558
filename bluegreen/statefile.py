# -*- test-case-name: tests.test_state -*-
"""
The C{--state} file: the live colour and the switch history, kept across
restarts.

It is small JSON, replaced atomically (written to a temporary file in the same
directory, flushed to disk, then renamed over the old one), so a crash leaves
either the old state or the new, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from attrs import field, frozen

#: Switches kept in the file (the newest).
KEEP = 200

#: The file format's version.
VERSION = 1


class StateError(Exception):
    """
    The state file cannot be read or makes no sense; the message says why.
    """


@frozen
class SwitchRecord:
    """
    One switch as stored (see L{bluegreen.controller.Switch}).
    """

    when: float
    source: str
    to: str
    reason: str
    revision: str = ""


@frozen
class Revision:
    """
    What an environment runs, as C{bluegreen deployed} reported it.

    @ivar revision: The revision (a commit, a version...).
    @ivar message: What it is, in words (may be empty).
    @ivar when: POSIX time of the report.
    """

    revision: str
    message: str
    when: float

    def asJSON(self) -> dict[str, Any]:
        """
        @return: The revision as JSON.
        """
        return {"revision": self.revision, "message": self.message, "when": self.when}


class Stored(Protocol):
    """
    A switch as L{save} reads it (L{bluegreen.controller.Switch}, or a
    L{SwitchRecord}).
    """

    @property
    def when(self) -> float:
        """
        POSIX time of the switch.
        """

    @property
    def source(self) -> str:
        """
        The colour live before.
        """

    @property
    def to(self) -> str:
        """
        The colour live after.
        """

    @property
    def reason(self) -> str:
        """
        Why.
        """

    @property
    def revision(self) -> str:
        """
        The revision of C{to} when it went live (empty if not reported).
        """


@frozen
class SavedState:
    """
    What the file holds.

    @ivar live: The colour that was live.
    @ivar history: Switches, oldest first.
    @ivar revisions: What each environment runs, as last reported.
    """

    live: str
    history: tuple[SwitchRecord, ...]
    revisions: Mapping[str, Revision] = field(factory=dict)


def load(path: str, colours: tuple[str, ...]) -> SavedState | None:
    """
    Read the state file.

    @param path: The file.
    @param colours: The valid environment names.
    @return: The saved state, or L{None} if the file does not exist (a first
        start).
    @raise StateError: If it exists but cannot be read or parsed.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        # A ValueError, not an OSError: binary garbage, not UTF-8 JSON.
        raise StateError(
            f"{path} is not valid JSON (not UTF-8: {e.reason} at byte {e.start})"
        ) from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise StateError(f"{path} is not valid JSON ({e})") from None
    except RecursionError:
        raise StateError(f"{path} is not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise StateError(f"{path} is not a bluegreen state file (version {VERSION})")
    live = data.get("live")
    if live not in colours:
        raise StateError(f"{path}: 'live' is {live!r}, expected one of {colours}")
    history: list[SwitchRecord] = []
    raw = data.get("history", [])
    if not isinstance(raw, list):
        raise StateError(f"{path}: 'history' is not a list")
    for item in raw:
        try:
            record = SwitchRecord(
                float(item["when"]),
                str(item["from"]),
                str(item["to"]),
                str(item["reason"]),
                str(item.get("revision", "")),
            )
        except (KeyError, TypeError, ValueError):
            raise StateError(
                f"{path}: a history entry is malformed: {item!r}"
            ) from None
        history.append(record)
    return SavedState(live, tuple(history), _revisions(path, data, colours))


def _revisions(
    path: str, data: dict[str, Any], colours: tuple[str, ...]
) -> dict[str, Revision]:
    """
    Read the optional C{revisions} of a state file.

    @raise StateError: If they are malformed.
    """
    raw = data.get("revisions", {})
    if not isinstance(raw, dict):
        raise StateError(f"{path}: 'revisions' is not an object")
    revisions = {}
    for name, item in raw.items():
        try:
            if name not in colours:
                raise ValueError(name)
            revisions[name] = Revision(
                str(item["revision"]), str(item["message"]), float(item["when"])
            )
        except (KeyError, TypeError, ValueError):
            raise StateError(
                f"{path}: a revision entry is malformed: {name!r}: {item!r}"
            ) from None
    return revisions


def save(
    path: str,
    live: str,
    history: Sequence[Stored],
    revisions: Mapping[str, Revision] | None = None,
) -> None:
    """
    Replace the state file atomically.

    @param path: The file.
    @param live: The live colour.
    @param history: Switches, oldest first; the newest L{KEEP} are stored.
    @param revisions: What each environment runs, if reported.
    @raise OSError: If it cannot be written (the old file is left as it was).
    """
    data = {
        "version": VERSION,
        "live": live,
        "history": [
            {"when": s.when, "from": s.source, "to": s.to, "reason": s.reason}
            # Records of older callers may have no revision.
            | ({"revision": s.revision} if getattr(s, "revision", "") else {})
            for s in history[-KEEP:]
        ],
    }
    if revisions:
        data["revisions"] = {n: r.asJSON() for n, r in sorted(revisions.items())}
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".bluegreen-state-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:
        dirfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
