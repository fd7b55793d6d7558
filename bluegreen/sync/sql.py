# -*- test-case-name: tests.test_sync -*-
"""
Pieces of SQL text: quoting, and the expressions the manifest and the merge
build from a table's columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def ident(name: str) -> str:
    """
    @param name: A table, column or index name.
    @return: C{name} as a quoted SQL identifier.
    """
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """
    @param text: Any text.
    @return: C{text} as an SQL string literal.
    """
    return "'" + text.replace("'", "''") + "'"


def rowHashSQL(table: str, columns: Sequence[str]) -> str:
    """
    @param table: The table.
    @param columns: Its columns.
    @return: An expression giving the order-independent hash of C{table}.
    """
    row = "||','||".join(f"quote({ident(c)})" for c in columns) or "''"
    return (
        "(SELECT lower(hex(sha3(group_concat(h, ''), 256))) FROM "
        f"(SELECT hex(sha3({row}, 256)) AS h FROM {ident(table)} ORDER BY h))"
    )


def sameKey(left: str, right: str, columns: Iterable[str]) -> str:
    """
    @param left: A table alias.
    @param right: Another.
    @param columns: The columns compared.
    @return: C{left.c IS right.c AND ...} over C{columns}.
    """
    return " AND ".join(f"{left}.{ident(c)} IS {right}.{ident(c)}" for c in columns)


#: Columns per C{json_object} call: SQLite allows a function at most
#: C{SQLITE_MAX_FUNCTION_ARG} (127 by default before 3.48) arguments, two a
#: column here.
JSON_CHUNK = 60


def rowJSON(alias: str, columns: Iterable[str]) -> str:
    """
    @param alias: A table alias.
    @param columns: The columns.
    @return: A JSON object of C{alias}'s C{columns} (name -> SQL literal, in
        column order).  A wide table's is built from C{json_object}s of at
        most L{JSON_CHUNK} columns joined with C{json_patch}: every value is
        C{quote()}'s text, never JSON C{null} (which C{json_patch} would
        take as "remove this key"), and column names are distinct, so the
        patch only appends keys.
    """
    names = list(columns)
    chunks = [
        "json_object("
        + ", ".join(
            f"{literal(c)}, quote({alias}.{ident(c)})"
            for c in names[i : i + JSON_CHUNK]
        )
        + ")"
        for i in range(0, len(names), JSON_CHUNK)
    ] or ["json_object()"]
    out = chunks[0]
    for chunk in chunks[1:]:
        out = f"json_patch({out}, {chunk})"
    return out


def keyJSON(alias: str, columns: Iterable[str]) -> str:
    """
    @param alias: A table alias.
    @param columns: The key's columns.
    @return: A C{json_array} of C{alias}'s C{columns} as SQL literals.
    """
    return (
        "json_array(" + ", ".join(f"quote({alias}.{ident(c)})" for c in columns) + ")"
    )
