# -*- test-case-name: tests.test_syncservice -*-
"""
The database sync's metrics (L{SyncMetrics}): syncs by result, rows copied,
changes applied, conflicts, durations and the mirror's lag.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bluegreen.sync.service import SyncService


def _families() -> tuple[
    CounterMetricFamily,
    CounterMetricFamily,
    CounterMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
]:
    """
    @return: The families of L{SyncMetrics}, empty.
    """
    return (
        CounterMetricFamily(
            "bluegreen_sync_runs",
            "Database syncs finished (mirror passes: strategy mirror), by "
            "result: complete, incomplete (conflicts) or failed.",
            labels=["direction", "strategy", "result"],
        ),
        CounterMetricFamily(
            "bluegreen_sync_rows_copied",
            "Rows copied by database syncs.",
            labels=["direction"],
        ),
        CounterMetricFamily(
            "bluegreen_sync_conflicts",
            "Conflicts reported by database syncs (rows not copied).",
            labels=["direction"],
        ),
        GaugeMetricFamily(
            "bluegreen_sync_duration_seconds",
            "How long the last database sync of the direction took.",
            labels=["direction"],
        ),
        GaugeMetricFamily(
            "bluegreen_sync_mirror_lag_seconds",
            "Seconds since the start of the last complete mirror pass from the "
            "live database to the standby (absent before the first one).",
        ),
    )


def _lagChangesFamily() -> GaugeMetricFamily:
    """
    @return: The family of the mirror's lag in changes, empty.
    """
    return GaugeMetricFamily(
        "bluegreen_sync_mirror_lag_changes",
        "Captured changes the standby was behind when the last mirror pass "
        "started (the changes it applied; absent before the first pass).",
    )


def _changesFamily() -> CounterMetricFamily:
    """
    @return: The family of captured changes applied, empty.
    """
    return CounterMetricFamily(
        "bluegreen_sync_changes_applied",
        "Captured changes (inserts, updates, deletes) applied by exact database syncs.",
        labels=["direction"],
    )


class SyncMetrics:
    """
    The sync's metrics: a collector for L{bluegreen.admin.metrics.Metrics.register}.

    @ivar sync: The sync service.
    """

    def __init__(self, sync: SyncService) -> None:
        """
        @param sync: The sync service.
        """
        self.sync = sync

    def describe(self) -> Iterable[Metric]:
        """
        The metric families, without samples.
        """
        return [*_families(), _changesFamily(), _lagChangesFamily()]

    def collect(self) -> Iterable[Metric]:
        """
        The metric families with their current samples.
        """
        runs, rows, conflicts, duration, lag = _families()
        sync = self.sync
        for (way, strategy, result), count in sorted(sync.counts.items()):
            runs.add_metric([way, strategy, result], count)
        for way, count in sorted(sync.rowsCopied.items()):
            rows.add_metric([way], count)
        for way, count in sorted(sync.conflicts.items()):
            conflicts.add_metric([way], count)
        for way, seconds in sorted(sync.durations.items()):
            duration.add_metric([way], seconds)
        behind = sync.lag()
        if behind is not None:
            lag.add_metric([], behind)
        changes = _changesFamily()
        for way, count in sorted(sync.changesApplied.items()):
            changes.add_metric([way], count)
        lagChanges = _lagChangesFamily()
        behindChanges = sync.lagChanges()
        if behindChanges is not None:
            lagChanges.add_metric([], behindChanges)
        return [runs, rows, conflicts, duration, lag, changes, lagChanges]
