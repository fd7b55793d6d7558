# -*- test-case-name: tests.test_sync_capture -*-
"""
Change capture inside an environment's database: what the exact sync
(L{bluegreen.sync.exact}) reads instead of comparing two snapshots.

Everything bluegreen keeps in the app's database is named with one prefix,
L{PREFIX} (C{_bluegreen_}):

  - C{_bluegreen_state(k, v)}: the database's C{origin} id (random, made at
    install), the schema C{fingerprint} the triggers were made for and the
    C{floor} (the log was trimmed up to this sequence number);
  - C{_bluegreen_log(seq, origin, tbl, op, old, new, at)}: one row per row
    the app inserted (C{I}), updated (C{U}) or deleted (C{D}); C{old} and
    C{new} are JSON objects of column name -> the value's SQL literal
    (C{quote()}: exact for every type, BLOBs included);
  - C{_bluegreen_applied(origin, seq, at)}: how far this database applied
    the log of each other database (the position, kept in the target);
  - C{_bluegreen_conflicts(...)}: what a sync into this database could not
    apply (see L{bluegreen.sync.apply});
  - triggers C{_bluegreen_i_T}, C{_bluegreen_u_T}, C{_bluegreen_d_T} on
    every application table C{T}: C{AFTER INSERT/UPDATE/DELETE}, in the
    app's own transaction, the origin id written into them (a trigger's
    C{WHEN} or a lookup would cost every write of the app more).

What a sync applies is not captured again (no echo): the apply transaction
removes the log rows its own writes made before it commits (SQLite has one
writer at a time, so every log row made inside it is the sync's).  The
sequence is the log's rowid: trimming always keeps the newest row, so a
number is never given twice.

Installing, re-creating the triggers after a schema change (noticed by the
fingerprint) and uninstalling each run as one C{sqlite3} child and one
transaction (L{Capture}).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping

from attrs import field, frozen

from bluegreen.sync.errors import SyncError
from bluegreen.sync.hosts import Hosts
from bluegreen.sync.locations import Location
from bluegreen.sync.merge import LOCK_ATTEMPTS, runLocked
from bluegreen.sync.schema import Table
from bluegreen.sync.sql import ident, literal, rowJSON

#: The prefix of every table and trigger bluegreen adds to a database.
PREFIX = "_bluegreen_"

STATE = PREFIX + "state"
LOG = PREFIX + "log"
APPLIED = PREFIX + "applied"
CONFLICTS = PREFIX + "conflicts"

#: The capture's tables, in the order they are created.
TABLES = (STATE, LOG, APPLIED, CONFLICTS)

#: The layout of the capture's tables (kept in C{_bluegreen_state}).
VERSION = 1

#: The operations in the log: trigger name letter and SQL event.
OPERATIONS = (("i", "I", "INSERT"), ("u", "U", "UPDATE"), ("d", "D", "DELETE"))

#: Seconds since the epoch, with fractions, in SQL (C{unixepoch('subsec')}
#: needs SQLite 3.42).
NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"

#: A fingerprint of the application's tables: SHA3-256 of their names and
#: C{CREATE} statements (C{ALTER TABLE} rewrites a table's statement).
FINGERPRINT_SQL = (
    "(SELECT lower(hex(sha3(coalesce(group_concat(name || ':' || "
    "coalesce(sql, ''), ';'), ''), 256))) FROM (SELECT name, sql FROM "
    "sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite^_%' "
    "ESCAPE '^' AND name NOT LIKE '^_bluegreen^_%' ESCAPE '^' ORDER BY name))"
)

#: What L{Capture.probe} asks.
PROBE_SQL = (
    f"SELECT {FINGERPRINT_SQL} AS fp, (SELECT count(*) FROM sqlite_schema "
    f"WHERE type = 'table' AND name = {literal(STATE)}) AS installed, "
    "(SELECT json_group_array(name) FROM sqlite_schema WHERE type = 'trigger' "
    "AND name LIKE '^_bluegreen^_%' ESCAPE '^') AS triggers;"
)


def _setting(name: str) -> str:
    """
    @return: The expression reading C{name} from the state table.
    """
    return f"(SELECT v FROM {ident(STATE)} WHERE k = {literal(name)})"


#: What L{Capture.read} asks.
STATE_SQL = (
    f"SELECT {_setting('origin')} AS origin, {_setting('fingerprint')} AS fp, "
    f"coalesce({_setting('floor')}, 0) AS floor, "
    f"coalesce((SELECT max(seq) FROM {ident(LOG)}), 0) AS top, "
    f"(SELECT json_group_object(origin, seq) FROM {ident(APPLIED)}) AS applied;"
)

#: Run first in a sync's transaction on a database: where its log ends.
NO_ECHO_BEFORE = (
    f"CREATE TEMP TABLE _bg_top AS SELECT coalesce(max(seq), 0) AS n "
    f"FROM main.{ident(LOG)};"
)

#: Run last in it: remove what the triggers logged of the sync's writes.
NO_ECHO_AFTER = (
    f"DELETE FROM main.{ident(LOG)} WHERE seq > (SELECT n FROM temp._bg_top);"
)

#: The capture's tables.
CREATE_SQL = (
    f"CREATE TABLE IF NOT EXISTS {ident(STATE)}(k TEXT PRIMARY KEY, v);",
    f"CREATE TABLE IF NOT EXISTS {ident(LOG)}(seq INTEGER PRIMARY KEY, "
    "origin TEXT NOT NULL, tbl TEXT NOT NULL, op TEXT NOT NULL, "
    "old TEXT, new TEXT, at REAL NOT NULL);",
    f"CREATE TABLE IF NOT EXISTS {ident(APPLIED)}(origin TEXT PRIMARY KEY, "
    "seq INTEGER NOT NULL, at REAL NOT NULL);",
    f"CREATE TABLE IF NOT EXISTS {ident(CONFLICTS)}(id INTEGER PRIMARY KEY, "
    "at REAL NOT NULL, run TEXT, origin TEXT, seq INTEGER, tbl TEXT, op TEXT, "
    "kind TEXT NOT NULL, key TEXT, source TEXT, target TEXT, detail TEXT, "
    "resolution TEXT);",
)


@frozen
class CaptureState:
    """
    A database's capture, as read from it.

    @ivar origin: Its origin id.
    @ivar fingerprint: The schema fingerprint its triggers were made for.
    @ivar floor: Its log holds no change at or below this sequence number
        (trimmed).
    @ivar top: The highest sequence number it ever gave a change.
    @ivar applied: How far it applied each other origin's log.
    """

    origin: str
    fingerprint: str
    floor: int
    top: int
    applied: Mapping[str, int] = field(factory=dict, hash=False)


@frozen
class Probe:
    """
    What L{Capture.probe} found.

    @ivar fingerprint: The schema fingerprint now.
    @ivar installed: Whether the capture's tables are there.
    @ivar triggers: The capture's triggers there.
    """

    fingerprint: str
    installed: bool
    triggers: tuple[str, ...]


def triggerName(letter: str, table: str) -> str:
    """
    @param letter: C{i}, C{u} or C{d}.
    @param table: The table.
    @return: The name of the capture's trigger on C{table}.
    """
    return f"{PREFIX}{letter}_{table}"


def triggerSQL(table: Table, origin: str) -> list[str]:
    """
    @param table: An application table.
    @param origin: The database's origin id.
    @return: The C{CREATE TRIGGER}s capturing its changes.
    """
    columns = [c.name for c in table.columns]
    out = []
    for letter, op, event in OPERATIONS:
        old = rowJSON("OLD", columns) if op != "I" else "NULL"
        new = rowJSON("NEW", columns) if op != "D" else "NULL"
        out.append(
            f"CREATE TRIGGER {ident(triggerName(letter, table.name))} AFTER "
            f"{event} ON {ident(table.name)} "
            f"BEGIN INSERT INTO {ident(LOG)}(origin, tbl, op, old, new, at) "
            f"VALUES ({literal(origin)}, {literal(table.name)}, {literal(op)}, "
            f"{old}, {new}, {NOW_SQL}); END;"
        )
    return out


def installSQL(
    tables: Iterable[Table],
    fingerprint: str,
    dropTriggers: Iterable[str],
    origin: str | None,
) -> str:
    """
    @param tables: The application's tables.
    @param fingerprint: Their fingerprint (read before C{tables}: if the
        schema changes in between, the next pass installs again).
    @param dropTriggers: The capture's triggers there now.
    @param origin: The database's origin id (L{None}: make one).
    @return: One transaction creating the capture's tables (if missing),
        the origin (if none) and the triggers (replacing C{dropTriggers}).
    """
    script = ["BEGIN IMMEDIATE;", *CREATE_SQL]
    state = ident(STATE)
    if origin is None:
        origin = uuid.uuid4().hex
    for key, value in (
        ("origin", literal(origin)),
        ("floor", "0"),
        ("version", str(VERSION)),
    ):
        script.append(
            f"INSERT OR IGNORE INTO {state}(k, v) VALUES ({literal(key)}, {value});"
        )
    script.append(
        f"INSERT OR REPLACE INTO {state}(k, v) VALUES ('fingerprint', "
        f"{literal(fingerprint)});"
    )
    script.extend(f"DROP TRIGGER IF EXISTS {ident(name)};" for name in dropTriggers)
    for table in tables:
        script.extend(triggerSQL(table, origin))
    script.append("COMMIT;")
    return "\n".join(script) + "\n"


def uninstallSQL(triggers: Iterable[str]) -> str:
    """
    @param triggers: The capture's triggers.
    @return: One transaction dropping everything the capture added.
    """
    script = ["BEGIN IMMEDIATE;"]
    script.extend(f"DROP TRIGGER IF EXISTS {ident(name)};" for name in triggers)
    script.extend(f"DROP TABLE IF EXISTS {ident(name)};" for name in TABLES)
    script.append("COMMIT;")
    return "\n".join(script) + "\n"


class Capture:
    """
    Installs, reads, refreshes and removes the capture in a database.

    @ivar hosts: Runs C{sqlite3} where the database is.
    """

    def __init__(self, hosts: Hosts, lockAttempts: int = LOCK_ATTEMPTS) -> None:
        """
        @param hosts: Runs C{sqlite3} where the database is.
        @param lockAttempts: How many times a change to the capture is
            tried while the database is locked.
        """
        self.hosts = hosts
        self.lockAttempts = lockAttempts

    async def _write(self, database: Location, script: str, what: str) -> None:
        """
        Run one transaction on C{database}, again while it is locked.
        """
        await runLocked(self.hosts, database, script, self.lockAttempts, what)

    async def probe(self, database: Location) -> Probe:
        """
        @param database: A database.
        @return: Its fingerprint, whether the capture is installed, its
            triggers.
        """
        row = (await self.hosts.query(database, PROBE_SQL))[0][0]
        return Probe(
            row["fp"], bool(row["installed"]), tuple(json.loads(row["triggers"]))
        )

    async def read(self, database: Location) -> CaptureState:
        """
        @param database: A database with the capture installed.
        @return: Its capture's state.
        @raise SyncError: If its state has no origin.
        """
        row = (await self.hosts.query(database, STATE_SQL))[0][0]
        if not row["origin"]:
            raise SyncError(f"{database}: {STATE} has no origin id")
        return CaptureState(
            origin=str(row["origin"]),
            fingerprint=str(row["fp"] or ""),
            floor=int(row["floor"] or 0),
            top=int(row["top"] or 0),
            applied={
                str(k): int(v) for k, v in json.loads(row["applied"] or "{}").items()
            },
        )

    async def ensure(self, database: Location) -> tuple[CaptureState, str | None]:
        """
        Install the capture, or re-create its triggers if the schema
        changed since they were made.

        @param database: A database.
        @return: Its capture's state, and what was done (C{installed},
            C{refreshed}) or L{None}.
        @raise SyncError: If the database does not exist.
        """
        if not await self.hosts.isFile(database):
            raise SyncError(f"database {database} does not exist")
        probe = await self.probe(database)
        origin = None
        if probe.installed:
            state = await self.read(database)
            if state.fingerprint == probe.fingerprint:
                return state, None
            origin = state.origin
        tables = await self.hosts.tables(database)
        await self._write(
            database,
            installSQL(tables.values(), probe.fingerprint, probe.triggers, origin),
            "installing the change capture",
        )
        return await self.read(database), (
            "refreshed" if probe.installed else "installed"
        )

    async def uninstall(self, database: Location) -> bool:
        """
        Remove everything the capture added (the log, positions and
        conflicts kept there too).

        @param database: A database.
        @return: Whether there was anything to remove.
        @raise SyncError: If the database does not exist.
        """
        if not await self.hosts.isFile(database):
            raise SyncError(f"database {database} does not exist")
        probe = await self.probe(database)
        if not probe.installed and not probe.triggers:
            return False
        await self._write(
            database, uninstallSQL(probe.triggers), "removing the change capture"
        )
        return True

    async def newOrigin(self, database: Location) -> CaptureState:
        """
        Give a database that is a copy of another (same origin id) an
        origin of its own, forgetting its log and positions (its content
        came from the other: nothing of its own is in them), and triggers
        writing it.

        @param database: The copy.
        @return: Its new state.
        """
        await self._write(
            database,
            "BEGIN IMMEDIATE;\n"
            f"UPDATE {ident(STATE)} SET v = {literal(uuid.uuid4().hex)} "
            "WHERE k = 'origin';\n"
            f"UPDATE {ident(STATE)} SET v = '' WHERE k = 'fingerprint';\n"
            f"DELETE FROM {ident(LOG)};\n"
            f"DELETE FROM {ident(APPLIED)};\n"
            "COMMIT;\n",
            "giving the copy an origin",
        )
        return (await self.ensure(database))[0]

    async def adoptCopy(self, copy: Location, source: Location) -> bool:
        """
        Make a fresh copy of C{source} (the C{copy} strategy's staged file,
        before it takes the target's place) a database of its own: a new
        origin id, an empty log, triggers writing the new id, and positions
        saying exactly where the two stand (the copy has applied the
        source's log up to the snapshot, the source nothing of the copy's
        empty log), so that the next syncs both ways apply changes.

        @param copy: The copy (no app has it open).
        @param source: The database it was copied from.
        @return: Whether the copy had the capture (else nothing was done).
        """
        probe = await self.probe(copy)
        if not probe.installed:
            return False
        state = await self.read(copy)
        origin = uuid.uuid4().hex
        await self._write(
            copy,
            "BEGIN IMMEDIATE;\n"
            f"UPDATE {ident(STATE)} SET v = {literal(origin)} WHERE k = 'origin';\n"
            f"UPDATE {ident(STATE)} SET v = '' WHERE k = 'fingerprint';\n"
            f"UPDATE {ident(STATE)} SET v = 0 WHERE k = 'floor';\n"
            f"DELETE FROM {ident(LOG)};\n"
            f"DELETE FROM {ident(APPLIED)};\n"
            f"INSERT INTO {ident(APPLIED)}(origin, seq, at) VALUES "
            f"({literal(state.origin)}, {state.top}, {NOW_SQL});\n"
            "COMMIT;\n",
            "giving the copy an origin",
        )
        await self.ensure(copy)
        await self._write(
            source,
            "BEGIN IMMEDIATE;\n"
            f"INSERT INTO {ident(APPLIED)}(origin, seq, at) VALUES "
            f"({literal(origin)}, 0, {NOW_SQL});\n"
            "COMMIT;\n",
            "recording the copy's position",
        )
        return True

    async def trim(self, database: Location, upTo: int) -> None:
        """
        Remove the changes at or below C{upTo} from the log (every side
        has applied them).

        @param database: The database whose log it is.
        @param upTo: The sequence number.
        """
        await self._write(
            database,
            "BEGIN IMMEDIATE;\n"
            f"DELETE FROM {ident(LOG)} WHERE seq <= {int(upTo)} AND seq < "
            f"(SELECT max(seq) FROM {ident(LOG)});\n"
            f"UPDATE {ident(STATE)} SET v = max(v, {int(upTo)}) WHERE k = 'floor';\n"
            "COMMIT;\n",
            "trimming the change log",
        )
