# -*- test-case-name: tests.test_sync,tests.test_sync_remote -*-
"""
The steps both strategies start with: snapshot the source with C{VACUUM
INTO} (C{.backup}, bounded by a timeout, before SQLite 3.27) to a unique
name in the source's directory, verify it (C{PRAGMA integrity_check} is
exactly C{ok}; a L{Manifest} of row counts and, for C{copy}, content
hashes), ship it with C{rsync --fsync} to a unique staging name in the
target's directory (through a local temporary copy when both are remote)
and verify it there: its SHA-256 is the snapshot's and C{PRAGMA
quick_check} is C{ok}.  L{Transfer.cleanUp} always removes the snapshot
and staging files afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from urllib.parse import quote as urlquote

from twisted.logger import Logger

from bluegreen.sync.errors import SyncError
from bluegreen.sync.hosts import Hosts
from bluegreen.sync.locations import Location
from bluegreen.sync.process import ProcessFailed
from bluegreen.sync.schema import Manifest
from bluegreen.sync.sql import literal

_log = Logger()


class Transfer:
    """
    One sync's files and the steps that make, ship and remove them.

    @ivar hosts: Runs the commands.
    @ivar runner: C{hosts}' process runner.
    @ivar src: Where the source is (L{source} is its path there).
    @ivar dst: Where the target is (L{target} is its path there).
    @ivar snapshot: The snapshot's path, on the source's host.
    @ivar staged: The staged copy's path, on the target's host.
    @ivar manifest: The snapshot's manifest, once shipped.
    """

    def __init__(
        self,
        hosts: Hosts,
        source: Location,
        target: Location,
        rsyncTimeout: int = 60,
        backupTimeout: float = 60.0,
    ) -> None:
        """
        @param hosts: Runs the commands.
        @param source: The source database.
        @param target: The target database.
        @param rsyncTimeout: C{rsync --timeout} (I/O inactivity, seconds).
        @param backupTimeout: How long C{.backup} may take (before 3.27).
        """
        self.hosts = hosts
        self.runner = hosts.runner
        self.src = source
        self.dst = target
        self.source = source.path
        self.target = target.path
        self._rsyncTimeout = rsyncTimeout
        self._backupTimeout = backupTimeout
        runId = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        sdir, sname = os.path.split(self.source)
        tdir, tname = os.path.split(self.target)
        self.snapshot = os.path.join(sdir, f".{sname}.sync-{runId}.snap")
        self.staged = os.path.join(tdir, f".{tname}.sync-{runId}.incoming")
        self._hop: str | None = None
        self.manifest: Manifest | None = None

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
                    await self.hosts.ssh(where, ["rm", "-f", "--", *names])
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
            f"--timeout={self._rsyncTimeout}",
        ]
        if not self.src.remote and not self.dst.remote:
            await self.runner.run([*rsync, "--", self.snapshot, self.staged])
            return
        rsync += ["-e", self.hosts.rsyncShell()]
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
        if not await self.hosts.isFile(self.src):
            raise SyncError(f"source database {self.src} does not exist")
        if self.dst.remote:
            tdir = os.path.dirname(self.target)
            found = await self.hosts.ssh(self.dst, ["test", "-d", tdir], check=False)
            if found.exitCode != 0:
                raise SyncError(
                    f"the target's directory {tdir} does not exist on {self.dst.login}"
                )
        if await self.hosts.version(self.src) >= (3, 27):
            await self.hosts.sqlite(self.src, f"VACUUM INTO {literal(self.snapshot)};")
        else:
            quoted = self.snapshot.replace("\\", "\\\\").replace('"', '\\"')
            await self.hosts.sqlite(
                self.src,
                f'.backup "{quoted}"\n',
                timeout=self._backupTimeout,
            )
        manifest = await self.hosts.manifest(self.src.at(self.snapshot), hashes)
        if manifest.integrity != "ok":
            raise SyncError(
                f"snapshot of {self.src} failed integrity_check: "
                f"{manifest.integrity[:500]}"
            )
        digest = await self.hosts.sha256(self.src.at(self.snapshot))
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
            if await self.hosts.sha256(where) != digest:
                raise SyncError(f"staged copy {where} differs from the snapshot")
            quick = await self.hosts.check(where, "quick_check")
            if quick != "ok":
                raise SyncError(
                    f"staged copy {where} failed quick_check: {quick[:500]}"
                )
            return
        staged = await self.hosts.manifest(where, manifest.hashed)
        if staged.integrity != "ok":
            raise SyncError(
                f"staged copy {where} failed integrity_check: {staged.integrity[:500]}"
            )
        if staged.tables != manifest.tables:
            raise SyncError(
                f"staged copy {where} does not hold what the snapshot holds"
            )

    def attach(self) -> str:
        """
        @return: The C{ATTACH} of the staged file, read-only, as C{g}.
        """
        uri = "file:" + urlquote(self.staged) + "?mode=ro"
        return f"ATTACH {literal(uri)} AS g;\n"
