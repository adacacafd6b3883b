"""The soak benchmark's memory verdict (bench/soak.py): flat memory passes, a slow
creep of either the resident size or the live Python heap fails, and noise within the
tolerance does not."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from soak import memory_verdict  # noqa: E402


def _samples(rss, blocks, seconds=600, step=10):
    return [(float(t), rss(t), blocks(t)) for t in range(0, seconds + 1, step)]


def test_flat_memory_after_the_warmup_passes() -> None:
    samples = _samples(lambda t: min(300.0, 100 + t) + (3 if t % 40 == 0 else 0),
                       lambda t: min(3_000_000, 10_000 * t))
    verdict = memory_verdict(samples, 300, 0.05)
    assert verdict["flat"] is True and verdict["rss_growth"] < 0.05


def test_a_slow_rss_creep_fails() -> None:
    samples = _samples(lambda t: 300 + 0.05 * t, lambda t: 3_000_000)  # +3 MiB/min
    verdict = memory_verdict(samples, 180, 0.05)
    assert verdict["flat"] is False and verdict["rss_growth"] > 0.05


def test_growing_live_objects_fail_even_with_flat_rss() -> None:
    samples = _samples(lambda t: 300.0, lambda t: 3_000_000 + 1_000 * t)
    verdict = memory_verdict(samples, 180, 0.05)
    assert verdict["flat"] is False and verdict["block_growth"] > 0.05


def test_too_short_a_run_has_no_verdict() -> None:
    assert memory_verdict(_samples(lambda t: 1.0, lambda t: 1, seconds=200), 180,
                          0.05)["flat"] is None
