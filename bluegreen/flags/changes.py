# -*- test-case-name: tests.test_flags -*-
"""
How changes show in Redis: the change script every write runs, the history
entries and change messages it writes, and the keyspace notifications that
tell of changes made outside bluegreen.

Every change made through bluegreen is one Lua script (C{EVAL}): read the
old value, C{SET} or C{DEL} the key, C{SADD} the name to the registry,
C{LPUSH} the history entry and C{LTRIM} the list, and C{PUBLISH} the entry on
the C{bluegreen:flags} channel (with the database number, as channels are
shared by all databases).  It happens wholly or not at all.
"""

from __future__ import annotations

import json

from bluegreen.flags.model import CHANNEL, NAME_RE, FlagChange

#: Keyspace event classes the store needs: strings (C{SET}), generic
#: commands (C{DEL}, C{EXPIRE}, C{RENAME}) and expiry.
EVENT_CLASSES = "$gx"

#: What C{A} stands for in C{notify-keyspace-events}.
ALL_CLASSES = "g$lshzxetd"

#: The change script.  KEYS: the flag, L{REGISTRY}, L{HISTORY}.  ARGV:
#: C{set} or C{unset}, the value, the history entry before and after its
#: C{old} value (JSON, built by Python), the channel, the history cap.
#: The message is published first: subscribers then get it before the
#: keyspace notification of the same change, on the same connection, so a
#: change made through bluegreen is never taken for one made outside.
WRITE_SCRIPT = """\
local old = redis.call('GET', KEYS[1])
local entry = ARGV[3] .. (old and cjson.encode(old) or 'null') .. ARGV[4]
redis.call('PUBLISH', ARGV[5], entry)
if ARGV[1] == 'set' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('LPUSH', KEYS[3], entry)
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
return old
"""


def keyspaceChannel(db: int, name: str) -> str:
    """
    The keyspace notification channel of key C{name} in database C{db}.
    """
    return f"__keyspace@{db}__:{name}"


def missingEvents(events: str) -> str:
    """
    The C{notify-keyspace-events} letters the store needs that C{events}
    lacks (C{""} when none).
    """
    have = set(events)
    if "A" in have:
        have |= set(ALL_CLASSES)
    missing = "" if "K" in have else "K"
    return missing + "".join(c for c in EVENT_CLASSES if c not in have)


def scriptArguments(
    when: float,
    env: str,
    name: str,
    value: str | None,
    who: str,
    db: int,
    changeId: str,
    historyLimit: int,
) -> list[str | int]:
    """
    The C{ARGV} of L{WRITE_SCRIPT} for one change.

    @param when: When it is made (POSIX time).
    @param env: The environment.
    @param name: The flag.
    @param value: Its new value, or L{None} to remove it.
    @param who: Who makes it.
    @param db: The database number (channels are shared by all databases).
    @param changeId: A unique id, so that the change applies once although
        it arrives both as the script's answer and as a message.
    @param historyLimit: The most entries kept in the history.
    @return: The arguments.
    """
    entry = {
        "when": when,
        "env": env,
        "flag": name,
        "new": value,
        "who": who,
        "db": db,
        "id": changeId,
    }
    # The script adds "old" (which only Redis knows) and the closing brace.
    head = json.dumps(entry)[:-1] + ', "old": '
    return [
        "unset" if value is None else "set",
        "" if value is None else value,
        head,
        "}",
        CHANNEL,
        historyLimit,
    ]


def parseEntry(entry: object, env: str) -> tuple[FlagChange, str]:
    """
    A history entry or change message as a change and its id.

    @param entry: The entry, decoded from JSON.
    @param env: The environment it is read for.
    @return: The change, and its id (C{""} if it has none).
    @raise ValueError: If it is malformed.
    @raise KeyError: If it lacks C{flag} or C{when}.
    """
    if not isinstance(entry, dict):
        raise ValueError("not an object")
    flag = entry["flag"]
    old, new = entry.get("old"), entry.get("new")
    if not isinstance(flag, str) or not NAME_RE.fullmatch(flag):
        raise ValueError("bad flag")
    for value in (old, new):
        if value is not None and not isinstance(value, str):
            raise ValueError("bad value")
    change = FlagChange(
        float(entry["when"]), env, flag, old, new, str(entry.get("who", ""))
    )
    return change, str(entry.get("id", ""))
