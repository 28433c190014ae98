"""The ingest benchmark runs end to end in its quick mode and reports sane figures.

Speed targets are never asserted here: they depend on the machine. This only checks that every
phase measured something real (all readings arrived, positive finite times) and that the report
can be rendered and written.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from rich.console import Console

from bench import city, scaleout, startup
from bench import ingest as bench
from bench.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result() -> bench.Result:
    return bench.run(bench.Config.quick(), command="pytest tests/test_bench.py")


def test_every_throughput_row_is_positive_and_complete(result: bench.Result) -> None:
    c = result.config
    expected = {
        "pusat_json": c.messages,
        "counter_json": c.messages,
        "naive_json": c.naive_messages,
        "senml_pusat": c.packs * bench.PACK_SIZE,
        "senml_copy": c.packs * bench.PACK_SIZE,
        "publisher": c.messages,
        "pusat_concurrent": c.messages,
        "counter_concurrent": c.messages,
    }
    for name, readings in expected.items():
        x = getattr(result, name)
        assert isinstance(x, bench.Throughput), name
        assert x.readings == readings, name
        assert math.isfinite(x.seconds) and x.seconds > 0, name
        assert math.isfinite(x.rate) and x.rate > 0, name
        if x.wall_seconds is not None:  # from the spawn: never shorter than the measured part
            assert x.wall_seconds >= x.seconds, name
    for worker in (result.pusat_json, result.senml_pusat):
        assert worker.peak_rss_kib is not None and worker.peak_rss_kib > 10 * 1024
    assert bench.figures_are_sane(result) == []


def test_latency_phase_is_complete(result: bench.Result) -> None:
    lat = result.latency
    c = result.config
    assert lat.readings == round(c.latency_rate / bench.PACK_SIZE * c.latency_seconds) * 100
    assert 0 < lat.p50_ms <= lat.p90_ms <= lat.p99_ms <= lat.max_ms < 60_000
    assert lat.publish_seconds > 0 and lat.achieved_rate > 0
    assert lat.peak_rss_kib > 10 * 1024


def test_aims_and_machine_are_reported(result: bench.Result) -> None:
    aims = result.aims()
    assert len(aims) == 4
    assert all(math.isfinite(a.measured) and a.measured > 0 for a in aims)
    m = result.machine
    assert m.cpus >= 1 and m.memory_gib > 0
    assert m.postgresql.startswith("PostgreSQL") and m.mosquitto.startswith("Mosquitto")


def test_report_renders_and_updates_only_its_section(result: bench.Result, tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    bench.print_result(result, console)
    assert "Pusat worker" in console.export_text()

    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\nkept before\n")
    bench.write_results(result, path)
    bench.write_results(result, path, notes="a note")  # replaces, never duplicates
    text = path.read_text()
    assert text.count(bench.SECTION_BEGIN) == 1 and text.count(bench.SECTION_END) == 1
    assert "kept before" in text and "a note" in text
    for row in bench.rows(result):
        assert row.rate in text


def test_cli_rejects_too_few_messages() -> None:
    from typer.testing import CliRunner

    outcome = CliRunner().invoke(app, ["ingest", "--messages", "5"])
    assert outcome.exit_code != 0


def test_scaleout_measures_every_mode_with_every_reading_stored() -> None:
    rates = scaleout.run(1, json_messages=400, packs=20, log=lambda line: None)
    assert set(rates) == {(f, m) for f in ("json", "senml") for m in scaleout.MODES}
    for key, (rate,) in rates.items():
        assert math.isfinite(rate) and rate > 0, key


def test_a_small_city_stores_every_reading_and_times_every_query(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`pusat bench city` on a small city: every published reading stored (the run raises
    otherwise), every query form timed under ingest and idle, RSS sampled."""
    # with a server setting for an experiment, which the server must then hold and the report name
    setting = ("autovacuum_vacuum_cost_delay", "7ms")
    config = city.Config(
        sensors=2000, gateways=20, minutes=0.5, idle_seconds=5.0, pg_settings=(setting,)
    )
    r = city.run(config, command="pytest tests/test_bench.py", log=lambda line: None)
    assert r.published > 0 and r.stored == r.published
    assert r.series >= r.sensors
    assert set(r.under_load) == set(r.idle) and len(r.under_load) >= 5
    assert r.samples and r.worker_start_s > 0
    # the diagnostics over time: CPU counted for each role, lag per window, all in the report
    last = r.samples[-1]
    assert last.worker_cpu_s > 0 and last.api_cpu_s > 0 and last.pg_cpu_s > 0
    assert len(r.lag_p99_windows_ms) == len(city.shown(r.samples))
    assert any(math.isfinite(v) and v > 0 for v in r.lag_p99_windows_ms)
    report = city.markdown(r)
    assert "| PostgreSQL CPU % (all backends) |" in report and "lag p99 s" in report
    assert r.server_settings.get(setting[0]) == setting[1]
    assert "`autovacuum_vacuum_cost_delay=7ms`" in report
    # PostgreSQL's CPU by client: the worker's own backends are named and did use some
    # (a small city's may stay under the report's threshold for a row of its own)
    assert last.pg_clients.get("pusat-ingest", 0.0) > 0, last.pg_clients
    monkeypatch.setattr(city, "CLIENT_ROW_MIN", 0.0)
    assert "| of which pusat-ingest % |" in city.markdown(r)


def test_city_refuses_a_server_setting_postgresql_refuses() -> None:
    config = city.Config(
        sensors=200, gateways=2, minutes=0.1, idle_seconds=5.0, pg_settings=(("nosuch", "1"),)
    )
    with pytest.raises(bench.BenchError, match="server setting nosuch=1"):
        city.run(config, command="pytest", log=lambda line: None)


def test_city_cli_wants_name_equals_value() -> None:
    from typer.testing import CliRunner

    outcome = CliRunner().invoke(app, ["city", "--quick", "--pg-set", "foo"])
    assert outcome.exit_code == 2
    assert "'foo' is not NAME=VALUE" in outcome.output


def test_startup_bench_fills_a_city_and_measures_both_codes() -> None:
    """`python -m bench.startup` on a small city, this code against itself as another
    checkout: each worker stored the probe on the filled database, every series was filled, and
    the stream was stored (the run raises otherwise); RSS sampled."""
    here = str(Path(__file__).resolve().parent.parent)
    config = startup.Config(sensors=2000, gateways=20, stream_s=5, compare=(here,))
    out = startup.run(config, log=lambda line: None)
    assert out["series"] == 2000 * 51 // 10 + 1  # 5.1 quantities a sensor, and the probe's
    assert len(out["runs"]) == 2
    for r in out["runs"]:
        assert r["start_s"] > 0 and r["rss_start_kib"] > 0 and r["published"] > 0
        assert r["rss_stream_kib"] and "kernels" in r["phases"] and "alarms" in r["phases"]
    assert "| start-up s |" in startup.markdown(out)
