"""The wall benchmark runs end to end in its quick mode: a real Chromium paints the city wall
by district and, as the baseline, sensor by sensor. No speed aim is asserted here (it belongs to
the benchmark): only that both pages drew what the city holds and the report renders."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from bench import wall as bench

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(bench.CHROMIUM).exists(),
        reason="Debian's chromium is not installed (deploy/system-deps.sh)",
    ),
]


def test_quick_wall_bench_paints_every_district_and_the_baseline_every_sensor() -> None:
    config = bench.Config.quick()
    r = bench.run(config, "pytest tests/test_bench_wall.py", Console(quiet=True))
    assert r.bubbles == config.districts
    assert config.sensors % 3 == 0  # a third in each domain
    assert r.series == config.sensors // 3 * sum(len(q) for q in bench.DOMAINS.values())
    assert r.alarms == config.sensors // 200
    assert r.baseline_s is not None and r.baseline_dots == config.sensors
    assert len(r.warm_s) == config.runs and r.cold_s > 0
    text = bench.markdown(r)
    assert text.startswith("<!-- bench:wall:begin -->") and "first paint" in text
