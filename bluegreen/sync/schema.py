# -*- test-case-name: tests.test_sync -*-
"""
The shape of a database as the sync reads it: its tables (L{Table}, with
their L{Column}s, UNIQUE indexes and L{ForeignKey}s, read by L{INTROSPECT})
and what it holds (L{Manifest}).
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen


@frozen
class Column:
    """
    A column of a table.

    @ivar name: Its name.
    @ivar pk: Its position in the primary key (1-based), 0 if not in it.
    @ivar notNull: Whether it is C{NOT NULL}.
    @ivar default: Its default (SQL text), or L{None}.
    @ivar type: Its declared type.
    """

    name: str
    pk: int
    notNull: bool
    default: str | None
    type: str


@frozen
class ForeignKey:
    """
    A foreign key of a table.

    @ivar parent: The table referred to.
    @ivar columns: The referring columns.
    @ivar parentColumns: The referred columns (empty: the parent's key).
    """

    parent: str
    columns: tuple[str, ...]
    parentColumns: tuple[str | None, ...]


@frozen
class Table:
    """
    The shape of one table.

    @ivar name: Its name.
    @ivar withoutRowid: Whether it is a WITHOUT ROWID table.
    @ivar columns: Its (non-generated) columns.
    @ivar uniques: The columns of each UNIQUE index (not the primary key;
        not partial or expression indexes).
    @ivar foreignKeys: Its foreign keys.
    """

    name: str
    withoutRowid: bool
    columns: tuple[Column, ...]
    uniques: tuple[tuple[str, ...], ...]
    foreignKeys: tuple[ForeignKey, ...]

    @property
    def key(self) -> tuple[str, ...]:
        """
        The primary key columns, in key order (empty: no key).
        """
        keyed = sorted((c for c in self.columns if c.pk), key=lambda c: c.pk)
        return tuple(c.name for c in keyed)

    @property
    def rowidAlias(self) -> bool:
        """
        Whether the key is an C{INTEGER PRIMARY KEY} (the rowid).
        """
        key = [c for c in self.columns if c.pk]
        return (
            not self.withoutRowid and len(key) == 1 and key[0].type.upper() == "INTEGER"
        )


#: The tables of schema C{{schema}} (an SQL literal, filled in with
#: C{str.format}), leaving out SQLite's own and the change capture's
#: (C{_bluegreen_}, see L{bluegreen.sync.capture}): each one's columns,
#: UNIQUE indexes and foreign keys, as one JSON document (L{parseTables}
#: reads it).
INTROSPECT = """
SELECT json_group_array(json_object(
  'name', l.name, 'wr', l.wr,
  'cols', json((SELECT json_group_array(json_object(
      'name', c.name, 'pk', c.pk, 'notnull', c."notnull",
      'dflt', c.dflt_value, 'type', c.type))
    FROM pragma_table_info(l.name, l.schema) c)),
  'uniques', json((SELECT json_group_array(json((
      SELECT json_group_array(ii.name) FROM pragma_index_info(il.name, l.schema) ii)))
    FROM pragma_index_list(l.name, l.schema) il
    WHERE il."unique" AND il.origin != 'pk' AND NOT il.partial)),
  'fks', json((SELECT json_group_array(json_object(
      'id', f.id, 'table', f."table", 'from', f."from", 'to', f."to"))
    FROM pragma_foreign_key_list(l.name, l.schema) f))
)) AS tables
FROM pragma_table_list l
WHERE l.schema = {schema} AND l.type = 'table'
  AND l.name NOT LIKE 'sqlite^_%' ESCAPE '^'
  AND l.name NOT LIKE '^_bluegreen^_%' ESCAPE '^';
"""


def parseTables(rows: list[dict[str, Any]]) -> dict[str, Table]:
    """
    Turn L{INTROSPECT}'s answer into L{Table}s.

    @param rows: The rows C{sqlite3 -json} printed for it.
    @return: The tables by name.
    """
    tables: dict[str, Table] = {}
    for t in json.loads(rows[0]["tables"]):
        fks: dict[int, list[dict[str, Any]]] = {}
        for f in t["fks"]:
            fks.setdefault(f["id"], []).append(f)
        tables[t["name"]] = Table(
            name=t["name"],
            withoutRowid=bool(t["wr"]),
            columns=tuple(
                Column(c["name"], c["pk"], bool(c["notnull"]), c["dflt"], c["type"])
                for c in t["cols"]
            ),
            uniques=tuple(tuple(u) for u in t["uniques"] if u and None not in u),
            foreignKeys=tuple(
                ForeignKey(
                    parts[0]["table"],
                    tuple(p["from"] for p in parts),
                    tuple(p["to"] for p in parts),
                )
                for _, parts in sorted(fks.items())
            ),
        )
    return tables


@frozen
class Manifest:
    """
    What a database holds: its integrity and, per table, the row count and
    (if C{hashed}) an order-independent content hash (SHA3-256 over the
    sorted SHA3-256 hashes of the rows' C{quote()}d values).

    @ivar integrity: C{PRAGMA integrity_check}'s answer (C{ok} when sound).
    @ivar tables: C{(table, rows, hash)} sorted by table (the hash is empty
        unless C{hashed}).
    @ivar hashed: Whether the content hashes were computed.
    """

    integrity: str
    tables: tuple[tuple[str, int, str], ...]
    hashed: bool = True

    def rows(self) -> dict[str, int]:
        """
        @return: Row count by table.
        """
        return {name: count for name, count, _ in self.tables}
