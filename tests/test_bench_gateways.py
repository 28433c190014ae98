"""The gateway benchmark's quick run: every phase stores every reading it published (the run
fails otherwise), and the report has a row per phase and each aim."""

from __future__ import annotations

from bench import gateways


def test_quick_gateway_bench_stores_everything_and_reports_each_aim() -> None:
    config = gateways.Config(messages=400, packs=40, trials=1)
    r = gateways.run(config, "pusat bench gateways (test)", lambda _: None)
    assert [p.name for p in r.phases] == [
        "senml-1",
        "chirpstack",
        "tts",
        "senml-100",
        "senml-mixed",
        "sparkplug",
    ]
    assert r.phase("chirpstack").throughput.readings == 5 * 400
    assert r.phase("sparkplug").throughput.readings == 100 * (40 + gateways.NODES)
    assert all(p.rate > 0 for p in r.phases)
    text = gateways.markdown(r)
    assert text.count(" >= 50% |") == 3
    assert "Sparkplug DDATA metrics/s vs SenML pack readings/s" in text
