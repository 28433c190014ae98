"""The export benchmark runs end to end in its quick mode and reports sane figures.

No memory or speed aim is asserted here (they belong to the benchmark): only that every format
exported every row through the real API, the RSS was sampled and the report renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import export as bench

pytestmark = pytest.mark.slow


def test_quick_export_bench_exports_every_row(tmp_path: Path) -> None:
    r = bench.run(bench.Config.quick(), command="pytest tests/test_bench_export.py")
    assert [e.fmt for e in r.exports] == list(bench.FORMATS)
    assert bench.figures_are_sane(r) == []
    for e in r.exports:
        assert e.rows == r.loaded == bench.Config.quick().rows
        assert e.rss_peak_mib >= e.rss_before_mib > 10
    out = tmp_path / "RESULTS.md"
    bench.write_results(r, out)
    text = out.read_text()
    assert text.count("<!-- bench:export:begin -->") == 1 and "peak RSS growth" in text
