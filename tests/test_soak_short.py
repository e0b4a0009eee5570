"""The soak in miniature (bench/soak.py): paced simulator-shaped traffic into the real
`serve` for a few seconds; nothing acknowledged is lost and memory does not run away.
The 30-minute version is `python bench/soak.py` (or bench/reliability.py)."""

from __future__ import annotations

import os

import pytest

from bench.soak import run_soak

pytestmark = pytest.mark.e2e

SECONDS = float(os.environ.get("VOICE_CONSOLE_SOAK_SECONDS", "12"))
RATE = float(os.environ.get("VOICE_CONSOLE_SOAK_RATE", "200"))


def test_short_soak_loses_nothing_and_memory_stays_bounded(tmp_path):
    summary = run_soak(duration=SECONDS, rate=RATE, sample=2.0, connections=16, workdir=tmp_path)
    assert summary["serve_exit_code"] == 0
    assert summary["acked"] > 0.8 * SECONDS * RATE, summary  # the pace was held (a generous floor)
    assert summary["non_2xx"] == 0 and summary["no_answer"] == 0, summary
    assert summary["lost"] == 0, summary
    assert summary["stored"] >= summary["acked"]
    # Each window was sampled, with figures that make sense.
    series = summary["series"]
    assert len(series) >= SECONDS / 2 - 1
    assert all(point["rss_mb"] and point["db_mb"] > 0 for point in series)
    assert summary["ack_p99_ms_worst_window"] is not None
    # Flat memory, with a generous margin for a short run: no more than 40 MB over the early peak.
    assert summary["rss_growth_mb"] < 40, summary
