"""The query benchmark runs end to end in its quick mode and reports sane figures.

Speed targets are never asserted here (they depend on the machine): only that every query ran,
Pusat's form, the raw form and the API agreed on the number of rows, and the times are real.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from rich.console import Console

from bench import query as bench
from bench import results

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result() -> bench.Result:
    return bench.run(bench.Config.quick(), command="pytest tests/test_api_bench_query.py")


def test_every_query_ran_with_sane_figures(result: bench.Result) -> None:
    c = result.config
    assert result.readings == c.sensors * c.days * 1440
    assert [r.name for r in result.rows] == ["latest", "panel_24h", "series_7d", "panel_7d"]
    latest = result.row("latest")
    assert latest.pusat.rows == c.sensors and latest.pusat_table == "latest"
    assert result.row("panel_24h").pusat_table == "rollup_1m"
    for row in result.rows:
        for t in (row.pusat, row.raw, row.http):
            assert 0 < t.p50_ms <= t.p95_ms and math.isfinite(t.p95_ms)
        assert row.pusat.rows == row.raw.rows == row.http.rows > 0
    assert bench.figures_are_sane(result) == []
    aims = result.aims()
    assert len(aims) == 4 and all(math.isfinite(a.measured) and a.measured > 0 for a in aims)


def test_report_renders_and_replaces_only_its_section(result: bench.Result, tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    bench.print_result(result, console)
    assert "latest for all sensors" in console.export_text()
    path = tmp_path / "RESULTS.md"
    path.write_text(
        "# Benchmark results\n\nkept before\n\n<!-- bench:ingest:begin -->\nx\n"
        "<!-- bench:ingest:end -->\n"
    )
    bench.write_results(result, path)
    bench.write_results(result, path)  # replaces, never duplicates
    text = path.read_text()
    begin, end = results.markers(result.section)
    assert text.count(begin) == 1 and text.count(end) == 1
    assert "kept before" in text and "<!-- bench:ingest:end -->" in text
    assert "| aim | measured | target |" in text


def test_command_runs_quick(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    outcome = CliRunner().invoke(bench.app, ["--quick", "--repeats", "3"])
    assert outcome.exit_code == 0, outcome.output
    assert "latest for all sensors" in outcome.output
