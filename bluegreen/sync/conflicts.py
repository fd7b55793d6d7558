# -*- test-case-name: tests.test_sync_capture -*-
"""
What the exact sync keeps in a database besides the app's rows, for
operators: the conflicts a sync into it could not apply
(C{bluegreen sync conflicts DB [--json]}) and the removal of everything the
change capture added (C{bluegreen sync uninstall DB}).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from bluegreen.sync.capture import CONFLICTS, Capture
from bluegreen.sync.errors import SyncError
from bluegreen.sync.hosts import Hosts
from bluegreen.sync.locations import Location
from bluegreen.sync.sql import ident, literal

#: The columns a conflict is listed with.
COLUMNS = (
    "id",
    "at",
    "origin",
    "seq",
    "tbl",
    "op",
    "kind",
    "key",
    "source",
    "target",
    "detail",
    "resolution",
)


async def listConflicts(hosts: Hosts, database: Location) -> list[dict[str, Any]]:
    """
    @param hosts: Runs C{sqlite3}.
    @param database: A database the exact sync wrote to.
    @return: Its kept conflicts, oldest first (none if the capture was
        never installed there); C{key}, C{source} and C{target} decoded.
    @raise SyncError: If the database does not exist (C{sqlite3} would
        create it).
    """
    if not await hosts.isFile(database):
        raise SyncError(f"database {database} does not exist")
    probe = await Capture(hosts).probe(database)
    if not probe.installed:
        return []
    installed = await hosts.query(
        database,
        f"SELECT count(*) AS n FROM sqlite_schema WHERE name = {literal(CONFLICTS)};",
    )
    if not installed[0][0]["n"]:
        return []
    arrays = await hosts.query(
        database,
        f"SELECT {', '.join(COLUMNS)} FROM {ident(CONFLICTS)} ORDER BY id;",
    )
    out = []
    for row in arrays[0] if arrays else []:
        for name in ("key", "source", "target"):
            if row[name] is not None:
                row[name] = json.loads(row[name])
        out.append(row)
    return out


def describe(conflict: dict[str, Any]) -> str:
    """
    @param conflict: One of L{listConflicts}'s.
    @return: It for humans, in a few lines.
    """
    when = datetime.datetime.fromtimestamp(
        float(conflict["at"]), datetime.UTC
    ).strftime("%Y-%m-%d %H:%M:%S UTC")
    key = conflict["key"]
    where = conflict["tbl"] + (f" key ({', '.join(key)})" if key else "")
    seq = f" change {conflict['seq']}" if conflict["seq"] is not None else ""
    lines = [
        f"#{conflict['id']} {when} {conflict['kind']}: {where}{seq}"
        f" ({conflict['resolution']}): {conflict['detail']}",
        f"    source: {json.dumps(conflict['source'], ensure_ascii=False)}",
        f"    target: {json.dumps(conflict['target'], ensure_ascii=False)}",
    ]
    return "\n".join(lines)


async def uninstall(hosts: Hosts, database: Location) -> bool:
    """
    Remove the change capture (its triggers, log, positions, conflicts).

    @param hosts: Runs C{sqlite3}.
    @param database: The database.
    @return: Whether there was anything to remove.
    """
    return await Capture(hosts).uninstall(database)
