"""A latency histogram for a long-running process: fixed memory, percentiles at any time.

Buckets grow by 5 % from 0.01 ms to over 10 minutes (about 380 of them), so a
percentile is read to within 5 % whatever the run's length: what `serve` keeps of
how fast it acknowledged webhooks (`/healthz`).
"""

from __future__ import annotations

import math
from typing import Any

_SMALLEST_MS = 0.01
_GROWTH = 1.05
_LOG_GROWTH = math.log(_GROWTH)
_BUCKETS = 380


class LatencyHistogram:
    __slots__ = ("_counts", "count", "max_ms")

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self.count = 0
        self.max_ms = 0.0

    def add(self, ms: float) -> None:
        index = 0 if ms <= _SMALLEST_MS else min(_BUCKETS - 1, 1 + int(math.log(ms / _SMALLEST_MS) / _LOG_GROWTH))
        self._counts[index] += 1
        self.count += 1
        if ms > self.max_ms:
            self.max_ms = ms

    def percentile(self, q: float) -> float | None:
        """The upper edge of the bucket holding the q-th percentile (0 < q <= 100); None when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * q / 100))
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                return min(self.max_ms, _SMALLEST_MS * _GROWTH**index)
        return self.max_ms  # pragma: no cover - the counts add up to count

    def snapshot(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "n": self.count,
            "p50_ms": rounded(self.percentile(50)),
            "p99_ms": rounded(self.percentile(99)),
            "max_ms": rounded(self.max_ms) if self.count else None,
        }
