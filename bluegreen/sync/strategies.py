# -*- test-case-name: tests.test_sync -*-
"""
Bring one environment's SQLite database up to date from the other's, with
nothing lost.  Either database may be local or remote (a L{Location}, read
by L{parseLocation} from C{[user@]host:/path}): on a remote host C{sqlite3}
and small POSIX shell commands run through C{ssh -o BatchMode=yes} (every
argument quoted for the remote shell), the snapshot is taken on the
source's host, staged in the target's directory on the target's host and
shipped with C{rsync -e ssh} (through a local temporary copy when both are
remote); the C{copy} stop and start commands run on the target's host.
Local paths never involve ssh.

Every step is a C{sqlite3} or C{rsync} child run by a
L{bluegreen.sync.process.ProcessRunner}; Python's C{sqlite3} module is not on
the data path.  One sync runs at a time (L{Syncer.lock}).

Both strategies start the same way: snapshot the source with C{VACUUM INTO}
(C{.backup}, bounded by a timeout, before SQLite 3.27) to a unique name in
the source's directory, verify it (C{PRAGMA integrity_check} is exactly
C{ok}; a L{Manifest} of row counts and, for C{copy}, order-independent
content hashes), ship it with C{rsync --fsync} to a unique staging name in
the target's directory and verify it there: its SHA-256 is the snapshot's
and C{PRAGMA quick_check} is C{ok}.  The snapshot and staging files are
always removed afterwards.

  - C{migrate}: attach the staged snapshot read-only to the target and, in
    one C{BEGIN IMMEDIATE} transaction (a live app's writers wait on their
    busy timeout), insert the rows the target lacks, table by table.  Rows
    are matched by primary key (the rowid alias, a composite key, a
    WITHOUT ROWID key); tables without a key are compared as multisets over
    their columns, duplicates counted.  Conflicts are reported, never
    dropped: L{KEY_CONFLICT}, L{UNIQUE_CONFLICT}, L{FK_ORPHAN},
    L{TABLE_ONLY_ON_SOURCE}, L{TABLE_ONLY_ON_TARGET},
    L{COLUMN_ONLY_ON_SOURCE}, L{COLUMN_ONLY_ON_TARGET}, L{KEY_MISMATCH}.
    It is insert-only: the source's updates and deletes show up as key
    conflicts and target-only rows.
  - C{copy}: refuse when the target holds anything the source lacks
    (without a cutover baseline that is how "the target took writes" is
    told), stop the target app, checkpoint it and make sure no C{-wal} or
    C{-shm} is left, keep the old file as C{NAME.pre-sync-TIME}, rename the
    staged file into place, start the app and verify.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote as _urlquote

from attrs import field, frozen
from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

from bluegreen.sync.process import (
    SQLITE_OPTIONS,
    ProcessFailed,
    ProcessResult,
    ProcessRunner,
)

KEY_CONFLICT = "key_conflict"
UNIQUE_CONFLICT = "unique_conflict"
FK_ORPHAN = "fk_orphan"
TABLE_ONLY_ON_SOURCE = "table_only_on_source"
TABLE_ONLY_ON_TARGET = "table_only_on_target"
COLUMN_ONLY_ON_SOURCE = "column_only_on_source"
COLUMN_ONLY_ON_TARGET = "column_only_on_target"
KEY_MISMATCH = "key_mismatch"

STRATEGIES = ("copy", "migrate")

_log = Logger()


class SyncError(Exception):
    """
    A sync step failed or was refused; the message says why.
    """


@frozen
class Location:
    """
    Where a database is: a local path, or a path on a host reached with
    C{ssh -o BatchMode=yes} (and C{rsync} over C{ssh}).

    @ivar host: The host, or L{None} for a local path.
    @ivar user: The user to log in as (L{None}: ssh's default).
    @ivar path: The database file (absolute on a remote host).
    """

    host: str | None
    user: str | None
    path: str

    @classmethod
    def local(cls, path: str) -> Location:
        """
        @return: The local path C{path}.
        """
        return cls(None, None, path)

    @property
    def remote(self) -> bool:
        """
        Whether the file is on another host.
        """
        return self.host is not None

    @property
    def login(self) -> str:
        """
        C{user@host} (or C{host}) as ssh and rsync take it.
        """
        if self.host is None:
            raise ValueError(f"{self.path} is a local path")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" if self.user is not None else host

    @property
    def sshLogin(self) -> str:
        """
        C{user@host} (or C{host}) as ssh takes it (no brackets).
        """
        if self.host is None:
            raise ValueError(f"{self.path} is a local path")
        return f"{self.user}@{self.host}" if self.user is not None else self.host

    def at(self, path: str) -> Location:
        """
        @return: Another file on the same host.
        """
        return Location(self.host, self.user, path)

    def __str__(self) -> str:
        """
        @return: The location as L{parseLocation} reads it.
        """
        return f"{self.login}:{self.path}" if self.remote else self.path


def parseLocation(text: str) -> Location:
    """
    Read a database location: a local path, or C{[user@]host:/path}.  As
    with rsync, a C{:} before any C{/} makes it remote (so C{./a:b} and
    C{/x/a:b} are local paths); an IPv6 address goes in brackets
    (C{[::1]:/path}).

    @param text: The location.
    @return: The L{Location} (a local path is returned as given).
    @raise ValueError: Saying what is wrong with C{text}.
    """
    if not text:
        raise ValueError("empty database location")
    colon = text.find(":")
    slash = text.find("/")
    if colon < 0 or 0 <= slash < colon:
        if text.endswith("/"):
            raise ValueError(f"{text!r} names a directory, not a database file")
        return Location.local(text)
    at = text.find("@", 0, colon)
    user = text[:at] if at >= 0 else None
    rest = text[at + 1 :]
    if rest.startswith("["):
        close = rest.find("]:")
        if close < 0:
            raise ValueError(
                f"{text!r}: an IPv6 address in brackets must be followed by "
                "':' and the path ([user@][ADDRESS]:/path)"
            )
        host, path = rest[1:close], rest[close + 2 :]
    else:
        host, _, path = rest.partition(":")
    if user is not None and not user:
        raise ValueError(f"{text!r}: empty user name before '@'")
    if not host:
        raise ValueError(f"{text!r}: empty host name before ':'")
    if host.startswith("-") or any(c.isspace() or c in "@/[]" for c in host):
        raise ValueError(f"{text!r}: {host!r} is not a host name")
    if user is not None and (
        user.startswith("-") or any(c.isspace() or c in ":/@" for c in user)
    ):
        raise ValueError(f"{text!r}: {user!r} is not a user name")
    if not path:
        raise ValueError(f"{text!r}: no path after '{host}:'")
    if not path.startswith("/"):
        raise ValueError(
            f"{text!r}: the path on {host} must be absolute ([user@]host:/path)"
        )
    if path.endswith("/"):
        raise ValueError(f"{text!r} names a directory, not a database file")
    return Location(host, user, path)


def sshArguments(options: Iterable[str]) -> tuple[str, ...]:
    """
    Turn C{--ssh-option} values into ssh arguments: one starting with C{-}
    is split like a shell would (C{"-p 2222"}, C{"-i /key"}), anything else
    is an ssh_config option (C{Port=2222} becomes C{-o Port=2222}).

    @param options: The values, in order.
    @return: The arguments, in order.
    @raise ValueError: If a value cannot be split.
    """
    out: list[str] = []
    for option in options:
        if option.startswith("-"):
            out.extend(shlex.split(option))
        elif option.strip():
            out.extend(("-o", option.strip()))
    return tuple(out)


def ident(name: str) -> str:
    """
    @return: C{name} as a quoted SQL identifier.
    """
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """
    @return: C{text} as an SQL string literal.
    """
    return "'" + text.replace("'", "''") + "'"


def _decodeArrays(text: str) -> list[list[dict[str, Any]]]:
    """
    Decode the JSON arrays C{sqlite3 -json} printed one after another.
    """
    decoder = json.JSONDecoder()
    arrays: list[list[dict[str, Any]]] = []
    index = 0
    text = text.strip()
    while index < len(text):
        value, index = decoder.raw_decode(text, index)
        arrays.append(value)
        while index < len(text) and text[index].isspace():
            index += 1
    return arrays


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


_INTROSPECT = """
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
  AND l.name NOT LIKE 'sqlite^_%' ESCAPE '^';
"""


def _parseTables(rows: list[dict[str, Any]]) -> dict[str, Table]:
    """
    Turn L{_INTROSPECT}'s answer into L{Table}s.
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


@frozen
class Conflict:
    """
    Something the sync could not carry over.

    @ivar table: The table.
    @ivar kind: L{KEY_CONFLICT}, L{UNIQUE_CONFLICT}, etc.
    @ivar key: The row's key values (SQL literals), or L{None}.
    @ivar source: The source's row (column -> SQL literal), or L{None}.
    @ivar target: The target's row, or L{None}.
    @ivar detail: More words (the index, the column, the parent).
    """

    table: str
    kind: str
    key: tuple[str, ...] | None = None
    source: dict[str, str] | None = field(default=None, hash=False)
    target: dict[str, str] | None = field(default=None, hash=False)
    detail: str = ""

    def describe(self) -> str:
        """
        @return: One line for the human summary.
        """
        where = self.table
        if self.key is not None:
            where += f" key ({', '.join(self.key)})"
        text = f"{self.kind}: {where}"
        if self.detail:
            text += f": {self.detail}"
        return text

    def asJSON(self) -> dict[str, Any]:
        """
        @return: The conflict as JSON-able values.
        """
        return {
            "table": self.table,
            "kind": self.kind,
            "key": list(self.key) if self.key is not None else None,
            "source": self.source,
            "target": self.target,
            "detail": self.detail,
        }


@frozen
class SyncReport:
    """
    The outcome of one sync.

    @ivar strategy: C{copy} or C{migrate}.
    @ivar source: The source database.
    @ivar target: The target database.
    @ivar dryRun: Whether nothing was to change.
    @ivar copied: Rows copied (or, in a dry run, to be copied) by table.
    @ivar targetOnly: Rows only the target holds, by table (informational
        for C{migrate}; a refusal for C{copy}).
    @ivar conflicts: What could not be carried over.
    @ivar error: Why the sync failed or was refused, or L{None}.
    @ivar backup: Where C{copy} kept the target's old file.
    @ivar seconds: How long it took.
    """

    strategy: str
    source: str
    target: str
    dryRun: bool
    copied: dict[str, int] = field(factory=dict, hash=False)
    targetOnly: dict[str, int] = field(factory=dict, hash=False)
    conflicts: tuple[Conflict, ...] = ()
    error: str | None = None
    backup: str | None = None
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """
        Whether everything was (or would be) copied: no conflict, no error.
        """
        return self.error is None and not self.conflicts

    def asJSON(self) -> dict[str, Any]:
        """
        @return: The report as JSON-able values.
        """
        return {
            "strategy": self.strategy,
            "source": self.source,
            "target": self.target,
            "dry_run": self.dryRun,
            "complete": self.complete,
            "copied": self.copied,
            "rows_copied": sum(self.copied.values()),
            "target_only": self.targetOnly,
            "conflicts": [c.asJSON() for c in self.conflicts],
            "error": self.error,
            "backup": self.backup,
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        """
        @return: The report for humans, one fact a line.
        """
        verb = "would copy" if self.dryRun else "copied"
        lines = [
            f"{self.strategy} {self.source} -> {self.target}"
            + (" (dry run)" if self.dryRun else "")
        ]
        for name, count in sorted(self.copied.items()):
            lines.append(f"  {name}: {verb} {count} row{'s' if count != 1 else ''}")
        for name, count in sorted(self.targetOnly.items()):
            if count:
                lines.append(f"  {name}: {count} row(s) only on the target (kept)")
        if self.backup:
            lines.append(f"  old target kept as {self.backup}")
        for conflict in self.conflicts:
            lines.append(f"  CONFLICT {conflict.describe()}")
        if self.error:
            lines.append(f"  FAILED: {self.error}")
        total = sum(self.copied.values())
        state = "complete" if self.complete else "INCOMPLETE"
        lines.append(
            f"{state}: {verb} {total} row{'s' if total != 1 else ''}, "
            f"{len(self.conflicts)} conflict{'s' if len(self.conflicts) != 1 else ''}"
            f" in {self.seconds:.2f}s"
        )
        return "\n".join(lines) + "\n"


def _rowHashSQL(table: str, columns: Sequence[str]) -> str:
    """
    @return: An expression giving the order-independent hash of C{table}.
    """
    row = "||','||".join(f"quote({ident(c)})" for c in columns) or "''"
    return (
        "(SELECT lower(hex(sha3(group_concat(h, ''), 256))) FROM "
        f"(SELECT hex(sha3({row}, 256)) AS h FROM {ident(table)} ORDER BY h))"
    )


def _sameKey(left: str, right: str, columns: Iterable[str]) -> str:
    """
    @return: C{left.c IS right.c AND ...} over C{columns}.
    """
    return " AND ".join(f"{left}.{ident(c)} IS {right}.{ident(c)}" for c in columns)


#: Columns per C{json_object} call: SQLite allows a function at most
#: C{SQLITE_MAX_FUNCTION_ARG} (127 by default before 3.48) arguments, two a
#: column here.
_JSON_CHUNK = 60


def _rowJSON(alias: str, columns: Iterable[str]) -> str:
    """
    @return: A JSON object of C{alias}'s C{columns} (name -> SQL literal, in
        column order).  A wide table's is built from C{json_object}s of at
        most L{_JSON_CHUNK} columns joined with C{json_patch}: every value is
        C{quote()}'s text, never JSON C{null} (which C{json_patch} would
        take as "remove this key"), and column names are distinct, so the
        patch only appends keys.
    """
    names = list(columns)
    chunks = [
        "json_object("
        + ", ".join(
            f"{literal(c)}, quote({alias}.{ident(c)})"
            for c in names[i : i + _JSON_CHUNK]
        )
        + ")"
        for i in range(0, len(names), _JSON_CHUNK)
    ] or ["json_object()"]
    out = chunks[0]
    for chunk in chunks[1:]:
        out = f"json_patch({out}, {chunk})"
    return out


def _keyJSON(alias: str, columns: Iterable[str]) -> str:
    """
    @return: A C{json_array} of C{alias}'s C{columns} as SQL literals.
    """
    return (
        "json_array(" + ", ".join(f"quote({alias}.{ident(c)})" for c in columns) + ")"
    )


class Syncer:
    """
    Runs syncs, one at a time.

    @ivar lock: Held while a sync runs.
    """

    def __init__(
        self,
        reactor: Any,
        runner: ProcessRunner,
        rsyncTimeout: int = 60,
        backupTimeout: float = 60.0,
        sshOptions: Sequence[str] = (),
        connectTimeout: int = 10,
    ) -> None:
        """
        @param reactor: The reactor (the clock for timings).
        @param runner: Runs C{sqlite3} and C{rsync} (and C{ssh}).
        @param rsyncTimeout: C{rsync --timeout} (I/O inactivity, seconds).
        @param backupTimeout: How long C{.backup} may take (before 3.27).
        @param sshOptions: More arguments for every C{ssh} (and C{rsync -e
            ssh}) reaching a remote location, e.g. C{("-p", "2222")} (see
            L{sshArguments}).
        @param connectTimeout: ssh's C{ConnectTimeout} (seconds).
        """
        self._reactor = reactor
        self.runner = runner
        self.lock = DeferredLock()
        self._rsyncTimeout = rsyncTimeout
        self._backupTimeout = backupTimeout
        self._sshOptions = tuple(sshOptions)
        self._connectTimeout = connectTimeout
        self._version: tuple[int, ...] | None = None
        self._remoteVersions: dict[str, tuple[int, ...]] = {}

    def sync(
        self,
        source: str | Location,
        target: str | Location,
        strategy: str,
        dryRun: bool = False,
        stopCommand: str | None = None,
        startCommand: str | None = None,
    ) -> Deferred[SyncReport]:
        """
        Sync C{target} from C{source}, once any running sync has finished.

        @param source: The source database: a local path (a L{str} is always
            one), or a L{Location}, perhaps on another host.
        @param target: The target database, the same way.
        @param strategy: C{copy} or C{migrate}.
        @param dryRun: Report what would be done, change nothing.
        @param stopCommand: For C{copy}: a shell command that stops the
            target app (and returns once it has exited); it runs on the
            target's host (over ssh when that is remote).
        @param startCommand: For C{copy}: one that starts it again.
        @return: Fires with the L{SyncReport} (failures are in the report).
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}")

        async def locked() -> SyncReport:
            return await self._sync(
                _resolve(source),
                _resolve(target),
                strategy,
                dryRun,
                stopCommand,
                startCommand,
            )

        return self.lock.run(lambda: Deferred.fromCoroutine(locked()))

    async def _sync(
        self,
        source: Location,
        target: Location,
        strategy: str,
        dryRun: bool,
        stopCommand: str | None,
        startCommand: str | None,
    ) -> SyncReport:
        """
        See L{sync}.
        """
        started = time.monotonic()
        run = Run(self, source, target, dryRun)
        error: str | None = None
        try:
            if strategy == "migrate":
                await run.migrate()
            else:
                await run.copy(stopCommand, startCommand)
        except (SyncError, ProcessFailed) as e:
            error = str(e)
        finally:
            await run.cleanUp()
        report = SyncReport(
            strategy=strategy,
            source=str(source),
            target=str(target),
            dryRun=dryRun,
            copied=run.copied,
            targetOnly=run.targetOnly,
            conflicts=tuple(run.conflicts),
            error=error,
            backup=str(target.at(run.backup)) if run.backup is not None else None,
            seconds=time.monotonic() - started,
        )
        _log.info(
            "sync {strategy} {source} -> {target}: {rows} rows, "
            "{conflicts} conflicts, error {error}",
            strategy=strategy,
            source=str(source),
            target=str(target),
            rows=sum(report.copied.values()),
            conflicts=len(report.conflicts),
            error=error,
        )
        return report

    async def version(self, host: Location | None = None) -> tuple[int, ...]:
        """
        @param host: Ask the C{sqlite3} on this location's host (local if
            L{None}).
        @return: The C{sqlite3} version, e.g. C{(3, 40, 1)} (asked once per
            host).
        """
        if host is not None and host.remote:
            known = self._remoteVersions.get(host.login)
            if known is None:
                result = await self.ssh(host, ["sqlite3", "-version"])
                first = result.stdout.decode().split()[0]
                known = self._remoteVersions[host.login] = tuple(
                    int(p) for p in first.split(".")
                )
            return known
        if self._version is None:
            result = await self.runner.run([self.runner.tools.sqlite3, "-version"])
            first = result.stdout.decode().split()[0]
            self._version = tuple(int(p) for p in first.split("."))
        return self._version

    def _sshCommand(self) -> list[str]:
        """
        @return: C{ssh} with its options (C{BatchMode} first, so that it
            always holds: no password or host key prompt ever waits).
        @raise SyncError: If ssh is not installed.
        """
        ssh = self.runner.tools.ssh
        if ssh is None:
            raise SyncError(
                "ssh not found: remote locations need it; install it, e.g. "
                "'apt-get install openssh-client'"
            )
        return [
            ssh,
            "-o",
            "BatchMode=yes",
            *self._sshOptions,
            "-o",
            f"ConnectTimeout={self._connectTimeout}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=3",
        ]

    async def ssh(
        self,
        host: Location,
        argv: Sequence[str],
        stdin: bytes = b"",
        timeout: float | None = None,
        check: bool = True,
    ) -> ProcessResult:
        """
        Run a command on C{host}'s host with C{ssh -o BatchMode=yes}.  Each
        argument is quoted for the remote shell.

        @param host: Where (its path is not used).
        @param argv: The remote command (found on the remote C{PATH}).
        @param stdin: As for L{ProcessRunner.run}.
        @param timeout: As for L{ProcessRunner.run}.
        @param check: Fail on a non-zero exit of the remote command.
        @return: Its result.
        @raise SyncError: If ssh itself failed (exit 255: host unreachable,
            login refused), naming the host.
        @raise ProcessFailed: If C{check} and the command failed.
        """
        command = [*self._sshCommand(), "--", host.sshLogin, shlex.join(argv)]
        result = await self.runner.run(
            command, stdin=stdin, timeout=timeout, check=False
        )
        if result.exitCode == 255:
            err = result.stderr.decode("utf-8", "replace").strip()
            raise SyncError(
                f"cannot reach {host.login} over ssh (exit 255)"
                + (f": {err[:1000]}" if err else "")
            )
        if check and not result.ok:
            raise ProcessFailed(result)
        return result

    def rsyncShell(self) -> str:
        """
        @return: The C{rsync -e} command: ssh with the same options.
        """
        return shlex.join(self._sshCommand())

    def sqlite(
        self,
        database: str | Location,
        sql: str,
        *options: str,
        timeout: float | None = None,
    ) -> Deferred[ProcessResult]:
        """
        Run SQL like L{ProcessRunner.sqlite}, on the database's host.

        @param database: A local path, or a L{Location}.
        @return: As L{ProcessRunner.sqlite}.
        """
        if isinstance(database, str) or not database.remote:
            path = database if isinstance(database, str) else database.path
            return self.runner.sqlite(path, sql, *options, timeout=timeout)
        argv = [
            "sqlite3",
            *SQLITE_OPTIONS,
            "-cmd",
            f".timeout {self.runner.sqliteTimeout}",
            *options,
            database.path,
        ]
        return Deferred.fromCoroutine(
            self.ssh(database, argv, stdin=sql.encode("utf-8"), timeout=timeout)
        )

    async def query(
        self, database: str | Location, sql: str, readOnly: bool = False
    ) -> list[list[dict[str, Any]]]:
        """
        Run C{sql} with C{sqlite3 -json}.

        @param database: A local path, or a L{Location}.
        @return: The rows of each statement that returned some.
        """
        options = ("-json", "-readonly") if readOnly else ("-json",)
        result = await self.sqlite(database, sql, *options)
        return _decodeArrays(result.stdout.decode("utf-8"))

    async def tables(
        self, database: str | Location, schema: str = "main", attach: str = ""
    ) -> dict[str, Table]:
        """
        @return: The ordinary tables of C{schema} in C{database}.
        """
        sql = attach + _INTROSPECT.format(schema=literal(schema))
        return _parseTables((await self.query(database, sql))[0])

    async def manifest(self, database: str | Location, hashes: bool = True) -> Manifest:
        """
        @param database: A local path, or a L{Location}.
        @param hashes: Compute the content hashes (the costly part: about
            1.8 s a million rows); without them only the counts.
        @return: The L{Manifest} of C{database}.
        """
        integrity = await self.check(database, "integrity_check")
        tables = await self.tables(database)
        if not tables:
            return Manifest(integrity, (), hashes)
        parts = [
            f"SELECT {literal(t.name)} AS name, (SELECT count(*) FROM {ident(t.name)})"
            " AS n, "
            + (_rowHashSQL(t.name, [c.name for c in t.columns]) if hashes else "''")
            + " AS h"
            for t in tables.values()
        ]
        rows = (await self.query(database, " UNION ALL ".join(parts) + ";"))[0]
        return Manifest(
            integrity,
            tuple(sorted((r["name"], r["n"], r["h"] or "") for r in rows)),
            hashes,
        )

    async def check(self, database: str | Location, pragma: str) -> str:
        """
        @param database: A local path, or a L{Location}.
        @param pragma: C{integrity_check} or C{quick_check}.
        @return: The pragma's answer (exactly C{ok} when sound).
        """
        if pragma not in ("integrity_check", "quick_check"):
            raise ValueError(f"unknown check {pragma!r}")
        result = await self.sqlite(database, f"PRAGMA {pragma};", "-noheader", "-list")
        return result.stdout.decode("utf-8", "replace").strip()


def _sha256(path: str) -> str:
    """
    @return: The SHA-256 of the file at C{path}.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resolve(where: str | Location) -> Location:
    """
    @return: C{where} as a L{Location}, a local path made absolute (a
        L{str} is always a local path).
    """
    if isinstance(where, str):
        return Location.local(os.path.abspath(where))
    if not where.remote:
        return Location.local(os.path.abspath(where.path))
    return where


#: Prints what is beside a stopped target ($1) on a remote host: C{-wal} or
#: C{-shm} if one is there, C{hot} for a hot journal; removes a cold one.
_SIDECARS = """t=$1
for s in -wal -shm; do
  if [ -e "$t$s" ]; then printf %s "$s"; exit 0; fi
done
if [ -e "$t-journal" ]; then
  if [ -n "$(head -c 28 -- "$t-journal" | tr -d '\\000')" ]; then
    printf hot; exit 0
  fi
  rm -f -- "$t-journal"
fi
"""

#: Renames $1 to $2 (or $2-1, $2-2... if taken) on a remote host and prints
#: the name it got.
_KEEP = """b=$2; c=$2; n=1
while [ -e "$c" ] || [ -L "$c" ]; do c="$b-$n"; n=$((n + 1)); done
mv -- "$1" "$c" && printf %s "$c"
"""


class Run:
    """
    One sync's state: its files, what it copied and found.

    @ivar src: Where the source is (L{source} is its path there).
    @ivar dst: Where the target is (L{target} is its path there).
    @ivar snapshot: The snapshot's path, on the source's host.
    @ivar staged: The staged copy's path, on the target's host.
    """

    def __init__(
        self,
        syncer: Syncer,
        source: str | Location,
        target: str | Location,
        dryRun: bool,
    ) -> None:
        self.syncer = syncer
        self.runner = syncer.runner
        self.src = source if isinstance(source, Location) else Location.local(source)
        self.dst = target if isinstance(target, Location) else Location.local(target)
        self.source = self.src.path
        self.target = self.dst.path
        self.dryRun = dryRun
        runId = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        sdir, sname = os.path.split(self.source)
        tdir, tname = os.path.split(self.target)
        self.snapshot = os.path.join(sdir, f".{sname}.sync-{runId}.snap")
        self.staged = os.path.join(tdir, f".{tname}.sync-{runId}.incoming")
        self._hop: str | None = None
        self.copied: dict[str, int] = {}
        self.targetOnly: dict[str, int] = {}
        self.conflicts: list[Conflict] = []
        self.backup: str | None = None
        self.manifest: Manifest | None = None
        self._targetTables: dict[str, Table] = {}

    async def cleanUp(self) -> None:
        """
        Wait for every child to end, then remove the snapshot and staged
        files (and any journal of theirs).
        """
        await self.runner.quiesce()
        for where, base in ((self.src, self.snapshot), (self.dst, self.staged)):
            if where.remote:
                names = [base + s for s in ("", "-journal", "-wal", "-shm")]
                try:
                    await self.syncer.ssh(where, ["rm", "-f", "--", *names])
                except (SyncError, ProcessFailed) as e:
                    _log.warn(
                        "could not remove {base} on {host}: {error}",
                        base=base,
                        host=where.login,
                        error=str(e),
                    )
                continue
            for suffix in ("", "-journal", "-wal", "-shm"):
                try:
                    os.remove(base + suffix)
                except FileNotFoundError:
                    pass
        if self._hop is not None:
            shutil.rmtree(self._hop, ignore_errors=True)

    async def _isFile(self, where: Location) -> bool:
        """
        @return: Whether C{where} is a regular file (on its host).
        """
        if not where.remote:
            return os.path.isfile(where.path)
        result = await self.syncer.ssh(where, ["test", "-f", where.path], check=False)
        return result.exitCode == 0

    async def _sha256(self, where: Location) -> str:
        """
        @return: The SHA-256 of the file C{where} (C{sha256sum} on a remote
            host).
        """
        if not where.remote:
            return _sha256(where.path)
        result = await self.syncer.ssh(where, ["sha256sum", "--", where.path])
        return result.stdout.decode("ascii", "replace").split()[0].lstrip("\\")

    async def _transfer(self) -> None:
        """
        rsync the snapshot to the staging name: over ssh when either side
        is remote, through a local temporary copy when both are.
        """
        # --inplace: the staging name is unique and never live, and the
        # checks that follow catch a partial file; rsync's own temporary
        # name would be left behind if it were killed.
        rsync = [
            self.runner.tools.rsync,
            "--inplace",
            "--fsync",
            f"--timeout={self.syncer._rsyncTimeout}",
        ]
        if not self.src.remote and not self.dst.remote:
            await self.runner.run([*rsync, "--", self.snapshot, self.staged])
            return
        rsync += ["-e", self.syncer.rsyncShell()]
        src = str(self.src.at(self.snapshot))
        dst = str(self.dst.at(self.staged))
        if self.src.remote and self.dst.remote:
            self._hop = tempfile.mkdtemp(prefix="bluegreen-sync-")
            hop = os.path.join(self._hop, os.path.basename(self.snapshot))
            await self.runner.run([*rsync, "--", src, hop])
            await self.runner.run([*rsync, "--", hop, dst])
        else:
            await self.runner.run([*rsync, "--", src, dst])

    async def ship(self, hashes: bool = True) -> Manifest:
        """
        Snapshot the source, verify it (C{integrity_check}, counts and, if
        C{hashes}, content hashes), rsync it to the staging name and verify
        it there (see L{verifyStaged}).

        @param hashes: Compute the snapshot's content hashes: C{copy} needs
            them to verify the target after the swap; C{migrate} has nothing
            to compare them with (the staged copy is checked byte for byte).
        @return: The snapshot's manifest.
        """
        if not await self._isFile(self.src):
            raise SyncError(f"source database {self.src} does not exist")
        if self.dst.remote:
            tdir = os.path.dirname(self.target)
            found = await self.syncer.ssh(self.dst, ["test", "-d", tdir], check=False)
            if found.exitCode != 0:
                raise SyncError(
                    f"the target's directory {tdir} does not exist on {self.dst.login}"
                )
        if await self.syncer.version(self.src) >= (3, 27):
            await self.syncer.sqlite(self.src, f"VACUUM INTO {literal(self.snapshot)};")
        else:
            quoted = self.snapshot.replace("\\", "\\\\").replace('"', '\\"')
            await self.syncer.sqlite(
                self.src,
                f'.backup "{quoted}"\n',
                timeout=self.syncer._backupTimeout,
            )
        manifest = await self.syncer.manifest(self.src.at(self.snapshot), hashes)
        if manifest.integrity != "ok":
            raise SyncError(
                f"snapshot of {self.src} failed integrity_check: "
                f"{manifest.integrity[:500]}"
            )
        digest = await self._sha256(self.src.at(self.snapshot))
        await self._transfer()
        await self.verifyStaged(manifest, digest)
        self.manifest = manifest
        return manifest

    async def verifyStaged(self, manifest: Manifest, digest: str | None) -> None:
        """
        Check that the staged file is sound and holds C{manifest}.

        With the snapshot's C{digest}: its SHA-256 must be the snapshot's
        (byte for byte the file that passed C{integrity_check} and gave
        C{manifest}) and C{PRAGMA quick_check} must say C{ok} (the target's
        C{sqlite3} reads it); recomputing the manifest would prove nothing
        more and cost seconds a pass on a large database.  Without one (the
        staged file was changed since, e.g. put in WAL mode): its full
        manifest must equal C{manifest}.

        @param manifest: The snapshot's manifest.
        @param digest: The snapshot's SHA-256, or L{None}.
        @raise SyncError: If not.
        """
        where = self.dst.at(self.staged)
        if digest is not None:
            if await self._sha256(where) != digest:
                raise SyncError(f"staged copy {where} differs from the snapshot")
            quick = await self.syncer.check(where, "quick_check")
            if quick != "ok":
                raise SyncError(
                    f"staged copy {where} failed quick_check: {quick[:500]}"
                )
            return
        staged = await self.syncer.manifest(where, manifest.hashed)
        if staged.integrity != "ok":
            raise SyncError(
                f"staged copy {where} failed integrity_check: {staged.integrity[:500]}"
            )
        if staged.tables != manifest.tables:
            raise SyncError(
                f"staged copy {where} does not hold what the snapshot holds"
            )

    async def migrate(self) -> None:
        """
        The C{migrate} strategy.
        """
        if not await self._isFile(self.dst):
            raise SyncError(
                f"target database {self.dst} does not exist; "
                "use --strategy copy to create it"
            )
        await self.ship(hashes=False)
        await self.merge(apply=not self.dryRun)

    def _attach(self) -> str:
        """
        @return: The C{ATTACH} of the staged file, read-only, as C{g}.
        """
        uri = "file:" + _urlquote(self.staged) + "?mode=ro"
        return f"ATTACH {literal(uri)} AS g;\n"

    async def merge(self, apply: bool) -> None:
        """
        Insert what the target lacks (or, unless C{apply}, find out what
        that is and roll back), recording conflicts and counts.
        """
        sourceTables = await self.syncer.tables(self.dst, "g", self._attach())
        targetTables = await self.syncer.tables(self.dst)
        self._targetTables = targetTables
        script = [
            self._attach(),
            "PRAGMA foreign_keys = OFF;",
            "BEGIN IMMEDIATE;",
            "CREATE TEMP TABLE _bg_report(id INTEGER PRIMARY KEY, tbl, kind, "
            "key, source, target, n, detail);",
            "CREATE TEMP TABLE _bg_fk0 AS SELECT count(*) AS n "
            "FROM pragma_foreign_key_check(NULL, 'main');",
        ]
        hasSequence = await self._hasSequence()
        for name in sorted(set(sourceTables) - set(targetTables)):
            self.conflicts.append(
                Conflict(name, TABLE_ONLY_ON_SOURCE, detail="its rows are not copied")
            )
        for name in sorted(set(targetTables) - set(sourceTables)):
            self.conflicts.append(
                Conflict(name, TABLE_ONLY_ON_TARGET, detail="left as it is")
            )
        done: set[str] = set()
        for index, name in enumerate(_parentsFirst(sourceTables, targetTables)):
            script.extend(
                self._tableSQL(
                    index,
                    sourceTables[name],
                    targetTables[name],
                    done,
                    hasSequence,
                )
            )
            done.add(name)
        script.append(
            "CREATE TEMP TABLE _bg_guard(ok, CONSTRAINT "
            "no_new_foreign_key_orphans CHECK (ok));"
        )
        script.append(
            "INSERT INTO _bg_guard SELECT (SELECT count(*) FROM "
            "pragma_foreign_key_check(NULL, 'main')) <= (SELECT n FROM _bg_fk0);"
        )
        script.append(
            "SELECT tbl, kind, key, source, target, n, detail "
            "FROM _bg_report ORDER BY id;"
        )
        script.append("COMMIT;" if apply else "ROLLBACK;")
        result = await self.syncer.sqlite(self.dst, "\n".join(script) + "\n", "-json")
        arrays = _decodeArrays(result.stdout.decode("utf-8"))
        for row in arrays[0] if arrays else []:
            kind = row["kind"]
            if kind == "inserted":
                self.copied[row["tbl"]] = row["n"]
            elif kind == "target_only":
                self.targetOnly[row["tbl"]] = row["n"] or 0
            else:
                self.conflicts.append(
                    Conflict(
                        row["tbl"],
                        kind,
                        tuple(json.loads(row["key"])) if row["key"] else None,
                        json.loads(row["source"]) if row["source"] else None,
                        json.loads(row["target"]) if row["target"] else None,
                        row["detail"] or "",
                    )
                )

    async def _hasSequence(self) -> bool:
        """
        @return: Whether the target has a C{sqlite_sequence} table.
        """
        rows = await self.syncer.query(
            self.dst,
            "SELECT count(*) AS n FROM sqlite_schema WHERE name = 'sqlite_sequence';",
        )
        return bool(rows[0][0]["n"])

    def _tableSQL(
        self,
        index: int,
        source: Table,
        target: Table,
        done: set[str],
        hasSequence: bool,
    ) -> list[str]:
        """
        @return: The statements that merge one table.
        """
        name = source.name
        T = ident(name)
        sourceCols = [c.name for c in source.columns]
        targetCols = {c.name: c for c in target.columns}
        common = [c for c in sourceCols if c in targetCols]
        for column in sourceCols:
            if column not in targetCols:
                self.conflicts.append(
                    Conflict(
                        name,
                        COLUMN_ONLY_ON_SOURCE,
                        detail=f"column {column} is not copied",
                    )
                )
        blocking = []
        for column, info in targetCols.items():
            if column in sourceCols:
                continue
            block = info.notNull and info.default is None
            if block:
                blocking.append(column)
            self.conflicts.append(
                Conflict(
                    name,
                    COLUMN_ONLY_ON_TARGET,
                    detail=f"column {column}"
                    + (
                        " is NOT NULL without a default: table not merged"
                        if block
                        else " gets its default"
                    ),
                )
            )
        if blocking:
            return []
        if source.key != target.key:
            self.conflicts.append(
                Conflict(
                    name,
                    KEY_MISMATCH,
                    detail=f"key ({', '.join(source.key)}) on the source, "
                    f"({', '.join(target.key)}) on the target: table not merged",
                )
            )
            return []
        cols = ", ".join(ident(c) for c in common)
        sCols = ", ".join(f"s.{ident(c)}" for c in common)
        key = list(target.key)
        report = "INSERT INTO _bg_report(tbl, kind, key, source, target, n, detail) "
        lit = literal(name)
        out: list[str] = []
        cand = f"_bg_c{index}"
        if key:
            keyCols = ", ".join(f"s.{ident(k)} AS k{i}" for i, k in enumerate(key))
            inCand = " AND ".join(f"s.{ident(k)} IS c.k{i}" for i, k in enumerate(key))
            candFrom = f"{cand} c JOIN g.{T} s ON {inCand}"
            out.append(
                f"CREATE TEMP TABLE {cand} AS SELECT {keyCols} FROM g.{T} s "
                f"WHERE NOT EXISTS (SELECT 1 FROM main.{T} m "
                f"WHERE {_sameKey('m', 's', key)});"
            )
            differ = " AND ".join(f"s.{ident(c)} IS m.{ident(c)}" for c in common)
            out.append(
                f"{report}SELECT {lit}, 'key_conflict', {_keyJSON('s', key)}, "
                f"{_rowJSON('s', common)}, {_rowJSON('m', common)}, NULL, "
                f"'same key, different content' FROM g.{T} s JOIN main.{T} m "
                f"ON {_sameKey('m', 's', key)} WHERE NOT ({differ});"
            )
            out.append(
                f"{report}SELECT {lit}, 'target_only', NULL, NULL, NULL, count(*), "
                f"NULL FROM main.{T} m WHERE NOT EXISTS (SELECT 1 FROM g.{T} s "
                f"WHERE {_sameKey('s', 'm', key)});"
            )
            keyOut = _keyJSON("s", key)
            delete = (
                f"DELETE FROM {cand} WHERE EXISTS (SELECT 1 FROM g.{T} s WHERE "
                + " AND ".join(
                    f"s.{ident(k)} IS {cand}.k{i}" for i, k in enumerate(key)
                )
                + " AND ({cond}));"
            )
        else:
            groupCols = ", ".join(ident(c) for c in common)
            join = " AND ".join(f"gs.{ident(c)} IS ms.{ident(c)}" for c in common)
            gs = (
                f"(SELECT min(rowid) AS _bg_r, count(*) AS _bg_n, {groupCols} "
                f"FROM g.{T} GROUP BY {groupCols})"
            )
            ms = (
                f"(SELECT count(*) AS _bg_n, {groupCols} FROM main.{T} "
                f"GROUP BY {groupCols})"
            )
            out.append(
                f"CREATE TEMP TABLE {cand} AS SELECT gs._bg_r AS _bg_r, "
                f"gs._bg_n - coalesce(ms._bg_n, 0) AS _bg_n FROM {gs} gs "
                f"LEFT JOIN {ms} ms ON {join} WHERE gs._bg_n > coalesce(ms._bg_n, 0);"
            )
            out.append(
                f"{report}SELECT {lit}, 'target_only', NULL, NULL, NULL, "
                f"coalesce(sum(ms._bg_n - coalesce(gs._bg_n, 0)), 0), NULL "
                f"FROM {ms} ms LEFT JOIN {gs} gs ON {join} "
                f"WHERE ms._bg_n > coalesce(gs._bg_n, 0);"
            )
            candFrom = f"{cand} c JOIN g.{T} s ON s.rowid = c._bg_r"
            keyOut = "NULL"
            delete = (
                f"DELETE FROM {cand} WHERE EXISTS (SELECT 1 FROM g.{T} s WHERE "
                f"s.rowid = {cand}._bg_r AND ({{cond}}));"
            )
        for unique in target.uniques:
            if not all(c in common for c in unique):
                continue
            cond = (
                f"EXISTS (SELECT 1 FROM main.{T} m WHERE "
                + " AND ".join(f"m.{ident(c)} = s.{ident(c)}" for c in unique)
                + ")"
            )
            match = " AND ".join(f"m.{ident(c)} = s.{ident(c)}" for c in unique)
            detail = literal(
                f"UNIQUE ({', '.join(unique)}) already taken on the target"
            )
            out.append(
                f"{report}SELECT {lit}, 'unique_conflict', {keyOut}, "
                f"{_rowJSON('s', common)}, {_rowJSON('m', common)}, NULL, {detail} "
                f"FROM {candFrom} JOIN main.{T} m ON {match};"
            )
            out.append(delete.format(cond=cond))
        for fk in target.foreignKeys:
            if not all(c in common for c in fk.columns):
                continue
            parentColumns: list[str] = []
            for i, to in enumerate(fk.parentColumns):
                if to is None:
                    parentKey = self._parentKey(fk.parent, target, i)
                    if parentKey is None:
                        break
                    to = parentKey
                parentColumns.append(to)
            else:
                P = ident(fk.parent)
                match = " AND ".join(
                    f"p.{ident(pc)} = s.{ident(cc)}"
                    for pc, cc in zip(parentColumns, fk.columns, strict=True)
                )
                notNull = " AND ".join(f"s.{ident(c)} IS NOT NULL" for c in fk.columns)
                cond = (
                    f"{notNull} AND NOT EXISTS (SELECT 1 FROM main.{P} p WHERE {match})"
                )
                if fk.parent == name or fk.parent not in done:
                    cond += f" AND NOT EXISTS (SELECT 1 FROM g.{P} p WHERE {match})"
                detail = literal(
                    f"REFERENCES {fk.parent}({', '.join(parentColumns)}): "
                    "no such parent row"
                )
                out.append(
                    f"{report}SELECT {lit}, 'fk_orphan', {keyOut}, "
                    f"{_rowJSON('s', common)}, NULL, NULL, {detail} "
                    f"FROM {candFrom} WHERE {cond};"
                )
                out.append(delete.format(cond=cond))
        if key:
            out.append(
                f"{report}SELECT {lit}, 'inserted', NULL, NULL, NULL, count(*), NULL "
                f"FROM {cand};"
            )
            out.append(f"INSERT INTO main.{T}({cols}) SELECT {sCols} FROM {candFrom};")
            if target.rowidAlias and hasSequence:
                k = ident(key[0])
                out.append(
                    f"UPDATE main.sqlite_sequence SET seq = (SELECT max({k}) FROM "
                    f"main.{T}) WHERE name = {lit} AND seq < (SELECT max({k}) "
                    f"FROM main.{T});"
                )
        else:
            out.append(
                f"{report}SELECT {lit}, 'inserted', NULL, NULL, NULL, "
                f"coalesce(sum(_bg_n), 0), NULL FROM {cand};"
            )
            out.append(
                f"WITH RECURSIVE _bg_i(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                f"FROM _bg_i WHERE i < (SELECT max(_bg_n) FROM {cand})) "
                f"INSERT INTO main.{T}({cols}) SELECT {sCols} FROM {candFrom} "
                f"JOIN _bg_i ON _bg_i.i <= c._bg_n;"
            )
        return out

    def _parentKey(self, parent: str, child: Table, position: int) -> str | None:
        """
        The column a foreign key naming no parent columns refers to.
        """
        table = self._targetTables.get(parent)
        if table is None or position >= len(table.key):
            return None
        return table.key[position]

    async def copy(self, stopCommand: str | None, startCommand: str | None) -> None:
        """
        The C{copy} strategy.
        """
        manifest = await self.ship()
        exists = await self._isFile(self.dst)
        if exists:
            await self.refuseIfTargetAhead()
        if self.dryRun:
            self.copied = manifest.rows()
            return
        mode = "delete"
        if exists:
            rows = await self.syncer.query(self.dst, "PRAGMA journal_mode;")
            mode = rows[0][0]["journal_mode"]
        stopped = False
        try:
            if stopCommand:
                await self._shell(stopCommand)
                stopped = True
            if exists:
                await self.syncer.sqlite(
                    self.dst, "PRAGMA wal_checkpoint(TRUNCATE);", "-list"
                )
                await self._noSidecars()
                await self.refuseIfTargetAhead()
            if mode == "wal":
                await self.syncer.sqlite(
                    self.dst.at(self.staged), "PRAGMA journal_mode=WAL;", "-list"
                )
                await self.verifyStaged(manifest, None)
            await self._swap(exists)
        except BaseException as refused:
            if startCommand and (stopped or not stopCommand):
                try:
                    await self._shell(startCommand)
                except Exception as e:
                    # Both matter: why the copy stopped, and that the app
                    # is not running again.
                    raise SyncError(
                        f"{refused}; then the start command failed: {e}"
                    ) from e
            raise
        if startCommand and (stopped or not stopCommand):
            await self._shell(startCommand)
        after = await self.syncer.manifest(self.dst)
        if after.integrity != "ok" or after.tables != manifest.tables:
            raise SyncError(
                f"{self.dst} does not hold the snapshot after the swap "
                f"(integrity: {after.integrity[:200]}); the old file is {self.backup}"
            )
        self.copied = manifest.rows()

    async def _shell(self, command: str) -> None:
        """
        Run a stop or start command with C{sh -c}, on the target's host.
        """
        if self.dst.remote:
            await self.syncer.ssh(self.dst, ["sh", "-c", command])
            return
        await self.runner.run([self.runner.tools.sh, "-c", command])

    async def _noSidecars(self) -> None:
        """
        Make sure the (stopped) target has no C{-wal}, C{-shm} or hot
        C{-journal} beside it; remove a cold (zeroed) journal.

        @raise SyncError: If one is left (the app is probably still running).
        """
        if self.dst.remote:
            result = await self.syncer.ssh(
                self.dst, ["sh", "-c", _SIDECARS, "sh", self.target]
            )
            found = result.stdout.decode("utf-8", "replace")
            if found == "hot":
                raise SyncError(
                    f"{self.dst}-journal is a hot journal: refusing to swap"
                )
            if found:
                raise SyncError(
                    f"{self.dst}{found} is still there after a checkpoint: "
                    "is the target app still running? (give --stop-cmd)"
                )
            return
        for suffix in ("-wal", "-shm"):
            if os.path.exists(self.target + suffix):
                raise SyncError(
                    f"{self.target}{suffix} is still there after a checkpoint: "
                    "is the target app still running? (give --stop-cmd)"
                )
        journal = self.target + "-journal"
        if os.path.exists(journal):
            with open(journal, "rb") as f:
                header = f.read(28)
            if header.strip(b"\0"):
                raise SyncError(f"{journal} is a hot journal: refusing to swap")
            os.remove(journal)

    async def refuseIfTargetAhead(self) -> None:
        """
        Refuse the copy when the target holds rows (or tables, columns,
        content) the source lacks: without a cutover baseline, that is how
        the tool knows the target took writes that a copy would lose.

        @raise SyncError: Naming what only the target has.
        """
        probe = Run(self.syncer, self.src, self.dst, True)
        probe.staged = self.staged
        await probe.merge(apply=False)
        reasons = [
            f"{name}: {count} row(s) only on the target"
            for name, count in sorted(probe.targetOnly.items())
            if count
        ]
        reasons += [
            c.describe()
            for c in probe.conflicts
            if c.kind
            in (KEY_CONFLICT, TABLE_ONLY_ON_TARGET, COLUMN_ONLY_ON_TARGET, KEY_MISMATCH)
        ]
        if reasons:
            raise SyncError(
                "refusing to copy: the target took writes the source lacks ("
                + "; ".join(reasons[:10])
                + (f"; and {len(reasons) - 10} more" if len(reasons) > 10 else "")
                + "); use --strategy migrate"
            )

    async def _swap(self, exists: bool) -> None:
        """
        Keep the target as C{.pre-sync-TIME} and rename the staged file into
        place; put the old file back if that fails.
        """
        if self.dst.remote:
            await self._swapRemote(exists)
            return
        if exists:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            backup = f"{self.target}.pre-sync-{stamp}"
            n = 1
            while os.path.exists(backup):
                backup = f"{self.target}.pre-sync-{stamp}-{n}"
                n += 1
            os.rename(self.target, backup)
            self.backup = backup
        try:
            os.rename(self.staged, self.target)
        except OSError as e:
            if self.backup is not None:
                os.rename(self.backup, self.target)
                self.backup = None
            raise SyncError(f"could not rename the staged file into place: {e}") from e
        directory = os.open(os.path.dirname(self.target), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def _swapRemote(self, exists: bool) -> None:
        """
        L{_swap} on the target's (remote) host, with C{mv} and C{sync}.
        """
        ssh = self.syncer.ssh
        if exists:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            kept = await ssh(
                self.dst,
                [
                    "sh",
                    "-c",
                    _KEEP,
                    "sh",
                    self.target,
                    f"{self.target}.pre-sync-{stamp}",
                ],
            )
            self.backup = kept.stdout.decode("utf-8", "surrogateescape")
        moved = await ssh(self.dst, ["mv", "--", self.staged, self.target], check=False)
        if not moved.ok:
            if self.backup is not None:
                await ssh(self.dst, ["mv", "--", self.backup, self.target])
                self.backup = None
            err = moved.stderr.decode("utf-8", "replace").strip()
            raise SyncError(f"could not rename the staged file into place: {err}")
        await ssh(
            self.dst,
            [
                "sh",
                "-c",
                'sync -- "$1" 2>/dev/null || sync',
                "sh",
                os.path.dirname(self.target),
            ],
        )


def _parentsFirst(source: dict[str, Table], target: dict[str, Table]) -> list[str]:
    """
    @return: The tables both sides have, parents before children (by the
        target's foreign keys; cycles broken by name).
    """
    names = sorted(set(source) & set(target))
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order or name in visiting:
            return
        visiting.add(name)
        for fk in target[name].foreignKeys:
            if fk.parent in names and fk.parent != name:
                visit(fk.parent)
        visiting.discard(name)
        order.append(name)

    for name in names:
        visit(name)
    return order
