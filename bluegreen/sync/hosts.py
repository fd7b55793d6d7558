# -*- test-case-name: tests.test_sync,tests.test_sync_remote -*-
"""
Running things where a database is: C{sqlite3}, C{sha256sum}, a shell
command, on this host or, for a remote L{Location}, through C{ssh -o
BatchMode=yes} with every argument quoted for the remote shell.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred

from bluegreen.sync.errors import SyncError
from bluegreen.sync.locations import Location
from bluegreen.sync.process import (
    SQLITE_OPTIONS,
    ProcessFailed,
    ProcessResult,
    ProcessRunner,
)
from bluegreen.sync.schema import INTROSPECT, Manifest, Table, parseTables
from bluegreen.sync.sql import ident, literal, rowHashSQL


def decodeArrays(text: str) -> list[list[dict[str, Any]]]:
    """
    Decode the JSON arrays C{sqlite3 -json} printed one after another.

    @param text: C{sqlite3 -json}'s output.
    @return: The rows of each statement that returned some.
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


def fileSHA256(path: str) -> str:
    """
    @param path: A local file.
    @return: The SHA-256 of the file at C{path}.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Hosts:
    """
    Runs the sync's commands on a database's host.

    @ivar runner: Spawns the children (C{ssh} too).
    """

    def __init__(
        self,
        runner: ProcessRunner,
        sshOptions: Sequence[str] = (),
        connectTimeout: int = 10,
    ) -> None:
        """
        @param runner: Runs C{sqlite3} and C{rsync} (and C{ssh}).
        @param sshOptions: More arguments for every C{ssh} (and C{rsync -e
            ssh}) reaching a remote location, e.g. C{("-p", "2222")} (see
            L{bluegreen.sync.locations.sshArguments}).
        @param connectTimeout: ssh's C{ConnectTimeout} (seconds).
        """
        self.runner = runner
        self._sshOptions = tuple(sshOptions)
        self._connectTimeout = connectTimeout
        self._version: tuple[int, ...] | None = None
        self._remoteVersions: dict[str, tuple[int, ...]] = {}

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
        @param sql: The script.
        @param options: More C{sqlite3} options.
        @param timeout: As for L{ProcessRunner.run}.
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
        @param sql: The script.
        @param readOnly: Open the database read-only.
        @return: The rows of each statement that returned some.
        """
        options = ("-json", "-readonly") if readOnly else ("-json",)
        result = await self.sqlite(database, sql, *options)
        return decodeArrays(result.stdout.decode("utf-8"))

    async def tables(
        self, database: str | Location, schema: str = "main", attach: str = ""
    ) -> dict[str, Table]:
        """
        @param database: A local path, or a L{Location}.
        @param schema: C{main}, or the name C{attach} attaches a file as.
        @param attach: SQL run first (an C{ATTACH}).
        @return: The ordinary tables of C{schema} in C{database}.
        """
        sql = attach + INTROSPECT.format(schema=literal(schema))
        return parseTables((await self.query(database, sql))[0])

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
            + (rowHashSQL(t.name, [c.name for c in t.columns]) if hashes else "''")
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

    async def isFile(self, where: Location) -> bool:
        """
        @param where: A file, perhaps on another host.
        @return: Whether C{where} is a regular file (on its host).
        """
        if not where.remote:
            return os.path.isfile(where.path)
        result = await self.ssh(where, ["test", "-f", where.path], check=False)
        return result.exitCode == 0

    async def sha256(self, where: Location) -> str:
        """
        @param where: A file, perhaps on another host.
        @return: The SHA-256 of the file C{where} (C{sha256sum} on a remote
            host).
        """
        if not where.remote:
            return fileSHA256(where.path)
        result = await self.ssh(where, ["sha256sum", "--", where.path])
        return result.stdout.decode("ascii", "replace").split()[0].lstrip("\\")

    async def shell(self, where: Location, command: str) -> None:
        """
        Run a shell command (an app's stop or start command) with C{sh -c}
        on C{where}'s host.

        @param where: Where (its path is not used).
        @param command: The command.
        @raise ProcessFailed: If it failed.
        """
        if where.remote:
            await self.ssh(where, ["sh", "-c", command])
            return
        await self.runner.run([self.runner.tools.sh, "-c", command])
