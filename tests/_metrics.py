# -*- test-case-name: tests.test_metrics,tests.test_metrics_integration -*-
"""
Reading the metrics in tests: a scrape parsed by C{prometheus_client}'s
text parser, and label keys.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from bluegreen.admin.metrics import Metrics

#: A sample's key in L{Scrape}: its name and its labels.
Key = tuple[str, frozenset[tuple[str, str]]]


class Scrape:
    """
    A scrape, parsed by C{prometheus_client}'s text parser.

    @ivar families: The metric families by name (counters without
        C{_total}, as the parser names them).
    @ivar samples: Every sample's value by name and labels.
    """

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[Key, float] = {}
        for family in self.families.values():
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                assert key not in self.samples, f"duplicate sample {key}"
                self.samples[key] = sample.value

    def __call__(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """
        @return: The value of the sample C{name} with exactly C{labels}.
        @raise KeyError: If there is none.
        """
        return self.samples[name, frozenset((labels or {}).items())]

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        """
        @return: Every sample called C{name}, by its labels.
        """
        return {
            labels: value
            for (sampleName, labels), value in self.samples.items()
            if sampleName == name
        }

    def nonZero(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """
        @return: The non-zero samples called C{name}, by their sorted labels.
        """
        return {
            tuple(sorted(labels)): value
            for labels, value in self.series(name).items()
            if value
        }


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    """
    @return: C{values} as sorted label pairs, as L{Scrape.nonZero} keys them.
    """
    return tuple(sorted(values.items()))


def retryLabels(source: str, to: str, kind: str) -> tuple[tuple[str, str], ...]:
    """
    @return: A retry's labels (C{from} is a keyword), as L{Scrape.nonZero}
        keys them.
    """
    return tuple(sorted({"from": source, "to": to, "kind": kind}.items()))


def scrape(metrics: Metrics) -> Scrape:
    """
    @return: C{metrics} exposed and parsed.
    """
    return Scrape(metrics.expose().decode("utf-8"))
