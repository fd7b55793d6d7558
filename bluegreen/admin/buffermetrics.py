# -*- test-case-name: tests.test_buffering -*-
"""
The buffering metrics: a collector for L{bluegreen.admin.metrics.Metrics.register}
reading the proxy's L{BufferStats} when scraped.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bluegreen.proxy.spool import BufferStats


class BufferMetrics:
    """
    Bytes the proxy holds for slow clients, in memory and on disk.

    @ivar stats: The figures, kept by L{bluegreen.proxy.spool.TempFiles}.
    """

    def __init__(self, stats: BufferStats) -> None:
        """
        @param stats: The figures to export.
        """
        self.stats = stats

    def describe(self) -> Iterable[Metric]:
        """
        The metric families, without samples.
        """
        return list(_families())

    def collect(self) -> Iterable[Metric]:
        """
        The metric families with their current samples.
        """
        memory, disk, files, spilled = _families()
        stats = self.stats
        memory.add_metric([], stats.memory)
        disk.add_metric([], stats.disk)
        files.add_metric([], stats.files)
        spilled.add_metric([], stats.spilled)
        return [memory, disk, files, spilled]


def _families() -> tuple[
    GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily
]:
    """
    @return: The families of L{BufferMetrics}, empty.
    """
    return (
        GaugeMetricFamily(
            "bluegreen_buffered_memory_bytes",
            "Body bytes held in memory for slow clients (request bodies being "
            "received, responses read ahead).",
        ),
        GaugeMetricFamily(
            "bluegreen_buffered_disk_bytes",
            "Body bytes held in temporary files for slow clients.",
        ),
        GaugeMetricFamily(
            "bluegreen_buffer_temp_files",
            "Temporary files open for buffered bodies.",
        ),
        CounterMetricFamily(
            "bluegreen_buffer_spilled",
            "Bodies that did not fit in memory and went to a temporary file.",
        ),
    )
