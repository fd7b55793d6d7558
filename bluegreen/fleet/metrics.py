# -*- test-case-name: tests.test_fleet -*-
"""
The metrics of the shared state: a collector for
L{bluegreen.admin.metrics.Metrics.register}, reading the coordinator when
scraped.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bluegreen.fleet.coordinator import Coordinator


class FleetMetrics:
    """
    C{bluegreen_coordination_*}: whether the shared state is reachable, its
    generation, and this instance's proposals.

    @ivar coordinator: The coordinator.
    """

    def __init__(self, coordinator: Coordinator) -> None:
        """
        @param coordinator: The coordinator.
        """
        self.coordinator = coordinator

    def describe(self) -> Iterable[Metric]:
        """
        The metric families, without samples.
        """
        return list(_families())

    def collect(self) -> Iterable[Metric]:
        """
        The metric families with their current samples.
        """
        up, generation, switches = _families()
        coordinator = self.coordinator
        up.add_metric([], 1 if coordinator.reachable else 0)
        state = coordinator.state
        generation.add_metric([], -1 if state is None else state.generation)
        for result, count in sorted(coordinator.counts.items()):
            switches.add_metric([result], count)
        return [up, generation, switches]


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily]:
    """
    @return: The families of L{FleetMetrics}, empty.
    """
    return (
        GaugeMetricFamily(
            "bluegreen_coordination_up",
            "1 while the --coordinate Redis is reachable and followed, 0 while "
            "this instance keeps its last known live environment alone.",
        ),
        GaugeMetricFamily(
            "bluegreen_coordination_generation",
            "The generation of the shared state as last known (-1 before it "
            "was first read).",
        ),
        CounterMetricFamily(
            "bluegreen_coordination_switches",
            "Switches by outcome: won (proposed here and recorded), lost "
            "(another instance switched first), unsent (made alone while "
            "Redis was unreachable), followed (made by another instance).",
            labels=["result"],
        ),
    )
