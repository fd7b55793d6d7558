# -*- test-case-name: tests -*-
"""
Database sync between the environments' SQLite files.

  - L{bluegreen.sync.syncer}: L{Syncer <bluegreen.sync.syncer.Syncer>}, the
    entry point: one sync at a time, a report for each;
  - L{bluegreen.sync.transfer}: snapshot, verify, ship and verify (both
    strategies start so);
  - L{bluegreen.sync.migrate} (with L{bluegreen.sync.merge}) and
    L{bluegreen.sync.copy}: the two strategies;
  - L{bluegreen.sync.locations}, L{bluegreen.sync.hosts}: local paths and
    C{[user@]host:/path}, commands run there (ssh);
  - L{bluegreen.sync.schema}, L{bluegreen.sync.sql}: reading a database's
    shape, building SQL text;
  - L{bluegreen.sync.report}, L{bluegreen.sync.errors}: what a sync did,
    why it failed;
  - L{bluegreen.sync.process}: the process runner (timeouts, cancellation,
    process groups);
  - L{bluegreen.sync.service}, L{bluegreen.sync.api}, L{bluegreen.sync.cli}:
    the sync service, its admin API endpoints and the C{bluegreen sync}
    command.
"""
