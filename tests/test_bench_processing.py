"""The processing benchmark runs and its figures are sane (no speed targets in tests)."""

from __future__ import annotations

import math

from bench import processing


def test_processing_benchmark_figures_are_sane() -> None:
    r = processing.run(sensors_per_domain=5, minutes=20, batch=500, repeats=1)
    assert r.readings == 5 * sum(len(q) for q in processing.MIX.values()) * 20
    assert r.transitions > 0  # the stream exercises the rules (checked equal on both sides)
    for rate in (r.vectorised_per_s, r.reference_per_s):
        assert math.isfinite(rate) and rate > 0
