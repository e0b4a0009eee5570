"""The latency histogram `serve` keeps of its acknowledgements (console/core/latency.py)."""

from __future__ import annotations

import math
import random

from console.core.latency import LatencyHistogram


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def test_percentiles_are_within_five_percent_of_the_exact_ones() -> None:
    rnd = random.Random(7)
    for values in (
        [rnd.lognormvariate(1.0, 1.2) for _ in range(20_000)],  # ms-scale, a long tail
        [rnd.uniform(0.02, 0.05) for _ in range(1_000)],  # tens of microseconds
        [rnd.choice([1.0, 2.0, 900.0]) for _ in range(5_000)],
    ):
        histogram = LatencyHistogram()
        for value in values:
            histogram.add(value)
        assert histogram.count == len(values)
        assert histogram.max_ms == max(values)
        for q in (50, 90, 99, 99.9):
            got, want = histogram.percentile(q), exact(values, q)
            assert got is not None and want <= got <= want * 1.05 + 1e-9, (q, got, want)


def test_empty_tiny_and_huge_values() -> None:
    histogram = LatencyHistogram()
    assert histogram.percentile(99) is None
    assert histogram.snapshot() == {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    histogram.add(0.0)
    histogram.add(10 * 60 * 1000.0)  # ten minutes: the last bucket, capped at the max seen
    assert histogram.percentile(50) == 0.01
    assert histogram.percentile(100) == 10 * 60 * 1000.0
    assert histogram.snapshot()["n"] == 2
